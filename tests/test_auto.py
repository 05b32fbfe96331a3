"""`model: auto` (LiteLLM's complexity classifier picks the tier) and `on_over_budget: downgrade`
(a task that does not fit moves down the tier ladder; `opus!` pins), issue 22 items 4 and 5.

Through the real Router to the loopback providers: what each provider received is what a user would
check. The classifier is compared with LiteLLM's own, called directly on the same text.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LoopbackPair, loopback_config

from hermes_delegate import (BatchValidationError, BudgetError, ConfigError, Delegator, Task, config_from_dict)
from hermes_delegate.core.grammar import parse_model_string

litellm_cr = pytest.importorskip("litellm.router_strategy.complexity_router.complexity_router")
evals = pytest.importorskip("litellm.router_strategy.complexity_router.evals.eval_complexity_router")

LADDER = {"small": "alpha", "medium": "both", "large": "beta"}
#: what each alias's group sends to the provider (`both` is served by either)
SENT = {"small": {"alpha-model"}, "medium": {"alpha-model", "beta-model"}, "large": {"beta-model"}}
OWN_PROMPTS = [
    ("List the files in the repo", None),
    ("Review this function for bugs", "def f(x):\n    return x / 0\n# class Foo: async await import"),
    ("Step by step, reason through the trade-offs of sharding the orders table; think carefully "
     "and analyze the algorithm, the database schema and the distributed transaction protocol.", None),
]


def litellm_tier(text: str, config: dict[str, Any] | None = None) -> tuple[str, float]:
    """LiteLLM's classifier, called directly (as its own eval suite does)."""
    # its Router is the second argument (1.106 `litellm_router_instance`, 1.110 `ctx`); classify ignores it
    router = litellm_cr.ComplexityRouter("direct", None, complexity_router_config=config)
    tier, score, _signals = router.classify(text)
    return tier.value, score


def sent_models(providers: LoopbackPair) -> list[str]:
    return sorted(r.model for p in providers for r in p.requests)


def first_prompt(tier: str) -> str:
    return next(c.prompt for c in evals.EVAL_CASES if litellm_tier(c.prompt)[0] == tier)


# -- auto picks LiteLLM's tier ---------------------------------------------------------------------
def test_auto_picks_the_tier_litellms_classifier_picks(providers: LoopbackPair):
    cases = [(c.prompt, None) for c in evals.EVAL_CASES] + OWN_PROMPTS
    d = Delegator(loopback_config(providers, aliases=LADDER, max_concurrency=8))
    batch = d.run_sync([Task(goal, context=ctx, model="auto") for goal, ctx in cases]).to_dict()
    assert batch["counts"] == {"completed": len(cases)}
    mapping = {"SIMPLE": "small", "MEDIUM": "medium", "COMPLEX": "large", "REASONING": "large"}
    seen = set()
    for (goal, ctx), r in zip(cases, batch["results"], strict=True):
        tier, score = litellm_tier(f"{goal}\n\n{ctx}" if ctx else goal)
        seen.add(tier)
        assert r["auto"] == {"tier": tier, "score": round(score, 4), "model": mapping[tier]}, goal
        assert r["resolved_via"] == "auto" and r["model_requested"] == "auto" and r["model_source"] == "task"
        assert r["model"] == LADDER[mapping[tier]]
        assert r["deployment"]["model"].split("/")[-1] in SENT[mapping[tier]]
        assert r["downgraded_from"] is None
    assert seen == {"SIMPLE", "MEDIUM", "COMPLEX", "REASONING"}  # every tier was exercised
    assert len(sent_models(providers)) == len(cases)


