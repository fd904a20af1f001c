"""The page's and the API docs' files as the ingress serves them: ``deployments.web``.

Over real HTTP (uvicorn on loopback, one server per module, no Ray), and the docs rendered by
headless Chromium with no network but loopback: Swagger UI and ReDoc come from local assets.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from deployments.web import STATIC_DIR, mount_web
from tests.support import free_port_block
from tests.support.web_driver import Browser, missing_browser

SECURITY = {"content-security-policy", "referrer-policy", "x-content-type-options"}


def make_app() -> FastAPI:
    """An app shaped like the ingress: its own /docs off, one API route, the page mounted."""
    app = FastAPI(title="musicfn", docs_url=None, redoc_url=None)

    @app.get("/v1/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    mount_web(app)
    return app


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The app on a real loopback port; its base URL (under a prefix, as Serve mounts it)."""
    outer = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    outer.mount("/prefix", make_app())
    port = free_port_block()
    server = uvicorn.Server(uvicorn.Config(outer, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/prefix/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=30, trust_env=False) as c:
        yield c


def assert_secured(r: httpx.Response) -> None:
    missing = SECURITY - set(r.headers)
    assert not missing, f"{r.url}: no {missing}"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def local_refs(page: str) -> list[str]:
    """The src/href URLs of a page, checked to be relative (no scheme, host or root)."""
    refs = re.findall(r'(?:src|href|spec-url)="([^"]+)"', page)
    for ref in refs:
        assert ref == "data:," or not re.match(r"^([a-z]+:|/)", ref, re.I), ref
    return [r for r in refs if r != "data:,"]


def test_index_and_assets(client: httpx.Client) -> None:
    page = client.get("")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_secured(page)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # Every file the page loads is served, as the right type, with the same headers.
    refs = local_refs(page.text)
    scripts = {m for f in STATIC_DIR.glob("*.js")
               for m in re.findall(r'from "\./([^"]+)"', f.read_text())}
    assert "static/app.js" in refs and "static/style.css" in refs
    for path in [*refs, *(f"static/{s}" for s in scripts), "static/index.html"]:
        r = client.get(path)
        assert r.status_code == 200, path
        assert_secured(r)
    assert "javascript" in client.get("static/app.js").headers["content-type"]


@pytest.mark.parametrize(("path", "marker"), [("docs", 'id="swagger-ui"'),
                                              ("redoc", "<redoc ")])
def test_docs_pages_use_local_assets(client: httpx.Client, path: str, marker: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert marker in page.text
    assert_secured(page)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp  # no inline script, no other origin
    assert "<script>" not in page.text and "cdn" not in page.text.lower()
    refs = local_refs(page.text)
    assert 'spec-url="openapi.json"' in page.text or 'data-openapi-url="openapi.json"' in \
        page.text
    assert client.get("openapi.json").json()["info"]["title"] == "musicfn"
    refs = [r for r in refs if r != "openapi.json"]
    kinds = {"js": "javascript", "css": "text/css"}
    for ref in refs:
        r = client.get(ref)
        assert r.status_code == 200, ref
        assert kinds[ref.rsplit(".", 1)[-1]] in r.headers["content-type"], ref
        assert_secured(r)
    if path == "docs":
        assert {"docs-assets/swagger-ui-bundle.js", "docs-assets/swagger-ui.css",
                "static/docs.js"} <= set(refs)


def test_no_external_resources() -> None:
    """Works offline: no CDN, font or other origin is referenced by the page's files."""
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f.name
        assert "@import" not in text, f.name


@pytest.mark.parametrize("path", ["static/../web.py", "static/%2e%2e/web.py", "static/nope.js",
                                  "docs-assets/nope.js", "docs-assets/../core.py"])
def test_nothing_else_is_served(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    if "nope" in path:  # the static mounts' own errors carry the headers too
        assert_secured(r)
    assert client.post("static/app.js").status_code == 405


@pytest.mark.slow
def test_docs_render_offline_in_a_browser(site: str) -> None:
    """Swagger UI and ReDoc draw the API in headless Chromium, and its CSP blocks nothing
    they need (ReDoc's external 'powered by' logo is blocked, as it should be)."""
    why = missing_browser()
    if why:
        pytest.fail(f"this test needs a real browser: {why}")
    b = Browser()
    try:
        b.get(f"{site}docs")
        b.wait("return document.querySelector('.opblock-summary-path[data-path=\"/v1/ping\"]')",
               timeout_s=30, what="Swagger UI to draw /v1/ping")
        assert b.console() == []  # no CSP violation, no failed load
        b.get(f"{site}redoc")
        b.wait("return [...document.querySelectorAll('h2')].some(h => "
               "h.textContent.includes('Ping'))", timeout_s=30, what="ReDoc to draw Ping")
        problems = [e["message"] for e in b.console() if "cdn.redoc.ly" not in e["message"]]
        assert problems == []
    finally:
        b.close()
