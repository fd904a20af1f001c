"""The catalogue's one surface: ``Catalogue`` offers every operation of its tables, and the
typed ``CatalogueClient`` offers every operation of ``Catalogue`` with the same parameters,
so a method added to a table is reachable from the service, the CLI and the tests alike."""

from __future__ import annotations

import inspect

import pytest

from storage.catalogue.admission import Admission
from storage.catalogue.client import CatalogueClient
from storage.catalogue.events import EventLog
from storage.catalogue.idempotency import IdempotencyKeys
from storage.catalogue.job_reads import JobReads
from storage.catalogue.jobs import JobTable
from storage.catalogue.store import Catalogue
from storage.catalogue.tracks import TrackTable

# Table methods under another name on the flat surface.
RENAMED = {(TrackTable, "by_source"): "tracks_by_source",
           (IdempotencyKeys, "claim"): "claim_idempotency_key"}
LOCAL_ONLY = {"close"}  # the owner's lifetime is Ray's, not a client's


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(cls).items()
            if inspect.isfunction(fn) and not name.startswith("_")
            and not name.endswith("_in_transaction")}


def parameters(sig: inspect.Signature) -> list[tuple[str, object, object]]:
    # Ray's actor tracing adds ``_ray_trace_ctx`` to the methods of a class made an actor.
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()
            if p.name not in ("self", "_ray_trace_ctx")]


@pytest.mark.parametrize("table", [TrackTable, EventLog, IdempotencyKeys, JobTable, JobReads,
                                   Admission])
def test_the_catalogue_offers_every_table_operation(table: type) -> None:
    flat = public_methods(Catalogue)
    for name, sig in public_methods(table).items():
        surface = RENAMED.get((table, name), name)
        assert surface in flat, f"{table.__name__}.{name} is not on Catalogue"
        assert parameters(flat[surface]) == parameters(sig), surface
        assert flat[surface].return_annotation == sig.return_annotation, surface


def test_the_client_offers_every_catalogue_operation_typed_and_awaitable() -> None:
    client = public_methods(CatalogueClient)
    for name, sig in public_methods(Catalogue).items():
        if name in LOCAL_ONLY:
            continue
        assert name in client, f"Catalogue.{name} has no CatalogueClient method"
        assert inspect.iscoroutinefunction(getattr(CatalogueClient, name)), name
        assert parameters(client[name]) == parameters(sig), name
        assert client[name].return_annotation == sig.return_annotation, name
