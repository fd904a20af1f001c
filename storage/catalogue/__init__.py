"""The DuckDB catalogue: one file, one owner, one typed client.

* ``store.Catalogue``: the file's tables composed behind one flat list of operations
  (``database``, ``tracks``, ``events``, ``idempotency``, ``jobs``, ``job_reads``; the schema
  and its migrations in ``schema``, track filters in ``queries``).
* ``owner.CatalogueOwner``: the catalogue as the service's one owner holds it (rebuilds a
  lost file); ``actor`` runs it as a named Ray actor and finds it from other processes.
* ``client.CatalogueClient``: every operation as a typed, awaitable call on the owner.

Nothing is imported here, so importing one light module (``queries``) stays light.
"""
