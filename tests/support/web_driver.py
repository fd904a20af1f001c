"""A small W3C WebDriver client: Debian's chromedriver driving headless Chromium over HTTP,
and helpers that read and drive musicfn's page with it.

No browser-automation dependency: the WebDriver protocol is plain JSON over HTTP (httpx is
already a dependency). Only what the page's end-to-end tests need is here.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from musicfn.ports import free_port_block

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element reference key
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_PATH", "/usr/bin/chromedriver")
# Headless on a machine with no network but loopback: no first-run, sync, component or
# background fetches (each would wait on the closed network), a fresh profile per browser.
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--mute-audio", "--window-size=1280,900",
)


class WebDriverError(RuntimeError):
    """The driver answered with a W3C error."""


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None when Chromium and chromedriver are present."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return (f"{path} not found: install Debian's {package} with `make browser` "
                    "(apt-get install chromium chromium-driver; .ci/run does this)")
    return None


class Browser:
    """One chromedriver process with one headless Chromium session."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.profile = tempfile.mkdtemp(prefix="musicfn-chromium-")
        port = free_port_block()
        self.proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        self.session = ""
        try:
            self._wait_ready(timeout_s)
            caps = {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [*CHROMIUM_ARGS, f"--user-data-dir={self.profile}"]}}
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
            self.session = value["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WebDriverError(f"chromedriver exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/status").json()["value"]["ready"]:
                    return
            time.sleep(0.1)
        raise WebDriverError(f"chromedriver not ready after {timeout_s} s")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self.http.request(method, path, json=body if body is not None else
                              ({} if method == "POST" else None))
        value = r.json().get("value")
        if r.status_code >= 400:
            err = value or {}
            raise WebDriverError(f"{err.get('error')}: {err.get('message', '')[:500]}")
        return value

    def cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A command on this session (``path`` relative to ``/session/{id}``)."""
        return self._call(method, f"/session/{self.session}{path}", body)

    # -- navigation and scripts ------------------------------------------------------------

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) and return its value.
        A returned Promise is awaited."""
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, *args: Any, timeout_s: float = 60.0,
             what: str = "condition", diagnose: Callable[[], str] | None = None) -> Any:
        """Poll ``script`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                extra = f"\n{diagnose()}" if diagnose else ""
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{extra}")
            time.sleep(0.2)

    def set_window_size(self, width: int, height: int) -> None:
        self.cmd("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """A PNG of the page: the whole scrollable page, or only what the viewport shows."""
        if full_page:
            size = self.run("const e = document.documentElement;"
                            "return [e.scrollWidth, e.scrollHeight];")
            shot = self.cmd("POST", "/goog/cdp/execute", {
                "cmd": "Page.captureScreenshot",
                "params": {"format": "png", "captureBeyondViewport": True,
                           "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1],
                                    "scale": 1}}})["data"]
        else:
            shot = self.cmd("GET", "/screenshot")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot))
        return path

    def allow_downloads(self, directory: Path) -> None:
        """Save downloads into ``directory`` (headless Chromium refuses them otherwise)."""
        self.cmd("POST", "/goog/cdp/execute", {
            "cmd": "Browser.setDownloadBehavior",
            "params": {"behavior": "allow", "downloadPath": str(directory)}})

    def console(self) -> list[dict[str, Any]]:
        """Browser console entries since the last call (chromedriver's log endpoint)."""
        entries: list[dict[str, Any]] = self.cmd("POST", "/se/log", {"type": "browser"})
        return entries

    # -- elements --------------------------------------------------------------------------

    def find(self, css: str) -> str:
        return str(self.cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click")

    def type(self, css: str, text: str, *, clear: bool = True) -> None:
        """Type into a field as a person would (after clearing it); for a file input,
        ``text`` is the file's path."""
        element = self.find(css)
        if clear:
            self.cmd("POST", f"/element/{element}/clear")
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def select(self, css: str, value: str) -> None:
        """Choose the option with ``value`` in a <select> (through the DOM, firing change)."""
        self.run("const s = document.querySelector(arguments[0]); s.value = arguments[1];"
                 "s.dispatchEvent(new Event('change', {bubbles: true}));", css, value)

    def text(self, css: str) -> str:
        return str(self.cmd("GET", f"/element/{self.find(css)}/text"))

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """End the session, chromedriver and every Chromium process it started."""
        if self.session:
            with contextlib.suppress(httpx.HTTPError, WebDriverError, ValueError):
                self._call("DELETE", f"/session/{self.session}")
            self.session = ""
        self.http.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


# -- the musicfn page ------------------------------------------------------------------------

JOB = "#jobs li[data-id='{}']"
# Non-transparent pixels of a canvas (0 when nothing was drawn).
INKED = """
const c = document.querySelector(arguments[0]);
if (!c || !c.dataset.drawn || !c.width) return 0;
const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
return n;
"""
# The audio element can play: metadata loaded, a duration, a source.
PLAYABLE = """
const a = document.querySelector(arguments[0]);
return a && a.readyState >= 1 && a.duration > 0 && a.currentSrc ? a.duration : 0;
"""


def open_page(b: Browser, site: str, *, key: str | None, tab: str = "create",
              jobs: list[str] | None = None) -> None:
    """A fresh tab state: storage cleared, then the key (and job ids) as the page keeps them."""
    b.get(site)
    b.run("sessionStorage.clear();"
          "if (arguments[0]) sessionStorage.setItem('musicfn.apiKey', arguments[0]);"
          "if (arguments[1]) sessionStorage.setItem('musicfn.jobs', JSON.stringify(arguments[1]));"
          "location.hash = arguments[2];", key, jobs, tab)
    b.cmd("POST", "/refresh")
    b.wait("return document.body.dataset.ready === '1'", what="the page to start")
    b.console()  # drop what came before


def banner(b: Browser) -> str:
    """The error banner's text ('' while hidden)."""
    return str(b.run("const e = document.querySelector('#error');"
                 "return e.hidden ? '' : document.querySelector('#error-text').textContent;"))


def facts(b: Browser, css: str) -> dict[str, str]:
    """The figures a track card shows, by label."""
    shown: dict[str, str] = b.run(
        "return Object.fromEntries([...document.querySelectorAll(arguments[0] + ' .fact')]"
        ".map(f => [f.querySelector('dt').textContent, f.querySelector('dd').textContent]));",
        css)
    return shown


def ids(b: Browser, css: str) -> list[str]:
    """The ``data-id`` of every element ``css`` matches, in page order."""
    found: list[str] = b.run("return [...document.querySelectorAll(arguments[0])]"
                             ".map(e => e.dataset.id);", css)
    return found


def wait_completed(b: Browser, job_id: str) -> None:
    sel = JOB.format(job_id)
    b.wait(f"return document.querySelector(\"{sel}[data-status=completed] .track\")",
           timeout_s=120, what=f"job {job_id} to complete",
           diagnose=lambda: b.run(f"return document.querySelector(\"{sel}\").innerText"))


def fill_form(b: Browser, **fields: str) -> None:
    """Fill the Create form's fields by element id."""
    for name, value in fields.items():
        if name in ("engine", "preset", "format"):
            b.select(f"#{name}", value)
        else:
            b.type(f"#{name}", value)
