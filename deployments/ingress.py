"""The HTTP ingress: FastAPI on Ray Serve (OpenAPI at /docs), versioned routes under /v1.

Jobs run inside the ingress replica as asyncio tasks against the engine deployment, the
functions' Ray tasks, the bucket and the catalogue owner actor (``deployments.pipeline``).

No ``from __future__ import annotations`` here: Serve's ingress wrapper resolves route
annotations in its own namespace, so string annotations (``Request``) would silently become
query parameters.
"""

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from ray import serve

from deployments.api_models import BatchBody, GenerationBody, GenerationRecord
from deployments.auth import check_api_key, check_bearer
from deployments.callbacks import post_callback, validate_callback_url
from deployments.engine_client import AdmissionGate, EngineClient
from deployments.engines.requests import GenerationRequest, Limits
from deployments.http_errors import install_error_handlers
from deployments.observability import install_request_metrics
from deployments.pipeline import GenerationPipeline, pending_job
from deployments.triggers.batches import BatchRunner, batch_prefix, new_batch
from deployments.triggers.handler import EventHandler
from deployments.triggers.webhook import WebhookIntake, read_notification
from deployments.uploads import read_upload
from deployments.web import mount_web
from functions.decode import DecodeLimits, decode_audio
from functions.pipeline import ClipOptions
from functions.tasks import analyze_task, warm_up_workers
from musicfn import __version__
from musicfn.errors import InvalidRequestError, MusicfnError, NotFoundError
from musicfn.logs import bind_job_id
from musicfn.settings import Settings, get_settings
from storage.catalogue_actor import catalogue_actor
from storage.catalogue_queries import TrackQuery
from storage.keys import validate_id
from storage.objects import ObjectStore
from storage.sidecar import Sidecar
from storage.tracks import TrackStore

log = logging.getLogger(__name__)
PROGRESS_TIMEOUT_S = 1.0
app = FastAPI(title="musicfn", version=__version__,
              description="AI music generation: prompt → normalised, analysed, indexed WAV")
