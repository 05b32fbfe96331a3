"""Issue 10 part 5: a 200 that cannot be used (HTML, binary, JSON of the wrong shape, malformed JSON,
no choices) is `bad_response` with `status_code: null`, never a made-up `server`/500. Real LiteLLM
Router, real HTTP to the loopback providers' OpenAI-format endpoint."""

from __future__ import annotations

import json

import pytest

from conftest import LOOPBACK_KEY, LoopbackPair, loopback_config
from hermes_delegate import Delegator, Task

BAD_200 = ("html", "binary", "wrong_shape", "malformed", "empty_choices")


@pytest.mark.parametrize("fault", BAD_200)
def test_an_unusable_200_is_bad_response_without_a_status(providers: LoopbackPair, fault: str):
    providers.alpha.set_fault(fault)
    (r,) = Delegator(loopback_config(providers)).run_sync([Task("x", model="alpha")]).results
    assert r.status == "failed"
    out = r.to_dict()
    assert (out["error"]["type"], out["error"]["status_code"]) == ("bad_response", None), out["error"]
    assert [a["status"] for a in out["attempt_log"]] == ["bad_response"]
    assert len(providers.alpha.requests) == 1
    assert LOOPBACK_KEY not in json.dumps(out, default=str)


@pytest.mark.parametrize("fault", BAD_200)
def test_an_unusable_200_is_retried_on_the_healthy_deployment(providers: LoopbackPair, fault: str):
    providers.alpha.set_fault(fault)
    d = Delegator(loopback_config(providers, router_settings={"num_retries": 1}))
    batch = d.run_sync([Task(f"t{i}", model="both") for i in range(4)])
    assert batch.counts() == {"completed": 4}, [r.error for r in batch.results if r.error]
    for r in batch.results:
        assert [(a.deployment.deployment_id, a.status) for a in r.attempts] in (
            [("both-beta", "ok")], [("both-alpha", "bad_response"), ("both-beta", "ok")])


@pytest.mark.parametrize("content", ["", None])
def test_an_empty_text_with_tool_calls_is_a_reply_not_a_bad_response(providers: LoopbackPair, content):
    """Only a message with no content, no tool_calls and no function_call is unusable."""
    providers.alpha.responder = lambda body, prov: {
        "content": content, "tool_calls": [{"function": {"name": "lookup", "arguments": {"q": "x"}}}]}
    (r,) = Delegator(loopback_config(providers)).run_sync([Task("x", model="alpha")]).results
    assert r.error is None, r.error
    assert [a.status for a in r.attempts] == ["ok"]
    assert len(providers.alpha.requests) == 1


# -- Anthropic's format: a test-side server standing in for /v1/messages (the loopback speaks OpenAI's) --
ANTHROPIC_BODIES = {
    "html": ("text/html", b"<!doctype html><html><body>502 Bad Gateway</body></html>"),
    "wrong_shape": ("application/json", b'{"id": "msg_1", "type": "message", "role": "assistant"}'),
    "malformed": ("application/json", b'{"id": "msg_1", "type": "message", "content": [{"ty'),
    "binary": ("application/octet-stream", bytes(range(256)) * 4),
    # a well-formed message with nothing in it: litellm makes it one choice with an empty message
    "empty_content": ("application/json", json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test", "content": [],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 0}}).encode()),
}


@pytest.fixture
def anthropic_server():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        body: tuple[str, bytes] = ANTHROPIC_BODIES["html"]
        paths: list[str] = []

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            Handler.paths.append(self.path)
            ctype, raw = Handler.body
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, Handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("fault", list(ANTHROPIC_BODIES))
def test_anthropic_format_unusable_200_is_bad_response(providers: LoopbackPair, anthropic_server, fault):
    server, handler = anthropic_server
    handler.body, handler.paths = ANTHROPIC_BODIES[fault], []
    extra = [{"model_name": "claude", "model_info": {"id": "claude-1"},
              "litellm_params": {"model": "anthropic/claude-test", "api_key": LOOPBACK_KEY,
                                 "api_base": f"http://127.0.0.1:{server.server_port}"}}]
    (r,) = Delegator(loopback_config(providers, model_list_extra=extra)).run_sync(
        [Task("x", model="claude")]).results
    assert handler.paths and handler.paths[0].endswith("/v1/messages"), handler.paths
    assert (r.error["type"], r.error["status_code"]) == ("bad_response", None), r.error
    assert [a.status for a in r.attempts] == ["bad_response"]
