"""``musicfn verify``: does the catalogue agree with the bucket?

Exit codes: 0 clean, 1 problems found (or the check could not run), 2 bad input. While the
service runs, its catalogue owner actor holds the DuckDB file (one read-write process per
file), so verify asks that owner when a Ray cluster with it is reachable, and opens the file
itself otherwise. Attaching handles Ray's token auth (no ``RAY_AUTH_MODE=token`` to export);
a refused or missing token fails at once with ``ray_auth_failed``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from musicfn.commands.storage_cmds import parse_duration
from musicfn.errors import CatalogueError, CatalogueLockedError
from musicfn.settings import Settings, get_settings
from storage.backends import open_catalogue, open_storage
from storage.catalogue import Catalogue
from storage.verify import CatalogueReader, VerifyReport, verify

log = logging.getLogger(__name__)
_SHOWN_PER_KIND = 20


def parse_grace(text: str) -> timedelta:
    """``0``/``0s`` or a duration like ``5m``, ``1h``."""
    if text.strip() in ("0", "0s"):
        return timedelta(0)
    return parse_duration(text)


@contextlib.contextmanager
def catalogue_reader(settings: Settings, how: str,
                     ray_address: str | None) -> Iterator[tuple[CatalogueReader, str]]:
    """The catalogue to verify against and a label saying which path was taken.

    ``how``: ``owner`` (the running service's owner actor, required), ``file`` (open the
    DuckDB file here), or ``auto``: the file when no process holds it, else its owner.
    """
    if how == "auto":
        try:
            catalogue = Catalogue(settings.catalogue_file,
                                  checkpoint_mb=settings.catalogue_checkpoint_mb)
        except CatalogueLockedError as exc:  # a running service holds it: ask its owner
            locked = exc
        else:
            try:
                yield catalogue, f"file {settings.catalogue_file}"
            finally:
                catalogue.close()
            return
        from storage.catalogue_actor import connect_owner

        try:
            client = connect_owner(settings.catalogue_file, address=ray_address,
                                   required=True, namespace=settings.ray_namespace)
        except CatalogueError as exc:
            raise CatalogueLockedError(f"{locked.message}; and no owner actor was reachable "
                                       f"({exc.message}): set RAY_ADDRESS or --ray-address"
                                       ) from None
        if client is None:  # required=True raises instead
            raise CatalogueError("no owner actor", code="catalogue_owner_unreachable")
        try:
            yield client, "owner actor"
        finally:
            client.close()
        return
    if how == "owner":
        with _owner(settings, ray_address) as owner:
            yield owner, "owner actor"
        return
    with open_catalogue(settings) as catalogue:
        yield catalogue, f"file {settings.catalogue_file}"


@contextlib.contextmanager
def _owner(settings: Settings, ray_address: str | None) -> Iterator[CatalogueReader]:
    from storage.catalogue_actor import connect_owner

    client = connect_owner(settings.catalogue_file, address=ray_address, required=True,
                           namespace=settings.ray_namespace)
    if client is None:  # required=True raises instead
        raise CatalogueError("no owner actor", code="catalogue_owner_unreachable")
    try:
        yield client
    finally:
        client.close()


def print_report(report: VerifyReport, source: str) -> None:
    """The human-readable report: a summary line, then problems grouped by kind."""
    print(f"verified {report.tracks} tracks in the bucket against {report.rows} catalogue rows "
          f"({report.completed_rows} completed) via the {source} in {report.seconds:.2f} s"
          f"{' (deep: audio sha256 checked)' if report.deep else ''}")
    by_kind: dict[str, list[str]] = {}
    for p in report.problems:
        by_kind.setdefault(p.kind, []).append(f"{p.key or p.id}: {p.detail}")
    for kind, lines in sorted(by_kind.items()):
        print(f"{kind}: {len(lines)}")
        for line in lines[:_SHOWN_PER_KIND]:
            print(f"  {line}")
        if len(lines) > _SHOWN_PER_KIND:
            print(f"  ... {len(lines) - _SHOWN_PER_KIND} more (use --json)")
    if report.recent:
        print(f"{len(report.recent)} recent difference(s) within the {report.grace_s:g} s grace "
              "period (writes may be in flight; not counted)")
    print("OK: catalogue and bucket agree" if report.ok
          else f"PROBLEMS: {len(report.problems)}")


def cmd_verify(args: argparse.Namespace) -> int:
    """Run the verification; 0 when clean, 1 when any problem was found."""
    grace = parse_grace(args.grace)
    settings = get_settings()
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    with open_storage(settings) as storage, \
            catalogue_reader(settings, args.catalogue, address) as (reader, source):
        report = verify(storage.objects, reader, settings, deep=args.deep, grace=grace)
    if args.json:
        data: dict[str, Any] = report.model_dump(mode="json")
        data.update(ok=report.ok, counts=report.counts(), source=source)
        print(json.dumps(data, indent=2))
    else:
        print_report(report, source)
    return 0 if report.ok else 1


def register(sub: Any) -> None:
    """Add ``verify`` to the ``musicfn`` parser."""
    p = sub.add_parser("verify", help="check that the catalogue and the bucket agree "
                                      "(exit 0 clean, 1 problems, 2 bad input)")
    p.add_argument("--deep", action="store_true",
                   help="also download every audio object and check its sha256")
    p.add_argument("--grace", default="5m",
                   help="differences newer than this are reported as recent, not as "
                        "problems (writes in flight); default 5m, 0 to count everything")
    p.add_argument("--catalogue", choices=("auto", "owner", "file"), default="auto",
                   help="read the catalogue through the running service's owner actor, "
                        "the DuckDB file, or (auto, the default) the file unless a running "
                        "service holds it, then its owner")
    p.add_argument("--ray-address", help="Ray cluster of the service (default: RAY_ADDRESS, "
                                         "else a local cluster if one runs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)
