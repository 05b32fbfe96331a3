"""The MCP server (issue 12): the SDK's own client launches `hermes-delegate mcp` and calls the tools,
over stdio and streamable HTTP, against two loopback providers over real HTTP."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
import yaml

from helpers import in_ci, require_binary

if importlib.util.find_spec("mcp") is None and not in_ci():  # under CI a missing SDK is an error, not a skip
    pytest.skip("the mcp SDK is not installed: pip install -e '.[mcp]'", allow_module_level=True)
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from hermes_delegate.loopback import start_providers

pytestmark = [pytest.mark.litellm, pytest.mark.slow]  # each test starts the server (litellm's import)

ROOT = Path(__file__).resolve().parents[1]
#: The `hermes-delegate` entry point of the environment running the tests (CI's second pass: .venv-newest's),
#: so the server runs on the same litellm and mcp as the test does.
BIN = str(Path(sysconfig.get_path("scripts")) / "hermes-delegate")


@pytest.fixture(autouse=True)
def _entry_point() -> None:
    """The server is started from BIN: missing (the package not installed in this environment), the test
    is skipped locally and FAILS under CI=true, naming what to install."""
    require_binary(BIN, "pip install -e '.[test-core]' into the environment running pytest")
ALPHA_KEY = "sk-canary-alpha-0123456789ABCDEF"
BETA_KEY = "sk-canary-beta-0123456789ABCDEF"
GAMMA_KEY = "sk-canary-gamma-0123456789ABCDEF"  # gamma lives on alpha's provider with a key of its own
ECHO_KEY = "CANARYmcpq81zz0pl7w"  # shapeless: no pattern can redact it, only knowing the value can
CANARIES = (ALPHA_KEY, BETA_KEY, GAMMA_KEY, ECHO_KEY)
ERROR_KEYS = {"error", "hint", "suggestions", "type"}


@pytest.fixture
def pair():
    with start_providers([{"name": "alpha"}, {"name": "beta"}]) as ps:
        yield ps


def dep(group: str, model: str, base_url: str, env: str) -> dict[str, Any]:
    return {"model_name": group, "litellm_params": {"model": model, "api_base": base_url,
                                                      "api_key": f"os.environ/{env}"}}


def write_config(tmp_path: Path, alpha, beta, extra: tuple[dict[str, Any], ...] = (), **delegation: Any) -> Path:
    data = {"delegation": {"aliases": {"small": "alpha", "large": "beta"}, "task_timeout_s": 30, **delegation},
            "router": {"model_list": [dep("alpha", "openai/alpha-model", alpha.base_url, "ALPHA_API_KEY"),
                                      dep("beta", "openai/beta-model", beta.base_url, "BETA_API_KEY"),
                                      dep("gamma", "openai/gamma-model", alpha.base_url, "GAMMA_API_KEY"),
                                      *extra],
                       "router_settings": {"num_retries": 0}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def server_env(log: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"], "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "ALPHA_API_KEY": ALPHA_KEY, "BETA_API_KEY": BETA_KEY, "GAMMA_API_KEY": GAMMA_KEY,
            "ECHO_API_KEY": ECHO_KEY, "MCP_LOG": str(log), **extra}


def fingerprint(key: str) -> str:
    """What the loopback records of a credential (RequestRecord.auth_sha), computed here independently."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def stdio_params(cfg: Path, log: Path, *extra_args: str) -> StdioServerParameters:
    # the server's stderr (its log) goes to a file, so the test can check it for secrets
    return StdioServerParameters(command="/bin/sh", args=["-c", 'exec "$0" "$@" 2>>"$MCP_LOG"', BIN, "mcp",
                                                          "--config", str(cfg), "-v", *extra_args],
                                 env=server_env(log))


THREE = {"tasks": [{"goal": "summarise file A", "model": "small"},
                   {"goal": "review file B", "model": "large"},
                   {"goal": "list the TODOs in C", "model": "gamma"}]}
