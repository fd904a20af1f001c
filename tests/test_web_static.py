"""The page's files as the ingress serves them (no browser, no Ray): ``deployments.web``."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deployments.web import STATIC_DIR, mount_web


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    mount_web(app)
    return TestClient(app)


def test_index_and_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    # Every file the page loads is served, as the right type.
    refs = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    scripts = {m for f in STATIC_DIR.glob("*.js")
               for m in re.findall(r'from "\./([^"]+)"', f.read_text())}
    assert "static/app.js" in refs and "static/style.css" in refs
    for path in [*refs, *(f"static/{s}" for s in scripts)]:
        r = client.get(f"/{path}")
        assert r.status_code == 200, path
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "javascript" in client.get("/static/app.js").headers["content-type"]


def test_no_external_resources() -> None:
    """Works offline: no CDN, font or other origin is referenced by the page's files."""
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f.name
        assert "@import" not in text, f.name


@pytest.mark.parametrize("path", ["/static/../web.py", "/static/%2e%2e/web.py",
                                  "/static/nope.js"])
def test_nothing_else_is_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
