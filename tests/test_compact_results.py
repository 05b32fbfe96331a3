"""What a parent model reads (issue 23 items 1 and 3): the compact result, and the full report on request.

Per task: index, status, model, answer (or output) and, on failure, the error's type, message and hint;
per batch: the cost and what the parent must act on. No ids, no nulls, no deployment blocks. The full
report stays where people and programs read it: `detail: "full"`, `hermes-delegate run --json`,
`BatchResult`. Over MCP both the text content and structuredContent are compact (Claude Code hands its
model the structuredContent when a tool declares an outputSchema), with the real SDK client on both
protocol generations. `hermes-delegate mcp` without the extra says what to install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
import yaml

from conftest import loopback_config, loopback_dict
from hermes_delegate import DelegateTools, Delegator

ROOT = Path(__file__).resolve().parents[1]
ID_LIKE = ("deployment", "deployment_id", "attempt_log", "api_host", "tokens", "duration_s", "model_source",
           "resolved_via", "model_requested", "goal", "rate_limited", "total_duration_s")


def walk_nulls(obj: Any) -> list[str]:
    if obj is None:
        return ["null"]
    if isinstance(obj, dict):
        return [k for k, v in obj.items() if v is None] + [x for v in obj.values() for x in walk_nulls(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in walk_nulls(v)]
    return []


def run(tools: DelegateTools, args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(tools.delegate_task_sync(args))


def test_compact_result_per_task_and_per_batch(providers):
    providers.beta.script(["500"])  # the second task fails (num_retries 0)
    tools = DelegateTools(Delegator(loopback_config(providers, budget_usd=0.5, allow_unpriced=True)))
    out = run(tools, {"tasks": [{"goal": "one", "model": "small"}, {"goal": "two", "model": "large"},
                                {"goal": "three", "model": "priced"}]})
    ok, failed, priced = out["results"]
    assert ok == {"index": 0, "status": "completed", "model": "alpha", "summary": ok["summary"]} and ok["summary"]
    assert failed["index"] == 1 and failed["status"] == "failed" and failed["model"] == "beta"
    assert set(failed) == {"index", "status", "model", "error"}
    assert failed["error"]["type"] == "server" and failed["error"]["message"] and failed["error"]["hint"]
    assert priced["status"] == "completed" and priced["model"] == "priced"
    # per batch: the cost of what is priced, the costs that are not, the budget left, the counts (a failure)
    assert out["cost_usd"] > 0 and out["cost_unknown_tasks"] == 1
    assert 0 < out["budget_left_usd"] < 0.5 and out["counts"] == {"completed": 2, "failed": 1}
    text = json.dumps(out)
    assert not walk_nulls(out) and not any(f'"{k}"' in text for k in ID_LIKE), text
    # the full report on request, unchanged: what BatchResult.to_dict() gives
    full = run(tools, {"goal": "one", "model": "small", "detail": "full"})
    r = full["results"][0]
    assert {"deployment", "attempt_log", "tokens", "duration_s", "cost_usd", "model_source"} <= set(r)
    assert r["deployment"]["api_host"] == providers.alpha.base_url.split("//")[1].split("/")[0]


def test_all_completed_has_no_counts_and_output_replaces_summary(providers):
    providers.alpha.responder = lambda body, p: '{"n": 3}'
    tools = DelegateTools(Delegator(loopback_config(providers)))
    out = run(tools, {"goal": "count", "model": "small",
                      "output_schema": {"type": "object", "properties": {"n": {"type": "integer"}}}})
    assert out["results"] == [{"index": 0, "status": "completed", "model": "alpha", "output": {"n": 3}}]
    assert "counts" not in out and "budget_left_usd" not in out and out["cost_unknown_tasks"] == 1


def test_skipped_for_budget_says_what_to_do(providers):
    tools = DelegateTools(Delegator(loopback_config(providers, budget_usd=1.0, max_tokens=100,
                                                    learn_limits=False, max_concurrency=1)))
    out = run(tools, {"model": "priced", "budget_usd": 0.0003, "tasks": [{"goal": f"t{i}"} for i in range(4)]})
    skipped = [r for r in out["results"] if r["status"] == "skipped_budget"]
    assert skipped, out
    assert all(r["error"]["type"] == "budget" and "budget_usd" in r["error"]["hint"] for r in skipped)
    assert out["counts"]["skipped_budget"] == len(skipped) and "budget_left_usd" in out


def test_bad_detail_is_a_payload_error(providers):
    out = run(DelegateTools(Delegator(loopback_config(providers))), {"goal": "x", "detail": "verbose"})
    assert out["type"] == "payload" and "detail must be one of compact, full" in out["error"]
    assert providers.alpha.requests == [] and providers.beta.requests == []


def test_hermes_shape_keeps_hermes_keys(providers):
    """The hermes plugin's DelegateTools: `task_index` (hermes's summary budget and its async completion
    read it), and the compact keys otherwise."""
    tools = DelegateTools(Delegator(loopback_config(providers)), index_key="task_index", files="hint")
    out = run(tools, {"tasks": [{"goal": "a", "model": "small"}, {"goal": "b", "model": "large"}]})
    assert [set(r) for r in out["results"]] == [{"task_index", "status", "model", "summary"}] * 2
    assert [r["task_index"] for r in out["results"]] == [0, 1]


# -- MCP: text content and structuredContent, both protocol generations ----------------------------------
mcp = pytest.importorskip("mcp")
from mcp import Client
from mcp.client.stdio import StdioServerParameters


def server(tmp_path: Path, providers) -> StdioServerParameters:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(loopback_dict(providers)), encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"], "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return StdioServerParameters(command=sys.executable, args=["-m", "hermes_delegate.hosts.cli", "mcp",
                                                               "--config", str(cfg)], env=env, cwd=str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("mode, version", [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")])
def test_mcp_compact_text_and_structured_content(providers, tmp_path, mode, version):
    (tmp_path / "notes.md").write_text("MARKER-NOTES\n", encoding="utf-8")
    providers.beta.script(["500"])
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with Client(server(tmp_path, providers), mode=mode) as client:
            seen["version"] = client.protocol_version
            (tool,) = [t for t in (await client.list_tools()).tools if t.name == "delegate_task"]
            seen["schema"] = tool.output_schema
            seen["compact"] = await client.call_tool("delegate_task", {
                "tasks": [{"goal": "read the notes", "model": "small", "files": ["notes.md"]},
                          {"goal": "fails", "model": "large"}]})
            seen["full"] = await client.call_tool("delegate_task", {"goal": "again", "model": "small",
                                                                    "detail": "full"})

    anyio.run(main)
    assert seen["version"] == version
    schema = seen["schema"]
    item = schema["properties"]["results"]["items"]["properties"]
    assert set(item) == {"index", "status", "model", "summary", "output", "error"}  # the compact shape
    out = seen["compact"]
    data = out.structured_content
    jsonschema.validate(data, schema)
    assert not out.is_error and not walk_nulls(data)
    ok, failed = data["results"]
    assert set(ok) == {"index", "status", "model", "summary"} and ok["status"] == "completed"
    assert failed["error"]["type"] == "server" and failed["error"]["hint"]
    # the text a client without structuredContent shows: one block per task, then the batch line
    texts = [c.text for c in out.content]
    assert texts[0].startswith("[1/2] alpha — completed\n") and ok["summary"] in texts[0]
    assert texts[1].startswith("[2/2] beta — failed\nserver: ") and f"hint: {failed['error']['hint']}" in texts[1]
    assert texts[2] == "batch: 1 cost(s) unknown · 1 completed, 1 failed"  # the failed one cost nothing
    assert not any(k in texts[0] + texts[1] for k in ("deployment", "api_host", "127.0.0.1"))
    # files were read on the server side, from its working directory
    assert "MARKER-NOTES" in json.dumps(providers.alpha.requests[0].messages)
    full = seen["full"].structured_content
    jsonschema.validate(full, schema)
    assert full["results"][0]["deployment"]["model"] == "openai/alpha-model" and "attempt_log" in full["results"][0]


def test_mcp_payload_tokens_shrink(providers):
    """The compact structuredContent of a 3-task batch is a fraction of the full report's size."""
    tools = DelegateTools(Delegator(loopback_config(providers)))
    tasks = {"tasks": [{"goal": f"g{i}", "model": "small"} for i in range(3)]}
    compact = tools.delegate_task_sync(tasks)
    full = tools.delegate_task_sync({**tasks, "detail": "full"})
    assert len(compact) * 3 < len(full), (len(compact), len(full))


# -- the CLI ---------------------------------------------------------------------------------------------
def test_cli_json_keeps_the_full_report(providers, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(loopback_dict(providers)), encoding="utf-8")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump([{"goal": "a", "model": "small"}]), encoding="utf-8")
    from hermes_delegate.hosts.cli import main
    import io

    buf = io.StringIO()
    assert main(["run", str(tasks), "--config", str(cfg), "--json"], out=buf) == 0
    r = json.loads(buf.getvalue())["results"][0]
    assert {"deployment", "attempt_log", "tokens", "duration_s", "model_source"} <= set(r)


BLOCK_MCP = ("import sys\n"
             "for name in ('mcp', 'mcp_types'):\n"
             "    sys.modules[name] = None  # as if the [mcp] extra were not installed\n"
             "from hermes_delegate.hosts.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")


def test_mcp_without_the_extra_says_what_to_install(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("delegation: {}\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", BLOCK_MCP, "mcp", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out
    assert "pip install 'hermes-delegate[mcp]'" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_the_legacy_second_tool_switch_is_refused(tmp_path):
    """`delegate_tasks` (and its `delegate_tasks_tool` switch) is gone: a hermes block that still sets it
    is refused with the key named, not silently ignored."""
    from hermes_delegate import ConfigError
    from hermes_delegate.sources.hermes_home import config_for_home

    (tmp_path / "config.yaml").write_text("hermes_delegate:\n  delegate_tasks_tool: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="hermes_delegate.delegate_tasks_tool"):
        config_for_home(str(tmp_path))


# -- real hosts: Claude Code and the MCP Inspector CLI (issue 23 item 4) ---------------------------------
#: Installed by .ci/run into .hosts/ (npm, pinned); a missing host fails under CI=true, else skips.
HOSTS = ROOT / ".hosts" / "node_modules" / ".bin"
HOSTS_INSTALL = ("npm install --prefix .hosts --no-audit --no-fund --save-exact @anthropic-ai/claude-code@2.1.328 "
                 "@modelcontextprotocol/inspector@2.12.0")
CC_TOOL = "mcp__hermes-delegate__delegate_task"
CC_CALL = {"tasks": [{"goal": "summarise file A", "model": "small"}, {"goal": "review file B", "model": "large"},
                     {"goal": "list the TODOs in C", "model": "small"}]}


class ScriptedParent:
    """An Anthropic Messages endpoint (streamed, as Claude Code asks) playing the parent model: to the
    request that offers the delegate_task tool it answers with a `tool_use` of it (CC_CALL); to the request
    carrying the tool_result it answers `FINAL <the result>`; anything else (Claude Code's side requests)
    gets "ok". Every request body is kept."""

    def __init__(self) -> None:
        import threading

        self.bodies: list[dict[str, Any]] = []
        self.tool_results: list[Any] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "ScriptedParent":
        self._thread.start()
        assert self._ready.wait(30), "scripted parent did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _reply(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        last = (body.get("messages") or [{}])[-1].get("content")
        results = [c for c in last if isinstance(c, dict) and c.get("type") == "tool_result"] \
            if isinstance(last, list) else []
        if results:
            content = results[0].get("content")
            self.tool_results.append(content)
            text = content if isinstance(content, str) else json.dumps(content)
            return [{"type": "text", "text": "FINAL " + text}], "end_turn"
        if CC_TOOL in [t.get("name") for t in body.get("tools") or []]:
            return [{"type": "tool_use", "id": "toolu_hd1", "name": CC_TOOL, "input": CC_CALL}], "tool_use"
        return [{"type": "text", "text": "ok"}], "end_turn"

    @staticmethod
    def _events(model: Any, blocks: list[dict[str, Any]], stop: str) -> list[dict[str, Any]]:
        ev: list[dict[str, Any]] = [{"type": "message_start", "message": {
            "id": "msg_hd", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}}]
        for i, b in enumerate(blocks):
            if b["type"] == "text":
                ev += [{"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                       {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": b["text"]}}]
            else:
                ev += [{"type": "content_block_start", "index": i,
                        "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}}]
            ev.append({"type": "content_block_stop", "index": i})
        return ev + [{"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                      "usage": {"output_tokens": 5}}, {"type": "message_stop"}]

    def _serve(self) -> None:
        import asyncio

        from aiohttp import web

        async def messages(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            self.bodies.append(body)
            blocks, stop = self._reply(body)
            if not body.get("stream"):
                return web.json_response({"id": "msg_hd", "type": "message", "role": "assistant",
                                          "model": body.get("model"), "content": blocks, "stop_reason": stop,
                                          "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}})
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in self._events(
                body.get("model"), blocks, stop))
            await resp.write(text.encode())
            await resp.write_eof()
            return resp

        async def other(request: web.Request) -> web.Response:
            if request.path.endswith("/count_tokens"):
                return web.json_response({"input_tokens": 100})
            return web.json_response({})

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/v1/messages", messages)
            app.router.add_route("*", "/{tail:.*}", other)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()


def documented_block(host: str) -> dict[str, Any]:
    """The ready-to-paste JSON config docs/mcp.md gives for `host` (e.g. "Claude Code")."""
    import re

    text = (ROOT / "docs" / "mcp.md").read_text(encoding="utf-8")
    m = re.search(rf"\*\*{re.escape(host)}\*\*.*?```json\n(.*?)\n```", text, re.S)
    assert m, f"docs/mcp.md has no JSON block for {host}"
    return json.loads(m[1])


def host_env(tmp_path: Path, *, dead_proxy: bool = True, **extra: str) -> dict[str, str]:
    """Loopback only: with dead_proxy, any other connection goes to a dead proxy on 127.0.0.1:9 (the
    Inspector refuses proxy variables; it is only ever given a loopback URL)."""
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra}
    if dead_proxy:
        env.update({k: "http://127.0.0.1:9" for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")})
    return env


@pytest.mark.slow
def test_claude_code_hands_its_model_the_compact_result(providers, tmp_path):
    """A real Claude Code (print mode) with the documented `.mcp.json` block: its model (the scripted
    parent) calls delegate_task with three tasks on two providers, and what Claude Code hands back as the
    tool result is the compact structuredContent."""
    from helpers import require_binary

    claude = require_binary(HOSTS / "claude", HOSTS_INSTALL)
    providers.alpha.responder = providers.beta.responder = lambda body, p: f"answer from {p.name}"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(loopback_dict(providers)), encoding="utf-8")
    block = documented_block("Claude Code")
    server = block["mcpServers"]["hermes-delegate"]
    server["args"] = [*server["args"], "--config", str(cfg)]
    (tmp_path / ".mcp.json").write_text(json.dumps(block), encoding="utf-8")
    (tmp_path / "home").mkdir()
    with ScriptedParent() as parent:
        env = host_env(tmp_path, ANTHROPIC_BASE_URL=parent.base_url, ANTHROPIC_API_KEY="sk-ant-loopback-test",
                       MCP_CONNECTION_NONBLOCKING="false", ENABLE_TOOL_SEARCH="false", DISABLE_AUTOUPDATER="1",
                       CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_TELEMETRY="1")
        out = subprocess.run([claude, "-p", "Delegate the three reviews.", "--mcp-config", ".mcp.json",
                              "--strict-mcp-config", "--allowedTools", CC_TOOL, "--output-format", "json"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                             stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    final = json.loads(out.stdout)
    assert final["is_error"] is False and final["result"].startswith("FINAL "), final
    # what the parent model read: exactly the compact result (structuredContent, as JSON text)
    (content,) = parent.tool_results
    text = content if isinstance(content, str) else "".join(c.get("text", "") for c in content)
    data = json.loads(text)
    assert [set(r) for r in data["results"]] == [{"index", "status", "model", "summary"}] * 3
    assert [(r["model"], r["summary"]) for r in data["results"]] == [
        ("alpha", "answer from alpha"), ("beta", "answer from beta"), ("alpha", "answer from alpha")]
    assert not walk_nulls(data) and "deployment" not in text and "attempt" not in text
    assert sorted(r.model for r in providers.alpha.requests) == ["alpha-model", "alpha-model"]
    assert [r.model for r in providers.beta.requests] == ["beta-model"]


@pytest.mark.slow
def test_mcp_inspector_cli_over_http_with_a_token(providers, tmp_path):
    """The MCP Inspector's CLI calls delegate_task over streamable HTTP with the bearer token."""
    from helpers import free_port, require_binary

    inspector = require_binary(HOSTS / "mcp-inspector", HOSTS_INSTALL)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(loopback_dict(providers)), encoding="utf-8")
    port, token = free_port(), "tok-inspector-0123456789abcdef"
    env = host_env(tmp_path, dead_proxy=False, HERMES_DELEGATE_MCP_TOKEN=token)
    (tmp_path / "home").mkdir()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "hermes_delegate.hosts.cli", "mcp", "--config", str(cfg),
                               "--http", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        import socket
        import time

        deadline = time.monotonic() + 60
        while True:  # wait for the port, not a fixed time
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "server did not listen"
            time.sleep(0.1)
        base = [inspector, "--cli", f"http://127.0.0.1:{port}/mcp", "--transport", "http",
                "--header", f"Authorization: Bearer {token}"]
        call = subprocess.run([*base, "--method", "tools/call", "--tool-name", "delegate_task",
                               "--tool-arg", "goal=say hi", "model=large"],
                              env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert call.returncode == 0, call.stdout[-2000:] + call.stderr[-2000:]
        result = json.loads(call.stdout)
        data = result["structuredContent"]
        assert data["results"] == [{"index": 0, "status": "completed", "model": "beta",
                                    "summary": data["results"][0]["summary"]}]
        assert result["content"][0]["text"].startswith("[1/1] beta — completed\n")
        # without the token: refused, nothing sent
        before = len(providers.beta.requests)
        bad = subprocess.run([inspector, "--cli", f"http://127.0.0.1:{port}/mcp", "--transport", "http",
                              "--method", "tools/list"], env=env, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        assert bad.returncode != 0 and len(providers.beta.requests) == before == 1
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.mark.slow
def test_hermes_parent_reads_the_compact_result(providers, tmp_path):
    """A real hermes-agent 0.19.0 parent calls its (extended) delegate_task with per-task models in a
    stateless session (the routed batch runs synchronously): the tool result it reads is compact, in
    hermes's own keys (`task_index`, `summary`), with the failure's error and hint."""
    pytest.importorskip("run_agent", reason="hermes-agent is not installed (pip install -e '.[test]')")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hermes_delegate.loopback import LoopbackProvider
    from hermes_helpers import make_home, parent_responder, run_scenario, tool_results

    providers.alpha.responder = lambda body, p: "answer from alpha"
    providers.beta.set_fault("500")
    d = loopback_dict(providers)
    home = make_home(tmp_path, {**d["delegation"], "router": d["router"]}, builtin=True)
    call = {"tasks": [{"goal": "fine", "model": "small"}, {"goal": "broken", "model": "large"}]}
    with LoopbackProvider("parent", responder=parent_responder({"go": call})) as parent:
        out = run_scenario(home, parent_url=parent.base_url, conversations=[
            {"user": "run:go", "disabled_toolsets": [], "stateless": True}])
    res = tool_results(out["conversations"][0])[0]
    ok, bad = res["results"]
    assert ok == {"task_index": 0, "status": "completed", "model": "alpha", "summary": "answer from alpha"}
    assert set(bad) == {"task_index", "status", "model", "error"} and bad["status"] == "failed"
    assert bad["error"]["type"] == "server" and bad["error"]["hint"]
    assert res["counts"] == {"completed": 1, "failed": 1} and "SYNCHRONOUSLY" in res["note"]
    assert not walk_nulls(res) and "deployment" not in json.dumps(res)