THREE_GROUPS = {"summarise file A": "alpha", "review file B": "beta", "list the TODOs in C": "gamma"}
#: a progress message: "k/n model status: goal"
PROGRESS = re.compile(r"^(\d+)/(\d+) (\S+) (\w+): (.*)$", re.S)


class Recorder:
    """Every message the client sees, for the no-secrets check."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.progress: list[tuple[float, float | None, str | None]] = []

    async def message(self, msg: Any) -> None:
        self.seen.append(repr(msg))

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))
        self.seen.append(f"{progress} {total} {message}")

    def dump(self, obj: Any) -> None:
        self.seen.append(obj.model_dump_json() if hasattr(obj, "model_dump_json") else repr(obj))


def assert_no_canary(rec: Recorder, log: Path) -> None:
    text = "\n".join(rec.seen) + "\n" + (log.read_text() if log.exists() else "")
    for key in CANARIES:
        assert key not in text
    # the shapeless one, not even in part (8+ characters of it)
    assert not [ECHO_KEY[i:i + 8] for i in range(len(ECHO_KEY) - 7) if ECHO_KEY[i:i + 8] in text]


async def three_tasks(client: Client, rec: Recorder, alpha, beta) -> None:
    listed = await client.list_tools()
    rec.dump(listed)
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"delegate_task", "list_models"}
    assert "tasks" in tools["delegate_task"].input_schema["properties"]
    out = await client.call_tool("delegate_task", THREE, progress_callback=rec.on_progress)
    rec.dump(out)
    assert not out.is_error
    jsonschema.validate(out.structured_content, tools["delegate_task"].output_schema)
    results = out.structured_content["results"]
    assert [r["status"] for r in results] == ["completed"] * 3
    assert [r["model"] for r in results] == ["alpha", "beta", "gamma"]
    # the compact result a model reads: index, status, model, summary; no deployments, ids or nulls
    assert [set(r) for r in results] == [{"index", "status", "model", "summary"}] * 3
    assert "null" not in json.dumps(out.structured_content)
    # one text block per task (model, status and summary), then the batch's cost (the loopback is unpriced)
    assert out.structured_content["cost_unknown_tasks"] == 3
    assert len(out.content) == 4 and out.content[3].text == "batch: 3 cost(s) unknown"
    for block, r in zip(out.content, results, strict=False):  # the 4th block is the batch line
        assert r["model"] in block.text and "completed" in block.text and r["summary"] in block.text
    # each provider got its own model ids, each request the key of its own deployment (by fingerprint:
    # the loopback keeps no key values)
    assert len({fingerprint(k) for k in (ALPHA_KEY, BETA_KEY, GAMMA_KEY)}) == 3
    assert sorted((r.model, r.auth_sha) for r in alpha.requests) == [("alpha-model", fingerprint(ALPHA_KEY)),
                                                                       ("gamma-model", fingerprint(GAMMA_KEY))]
    assert [(r.model, r.auth_sha) for r in beta.requests] == [("beta-model", fingerprint(BETA_KEY))]
    assert all(r.has_auth and r.status == 200 for r in alpha.requests + beta.requests)
    # one progress notification per finished task: "k/3 model status: goal", together every task
    assert len(rec.progress) == 3
    seen = []
    for progress, total, message in rec.progress:
        m = PROGRESS.match(message or "")
        assert m, message
        assert (int(m[1]), int(m[2])) == (progress, total) and total == 3
        seen.append((m[5], m[3], m[4]))  # goal, model, status
    assert sorted(p[0] for p in rec.progress) == [1, 2, 3]
    assert sorted(seen) == sorted((goal, group, "completed") for goal, group in THREE_GROUPS.items())
    # the full report on request: the deployment that served each task
    full = await client.call_tool("delegate_task", {**THREE, "detail": "full"})
    rec.dump(full)
    jsonschema.validate(full.structured_content, tools["delegate_task"].output_schema)
    assert [r["deployment"]["model"] for r in full.structured_content["results"]] == [
        "openai/alpha-model", "openai/beta-model", "openai/gamma-model"]


def test_stdio_three_tasks_on_three_models(pair, tmp_path):
    alpha, beta = pair
    cfg, log, rec = write_config(tmp_path, alpha, beta), tmp_path / "server.log", Recorder()

    async def main() -> None:
        async with Client(stdio_params(cfg, log), message_handler=rec.message) as client:
            await three_tasks(client, rec, alpha, beta)

    anyio.run(main)
    assert_no_canary(rec, log)


def test_stdio_bad_call_is_a_tool_error_and_nothing_is_spent(pair, tmp_path):
    alpha, beta = pair
    cfg, log, rec = write_config(tmp_path, alpha, beta), tmp_path / "server.log", Recorder()

    async def main() -> None:
        async with Client(stdio_params(cfg, log), message_handler=rec.message) as client:
            out = await client.call_tool("delegate_task", {"tasks": [{"goal": "a", "model": "small"},
                                                                     {"goal": "b", "model": "no-such-model-x"}]})
            rec.dump(out)
            assert out.is_error
            assert ERROR_KEYS <= set(out.structured_content)
            assert [t["index"] for t in out.structured_content["tasks"]] == [1]
            assert "no-such-model-x" in out.content[0].text
            bad = await client.call_tool("delegate_task", {"taks": []})
            assert bad.is_error and bad.structured_content["type"] == "payload"
            assert bad.structured_content["suggestions"] == ["tasks"]
            listing = await client.call_tool("list_models", {})
            rec.dump(listing)
            assert not listing.is_error
            assert "small" in json.dumps(listing.structured_content)

    anyio.run(main)
    assert alpha.requests == [] and beta.requests == []
    assert_no_canary(rec, log)


def test_initialize_answers_while_the_engine_still_warms_up(pair, tmp_path):
    """`initialize` does not wait for the warm-up (litellm's import, then the Router): when the client is
    initialized the server's log does not say "engine warm" yet, and it does say so afterwards. No clock:
    the warm-up takes seconds of CPU where the handshake takes milliseconds, on any machine."""
    alpha, beta = pair
    cfg, log, rec = write_config(tmp_path, alpha, beta), tmp_path / "server.log", Recorder()
    log.write_text("", encoding="utf-8")
    seen: dict[str, Any] = {}

    async def main() -> None:
        started = time.monotonic()
        async with Client(stdio_params(cfg, log), message_handler=rec.message) as client:
            seen["log_at_initialize"] = log.read_text()
            seen["initialize_s"] = time.monotonic() - started
            with anyio.fail_after(120):
                while "engine warm" not in log.read_text():
                    await anyio.sleep(0.05)
            seen["warm_s"] = time.monotonic() - started
            out = await client.call_tool("delegate_task", {"goal": "a", "model": "small"})
            rec.dump(out)
            assert [r["status"] for r in out.structured_content["results"]] == ["completed"]

    anyio.run(main)
    print(f"initialize after {seen['initialize_s']:.2f} s, engine warm after {seen['warm_s']:.2f} s")
    assert "engine warm" not in seen["log_at_initialize"] and "warm-up failed" not in seen["log_at_initialize"]
    assert "warm-up failed" not in log.read_text()
    assert_no_canary(rec, log)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_cancel_interrupts_the_batch(pair, tmp_path, transport):
    alpha, beta = pair
    alpha.latency_s = beta.latency_s = 120  # far longer than the test waits: only a hang-up ends them
    cfg, log, rec = write_config(tmp_path, alpha, beta), tmp_path / "server.log", Recorder()
    outcome: dict[str, Any] = {}
    server = None
    if transport == "stdio":
        def connect():
            return Client(stdio_params(cfg, log), message_handler=rec.message)
    else:
        port = free_port()
        server = start_http(cfg, log, f"127.0.0.1:{port}")
        wait_listening(port, server)

        def connect():
            return Client(f"http://127.0.0.1:{port}/mcp", message_handler=rec.message)

    async def main() -> None:
        async with connect() as client:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    async def call() -> None:
                        outcome["result"] = await client.call_tool("delegate_task", THREE)

                    tg.start_soon(call)
                    while alpha.in_flight + beta.in_flight < 3:  # all three in flight at the providers
                        await anyio.sleep(0.05)
                    tg.cancel_scope.cancel()  # the SDK sends notifications/cancelled for the request
            # the server is still usable: a quick call on the same connection answers
            alpha.latency_s = beta.latency_s = 0
            listing = await client.call_tool("list_models", {})
            assert not listing.is_error
            with anyio.fail_after(5):  # the server closed the provider connections, not a timeout
                while alpha.in_flight + beta.in_flight:
                    await anyio.sleep(0.05)

    try:
        anyio.run(main)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    assert "result" not in outcome
    # each provider saw its client hang up mid-request: the loopback records 499 for a request whose
    # connection closed while it was "thinking" (loopback/chat.py)
    assert sorted((r.model, r.status) for r in alpha.requests + beta.requests) == [
        ("alpha-model", 499), ("beta-model", 499), ("gamma-model", 499)]
    assert "cancelled by the client; tasks: {'interrupted': 3}" in log.read_text()
    assert_no_canary(rec, log)


def test_cancelling_one_call_leaves_a_concurrent_call_running(pair, tmp_path):
    alpha, beta = pair
    alpha.latency_s, beta.latency_s = 120, 2
    cfg, log, rec = write_config(tmp_path, alpha, beta), tmp_path / "server.log", Recorder()
    outcome: dict[str, Any] = {}

    async def main() -> None:
        async with Client(stdio_params(cfg, log), message_handler=rec.message) as client:
            async with anyio.create_task_group() as outer:
                async def other() -> None:
                    outcome["other"] = await client.call_tool("delegate_task", {"goal": "b", "model": "large"})

                outer.start_soon(other)
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        async def slow() -> None:
                            outcome["slow"] = await client.call_tool("delegate_task", {"goal": "a", "model": "small"})

                        tg.start_soon(slow)
                        while alpha.in_flight < 1 or beta.in_flight < 1:
                            await anyio.sleep(0.05)
                        tg.cancel_scope.cancel()

    anyio.run(main)
    assert "slow" not in outcome
    other = outcome["other"].structured_content["results"]
    assert [r["status"] for r in other] == ["completed"]
    assert [r.status for r in beta.requests] == [200]


# -- streamable HTTP --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_http(cfg: Path, log: Path, bind: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([BIN, "mcp", "--config", str(cfg), "--http", bind, "-v"], env=server_env(log, **env),
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("server did not listen")


def test_http_three_tasks_with_a_token(pair, tmp_path):
    alpha, beta = pair
    cfg, log, rec = write_config(tmp_path, alpha, beta), tmp_path / "server.log", Recorder()
    port, token = free_port(), "tok-0123456789abcdef0123456789"
    proc = start_http(cfg, log, f"127.0.0.1:{port}", HERMES_DELEGATE_MCP_TOKEN=token)
    try:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/mcp"
        req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 401

        async def main() -> None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
                async with Client(streamable_http_client(url, http_client=http), message_handler=rec.message) as client:
                    await three_tasks(client, rec, alpha, beta)

        anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(10)
    assert_no_canary(rec, log)


def test_http_non_loopback_bind_refuses_without_a_token(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("delegation: {}\n", encoding="utf-8")
    out = subprocess.run([BIN, "mcp", "--config", str(cfg), "--http", f"0.0.0.0:{free_port()}"],
                         env=server_env(tmp_path / "log"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "HERMES_DELEGATE_MCP_TOKEN" in out.stderr and "bearer token" in out.stderr


# -- output_schema (in process: the same DelegateTools the server wraps) -------------------------
SCHEMA = {"type": "object", "required": ["title", "year"],
          "properties": {"title": {"type": "string"}, "year": {"type": "integer"}}, "additionalProperties": False}
JSON_MODE = {"model_name": "jsonmode", "model_info": {"id": "jsonmode-1"},
             "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-loopback-test-key"}}


def schema_tools(providers):
    from conftest import loopback_config

    from hermes_delegate import DelegateTools, Delegator

    extra = [{**JSON_MODE, "litellm_params": {**JSON_MODE["litellm_params"], "api_base": providers.alpha.base_url}}]
    return DelegateTools(Delegator(loopback_config(providers, model_list_extra=extra)))


def answers(provider, *replies: str) -> None:
    queue = list(replies)
    provider.responder = lambda body, p: queue.pop(0) if len(queue) > 1 else queue[0]


def call(tools, model: str, schema: Any = SCHEMA) -> dict[str, Any]:
    return json.loads(anyio.run(tools.delegate_task, {"tasks": [{"goal": "extract the book", "model": model,
                                                                 "output_schema": schema}]}))


def test_output_schema_valid_answer_is_parsed(providers):
    answers(providers.alpha, '{"title": "Dune", "year": 1965}')
    r = call(schema_tools(providers), "alpha")["results"][0]
    assert r["status"] == "completed" and r["output"] == {"title": "Dune", "year": 1965}
    (req,) = providers.alpha.requests
    assert "response_format" not in req.body  # openai/alpha-model: no JSON mode known, so the prompt asks
    assert '"year"' in req.messages[0]["content"] and "JSON Schema" in req.messages[0]["content"]


def test_output_schema_one_mismatch_then_valid(providers):
    answers(providers.alpha, '{"title": "Dune", "year": "sixty-five"}', '```json\n{"title": "Dune", "year": 1965}\n```')
    r = call(schema_tools(providers), "alpha")["results"][0]
    assert r["status"] == "completed" and r["output"] == {"title": "Dune", "year": 1965}
    first, second = providers.alpha.requests
    assert "year" in second.messages[-1]["content"] and "does not match" in second.messages[-1]["content"]
    assert "sixty-five" in second.messages[-2]["content"]  # its own wrong answer, then the correction


def test_output_schema_always_invalid_is_bad_output(providers):
    answers(providers.alpha, "Sure! The book is Dune.")
    r = call(schema_tools(providers), "alpha")["results"][0]
    assert r["status"] == "failed" and r.get("output") is None
    assert r["error"]["type"] == "bad_output" and "not JSON" in r["error"]["message"]
    assert len(providers.alpha.requests) == 2  # one retry, no more


def test_output_schema_uses_json_mode_where_the_model_has_it(providers):
    answers(providers.alpha, '{"title": "Dune", "year": 1965}')
    r = call(schema_tools(providers), "jsonmode")["results"][0]
    assert r["status"] == "completed" and r["output"]["year"] == 1965
    (req,) = providers.alpha.requests
    assert req.body["response_format"]["type"] == "json_schema"
    assert req.body["response_format"]["json_schema"]["schema"] == SCHEMA


def test_output_schema_that_is_not_a_schema_is_refused_before_anything_runs(providers):
    out = call(schema_tools(providers), "alpha", schema={"type": "no-such-type"})
    assert out["type"] == "payload" and "output_schema" in out["error"] and out["hint"]
    assert providers.alpha.requests == []


# -- output_schema and a key-echoing provider, through the MCP server ---------------------------------
class _EchoKey(BaseHTTPRequestHandler):
    """A provider refusing the key it was sent with a 401 that echoes it, as real providers do."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        auth = self.headers.get("authorization", "")
        key = auth.split(" ", 1)[-1]
        self.server.keys.append(key)  # type: ignore[attr-defined]
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}. You passed Authorization: "
                                                f"{auth}", "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo401():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _EchoKey)
    srv.keys = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def test_stdio_output_schema_and_a_key_echoing_provider(pair, echo401, tmp_path):
    alpha, beta = pair
    alpha.responder = lambda body, p: '{"title": "Dune", "year": 1965}'
    beta.responder = lambda body, p: '{"title": "Dune", "year": "sixty-five"}'  # JSON, but not the schema's
    echo_url = f"http://127.0.0.1:{echo401.server_address[1]}/v1"
    cfg = write_config(tmp_path, alpha, beta, extra=(dep("echo", "openai/echo-model", echo_url, "ECHO_API_KEY"),))
    log, rec = tmp_path / "server.log", Recorder()
    tasks = {"tasks": [{"goal": "extract the book", "model": "small", "output_schema": SCHEMA},
                       {"goal": "extract the film", "model": "large", "output_schema": SCHEMA},
                       {"goal": "ask the echoing provider", "model": "echo"}]}
    mismatch = "at year: 'sixty-five' is not of type 'integer'"

    async def main() -> None:
        async with Client(stdio_params(cfg, log), message_handler=rec.message) as client:
            listed = await client.list_tools()
            rec.dump(listed)
            (tool,) = [t for t in listed.tools if t.name == "delegate_task"]
            out = await client.call_tool("delegate_task", tasks, progress_callback=rec.on_progress)
            rec.dump(out)
            assert not out.is_error
            jsonschema.validate(out.structured_content, tool.output_schema)
            good, bad, echoed = out.structured_content["results"]
            # valid output: parsed, in structuredContent and as the task's text block
            assert good["status"] == "completed" and good["output"] == {"title": "Dune", "year": 1965}
            head, body = out.content[0].text.split("\n", 1)
            assert "completed" in head and json.loads(body) == good["output"]
            # valid JSON of the wrong shape twice (the first answer, then the retry): bad_output
            assert bad["status"] == "failed" and bad.get("output") is None
            assert bad["error"]["type"] == "bad_output"
            assert "after 2 tries" in bad["error"]["message"] and mismatch in bad["error"]["message"]
            assert "bad_output" in out.content[1].text and mismatch in out.content[1].text
            # the key-echoing provider: a failed task whose error says why, without the key
            assert echoed["status"] == "failed" and echoed["error"]["type"] == "auth", echoed["error"]
            assert "failed" in out.content[2].text

    anyio.run(main)
    first, second = beta.requests
    assert "does not match the schema" in second.messages[-1]["content"] and mismatch in second.messages[-1]["content"]
    assert [r.status for r in alpha.requests] == [200]
    # the provider did get (and echo) the key: otherwise the no-leak check proves nothing
    assert echo401.keys == [ECHO_KEY]
    statuses = sorted(PROGRESS.match(p[2] or "")[4] for p in rec.progress)
    assert statuses == ["completed", "failed", "failed"]
    assert_no_canary(rec, log)


