"""The generation pipeline end to end on real parts: a Serve synth engine, Ray tasks,
SeaweedFS, and the catalogue owner actor."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from engines.requests import Limits, parse_request
from functions.decode import decode_audio
from functions.loudness import measure_loudness
from functions.pipeline import ClipOptions
from jobs.model import GenerationPayload
from jobs.pipeline import pending_job
from jobs.service import build_runner, run_until_done
from musicfn.settings import Settings
from storage.catalogue.actor import catalogue_actor
from storage.catalogue.client import CatalogueClient
from storage.embedded_s3 import EmbeddedS3
from storage.inputs import put_input
from storage.keys import parse_key
from storage.objects import ObjectStore
from storage.sidecar import InputRef, Inputs, Sidecar
from storage.tracks import TrackStore
from tests.support import make_settings, start_s3_server

pytestmark = [pytest.mark.ray]
LIMITS = Limits(max_duration_s=30.0, max_prompt_chars=500)


@pytest.fixture(scope="module")
def engine(ray_cluster: Any) -> Iterator[Any]:
    from ray import serve

    from deployments.musicgen import build_app, deploy

    handle = deploy(build_app({"engine": "synth", "model": "synth", "device": "cpu",
                               "num_cpus": 0.5, "batch_wait_timeout_s": 0.01}),
                    name="pipeline-engine")
    yield handle
    serve.delete("pipeline-engine")


class GenerationPipeline:
    """A generation job through the job layer in this process: accept, then a runner."""

    def __init__(self, engine: Any, settings: Settings, name: str) -> None:
        objects = ObjectStore(settings)
        objects.ensure_bucket()
        self.owner = catalogue_actor(settings.catalogue_file, name=name)
        self.catalogue = CatalogueClient(self.owner)
        self.tracks = TrackStore(objects, settings)
        self.runner = build_runner(settings, self.catalogue, engine)

    async def submit(self, req: Any, options: ClipOptions,
                     inputs: Inputs | None = None) -> Sidecar:
        track = pending_job(req, options, inputs)
        await self.runner.queue.submit_generation(
            track, GenerationPayload(request=req, options=options, inputs=inputs),
            max_depth=1000)
        return track

    async def run(self, job: Sidecar, req: Any, options: ClipOptions) -> Sidecar:
        await run_until_done(self.runner, [job.id])
        done: Sidecar = await self.catalogue.get(job.id)
        return done


def make_pipeline(engine: Any, settings: Settings, name: str) -> GenerationPipeline:
    return GenerationPipeline(engine, settings, name)


def request(prompt: str = "lofi hip hop, mellow", duration_s: float = 3.0,
            **extra: Any) -> Any:
    return parse_request({"prompt": prompt, "duration_s": duration_s, "model": "synth",
                          "bpm": 96, **extra}, LIMITS)


def test_prompt_becomes_a_stored_analysed_indexed_track(engine: Any,
                                                         settings: Settings) -> None:
    import ray

    pipeline = make_pipeline(engine, settings, "cat-pipeline-1")
    options = ClipOptions(preset="podcast")
    req = request(duration_s=8.0)

    async def go() -> tuple[Sidecar, Sidecar]:
        job = await pipeline.submit(req, options)
        return job, await pipeline.run(job, req, options)

    job, done = asyncio.run(go())
    assert done.status == "completed", done.error
    assert done.engine == "synth" and done.id == job.id and done.seed == req.seed
    key, ext = parse_key(done.audio_key or "", settings.track_prefixes)
    assert ext == "wav" and key.audio_key.startswith(f"generations/{job.created_at:%Y/%m/%d}/")
    objects = pipeline.tracks.objects
    # The WAV decodes to the requested duration and measures the loudness target.
    decoded = decode_audio(objects.get(key.audio_key))
    assert decoded.audio.shape[1] / decoded.sample_rate == pytest.approx(8.0, abs=0.01)
    lufs = measure_loudness(decoded.audio, decoded.sample_rate).integrated_lufs
    assert lufs is not None and abs(lufs - (-16.0)) <= 0.5
    # Sidecar in the bucket == the catalogue row == what the pipeline returned.
    assert Sidecar.from_json(objects.get(key.sidecar_key)) == done
    assert ray.get(pipeline.owner.get.remote(job.id)) == done
    assert done.summary.bpm is not None and abs(done.summary.bpm - 96) / 96 < 0.04
    assert set(done.timings) == {"generate", "postprocess", "normalize", "analyze", "encode"}
    stats = ray.get(pipeline.owner.stats.remote())
    assert stats.top_prompts == [("lofi hip hop, mellow", 1)]


def test_concurrent_jobs_all_complete(engine: Any, settings: Settings) -> None:
    import ray

    pipeline = make_pipeline(engine, settings, "cat-pipeline-2")
    options = ClipOptions()

    async def go() -> list[Sidecar]:
        jobs = []
        for i in range(4):
            jobs.append(await pipeline.submit(request(prompt=f"ambient pad {i}", duration_s=2.0,
                                                      seed=i), options))
        await run_until_done(pipeline.runner, [j.id for j in jobs])
        return [await pipeline.catalogue.get(j.id) for j in jobs]

    results = asyncio.run(go())
    assert [r.status for r in results] == ["completed"] * 4
    assert len({r.audio_key for r in results}) == 4
    assert ray.get(pipeline.owner.count.remote()) == 4


def test_engine_rejection_leaves_a_failed_row_and_no_objects(engine: Any,
                                                              settings: Settings) -> None:
    import ray

    pipeline = make_pipeline(engine, settings, "cat-pipeline-3")
    options = ClipOptions()
    # Valid request shape, but synth cannot continue audio: the engine rejects it. The job
    # names the audio by key (jobs.inputs), never carries it inline.
    req = request()
    wav = io.BytesIO()
    sf.write(wav, np.zeros(32000, dtype=np.float32), 32000, format="WAV", subtype="FLOAT")
    key, digest = put_input(pipeline.tracks.objects, wav.getvalue())
    inputs = Inputs(continuation=InputRef(key=key, sha256=digest, duration_s=1.0,
                                          sample_rate=32000, channels=1))

    async def go() -> Sidecar:
        return await pipeline.run(await pipeline.submit(req, options, inputs), req, options)

    failed = asyncio.run(go())
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.stage == "generate" and failed.error.code == "continuation_unsupported"
    assert ray.get(pipeline.owner.get.remote(failed.id)) == failed
    assert list(pipeline.tracks.objects.list("generations/")) == []


@pytest.mark.fault
def test_s3_down_during_upload_fails_cleanly_with_nothing_half_written(
        engine: Any, tmp_path: Path) -> None:
    import ray

    server: EmbeddedS3 = start_s3_server(tmp_path / "s3")
    try:
        settings = make_settings(server, tmp_path)
        pipeline = make_pipeline(engine, settings, "cat-pipeline-4")
        options = ClipOptions()
        req = request(duration_s=2.0)

        async def go() -> Sidecar:
            job = await pipeline.submit(req, options)
            server.stop()  # the outage starts after the job is accepted
            return await pipeline.run(job, req, options)

        failed = asyncio.run(go())
        assert failed.status == "failed" and failed.error is not None
        assert (failed.error.stage, failed.error.code) == ("upload", "storage_unreachable")
        assert ray.get(pipeline.owner.get.remote(failed.id)).status == "failed"
        server.start()
        assert list(pipeline.tracks.objects.list("generations/")) == []
    finally:
        server.stop()
