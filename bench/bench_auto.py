"""`model: auto` (issue 22): what classifying a task costs, whether it agrees with LiteLLM, what it saves.

    python bench/bench_auto.py            # ~15 s
    python bench/bench_auto.py --quick    # a smoke run, ~8 s

No provider and no network: everything here is planning (pure) plus LiteLLM's local classifier.

1. Classification time per task: `Delegator.auto_classifier(text)` (LiteLLM's `ComplexityRouter.classify`
   behind our wrapper), median over LiteLLM's eval prompts × rounds; beside it LiteLLM's classifier
   called directly (the baseline, same run), and what `auto` adds to `Delegator.plan` per task (the
   median one-task plan with `model: auto` minus the same with an explicit model). Goal: the median
   ≤ 1 ms per task. Means are not used: on a shared machine a few calls in a hundred are preempted
   for 5–30 ms by other processes, whatever they run. The one-time cost (litellm's import, when nothing
   imported it before) is measured in a fresh process and reported apart.
2. Agreement with LiteLLM's classifier on its own eval cases
   (`litellm.router_strategy.complexity_router.evals.eval_complexity_router.EVAL_CASES`): the tier
   `plan` chose for each case ÷ the tier LiteLLM's classifier gives the same text. Goal: 100 %.
3. Catalog cost of those cases under `auto`, with the ladder small=haiku, medium=sonnet, large=opus
   (the built-in families, priced from litellm's catalog), ÷ the same cases all on the top tier (opus).
   Each task is priced as the budget prices it: its input (≈ chars/3) plus max_tokens (1000) of output.

Writes bench/out/auto.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
GOAL_MS = 1.0
LADDER = {"small": "haiku", "medium": "sonnet", "large": "opus"}
MAX_TOKENS = 1000

FIRST_PLAN = """
import json, sys, time
t0 = time.perf_counter()
from hermes_delegate import Delegator, Task, config_from_dict
t1 = time.perf_counter()
d = Delegator(config_from_dict({"delegation": {"aliases": %r}}), env={"ANTHROPIC_API_KEY": "k"})
t2 = time.perf_counter()
d.plan([Task("What is Python?", model="auto")])
t3 = time.perf_counter()
d.plan([Task("Design a distributed cache", model="auto")])
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_auto_plan_s": t3 - t2, "second_auto_plan_s": t4 - t3}))
""" % (LADDER,)


def first_plan_in_fresh_process() -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", FIRST_PLAN], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_us(fn, items, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        for item in items:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = ap.parse_args()
    rounds = 20 if args.quick else 200
    plan_rounds = 10 if args.quick else 100

    from litellm.router_strategy.complexity_router.complexity_router import ComplexityRouter
    from litellm.router_strategy.complexity_router.evals.eval_complexity_router import EVAL_CASES

    from hermes_delegate import Delegator, Task, config_from_dict

    d = Delegator(config_from_dict({"delegation": {"aliases": LADDER, "max_tokens": MAX_TOKENS}}),
                  env={"ANTHROPIC_API_KEY": "k"})
    # its Router: unused by classify (1.106 litellm_router_instance, 1.110 ctx)
    direct = ComplexityRouter("bench", None)
    prompts = [c.prompt for c in EVAL_CASES]

    # 1. time per task
    d.auto_classifier(prompts[0])  # built (litellm is imported already, by the line above)
    ours_us = median_us(d.auto_classifier, prompts, rounds)
    direct_us = median_us(direct.classify, prompts, rounds)
    auto_tasks = [Task(p, model="auto") for p in prompts]
    fixed_tasks = [Task(p, model="large") for p in prompts]
    # one-task batches, so the median drops the rounds another process preempted (the machine is shared)
    plan_auto_us = median_us(lambda t: d.plan([t]), auto_tasks, plan_rounds)
    plan_fixed_us = median_us(lambda t: d.plan([t]), fixed_tasks, plan_rounds)
    plan_added_us = plan_auto_us - plan_fixed_us
    fresh = first_plan_in_fresh_process()

    # 2. agreement, 3. cost (priced as the budget prices a task: input + max_tokens of output)
    planned_auto, _ = d.plan(auto_tasks, budget_usd=1000)
    planned_top, _ = d.plan(fixed_tasks, budget_usd=1000)
    agree = 0
    tiers: dict[str, int] = {}
    litellm_pass = 0
    for case, p in zip(EVAL_CASES, planned_auto, strict=True):
        tier = direct.classify(case.prompt)[0]
        agree += p.auto is not None and p.auto.tier == tier.value
        tiers[tier.value] = tiers.get(tier.value, 0) + 1
        litellm_pass += tier == case.expected_tier or tier in (case.acceptable_tiers or ())
    cost_auto = sum(p.reserve_usd or 0 for p in planned_auto)
    cost_top = sum(p.reserve_usd or 0 for p in planned_top)
    models = {name: d.resolver.resolve(name).model for name in LADDER}

    out = {
        "cases": len(EVAL_CASES),
        "classify_median_us": round(ours_us, 1),
        "litellm_direct_median_us": round(direct_us, 1),
        "plan_added_per_task_us": round(plan_added_us, 1),
        "plan_auto_one_task_us": round(plan_auto_us, 1),
        "plan_fixed_one_task_us": round(plan_fixed_us, 1),
        "fresh_process": {k: round(v, 6) for k, v in fresh.items()},
        "agreement": agree / len(EVAL_CASES),
        "tiers": tiers,
        "litellm_eval_pass": f"{litellm_pass}/{len(EVAL_CASES)}",
        "ladder": models,
        "cost_auto_usd": round(cost_auto, 6),
        "cost_top_usd": round(cost_top, 6),
        "cost_ratio": round(cost_auto / cost_top, 4),
        "rounds": rounds,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "auto.json").write_text(json.dumps(out, indent=2))
    ok = ours_us / 1000 <= GOAL_MS
    print(f"{'metric':58s} {'measured':>16s}  goal")
    print(f"{'classification, median per task (ours)':58s} {ours_us / 1000:13.4f} ms  ≤ {GOAL_MS} ms "
          f"{'ok' if ok else 'MISSED'}")
    print(f"{'  LiteLLM classify() called directly (baseline)':58s} {direct_us / 1000:13.4f} ms")
    print(f"{'  added to Delegator.plan per task (auto − explicit)':58s} {plan_added_us / 1000:13.4f} ms")
    print(f"{'  fresh process: first auto plan (imports litellm)':58s} {fresh['first_auto_plan_s']:14.2f} s")
    print(f"{'  fresh process: second auto plan':58s} {fresh['second_auto_plan_s'] * 1000:13.3f} ms")
    print(f"{'agreement with LiteLLM on its eval cases':58s} {agree}/{len(EVAL_CASES)} = {out['agreement']:.0%}"
          f"  100 % {'ok' if agree == len(EVAL_CASES) else 'MISSED'}")
    print(f"{'  tiers':58s} {tiers}")
    print(f"{'  LiteLLM eval pass rate (its expected tiers, for context)':58s} {out['litellm_eval_pass']:>16s}")
    print(f"{'catalog cost under auto ÷ all on ' + models['large']:58s} {out['cost_ratio']:16.4f}"
          f"  (${cost_auto:.4f} vs ${cost_top:.4f})")
    print(f"ladder: {models}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
