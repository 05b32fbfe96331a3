"""A short batch over three deployments ÷ the same on one (issue 14, "No fixed cost per batch").

    python bench/bench_short_batch.py            # 72 tasks, 3 rounds per side (~1 min)

Each deployment is a loopback provider that holds at most 4 requests at once (429 beyond) with
latency 0.2 s, served from a process of its own (bench/_providers.py: a real provider does not
share the client's CPU), and the config says so (`max_parallel_requests: 4`, no rpm/tpm). One side
has one deployment, the other three in one group. Each side runs in a fresh process as a long-lived host
would: build the Delegator, `warm_up(calls=True)` (what the MCP server and the hermes plugin do in
the background at start-up), sit idle 1 s, then run the 72-task batch `rounds` times. The first
batch pays whatever a batch pays once per process (first request per deployment, client set-up);
the later ones show the steady state.

Goal: the first batch's wall time on one deployment ÷ on three ≥ 2.8 (the ideal is 3: 18 vs 6
waves of 0.2 s). Writes bench/out/short_batch.json.

Baseline, in the same run: LiteLLM's Router alone, the same warm-up and batches, each task sent
straight to a deployment chosen round-robin (`model=<deployment id>`) behind a semaphore of 4 per
deployment: the best a client can do through litellm on this machine, with no queue, no hooks and
no result building. Its 1 ÷ 3 ratio shows what litellm's own per-request time leaves of the ideal 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
GOAL = 2.8


def side_main(n_deps: int, n: int, rounds: int, latency: float, raw: bool = False) -> None:
    from _providers import RemoteProviders
    from hermes_delegate import Delegator, Task, config_from_dict

    providers = RemoteProviders([{"name": f"d{i + 1}", "latency_s": latency, "max_concurrent": 4}
                                 for i in range(n_deps)])
    cfg = config_from_dict({
        "delegation": {"max_concurrency": 16, "task_timeout_s": 120},
        "router": {"model_list": [{"model_name": "g", "model_info": {"id": f"d{i + 1}"},
                                   "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": url,
                                                      "api_key": "sk-loopback-bench", "max_parallel_requests": 4}}
                                  for i, url in enumerate(providers.base_urls)],
                   "router_settings": {"num_retries": 2}},
    })
    d = Delegator(cfg, env={})

    async def host() -> list[dict]:
        await d.warm_up(calls=True)  # a long-lived host does this in the background at start-up
        await asyncio.sleep(1.0)
        out = []
        for r in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            if raw:
                completed = await raw_batch(d.router.router, n_deps, n, r)
            else:
                batch = await d.run([Task(f"round {r} item {i}", model="g") for i in range(n)])
                completed = batch.counts().get("completed", 0)
            wall = time.perf_counter() - t0
            out.append({"wall_s": wall, "cpu_s": time.process_time() - c0, "completed": completed})
        return out

    rows = asyncio.run(host())
    stats = providers.stats()
    providers.stop()
    print(json.dumps({"deployments": n_deps, "rounds": rows, "provider_429": sum(s["429"] for s in stats),
                      "provider_requests": sum(s["requests"] for s in stats),
                      "max_in_flight": [s["max_in_flight"] for s in stats]}))


async def raw_batch(router: object, n_deps: int, n: int, r: int) -> int:
    """The baseline: the Router alone, round-robin over the deployments, 4 in flight at each."""
    slots = {f"d{k + 1}": asyncio.Semaphore(4) for k in range(n_deps)}

    async def one(i: int) -> bool:
        dep = f"d{i % n_deps + 1}"
        async with slots[dep]:
            try:
                await router.acompletion(model=dep, messages=[{"role": "user", "content": f"round {r} item {i}"}])  # type: ignore[attr-defined]
                return True
            except Exception:  # noqa: BLE001 - counted as not completed
                return False

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


def run_side(n_deps: int, args: argparse.Namespace, raw: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--side", str(n_deps), "--tasks", str(args.tasks), "--rounds", str(args.rounds),
           "--latency", str(args.latency), *(["--raw"] if raw else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=72)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--side", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        side_main(args.side, args.tasks, args.rounds, args.latency, raw=args.raw)
        return
    one, three = run_side(1, args), run_side(3, args)
    raw_one, raw_three = run_side(1, args, raw=True), run_side(3, args, raw=True)
    raw_first = raw_one["rounds"][0]["wall_s"] / raw_three["rounds"][0]["wall_s"]
    raw_later = [a["wall_s"] / b["wall_s"] for a, b in zip(raw_one["rounds"][1:], raw_three["rounds"][1:], strict=True)]
    first = one["rounds"][0]["wall_s"] / three["rounds"][0]["wall_s"]
    later = [a["wall_s"] / b["wall_s"] for a, b in zip(one["rounds"][1:], three["rounds"][1:], strict=True)]
    lost = sum(args.tasks - r["completed"] for side in (one, three) for r in side["rounds"])
    print(f"{args.tasks} tasks, 4 in flight per deployment, latency {args.latency:g} s")
    for name, side in (("1 deployment", one), ("3 deployments", three)):
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in side["rounds"])
        print(f"  {name:14} batch wall s: {walls}   429s {side['provider_429']} of {side['provider_requests']}, "
              f"max in flight {side['max_in_flight']}")
    for name, side in (("Router alone, 1", raw_one), ("Router alone, 3", raw_three)):
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in side["rounds"])
        print(f"  {name:14} batch wall s: {walls}   429s {side['provider_429']} of {side['provider_requests']}")
    steady = statistics.median(later) if later else float("nan")
    raw_steady = statistics.median(raw_later) if raw_later else float("nan")
    print(f"first batch, 1 ÷ 3: {first:.2f}×   later batches (median): {steady:.2f}×   lost {lost}   "
          f"goal ≥ {GOAL}× on the first batch: {'met' if first >= GOAL and lost == 0 else 'MISSED'}")
    print(f"Router alone (baseline), 1 ÷ 3: first batch {raw_first:.2f}×, later (median) {raw_steady:.2f}×; "
          f"hermes-delegate's first batch ÷ the Router's: 3 deployments "
          f"{three['rounds'][0]['wall_s'] / raw_three['rounds'][0]['wall_s']:.3f}, "
          f"1 deployment {one['rounds'][0]['wall_s'] / raw_one['rounds'][0]['wall_s']:.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "short_batch.json").write_text(json.dumps({
        "one": one, "three": three, "first_ratio": first, "later_ratios": later, "lost": lost, "goal": GOAL,
        "router_alone": {"one": raw_one, "three": raw_three, "first_ratio": raw_first, "later_ratios": raw_later}},
        indent=1))


if __name__ == "__main__":
    main()
