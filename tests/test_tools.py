"""The agent-facing tools (issue #3): delegate_task and list_models over real HTTP to loopback providers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hermes_delegate import Delegator, TaskPayloadError, config_from_dict
from hermes_delegate.loopback import LoopbackProvider
from hermes_delegate.tools.delegate_tools import DelegateTools, tool_error

ROOT = Path(__file__).resolve().parents[1]
CANARY = "sk-canary-XYZ123456"
ENV_SECRET = "sk-envsecret-ABCDEF987"
COLON_FIX = "stepfun/step-3.5-flash --provider openrouter"
ERROR_KEYS = {"error", "hint", "suggestions", "type"}


@pytest.fixture
def p1(providers):
    # The shared pair from conftest (reset around every test). p1 is slower than p2, so results that
    # finish out of order still come back in input order.
    providers.alpha.latency_s = 0.15
    return providers.alpha


@pytest.fixture
def p2(providers):
    providers.beta.latency_s = 0.02
    return providers.beta


def host(p: LoopbackProvider) -> str:
    return f"127.0.0.1:{p.port}"


def dep(group, model, p, key=CANARY, **extra):
    params = {"model": model, "api_base": p.base_url, "api_key": key,
              "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    info = extra.pop("model_info", {})
    params.update(extra)
    return {"model_name": group, "litellm_params": params, "model_info": info}


def tools_for(p1, p2, env=None, parent=None, **delegation) -> DelegateTools:
    """alpha (p1), beta (p2), gamma (p1); tiers small→alpha, large→beta; alias g→gamma, cheap→glm-4.7."""
    settings = {"model": "small", "aliases": {"small": "alpha", "large": "beta", "g": "gamma", "cheap": "glm-4.7"},
                "allow": ["small", "large", "g", "alpha", "beta", "gamma", "zai/*"],
                "max_tasks": 5, "budget_usd": 0.5, "max_tokens": 100, **delegation}
    cfg = config_from_dict({"delegation": settings, "router": {"model_list": [
        dep("alpha", "openai/m-alpha", p1), dep("beta", "openai/m-beta", p2), dep("gamma", "openai/m-gamma", p1)]}})
    return DelegateTools(Delegator(cfg, env={} if env is None else env, parent_model=parent))


# -- malformed calls: the exact error, and nothing runs --------------------------------------------------
def payload(error, **kw):
    return {"type": "payload", "error": error, **kw}


def bad_task(model, type_, problem_start, suggestions=None):
    return {"type": type_, "model": model, "problem_start": problem_start, "suggestions": suggestions}


MALFORMED = [
    ("tasks not JSON", {"tasks": "first find the TODOs, then fix them"},
     payload("tasks is a string that is not valid JSON (Expecting value at line 1 column 1).")),
    ("tasks an object", {"tasks": {"goal": "x", "model": "small"}},
     payload("tasks must be an array of task objects, got an object.",
             hint='Wrap the object in an array: "tasks": [{...}].')),
    ("tasks a number", {"tasks": 3}, payload("tasks must be an array of task objects, got number.")),
    ("non-object task", {"tasks": [{"goal": "a"}, 42]},
     payload("Task 2 (tasks[1]) is a number, not an object; write it as {\"goal\": \"...\", \"context\": \"...\", "
             "\"model\": \"...\"}.",
             tasks=[{"index": 1, "model": None, "type": "payload", "suggestions": [],
                     "problem": "Task 2 (tasks[1]) is a number, not an object; write it as {\"goal\": \"...\", "
                                "\"context\": \"...\", \"model\": \"...\"}."}])),
    ("string task", {"tasks": ["find the TODOs"]},
     payload('Task 1 (tasks[0]) is a string, not an object; write it as {"goal": "find the TODOs"}.',
             tasks=[bad_task(None, "payload", "Task 1 (tasks[0]) is a string, not an object", [])])),
    ("missing goal", {"tasks": [{"goal": "a"}, {"model": "small"}]},
     payload("Task 2 (tasks[1]) has no goal.",
             tasks=[{"index": 1, "model": "small", "type": "payload", "problem": "Task 2 (tasks[1]) has no goal.",
                     "suggestions": []}])),
    ("empty goal", {"tasks": [{"goal": "  ", "model": "g"}]},
     payload("Task 1 (tasks[0]) has an empty goal.", tasks=[bad_task("g", "payload", "Task 1 (tasks[0]) has an empty goal.", [])])),
    ("goal not a string", {"tasks": [{"goal": ["a", "b"]}]},
     payload("Task 1 (tasks[0]): goal must be a string, got array.",
             tasks=[bad_task(None, "payload", "Task 1 (tasks[0]): goal must be a string, got array.", [])])),
    ("unknown task key", {"tasks": [{"prompt": "x"}]},
     payload("Task 1 (tasks[0]) has unknown key(s) 'prompt' (did you mean 'goal'?); a task has goal, context and model (and optionally output_schema, files).",
             suggestions=["goal"], tasks=[bad_task(None, "payload", "Task 1 (tasks[0]) has unknown key(s) 'prompt'", ["goal"])])),
    ("two malformed tasks", {"tasks": [7, {"context": "c"}]},
     payload("2 tasks are malformed; nothing was started.", suggestions=[],
             tasks=[bad_task(None, "payload", "Task 1 (tasks[0]) is a number, not an object", []),
                    bad_task(None, "payload", "Task 2 (tasks[1]) has no goal.", [])])),
    ("empty batch", {"tasks": []},
     payload("tasks is empty: the batch has no tasks.")),
    ("no goal or tasks", {}, payload("No task given: pass goal (one task) or tasks (several).")),
    ("goal and tasks", {"goal": "a", "tasks": [{"goal": "b"}]}, payload("Both goal and tasks were given: pick one.")),
    ("args not JSON", '{"goal": "x", ', payload("The delegate_task arguments is a string that is not valid JSON "
                                                 "(Expecting property name enclosed in double quotes at line 1 "
                                                 "column 15).")),
    ("args an array", [{"goal": "x"}], payload("The delegate_task arguments must be a JSON object, got array.")),
    ("unknown top-level key", {"task": "x"},
     payload("Unknown argument(s) 'task' (did you mean 'goal'?).", suggestions=["goal"])),
    ("model not a string", {"goal": "x", "model": 4}, payload("model must be a string or null, got number.")),
    ("unknown tier", {"tasks": [{"goal": "a", "model": "medium"}]},
     {"type": "invalid_tasks", "error": "1 task cannot run; nothing was started.",
      "tasks": [bad_task("medium", "unknown_model", "Tier 'medium' is not configured.")]}),
    ("colon prefix", {"goal": "a", "model": "openrouter:stepfun/step-3.5-flash"},
     {"type": "invalid_tasks", "suggestions": [COLON_FIX],
      "tasks": [bad_task("openrouter:stepfun/step-3.5-flash", "spec",
                         "The colon-prefix form 'openrouter:stepfun/step-3.5-flash' is not supported.", [COLON_FIX])]}),
    ("unknown provider slug", {"tasks": [{"goal": "a", "model": "glm-4.7 --provider nosuchprov"}]},
     {"type": "invalid_tasks",
      "tasks": [bad_task("glm-4.7 --provider nosuchprov", "unknown_provider", "Unknown provider 'nosuchprov'.")]}),
    ("ambiguous bare id", {"tasks": [{"goal": "a", "model": "gpt-oss-120b"}]},
     {"type": "invalid_tasks",
      "tasks": [bad_task("gpt-oss-120b", "ambiguous", "'gpt-oss-120b' is served by several providers")]}),
    ("disallowed model", {"tasks": [{"goal": "a", "model": "small"}, {"goal": "b", "model": "haiku"}]},
     {"type": "invalid_tasks", "error": "1 task cannot run; nothing was started.",
      "suggestions": ["small", "large", "g", "alpha", "beta", "gamma"],
      "tasks": [bad_task("haiku", "not_allowed", "Model 'haiku' (anthropic/claude-",
                         ["small", "large", "g", "alpha", "beta", "gamma"])]}),
    ("every bad task listed", {"tasks": [{"goal": "a", "model": "openrouter:x/y"}, {"goal": "b"},
                                         {"goal": "c", "model": "nope-model-zz"}]},
     {"type": "invalid_tasks", "error": "2 tasks cannot run; nothing was started.", "suggestions": [],
      "tasks": [bad_task("openrouter:x/y", "spec", "The colon-prefix form", ["x/y --provider openrouter"]),
                bad_task("nope-model-zz", "unknown_model", "Unknown model 'nope-model-zz'.")]}),
    ("too many tasks", {"tasks": [{"goal": f"t{i}"} for i in range(6)]},
     payload("The batch has 6 tasks; the limit is 5 per call.",
             hint="Split the work into calls of at most 5 tasks.")),
    ("budget above the cap", {"goal": "a", "budget_usd": 2},
     {"type": "budget", "error": "budget_usd 2.0 is above the configured cap of 0.5.",
      "hint": "Pass a budget_usd of at most 0.5, or omit it."}),
    ("budget not a number", {"goal": "a", "budget_usd": "lots"},
     payload('budget_usd must be a number of US dollars, got string lots.',
             hint="Pass e.g. budget_usd: 0.5, or omit it to use the configured cap.")),
    ("budget a boolean", {"goal": "a", "budget_usd": True},
     payload("budget_usd must be a number of US dollars, got boolean true.")),
    ("budget negative", {"goal": "a", "budget_usd": -1},
     {"type": "budget", "error": "budget_usd must be a positive number, got -1.0."}),
    ("budget too small", {"goal": "a", "budget_usd": 1e-9},
     {"type": "budget", "error_start": "One task on alpha may cost up to $0.000"}),
    ("budget too small, several tasks", {"tasks": [{"goal": "a"}, {"goal": "b", "model": "large"}],
                                         "budget_usd": 1e-9},
     {"type": "invalid_tasks", "tasks": [bad_task("small", "budget", "One task on alpha may cost up to"),
                                         bad_task("large", "budget", "One task on beta may cost up to")]}),
]


@pytest.mark.parametrize("args, expected", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_calls_get_exact_errors_and_run_nothing(p1, p2, args, expected):
    tools = tools_for(p1, p2)
    out = json.loads(tools.delegate_task_sync(args))
    has_tasks = "tasks" in expected
    assert set(out) == ERROR_KEYS | ({"tasks"} if has_tasks else set()), out
    assert out["type"] == expected["type"]
    assert isinstance(out["hint"], str) and out["hint"] and isinstance(out["suggestions"], list)
    if "error" in expected:
        assert out["error"] == expected["error"]
    if "error_start" in expected:
        assert out["error"].startswith(expected["error_start"]), out["error"]
    for key in ("hint", "suggestions"):
        if key in expected:
            assert out[key] == expected[key], out
    if has_tasks:
        want = expected["tasks"]
        assert len(out["tasks"]) == len(want)
        for got, exp in zip(out["tasks"], want, strict=True):
            assert set(got) == {"index", "model", "type", "problem", "suggestions"}
            if "problem_start" in exp:
                assert got["model"] == exp["model"] and got["type"] == exp["type"], got
                assert got["problem"].startswith(exp["problem_start"]), got
                if exp["suggestions"] is not None:
                    assert got["suggestions"] == exp["suggestions"]
            else:
                assert got == exp
    assert "Traceback" not in json.dumps(out)
    assert p1.stats()["requests"] == 0 and p2.stats()["requests"] == 0


def test_error_details_ambiguous_and_unknown_provider(p1, p2):
    tools = tools_for(p1, p2)
    amb = json.loads(tools.delegate_task_sync({"goal": "a", "model": "gpt-oss-120b"}))
    assert "gpt-oss-120b --provider cerebras" in amb["tasks"][0]["suggestions"]
    assert amb["suggestions"] == amb["tasks"][0]["suggestions"]  # one task: its fixes are the call's
    prov = json.loads(tools.delegate_task_sync({"goal": "a", "model": "glm-4.7 --provider openroutr"}))
    assert "openrouter" in prov["tasks"][0]["suggestions"]
    assert p1.stats()["requests"] == 0 and p2.stats()["requests"] == 0


def test_accepted_forms_parse_and_plan_without_running(p1, p2):
    tools = tools_for(p1, p2)
    # tasks as a JSON string, and the whole args as a JSON string (double-encoded too)
    inner = json.dumps([{"goal": "a", "model": "large"}, {"goal": "b", "context": "ctx"}])
    for args in ({"tasks": inner}, json.dumps({"tasks": inner}), json.dumps(json.dumps({"tasks": inner}))):
        tasks, model, budget = tools.parse_call(args)
        assert [(t.goal, t.model, t.context) for t in tasks] == [("a", "large", None), ("b", None, "ctx")]
        assert model is None and budget is None
    # null / "" model falls through: task → call → config → parent
    tasks, model, _ = tools.parse_call({"model": "large", "tasks": [{"goal": "a", "model": None},
                                                                     {"goal": "b", "model": ""},
                                                                     {"goal": "c", "model": "g"}]})
    planned, cap = tools.delegator.plan(tasks, model=model)
    assert [(p.model_requested, p.model_source, p.resolution.model) for p in planned] == [
        ("large", "call", "beta"), ("large", "call", "beta"), ("g", "task", "gamma")]
    assert cap == 0.5
    tasks, model, _ = tools.parse_call({"goal": "a", "model": None})
    assert tools.delegator.plan(tasks, model=model)[0][0].model_source == "config"
    no_default = tools_for(p1, p2, parent="large", model=None)
    tasks, model, _ = no_default.parse_call({"goal": "a", "model": ""})
    assert no_default.delegator.plan(tasks, model=model)[0][0].model_source == "parent"
    # shared top-level context with tasks; a JSON task string; numeric budget strings; a lower budget
    tasks, _, budget = tools.parse_call({"context": "repo: x", "budget_usd": "$0.25",
                                         "tasks": [{"goal": "a", "context": "file b"}, '{"goal": "c"}']})
    assert [t.context for t in tasks] == ["repo: x\n\nfile b", "repo: x"] and budget == 0.25
    # goal with an empty tasks array is one task; structured context is kept as JSON text
    tasks, _, _ = tools.parse_call({"goal": "a", "tasks": [], "context": {"files": ["x.py"]}})
    assert [(t.goal, t.context) for t in tasks] == [("a", '{"files": ["x.py"]}')]
    with pytest.raises(TaskPayloadError):
        tools.parse_call({"tasks": "nope"})
    assert p1.stats()["requests"] == 0 and p2.stats()["requests"] == 0


# -- happy path ------------------------------------------------------------------------------------------
def test_three_tasks_three_names_two_providers_in_input_order(p1, p2):
    tools = tools_for(p1, p2)
    events = []
    out = json.loads(tools.delegate_task_sync(
        {"tasks": json.dumps([{"goal": "task zero", "model": "small"}, {"goal": "task one", "model": "beta"},
                              {"goal": "task two", "model": "g"}]), "detail": "full"},
        on_event=lambda e: events.append((e.kind, e.index))))
    assert set(out) == {"results", "counts", "total_duration_s", "sum_task_duration_s", "cost", "budget",
                        "rate_limited"}
    assert out["rate_limited"] == []  # no 429s, per deployment
    res = out["results"]
    assert [r["index"] for r in res] == [0, 1, 2]
    assert [r["status"] for r in res] == ["completed"] * 3 and out["counts"] == {"completed": 3}
    assert [(r["model_requested"], r["model"], r["resolved_via"], r["model_source"]) for r in res] == [
        ("small", "alpha", "tier", "task"), ("beta", "beta", "group", "task"), ("g", "gamma", "alias", "task")]
    assert [r["deployment"]["api_host"] for r in res] == [host(p1), host(p2), host(p1)]
    assert [r["deployment"]["model"] for r in res] == ["openai/m-alpha", "openai/m-beta", "openai/m-gamma"]
    assert [r["summary"] for r in res] == ["[alpha] m-alpha: task zero", "[beta] m-beta: task one",
                                           "[alpha] m-gamma: task two"]
    assert sorted(r.model for r in p1.requests) == ["m-alpha", "m-gamma"]
    assert [r.model for r in p2.requests] == ["m-beta"]
    assert all(r["cost_usd"] and r["cost_usd"] > 0 for r in res)
    assert out["budget"]["cap_usd"] == 0.5 and out["budget"]["reserved_usd"] == 0
    assert sorted(events) == sorted([("start", i) for i in range(3)] + [("done", i) for i in range(3)])
    assert CANARY not in json.dumps(out)


def test_sync_inside_a_running_loop_and_async_api(p1, p2):
    tools = tools_for(p1, p2)

    async def main():
        inside = json.loads(tools.delegate_task_sync({"goal": "from a loop", "model": "beta"}))
        native = json.loads(await tools.delegate_task({"goal": "awaited", "model": "large"}))
        listed = json.loads(await tools.list_models())
        return inside, native, listed

    inside, native, listed = asyncio.run(main())
    assert inside["results"][0]["status"] == "completed" and native["results"][0]["status"] == "completed"
    assert listed["tiers"]["large"] == "beta"


# -- budget ----------------------------------------------------------------------------------------------
def test_budget_cap_is_never_exceeded_and_skips_are_reported():
    # Reservation per task ≈ 100 max_tokens × $1e-4 = $0.01; each reply is 80 tokens ≈ $0.008.
    # Under a $0.031 cap three tasks run at once; once they settle ($0.024 spent) no fourth fits.
    with LoopbackProvider("pb", latency_s=0.25, responder=lambda body, p: "x" * 320).start() as pb:
        cfg = config_from_dict({
            # learn_limits off: a deployment's first request would go alone, and this test is about
            # three reservations at once
            "delegation": {"budget_usd": 1.0, "max_tokens": 100, "max_concurrency": 16, "learn_limits": False},
            "router": {"model_list": [{"model_name": "priced", "litellm_params": {
                "model": "openai/m-priced", "api_base": pb.base_url, "api_key": CANARY,
                "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-4}}],
                # no retries: a reservation prices every attempt the Router may make (issue 22)
                "router_settings": {"num_retries": 0}}})
        tools = DelegateTools(Delegator(cfg, env={}))
        out = json.loads(tools.delegate_task_sync(
            {"model": "priced", "budget_usd": 0.031, "tasks": [{"goal": f"task {i}"} for i in range(6)],
             "detail": "full"}))
        res = out["results"]
        budget = out["budget"]
        assert set(budget) == {"cap_usd", "spent_usd", "reserved_usd"}
        assert budget["cap_usd"] == 0.031 and budget["reserved_usd"] == 0
        spent = sum(r["cost_usd"] or 0 for r in res)
        assert spent <= 0.031 and budget["spent_usd"] <= 0.031
        assert budget["spent_usd"] == pytest.approx(spent)
        assert out["counts"] == {"completed": 3, "skipped_budget": 3}
        for r in res:
            if r["status"] == "skipped_budget":
                assert r["error"]["type"] == "budget" and r["cost_usd"] is None and r["attempts"] == 0
                assert r["error"]["message"].startswith("Not started: the batch budget of $0.031 would be passed")
            else:
                assert r["cost_usd"] == pytest.approx(0.008, rel=0.05)
        assert pb.stats()["requests"] == 3 and pb.stats()["max_in_flight"] == 3  # overlapped, never a 4th
        assert out["cost"]["total_usd"] == pytest.approx(spent)


def test_unpriced_model_under_a_budget(p1, p2):
    cfg = {"delegation": {"budget_usd": 0.5, "max_tokens": 50}, "router": {"model_list": [
        {"model_name": "free", "litellm_params": {"model": "openai/m-free", "api_base": p1.base_url,
                                                   "api_key": CANARY}}]}}
    out = json.loads(DelegateTools(Delegator(config_from_dict(cfg), env={})).delegate_task_sync(
        {"goal": "a", "model": "free"}))
    assert out["type"] == "budget" and out["error"] == "Model free has no known price, so it cannot run under a budget."
    assert p1.stats()["requests"] == 0
    cfg["delegation"]["allow_unpriced"] = True
    out = json.loads(DelegateTools(Delegator(config_from_dict(cfg), env={})).delegate_task_sync(
        {"goal": "a", "model": "free", "detail": "full"}))
    assert out["results"][0]["status"] == "completed" and out["results"][0]["cost_usd"] is None


# -- list_models -----------------------------------------------------------------------------------------
def list_config(p1, p2):
    return config_from_dict({
        "delegation": {"model": "small", "aliases": {"small": "fast", "large": "slow", "cheap": "glm-4.7"},
                       "allow": ["small", "fast"], "max_tasks": 7},
        "router": {"model_list": [
            {"model_name": "fast", "model_info": {"id": "fast-p1"},
             "litellm_params": {"model": "openai/m-fast", "api_base": p1.base_url, "api_key": CANARY, "order": 1,
                                "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
            {"model_name": "fast",
             "model_info": {"input_cost_per_token": 3e-6, "output_cost_per_token": 4.5e-6, "max_input_tokens": 32000},
             "litellm_params": {"model": "openai/m-fast2", "api_base": p2.base_url, "api_key": "os.environ/LB_TEST_KEY",
                                "order": 2}},
            {"model_name": "slow",
             "litellm_params": {"model": "openai/m-slow", "api_base": p2.base_url.replace("//", f"//user:{CANARY}@"),
                                "api_key": "os.environ/LB_MISSING_KEY"}},
        ]}})


def test_list_models_reports_what_the_agent_may_pick(p1, p2):
    tools = DelegateTools(Delegator(list_config(p1, p2), env={"LB_TEST_KEY": ENV_SECRET}))
    text = tools.list_models_sync()
    assert CANARY not in text and ENV_SECRET not in text and "user:" not in text
    out = json.loads(text)
    assert out["tiers"] == {"small": "fast", "large": "slow"}
    assert out["aliases"] == {"cheap": "zai/glm-4.7"}
    assert out["default"] == {"model": "small", "resolves_to": "fast"} and out["parent"] is None
    assert out["groups"] == {
        "fast": {"on_allowlist": True, "deployments": [
            {"provider": "openai", "deployment_id": "fast-p1", "model": "openai/m-fast", "api_host": host(p1),
             "context_window": None, "input_per_1m": 1.0, "output_per_1m": 2.0,
             "credentials": "set", "key_env": None, "cooling_down": False, "limits": None},
            {"provider": "openai", "deployment_id": "openai/m-fast2", "model": "openai/m-fast2", "api_host": host(p2),
             "context_window": 32000, "input_per_1m": 3.0, "output_per_1m": 4.5,
             "credentials": "set", "key_env": "LB_TEST_KEY", "cooling_down": False, "limits": None}]},
        "slow": {"on_allowlist": False, "deployments": [
            {"provider": "openai", "deployment_id": "openai/m-slow", "model": "openai/m-slow", "api_host": host(p2),
             "context_window": None, "input_per_1m": None, "output_per_1m": None,
             "credentials": "missing", "key_env": "LB_MISSING_KEY", "cooling_down": False, "limits": None}]},
    }
    glm = out["models"]["zai/glm-4.7"]
    assert glm["provider"] == "zai" and glm["on_allowlist"] is False
    assert glm["credentials"] == "missing" and glm["key_env"] == "ZAI_API_KEY"
    assert glm["input_per_1m"] > 0 and glm["context_window"] > 0
    assert out["families"]["haiku"].startswith("anthropic/claude-haiku-")
    assert out["allowlist"] == {"patterns": ["small", "fast"], "allowed": ["small", "fast"]}
    assert out["limits"]["max_tasks"] == 7 and out["warnings"] == []
    # one model string, checked
    one = json.loads(tools.list_models_sync('{"model": "cheap"}'))
    assert (one["resolves_to"], one["resolved_via"], one["on_allowlist"]) == ("zai/glm-4.7", "alias", False)
    bad = json.loads(tools.list_models_sync({"model": "openrouter:stepfun/step-3.5-flash"}))
    assert bad["type"] == "spec" and bad["suggestions"] == [COLON_FIX]
    assert json.loads(tools.list_models_sync("[1]"))["type"] == "payload"
    assert p1.stats()["requests"] == 0 and p2.stats()["requests"] == 0


def test_list_models_shows_a_deployment_cooling_down(p1, p2, monkeypatch):
    monkeypatch.setenv("LB_TEST_KEY", ENV_SECRET)  # the Router reads os.environ/LB_TEST_KEY itself
    tools = DelegateTools(Delegator(list_config(p1, p2), env={"LB_TEST_KEY": ENV_SECRET}))
    p1.script(["429"] * 3)
    # the cooldown lasts the provider's Retry-After: make it outlast a slow machine
    monkeypatch.setattr(p1, "retry_after", 30.0)
    out = json.loads(tools.delegate_task_sync({"goal": "hello", "model": "small", "detail": "full"}))
    r = out["results"][0]
    assert r["status"] == "completed" and r["deployment"]["api_host"] == host(p2)
    deps = json.loads(tools.list_models_sync())["groups"]["fast"]["deployments"]
    assert [(d["deployment_id"], d["cooling_down"]) for d in deps] == [("fast-p1", True), ("openai/m-fast2", False)]


def test_list_models_reads_keys_where_the_resolver_does(p1):
    """A key given under the LiteLLM config's `environment_variables:` is set for check_callable, the
    Router and list_models alike: every reader goes through the Resolver's env lookup."""
    key = "sk-from-env-section-0123456"
    cfg = config_from_dict({"delegation": {"model": "fast"}, "router": {
        "environment_variables": {"HD_T_SECTION_KEY": key},
        "model_list": [{"model_name": "fast", "litellm_params": {
            "model": "openai/m-fast", "api_base": p1.base_url, "api_key": "os.environ/HD_T_SECTION_KEY"}}]}})
    d = Delegator(cfg, env={})  # neither the process env nor the Delegator's has the key
    d.resolver.check_callable(d.resolver.resolve("fast"))  # callable: the key is set
    tools = DelegateTools(d)
    text = tools.list_models_sync()
    (dep,) = json.loads(text)["groups"]["fast"]["deployments"]
    assert (dep["credentials"], dep["key_env"]) == ("set", "HD_T_SECTION_KEY")
    direct = json.loads(tools.list_models_sync({"model": "openai/m-fast"}))  # borrows the deployment's key
    assert (direct["credentials"], direct["key_env"]) == ("set", "HD_T_SECTION_KEY")
    run = tools.delegate_task_sync({"goal": "hi", "model": "fast"})
    assert json.loads(run)["results"][0]["status"] == "completed"
    assert key not in text + run


