"""Catalogue benchmark: batched ingest, filtered query, point lookup, reindex from SeaweedFS.

    .venv/bin/python bench/catalogue_bench.py [--rows 1000000] [--sidecars 2000] [--days 1]

Targets: >= 50 000 rows/s ingest, <= 25 ms filtered-query p50 on 1 M rows, <= 2 ms
point-lookup p50 (issue 2; no regression from 108k rows/s, 2.7 ms, 0.7 ms), and >= 2 000
sidecars/s reindex (issue 17), measured both ways it runs: on threads in one process (the CLI,
service stopped) and as Ray tasks (the service's catalogue owner; first run on fresh workers,
then warm). The sidecars are written on ``--days`` UTC days (1: all today, the hardest case:
one day is listed by one task). Prints measured figures, targets and ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import ray

from musicfn.ports import free_port_block
from musicfn.settings import Settings
from storage.catalogue.queries import TrackQuery
from storage.catalogue.schema import TRACK_SCHEMA
from storage.catalogue.store import Catalogue
from storage.embedded_s3 import EmbeddedS3
from storage.keys import TrackKey, new_id
from storage.objects import ObjectStore
from storage.reindex import reindex
from storage.sidecar import AudioFacts, Sidecar, Summary
from storage.tracks import TrackStore

KEYS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_batch(start: int, n: int, rng: random.Random) -> tuple[pa.Table, list[str]]:
    """``n`` valid rows (doc included) spread over ~320 days."""
    cols: dict[str, list[object]] = {name: [] for name in TRACK_SCHEMA.names}
    ids = []
    for i in range(start, start + n):
        created = T0 + timedelta(seconds=i * 27.6)
        tid = new_id(created)
        ids.append(tid)
        bpm = round(rng.uniform(60, 180), 1)
        key = KEYS[i % 12]
        mode = "major" if i % 3 else "minor"
        lufs = round(rng.uniform(-24, -8), 1)
        ts = created.isoformat().replace("+00:00", "Z")
        doc = json.dumps({
            "schema_version": 1, "id": tid, "kind": "generation", "status": "completed",
            "created_at": ts, "prompt": f"prompt {i % 5000}", "engine": "synth",
            "summary": {"bpm": bpm, "key": key, "mode": mode, "lufs": lufs}})
        row = {"id": tid, "kind": "generation", "status": "completed",
               "created_at": created.replace(tzinfo=None), "completed_at": None,
               "prompt": f"prompt {i % 5000}", "engine": "synth", "model": "synth-v1",
               "seed": i, "audio_key": None, "format": "wav", "sample_rate": 32000,
               "channels": 2, "duration_s": 8.0, "bytes": 1_024_044, "sha256": None,
               "bpm": bpm, "musical_key": key, "mode": mode, "lufs": lufs, "peak_dbfs": -1.0,
               "error_code": None, "source_key": None, "source_etag": None, "doc": doc}
        for name, value in row.items():
            cols[name].append(value)
    return pa.table(cols, schema=TRACK_SCHEMA), ids


def p50_ms(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench_catalogue(rows: int, workdir: Path) -> dict[str, float]:
    rng = random.Random(7)
    cat = Catalogue(workdir / "bench.duckdb")
    batch = 50_000
    tables, all_ids, build_s = [], [], 0.0
    for start in range(0, rows, batch):
        t = time.perf_counter()
        table, ids = synthetic_batch(start, min(batch, rows - start), rng)
        build_s += time.perf_counter() - t
        tables.append(table)
        all_ids += ids
    t = time.perf_counter()
    for table in tables:
        cat.upsert_table(table)
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    cat.checkpoint()  # what DuckDB does on its own once the WAL passes the threshold
    checkpoint_s = time.perf_counter() - t

    # The online path's own entry point: pydantic sidecars -> Arrow -> upsert.
    sidecars = [Sidecar(id=new_id(), kind="generation", status="completed",
                        created_at=datetime.now(UTC), prompt="p", engine="synth",
                        summary=Summary(bpm=120, key="C", mode="major", lufs=-14))
                for _ in range(20_000)]
    t = time.perf_counter()
    for i in range(0, len(sidecars), 1000):
        cat.upsert(sidecars[i : i + 1000])
    sidecar_ingest_s = time.perf_counter() - t

    query = TrackQuery(bpm_min=118, bpm_max=126, key="A", mode="minor",
                       created_from=T0 + timedelta(days=30), created_to=T0 + timedelta(days=200),
                       limit=50)
    assert cat.list_tracks(query).items, "filter matched nothing"
    filter_p50 = p50_ms(lambda: cat.list_tracks(query), 50)
    probe = [rng.choice(all_ids) for _ in range(500)]
    it = iter(probe)
    lookup_p50 = p50_ms(lambda: cat.get(next(it)), 500)
    cat.close()
    return {"rows": rows, "ingest_rows_per_s": rows / ingest_s,
            "ingest_incl_checkpoint_rows_per_s": rows / (ingest_s + checkpoint_s),
            "row_build_s": build_s,
            "sidecar_ingest_rows_per_s": len(sidecars) / sidecar_ingest_s,
            "filter_p50_ms": filter_p50, "lookup_p50_ms": lookup_p50}


def bench_reindex(count: int, days: int, workdir: Path) -> dict[str, float]:
    port = free_port_block(5, gap=10000)  # S3 + 4, and the same + 10000 for gRPC
    server = EmbeddedS3(workdir / "s3", port, "bench", "bench-secret").start()
    try:
        settings = Settings(embedded_s3_port=port, s3_access_key="bench",
                            s3_secret_key="bench-secret", bucket="bench",
                            data_dir=workdir)
        objects = ObjectStore(settings)
        objects.ensure_bucket()
        store = TrackStore(objects, settings)
        now = datetime.now(UTC)

        def write(n: int) -> None:
            audio = b"RIFF" + n.to_bytes(4, "little") * 64
            created = now - timedelta(days=n % days)
            tid = new_id(created)
            key = TrackKey.for_id("generations", tid)
            store.write(Sidecar(
                id=tid, kind="generation", status="completed", created_at=created,
                prompt=f"prompt {n % 50}", engine="synth", audio_key=key.audio_key,
                audio=AudioFacts(format="wav", sample_rate=32000, channels=2, frames=64,
                                 duration_s=0.002, bytes=len(audio),
                                 sha256=hashlib.sha256(audio).hexdigest()),
                summary=Summary(bpm=120, key="C", mode="major", lufs=-14)), audio)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(write, range(count)))
        cat = Catalogue(workdir / "reindex.duckdb")
        threads = [reindex(objects, cat, settings, parallel="threads") for _ in range(3)]
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        try:
            tasks = [reindex(objects, cat, settings, parallel="ray") for _ in range(4)]
        finally:
            ray.shutdown()
        cat.close()
        return {"sidecars": threads[0].sidecars, "days": days,
                "reindex_threads_per_s": statistics.median(r.rate_per_s for r in threads),
                "reindex_ray_cold_per_s": tasks[0].rate_per_s,
                "reindex_ray_warm_per_s": statistics.median(r.rate_per_s for r in tasks[1:])}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sidecars", type=int, default=2000)
    parser.add_argument("--days", type=int, default=1, help="UTC days the sidecars span")
    parser.add_argument("--skip-rows", action="store_true", help="reindex only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = {} if args.skip_rows else bench_catalogue(args.rows, Path(tmp))
        r = bench_reindex(args.sidecars, args.days, Path(tmp))
    targets = []
    if c:
        targets += [
            ("ingest (Arrow batches of 50k)", c["ingest_rows_per_s"], "rows/s", 50_000, True),
            ("ingest incl. final checkpoint", c["ingest_incl_checkpoint_rows_per_s"], "rows/s",
             50_000, True),
            ("ingest (sidecars, batches of 1k)", c["sidecar_ingest_rows_per_s"], "rows/s",
             50_000, True),
            (f"filter p50 on {c['rows']:,} rows", c["filter_p50_ms"], "ms", 25, False),
            ("point lookup p50", c["lookup_p50_ms"], "ms", 2, False)]
    n = f"{r['sidecars']:.0f} sidecars / {r['days']:.0f} d"
    targets += [
        (f"reindex {n}, threads", r["reindex_threads_per_s"], "sidecars/s", 2000, True),
        (f"reindex {n}, Ray cold", r["reindex_ray_cold_per_s"], "sidecars/s", 2000, True),
        (f"reindex {n}, Ray warm", r["reindex_ray_warm_per_s"], "sidecars/s", 2000, True),
    ]
    print(f"{'measure':<40} {'value':>12} {'target':>10} {'ratio':>8}")
    for name, value, unit, target, higher_better in targets:
        ratio = value / target if higher_better else target / value
        print(f"{name:<40} {value:>12,.2f} {target:>10,} {ratio:>7.1f}x  {unit}")
    print(json.dumps({**c, **r}, indent=1))


if __name__ == "__main__":
    main()
