"""hermes's own `delegate_task`, extended with `model` by the plugin (issue 11), end to end in a real
hermes-agent 0.19.0: real AIAgents, the parent's loopback provider scripted to call delegate_task,
routed children over two loopback providers, built-in children on hermes's own path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("run_agent", reason="hermes-agent is not installed (pip install -e '.[test]')")

from conftest import loopback_dict
from hermes_delegate.loopback import LoopbackProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hermes_helpers import (PLACEHOLDER_HOST, flag_when, make_home, parent_responder, run_scenario,
                            tool_results)

pytestmark = pytest.mark.slow  # real hermes-agent sessions in fresh interpreters

CHILD_FORBIDDEN = {"delegate_task", "delegate_tasks", "list_models", "clarify", "memory", "execute_code"}


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


def _block(providers, **kw: Any) -> dict[str, Any]:
    d = loopback_dict(providers, **kw)
    return {**d["delegation"], "router": d["router"]}


def _home(tmp_path: Path, block: Any, **kw: Any) -> Path:
    return make_home(tmp_path, block, builtin=True, **kw)


def _conv(user: str, **kw: Any) -> dict[str, Any]:
    return {"user": user, "disabled_toolsets": [], **kw}


def _network_ok(out: dict[str, Any]) -> None:
    for kind, target in out["network"]:
        if kind == "dns":
            assert target in ("127.0.0.1", "localhost", "::1") and PLACEHOLDER_HOST not in str(target), target
        elif isinstance(target, list):
            assert target[0] in ("127.0.0.1", "::1"), target


def _parent_tools(parent: LoopbackProvider) -> dict[str, Any]:
    return {t["function"]["name"]: t["function"] for t in parent.requests[0].body["tools"]}


def _parent_requests(parent: LoopbackProvider) -> list[Any]:
    """The top-level agent's requests (its first user message says run:...)."""
    return [r for r in parent.requests if any("run:" in str(m.get("content")) for m in r.messages
                                              if m.get("role") == "user")]


# -- mixed models: routed tasks on two providers, one task on hermes's own path, in the background ---
def test_mixed_models_background_batch(tmp_path: Path, providers, parent) -> None:
    a, b = providers.alpha, providers.beta
    a.responder = b.responder = _child_answer
    tasks = [{"goal": "summarise the alpha notes", "model": "small"},
             {"goal": "review the beta design", "model": "beta", "role": "leaf"},
             {"goal": "plain builtin style task"}]
    parent.responder = parent_responder({"mixed": {"tasks": tasks, "background": False, "detail": "full"}},
                                        tool="delegate_task")
    home = _home(tmp_path, _block(providers))
    before = (home / "config.yaml").read_bytes()

    out = run_scenario(home, parent_url=parent.base_url, conversations=[_conv("run:mixed", wait_background=True)])
    conv = out["conversations"][0]

    # one delegation tool: the built-in delegate_task, its schema extended with `model`
    fns = _parent_tools(parent)
    assert "delegate_tasks" not in fns and "list_models" in fns
    schema = fns["delegate_task"]
    props = schema["parameters"]["properties"]
    assert "model" in props and "model" in props["tasks"]["items"]["properties"]
    assert "role" in props and "role" in props["tasks"]["items"]["properties"]  # built-in params kept
    assert "Configured tiers: small→alpha" in schema["description"]
    assert "Spawn one or more subagents" in schema["description"] or "subagent" in schema["description"]

    # top-level delegation runs in the background like the built-in: dispatched at once, turn ends
    dispatched = tool_results(conv)[0]
    assert dispatched["status"] == "dispatched" and dispatched["mode"] == "background"
    assert dispatched["count"] == 3 and "hermes-delegate" in dispatched["note"]
    assert conv["final"] == "done mixed" and conv["completed"]

    # the combined results arrive as hermes's own async_delegation completion event
    bg = conv["background"]
    assert bg["type"] == "async_delegation" and bg["is_batch"] and bg["status"] == "completed"
    assert bg["parent_session_id"] == conv["session_id"]
    results = bg["results"]
    assert [r["task_index"] for r in results] == [0, 1, 2]
    assert [r["status"] for r in results] == ["completed"] * 3
    assert results[0]["summary"] == "answer from alpha for alpha-model"
    assert results[1]["summary"] == "answer from beta for beta-model"
    assert [r["model_source"] for r in results] == ["task", "task", "parent"]

    # routed children reached the right provider, model id and key; never hermes's fallback
    assert [r.model for r in a.requests] == ["alpha-model"] and [r.model for r in b.requests] == ["beta-model"]
    for r in [*a.requests, *b.requests]:
        assert r.status == 200 and r.has_auth
        names = {t["function"]["name"] for t in r.body.get("tools", [])}
        assert names and not (names & CHILD_FORBIDDEN)
    # the task without a model ran on hermes's own path: the parent's provider, model and key
    child_reqs = [r for r in parent.requests if r not in _parent_requests(parent)]
    assert child_reqs and all(r.model == "parent-model" and r.has_auth for r in child_reqs)
    assert any("plain builtin style task" in str(m.get("content")) for r in child_reqs for m in r.messages)

    stops = [h for h in out["hooks"] if h["hook"] == "subagent_stop"]
    assert len(stops) == 3 and {h["child_status"] for h in stops} == {"completed"}
    _network_ok(out)
    assert (home / "config.yaml").read_bytes() == before


