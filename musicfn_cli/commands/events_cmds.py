"""Trigger commands: ``watch`` (the poller), ``process`` (batches), ``events ls|replay``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from musicfn.errors import InvalidRequestError
from musicfn.settings import Settings, get_settings
from musicfn_cli.commands import ray_session
from storage.backends import open_storage
from storage.dlq import DeadLetter
from storage.objects import ObjectStore


def _runner(settings: Settings) -> Any:
    """A local runner for event and batch jobs (no engine), on the service's catalogue."""
    from jobs.service import build_runner

    ray_session.connect(settings)
    return build_runner(settings, ray_session.catalogue(settings), None,
                        concurrency=settings.event_concurrency)


def cmd_watch(args: argparse.Namespace) -> int:
    from jobs.service import outcome_counts, run_until_done
    from triggers.poller import Poller, PollReport

    settings = get_settings()
    if args.interval is not None:
        settings = settings.model_copy(update={"poll_interval_s": args.interval})
    with open_storage(settings, keep_s3_running=True) as b:
        runner = _runner(settings)
        poller = Poller(runner.queue, b.objects, settings)

        def show(report: PollReport, outcomes: dict[str, int]) -> None:
            body = {**report.model_dump(mode="json", exclude={"job_ids"}), "outcomes": outcomes}
            print(json.dumps(body) if args.json else
                  f"{'full ' if report.full else ''}poll: {report.listed} listed, "
                  f"{report.known} known, {outcomes or 'nothing new'}", flush=True)

        async def once(full: bool) -> None:
            report = await poller.poll_once(full=full)
            jobs = await run_until_done(runner, report.job_ids) if report.job_ids else []
            show(report, outcome_counts(jobs))

        if args.once:  # a full pass: also finishes jobs an earlier, killed run left behind
            asyncio.run(once(True))
            return 0
        print(f"watching s3://{settings.bucket}/{settings.incoming_prefix}/ every "
              f"{settings.poll_interval_s:g} s (Ctrl-C stops)", file=sys.stderr)

        async def forever() -> None:
            full = True
            while True:
                await once(full)
                full = False
                await asyncio.sleep(settings.poll_interval_s)

        asyncio.run(forever())
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from jobs.batches import batch_job, batch_prefix, batch_progress, new_batch
    from jobs.service import run_until_done

    settings = get_settings()
    with open_storage(settings, keep_s3_running=True) as b:
        batch = new_batch(args.source)
        folder = Path(args.source)
        if not args.source.startswith("s3://") and folder.is_dir():
            prefix = _upload_folder(b.objects, settings, folder, batch.id, quiet=args.json)
        elif args.source.startswith("s3://"):
            prefix = batch_prefix(args.source, settings)
        else:
            raise InvalidRequestError(f"{args.source}: not a folder or an s3:// URL")
        if args.concurrency is not None:
            settings = settings.model_copy(update={"event_concurrency": args.concurrency})
        runner = _runner(settings)
        catalogue = runner.queue.catalogue
        bar = None if args.json else _progress_bar()
        seen: set[str] = set()

        def step(jobs: list[Any]) -> None:
            items = [j for j in jobs if j.parent_id == batch.id]
            for j in items:
                if j.state != "done" or j.id in seen:
                    continue
                seen.add(j.id)
                result = j.result or {}
                if bar is not None:
                    bar.total = len(items)
                    bar.update(1)
                if result.get("outcome") == "failed" and not args.json:
                    print(f"failed: {result.get('key')}: {result.get('reason')}",
                          file=sys.stderr)

        async def main() -> Any:
            await catalogue.save_batch(batch)
            await runner.queue.submit([batch_job(runner.queue, batch, prefix)])
            jobs = await run_until_done(runner, [batch.id], parent_id=batch.id,
                                        on_progress=step)
            job = next(j for j in jobs if j.id == batch.id)
            items = [j for j in jobs if j.parent_id == batch.id]
            final = batch_progress(batch, job, items)
            await catalogue.save_batch(final)
            return final

        final = asyncio.run(main())
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(final.model_dump(mode="json"), indent=2))
    else:
        print(f"batch {final.id}: {final.total} objects: {final.processed} done, "
              f"{final.skipped} skipped, {final.failed} failed")
    return 1 if final.failed or final.status != "completed" else 0


