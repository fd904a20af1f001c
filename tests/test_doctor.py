"""``musicfn doctor`` through the real CLI entry point, with environment and config files."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from musicfn_cli.doctor import is_loopback
from musicfn_cli.main import main

REPO = Path(__file__).resolve().parents[1]
STRONG = "k" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RAY_AUTH_MODE", "RAY_SERVE_DEFAULT_HTTP_HOST", "RAY_SERVE_ENABLE_HA_PROXY",
                "MUSICFN_DASHBOARD_HOST"):
        monkeypatch.delenv(var, raising=False)


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["doctor", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def write_config(tmp_path: Path, **changes: Any) -> Path:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_defaults_and_the_shipped_config_are_safe(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = doctor(capsys, "--config", str(REPO / "serve_config.yaml"))
    assert code == 0, out
    assert "ok     serve_bind: Serve binds to loopback only" in out
    assert "presigned URLs are GET-only" in out and "expire after 600 s" in out
    assert "no secret values in the serve config" in out
    assert "no problems found" in out


def test_exposed_without_api_key_or_webhook_token(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICFN_HTTP_HOST", "0.0.0.0")
    code, out = doctor(capsys)
    assert code == 1
    assert "DANGER serve_bind" in out and "MUSICFN_API_KEY is not set" in out
    assert "DANGER webhook_token" in out


def test_exposed_with_secrets_is_a_warning(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICFN_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("MUSICFN_API_KEY", STRONG)
    monkeypatch.setenv("MUSICFN_WEBHOOK_TOKEN", STRONG)
    code, out = doctor(capsys)
    assert code == 0, out
    assert "warn   serve_bind" in out
    # Embedded S3 stays on loopback, so remote clients cannot follow the audio URLs.
    assert "warn   s3_credentials" in out and "cannot fetch presigned audio" in out
    assert doctor(capsys, "--strict")[0] == 1


def test_short_api_key_and_private_callbacks(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICFN_HTTP_HOST", "10.0.0.7")
    monkeypatch.setenv("MUSICFN_API_KEY", "short")
    monkeypatch.setenv("MUSICFN_WEBHOOK_TOKEN", STRONG)
    monkeypatch.setenv("MUSICFN_CALLBACK_ALLOW_PRIVATE", "true")
    code, out = doctor(capsys)
    assert code == 1
    assert "shorter than 16 chars" in out and "SSRF" in out


def test_config_binding_all_interfaces(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    path = write_config(tmp_path, http_options={"host": "0.0.0.0", "port": 8000})
    code, out = doctor(capsys, "--config", str(path))
    assert code == 1
    assert "http_options.host (serve config) = 0.0.0.0" in out


def test_config_without_host_follows_ray_default(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    path = write_config(tmp_path, http_options=None)
    assert doctor(capsys, "--config", str(path))[0] == 0  # Serve's default is localhost
    monkeypatch.setenv("RAY_SERVE_DEFAULT_HTTP_HOST", "0.0.0.0")
    code, out = doctor(capsys, "--config", str(path))
    assert code == 1 and "DANGER serve_bind" in out


def test_secrets_in_the_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["applications"][0]["args"]["settings"] = {"api_key": "in-the-yaml"}
    config["applications"][0]["runtime_env"] = {"env_vars": {"AWS_SECRET_ACCESS_KEY": "x"}}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out = doctor(capsys, "--config", str(path))
    assert code == 1
    assert "applications[0].args.settings.api_key" in out
    assert "applications[0].runtime_env.env_vars.AWS_SECRET_ACCESS_KEY" in out


def test_presign_expiry(capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICFN_PRESIGN_EXPIRY_S", "1800")
    code, out = doctor(capsys)
    assert code == 0 and "warn   presign: presigned GET URLs live 1800 s" in out
    monkeypatch.setenv("MUSICFN_PRESIGN_EXPIRY_S", "86400")
    code, out = doctor(capsys)
    assert code == 1 and "DANGER settings: MUSICFN_PRESIGN_EXPIRY_S" in out


def test_remote_s3_with_builtin_credentials(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICFN_S3_ENDPOINT_URL", "http://10.1.2.3:8333")
    code, out = doctor(capsys)
    assert code == 1 and "built-in embedded credentials" in out
    assert "warn   s3_tls" in out
    monkeypatch.setenv("MUSICFN_S3_ACCESS_KEY", "AKIAREALKEY")
    monkeypatch.setenv("MUSICFN_S3_SECRET_KEY", STRONG)
    assert doctor(capsys)[0] == 0


def test_dashboard_exposure(capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = doctor(capsys, "--dashboard-host", "0.0.0.0")
    assert code == 0 and "warn   dashboard_bind" in out  # token auth is Ray's default
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    code, out = doctor(capsys, "--dashboard-host", "0.0.0.0")
    assert code == 1 and "RAY_AUTH_MODE=disabled" in out


def test_json_output(capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICFN_HTTP_HOST", "0.0.0.0")
    code, out = doctor(capsys, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    dangers = {f["check"] for f in report["findings"] if f["severity"] == "danger"}
    assert dangers == {"serve_bind", "webhook_token"}


def test_unreadable_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = doctor(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "config_unreadable" in out


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
def listening() -> Iterator[dict[str, int]]:
    """Sockets this test process listens on: loopback, all interfaces, IPv6 loopback."""
    opened: dict[str, int] = {}
    socks = []
    for name, family, host in (("loopback", socket.AF_INET, "127.0.0.1"),
                               ("any", socket.AF_INET, "0.0.0.0"),
                               ("loopback6", socket.AF_INET6, "::1")):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
        except OSError:  # no IPv6 here
            s.close()
            continue
        s.listen()
        socks.append(s)
        opened[name] = s.getsockname()[1]
    yield opened
    for s in socks:
        s.close()


def listener_findings(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, str]]:
    _, out = doctor(capsys, "--json", *args)
    return [f for f in json.loads(out)["findings"] if f["check"] == "listener"]


def finding_for(findings: list[dict[str, str]], address: str) -> dict[str, str]:
    found = [f for f in findings if f"(pid {os.getpid()}) listens on {address}" in f["message"]]
    assert len(found) == 1, (address, findings)
    return found[0]


def test_listeners_of_a_process_tree(capsys: pytest.CaptureFixture[str],
                                     listening: dict[str, int]) -> None:
    findings = listener_findings(capsys, "--pid", str(os.getpid()))
    assert finding_for(findings, f"127.0.0.1:{listening['loopback']}")["severity"] == "ok"
    exposed = finding_for(findings, f"0.0.0.0:{listening['any']}")
    assert exposed["severity"] == "warn" and "reachable from other hosts" in exposed["message"]
    if "loopback6" in listening:
        assert finding_for(findings, f"[::1]:{listening['loopback6']}")["severity"] == "ok"
    code, out = doctor(capsys, "--pid", str(os.getpid()))
    assert "warn   listener" in out and code == 0  # a warning, not a failure
    assert doctor(capsys, "--pid", str(os.getpid()), "--strict")[0] == 1


def test_listener_configured_on_purpose(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch,
                                        listening: dict[str, int]) -> None:
    monkeypatch.setenv("MUSICFN_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("MUSICFN_HTTP_PORT", str(listening["any"]))
    findings = listener_findings(capsys, "--pid", str(os.getpid()))
    found = finding_for(findings, f"0.0.0.0:{listening['any']}")
    assert found["severity"] == "ok" and "configured: MUSICFN_HTTP_HOST" in found["message"]


def test_service_found_by_its_catalogue_file(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             listening: dict[str, int]) -> None:
    """Without --pid: the process holding the settings' catalogue file is the service."""
    monkeypatch.setenv("MUSICFN_DATA_DIR", str(tmp_path))
    assert [f["message"] for f in listener_findings(capsys)] == [
        f"no listening socket of a running service found (no process holds "
        f"{tmp_path / 'catalogue.duckdb'})"]
    with (tmp_path / "catalogue.duckdb").open("wb"):
        findings = listener_findings(capsys)
    assert finding_for(findings, f"127.0.0.1:{listening['loopback']}")["severity"] == "ok"
    assert finding_for(findings, f"0.0.0.0:{listening['any']}")["severity"] == "warn"
