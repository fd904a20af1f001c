"""``musicfn generate``: the client of a running musicfn service (over HTTP)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx

from engines.loader import ENGINE_NAMES
from musicfn.errors import InvalidRequestError, MusicfnError, StorageUnreachableError
from musicfn.settings import get_settings


def cmd_generate(args: argparse.Namespace) -> int:
    settings = get_settings()
    base = args.url or f"http://{settings.http_host}:{settings.http_port}"
    body: dict[str, Any] = {"prompt": args.prompt, "duration_s": args.duration}
    for name in ("seed", "bpm", "key", "engine", "model"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.stems:
        body["stems"] = [s.strip() for s in args.stems.split(",") if s.strip()]
    headers = {}
    if settings.api_key is not None:
        headers["x-api-key"] = settings.api_key.get_secret_value()
    reference = _reference(args)
    try:
        with httpx.Client(base_url=base, timeout=args.wait + 30, trust_env=False) as client:
            if reference is None:
                r = client.post("/v1/generations", params={"wait": args.wait}, json=body,
                                headers=headers)
            else:  # multipart: the JSON body as "request", the audio file beside it
                kind, path = reference
                r = client.post("/v1/generations", params={"wait": args.wait}, headers=headers,
                                files={"request": (None, json.dumps(body), "application/json"),
                                       kind: (path.name, path.read_bytes(),
                                              "application/octet-stream")})
            if r.status_code >= 400:
                err = r.json() if r.headers.get("content-type", "").startswith(
                    "application/json") else {}
                cls = InvalidRequestError if r.status_code < 500 else MusicfnError
                raise cls(err.get("message", f"HTTP {r.status_code}"),
                          code=err.get("code", "http_error"))
            rec = r.json()
            if rec["status"] != "completed":
                print(f"{rec['id']}: {rec['status']} (poll {base}/v1/generations/{rec['id']})")
                return 0 if rec["status"] != "failed" else 1
            if args.out is not None:
                audio = client.get(f"/v1/generations/{rec['id']}/audio",
                                   params={"inline": 1}, headers=headers)
                audio.raise_for_status()
                Path(args.out).write_bytes(audio.content)
    except httpx.TransportError as exc:
        raise StorageUnreachableError(f"musicfn service at {base} unreachable: {exc}",
                                      code="service_unreachable") from None
    s = rec["record"]["summary"]
    print(f"{rec['id']} completed: {rec['record']['audio_key']}  {s['bpm']} BPM  "
          f"{s['key']} {s['mode']}  {s['lufs']} LUFS"
          + (f"  -> {args.out}" if args.out else ""))
    return 0


def _reference(args: argparse.Namespace) -> tuple[str, Path] | None:
    """The ``--melody`` or ``--continuation`` file (kind, path), checked to exist."""
    for kind in ("melody", "continuation"):
        path: Path | None = getattr(args, kind)
        if path is not None:
            if not path.is_file():
                raise InvalidRequestError(f"--{kind}: {path}: no such file",
                                          code="file_not_found")
            return kind, path
    return None


def register(sub: Any) -> None:
    """Add ``generate`` to the ``musicfn`` parser."""
    p = sub.add_parser("generate", help="generate a track with a running musicfn service")
    p.add_argument("prompt")
    p.add_argument("--duration", type=float, default=8.0, help="seconds (default 8)")
    p.add_argument("--stems", help="comma-separated, e.g. drums,bass")
    p.add_argument("--seed", type=int)
    p.add_argument("--bpm", type=float)
    p.add_argument("--key", help='e.g. "A minor"')
    p.add_argument("--engine", choices=ENGINE_NAMES)
    p.add_argument("--model")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--melody", type=Path, metavar="FILE",
                     help="condition on this audio's melody (melody models only)")
    ref.add_argument("--continuation", type=Path, metavar="FILE",
                     help="continue this audio (shorter than --duration and 30 s); the "
                          "result starts with it")
    p.add_argument("-o", "--out", type=Path, help="write the audio here")
    p.add_argument("--wait", type=float, default=120, help="seconds to wait (default 120)")
    p.add_argument("--url", help="service URL (default http://MUSICFN_HTTP_HOST:PORT)")
    p.set_defaults(func=cmd_generate)