# -- a session that cannot take a late completion: synchronous, the parent finishes on the result ---
def test_stateless_session_runs_synchronously_and_parent_finishes_on_result(tmp_path: Path, providers,
                                                                            parent) -> None:
    a, b = providers.alpha, providers.beta
    a.responder = b.responder = _child_answer
    parent.responder = parent_responder({"sync": {"goal": "one routed task", "model": "large",
                                                  "max_iterations": 3}}, tool="delegate_task")
    home = _home(tmp_path, _block(providers))
    out = run_scenario(home, parent_url=parent.base_url,
                       conversations=[_conv("run:sync", stateless=True, wait_warm=True)],
                       fresh=True)  # what the import pulls in, and what the warm-up adds
    conv = out["conversations"][0]
    # warmed in the background once hermes built the agent: litellm imported, Router built, no request yet
    assert out["litellm_after_import"] is False
    assert conv["warm"] == {"litellm": True, "router_built": True}
    res = tool_results(conv)[0]
    assert [r["summary"] for r in res["results"]] == ["answer from beta for beta-model"]
    assert "SYNCHRONOUSLY" in res["note"]
    assert [r.model for r in b.requests] == ["beta-model"] and not a.requests
    # the parent's second request carries the combined result, and it ends its turn on it
    tops = _parent_requests(parent)
    assert len(tops) == 2
    tool_msg = next(m for m in tops[1].messages if m["role"] == "tool")
    assert json.loads(tool_msg["content"])["results"][0]["status"] == "completed"
    assert conv["final"] == "done sync" and conv["completed"]
    _network_ok(out)


# -- a session that ends while the background warm-up runs ------------------------------------------
@pytest.mark.parametrize("exit_after_s", [0.2, 1.0, 2.2])
def test_a_session_ending_during_the_warm_up_exits_cleanly(tmp_path: Path, providers, parent,
                                                           exit_after_s: float) -> None:
    """`hermes -z` can end before the warm-up (litellm's import, the Router's build) has finished.
    The interpreter must not finalise with a plugin thread mid-step: killed holding an import lock,
    it left hermes hanging on exit (a litellm __del__ waiting on that lock) or aborting (rc -6,
    "FATAL: exception not rethrown"). The exits are spread over the warm-up's steps."""
    home = _home(tmp_path, _block(providers))
    out = run_scenario(home, parent_url=parent.base_url, exit_after_s=exit_after_s, timeout=90)
    assert "delegate_task" in out["tools"]  # the plugin was loaded and its schema built
    # nothing of the plugin's is left running when the interpreter finalises
    assert json.loads((home / "exit-threads.json").read_text()) == []
    for bad in ("FATAL", "Traceback", "Task was destroyed but it is pending", "Fatal Python error"):
        assert bad not in out["stderr"], out["stderr"][-3000:]
    assert not providers.alpha.requests and not providers.beta.requests and not parent.requests


# -- the built-in untouched: no task names a model; the plugin disabled -------------------------------
@pytest.mark.parametrize("plugin", ["enabled", "disabled"])
def test_builtin_untouched_without_model_or_plugin(tmp_path: Path, providers, parent, plugin: str) -> None:
    a, b = providers.alpha, providers.beta
    parent.responder = parent_responder({"plain": {"goal": "no model here"}}, tool="delegate_task")
    enabled = ("hermes-delegate",) if plugin == "enabled" else ()
    home = _home(tmp_path, _block(providers), enabled=enabled)
    before = (home / "config.yaml").read_bytes()
    out = run_scenario(home, parent_url=parent.base_url, conversations=[_conv("run:plain", wait_background=True)])
    conv = out["conversations"][0]

    dispatched = tool_results(conv)[0]
    assert dispatched["status"] == "dispatched" and "hermes-delegate" not in dispatched["note"]  # built-in's
    bg = conv["background"]
    assert bg["type"] == "async_delegation" and bg["status"] == "completed"
    assert bg["results"][0]["summary"].startswith("nothing to do for")  # the child's answer, via the parent provider
    assert not a.requests and not b.requests
    props = _parent_tools(parent)["delegate_task"]["parameters"]["properties"]
    assert ("model" in props) == (plugin == "enabled")
    assert ("list_models" in _parent_tools(parent)) == (plugin == "enabled")
    _network_ok(out)
    assert (home / "config.yaml").read_bytes() == before


# -- depth limit, interrupts -------------------------------------------------------------------------
def test_depth_limit_applies_to_routed_calls(tmp_path: Path, providers, parent) -> None:
    a = providers.alpha
    parent.responder = parent_responder({"deep": {"goal": "too deep", "model": "small"}}, tool="delegate_task")
    home = _home(tmp_path, _block(providers))
    out = run_scenario(home, parent_url=parent.base_url, conversations=[_conv("run:deep", parent_depth=1)])
    res = tool_results(out["conversations"][0])[0]
    assert res["type"] == "depth_limit" and "max_spawn_depth" in res["hint"]
    assert not a.requests


