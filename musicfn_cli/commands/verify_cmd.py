"""``musicfn verify``: does the catalogue agree with the bucket?

Exit codes: 0 clean, 1 problems found (or the check could not run), 2 bad input. While the
service runs, its catalogue owner actor holds the DuckDB file (one read-write process per
file), so verify asks that owner, and opens the file itself otherwise
(``musicfn_cli.commands.catalogue_access``, as every catalogue command). Attaching handles Ray's
token auth (no ``RAY_AUTH_MODE=token`` to export); a refused or missing token fails at once
with ``ray_auth_failed``.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import timedelta
from typing import Any

from musicfn.settings import get_settings
from musicfn_cli.commands.catalogue_access import open_catalogue_access
from musicfn_cli.commands.storage_cmds import parse_duration
from storage.backends import open_storage
from storage.verify import VerifyReport, verify

log = logging.getLogger(__name__)
_SHOWN_PER_KIND = 20


def parse_grace(text: str) -> timedelta:
    """``0``/``0s`` or a duration like ``5m``, ``1h``."""
    if text.strip() in ("0", "0s"):
        return timedelta(0)
    return parse_duration(text)


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
    with open_storage(settings) as storage, \
            open_catalogue_access(settings, mode=args.catalogue,
                                  ray_address=args.ray_address) as opened:
        report = verify(storage.objects, opened.catalogue, settings, deep=args.deep,
                        grace=grace)
    source = opened.source
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
    p.add_argument("--ray-address", help="Ray cluster of the service (default: the cluster "
                                         "of the process holding the catalogue, else "
                                         "RAY_ADDRESS, else a local cluster if one runs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)
