"""Storage commands: ``s3``, ``ls``, ``stats``, ``reindex``, ``cleanup``.

The catalogue commands work with the service stopped (the DuckDB file) and running (its
catalogue owner actor): ``musicfn_cli.commands.catalogue_access`` decides which.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from musicfn.errors import InvalidRequestError
from musicfn.settings import get_settings
from musicfn.validation import as_request_error
from musicfn_cli.commands.catalogue_access import open_catalogue_access
from storage.backends import open_storage
from storage.catalogue.queries import TrackQuery
from storage.embedded_s3 import EmbeddedS3
from storage.reindex import cleanup_older_than, cleanup_orphans, reindex
from storage.sidecar import Sidecar

_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` → timedelta."""
    m = _DURATION_RE.match(text.strip())
    if not m or int(m[1]) == 0:
        raise InvalidRequestError(f"invalid duration {text!r}: use e.g. 30d, 12h, 90m")
    return timedelta(**{_UNITS[m[2]]: int(m[1])})


def parse_when(text: str) -> datetime:
    """An ISO date or datetime; naive values are taken as UTC."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"invalid date {text!r}: use YYYY-MM-DD or ISO 8601") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _print_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    print(json.dumps(data, indent=2, default=str))


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _track_line(sc: Sidecar) -> str:
    dur = sc.audio.duration_s if sc.audio else None
    s = sc.summary
    key = f"{s.key} {s.mode}" if s.key else "-"
    prompt = (sc.prompt or (sc.source.key if sc.source else "") or "")[:40]
    return (f"{sc.id}  {sc.status:<10} {sc.created_at:%Y-%m-%d %H:%M}  {_fmt(dur, '6.1f')}s  "
            f"{_fmt(s.bpm, '6.1f')}  {key:<9} {_fmt(s.lufs, '6.1f')}  {prompt}")


# -- handlers ------------------------------------------------------------------------------

def cmd_s3(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.uses_embedded_s3:
        print(f"external S3 configured: {settings.endpoint_url} (nothing to manage)")
        return 0
    server = EmbeddedS3.from_settings(settings)
    if args.action == "start":
        server.start()
        state = "already running" if server.reused else "started"
        print(f"embedded S3 {state}: {server.endpoint_url} (data: {server.data_dir})")
    elif args.action == "stop":
        print("embedded S3 stopped" if server.stop_recorded() else "embedded S3 not running")
    else:
        running = server.is_running()
        print(f"embedded S3 {'running' if running else 'not running'}: {server.endpoint_url}")
        return 0 if running else 3
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    try:
        query = TrackQuery(
            status=args.status, kind=args.kind, engine=args.engine, key=args.key,
            mode=args.mode, prompt_contains=args.prompt, bpm_min=args.bpm_min,
            bpm_max=args.bpm_max, lufs_min=args.lufs_min, lufs_max=args.lufs_max,
            created_from=parse_when(args.since) if args.since else None,
            created_to=parse_when(args.until) if args.until else None,
            limit=args.limit, cursor=args.cursor,
        )
    except ValidationError as exc:
        raise as_request_error(exc) from None
    with open_catalogue_access(get_settings()) as opened:
        page = opened.catalogue.list_tracks(query)
    if args.json:
        _print_json(page)
        return 0
    print(f"{'id':<26}  {'status':<10} {'created (UTC)':<16}  {'dur':>7}  {'bpm':>6}  "
          f"{'key':<9} {'lufs':>6}  prompt")
    for sc in page.items:
        print(_track_line(sc))
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with open_catalogue_access(get_settings()) as opened:
        stats = opened.catalogue.stats()
    if args.json:
        _print_json(stats)
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in sorted(stats.counts_by_status.items())) or "none"
    print(f"tracks: {stats.total_tracks} ({counts}); stored: {stats.total_bytes:,} bytes")
    for day, size in stats.bytes_by_day.items():
        print(f"  {day}  {size:>14,} bytes")
    for text, n in stats.top_prompts:
        print(f"  {n:>6}x  {text[:70]}")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    settings = get_settings()
    with open_storage(settings) as storage, open_catalogue_access(settings) as opened:
        # Bucket reads on threads here, also when attached to the service's Ray cluster: its
        # CPUs are for audio work.
        report = reindex(storage.objects, opened.catalogue, settings,
                         prune=not args.no_prune, parallel="threads")
    if args.json:
        _print_json(report)
    else:
        print(f"reindexed {report.upserted} tracks from {report.sidecars} sidecars in "
              f"{report.seconds:.2f} s ({report.rate_per_s:.0f}/s); pruned {report.pruned} rows")
        for label, items in (("unreadable sidecars", report.invalid_sidecars),
                             ("orphan audio (no sidecar)", report.orphan_audio),
                             ("sidecars without audio", report.dangling_sidecars),
                             ("keys outside the layout", report.invalid_keys)):
            if items:
                print(f"{label}: {len(items)}")
                for key in items[:20]:
                    print(f"  {key}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.orphans == (args.older_than is not None):
        raise InvalidRequestError("give exactly one of --older-than DURATION or --orphans")
    with open_storage(settings) as storage:
        if args.orphans:
            removed = cleanup_orphans(storage.objects, settings,
                                      grace=parse_duration(args.grace), dry_run=args.dry_run)
            if args.json:
                _print_json({"dry_run": args.dry_run, "orphans": removed})
            else:
                verb = "would remove" if args.dry_run else "removed"
                print(f"{verb} {len(removed)} orphan audio object(s)")
                for key in removed:
                    print(f"  {key}")
            return 0
        with open_catalogue_access(settings) as opened:
            report = cleanup_older_than(storage.objects, opened.catalogue,
                                        settings, parse_duration(args.older_than),
                                        dry_run=args.dry_run)
    if args.json:
        _print_json(report)
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(report.tracks)} track(s) ({len(report.objects)} objects) and "
              f"{report.rows} catalogue row(s)")
    return 0


def register(sub: Any) -> None:
    """Add the storage commands to the ``musicfn`` parser."""
    p = sub.add_parser("s3", help="manage the embedded S3 server (SeaweedFS)")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(func=cmd_s3)

    p = sub.add_parser("ls", help="list tracks in the catalogue")
    p.add_argument("--status", choices=("pending", "processing", "completed", "failed"))
    p.add_argument("--kind", choices=("generation", "upload"))
    p.add_argument("--engine")
    p.add_argument("--key", help="tonic, e.g. C, F#, Bb")
    p.add_argument("--mode", choices=("major", "minor"))
    p.add_argument("--prompt", help="prompt text contains (case-insensitive)")
    p.add_argument("--bpm-min", type=float)
    p.add_argument("--bpm-max", type=float)
    p.add_argument("--lufs-min", type=float)
    p.add_argument("--lufs-max", type=float)
    p.add_argument("--since", help="created at or after (UTC date or ISO time)")
    p.add_argument("--until", help="created before (UTC date or ISO time)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("stats", help="catalogue statistics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("reindex", help="rebuild the catalogue from the sidecars in the bucket")
    p.add_argument("--no-prune", action="store_true",
                   help="keep completed rows whose track is gone from the bucket")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("cleanup", help="retention: remove old tracks, or orphan audio")
    p.add_argument("--older-than", metavar="DURATION", help="e.g. 30d, 12h")
    p.add_argument("--orphans", action="store_true", help="remove audio that has no sidecar")
    p.add_argument("--grace", default="1h", help="with --orphans: minimum age (default 1h)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cleanup)