def test_parent_interrupt_stops_a_synchronous_routed_batch(tmp_path: Path, providers, parent) -> None:
    a, b = providers.alpha, providers.beta
    a.responder = b.responder = _child_answer
    b.latency_s = 8.0
    parent.responder = parent_responder({"stop": {"tasks": [{"goal": "quick one", "model": "small"},
                                                            {"goal": "slow one", "model": "large"}]}},
                                        tool="delegate_task")
    home = _home(tmp_path, _block(providers))
    with flag_when(lambda: b.requests, tmp_path / "beta-asked") as asked:  # interrupt once it is in flight
        out = run_scenario(home, parent_url=parent.base_url, conversations=[
            _conv("run:stop", stateless=True, interrupt_on_line="✓ [1/2]", interrupt_after_file=asked,
                  interrupt_delay_s=0.05)])
    res = tool_results(out["conversations"][0])[0]
    assert [r["status"] for r in res["results"]] == ["completed", "interrupted"]
    assert len(b.requests) == 1 and b.requests[0].status != 200  # in flight when stopped


def test_stop_interrupts_a_background_routed_batch(tmp_path: Path, providers, parent) -> None:
    a, b = providers.alpha, providers.beta
    a.responder = b.responder = _child_answer
    b.latency_s = 8.0
    parent.responder = parent_responder({"bgstop": {"tasks": [{"goal": "quick one", "model": "small"},
                                                              {"goal": "slow one", "model": "large"}]}},
                                        tool="delegate_task")
    home = _home(tmp_path, _block(providers))
    with flag_when(lambda: b.requests, tmp_path / "beta-asked") as asked:  # stop once it is in flight
        out = run_scenario(home, parent_url=parent.base_url, conversations=[
            _conv("run:bgstop", wait_background=True, interrupt_background_on_line="✓ [1/2]",
                  interrupt_after_file=asked)])
    bg = out["conversations"][0]["background"]
    assert bg["type"] == "async_delegation"
    assert [r["status"] for r in bg["results"]] == ["completed", "interrupted"]
    assert len(b.requests) == 1 and b.requests[0].status != 200


# -- the version guard's failure path ----------------------------------------------------------------
def test_version_guard_failure_leaves_builtin_working(tmp_path: Path, providers, parent) -> None:
    a = providers.alpha
    parent.responder = parent_responder({"guard": {"goal": "named a model", "model": "small"}}, tool="delegate_task")
    home = _home(tmp_path, _block(providers))
    before = (home / "config.yaml").read_bytes()
    out = run_scenario(home, parent_url=parent.base_url, break_hermes=True,
                       conversations=[_conv("run:guard", wait_background=True)])
    lines = [ln for ln in out["stderr"].splitlines() if "hermes-delegate was built against" in ln]
    assert len(lines) == 1 and "_emit_parent_console() has no parameter parent_agent" in lines[0]
    assert "built-in delegate_task runs unchanged" in lines[0]
    assert out["middleware"] == {} and out["registered"]["list_models"] is None
    conv = out["conversations"][0]
    assert "model" not in _parent_tools(parent)["delegate_task"]["parameters"]["properties"]
    bg = conv["background"]  # the built-in ran it, on the parent's provider (model ignored, as in hermes)
    assert bg["type"] == "async_delegation" and bg["status"] == "completed"
    assert not a.requests
    assert (home / "config.yaml").read_bytes() == before


# -- errors leave config.yaml alone -------------------------------------------------------------------
def test_refused_model_and_bad_block_leave_config_yaml_byte_identical(tmp_path: Path, providers, parent) -> None:
    parent.responder = parent_responder({"bad": {"goal": "x", "model": "no-such-model-xyz"}}, tool="delegate_task")
    block = _block(providers)
    block["max_concurrency"] = "many"  # invalid: every routed call reports it
    home = _home(tmp_path, block)
    before = (home / "config.yaml").read_bytes()
    out = run_scenario(home, parent_url=parent.base_url, conversations=[_conv("run:bad", stateless=True)])
    res = tool_results(out["conversations"][0])[0]
    assert "hermes_delegate.max_concurrency" in json.dumps(res)
    assert (home / "config.yaml").read_bytes() == before


def test_unpriced_refusal_hint_names_hermes_delegate_key(tmp_path: Path, providers, parent) -> None:
    a = providers.alpha
    parent.responder = parent_responder({"cap": {"goal": "x", "model": "small"}}, tool="delegate_task")
    home = _home(tmp_path, _block(providers, budget_usd=1.0))
    out = run_scenario(home, parent_url=parent.base_url, conversations=[_conv("run:cap", stateless=True)])
    text = json.dumps(tool_results(out["conversations"][0])[0])
    assert "hermes_delegate.allow_unpriced" in text and "delegation.allow_unpriced" not in text
    assert not a.requests