# -- through a real LiteLLM proxy's MCP gateway ----------------------------------------------------
PROXY_KEY = "sk-proxy-master-key-mcp-0123456789"


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or [exc]."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaf_errors(sub)]
    return [exc]


@pytest.mark.xdist_group("proxy")  # one worker starts the real proxies (tests/helpers.proxy_command)
def test_through_a_real_litellm_proxy_mcp_gateway(pair, tmp_path):
    from helpers import proxy_command, require_proxy

    binary = require_proxy()
    alpha, beta = pair
    cfg, log, rec = write_config(tmp_path, alpha, beta), tmp_path / "server.log", Recorder()
    # our server over streamable HTTP with a bearer token; the proxy mounts it by URL, the token by reference
    mcp_port, token = free_port(), "tok-proxy-upstream-0123456789abcdef"
    server = start_http(cfg, log, f"127.0.0.1:{mcp_port}", HERMES_DELEGATE_MCP_TOKEN=token)
    proxy_cfg = {"model_list": [], "general_settings": {"master_key": "os.environ/PROXY_MASTER_KEY"},
                 "mcp_servers": {"hermes_delegate": {
                     "url": f"http://127.0.0.1:{mcp_port}/mcp", "transport": "http", "allow_all_keys": True,
                     "auth_type": "bearer_token", "auth_value": "os.environ/HD_MCP_TOKEN"}}}
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(proxy_cfg), encoding="utf-8")
    port = free_port()
    proxy_log = tmp_path / "proxy.log"
    proc = subprocess.Popen(proxy_command(binary, "--config", str(tmp_path / "proxy.yaml"), "--host", "127.0.0.1",
                             "--port", str(port)), env={**server_env(log), "PROXY_MASTER_KEY": PROXY_KEY,
                                                         "HD_MCP_TOKEN": token, "HOME": str(tmp_path)},
                            stdout=proxy_log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proxy_log.read_text()[-3000:]
            time.sleep(0.25)

        statuses: list[int] = []  # every HTTP status the proxy answered the client with

        async def connect(key: str | None):
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            async def seen(response: Any) -> None:
                statuses.append(response.status_code)

            headers = {} if key is None else {"x-litellm-api-key": f"Bearer {key}"}
            http = httpx2.AsyncClient(headers=headers, timeout=120, event_hooks={"response": [seen]})
            return http, Client(streamable_http_client(f"{url}/mcp/", http_client=http), message_handler=rec.message)

        async def main() -> None:
            http, client = await connect(PROXY_KEY)
            async with http, client:
                names = [t.name for t in (await client.list_tools()).tools]
                (name,) = [n for n in names if n.endswith("delegate_task")]
                out = await client.call_tool(name, {**THREE, "detail": "full"})
                rec.dump(out)
                assert not out.is_error
                results = out.structured_content["results"]
                assert [r["status"] for r in results] == ["completed"] * 3
                assert [r["deployment"]["model"] for r in results] == ["openai/alpha-model", "openai/beta-model",
                                                                       "openai/gamma-model"]
            # a wrong key, then no key at all: refused at initialize, never a tool list
            for key in ("sk-not-the-proxy-key", None):
                statuses.clear()
                http, client = await connect(key)
                async with http:
                    with pytest.raises((MCPError, BaseExceptionGroup)) as info:
                        async with client:
                            rec.dump(await client.list_tools())
                errors = leaf_errors(info.value)
                assert errors and all(isinstance(e, MCPError) for e in errors), errors
                assert statuses and all(s >= 400 for s in statuses), statuses  # not one request got through
                refused[key] = statuses[-1]  # the proxy's answer to the initialize it checked the key of

        refused: dict[str | None, int] = {}

        anyio.run(main)
        text = proxy_log.read_text(errors="replace")
        # the wrong key: refused by the proxy's key check with a 4xx (without a database a key that is not
        # the master key is a 400 "No connected db"; with one, a 401)
        assert 400 <= refused["sk-not-the-proxy-key"] < 500, refused
        assert "user_api_key_auth(): Exception occured - No connected db" in text
        # no key: refused by the same check ("Malformed API Key"); a 4xx, or, with litellm 1.106.2 and no
        # prisma installed, a 500 from the proxy's auth error handler failing to import prisma
        assert "user_api_key_auth(): Exception occured - Malformed API Key" in text
        assert 400 <= refused[None] < 500 or (refused[None] == 500 and "No module named 'prisma'" in text), refused
    finally:
        for p in (proc, server):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert sorted(r.model for r in alpha.requests) == ["alpha-model", "gamma-model"]
    assert [r.model for r in beta.requests] == ["beta-model"]
    assert_no_canary(rec, log)
