"""Chat-completions request handling for :class:`LoopbackProvider` (a mixin)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

from . import responses as R
from ._http import Connection, Request
from .records import SECRET_HEADERS, RequestRecord


class ChatMixin:
    """``POST /v1/chat/completions``: limiter, latency, faults, normal and streamed replies.

    Mixed into :class:`~hermes_delegate.loopback.server.LoopbackProvider`, which
    provides these attributes plus ``_token_cost`` / ``_arrive`` (recording + fault + rate
    limiters, returning the rate-limit headers and, on a refusal, the Retry-After),
    ``_settle_tokens`` and ``_depart``.
    """

    name: str
    latency_s: float
    slow_s: float
    retry_after: float | str | None
    responder: Any
    _lock: threading.Lock
    _records: list[RequestRecord]
    _in_flight: int
    _ids: itertools.count

    async def _chat(self, conn: Connection, req: Request) -> bool:
        keep = req.keep_alive
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            body = None
        headers = {k: v for k, v in req.headers.items() if k not in SECRET_HEADERS}
        has_auth = any(req.headers.get(h) for h in ("authorization", "api-key", "x-api-key"))
        if not isinstance(body, dict):
            rec = RequestRecord(time.monotonic(), None, False, 400, [], has_auth, req.path, headers, {})
            with self._lock:
                self._records.append(rec)
            await conn.send_json(400, R.error_body(400, "request body must be a JSON object"), keep_alive=keep)
            return keep
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        model = body.get("model")
        stream = bool(body.get("stream"))
        rec = RequestRecord(time.monotonic(), model, stream, "pending", messages, has_auth, req.path, headers, body)
        fault, admitted, rl_headers = self._arrive(rec, self._token_cost(rec))
        if not admitted:  # rl_headers carry the Retry-After (server._refusal)
            rec.status = fault or 429
            await conn.send_json(429, R.rate_limit_body(self.name), rl_headers, keep_alive=keep)
            return keep
        try:
            return await self._answer(conn, body, rec, fault, keep, rl_headers)
        finally:
            self._depart(rec)

    async def _answer(self, conn: Connection, body: dict, rec: RequestRecord, fault: str | None, keep: bool, extra: list) -> bool:
        delay = self.latency_s + (self.slow_s if fault == "slow" else 0.0)
        if delay > 0 and not await conn.sleep(delay):
            rec.status = fault or 499  # client went away while we were "thinking"
            return False
        cid = f"chatcmpl-{self.name}-{next(self._ids)}"
        extra = extra + [("x-request-id", cid)]
        if fault in ("500", "503"):
            rec.status = fault
            await conn.send_json(int(fault), R.error_body(int(fault), f"Injected {fault} (loopback {self.name})"), extra, keep_alive=keep)
            return keep
        if fault == "malformed":
            rec.status = fault
            await conn.send(200, [("Content-Type", "application/json")] + extra, R.MALFORMED_BODY, keep_alive=keep)
            return keep
        if fault in R.BAD_200_BODIES:
            rec.status = fault
            ctype, raw = R.BAD_200_BODIES[fault]
            await conn.send(200, [("Content-Type", ctype)] + extra, raw, keep_alive=keep)
            return keep
        model = rec.model if isinstance(rec.model, str) else ""
        try:
            message = self._message(body, model, cid)
        except Exception as exc:  # noqa: BLE001 - responder failure becomes a 500
            rec.status = 500
            await conn.send_json(500, R.error_body(500, f"responder raised {type(exc).__name__}: {exc}"), extra, keep_alive=keep)
            return keep
        usage = R.usage_for(rec.messages, message)
        self._settle_tokens(rec, usage)  # a responder's reply: charge what usage reports
        created = int(time.time())
        rec.status = fault or 200
        if fault == "reset" or (fault == "stream_cut" and not rec.stream):
            data = json.dumps(R.completion(cid, created, model, [R.completion_choice(message)], usage)).encode()
            conn.writer.write(conn.head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))] + extra, True))
            conn.writer.write(data[: len(data) // 2])
            await conn.writer.drain()
            conn.abort()
            return False
        if rec.stream:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            if fault == "empty_choices":
                chunks = R.empty_stream_chunks(cid, created, model)
            elif fault == "stream_cut":
                chunks = R.cut_stream_chunks(cid, created, model, message)
            else:
                chunks = R.stream_chunks(cid, created, model, message, usage if include_usage else None)
            return await self._send_stream(conn, chunks, extra, keep, cut=fault == "stream_cut")
        choices = [] if fault == "empty_choices" else [R.completion_choice(message)]
        await conn.send_json(200, R.completion(cid, created, model, choices, usage), extra, keep_alive=keep)
        return keep

    def _message(self, body: dict, model: str, cid: str) -> dict:
        result = self.responder(body, self) if self.responder is not None else None
        if result is None:
            return {"role": "assistant", "content": R.default_content(self.name, model, body.get("messages") or [])}
        return R.normalize_message(result, cid.rsplit("-", 1)[-1])

    async def _send_stream(self, conn: Connection, chunks: list[dict], extra: list, keep: bool, *, cut: bool) -> bool:
        head = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"), ("Transfer-Encoding", "chunked")]
        conn.writer.write(conn.head(200, head + extra, keep))
        for chunk in chunks:
            await conn.write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if cut:
            conn.close()  # FIN without the terminating chunk, finish_reason or [DONE]
            return False
        await conn.write_chunk(b"data: [DONE]\n\n")
        await conn.end_chunks()
        return keep
