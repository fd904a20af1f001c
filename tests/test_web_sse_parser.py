"""The page's Server-Sent Events reader (deployments/static/sse.js) in headless Chromium.

No musicfn service: deployments/static/ is served from a thread on 127.0.0.1 (a module
cannot be imported from file://), with one extra route, /stream, that sends an event stream
in deliberately awkward pieces for ``readEvents`` over a real ``fetch``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from deployments.web import STATIC_DIR
from tests.support import free_port_block
from tests.support.web_driver import Browser, missing_browser

BLANK = b"<!doctype html><meta charset=utf-8><title>sse</title>"
# A status stream cut at the worst places: inside a field name, between CR and LF, inside
# the two bytes of a UTF-8 "é", right after a frame's last line but before its blank line.
STREAM_PIECES = [
    b": connected\r\n\r\nevent: sta",
    b'tus\r\ndata: {"id": "j1", "status": "pending", "progress": null}\r',
    b'\n\r\nevent: status\ndata: {"id": "j1", "status": "processing", "progress": 0.5,',
    b' "note": "caf\xc3',
    b'\xa9"}\n',
    b"\n: keep-alive\n\nevent: status\r\ndata: "
    b'{"id": "j1", "status": "completed", "progress": 1.0}\r\n\r\n',
]


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(STATIC_DIR), **kwargs)

    def do_GET(self) -> None:
        if self.path == "/blank.html":
            self._send(200, "text/html", BLANK)
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()  # no length: the body ends when the connection closes
            for piece in STREAM_PIECES:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(0.05)  # separate network chunks
            self.close_connection = True
        else:
            super().do_GET()

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def guess_type(self, path: Any) -> str:
        return "text/javascript" if str(path).endswith(".js") else super().guess_type(path)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port_block()), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser(origin: str) -> Iterator[Browser]:
    why = missing_browser()
    if why:
        pytest.fail(f"the page's SSE parser test needs a real browser: {why}")
    b = Browser()
    try:
        b.get(f"{origin}/blank.html")
        yield b
    finally:
        b.close()


def pushes(b: Browser, chunks: list[str]) -> list[list[dict[str, str]]]:
    """Feed ``chunks`` to one SSEParser: the frames each push returned."""
    out: list[list[dict[str, str]]] = b.run("""
        return import(location.origin + '/sse.js').then(({ SSEParser }) => {
          const parser = new SSEParser();
          return arguments[0].map((chunk) => parser.push(chunk));
        });""", chunks)
    return out


def frames(b: Browser, chunks: list[str]) -> list[dict[str, str]]:
    return [f for pushed in pushes(b, chunks) for f in pushed]


def status(state: str, progress: float | None = None) -> dict[str, str]:
    data = json.dumps({"id": "j1", "status": state, "progress": progress})
    return {"event": "status", "data": data, "id": ""}


WHOLE = ("event: status\n"
         f"data: {status('pending')['data']}\n\n"
         "event: status\n"
         f"data: {status('processing', 0.25)['data']}\n\n")


def test_frames_split_across_chunks(browser: Browser) -> None:
    expected = [status("pending"), status("processing", 0.25)]
    assert frames(browser, [WHOLE]) == expected
    # One character at a time: the same frames, each when its blank line arrives.
    per_char = pushes(browser, list(WHOLE))
    assert [f for pushed in per_char for f in pushed] == expected
    ends = [i for i, pushed in enumerate(per_char) if pushed]
    assert [WHOLE[:i + 1].endswith("\n\n") for i in ends] == [True, True]
    # Cut in the middle of a field name, a value, and between the two newlines.
    cuts = ["ev", "ent: sta", "tus\ndata: {\"id\": \"j1\", \"status\": \"pen",
            "ding\", \"progress\": null}\n", "\n"]
    assert pushes(browser, cuts) == [[], [], [], [], [status("pending")]]


def test_crlf_and_cr_line_ends(browser: Browser) -> None:
    crlf = WHOLE.replace("\n", "\r\n")
    expected = [status("pending"), status("processing", 0.25)]
    assert frames(browser, [crlf]) == expected
    assert frames(browser, list(crlf)) == expected  # every CR and LF in a chunk of its own
    assert frames(browser, [WHOLE.replace("\n", "\r")]) == expected
    # A CRLF split between chunks is one line end, not a line end and a blank line.
    assert pushes(browser, ["data: a\r", "\ndata: b\r", "\n\r", "\n"]) == [
        [], [], [{"event": "message", "data": "a\nb", "id": ""}], []]


def test_comments_and_keep_alives_are_skipped(browser: Browser) -> None:
    text = (": connected\n\n:\n\nevent: status\n: in the middle\n"
            f"data: {status('pending')['data']}\n\n: keep-alive\n\n")
    assert frames(browser, [text]) == [status("pending")]
    assert frames(browser, [": just a keep-alive\r\n\r\n"]) == []


def test_multi_line_data_and_fields(browser: Browser) -> None:
    text = ("data: first\ndata:second\ndata:  two spaces\ndata\ndata: last\n\n"
            "id: 42\nevent: status\ndata: {}\n\n"
            "event: ignored\n\n"  # no data: not an event, and its type does not carry over
            "data: after\nretry: 1500\nunknown: x\n\n")
    assert frames(browser, [text]) == [
        {"event": "message", "data": "first\nsecond\n two spaces\n\nlast", "id": ""},
        {"event": "status", "data": "{}", "id": "42"},
        {"event": "message", "data": "after", "id": "42"},  # the last id stays
    ]


def test_unfinished_last_frame_waits_for_its_blank_line(browser: Browser) -> None:
    data = status("completed", 1.0)["data"]
    pieces = ["event: status\n", f"data: {data}", "\n", "\n"]
    assert pushes(browser, pieces) == [[], [], [], [status("completed", 1.0)]]
    # A stream that ends without the blank line never yields that frame.
    assert frames(browser, [f"event: status\ndata: {data}\n"]) == []
    assert frames(browser, [f"event: status\ndata: {data}"]) == []


def test_read_events_over_fetch(browser: Browser) -> None:
    """readEvents over a real response body: chunks cut across lines, CRLF and UTF-8."""
    got: list[dict[str, str]] = browser.run("""
        return import(location.origin + '/sse.js').then(async ({ readEvents }) => {
          const response = await fetch('/stream', { cache: 'no-store' });
          const out = [];
          for await (const frame of readEvents(response.body)) out.push(frame);
          return out;
        });""")
    assert [f["event"] for f in got] == ["status"] * 3
    states = [json.loads(f["data"]) for f in got]
    assert [s["status"] for s in states] == ["pending", "processing", "completed"]
    assert states[1] == {"id": "j1", "status": "processing", "progress": 0.5, "note": "café"}
