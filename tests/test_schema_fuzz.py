"""Schema fuzzing of the deployed API: schemathesis over every operation of its own OpenAPI
document, all checks and all phases (examples, coverage, fuzzing, stateful), 0 failures.

The app is the real one (synth engine, SeaweedFS, DuckDB owner, job runners) with an API key
and a webhook token; schemathesis authenticates per operation from the document's security
schemes and also checks that credentials are enforced (``ignored_auth``).

Bounded for a 2-core box (about two minutes): ``MAX_EXAMPLES`` per operation and phase, a
request timeout, and a 1 s duration limit on this deployment so the generations it accepts
finish quickly (the document states the limit, so the fuzzer respects it).

Nothing is excluded silently. What is pinned or shaped, and why:

* ``?wait=`` of ``POST /v1/generations`` is pinned to 0: a positive wait of up to 120 s per
  example would only time the synth engine, not test the API (``test_ingress`` covers it).
* Upload bodies (``POST /v1/analyses``, raw or multipart ``file``) are real audio files of the
  declared media types (registered strategies): random bytes are not audio, and "is this
  decodable audio" is no JSON Schema. Undecodable uploads have their own tests.
* Cross-parameter rules OpenAPI cannot state are kept by a ``map_case`` hook on the valid
  (positive) cases of ``GET /v1/generations``: a ``*_min`` over its ``*_max`` is swapped, and a
  ``cursor`` is one the API returned (a cursor is opaque: any other string is refused with 400,
  as documented).
* Callback URLs: the document states their shape (the API checks the same pattern); which
  addresses they may name is the SSRF guard's policy (no link-local, multicast, reserved,
  unspecified or metadata address), which no pattern states. So a valid case whose literal
  host the guard refuses (``http://0``) gets the host ``callback.invalid`` (the policy has its
  own tests: ``test_callbacks``, ``test_ingress``). This deployment allows private addresses,
  so deliveries fail fast on loopback or unresolvable names instead of leaving the box.
* The SSE stream (``/events``) is read for at most ``MAX_STREAM_EVENTS`` events or the request
  timeout: a job's stream ends when the job does, which is the runner's pace, not the API's.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from storage.catalogue.queries import encode_cursor
from storage.embedded_s3 import EmbeddedS3
from storage.keys import new_id
from tests.support import make_settings
from tests.support.app import deployed_app

pytestmark = [pytest.mark.ray]
API_KEY = "fuzz-api-key"
WEBHOOK_TOKEN = "fuzz-webhook-token"
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "20"))
SEED = int(os.environ.get("FUZZ_SEED", "20261130"))
MAX_STREAM_EVENTS = 3
REQUEST_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def fuzz_url(serve_url: str, s3_server: EmbeddedS3,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(s3_server, data, api_key=API_KEY, webhook_token=WEBHOOK_TOKEN,
                             max_upload_bytes=2_000_000, callback_allow_private=True,
                             callback_attempts=1, callback_timeout_s=0.5)
    with deployed_app(settings, "fuzz", "/fuzz", batch_wait_timeout_s=0.01,
                      max_duration_s=1.0, max_pending_jobs=10_000) as url:
        yield url


def _audio(fmt: str, subtype: str) -> bytes:
    t = np.arange(8000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone, tone], axis=1), 16000, format=fmt, subtype=subtype)
    return buf.getvalue()


def _register_strategies() -> None:
    """Valid audio files for every media type the upload route declares."""
    import schemathesis
    from hypothesis import strategies as st

    wav, flac = _audio("WAV", "PCM_16"), _audio("FLAC", "PCM_16")
    ogg, mp3 = _audio("OGG", "VORBIS"), _audio("MP3", "MPEG_LAYER_III")
    for media, files in (("audio/wav", [wav]), ("audio/flac", [flac]), ("audio/ogg", [ogg]),
                         ("audio/mpeg", [mp3]),
                         ("application/octet-stream", [wav, flac, ogg, mp3])):
        schemathesis.openapi.media_type(media, st.sampled_from(files))


def _cross_field_rules(schema: Any) -> None:
    """The rules no schema states, kept on valid cases (see the module docstring)."""
    import schemathesis

    valid_cursor = encode_cursor(new_id())

    @schema.hook  # type: ignore[untyped-decorator]
    def map_case(ctx: schemathesis.HookContext, case: Any) -> Any:
        if case.meta is None or not case.meta.generation.mode.is_positive:
            return case
        query, body = case.query, case.body
        if case.operation.path == "/v1/generations" and case.method == "GET" and query:
            for lo, hi in (("bpm_min", "bpm_max"), ("lufs_min", "lufs_max"),
                           ("created_from", "created_to")):
                if lo in query and hi in query and _ordered(query[hi], query[lo]):
                    query[lo], query[hi] = query[hi], query[lo]
            if "cursor" in query:
                query["cursor"] = valid_cursor
        if isinstance(body, dict) and isinstance(body.get("callback_url"), str):
            body["callback_url"] = _allowed_callback(body["callback_url"])
        return case


def _allowed_callback(url: str) -> str:
    """``url``, or with the host ``callback.invalid`` when the SSRF guard refuses its host."""
    import re

    from jobs.callbacks import validate_callback_url
    from musicfn.errors import InputError

    try:
        validate_callback_url(url, allow_private=True)
        return url
    except InputError:
        return re.sub(r"^([A-Za-z]+://)[^/:?#]+", r"\1callback.invalid", url)


def _ordered(first: Any, second: Any) -> bool:
    """Whether ``first`` comes strictly before ``second`` (False when not comparable)."""
    from musicfn.errors import MusicfnError

    try:
        return bool(_sortable(first) < _sortable(second))
    except (MusicfnError, TypeError):
        return False


def _sortable(value: Any) -> Any:
    """A filter value as the API orders it: a number, or an instant."""
    from deployments.api.generations import parse_instant

    try:
        return float(str(value))
    except ValueError:
        return parse_instant("filter", str(value))


def _config(base_url: str) -> Any:
    import schemathesis

    return schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": base_url,
        "workers": 1,
        "request-timeout": REQUEST_TIMEOUT_S,
        "max-stream-events": MAX_STREAM_EVENTS,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "phases": {name: {"enabled": True}
                   for name in ("examples", "coverage", "fuzzing", "stateful")},
        "auth": {"openapi": {"ApiKey": {"api_key": API_KEY},
                             "ApiKeyBearer": {"bearer": API_KEY},
                             "WebhookToken": {"bearer": WEBHOOK_TOKEN}}},
        "parameters": {"query.wait": 0},
    })


def _report(events: list[Any]) -> tuple[list[str], dict[str, int]]:
    """Failure descriptions (check failures, errors) and the number of cases per phase."""
    from schemathesis.engine import Status
    from schemathesis.engine import events as ev

    problems: list[str] = []
    cases: dict[str, int] = {}
    for event in events:
        if isinstance(event, ev.ScenarioFinished):
            phase = event.phase.value
            cases[phase] = cases.get(phase, 0) + len(event.recorder.cases)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        case = event.recorder.cases[case_id].value
                        failure = check.failure_info.failure
                        response = event.recorder.find_response(case_id=case_id)
                        answer = "" if response is None else \
                            f"{response.status_code} {response.content[:300]!r}"
                        problems.append(f"[{phase}] {check.name} {case.method} {case.path}: "
                                        f"{failure.title}: {failure.message[:400]}\n  "
                                        f"{check.failure_info.code_sample[:600]}\n  -> {answer}")
        elif isinstance(event, ev.NonFatalError | ev.FatalError):
            problems.append(f"error: {event!r}"[:800])
    return problems, cases


@pytest.mark.timeout(600)  # a hard stop far above the ~2-3 minutes it takes
def test_every_operation_passes_every_check(fuzz_url: str) -> None:
    import schemathesis
    from schemathesis.engine import events as ev
    from schemathesis.engine import from_schema

    _register_strategies()
    schema = schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json", config=_config(fuzz_url))
    from schemathesis.core.result import Ok

    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # the document loads
    operations = {f"{r.ok().method.upper()} {r.ok().path}" for r in results if isinstance(r, Ok)}
    assert len(operations) == 17, sorted(operations)  # every route, none filtered out
    _cross_field_rules(schema)
    events = list(from_schema(schema).execute())
    problems, cases = _report(events)
    finished = [e for e in events if isinstance(e, ev.EngineFinished)]
    assert finished and finished[0].stop_reason.value == "completed", finished
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
    print(f"cases per phase: {cases}")
    assert all(cases.get(phase) for phase in ("examples", "coverage", "fuzzing", "stateful")), \
        cases
