"""The hermes-agent plugin, end to end: real hermes-agent (PyPI), real subagents, real LiteLLM Router,
embedded loopback providers only. Each hermes scenario runs in a fresh subprocess
(tests/hermes_helpers.py) with HERMES_HOME set before `import run_agent`.

The parent calls hermes's own `delegate_task` with per-task models (the plugin's only delegation tool;
the old second tool `delegate_tasks` is gone). A stateless session (like `hermes -z`) runs the routed
batch synchronously, so the parent reads the result in the same turn.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("run_agent", reason="hermes-agent is not installed (pip install -e '.[test]')")

from conftest import loopback_dict
from hermes_delegate.loopback import LoopbackProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hermes_helpers import (PLACEHOLDER_HOST, PLUGIN_SRC, flag_when, make_home, parent_responder,
                            run_scenario, tool_results)

pytestmark = pytest.mark.slow  # real hermes-agent sessions in fresh interpreters

CHILD_TOOLS_FORBIDDEN = {"delegate_tasks", "list_models", "delegate_task", "clarify", "memory", "execute_code"}


@pytest.fixture(scope="module")
def parent_provider():
    with LoopbackProvider("parent") as p:
        yield p


@pytest.fixture
def parent(parent_provider):
    parent_provider.reset_stats()
    parent_provider.script([])
    yield parent_provider
    parent_provider.responder = None


def _child_answer(body: dict[str, Any], provider: LoopbackProvider) -> str:
    return f"answer from {provider.name} for {body.get('model')}"


def _home(tmp_path: Path, block: Any, **kw: Any) -> Path:
    return make_home(tmp_path, block, builtin=True, **kw)


def _conv(user: str, **kw: Any) -> dict[str, Any]:
    return {"user": user, "disabled_toolsets": [], "stateless": True, **kw}


def _block(providers, **kw: Any) -> dict[str, Any]:
    """The `hermes_delegate:` block: conftest's loopback groups (alpha, beta, both, priced) plus kw."""
    d = loopback_dict(providers, **kw)
    return {**d["delegation"], "router": d["router"]}


def _network_ok(out: dict[str, Any]) -> None:
    """Only loopback was contacted, and never the routed children's placeholder endpoint."""
    for kind, target in out["network"]:
        if kind == "dns":
            assert target in ("127.0.0.1", "localhost", "::1"), target
            assert PLACEHOLDER_HOST not in str(target)
        elif isinstance(target, list):
            assert target[0] in ("127.0.0.1", "::1"), target


def _child_requests(*provs: LoopbackProvider) -> list[Any]:
    return [r for p in provs for r in p.requests]