def _upload_folder(objects: ObjectStore, settings: Settings, folder: Path, batch_id: str,
                   *, quiet: bool) -> str:
    """Upload a folder's audio files to ``incoming/batches/<batch-id>/``; returns the prefix."""
    from jobs.uploads import AUDIO_SUFFIXES
    from storage.tracks import CONTENT_TYPES

    prefix = f"{settings.incoming_prefix}/batches/{batch_id}/"
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise InvalidRequestError(f"{folder}: no audio files (wav, flac, ogg, mp3)")
    for path in files:
        rel = path.relative_to(folder).as_posix()
        ext = path.suffix.lower().lstrip(".")
        objects.put(prefix + rel, path.read_bytes(),
                    content_type=CONTENT_TYPES.get(ext, "application/octet-stream"))
    if not quiet:
        print(f"uploaded {len(files)} file(s) to s3://{settings.bucket}/{prefix}",
              file=sys.stderr)
    return prefix


def _progress_bar() -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(total=0, unit="file", file=sys.stderr, dynamic_ncols=True)


def letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """What ``musicfn events ls`` shows of one dead letter."""
    return {"id": letter.id, "key": letter.key, "etag": letter.etag,
            "error": f"{letter.error.code}: {letter.error.message}",
            "attempts": letter.attempts, "replays": letter.replays,
            "failed_at": letter.last_failed_at.isoformat()}


def cmd_events_ls(args: argparse.Namespace) -> int:
    from storage.dlq import DeadLetterQueue

    settings = get_settings()
    with open_storage(settings, keep_s3_running=True) as b:
        letters = [letter_summary(x) for x in DeadLetterQueue(b.objects, settings).list()]
    if args.json:
        print(json.dumps(letters, indent=2))
        return 0
    if not letters:
        print("no dead letters")
    for x in letters:
        print(f"{x['id']}  {x['failed_at'][:19]}  {x['key']}  {x['error']}  "
              f"(attempts {x['attempts']}, replays {x['replays']})")
    return 0


def cmd_events_replay(args: argparse.Namespace) -> int:
    from jobs.model import EventPayload, ObjectEvent, dump
    from jobs.service import run_until_done
    from storage.dlq import DeadLetterQueue
    from storage.keys import new_id

    settings = get_settings()
    with open_storage(settings, keep_s3_running=True) as b:
        dlq = DeadLetterQueue(b.objects, settings)
        letters = list(dlq.list()) if args.all else [dlq.get(i) for i in args.id]
        letters = [x for x in letters if x.job_kind == "event"]
        if not letters:  # no Ray to attach to (or start) for nothing
            print("[]" if args.json else "nothing to replay")
            return 0
        runner = _runner(settings)
        jobs = [runner.queue.new_job(new_id(), "event", dump(EventPayload(
            event=ObjectEvent(kind="created", bucket=x.bucket, key=x.key, etag=x.etag or None,
                              version_id=x.version_id, source="replay"),
            letter_id=x.id))) for x in letters]

        async def main() -> list[Any]:
            await runner.queue.submit(jobs)
            return await run_until_done(runner, [j.id for j in jobs]) if jobs else []

        done = {j.id: j for j in asyncio.run(main())}
        results = []
        for letter, job in zip(letters, jobs, strict=True):
            ended = done[job.id]
            result = ended.result or {"outcome": "failed", "key": letter.key,
                                      "reason": ended.error.message if ended.error else None}
            results.append({"letter": letter.id, "key": letter.key, "reason": None, **result})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['letter']}  {r['key']}: {r['outcome']}"
                  + (f" ({r['reason']})" if r["reason"] else ""))
        if not results:
            print("nothing to replay")
    return 1 if any(r["outcome"] == "failed" for r in results) else 0


def register(sub: Any) -> None:
    """Add ``watch``, ``process`` and ``events`` to the ``musicfn`` parser."""
    p = sub.add_parser("watch", help="poll incoming/ and process new uploads")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--full", action="store_true", help="ignored: --once always lists from "
                   "the start (reconciliation); kept for scripts")
    p.add_argument("--interval", type=float, default=None, help="seconds between polls")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("process", help="process a folder or s3://bucket/incoming/... as a batch")
    p.add_argument("source", help="a local folder (uploaded first) or s3://<bucket>/incoming/..")
    p.add_argument("--concurrency", type=int, default=None, help="objects in flight")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_process)

    events = sub.add_parser("events", help="dead-lettered events")
    esub = events.add_subparsers(dest="events_command", metavar="COMMAND")
    esub.required = True
    p = esub.add_parser("ls", help="list dead letters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_events_ls)
    p = esub.add_parser("replay", help="re-drive dead letters through the handler")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", help="a letter id (repeatable)")
    which.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_events_replay)
