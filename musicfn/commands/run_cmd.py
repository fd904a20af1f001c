"""``musicfn run``: start musicfn's storage and show what it holds.

Starts (or reuses) the embedded S3 when no endpoint is configured, ensures the bucket, opens
the catalogue and prints it, then keeps the S3 server up until Ctrl-C (``--once`` exits).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from typing import Any

from musicfn.commands.storage_cmds import _track_line
from musicfn.settings import get_settings
from storage.backends import open_catalogue, open_storage
from storage.catalogue_queries import TrackQuery


def cmd_run(args: argparse.Namespace) -> int:
    settings = get_settings()
    with open_storage(settings) as storage:
        if storage.embedded is not None:
            state = "reused" if storage.embedded.reused else "started"
            print(f"embedded S3 {state}: {storage.embedded.endpoint_url} "
                  f"(data: {storage.embedded.data_dir})")
        else:
            print(f"S3: {settings.endpoint_url}")
        print(f"bucket: s3://{settings.bucket}  catalogue: {settings.catalogue_file}")
        with open_catalogue(settings) as catalogue:
            stats = catalogue.stats()
            page = catalogue.list_tracks(TrackQuery(limit=10))
        counts = ", ".join(f"{k} {v}" for k, v in sorted(stats.counts_by_status.items()))
        print(f"catalogue: {stats.total_tracks} tracks{f' ({counts})' if counts else ''}")
        for sc in page.items:
            print(f"  {_track_line(sc)}")
        if args.once:
            return 0
        print("musicfn storage is up; Ctrl-C to stop")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        print("stopping")
    return 0


def register(sub: Any) -> None:
    """Add ``run`` to the ``musicfn`` parser."""
    p = sub.add_parser("run", help="start musicfn (embedded S3 + catalogue) and show it")
    p.add_argument("--once", action="store_true", help="exit after showing the catalogue")
    p.set_defaults(func=cmd_run)