# -- registration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["entrypoint", "directory"])
def test_registration_is_light_and_loads_in_both_forms(tmp_path: Path, form: str) -> None:
    if form == "entrypoint":
        home = make_home(tmp_path, {})
        key = "hermes-delegate"
    else:  # what a user gets by copying plugins/hermes to ~/.hermes/plugins/<name>/
        home = make_home(tmp_path, {}, enabled=("hermes-delegate-dev",))
        dest = home / "plugins" / "hermes-delegate-dev"
        shutil.copytree(PLUGIN_SRC, dest, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = dest / "plugin.yaml"
        manifest.write_text(manifest.read_text().replace("name: hermes-delegate", "name: hermes-delegate-dev"))
        key = "hermes-delegate-dev"
    out = run_scenario(home, probe_only=True, timeout=60, fresh=True)  # what the import pulls in
    mine = [p for p in out["plugins"] if p["key"] == key]
    assert mine and mine[0]["enabled"] and not mine[0]["error"], out["plugins"]
    assert out["registered"] == {"delegate_tasks": None, "list_models": "hermes-delegate"}  # no second tool
    assert out["middleware"].get("llm_execution", 0) >= 1
    assert out["litellm_after_import"] is False  # registration never imports litellm
    assert out["pydantic_after_import"] is False  # …nor the engine's config models
    if form == "directory":
        assert out["handler_module"].startswith("hermes_plugins.")
    else:
        assert out["handler_module"] == "hermes_delegate_hermes"


# -- the three-model parallel run ------------------------------------------------------------------
def test_three_models_two_providers_end_to_end(tmp_path: Path, providers, parent) -> None:
    a, b = providers.alpha, providers.beta
    a.responder = b.responder = _child_answer
    tasks = [{"goal": "summarise the alpha notes", "model": "small"},
             {"goal": "review the beta design", "model": "beta"},
             {"goal": "price the gamma plan", "model": "priced"}]
    parent.responder = parent_responder({"e2e": {"tasks": tasks, "detail": "full"}})
    home = _home(tmp_path, _block(providers))
    before = (home / "config.yaml").read_bytes()

    out = run_scenario(home, parent_url=parent.base_url, conversations=[_conv("run:e2e")])
    conv = out["conversations"][0]

    # each child's requests reached the right provider with the right model id
    assert sorted(r.model for r in a.requests) == ["alpha-model", "priced-model"]
    assert [r.model for r in b.requests] == ["beta-model"]
    for r in _child_requests(a, b):
        assert r.status == 200 and r.has_auth
        names = {t["function"]["name"] for t in r.body.get("tools", [])}
        assert names and not (names & CHILD_TOOLS_FORBIDDEN)  # restricted like built-in children
        assert r.messages[0]["role"] == "system"

    # the parent saw one delegation tool: the built-in, extended (per-task model, files) from the live config
    first = parent.requests[0].body
    fns = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert "delegate_tasks" not in fns and "list_models" in fns
    schema = fns["delegate_task"]
    assert "files" in schema["parameters"]["properties"]["tasks"]["items"]["properties"]
    assert "model" in schema["parameters"]["properties"]
    assert "model" in schema["parameters"]["properties"]["tasks"]["items"]["properties"]
    assert "Configured tiers: small→alpha" in schema["description"]

    # the parent received the consolidated result and finished its turn
    assert len(parent.requests) == 2
    tool_msg = next(m for m in parent.requests[1].messages if m["role"] == "tool")
    result = json.loads(tool_msg["content"])
    assert result["counts"] == {"completed": 3}
    got = [(r["model"], r["deployment"]["deployment_id"], r["deployment"]["model"], r["deployment"]["api_host"])
           for r in result["results"]]
    host = lambda p: p.base_url.split("//")[1].split("/")[0]  # noqa: E731
    assert got == [("alpha", "alpha-1", "openai/alpha-model", host(a)),
                   ("beta", "beta-1", "openai/beta-model", host(b)),
                   ("priced", "priced-1", "openai/priced-model", host(a))]
    assert [r["summary"] for r in result["results"]] == [
        "answer from alpha for alpha-model", "answer from beta for beta-model", "answer from alpha for priced-model"]
    assert [r["model_source"] for r in result["results"]] == ["task"] * 3
    assert result["results"][2]["cost_usd"] > 0 and result["results"][0]["cost_usd"] is None
    assert conv["final"] == "done e2e" and conv["completed"]

    # progress like the built-in, hooks for other plugins
    progress = sorted(ln for ln in conv["lines"] if "✓ [" in ln)
    assert len(progress) == 3 and all(ln.startswith("  ✓ [") for ln in progress)
    assert any("[2/3] review the beta design" in ln and "· beta" in ln for ln in progress)
    starts = [h for h in out["hooks"] if h["hook"] == "subagent_start"]
    stops = [h for h in out["hooks"] if h["hook"] == "subagent_stop"]
    assert len(starts) == 3 and len(stops) == 3
    assert {h["child_session_id"] for h in starts} == {h["child_session_id"] for h in stops}
    assert {h["child_status"] for h in stops} == {"completed"}
    assert conv["active_children_after"] == 0

    _network_ok(out)
    assert (home / "config.yaml").read_bytes() == before  # the per-task choices were never persisted


# -- refused before anything runs; the parent's own model; list_models ------------------------------
def test_refusals_parent_model_and_list_models(tmp_path: Path, providers, parent) -> None:
    a, b = providers.alpha, providers.beta
    parent.responder = parent_responder({
        "unknown": {"tasks": [{"goal": "fine task", "model": "small"}, {"goal": "bad task", "model": "no-such-model-xyz"}]},
        "deep": {"tasks": [{"goal": "a task", "model": "small"}]},
        # a routed call whose one task names no model: precedence level 4, the parent's own model
        "inherit": {"model": "", "tasks": [{"goal": "inherit the parent model", "model": "small"},
                                           {"goal": "inherit the parent model"}], "detail": "full"},
        "models": {"tool": "list_models", "arguments": {}},
    })
    home = _home(tmp_path, _block(providers))
    before = (home / "config.yaml").read_bytes()
    providers.alpha.responder = _child_answer

    out = run_scenario(home, parent_url=parent.base_url, conversations=[
        _conv("run:unknown"), _conv("run:deep", parent_depth=1), _conv("run:inherit"), _conv("run:models")])
    unknown, deep, inherit, models = (tool_results(c)[0] for c in out["conversations"])

    # an unknown model: the actionable error, and nothing spawned or sent
    assert unknown["type"] == "invalid_tasks"
    assert [t["index"] for t in unknown["tasks"]] == [1]
    assert unknown["tasks"][0]["model"] == "no-such-model-xyz" and unknown["hint"]
    # the depth limit, like the built-in's
    assert deep["type"] == "depth_limit" and "max_spawn_depth=1" in deep["error"]
    assert [r.model for r in a.requests] == ["alpha-model"] and b.requests == []  # only the third call sent
    starts = [h for h in out["hooks"] if h["hook"] == "subagent_start"]
    assert [h["child_goal"] for h in starts] == ["inherit the parent model"] * 2  # only the third call spawned

    # precedence level 4: no model anywhere → the parent's model, on hermes's own provider
    routed, r = inherit["results"]
    assert routed["status"] == "completed" and routed["model_source"] == "task"
    assert r["status"] == "completed" and r["model_source"] == "parent"
    assert r["model"] == "openai/parent-model"
    assert r["deployment"]["model"] == "parent-model"
    assert r["deployment"]["api_host"] == parent.base_url.split("//")[1].split("/")[0]
    child_reqs = [q for q in parent.requests if any(m.get("content") == "inherit the parent model"
                                                      for m in q.messages if m["role"] == "user")]
    assert len(child_reqs) == 1 and child_reqs[0].model == "parent-model"

    # list_models, from DelegateTools
    assert "error" not in models and "alpha" in json.dumps(models)

    assert [c["final"] for c in out["conversations"]] == ["done unknown", "done deep", "done inherit", "done models"]
    _network_ok(out)
    assert (home / "config.yaml").read_bytes() == before


# -- retries and failures go through the Router, never through hermes's provider -------------------
def test_router_retries_429_and_fails_explicitly(tmp_path: Path, providers, parent) -> None:
    a, b = providers.alpha, providers.beta
    a.responder = b.responder = _child_answer
    a.retry_after = 0.05
    a.script(["429"])  # first request rate-limited, then normal
    b.set_fault("500")  # every request fails
    parent.responder = parent_responder({"retry": {"tasks": [{"goal": "flaky provider", "model": "small"},
                                                             {"goal": "broken provider", "model": "large"}],
                                                   "detail": "full"}})
    home = _home(tmp_path, _block(providers, router_settings={"num_retries": 1, "retry_after": 0}))
    before = (home / "config.yaml").read_bytes()

    out = run_scenario(home, parent_url=parent.base_url, conversations=[_conv("run:retry")])
    res = tool_results(out["conversations"][0])[0]
    ok, bad = res["results"]

    assert ok["status"] == "completed" and ok["summary"] == "answer from alpha for alpha-model"
    assert ok["attempts"] >= 2 and ok["attempt_log"][0]["status"] == "429"
    assert ok["attempt_log"][-1]["status"] == "ok"
    assert [r.status for r in a.requests] == ["429", 200]

    assert bad["status"] == "failed" and bad["error"]["type"] == "server"
    assert bad["attempts"] == 2 and all(x["status"] == "500" for x in bad["attempt_log"])
    assert len(b.requests) == 2  # 1 + num_retries, then the child stopped: no hermes retry loop
    assert len(parent.requests) == 2  # the failed child never fell through to hermes's provider
    assert any(ln.startswith("  ✗ [2/2] broken provider") for ln in out["conversations"][0]["lines"])
    _network_ok(out)
    assert (home / "config.yaml").read_bytes() == before


# -- interrupt -------------------------------------------------------------------------------------
def test_parent_interrupt_stops_unfinished_children(tmp_path: Path, providers, parent) -> None:
    a, b = providers.alpha, providers.beta
    a.responder = b.responder = _child_answer
    b.latency_s = 8.0
    parent.responder = parent_responder({"stop": {"tasks": [{"goal": "quick one", "model": "small"},
                                                            {"goal": "slow one", "model": "large"}]}})
    home = _home(tmp_path, _block(providers))
    before = (home / "config.yaml").read_bytes()

    # the interrupt comes once the slow request is at beta (a fixed delay after the first result was a
    # race on a loaded machine: beta had not been asked yet)
    with flag_when(lambda: b.requests, tmp_path / "beta-asked") as asked:
        out = run_scenario(home, parent_url=parent.base_url,
                           conversations=[_conv("run:stop", interrupt_on_line="✓ [1/2]",
                                                interrupt_after_file=asked, interrupt_delay_s=0.05)])
    conv = out["conversations"][0]
    res = tool_results(conv)[0]

    assert [r["status"] for r in res["results"]] == ["completed", "interrupted"]
    assert res["results"][1]["error"]["type"] == "interrupted"
    assert conv["after_interrupt_s"] < 4.0  # did not wait for the slow provider (8 s)
    assert len(b.requests) == 1 and b.requests[0].status != 200  # in flight when stopped
    stops = {h["child_status"] for h in out["hooks"] if h["hook"] == "subagent_stop"}
    assert stops == {"completed", "interrupted"}
    _network_ok(out)
    assert (home / "config.yaml").read_bytes() == before


# -- pure pieces ------------------------------------------------------------------------------------
def test_config_mapping_from_hermes_config_yaml() -> None:
    from hermes_delegate import config_from_dict
    from hermes_delegate_hermes.settings import plugin_dict

    raw = {"delegation": {"model": "glm-4.7", "provider": "zai", "max_concurrent_children": 5,
                          "child_timeout_seconds": 90},
           "hermes_delegate": {"tiers": {"small": "haiku"}, "aliases": {"fast": "small"}, "allow": ["small", "fast"],
                               "budget_usd": 0.5, "max_tasks": 8}}
    d = plugin_dict(raw)
    assert d["delegation"] == {"aliases": {"small": "haiku", "fast": "small"}, "allow": ["small", "fast"],
                               "budget_usd": 0.5, "max_tasks": 8, "model": "glm-4.7 --provider zai",
                               "max_concurrency": 5, "task_timeout_s": 90}
    cfg = config_from_dict(d)
    assert cfg.delegation.model == "glm-4.7 --provider zai"

    # our own keys win; an unset concurrency follows hermes's default; no per-child timeout by default
    d = plugin_dict({"delegation": {"model": "x"}, "hermes_delegate": {"model": "small", "max_concurrency": 2}},
                    default_concurrency=3)
    assert d["delegation"] == {"model": "small", "max_concurrency": 2, "task_timeout_s": None}
    assert plugin_dict({})["delegation"]["max_concurrency"] == 3

    # delegation.base_url: hermes's custom endpoint becomes an OpenAI-compatible Router group
    d = plugin_dict({"delegation": {"model": "local-coder", "base_url": "http://127.0.0.1:8000/v1", "api_key": "k"}})
    assert d["delegation"]["model"] == "local-coder"
    assert d["router"]["model_list"] == [{"model_name": "local-coder", "litellm_params": {
        "model": "openai/local-coder", "api_base": "http://127.0.0.1:8000/v1", "api_key": "k"}}]
    config_from_dict(d)


def test_parent_model_as_litellm_id() -> None:
    from hermes_delegate_hermes.parent import litellm_model_for

    assert litellm_model_for("anthropic", "claude-sonnet-4-5") == ("anthropic/claude-sonnet-4-5", None)
    assert litellm_model_for("openrouter", "anthropic/claude-sonnet-4") == ("openrouter/anthropic/claude-sonnet-4", None)
    assert litellm_model_for("custom", "qwen3", "http://127.0.0.1:8000/v1") == ("openai/qwen3", "http://127.0.0.1:8000/v1")
    assert litellm_model_for("zai", "zai/glm-4.7") == ("zai/glm-4.7", None)
    nous = litellm_model_for("nous", "Hermes-4-405B")
    assert nous[0] == "openai/Hermes-4-405B" and nous[1] and "nousresearch" in nous[1]
    assert litellm_model_for("no-such-provider", "m", "http://x/v1") == ("openai/m", "http://x/v1")
    assert litellm_model_for("anthropic", None) == (None, None)


def test_docs_demo_runs_offline(tmp_path: Path) -> None:
    """docs/hermes.md's first check: the three-model parallel run against embedded providers."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    proc = subprocess.run([sys.executable, "-m", "hermes_delegate_hermes.demo"], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("  ✓ [") == 3
    assert "alpha served: ['fast-model', 'prose-model']" in proc.stdout
    assert "beta served: ['deep-model']" in proc.stdout


def test_changed_hermes_helpers_give_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from hermes_delegate_hermes import hermes_api

    fake = types.ModuleType("tools.delegate_tool")
    fake.__file__ = str(Path(hermes_api.__file__))  # its "hermes source" lacks every agent attribute
    for name in hermes_api.FUNCTIONS:
        setattr(fake, name, lambda *a, **k: None)
    fake._build_child_agent = lambda task_index, goal, context, toolsets, model, parent_agent: None  # params gone
    del fake._run_single_child  # helper gone
    pkg = types.ModuleType("tools")
    pkg.delegate_tool = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tools", pkg)
    monkeypatch.setitem(sys.modules, "tools.delegate_tool", fake)
    for mod in ("model_tools", "agent", "agent.model_metadata", "tools.registry", "hermes_cli",
                "hermes_cli.middleware", "tools.async_delegation"):
        monkeypatch.setitem(sys.modules, mod, types.ModuleType(mod))
    hermes_api.reset()
    try:
        with pytest.raises(hermes_api.HermesAPIError) as err:
            hermes_api.check()
        assert not hermes_api.compatible()
    finally:
        hermes_api.reset()
    text = str(err.value)
    assert "_run_single_child is missing" in text
    assert "_build_child_agent() has no parameter max_iterations" in text
    assert "model_tools._last_resolved_tool_names is missing" in text
    assert "AIAgent._delegate_depth is no longer set" in text
    assert "built-in delegate_task runs unchanged" in text and "hermes-agent==0.19.0" in text