def test_auto_at_every_precedence_level(providers: LoopbackPair):
    simple, hard = first_prompt("SIMPLE"), first_prompt("REASONING")
    # task level beats the call's model; a task's own model beats a call-level auto
    d = Delegator(loopback_config(providers))
    out = d.run_sync([Task(hard, model="auto"), Task(simple, model="large")], model="small").to_dict()
    (a, b) = out["results"]
    assert (a["model_source"], a["resolved_via"], a["model"], a["auto"]["tier"]) == ("task", "auto", "beta",
                                                                                      "REASONING")
    assert (b["model_source"], b["resolved_via"], b["auto"], b["model"]) == ("task", "tier", None, "beta")
    out = d.run_sync([Task(simple), Task(hard, model="small")], model="auto").to_dict()
    (a, b) = out["results"]
    assert (a["model_source"], a["resolved_via"], a["model"], a["auto"]["tier"]) == ("call", "auto", "alpha", "SIMPLE")
    assert (b["model_source"], b["resolved_via"], b["auto"]) == ("task", "tier", None)
    # the config default
    d = Delegator(loopback_config(providers, model="auto"))
    out = d.run_sync([Task(simple), Task(hard)]).to_dict()
    assert [(r["model_source"], r["resolved_via"], r["model"]) for r in out["results"]] == [
        ("config", "auto", "alpha"), ("config", "auto", "beta")]
    assert sent_models(providers) == sorted(["beta-model", "beta-model", "alpha-model", "alpha-model",
                                             "alpha-model", "beta-model"])


def test_a_tier_mapped_to_an_undefined_alias_is_a_typed_error_before_anything_is_sent(providers: LoopbackPair):
    medium = first_prompt("MEDIUM")
    d = Delegator(loopback_config(providers))  # aliases small and large only: MEDIUM → medium is undefined
    with pytest.raises(BatchValidationError) as info:
        d.run_sync([Task(first_prompt("SIMPLE"), model="auto"), Task(medium, model="auto")])
    (problem,) = info.value.problems
    assert problem.index == 1 and problem.type == "config"
    assert "classified MEDIUM" in problem.problem and "'medium'" in problem.problem
    assert "delegation.aliases" in problem.problem  # says what to do
    assert sent_models(providers) == []
    # mapping the tier to a defined one fixes it
    d = Delegator(loopback_config(providers, auto={"MEDIUM": "small"}))
    out = d.run_sync([Task(medium, model="auto")]).to_dict()
    assert out["results"][0]["auto"]["model"] == "small" and out["results"][0]["model"] == "alpha"


def test_bad_auto_settings_are_config_errors():
    for bad, says in [({"MEDUIM": "small"}, "not a complexity tier"), ({"SIMPLE": ""}, "model string"),
                      ({"classifier_type": "llm"}, "locally"), ({"tiers": {"SIMPLE": "x"}}, "directly under"),
                      ({"adaptive": True}, "local scorer")]:
        with pytest.raises(ConfigError) as info:
            config_from_dict({"delegation": {"auto": bad}})
        assert says in str(info.value), (bad, str(info.value))
    # a scorer key LiteLLM's own config model refuses: typed, at plan time, nothing sent
    cfg = config_from_dict({"delegation": {"aliases": {"small": "openai/x"}, "auto": {"tier_boundaries": "high"}}})
    with pytest.raises(BatchValidationError) as info:
        Delegator(cfg, env={"OPENAI_API_KEY": "k"}).plan([Task("a", model="auto"), Task("b", model="auto")])
    assert {p.type for p in info.value.problems} == {"config"}
    assert "complexity_router_config" in info.value.problems[0].problem


def test_litellm_scorer_settings_pass_through(providers: LoopbackPair):
    tuned = {"tier_boundaries": {"simple_medium": -0.5, "medium_complex": 0.9, "complex_reasoning": 0.95}}
    assert litellm_tier("Hello!")[0] == "SIMPLE" and litellm_tier("Hello!", tuned)[0] == "MEDIUM"
    d = Delegator(loopback_config(providers, aliases=LADDER, auto=tuned))
    out = d.run_sync([Task("Hello!", model="auto")]).to_dict()
    assert out["results"][0]["auto"]["tier"] == "MEDIUM" and out["results"][0]["model"] == "both"


