"""Tests for the embedded loopback OpenAI-compatible provider (real HTTP over 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from hermes_delegate.loopback import (
    FAULTS,
    LoopbackProvider,
    RequestRecord,
    closed_port_url,
    start_providers,
)
from hermes_delegate.loopback.limits import decimal_seconds, go_duration

ROOT = Path(__file__).resolve().parents[1]
MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello loopback world"}]


def chat(model="m1", messages=MSGS, **extra):
    return {"model": model, "messages": messages, **extra}


@pytest.fixture
def provider():
    p = LoopbackProvider("p1").start()
    yield p
    p.stop()


@pytest.fixture
def client(provider):
    with httpx.Client(base_url=provider.base_url, timeout=5.0) as c:
        yield c


def wait_idle(p: LoopbackProvider, timeout: float = 3.0) -> int:
    """in_flight drops just after the last byte is written; poll instead of racing it."""
    deadline = time.monotonic() + timeout
    while p.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    return p.in_flight


def sse_events(text: str) -> list:
    """Parse an SSE body into decoded JSON chunks plus the literal "[DONE]"."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def tool_responder(body, provider):
    if body.get("tools") and body["messages"][-1]["role"] == "user":
        return {"content": None, "tool_calls": [{"function": {"name": "delegate", "arguments": {"task": "sum"}}}]}
    return None  # default echo reply otherwise


# -- normal replies -------------------------------------------------------------------