# -- schema ----------------------------------------------------------------------------------------------
def test_schema_teaches_the_model_string_and_lists_the_config(p1, p2):
    tools = tools_for(p1, p2, parent="anthropic/claude-opus-4-6")
    fn = tools.delegate_task_function()
    assert set(fn) == {"name", "description", "parameters"} and fn["name"] == "delegate_task"
    text = json.dumps(fn, ensure_ascii=False)
    for example in ("`glm-4.7`", "`haiku`", "`small`", "`stepfun/step-3.5-flash --provider openrouter`",
                    "`claude-opus-4-6 --provider anthropic`"):
        assert example in text
    assert "Precedence: task model > call model > config default > parent (your own model)." in text
    assert "DO NOT write the colon-prefix form `openrouter:stepfun/step-3.5-flash`" in text
    assert 'null or \\"\\" means unset' in text
    desc = fn["description"]
    assert "Configured tiers: small→alpha, large→beta." in desc
    assert "Configured aliases: g→gamma, cheap→zai/glm-4.7." in desc
    assert "Model groups: alpha, beta, gamma." in desc
    assert "Allowed models only: small, large, g, alpha, beta, gamma, zai/*" in desc
    assert "at most 5 tasks per call; budget $0.50 per call" in desc
    assert "Parent (your model): anthropic/claude-opus-4-6." in desc
    params = fn["parameters"]
    assert set(params["properties"]) == {"goal", "context", "model", "tasks", "budget_usd", "output_schema",
                                         "files", "detail"}
    assert params["required"] == [] and params["properties"]["tasks"]["maxItems"] == 5
    assert params["properties"]["tasks"]["items"]["required"] == ["goal"]
    assert len(json.dumps(tools.openai_tools())) < 4000  # sent on every request
    lm = tools.list_models_function()
    assert lm["name"] == "list_models" and lm["parameters"]["required"] == []
    assert [t["type"] for t in tools.openai_tools()] == ["function", "function"]
    # built from the live config: another delegator, another description; custom names carry through
    tools.delegator = Delegator(config_from_dict({"delegation": {"aliases": {"tiny": "haiku"}}}), env={})
    assert "Configured tiers: tiny→anthropic/claude-haiku-" in tools.delegate_task_function()["description"]
    named = DelegateTools(tools.delegator, tool_name="delegate", list_name="models")
    assert named.delegate_task_function()["name"] == "delegate" and "models shows prices" in \
        named.delegate_task_function()["description"]
    assert "delegate may use" in named.list_models_function()["description"]