install_error_handlers(app)
install_request_metrics(app)
mount_web(app)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    """HTTP front of musicfn: validates, records and runs jobs, serves the catalogue."""

    def __init__(self, engine: Any, default_model: str = "synth",
                 settings: dict[str, Any] | None = None, poller: Any = None,
                 max_inflight_jobs: int | None = None) -> None:
        self.settings = Settings(**settings) if settings else get_settings()
        self.objects = ObjectStore(self.settings)
        self.objects.ensure_bucket()
        self.tracks = TrackStore(self.objects, self.settings)
        self.catalogue = catalogue_actor(self.settings.catalogue_file, detached=True,
                                         checkpoint_mb=self.settings.catalogue_checkpoint_mb,
                                         namespace=self.settings.ray_namespace,
                                         settings=self.settings)  # to rebuild a lost file
        self.engine = engine
        self.default_model = default_model
        self.limits = Limits(max_duration_s=self.settings.max_generation_duration_s,
                             max_prompt_chars=self.settings.max_prompt_chars)
        # Jobs call the engine through a client that rides out replica loss and backpressure;
        # the gate turns excess POSTs into 503 before any row is written.
        self.pipeline = GenerationPipeline(EngineClient(engine), self.catalogue, self.tracks,
                                           self.settings)
        self.admission = AdmissionGate(max_inflight_jobs or self.settings.max_inflight_jobs)
        self.jobs: dict[str, asyncio.Task[Sidecar]] = {}
        self.events = EventHandler(self.objects, self.catalogue, self.settings)
        self.intake = WebhookIntake(self.events)
        self.batch_runner = BatchRunner(self.events)
        self.batch_tasks: set[asyncio.Task[Any]] = set()
        self.poller = poller  # DeploymentHandle of EventPoller, or None
        # Start and warm the audio workers now, so the first job does not pay for it.
        threading.Thread(target=warm_up_workers, name="warm-up", daemon=True).start()

    # -- generations -----------------------------------------------------------------------

    @app.post("/v1/generations", status_code=202)
    async def create_generation(
            self, body: GenerationBody, request: Request,
            wait: float = Query(default=0, ge=0, le=120),
            idempotency_key: str | None = Header(default=None, max_length=200)) -> Response:
        """Start a generation; 202 + Location, or 200 with the record when done within
        ``?wait=`` seconds. The same Idempotency-Key with the same body returns the same job."""
        check_api_key(request, self.settings.api_key)
        gen = body.generation_request(self.limits, self.default_model)
        options = body.clip_options()
        if body.callback_url is not None:
            validate_callback_url(body.callback_url,
                                  allow_private=self.settings.callback_allow_private)
        job = pending_job(gen, options)
        self.admission.admit()  # full: 503 queue_full + Retry-After, and no row is written
        try:
            if idempotency_key is not None:
                owner = await self.catalogue.claim_idempotency_key.remote(
                    idempotency_key, body.fingerprint(), job.id)
                if owner != job.id:
                    self.admission.release()
                    return await self._respond(owner, wait)
            bind_job_id(job.id)  # this request's log lines, and the job's task, carry its id
            log.info("job accepted: %.1f s, engine %s", gen.duration_s, gen.model or "default")
            await self.catalogue.upsert.remote([job])
            await self.catalogue.record_prompts.remote([gen.prompt])
        except BaseException:
            self.admission.release()
            raise
        task = asyncio.create_task(self._run(job, gen, options, body.callback_url))
        task.add_done_callback(lambda _: self.admission.release())
        self.jobs[job.id] = task
        return await self._respond(job.id, wait)

    async def _run(self, job: Sidecar, gen: GenerationRequest, options: ClipOptions,
                   callback_url: str | None) -> Sidecar:
        try:
            final = await self.pipeline.run(job, gen, options)
            if callback_url is not None:
                await post_callback(
                    callback_url, (await self._record(final)).model_dump(mode="json"),
                    allow_private=self.settings.callback_allow_private,
                    timeout_s=self.settings.callback_timeout_s,
                    attempts=self.settings.callback_attempts)
            return final
        finally:
            self.jobs.pop(job.id, None)

    async def _respond(self, track_id: str, wait: float) -> Response:
        task = self.jobs.get(track_id)
        if task is not None and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=wait)
        elif wait > 0:  # the job runs in another ingress replica: watch the catalogue
            deadline = time.monotonic() + wait
            while (await self._get(track_id)).status in ("pending", "processing") and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.25)
        record = await self._record(await self._get(track_id))
        finished = record.status in ("completed", "failed")
        return JSONResponse(record.model_dump(mode="json"),
                            status_code=200 if finished and wait > 0 else 202,
                            headers={"Location": f"/v1/generations/{track_id}"})

    async def _get(self, track_id: str) -> Sidecar:
        try:
            validate_id(track_id)
        except MusicfnError:
            raise NotFoundError(f"no generation {track_id!r}") from None
        sc: Sidecar | None = await self.catalogue.get.remote(track_id)
        if sc is None:
            raise NotFoundError(f"no generation {track_id}")
        return sc

    async def _record(self, sc: Sidecar) -> GenerationRecord:
        progress = None
        if sc.status == "processing":
            progress = await self._progress(sc.id)
        url = self.objects.presign_get(sc.audio_key) if sc.status == "completed" and \
            sc.audio_key else None
        return GenerationRecord.of(sc, progress=progress, audio_url=url)

    async def _progress(self, track_id: str) -> float | None:
        """The engine's progress of a running job; best effort: None when the engine is busy
        (the call shares its request slots), full or restarting."""
        try:
            value: float | None = await asyncio.wait_for(
                self.engine.progress.remote(track_id), timeout=PROGRESS_TIMEOUT_S)
        except Exception:  # BackPressureError, timeout, replica lost
            return None
        return value

    @app.get("/v1/generations/{track_id}")
    async def get_generation(self, track_id: str, request: Request) -> GenerationRecord:
        """Status, progress, the full record and a short-lived audio URL."""
        check_api_key(request, self.settings.api_key)
        return await self._record(await self._get(track_id))

    @app.get("/v1/generations")
    async def list_generations(
            self, request: Request, status: str | None = None, kind: str | None = None,
            prompt: str | None = None, key: str | None = None, mode: str | None = None,
            engine: str | None = None, bpm_min: float | None = None,
            bpm_max: float | None = None, lufs_min: float | None = None,
            lufs_max: float | None = None, created_from: str | None = None,
            created_to: str | None = None, limit: int = Query(default=50, ge=1, le=500),
            cursor: str | None = None) -> dict[str, Any]:
        """The catalogue, newest first, filtered; follow ``next_cursor`` for more."""
        check_api_key(request, self.settings.api_key)
        try:
            query = TrackQuery.model_validate({
                "status": status, "kind": kind, "prompt_contains": prompt, "key": key,
                "mode": mode, "engine": engine, "bpm_min": bpm_min, "bpm_max": bpm_max,
                "lufs_min": lufs_min, "lufs_max": lufs_max, "created_from": created_from,
                "created_to": created_to, "limit": limit, "cursor": cursor})
        except ValueError as exc:
            raise InvalidRequestError(str(exc).splitlines()[-1].strip()) from None
        page = await self.catalogue.list_tracks.remote(query)
        return page.model_dump(mode="json")  # type: ignore[no-any-return]

    @app.get("/v1/generations/{track_id}/audio")
    async def get_audio(self, track_id: str, request: Request,
                        inline: bool = False) -> Response:
        """Redirect to a presigned GET of the audio, or stream it with ``?inline=1``."""
        check_api_key(request, self.settings.api_key)
        sc = await self._get(track_id)
        if sc.status != "completed" or sc.audio_key is None or sc.audio is None:
            raise NotFoundError(f"generation {track_id} has no audio (status {sc.status})")
        if inline:
            data = await asyncio.to_thread(self.objects.get, sc.audio_key)
            media = "audio/flac" if sc.audio.format == "flac" else "audio/wav"
            return Response(data, media_type=media)
        return RedirectResponse(self.objects.presign_get(sc.audio_key), status_code=307)

    @app.get("/v1/generations/{track_id}/waveform")
    async def get_waveform(self, track_id: str, request: Request) -> dict[str, Any]:
        """Peaks in BBC audiowaveform's JSON format."""
        check_api_key(request, self.settings.api_key)
        sc = await self._get(track_id)
        if sc.analysis is None:
            raise NotFoundError(f"generation {track_id} has no analysis (status {sc.status})")
        waveform: dict[str, Any] = sc.analysis["waveform"]
        return waveform

    @app.delete("/v1/generations/{track_id}", status_code=204)
    async def delete_generation(self, track_id: str, request: Request) -> Response:
        """Remove the track (sidecar, then audio) and its row."""
        check_api_key(request, self.settings.api_key)
        sc = await self._get(track_id)
        if sc.status in ("pending", "processing"):
            raise InvalidRequestError(f"generation {track_id} is still {sc.status}",
                                      code="job_in_progress")
        if sc.audio_key is not None:
            await asyncio.to_thread(self.tracks.delete, self.tracks.key_for(sc))
        await self.catalogue.delete.remote([track_id])
        return Response(status_code=204)

    # -- analyses --------------------------------------------------------------------------

    @app.post("/v1/analyses")
    async def analyze_upload(
            self, request: Request, store: bool = False,
            preset: Literal["streaming", "podcast", "broadcast"] = "streaming") -> JSONResponse:
        """Analyse an uploaded file (multipart field ``file``, or a raw audio body), capped
        at MUSICFN_MAX_UPLOAD_BYTES (413 beyond). ``?store=true`` also stores a normalised
        copy as a track."""
        check_api_key(request, self.settings.api_key)
        data, filename = await read_upload(request, self.settings.max_upload_bytes)
        decoded = await asyncio.to_thread(decode_audio, data,
                                          DecodeLimits.from_settings(self.settings))
        options = ClipOptions(preset=preset)
        refs: Any = analyze_task.remote(decoded.audio, decoded.sample_rate, None, options)
        analysis = await refs[0]
        body: dict[str, Any] = {"filename": filename,
                                "analysis": analysis.model_dump(mode="json")}
        if not store:
            return JSONResponse(body)
        track = await self.pipeline.store_upload(decoded.audio, decoded.sample_rate, options,
                                                 filename=filename)
        if track.status != "completed" and track.error is not None:
            raise MusicfnError(track.error.message, code=track.error.code)
        body["track"] = (await self._record(track)).model_dump(mode="json")
        return JSONResponse(body, status_code=201,
                            headers={"Location": f"/v1/generations/{track.id}"})

    async def __del__(self) -> None:
        """Graceful shutdown: Serve waits for open requests, not for the jobs, events and
        batches they started; wait for those too (bounded by graceful_shutdown_timeout_s)."""
        pending = [*self.jobs.values(), *self.intake.tasks, *self.batch_tasks]
        if pending:
            log.info("shutting down: waiting for %d job(s)/event(s)", len(pending))
            await asyncio.wait(pending)

    # -- object-store events and batches ---------------------------------------------------

    @app.head("/v1/events/s3")
    async def events_probe(self) -> Response:
        """MinIO's liveness probe of the webhook target."""
        return Response(status_code=200)

    @app.post("/v1/events/s3")
    async def s3_events(self, request: Request) -> JSONResponse:
        """MinIO bucket notifications (``Authorization: Bearer <MUSICFN_WEBHOOK_TOKEN>``).

        200 once events are accepted (processed in the background) or rejected for good;
        503 only when they should be delivered again."""
        check_bearer(request, self.settings.webhook_token)
        receipt = await self.intake.accept(await read_notification(request))
        return JSONResponse(receipt.model_dump(mode="json"))

    @app.get("/v1/events/poller")
    async def poller_status(self, request: Request) -> dict[str, Any]:
        """The incoming/ poller: enabled, polls made, the last poll's outcome."""
        check_api_key(request, self.settings.api_key)
        if self.poller is None:
            return {"enabled": False}
        status: dict[str, Any] = await self.poller.status.remote()
        return status

    @app.post("/v1/batches", status_code=202)
    async def create_batch(self, body: BatchBody, request: Request) -> JSONResponse:
        """Process every object under an incoming/ prefix (``s3://bucket/incoming/...``)."""
        check_api_key(request, self.settings.api_key)
        prefix = batch_prefix(body.source, self.settings)
        batch = new_batch(body.source)
        await self.catalogue.save_batch.remote(batch)
        task = asyncio.create_task(self.batch_runner.run(batch, prefix))
        self.batch_tasks.add(task)
        task.add_done_callback(self.batch_tasks.discard)
        return JSONResponse(batch.model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/v1/batches/{batch.id}"})

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(self, batch_id: str, request: Request) -> dict[str, Any]:
        """A batch's progress: total, processed, skipped, failed, status."""
        check_api_key(request, self.settings.api_key)
        try:
            validate_id(batch_id)
        except MusicfnError:
            raise NotFoundError(f"no batch {batch_id!r}") from None
        batch = await self.catalogue.get_batch.remote(batch_id)
        return batch.model_dump(mode="json")  # type: ignore[no-any-return]

    # -- service ---------------------------------------------------------------------------

    @app.get("/v1/stats")
    async def stats(self, request: Request) -> dict[str, Any]:
        check_api_key(request, self.settings.api_key)
        result = await self.catalogue.stats.remote()
        return result.model_dump(mode="json")  # type: ignore[no-any-return]

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """Per-dependency status; 503 when any is down. Needs no API key."""
        checks: dict[str, Any] = {}
        try:
            await asyncio.to_thread(self.objects.ping)
            checks["s3"] = {"ok": True, "endpoint": self.objects.endpoint}
        except MusicfnError as exc:
            checks["s3"] = {"ok": False, "error": exc.code}
        try:
            await asyncio.wait_for(self.catalogue.schema_version.remote(), timeout=5)
            checks["catalogue"] = {"ok": True}
        except Exception as exc:  # the owner is restarting or gone
            checks["catalogue"] = {"ok": False, "error": type(exc).__name__}
        try:
            info = await asyncio.wait_for(self.engine.describe.remote(), timeout=5)
            checks["engine"] = {"ok": True, **info}
        except Exception as exc:  # no replica answers
            checks["engine"] = {"ok": False, "error": type(exc).__name__}
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse({"ok": ok, "version": __version__, **checks},
                            status_code=200 if ok else 503)
