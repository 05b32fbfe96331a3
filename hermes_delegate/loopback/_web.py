"""The loopback's HTTP layer on ``aiohttp.web``: replies, request headers, and the broken connections faults need.

aiohttp parses the requests (keep-alive, chunked bodies, ``100-continue``) and, with
``handler_cancellation``, cancels a handler whose client went away: a request "thinking" through
its latency notices a disconnect as a ``CancelledError``. What aiohttp has no words for are the
faults: :func:`cut_body` sends half a body and resets the connection, :func:`stream_events` can
end an event stream with a FIN instead of its last chunk.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, TypedDict, TypeVar

from aiohttp import web

from .records import SECRET_HEADERS, auth_fingerprint

SERVER = "hermes-loopback"
MAX_BODY = 64 * 1024 * 1024
#: Request line and header limits (aiohttp's defaults are 8 KiB).
class ParserLimits(TypedDict):
    max_line_size: int
    max_field_size: int
    max_headers: int


PARSER_LIMITS: ParserLimits = {"max_line_size": 64 * 1024, "max_field_size": 64 * 1024, "max_headers": 256}

Headers = Iterable[tuple[str, str]]


_Resp = TypeVar("_Resp", bound=web.StreamResponse)


def _with_headers(resp: _Resp, content_type: str, headers: Headers) -> _Resp:
    resp.headers["Server"] = SERVER
    resp.headers["Content-Type"] = content_type
    for name, value in headers:
        resp.headers[name] = value
    return resp


def reply(status: int, body: bytes, content_type: str, headers: Headers = ()) -> web.Response:
    """A whole reply with exactly this content type (no charset added)."""
    return _with_headers(web.Response(status=status, body=body), content_type, headers)


def json_reply(status: int, doc: Any, headers: Headers = ()) -> web.Response:
    return reply(status, json.dumps(doc).encode(), "application/json", headers)


def request_headers(request: web.Request) -> dict[str, str]:
    """Header names lower-cased; a repeated header's values joined with ``", "``."""
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


async def read_call(request: web.Request, auth_headers: Iterable[str]) -> tuple[Any, dict[str, str], str | bool]:
    """A model call's parts for its record: the JSON body (``None`` when it is not JSON), the request
    headers minus credentials, and the fingerprint of the credential the first of ``auth_headers``
    present carried (``records.auth_fingerprint``; the value itself is not kept), else False."""
    try:
        body = json.loads(await request.read() or b"null")
    except ValueError:
        body = None
    raw = request_headers(request)
    headers = {k: v for k, v in raw.items() if k not in SECRET_HEADERS}
    credential = next((raw[h] for h in auth_headers if raw.get(h)), None)
    return body, headers, auth_fingerprint(credential) if credential else False


async def cut_body(request: web.Request, data: bytes, content_type: str, headers: Headers) -> web.StreamResponse:
    """Announce ``len(data)`` bytes, send half of them, then reset the TCP connection."""
    resp = _with_headers(web.StreamResponse(status=200), content_type, headers)
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    if request.transport is not None:
        request.transport.abort()
    return resp


async def stream_events(request: web.Request, events: Iterable[bytes], headers: Headers, *,
                        cut: bool) -> web.StreamResponse:
    """Server-sent events in HTTP chunks; ``cut``: FIN after the last event, with no ``[DONE]`` and no end
    chunk."""
    resp = _with_headers(web.StreamResponse(status=200), "text/event-stream; charset=utf-8",
                         [("Cache-Control", "no-cache"), *headers])
    await resp.prepare(request)
    for event in events:
        await resp.write(b"data: " + event + b"\n\n")
    if cut:
        if request.transport is not None:
            request.transport.close()  # flushes what was written, then FIN
        return resp
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp
