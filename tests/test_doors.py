"""Issue 25, every door typed: remote mode keeps every task on the proxy (4), MCP over HTTP checks Host and
Origin on every bind (5), redaction covers token-only userinfo and credential-named URL parameters (6),
every bad config value is a ConfigError naming the key from every command (7), stdout carries only the
result or the protocol at every verbosity (8), and the hermes plugin keeps one base Delegator per config (9).

Each case is tested at the door where it was found: the agent tool (DelegateTools), MCP over HTTP with
the SDK's client, the CLI as a subprocess, and a real LiteLLM proxy (litellm[proxy] in .proxyvenv) for
remote mode, started once for this module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import anyio
import pytest
import yaml

from conftest import LOOPBACK_KEY, LoopbackPair, loopback_config, loopback_dict
from hermes_delegate import DelegateTools, Delegator, config_from_dict
from helpers import PROXY_KEY, free_port, in_ci, proxy_command, require_proxy, stop_process

#: The `hermes-delegate` entry point of the environment running the tests (CI's second pass: .venv-newest's,
#: on the newest litellm), not .venv's.
BIN = str(Path(sysconfig.get_path("scripts")) / "hermes-delegate")
UPSTREAM_KEY = "sk-upstream-doors-0123456789"
CANARY = "sk-ant-canary-doors-0123456789"  # a key this machine holds, that remote mode must never use


def cli(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd / "xdg"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return subprocess.run([BIN, *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=timeout)


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# -- 4. remote mode: every task goes through the proxy --------------------------------------------
@pytest.fixture(scope="module")
def proxy(providers: LoopbackPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real LiteLLM proxy: group `fast` on alpha, and a wildcard route `loop/*` onto beta."""
    binary = require_proxy()  # skip locally, FAIL under CI=true
    work = tmp_path_factory.mktemp("doors-proxy")
    write(work / "config.yaml", {
        "model_list": [
            {"model_name": "fast", "litellm_params": {"model": "openai/alpha-model", "api_base": providers.alpha.base_url,
                                                      "api_key": "os.environ/UPSTREAM_KEY"}},
            {"model_name": "loop/*", "litellm_params": {"model": "openai/*", "api_base": providers.beta.base_url,
                                                        "api_key": "os.environ/UPSTREAM_KEY"}}],
        "general_settings": {"master_key": "os.environ/PROXY_MASTER_KEY"}})
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "PROXY_MASTER_KEY": PROXY_KEY, "UPSTREAM_KEY": UPSTREAM_KEY}
    port, log_path = free_port(), work / "proxy.log"
    proc = subprocess.Popen(proxy_command(binary, "--config", str(work / "config.yaml"), "--host", "127.0.0.1",
                                          "--port", str(port)),
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=work)
    try:
        yield answering(f"http://127.0.0.1:{port}", proc, log_path)
    finally:
        stop_process(proc)


def answering(url: str, proc: subprocess.Popen[bytes], log_path: Path, within_s: float = 90) -> str:
    """`url` once the proxy answers its liveness probe (fails with its log if it exits or never does)."""
    deadline = time.monotonic() + within_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1):
                return url
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"the LiteLLM proxy did not start: {log_path.read_text(errors='replace')[-3000:]}")


def remote_tools(url: str, monkeypatch: pytest.MonkeyPatch, **remote: Any) -> DelegateTools:
    monkeypatch.setenv("LITELLM_PROXY_API_KEY", PROXY_KEY)
    cfg = config_from_dict({"delegation": {"aliases": {"small": "fast", "quick": "fast"}, "task_timeout_s": 10},
                            "remote": {"base_url": url, **remote}}, source="(doors remote)")
    return DelegateTools(Delegator(cfg))


def delegate(tools: DelegateTools, **models: str) -> dict[str, Any]:
    """One delegate_task call: a task per goal=model."""
    return json.loads(tools.delegate_task_sync({"tasks": [{"goal": g, "model": m} for g, m in models.items()],
                                                "detail": "full"}))


@pytest.mark.slow
@pytest.mark.xdist_group("proxy")  # one worker starts the real proxies (tests/helpers.proxy_command)
def test_remote_mode_refuses_every_name_that_is_not_a_proxy_group(proxy: str, providers: LoopbackPair,
                                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    tools = remote_tools(proxy, monkeypatch)
    out = delegate(tools, family="haiku", litellm_id="openai/gpt-4o", typo="fsat", group="fast")
    assert out.get("type") == "invalid_tasks", out  # refused as a whole, before anything is sent
    problems = {t["model"]: t for t in out["tasks"]}
    assert set(problems) == {"haiku", "openai/gpt-4o", "fsat"}
    for t in problems.values():
        assert "not a model group of the LiteLLM proxy" in t["problem"] and "nothing was sent" in t["problem"]
        assert "fast" in t["problem"] and "loop/*" in t["problem"]  # the proxy's groups, its wildcard route too
        assert "remote.allow_direct: true" in t["problem"]
    assert "anthropic/" in problems["haiku"]["problem"]  # says where it would have gone
    assert problems["fsat"]["suggestions"] == ["fast"]  # "Did you mean"
    assert [r for p in providers for r in p.requests] == []
    assert CANARY not in json.dumps(out) and PROXY_KEY not in json.dumps(out)
    # list_models offers what runs: the proxy's groups, no families that would go around it
    listing = json.loads(tools.list_models_sync())
    assert "fast" in listing["groups"] and listing["families"] == {}
    checked = json.loads(tools.list_models_sync({"model": "sonnet"}))
    assert checked["type"] == "unknown_model" and "remote.allow_direct" in checked["hint"]


@pytest.mark.slow
@pytest.mark.xdist_group("proxy")  # one worker starts the real proxies (tests/helpers.proxy_command)
def test_remote_mode_reaches_groups_aliases_and_the_proxys_wildcard_routes(proxy: str, providers: LoopbackPair,
                                                                            monkeypatch: pytest.MonkeyPatch):
    out = delegate(remote_tools(proxy, monkeypatch), tier="small", alias="quick", group="fast",
                   wildcard_route="loop/beta-model")
    assert "results" in out, out
    assert [r["status"] for r in out["results"]] == ["completed"] * 4, out
    assert [r["resolved_via"] for r in out["results"]] == ["tier", "alias", "group", "wildcard"]
    assert {r["deployment"]["provider"] for r in out["results"]} == {"litellm_proxy"}
    # the proxy sent them on, with its own upstream key
    assert [r.model for r in providers.alpha.requests] == ["alpha-model"] * 3
    assert [r.model for r in providers.beta.requests] == ["beta-model"]
    assert all(r.has_auth for p in providers for r in p.requests)


@pytest.mark.slow
@pytest.mark.xdist_group("proxy")  # one worker starts the real proxies (tests/helpers.proxy_command)
def test_remote_allow_direct_is_explicit(proxy: str, monkeypatch: pytest.MonkeyPatch):
    tools = remote_tools(proxy, monkeypatch, allow_direct=True)
    checked = json.loads(tools.list_models_sync({"model": "haiku"}))
    assert checked["resolved_via"] == "family" and checked["resolves_to"].startswith("anthropic/"), checked
    assert json.loads(tools.list_models_sync({"model": "fast"}))["resolved_via"] == "group"


# -- 5. MCP over HTTP: Host and Origin checked on every bind ------------------------------------------
pytestmark_mcp = pytest.mark.skipif(importlib.util.find_spec("mcp") is None and not in_ci(),
                                    reason="the mcp SDK is not installed: pip install -e '.[mcp]'")


def start_mcp_http(tmp_path: Path, bind: str, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    cfg = write(tmp_path / "mcp.yaml", "delegation: {}\n")
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return subprocess.Popen([BIN, "mcp", "--config", str(cfg), "--http", bind, *extra], env={**base, **env},
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "mcp.log").open("ab"))


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the MCP server exited"
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the MCP server did not listen")


def list_tools_over_http(url: str, headers: dict[str, str]) -> list[str]:
    """The tool names the SDK's client sees, or the HTTP status the server refused it with."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> list[str]:
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                return sorted(t.name for t in (await client.list_tools()).tools)

    return anyio.run(main)


def post_initialize(url: str, headers: dict[str, str]) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytestmark_mcp
@pytest.mark.slow
def test_mcp_http_on_another_loopback_address_checks_origin_and_host(tmp_path: Path):
    port = free_port()
    proc = start_mcp_http(tmp_path, f"127.0.0.2:{port}", "--allow-host", "mcp.test")
    try:
        wait_listening("127.0.0.2", port, proc)
        url = f"http://127.0.0.2:{port}/mcp"
        assert list_tools_over_http(url, {}) == ["delegate_task", "list_models"]  # no token needed on loopback
        assert list_tools_over_http(url, {"Origin": f"http://127.0.0.2:{port}"}) == ["delegate_task", "list_models"]
        with pytest.raises(Exception):  # noqa: B017 - the SDK's client refuses to go on; the status is below
            list_tools_over_http(url, {"Origin": "http://evil.example"})
        assert post_initialize(url, {"Origin": "http://evil.example"}) == 403  # DNS rebinding: refused
        assert post_initialize(url, {"Host": f"evil.example:{port}"}) == 421
        assert post_initialize(url, {"Host": f"mcp.test:{port}", "Origin": "https://mcp.test"}) == 200  # --allow-host
    finally:
        proc.terminate()
        proc.wait(10)


@pytestmark_mcp
@pytest.mark.slow
def test_mcp_http_wildcard_bind_needs_the_token_and_checks_origin_and_host(tmp_path: Path):
    port, token = free_port(), "tok-doors-0123456789abcdef"
    proc = start_mcp_http(tmp_path, f"0.0.0.0:{port}", HERMES_DELEGATE_MCP_TOKEN=token)
    try:
        wait_listening("127.0.0.1", port, proc)
        url, auth = f"http://127.0.0.1:{port}/mcp", {"Authorization": f"Bearer {token}"}
        assert post_initialize(url, {}) == 401  # a non-loopback bind keeps requiring the token
        assert list_tools_over_http(url, auth) == ["delegate_task", "list_models"]
        assert post_initialize(url, {**auth, "Origin": "http://evil.example"}) == 403
        assert post_initialize(url, {**auth, "Host": f"evil.example:{port}"}) == 421
    finally:
        proc.terminate()
        proc.wait(10)


# -- 6. redaction: token-only userinfo and credential-named URL parameters ---------------------------
@pytest.mark.parametrize(("text", "secret"), [
    ("api_base='http://tokONLYuserinfo42@127.0.0.1:9/v1'", "tokONLYuserinfo42"),
    ("GET https://h.example/v1?client_secret=qCLIENTsecret42", "qCLIENTsecret42"),
    ("https://b.example/o?X-Amz-Signature=deadbeefcafe42&X-Amz-Date=1", "deadbeefcafe42"),
    ("http://h.example/cb#access_token=qFRAGMENTtoken42", "qFRAGMENTtoken42"),
    ("http://h.example/?password=hunter2hunter2", "hunter2hunter2"),
])
def test_redaction_covers_token_userinfo_and_credential_parameters(text: str, secret: str):
    from hermes_delegate.core.redact import Redactor

    assert secret not in Redactor()(text)


@pytest.mark.slow
def test_run_vv_never_shows_a_token_in_an_api_base(providers: LoopbackPair, tmp_path: Path):
    """Under -vv LiteLLM logs every deployment's api_base: a token in its userinfo or query must not show,
    on stdout (the result) or stderr (the logs)."""
    host = providers.alpha.base_url.removeprefix("http://")
    cfg = write(tmp_path / "c.yaml", {
        "delegation": {"task_timeout_s": 20},
        "router": {"model_list": [
            {"model_name": "userinfo", "litellm_params": {"model": "openai/alpha-model", "api_key": LOOPBACK_KEY,
                                                          "api_base": f"http://tokUSERINFOdoors42@{host}"}},
            {"model_name": "query", "litellm_params": {"model": "openai/alpha-model", "api_key": LOOPBACK_KEY,
                                                       "api_base": f"{providers.alpha.base_url}?api_key=qQUERYdoors42"}}],
            "router_settings": {"num_retries": 0}}})
    tasks = write(tmp_path / "t.yaml", {"tasks": [{"goal": "one", "model": "userinfo"},
                                                  {"goal": "two", "model": "query"}]})
    out = cli("run", "--json", "-vv", "--config", str(cfg), str(tasks), cwd=tmp_path)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    assert "LiteLLM" in out.stderr  # -vv did log litellm's debug lines
    for secret in ("tokUSERINFOdoors42", "qQUERYdoors42"):
        assert secret not in out.stdout and secret not in out.stderr


# -- 7. every bad config value is a ConfigError naming the key ---------------------------------------
BAD_SETTINGS = {
    "redis_url_http": ({"redis_url": "http://127.0.0.1:6379"}, "router_settings.redis_url"),
    "redis_url_no_scheme": ({"redis_url": "127.0.0.1:6379"}, "router_settings.redis_url"),
    "redis_port": ({"redis_host": "127.0.0.1", "redis_port": "notaport"}, "router_settings.redis_port"),
    "timeout": ({"timeout": "soon"}, "router_settings.timeout"),
}


@pytest.mark.parametrize("command", ["run", "models", "doctor", "resolve", "mcp"])
@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_a_bad_setting_is_a_config_error_naming_the_key_from_every_command(tmp_path: Path, case: str, command: str):
    settings, key = BAD_SETTINGS[case]
    cfg = write(tmp_path / "c.yaml", {"router": {"model_list": [
        {"model_name": "alpha", "litellm_params": {"model": "openai/alpha-model", "api_key": LOOPBACK_KEY,
                                                   "api_base": "http://127.0.0.1:9/v1"}}], "router_settings": settings}})
    tasks = write(tmp_path / "t.yaml", {"model": "alpha", "tasks": ["x"]})
    args = {"run": ["run", str(tasks)], "resolve": ["resolve", "alpha"], "mcp": ["mcp"]}.get(command, [command])
    out = cli(*args, "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr[-2000:])
    assert key in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stdout == ""


def test_doctor_reports_bad_values_behind_environment_references(tmp_path: Path):
    """A value given as `os.environ/NAME` is checked once resolved: doctor lists it with the rest."""
    cfg = write(tmp_path / "c.yaml", {"router": {
        "model_list": [{"model_name": "alpha", "litellm_params": {"model": "openai/alpha-model", "api_key": LOOPBACK_KEY,
                                                                  "api_base": "os.environ/ALPHA_BASE"}}],
        "router_settings": {"redis_host": "127.0.0.1", "redis_port": "os.environ/SHARED_REDIS_PORT"}}})
    out = cli("doctor", "--config", str(cfg), cwd=tmp_path, ALPHA_BASE="http://127.0.0.1:99999/v1",
              SHARED_REDIS_PORT="notaport")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "router.model_list[0].litellm_params.api_base" in out.stdout
    assert "router_settings.redis_port must be a port number" in out.stdout


def broken_port_config(providers: LoopbackPair) -> dict[str, Any]:
    data = loopback_dict(providers)
    data["router"]["model_list"][0]["litellm_params"]["api_base"] = "http://127.0.0.1:99999/v1"  # group alpha
    return data


def test_list_models_reports_a_broken_deployment_and_lists_the_rest(providers: LoopbackPair):
    tools = DelegateTools(Delegator(config_from_dict(broken_port_config(providers))))
    listing = json.loads(tools.list_models_sync())
    assert "groups" in listing, listing  # not an `internal` error for the whole listing
    (alpha,) = listing["groups"]["alpha"]["deployments"]
    assert "router.model_list[0].litellm_params.api_base" in alpha["problem"] and "99999" in alpha["problem"]
    assert {"beta", "both", "priced"} <= set(listing["groups"])
    assert all("problem" not in d for g in ("beta", "both", "priced") for d in listing["groups"][g]["deployments"])
    checked = json.loads(tools.list_models_sync({"model": "small"}))  # small → alpha
    assert "router.model_list[0].litellm_params.api_base" in checked["not_callable"]
    out = json.loads(tools.delegate_task_sync({"tasks": [{"goal": "x", "model": "small"},
                                                         {"goal": "y", "model": "beta"}]}))
    assert out["type"] == "invalid_tasks" and [t["type"] for t in out["tasks"]] == ["config"], out
    assert "router.model_list[0].litellm_params.api_base" in out["tasks"][0]["problem"]
    assert [r for p in providers for r in p.requests] == []  # refused before anything was sent


def test_a_deployment_timeout_that_is_not_seconds_is_refused_before_anything_is_sent(providers: LoopbackPair):
    data = loopback_dict(providers)
    data["router"]["model_list"][1]["litellm_params"]["timeout"] = "soon"  # group beta
    tools = DelegateTools(Delegator(config_from_dict(data)))
    out = delegate(tools, one="large", two="alpha")  # large → beta
    assert out.get("type") == "invalid_tasks" and [t["model"] for t in out["tasks"]] == ["large"], out
    assert "router.model_list[1].litellm_params.timeout must be a number of seconds" in out["tasks"][0]["problem"]
    assert [r for p in providers for r in p.requests] == []


@pytest.mark.slow
def test_api_base_port_out_of_range_from_the_cli(providers: LoopbackPair, tmp_path: Path):
    cfg = write(tmp_path / "c.yaml", broken_port_config(providers))
    key = "router.model_list[0].litellm_params.api_base"
    models = cli("models", "--config", str(cfg), cwd=tmp_path)
    assert models.returncode == 0 and "Traceback" not in models.stderr, models.stderr[-2000:]
    assert key in models.stdout and "beta" in models.stdout
    models_json = json.loads(cli("models", "--json", "--config", str(cfg), cwd=tmp_path).stdout)
    assert key in models_json["groups"]["alpha"][0]["problem"] and "problem" not in models_json["groups"]["beta"][0]
    doctor = cli("doctor", "--config", str(cfg), cwd=tmp_path)
    assert doctor.returncode == 1 and key in doctor.stdout, doctor.stdout  # not "ok"
    run = cli("run", "--config", str(cfg), write(tmp_path / "t.yaml", {"model": "small", "tasks": ["x"]}).name,
              cwd=tmp_path)
    assert run.returncode == 2 and key in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert [r for p in providers for r in p.requests] == []


# -- 8. stdout carries only the result or the protocol ------------------------------------------------
@pytest.mark.slow
def test_run_json_vv_stdout_is_only_the_result(providers: LoopbackPair, tmp_path: Path):
    cfg = write(tmp_path / "c.yaml", loopback_dict(providers))
    tasks = write(tmp_path / "t.yaml", {"model": "small", "tasks": ["say hi"]})
    out = cli("run", "--json", "-vv", "--config", str(cfg), str(tasks), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["counts"]["completed"] == 1, out.stdout[-500:]  # nothing after the JSON
    assert "DEBUG" in out.stderr  # the logs went to stderr


@pytest.mark.slow
def test_mcp_stdio_vv_stdout_is_only_the_protocol(providers: LoopbackPair, tmp_path: Path):
    cfg = write(tmp_path / "c.yaml", loopback_dict(providers))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost"}
    log = tmp_path / "stderr.log"  # a file: -vv writes more than a pipe holds, and nobody reads it meanwhile
    proc = subprocess.Popen([BIN, "mcp", "-vv", "--config", str(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log.open("wb"), env=env, cwd=tmp_path)
    msgs = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "delegate_task", "arguments": {"tasks": [{"goal": "hi", "model": "small"}]}}}]
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in msgs))
    proc.stdin.flush()
    lines: list[bytes] = []
    reader = ThreadPoolExecutor(1)
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith(b"{") and json.loads(line).get("id") == 2 for line in lines):
            line = reader.submit(proc.stdout.readline).result(timeout=max(0.1, deadline - time.monotonic()))
            assert line, f"the server closed stdout early: {lines}"
            lines.append(line)
        proc.stdin.close()  # the client goes away: the server shuts down (litellm's exit hooks run)
        lines += reader.submit(proc.stdout.read).result(timeout=60).splitlines(keepends=True)
        assert proc.wait(60) == 0, log.read_text(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.shutdown(wait=False)
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert bad == [], bad
    assert "DEBUG" in log.read_text(errors="replace")  # the logs went to stderr


# -- 9. the hermes plugin: one base Delegator per config ----------------------------------------------
def test_plugin_keeps_one_base_delegator_per_config_when_configs_alternate(providers: LoopbackPair):
    from hermes_delegate_hermes import runtime

    first = loopback_config(providers, aliases={"small": "alpha"})
    second = loopback_config(providers, aliases={"small": "beta"})
    # the same router, different delegation: not the same config either
    third = loopback_config(providers, aliases={"small": "alpha"}, max_concurrency=3)
    made: list[Any] = []
    try:
        made += [runtime.delegator_for(cfg) for cfg in (first, second, third)]
        a, b, c = made
        assert len({id(a), id(b), id(c)}) == 3
        for _ in range(3):  # alternating keeps each one, with its Router, learned limits and cooldowns
            assert runtime.delegator_for(first) is a and runtime.delegator_for(second) is b
        assert runtime.delegator_for(loopback_config(providers, aliases={"small": "alpha"})) is a  # by content
        assert a.config.delegation.max_concurrency != c.config.delegation.max_concurrency
    finally:
        with runtime._lock:
            for key in [k for k, v in runtime._handles.items() if any(v is m for m in made)]:
                del runtime._handles[key]
