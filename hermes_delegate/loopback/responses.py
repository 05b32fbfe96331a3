"""Payload builders for the loopback provider (OpenAI wire format, stdlib only).

Nothing in here does I/O: these helpers turn a request body into the JSON
documents the server writes (ChatCompletion, chat.completion.chunk events,
error bodies, the model list).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Iterable

#: Fault names understood by :meth:`LoopbackProvider.script` / ``set_fault``.
FAULTS = frozenset(
    {
        "429",
        "429_no_retry_after",
        "500",
        "503",
        "slow",
        "reset",
        "malformed",
        "empty_choices",
        "stream_cut",
        "html",
        "binary",
        "wrong_shape",
    }
)
RATE_LIMIT_FAULTS = frozenset({"429", "429_no_retry_after"})

#: Deliberately broken JSON sent by the "malformed" fault.
MALFORMED_BODY = b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{"index": 0, "mess'

#: Unusable HTTP 200 bodies (content type, body) sent by the faults of the same name.
BAD_200_BODIES: dict[str, tuple[str, bytes]] = {
    "html": ("text/html; charset=utf-8", b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"),
    "binary": ("application/octet-stream", bytes(range(256)) * 4),
    "wrong_shape": ("application/json", b'{"result": {"text": "hello"}, "status": "ok"}'),
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


def check_fault(fault: str | None) -> str | None:
    """Validate a fault name; ``None`` and ``"ok"`` both mean "no fault"."""
    if fault is None or fault == "ok":
        return None
    if fault not in FAULTS:
        raise ValueError(f"unknown loopback fault {fault!r}; expected one of {sorted(FAULTS)} or 'ok'")
    return fault


def fmt_number(value: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"`` (for Retry-After and rate headers)."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


def error_body(status: int, message: str | None = None, type_: str | None = None, code: Any = None) -> dict[str, Any]:
    if message is None:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = f"HTTP {status}"
    return {
        "error": {
            "message": message,
            "type": type_ or _ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": status if code is None else code,
        }
    }


def rate_limit_body(name: str) -> dict[str, Any]:
    return {"error": {"message": f"Rate limit exceeded (loopback {name})", "type": "rate_limit_error", "code": 429}}


def text_of(content: Any) -> str:
    """Plain text of an OpenAI message ``content`` (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def prompt_chars(messages: Iterable[Any]) -> int:
    total = 0
    for msg in messages or ():
        if isinstance(msg, dict):
            total += len(text_of(msg.get("content")))
            for call in msg.get("tool_calls") or ():
                if isinstance(call, dict):
                    fn = call.get("function") or {}
                    total += len(str(fn.get("name") or "")) + len(str(fn.get("arguments") or ""))
    return total


def default_content(name: str, model: str, messages: list[Any]) -> str:
    """``"[name] model: <first 120 chars of the last user message>"``."""
    last = ""
    for msg in reversed(messages or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            last = text_of(msg.get("content"))
            break
    return f"[{name}] {model}: {last[:120]}"


def normalize_message(message: Any, call_prefix: str) -> dict[str, Any]:
    """Turn a responder result into an assistant message dict.

    Accepts a string (the content) or a dict with ``content`` and/or
    ``tool_calls``. Tool calls get ``id``/``type`` filled in when missing and
    dict ``arguments`` are JSON-encoded.
    """
    if isinstance(message, str):
        return {"role": "assistant", "content": message}
    if not isinstance(message, dict):
        raise TypeError(f"responder must return a dict, str or None, not {type(message).__name__}")
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    calls = message.get("tool_calls")
    if calls:
        norm = []
        for i, call in enumerate(calls):
            call = dict(call)
            fn = dict(call.get("function") or {})
            args = fn.get("arguments", "")
            if not isinstance(args, str):
                args = json.dumps(args)
            fn["arguments"] = args
            call["function"] = fn
            call.setdefault("id", f"call_{call_prefix}_{i}")
            call.setdefault("type", "function")
            call.pop("index", None)
            norm.append(call)
        out["tool_calls"] = norm
    for key, value in message.items():
        if key not in ("role", "content", "tool_calls"):
            out[key] = value
    return out


def usage_for(messages: list[Any], message: dict[str, Any]) -> dict[str, int]:
    prompt = max(1, prompt_chars(messages) // 4)
    out_chars = len(text_of(message.get("content")))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        out_chars += len(str(fn.get("name") or "")) + len(str(fn.get("arguments") or ""))
    completion = max(1, out_chars // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason_for(message: dict[str, Any]) -> str:
    return "tool_calls" if message.get("tool_calls") else "stop"


def completion(cid: str, created: int, model: str, choices: list[Any], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_loopback",
        "choices": choices,
        "usage": usage,
    }


def completion_choice(message: dict[str, Any]) -> dict[str, Any]:
    return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason_for(message)}


def split_pieces(text: str, n: int = 3) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chunk(cid: str, created: int, model: str, choices: list[Any],
           usage: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_loopback",
        "choices": choices,
    }
    if usage is not None:
        doc["usage"] = usage
    return doc


def _delta(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


def stream_chunks(cid: str, created: int, model: str, message: dict[str, Any],
                  usage: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Role delta, content pieces, one tool_calls delta, finish chunk, optional usage chunk."""
    chunks = [_chunk(cid, created, model, _delta({"role": "assistant", "content": ""}))]
    for piece in split_pieces(text_of(message.get("content"))):
        chunks.append(_chunk(cid, created, model, _delta({"content": piece})))
    calls = message.get("tool_calls")
    if calls:
        entries = [dict(call, index=i) for i, call in enumerate(calls)]
        chunks.append(_chunk(cid, created, model, _delta({"tool_calls": entries})))
    chunks.append(_chunk(cid, created, model, _delta({}, finish_reason_for(message))))
    if usage is not None:
        chunks.append(_chunk(cid, created, model, [], usage))
    return chunks


def cut_stream_chunks(cid: str, created: int, model: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    """What "stream_cut" sends before dropping the connection: role + one content piece."""
    pieces = split_pieces(text_of(message.get("content"))) or ["..."]
    return [
        _chunk(cid, created, model, _delta({"role": "assistant", "content": ""})),
        _chunk(cid, created, model, _delta({"content": pieces[0]})),
    ]


def empty_stream_chunks(cid: str, created: int, model: str) -> list[dict[str, Any]]:
    return [_chunk(cid, created, model, [])]


def models_list(name: str, models: Iterable[str]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": name} for m in models]}