def test_non_stream_completion_shape_and_usage(provider, client):
    r = client.post("/chat/completions", json=chat(max_tokens=5), headers={"Authorization": "Bearer sk-secret-123"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["object"] == "chat.completion" and doc["model"] == "m1" and doc["id"].startswith("chatcmpl-")
    assert isinstance(doc["created"], int)
    (choice,) = doc["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "[p1] m1: hello loopback world"}
    chars = len("be brief") + len("hello loopback world")
    assert doc["usage"]["prompt_tokens"] == chars // 4
    assert doc["usage"]["completion_tokens"] == len(choice["message"]["content"]) // 4
    assert doc["usage"]["total_tokens"] == doc["usage"]["prompt_tokens"] + doc["usage"]["completion_tokens"]
    # deterministic content, path without /v1 works too, usage minimum is 1
    r2 = httpx.post(f"http://127.0.0.1:{provider.port}/chat/completions", json=chat(messages=[{"role": "user", "content": "x"}]))
    assert r2.json()["choices"][0]["message"]["content"] == "[p1] m1: x"
    assert r2.json()["usage"]["prompt_tokens"] == 1
    rec = provider.requests[0]
    assert isinstance(rec, RequestRecord)
    assert (rec.model, rec.stream, rec.status, rec.messages, rec.has_auth) == ("m1", False, 200, MSGS, True)
    assert provider.requests[1].has_auth is False
    assert "sk-secret-123" not in repr(provider.requests) and "authorization" not in rec.headers


def test_echo_truncates_long_user_message(client):
    long = "y" * 500
    content = client.post("/chat/completions", json=chat(messages=[{"role": "user", "content": long}])).json()
    assert content["choices"][0]["message"]["content"] == "[p1] m1: " + "y" * 120


def test_streaming_sse_with_usage(provider, client):
    body = chat(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m1" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "[p1] m1: hello loopback world"
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) >= 2
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    # without include_usage: no usage chunk
    events = sse_events(client.post("/chat/completions", json=chat(stream=True)).text)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in e for e in events[:-1])
    assert [r.stream for r in provider.requests] == [True, True]


def test_responder_tool_calls_non_stream_and_stream():
    tools = [{"type": "function", "function": {"name": "delegate", "parameters": {"type": "object"}}}]
    with LoopbackProvider("parent", responder=tool_responder) as p, httpx.Client(base_url=p.base_url) as c:
        doc = c.post("/chat/completions", json=chat(tools=tools)).json()
        (choice,) = doc["choices"]
        assert choice["finish_reason"] == "tool_calls"
        (call,) = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"] and call["function"]["name"] == "delegate"
        assert json.loads(call["function"]["arguments"]) == {"task": "sum"}

        events = sse_events(c.post("/chat/completions", json=chat(tools=tools, stream=True)).text)
        assert events[-1] == "[DONE]"
        deltas = [e["choices"][0] for e in events[:-1] if e["choices"]]
        (tc_delta,) = [d["delta"]["tool_calls"] for d in deltas if "tool_calls" in d["delta"]]
        assert tc_delta[0]["index"] == 0 and tc_delta[0]["function"]["name"] == "delegate"
        assert deltas[-1]["finish_reason"] == "tool_calls"

        # the tool result round-trips to the default echo; string results become content
        follow = MSGS + [choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": "42"}]
        assert c.post("/chat/completions", json=chat(messages=follow, tools=tools)).json()["choices"][0]["finish_reason"] == "stop"
        p.responder = lambda body, prov: "custom"
        assert c.post("/chat/completions", json=chat()).json()["choices"][0]["message"]["content"] == "custom"
        p.responder = lambda body, prov: 1 / 0
        r = c.post("/chat/completions", json=chat())
        assert r.status_code == 500 and "ZeroDivisionError" in r.json()["error"]["message"]


# -- rate limiting ----------------------------------------------------------------------


def test_rps_limit_returns_429_with_retry_after():
    with LoopbackProvider("rl", rps=3) as p, httpx.Client(base_url=p.base_url) as c:
        rs = [c.post("/chat/completions", json=chat()) for _ in range(5)]
        assert [r.status_code for r in rs] == [200, 200, 200, 429, 429]
        limited = rs[3]
        assert limited.headers["retry-after"] == "1"
        assert limited.json() == {"error": {"message": "Rate limit exceeded (loopback rl)", "type": "rate_limit_error", "code": 429}}
        assert limited.headers["x-ratelimit-limit-requests"] == "180"  # per minute, like OpenAI
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        assert [r.headers["x-ratelimit-remaining-requests"] for r in rs[:3]] == ["2", "1", "0"]
        stats = p.stats()
        assert stats["requests"] == 5 and stats["ok"] == 3 and stats["429"] == 2 and stats["errors"] == 0
        assert stats["max_rps_observed"] == 3.0
        time.sleep(1.05)  # the window slides
        assert c.post("/chat/completions", json=chat()).status_code == 200
    with LoopbackProvider("rl2", rps=1, retry_after=0.5) as p, httpx.Client(base_url=p.base_url) as c:
        c.post("/chat/completions", json=chat())
        assert c.post("/chat/completions", json=chat()).headers["retry-after"] == "0.5"
    with LoopbackProvider("rl3", rps=1, retry_after=None) as p, httpx.Client(base_url=p.base_url) as c:
        c.post("/chat/completions", json=chat())
        r = c.post("/chat/completions", json=chat())
        assert r.status_code == 429 and "retry-after" not in r.headers


def test_max_concurrent():
    async def run(p):
        async with httpx.AsyncClient(base_url=p.base_url, timeout=5) as c:
            return await asyncio.gather(*(c.post("/chat/completions", json=chat()) for _ in range(6)))

    with LoopbackProvider("mc", max_concurrent=2, latency_s=0.4) as p:
        codes = sorted(r.status_code for r in asyncio.run(run(p)))
        assert codes == [200, 200, 429, 429, 429, 429]
        assert p.stats()["max_in_flight"] == 2
        assert wait_idle(p) == 0



# -- rate-limit header dialects, tpm, Retry-After auto, limits changed mid-run ---------------------

_GO = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_RL_PREFIXES = ("x-ratelimit", "anthropic-ratelimit")


def go_seconds(text: str) -> float:
    """Parse an OpenAI (Go duration) reset such as ``350ms``, ``1.2s``, ``6m0s``."""
    parts = list(_GO.finditer(text))
    assert parts and "".join(m.group(0) for m in parts) == text, text
    return sum(float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[m.group(2)] for m in parts)


def rfc3339_from_now(text: str) -> float:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() - time.time()


def rate_headers(r: httpx.Response) -> dict:
    return {k: v for k, v in r.headers.items() if k.startswith(_RL_PREFIXES)}


def cost_of(messages=MSGS, max_tokens=None, name="p1", model="m1") -> int:
    """The loopback's token charge: prompt tokens (chars // 4) + max_tokens or the echo's completion."""
    prompt = max(1, sum(len(m["content"]) for m in messages) // 4)
    if max_tokens is not None:
        return prompt + max_tokens
    last = [m["content"] for m in messages if m["role"] == "user"][-1]
    return prompt + max(1, len(f"[{name}] {model}: {last[:120]}") // 4)


def test_go_duration_and_decimal_seconds_formats():
    assert [go_duration(x) for x in (0, 0.0004, 0.35, 1, 1.2, 1.5, 360, 3723.5)] == [
        "0s", "1ms", "350ms", "1s", "1.2s", "1.5s", "6m0s", "1h2m3.5s"]
    assert [go_seconds(go_duration(x)) for x in (0.35, 1.2, 360)] == pytest.approx([0.35, 1.2, 360])
    assert [decimal_seconds(x) for x in (0, 0.347, 0.3471, 2)] == ["0", "0.347", "0.348", "2"]


def test_openai_dialect_burst_limit_remaining_reset():
    with LoopbackProvider("oa", rps=3) as p, httpx.Client(base_url=p.base_url) as c:
        rs = [c.post("/chat/completions", json=chat()) for _ in range(4)]
        assert [r.status_code for r in rs] == [200, 200, 200, 429]
        assert all(r.headers["x-ratelimit-limit-requests"] == "180" for r in rs)
        assert [r.headers["x-ratelimit-remaining-requests"] for r in rs] == ["2", "1", "0", "0"]
        resets = [go_seconds(r.headers["x-ratelimit-reset-requests"]) for r in rs]
        assert all(0 < x <= 1.0 for x in resets), resets
        assert resets[3] <= resets[0]  # the oldest request's exit comes closer
        assert not any(k.endswith("-tokens") for k in rate_headers(rs[0]))  # no tpm: no token headers
        assert rs[3].headers["retry-after"] == "1" and "retry-after-ms" not in rs[3].headers


def test_anthropic_dialect_on_chat_with_tokens():
    with LoopbackProvider("an", rps=2, tpm=6000, token_window_s=1.0, ratelimit_headers="anthropic") as p, \
            httpx.Client(base_url=p.base_url) as c:
        r = c.post("/chat/completions", json=chat(max_tokens=10))
        assert r.status_code == 200
        h = rate_headers(r)
        assert not any(k.startswith("x-ratelimit") for k in h)
        assert {k.rsplit("-", 1)[0] for k in h} == {f"anthropic-ratelimit-{kind}" for kind in ("requests", "tokens", "input-tokens")}
        assert (h["anthropic-ratelimit-requests-limit"], h["anthropic-ratelimit-requests-remaining"]) == ("120", "1")
        assert h["anthropic-ratelimit-tokens-limit"] == h["anthropic-ratelimit-input-tokens-limit"] == "6000"
        assert h["anthropic-ratelimit-tokens-remaining"] == str(100 - cost_of(max_tokens=10))  # 6000/min over 1 s = 100
        assert h["anthropic-ratelimit-input-tokens-remaining"] == str(100 - cost_of(max_tokens=0))  # prompt only
        for kind in ("requests", "tokens", "input-tokens"):
            assert -0.5 < rfc3339_from_now(h[f"anthropic-ratelimit-{kind}-reset"]) <= 1.5
        c.post("/chat/completions", json=chat(max_tokens=1))
        limited = c.post("/chat/completions", json=chat(max_tokens=1))
        assert limited.status_code == 429 and limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert limited.headers["retry-after"] == "1"


def test_none_dialect_sends_no_rate_headers():
    with LoopbackProvider("nn", rps=1, tpm=6000, ratelimit_headers="none") as p, httpx.Client(base_url=p.base_url) as c:
        ok = c.post("/chat/completions", json=chat())
        limited = c.post("/chat/completions", json=chat())
        msg = c.post("/messages", json={"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        assert [ok.status_code, limited.status_code, msg.status_code] == [200, 429, 429]
        assert rate_headers(ok) == rate_headers(limited) == rate_headers(msg) == {}
        assert limited.headers["retry-after"] == "1"
    with pytest.raises(ValueError, match="openai.*anthropic.*none"):
        LoopbackProvider("bad", ratelimit_headers="azure")
    for bad in ({"retry_after": "soon"}, {"tpm": -1}, {"token_window_s": 0}):
        with pytest.raises(ValueError):
            LoopbackProvider("bad", **bad)


def test_tpm_limits_tokens_and_frees_with_short_window():
    # 1200 tokens/min over a 1 s window = 20 tokens per window
    with LoopbackProvider("tk", tpm=1200, token_window_s=1.0, retry_after="auto") as p, httpx.Client(base_url=p.base_url) as c:
        cost = cost_of(max_tokens=10)  # 7 prompt + 10
        r1 = c.post("/chat/completions", json=chat(max_tokens=10))
        r2 = c.post("/chat/completions", json=chat(max_completion_tokens=10))
        assert (r1.status_code, r2.status_code) == (200, 429)
        assert r1.headers["x-ratelimit-limit-tokens"] == "1200" and "x-ratelimit-limit-requests" not in r1.headers
        assert r1.headers["x-ratelimit-remaining-tokens"] == r2.headers["x-ratelimit-remaining-tokens"] == str(20 - cost)
        reset = go_seconds(r2.headers["x-ratelimit-reset-tokens"])
        assert 0 < reset <= 1.0
        assert 0 < float(r2.headers["retry-after"]) <= reset  # one charge leaving frees enough here
        assert int(r2.headers["retry-after-ms"]) == round(float(r2.headers["retry-after"]) * 1000)
        too_big = c.post("/chat/completions", json=chat(max_tokens=100))  # can never fit 20
        assert too_big.status_code == 429
        time.sleep(reset)  # the window slides: full capacity again
        r3 = c.post("/chat/completions", json=chat(max_tokens=10))
        assert r3.status_code == 200 and r3.headers["x-ratelimit-remaining-tokens"] == str(20 - cost)
        assert p.stats()["tokens"] == 2 * cost and p.stats()["429"] == 2

    # without max_tokens the charge is what usage reports; remaining drops by each request's cost
    reply = "z" * 200
    with LoopbackProvider("tk2", tpm=60000) as p, httpx.Client(base_url=p.base_url) as c:
        r1 = c.post("/chat/completions", json=chat())
        total1 = r1.json()["usage"]["total_tokens"]
        assert total1 == cost_of(name="tk2") and r1.headers["x-ratelimit-remaining-tokens"] == str(60000 - total1)
        r2 = c.post("/chat/completions", json=chat(max_tokens=5))
        assert int(r1.headers["x-ratelimit-remaining-tokens"]) - int(r2.headers["x-ratelimit-remaining-tokens"]) == cost_of(max_tokens=5)
        p.responder = lambda body, prov: reply  # reply unknown at arrival: settled from its usage
        total3 = c.post("/chat/completions", json=chat()).json()["usage"]["total_tokens"]
        assert total3 == 7 + len(reply) // 4
        assert p.stats()["tokens"] == total1 + cost_of(max_tokens=5) + total3
        r4 = c.post("/chat/completions", json=chat(max_tokens=0))
        assert r4.headers["x-ratelimit-remaining-tokens"] == str(60000 - p.stats()["tokens"])


def test_retry_after_auto_is_the_actual_wait():
    with LoopbackProvider("auto", rps=2, retry_after="auto") as p, httpx.Client(base_url=p.base_url) as c:
        assert [c.post("/chat/completions", json=chat()).status_code for _ in range(2)] == [200, 200]
        limited = c.post("/chat/completions", json=chat())
        assert limited.status_code == 429
        wait = float(limited.headers["retry-after"])
        assert 0 < wait <= 1.0 and int(limited.headers["retry-after-ms"]) == round(wait * 1000)
        time.sleep(wait)
        assert c.post("/chat/completions", json=chat()).status_code == 200
    with LoopbackProvider("auto2", tpm=1200, token_window_s=1.0, retry_after="auto") as p, httpx.Client(base_url=p.base_url) as c:
        assert c.post("/chat/completions", json=chat(max_tokens=10)).status_code == 200
        limited = c.post("/chat/completions", json=chat(max_tokens=10))
        assert limited.status_code == 429
        wait = float(limited.headers["retry-after"])
        assert 0 < wait <= 1.0
        time.sleep(wait)
        assert c.post("/chat/completions", json=chat(max_tokens=10)).status_code == 200
    with LoopbackProvider("auto3", retry_after="auto") as p, httpx.Client(base_url=p.base_url) as c:
        p.script(["429", "429_no_retry_after"])
        scripted = c.post("/chat/completions", json=chat())
        assert scripted.headers["retry-after"] == "0" and scripted.headers["retry-after-ms"] == "0"
        quiet = c.post("/chat/completions", json=chat())
        assert "retry-after" not in quiet.headers and "retry-after-ms" not in quiet.headers


def test_limits_changed_mid_run():
    with LoopbackProvider("mid", rps=10, tpm=None) as p, httpx.Client(base_url=p.base_url) as c:
        r1 = c.post("/chat/completions", json=chat())
        assert (r1.headers["x-ratelimit-limit-requests"], r1.headers["x-ratelimit-remaining-requests"]) == ("600", "9")
        p.rps = 0.2  # one request per 5 s window; r1 is still in it
        r2 = c.post("/chat/completions", json=chat())
        assert r2.status_code == 429
        assert (r2.headers["x-ratelimit-limit-requests"], r2.headers["x-ratelimit-remaining-requests"]) == ("12", "0")
        assert 1.0 < go_seconds(r2.headers["x-ratelimit-reset-requests"]) <= 5.0
        p.rps = None
        r3 = c.post("/chat/completions", json=chat())
        assert r3.status_code == 200 and rate_headers(r3) == {}
        p.tpm = 600  # switched on mid-run (60 s window: 600 tokens); the token window starts empty
        r4 = c.post("/chat/completions", json=chat())
        assert r4.headers["x-ratelimit-limit-tokens"] == "600"
        assert r4.headers["x-ratelimit-remaining-tokens"] == str(600 - cost_of(name="mid"))
        assert p.stats()["tokens"] == 3 * cost_of(name="mid")  # admitted r1, r3, r4
        p.tpm = cost_of(name="mid")  # r4 alone fills the window now
        r5 = c.post("/chat/completions", json=chat())
        assert r5.status_code == 429 and r5.headers["x-ratelimit-remaining-tokens"] == "0"
        p.tpm = None
        assert rate_headers(c.post("/chat/completions", json=chat())) == {}
        assert p.stats()["ok"] == 4 and p.stats()["429"] == 2
        with pytest.raises(ValueError):
            p.rps = "fast"


def test_messages_endpoint_sends_rate_headers():
    body = {"model": "claude-x", "max_tokens": 10, "system": "be brief", "messages": [{"role": "user", "content": "hello"}]}
    with LoopbackProvider("am", rps=2, tpm=6000, token_window_s=1.0, ratelimit_headers="anthropic", retry_after="auto") as p, \
            httpx.Client(base_url=p.base_url) as c:
        r = c.post("/messages", json=body)
        assert r.status_code == 200 and r.json()["type"] == "message"
        h = rate_headers(r)
        assert h["anthropic-ratelimit-requests-limit"] == "120" and h["anthropic-ratelimit-requests-remaining"] == "1"
        prompt = r.json()["usage"]["input_tokens"]
        assert h["anthropic-ratelimit-tokens-remaining"] == str(100 - prompt - 10)
        assert h["anthropic-ratelimit-input-tokens-remaining"] == str(100 - prompt)
        assert -0.5 < rfc3339_from_now(h["anthropic-ratelimit-requests-reset"]) <= 1.5
        no_budget = {k: v for k, v in body.items() if k != "max_tokens"}
        usage = c.post("/messages", json=no_budget).json()["usage"]
        assert p.stats()["tokens"] == prompt + 10 + usage["input_tokens"] + usage["output_tokens"]
        limited = c.post("/messages", json=body)
        assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit_error"
        assert limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert 0 < float(limited.headers["retry-after"]) <= 1.0
    with LoopbackProvider("am2", rps=2) as p:  # the dialect is the provider's, whatever the endpoint
        r = httpx.post(p.base_url + "/messages", json=body)
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "120"
        assert not any(k.startswith("anthropic-ratelimit") for k in r.headers)

# -- faults -------------------------------------------------------------------------------


def test_429_faults(provider, client):
    provider.script(["429", "429_no_retry_after"])
    r1, r2, r3 = (client.post("/chat/completions", json=chat()) for _ in range(3))
    assert r1.status_code == 429 and r1.headers["retry-after"] == "1"
    assert r1.json()["error"]["type"] == "rate_limit_error"
    assert r2.status_code == 429 and "retry-after" not in r2.headers
    assert r3.status_code == 200
    assert [r.status for r in provider.requests] == ["429", "429_no_retry_after", 200]
    assert provider.stats()["429"] == 2


@pytest.mark.parametrize("fault", ["500", "503"])
def test_server_error_faults(provider, client, fault):
    provider.set_fault(fault)
    r = client.post("/chat/completions", json=chat())
    assert r.status_code == int(fault)
    err = r.json()["error"]
    assert err["type"] == {"500": "server_error", "503": "service_unavailable_error"}[fault] and err["message"]
    provider.set_fault("ok")
    assert client.post("/chat/completions", json=chat()).status_code == 200
    assert provider.stats()["errors"] == 1 and provider.requests[0].status == fault


def test_reset_fault_raises_transport_error(provider, client):
    provider.script(["reset"])
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=chat())
    assert client.post("/chat/completions", json=chat()).status_code == 200  # new connection fine
    assert provider.requests[0].status == "reset"


def test_malformed_and_empty_choices(provider, client):
    provider.script(["malformed", "empty_choices", "empty_choices"])
    r = client.post("/chat/completions", json=chat())
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    doc = client.post("/chat/completions", json=chat()).json()
    assert doc["object"] == "chat.completion" and doc["choices"] == []
    events = sse_events(client.post("/chat/completions", json=chat(stream=True)).text)
    assert events[-1] == "[DONE]" and all(e["choices"] == [] for e in events[:-1])
    assert [r.status for r in provider.requests] == ["malformed", "empty_choices", "empty_choices"]


def test_stream_cut(provider, client):
    provider.script(["stream_cut", "stream_cut"])
    lines = []
    with pytest.raises(httpx.TransportError):
        with client.stream("POST", "/chat/completions", json=chat(stream=True)) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(line)
    events = sse_events("\n".join(lines))
    assert "[DONE]" not in events
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["choices"][0]["finish_reason"] is None for e in events)
    with pytest.raises(httpx.TransportError):  # non-streaming request: behaves like "reset"
        client.post("/chat/completions", json=chat())
    assert [r.status for r in provider.requests] == ["stream_cut", "stream_cut"]


def test_slow_is_cancelled_on_client_timeout_and_on_stop():
    p = LoopbackProvider("slowpoke").start()
    p.set_fault("slow")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(p.base_url + "/chat/completions", json=chat(), timeout=0.3)
    assert wait_idle(p) == 0 and p.requests[0].status == "slow"

    async def hang():
        async with httpx.AsyncClient(timeout=10) as c:
            return await c.post(p.base_url + "/chat/completions", json=chat())

    async def run():
        task = asyncio.ensure_future(hang())
        while p.in_flight == 0:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, p.stop)
        with pytest.raises(httpx.TransportError):
            await task
        return time.monotonic() - t0

    assert asyncio.run(run()) < 3.0


def test_script_order_set_fault_and_validation(provider, client):
    assert FAULTS >= {"429", "500", "reset", "slow", "stream_cut", "malformed", "empty_choices"}
    provider.script(["500", "ok", "503"])
    codes = [client.post("/chat/completions", json=chat()).status_code for _ in range(4)]
    assert codes == [500, 200, 503, 200]
    provider.set_fault("500")
    provider.script(["ok"])
    codes = [client.post("/chat/completions", json=chat()).status_code for _ in range(2)]
    assert codes == [200, 500]  # script first, then the `always` fault
    provider.set_fault(None)
    assert client.post("/chat/completions", json=chat()).status_code == 200
    with pytest.raises(ValueError):
        provider.script(["bogus"])
    with pytest.raises(ValueError):
        provider.set_fault("refused")


# -- other endpoints / protocol -------------------------------------------------------------


def test_models_health_404_and_bad_body():
    with LoopbackProvider("mm", models=["a", "b"]) as p, httpx.Client() as c:
        root = f"http://127.0.0.1:{p.port}"
        assert c.get(p.base_url + "/models").json() == {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mm"} for m in ("a", "b")],
        }
        h = c.get(root + "/health")
        assert h.status_code == 200 and h.text == "ok"
        r = c.get(root + "/v1/nope")
        assert r.status_code == 404 and "error" in r.json()
        assert c.get(p.base_url + "/chat/completions").status_code == 404
        bad = c.post(p.base_url + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    with LoopbackProvider("seen") as p:
        assert httpx.get(p.base_url + "/models").json()["data"] == []
        httpx.post(p.base_url + "/chat/completions", json=chat(model="zz"))
        assert [m["id"] for m in httpx.get(p.base_url + "/models").json()["data"]] == ["zz"]


def _read_response(sock_file):
    status = sock_file.readline()
    headers = {}
    while (line := sock_file.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, sock_file.read(int(headers["content-length"]))


def test_keep_alive_chunked_request_and_connection_close(provider):
    body = json.dumps(chat()).encode()
    with socket.create_connection(("127.0.0.1", provider.port), timeout=5) as s:
        f = s.makefile("rb")
        req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        s.sendall(req % (len(body), body))
        status, headers, data = _read_response(f)
        assert status.startswith(b"HTTP/1.1 200") and headers.get("connection", "keep-alive") == "keep-alive"
        # same connection, chunked request body split in two chunks
        half = len(body) // 2
        chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        status, _, data = _read_response(f)
        assert status.startswith(b"HTTP/1.1 200") and json.loads(data)["choices"][0]["message"]["content"].startswith("[p1]")
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, data = _read_response(f)
        assert data == b"ok" and headers["connection"] == "close"
        assert f.read() == b""  # server closed the connection
    assert provider.stats()["ok"] == 2


@pytest.mark.timing  # the wall time of 300 overlapping requests
def test_300_concurrent_requests_with_latency():
    async def run(p):
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with httpx.AsyncClient(base_url=p.base_url, timeout=15, limits=limits) as c:
            t0 = time.monotonic()
            rs = await asyncio.gather(*(c.post("/chat/completions", json=chat(model=f"m{i}")) for i in range(300)))
            return rs, time.monotonic() - t0

    with LoopbackProvider("many", latency_s=0.2) as p:
        rs, elapsed = asyncio.run(run(p))
        assert all(r.status_code == 200 for r in rs)
        assert rs[7].json()["model"] == "m7"
        stats = p.stats()
        assert stats["ok"] == 300 and stats["requests"] == 300
        assert stats["max_in_flight"] >= 50  # they really overlapped (300 x 0.2 s serial would be 60 s)
        assert elapsed < 10


def test_stop_is_idempotent_and_frees_port():
    p = LoopbackProvider("tmp").start()
    port, url = p.port, p.base_url
    assert url == f"http://127.0.0.1:{port}/v1"
    assert p.start() is p  # already running: no-op
    with httpx.Client() as c:
        assert c.get(url + "/models").status_code == 200  # leaves an idle keep-alive connection open
        p.stop()
        p.stop()
        with pytest.raises(httpx.TransportError):
            c.get(url + "/models")
    with LoopbackProvider("again", port=port) as p2:
        assert p2.port == port and httpx.get(p2.base_url + "/models").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(closed_port_url() + "/models")


def test_start_providers_group_and_stats_reset():
    with start_providers(3, latency_s=0.0) as ps:
        assert [p.name for p in ps] == ["p1", "p2", "p3"]
        assert len({p.port for p in ps}) == 3
        for p in ps:
            assert httpx.post(p.base_url + "/chat/completions", json=chat()).json()["choices"][0]["message"]["content"].startswith(f"[{p.name}]")
        wait_idle(ps[0])
        ps[0].reset_stats()
        assert ps[0].stats() == {"requests": 0, "ok": 0, "429": 0, "errors": 0, "max_in_flight": 0, "max_rps_observed": 0.0, "tokens": 0}
    assert not any(p.running for p in ps)
    with start_providers([{"name": "x", "rps": 1}, "y"]) as ps:
        assert (ps[0].rps, ps[1].name) == (1, "y")


def test_cli_prints_url_and_serves():
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_delegate.loopback", "--port", "0", "--name", "p1", "--latency", "0.1", "--rps", "5", "--models", "a,b",
         "--tpm", "60000", "--token-window", "2", "--ratelimit-headers", "openai", "--retry-after", "auto"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "CLI printed nothing"
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert [m["id"] for m in httpx.get(url + "/models").json()["data"]] == ["a", "b"]
        r = httpx.post(url + "/chat/completions", json=chat(model="a"))
        assert r.json()["choices"][0]["message"]["content"].startswith("[p1] a:")
        assert r.headers["x-ratelimit-limit-requests"] == "300"  # rps 5, per minute
        assert r.headers["x-ratelimit-remaining-requests"] == "4"
        assert r.headers["x-ratelimit-limit-tokens"] == "60000"  # window 2 s: 2000 tokens
        assert r.headers["x-ratelimit-remaining-tokens"] == str(2000 - r.json()["usage"]["total_tokens"])
    finally:
        proc.terminate()
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stderr.read().decode()


# -- litellm compatibility -------------------------------------------------------------------


def test_litellm_sync_and_async_stream_compat():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm")
    with LoopbackProvider("lt", retry_after=0.5) as p:
        resp = litellm.completion(
            model="openai/x", api_base=p.base_url, api_key="sk-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert resp.choices[0].message.content == "[lt] x: hi"
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

        async def stream():
            s = await litellm.acompletion(
                model="openai/x",
                api_base=p.base_url,
                api_key="sk-test",
                messages=[{"role": "user", "content": "hi there"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            return [chunk async for chunk in s]

        chunks = asyncio.run(stream())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "[lt] x: hi there"
        # 429 surfaces as litellm.RateLimitError when the OpenAI client's own retries are off
        p.script(["429"])
        with pytest.raises(litellm.RateLimitError) as exc_info:
            litellm.completion(
                model="openai/x", api_base=p.base_url, api_key="sk-test", messages=[{"role": "user", "content": "hi"}], max_retries=0
            )
        assert exc_info.value.litellm_response_headers["retry-after"] == "0.5"
        recs = p.requests
        assert [r.status for r in recs] == [200, 200, "429"]
        assert all(r.has_auth and r.path == "/v1/chat/completions" for r in recs)
        assert recs[0].model == "x" and recs[1].stream is True
        assert "sk-test" not in repr(recs)
