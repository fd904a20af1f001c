"""``musicfn doctor``: print the security posture; exit 1 on a dangerous combination."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML, a dependency of ray[serve]

from musicfn.doctor import Finding, load_settings, run_checks
from musicfn.errors import InvalidRequestError

_MARK = {"ok": "ok    ", "warn": "warn  ", "danger": "DANGER"}


def _load_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidRequestError(f"cannot read serve config {path}: {exc.strerror}",
                                  code="config_unreadable") from None
    except yaml.YAMLError as exc:
        raise InvalidRequestError(f"serve config {path} is not valid YAML: {exc}",
                                  code="config_invalid") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"serve config {path} is not a mapping",
                                  code="config_invalid")
    return data


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run the checks; 1 when any finding is dangerous (or, with --strict, a warning)."""
    config = _load_config(args.config)
    settings, findings = load_settings()
    if settings is not None:
        findings = run_checks(settings, config,
                              dashboard_host=args.dashboard_host or settings.dashboard_host)
    failing = {"danger", "warn"} if args.strict else {"danger"}
    problems = [f for f in findings if f.severity in failing]
    if args.json:
        print(json.dumps({"ok": not problems,
                          "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            print(_line(f))
        print(f"{len(problems)} problem(s)" if problems else "no problems found")
    return 1 if problems else 0


def _line(f: Finding) -> str:
    return f"{_MARK[f.severity]} {f.check}: {f.message}"


def register(sub: Any) -> None:
    """Add ``doctor`` to the ``musicfn`` parser."""
    p = sub.add_parser("doctor", help="check the security posture of the configuration")
    p.add_argument("--config", type=Path, help="a Serve config file, e.g. serve_config.yaml")
    p.add_argument("--dashboard-host", default=None,
                   help="where the Ray dashboard listens (ray start --dashboard-host; "
                        "default MUSICFN_DASHBOARD_HOST or 127.0.0.1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=cmd_doctor)
