"""A lean HTTP/1.1 client on one kept-alive socket, for the hot S3 requests.

``http.client`` parses every response's headers with the ``email`` package: ~150 µs of CPU
per response, as much as the rest of a small request. The S3 paths here (``storage.s3_lean``)
need the status, a few headers, the body framing (``Content-Length`` or chunked) and whether
the server closes the connection; this reads exactly that. One request at a time per
connection (no pipelining), so any HTTP/1.1 server works.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping

_MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_RECV = 262_144
_SPLIT_SEND = 256 * 1024  # bodies this large go in their own sendall (no copy into the head)


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x as expected (the connection is dropped)."""


class LeanConnection:
    """One connection to ``host:port`` (TLS with ``tls``), connected on first use.

    ``max_body`` bounds the response bodies it accepts (a larger one is a ProtocolError).
    """

    def __init__(self, host: str, port: int, *, tls: bool, connect_timeout_s: float,
                 read_timeout_s: float, max_body: int = MAX_BODY) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_body = max_body
        self._sock: socket.socket | None = None
        self._buf = b""

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def request(self, method: str, target: str, headers: Mapping[str, str],
                body: bytes = b"") -> tuple[int, dict[str, str], bytes, bool]:
        """Send one request: (status, headers with lowercased names, body, reusable).

        ``headers`` must include ``Host``; ``Content-Length`` is added for a body (and for
        PUT/POST). A HEAD answer has no body whatever its ``Content-Length`` says. Raises
        OSError when the connection fails or breaks (it is closed then); ``UnicodeEncodeError``
        (nothing sent) for a header that is not Latin-1.
        """
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Accept-Encoding: identity\r\n\r\n")
        head = "\r\n".join(lines).encode("latin-1")
        try:
            sock = self._sock or self._connect()
            try:
                if len(body) < _SPLIT_SEND:
                    sock.sendall(head + body)
                else:
                    sock.sendall(head)
                    sock.sendall(body)
            except BrokenPipeError:  # it may have answered early (a refusal): read that
                pass
            status, answer, length, chunked, close = self._head()
            if method == "HEAD":
                data = b""
            elif chunked:
                data = self._chunked()
            elif length is not None:
                if length > self.max_body:
                    raise ProtocolError(f"response body of {length} bytes is too large")
                data = self._exactly(length)
            else:  # framed by the end of the connection
                data, close = self._until_eof(), True
        except ValueError as exc:  # a malformed length
            self.close()
            raise ProtocolError(f"malformed response: {exc}") from None
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, answer, data, not close

    def close(self) -> None:
        sock, self._sock, self._buf = self._sock, None, b""
        if sock is not None:
            sock.close()

    # -- internals -------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(self.read_timeout_s)
        self._sock = sock
        return sock

    def _recv(self, size: int = _RECV) -> bytes:
        if self._sock is None:
            raise ProtocolError("connection closed")
        data = self._sock.recv(size)
        if not data:
            raise ProtocolError("connection closed by the server")
        return data

    def _head(self) -> tuple[int, dict[str, str], int | None, bool, bool]:
        """(status, headers, content length, chunked, server closes) of the next response."""
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise ProtocolError("response head too large")
            self._buf += self._recv()
        head, self._buf = self._buf[:end].decode("latin-1"), self._buf[end + 4:]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        length = int(headers["content-length"]) if "content-length" in headers else None
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (parts[0] == "HTTP/1.0" and connection != "keep-alive")
        status = int(parts[1])
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        if length is not None and length < 0:
            raise ProtocolError(f"unexpected content length {length}")
        return status, headers, length, chunked, close

    def _exactly(self, n: int) -> bytes:
        if len(self._buf) >= n:
            body, self._buf = self._buf[:n], self._buf[n:]
            return body
        # Large bodies arrive in many reads: gather them once rather than regrow the buffer.
        parts, have, self._buf = [self._buf], len(self._buf), b""
        while have < n:
            data = self._recv(min(_RECV * 4, n - have))
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise ProtocolError("chunk header too large")
            self._buf += self._recv()
        line, self._buf = self._buf[:end], self._buf[end + 2:]
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self._line().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > self.max_body:
                raise ProtocolError("chunked body too large")
            parts.append(self._exactly(size))
            self._exactly(2)  # CRLF after the chunk

    def _until_eof(self) -> bytes:
        parts, have, self._buf = [self._buf], len(self._buf), b""
        try:
            while True:
                data = self._recv()
                parts.append(data)
                have += len(data)
                if have > self.max_body:
                    raise ValueError("body too large")
        except ProtocolError:  # the end of the body
            return b"".join(parts)
