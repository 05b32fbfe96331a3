"""Minimal HTTP/1.1 connection handling on top of asyncio streams (stdlib only).

:class:`Connection` keeps its own read buffer so that, while a request is
"thinking" (latency / the ``slow`` fault), it can keep reading from the socket
to notice a client disconnect without losing pipelined bytes.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from http import HTTPStatus

MAX_LINE = 64 * 1024
MAX_HEADERS = 256
MAX_BODY = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024
_WATCH_BUFFER_CAP = 1024 * 1024


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    target: str
    path: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if "close" in conn:
            return False
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return True


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.eof = False
        self.closed = False

    # -- reading -------------------------------------------------------------
    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = await self.reader.read(_READ_SIZE)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def readline(self) -> bytes:
        """One line including ``\\n``; ``b""`` on clean EOF before any byte."""
        start = 0
        while True:
            idx = self.buf.find(b"\n", start)
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            start = len(self.buf)
            if len(self.buf) > MAX_LINE:
                raise BadRequest(431, "line too long")
            if not await self._fill():
                if self.buf:
                    raise BadRequest(400, "incomplete request")
                return b""

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise BadRequest(400, "incomplete body")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def read_request(self) -> Request | None:
        """Parse the next request; ``None`` when the client closed the connection."""
        line = await self.readline()
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
            line = await self.readline()
        if not line:
            return None
        try:
            method, target, version = line.decode("latin-1").strip().split(" ", 2)
        except ValueError:
            raise BadRequest(400, "malformed request line") from None
        if not version.startswith("HTTP/1."):
            raise BadRequest(505, "unsupported HTTP version")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = await self.readline()
            if not raw:
                raise BadRequest(400, "incomplete headers")
            if raw in (b"\r\n", b"\n"):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise BadRequest(400, "malformed header")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise BadRequest(431, "too many headers")
        req = Request(method.upper(), target, target.split("?", 1)[0], version, headers)
        if "100-continue" in headers.get("expect", "").lower():
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            req.body = await self._read_chunked()
        else:
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                raise BadRequest(400, "bad content-length") from None
            if length < 0 or length > MAX_BODY:
                raise BadRequest(413, "body too large")
            req.body = await self.readexactly(length) if length else b""
        return req

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self.readline()
            if not size_line:
                raise BadRequest(400, "incomplete chunked body")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(400, "bad chunk size") from None
            if size == 0:
                while True:  # trailers
                    trailer = await self.readline()
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(body)
            if len(body) + size > MAX_BODY:
                raise BadRequest(413, "body too large")
            body += await self.readexactly(size)
            await self.readexactly(2)  # CRLF after each chunk

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; return ``False`` early if the client went away.

        Keeps reading the socket meanwhile (buffering anything that arrives) so
        EOF / reset is noticed. Cancellation (server stop) propagates.
        """
        if delay <= 0:
            return not self.eof
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        watcher: asyncio.Task | None = None
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return True
                if self.eof:
                    return False
                if len(self.buf) > _WATCH_BUFFER_CAP:
                    await asyncio.sleep(remaining)
                    return True
                if watcher is None:
                    watcher = asyncio.ensure_future(self._fill())
                done, _ = await asyncio.wait({watcher}, timeout=remaining)
                if watcher in done:
                    watcher = None
                    if self.eof:
                        return False
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
                try:
                    await watcher
                except BaseException:
                    pass

    # -- writing -------------------------------------------------------------
    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"", *, keep_alive: bool = True) -> None:
        head = self.head(status, headers + [("Content-Length", str(len(body)))], keep_alive)
        self.writer.write(head + body)
        await self.writer.drain()

    async def send_json(self, status: int, doc, headers: list[tuple[str, str]] | None = None, *, keep_alive: bool = True) -> None:
        body = json.dumps(doc).encode()
        await self.send(status, [("Content-Type", "application/json")] + list(headers or []), body, keep_alive=keep_alive)

    @staticmethod
    def head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}", "Server: hermes-loopback"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def write_chunk(self, data: bytes) -> None:
        """One HTTP chunk (``Transfer-Encoding: chunked``)."""
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end_chunks(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the TCP connection immediately (no graceful shutdown)."""
        self.closed = True
        self.writer.transport.abort()

    def set_nodelay(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.close()  # flushes what is buffered, then FIN
        except Exception:
            pass