def test_constructing_tools_and_schemas_does_not_import_litellm():
    code = textwrap.dedent(f"""
        import sys
        from hermes_delegate import Delegator, config_from_dict
        from hermes_delegate.tools.delegate_tools import DelegateTools
        cfg = config_from_dict({{"delegation": {{"aliases": {{"small": "haiku", "cheap": "glm-4.7"}},
                                               "allow": ["small"]}},
            "router": {{"model_list": [{{"model_name": "g", "litellm_params": {{"model": "openai/x",
                                                                            "api_key": "{CANARY}"}}}}]}}}})
        t = DelegateTools(Delegator(cfg))
        t.delegate_task_function(); t.list_models_function(); t.openai_tools()
        t.parse_call({{"goal": "x", "model": "small"}})
        print("litellm" in sys.modules)
    """)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- the error boundary ----------------------------------------------------------------------------------
def test_unexpected_exceptions_become_internal_errors_and_are_logged_redacted(p1, p2, caplog, monkeypatch):
    tools = tools_for(p1, p2)

    def boom(*a, **k):
        raise KeyError(f"secret {CANARY} at https://user:pw@example.com/v1")

    monkeypatch.setattr(tools.delegator, "plan", boom)
    with caplog.at_level(logging.ERROR, logger="hermes_delegate.tools.delegate_tools"):
        out = json.loads(tools.delegate_task_sync({"goal": "a"}))
    assert out == {"error": "internal error: KeyError", "type": "internal", "suggestions": [],
                   "hint": "Not caused by your call (it is logged). Retry once; if it fails again, do the work "
                           "without delegating."}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "KeyError" in logged and CANARY not in logged and "user:pw" not in logged

    async def broken(*a, **k):
        raise AttributeError("nope")

    monkeypatch.setattr(tools.delegator, "model_listing", broken)  # the one listing is the Delegator's
    assert json.loads(tools.list_models_sync())["error"] == "internal error: AttributeError"


def test_tool_error_mapping_redacts_and_covers_provider_errors():
    from hermes_delegate import ProviderError, UnknownModelError

    err = UnknownModelError(f"Unknown model {CANARY!r} at https://u:p@h.example/x", hint="h", suggestions=["a"])
    out = tool_error(err)
    assert set(out) == ERROR_KEYS and out["type"] == "unknown_model" and out["suggestions"] == ["a"]
    assert CANARY not in json.dumps(out) and "u:p@" not in json.dumps(out)
    perr = tool_error(ProviderError("rate_limit", "slow down", status_code=429))
    assert perr == {"error": "slow down", "hint": "", "suggestions": [], "type": "rate_limit", "retryable": True}