def test_the_allowlist_refuses_the_auto_chosen_model(providers: LoopbackPair):
    d = Delegator(loopback_config(providers, allow=["small"]))
    with pytest.raises(BatchValidationError) as info:
        d.run_sync([Task(first_prompt("SIMPLE"), model="auto"), Task(first_prompt("REASONING"), model="auto")])
    (problem,) = info.value.problems
    assert problem.index == 1 and problem.type == "not_allowed" and "beta" in problem.problem
    assert sent_models(providers) == []
    out = d.run_sync([Task(first_prompt("SIMPLE"), model="auto")]).to_dict()
    assert out["results"][0]["status"] == "completed" and sent_models(providers) == ["alpha-model"]


# -- over budget: downgrade -------------------------------------------------------------------------
def priced(providers: LoopbackPair, **delegation: Any):
    """small → cheap (alpha), large → dear (beta): a dear task reserves ~100× a cheap one."""
    extra = [
        {"model_name": "cheap", "model_info": {"id": "cheap-1"}, "litellm_params": {
            "model": "openai/cheap-model", "api_base": providers.alpha.base_url, "api_key": "sk-loopback",
            "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-6}},
        {"model_name": "dear", "model_info": {"id": "dear-1"}, "litellm_params": {
            "model": "openai/dear-model", "api_base": providers.beta.base_url, "api_key": "sk-loopback",
            "input_cost_per_token": 1e-5, "output_cost_per_token": 1e-4}},
    ]
    settings = {"aliases": {"small": "cheap", "large": "dear"}, "max_tokens": 100, "learn_limits": False,
                "budget": {"on_over_budget": "downgrade"}, **delegation}
    return loopback_config(providers, model_list_extra=extra, **settings)


def test_downgrade_completes_a_batch_within_budget(providers: LoopbackPair):
    # one dear task reserves ~$0.0107, a cheap one ~$0.0001; the cap fits only the cheap ones
    tasks = [Task(f"task {i}", model="large") for i in range(4)] + [Task(first_prompt("REASONING"), model="auto")]
    refusing = Delegator(priced(providers, budget={"on_over_budget": "refuse"}))
    with pytest.raises(BatchValidationError) as info:
        refusing.run_sync(tasks, budget_usd=0.005)
    assert {p.type for p in info.value.problems} == {"budget"} and sent_models(providers) == []

    out = Delegator(priced(providers)).run_sync(tasks, budget_usd=0.005).to_dict()
    assert out["counts"] == {"completed": 5}
    for r in out["results"]:
        assert (r["model"], r["downgraded_from"], r["deployment"]["model"]) == ("cheap", "large", "openai/cheap-model")
    assert out["results"][4]["resolved_via"] == "auto" and out["results"][4]["auto"]["model"] == "large"
    assert out["budget"]["spent_usd"] <= 0.005 and out["cost"]["total_usd"] <= 0.005
    assert sent_models(providers) == ["cheap-model"] * 5  # the dear model was never sent a request
    assert providers.beta.requests == []


def test_downgrade_at_run_time_when_the_batch_budget_runs_low(providers: LoopbackPair):
    """One task at a time: each dear task costs about its reservation, so after three the fourth dear one
    no longer fits: it (and the rest) move to the cheap tier instead of being skipped."""
    providers.alpha.responder = providers.beta.responder = lambda body, p: "x" * 400  # 100 tokens = max_tokens
    d = Delegator(priced(providers, max_concurrency=1))
    (probe,), _ = d.plan([Task("task 0", model="large")], budget_usd=1.0)
    cap = round(probe.reserve_usd * 3.5, 6)
    tasks = [Task(f"task {i}", model="large") for i in range(6)]
    out = d.run_sync(tasks, budget_usd=cap).to_dict()
    assert out["counts"] == {"completed": 6}
    on = [(r["model"], r["downgraded_from"]) for r in out["results"]]
    assert sorted(on) == sorted([("dear", None)] * 3 + [("cheap", "large")] * 3)
    assert out["budget"]["spent_usd"] <= cap
    assert sent_models(providers) == ["cheap-model"] * 3 + ["dear-model"] * 3
    # refuse: the same batch skips what does not fit (today's behaviour)
    d = Delegator(priced(providers, max_concurrency=1, budget={"on_over_budget": "refuse"}))
    out = d.run_sync(tasks, budget_usd=cap).to_dict()
    assert out["counts"] == {"completed": 3, "skipped_budget": 3}


def test_a_pinned_model_is_refused_not_downgraded(providers: LoopbackPair):
    d = Delegator(priced(providers))
    with pytest.raises(BudgetError) as one:
        d.run_sync([Task("a", model="large!")], budget_usd=0.005)
    assert "pinned" in one.value.message
    with pytest.raises(BatchValidationError) as info:
        d.run_sync([Task("a", model="large!"), Task("b", model="large")], budget_usd=0.005)
    (problem,) = info.value.problems
    assert problem.index == 0 and problem.type == "budget" and "pinned (`!`)" in problem.problem
    with pytest.raises(BatchValidationError):  # `auto!` pins the model auto picks
        d.run_sync([Task(first_prompt("REASONING"), model="auto!"), Task("b")], budget_usd=0.005, model="small")
    assert sent_models(providers) == []
    # within budget a pinned model runs as itself
    out = d.run_sync([Task("a", model="large!")], budget_usd=1.0).to_dict()
    r = out["results"][0]
    assert (r["model_requested"], r["model"], r["downgraded_from"]) == ("large!", "dear", None)
    assert sent_models(providers) == ["dear-model"]


def test_downgrade_never_moves_up_the_ladder(providers: LoopbackPair):
    # the ladder says small < medium < large, but large (priced: $2e-6/out) is cheaper than medium (dear)
    d = Delegator(priced(providers, aliases={"small": "cheap", "medium": "dear", "large": "priced"},
                         tiers=["small", "medium", "large"]))
    out = d.run_sync([Task("a", model="medium")], budget_usd=0.005).to_dict()
    r = out["results"][0]
    assert (r["model"], r["downgraded_from"]) == ("cheap", "medium")  # down to small, never up to large
    # nothing below the bottom rung: refused, even though a higher rung would fit
    d = Delegator(priced(providers, aliases={"small": "dear", "large": "cheap"}))
    with pytest.raises(BudgetError) as info:
        d.run_sync([Task("a", model="small")], budget_usd=0.005)
    assert "No cheaper tier below it" in info.value.message
    assert sent_models(providers) == ["cheap-model"]


def test_downgrade_respects_the_allowlist():
    cfg = config_from_dict({"delegation": {
        "aliases": {"small": "haiku", "medium": "sonnet", "large": "opus"}, "allow": ["medium", "large"],
        "max_tokens": 1000, "budget": {"on_over_budget": "downgrade"}}})
    d = Delegator(cfg, env={"ANTHROPIC_API_KEY": "k"})
    (big,), _ = d.plan([Task("a", model="large")], budget_usd=10)
    (mid,), _ = d.plan([Task("a", model="medium")], budget_usd=10)
    (p,), _ = d.plan([Task("a", model="large")], budget_usd=(big.reserve_usd + mid.reserve_usd) / 2)
    assert (p.model_requested, p.downgraded_from, p.resolution.model) == ("large", "large", mid.resolution.model)
    assert p.fallbacks == ()  # small is not allowed: never a fallback
    with pytest.raises(BudgetError):
        d.plan([Task("a", model="medium")], budget_usd=mid.reserve_usd / 2)


# -- the grammar and the schemas -------------------------------------------------------------------
def test_pin_grammar():
    spec = parse_model_string("opus!")
    assert (spec.name, spec.pinned, spec.unpinned().raw) == ("opus", True, "opus")
    spec = parse_model_string("opus:thinking! --provider anthropic")
    assert (spec.base, spec.provider, spec.pinned) == ("opus:thinking", "anthropic", True)
    assert not parse_model_string("opus").pinned
    for bad in ("!", "opus!!", "op!us"):
        with pytest.raises(Exception) as info:
            parse_model_string(bad)
        assert type(info.value).__name__ == "SpecError"


def test_the_schemas_list_auto():
    from hermes_delegate import DelegateTools
    from hermes_delegate_hermes.schema import extended_builtin_schema

    fn = DelegateTools(Delegator(config_from_dict({}), env={})).delegate_task_function()
    props = fn["parameters"]["properties"]
    for prop in (props["model"], props["tasks"]["items"]["properties"]["model"]):
        assert "`auto`" in prop["description"]
    # the hermes plugin extends the built-in delegate_task with the same `model` property
    hermes = extended_builtin_schema({"description": "built-in", "parameters": {"type": "object", "properties": {}}})
    assert "`auto`" in hermes["parameters"]["properties"]["model"]["description"]
    assert "`auto`" in hermes["parameters"]["properties"]["tasks"]["items"]["properties"]["model"]["description"]


def test_list_models_and_doctor_show_the_auto_mapping(providers: LoopbackPair):
    import json

    from hermes_delegate import DelegateTools

    d = Delegator(loopback_config(providers, model="auto", allow=["small"]))
    out = json.loads(DelegateTools(d).list_models_sync({"model": "auto"}))
    assert out["resolved_via"] == "auto"
    assert out["tiers"]["SIMPLE"] == {"model": "small", "resolves_to": "alpha", "on_allowlist": True}
    assert out["tiers"]["COMPLEX"]["on_allowlist"] is False
    assert "not configured" in out["tiers"]["MEDIUM"]["error"]
    report = d.doctor()
    assert [p for p in report["problems"] if p.startswith("delegation.auto.MEDIUM")]  # the default model is auto
    assert not [p for p in report["problems"] if p.startswith("auto:")]  # `auto` itself is no unknown model


def test_the_hermes_block_takes_auto_the_ladder_and_downgrade():
    from hermes_delegate_hermes.settings import plugin_dict

    d = plugin_dict({"hermes_delegate": {"tiers": ["small", "large"], "aliases": {"small": "haiku", "large": "opus"},
                                         "budget": {"on_over_budget": "downgrade"}, "model": "auto",
                                         "auto": {"MEDIUM": "small"}}})
    s = config_from_dict(d).delegation
    assert (s.tiers, s.budget.on_over_budget, s.model, s.auto) == (["small", "large"], "downgrade", "auto",
                                                                   {"MEDIUM": "small"})
    # a tiers mapping stays what it was: aliases (their tier names, in order, are then the ladder)
    d = plugin_dict({"hermes_delegate": {"tiers": {"small": "haiku", "large": "opus"}}})
    assert d["delegation"]["aliases"] == {"small": "haiku", "large": "opus"} and "tiers" not in d["delegation"]


def test_auto_settings_and_downgrade_plan_without_importing_litellm(tmp_path):
    """The classifier is built on the first `auto` task only: a config with auto settings, a ladder and
    downgrade plans (and downgrades) a batch without auto in a process that never imports litellm."""
    import json
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent("""
        import json, sys
        from hermes_delegate import Delegator, Task, config_from_dict
        cfg = config_from_dict({"delegation": {
            "aliases": {"small": "haiku", "large": "opus"}, "max_tokens": 1000, "tiers": ["small", "large"],
            "budget": {"on_over_budget": "downgrade"},
            "auto": {"MEDIUM": "small", "tier_boundaries": {"simple_medium": 0.2}}}})
        d = Delegator(cfg, env={"ANTHROPIC_API_KEY": "k"})
        (p,), _ = d.plan([Task("a", model="large")], budget_usd=0.005)
        litellm = sorted(m for m in sys.modules if m.startswith("litellm"))
        print(json.dumps({"from": p.downgraded_from, "litellm": litellm}))
    """)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"from": "large", "litellm": []}
