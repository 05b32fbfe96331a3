"""Rate-limit-aware scheduling (issue 6, P3): 3 limited deployments vs 1, and vs the Router alone.

    python bench/bench_scheduling.py           # 300 tasks, R = 5 req/s per deployment (~2 min)
    python bench/bench_scheduling.py --quick   # 60 tasks (~35 s)

Scenarios, all in this one run, each in its own fresh process (litellm's callbacks are
process-global, so no scenario sees another's Router or hooks), on loopback traffic only:

- three: hermes-delegate, 300 tasks, one model group of 3 deployments, each a LoopbackProvider
  limited to R req/s (sliding 1 s window, 429 + Retry-After beyond it) with `rpm: R*60` in its
  litellm_params; provider latency 0.2 s; delegation.max_concurrency = 300.
- one: the same batch on 1 such deployment.
- router: the same batch through the Router alone: asyncio.gather of router.acompletion over the
  same 3 deployments (rpm in litellm_params, router_settings num_retries=2), no hermes-delegate.

All three use the same router_settings ({"num_retries": 2}). Each process warms up first (import,
Router build, one call per deployment), waits for the provider windows to clear and resets the
provider counters, so the timed part is the batch alone.
Throughput = tasks completed / (time from the first request's arrival at a provider to the last
completion). 429s are counted by the providers.

Goals (issue 14, raised from issue 6's 2.8× and 90 %, and to be met in 3 consecutive runs): three ÷
one ≥ 2.9× throughput; three ≥ 0.95 × the sum of the limits (3R req/s); 0 lost;
429s ≤ 1 % of the requests the providers saw.

Writes bench/out/scheduling.json and draws bench/scheduling.png (a --quick or otherwise
non-default run draws bench/out/scheduling-custom.png instead).
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
from collections import Counter
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PNG = HERE / "scheduling.png"
GROUP = "g"
API_KEY = "sk-loopback-bench"
ROUTER_SETTINGS = {"num_retries": 2}


# ------------------------------------------------------------------------------------------------
# one scenario (child process)
# ------------------------------------------------------------------------------------------------
def scenario_main(name: str, n: int, rps: float, latency: float, out_path: Path) -> None:
    from _providers import RemoteProviders

    n_deps = 1 if name == "one" else 3
    names = [f"{name}-{i + 1}" for i in range(n_deps)]
    # the providers in a process of their own (bench/_providers.py: they must not share our GIL)
    providers = RemoteProviders([{"name": pname, "latency_s": latency, "rps": rps} for pname in names])
    model_list = [{"model_name": GROUP,
                   "litellm_params": {"model": f"openai/bench-{i + 1}", "api_base": url, "api_key": API_KEY,
                                      "rpm": int(rps * 60)},
                   "model_info": {"id": f"dep-{i + 1}"}}
                  for i, url in enumerate(providers.base_urls)]
    done: list[tuple[float, str]] = []  # (monotonic time, "ok" | error kind) per finished task
    errors: Counter[str] = Counter()
    t_setup = time.perf_counter()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    if name in ("one", "three"):
        from hermes_delegate import Delegator, Task, config_from_dict

        cfg = config_from_dict({
            "delegation": {"max_concurrency": max(n, 300), "max_tasks": max(n, 300), "task_timeout_s": 600},
            "router": {"model_list": model_list, "router_settings": dict(ROUTER_SETTINGS)},
        })
        d = Delegator(cfg, env={})
        # warm-up: Router build + one call per deployment (the CapacityGate sends a cold
        # deployment's first request alone, so n_deps concurrent tasks land on n_deps deployments)
        loop.run_until_complete(d.run([Task(f"warm-up {i}", model=GROUP) for i in range(n_deps)]))
        tasks = [Task(f"Summarise item {i}.", model=GROUP) for i in range(n)]

        def on_event(ev) -> None:
            if ev.kind == "done":
                st = ev.result.status if ev.result is not None else "?"
                done.append((time.monotonic(), "ok" if st == "completed" else st))
                if st != "completed" and ev.result is not None:
                    errors[f"{st}: {(ev.result.error or {}).get('type')}"] += 1

        async def batch() -> dict:
            b = await d.run(tasks, on_event=on_event)
            att = Counter(a.status for r in b.results for a in (r.attempts or []))
            waits = [a.wait_s for r in b.results for a in (r.attempts or [])]
            return {"attempt_statuses": dict(att), "gate_wait_s_median": statistics.median(waits) if waits else 0.0}
    else:
        from hermes_delegate.routing._litellm import import_litellm

        litellm = import_litellm()
        router = litellm.Router(model_list=model_list, **ROUTER_SETTINGS)

        def msgs(i: int) -> list[dict]:
            return [{"role": "user", "content": f"Summarise item {i}."}]

        async def warm() -> None:
            await asyncio.gather(*[router.acompletion(model=GROUP, messages=msgs(-1)) for _ in range(n_deps)],
                                 return_exceptions=True)
        loop.run_until_complete(warm())

        async def one(i: int) -> None:
            try:
                await router.acompletion(model=GROUP, messages=msgs(i))
                done.append((time.monotonic(), "ok"))
            except Exception as exc:  # noqa: BLE001
                done.append((time.monotonic(), "failed"))
                errors[type(exc).__name__] += 1

        async def batch() -> dict:
            await asyncio.gather(*[one(i) for i in range(n)])
            return {}

    setup_s = time.perf_counter() - t_setup
    time.sleep(max(1.5, 1.0 / rps + 0.5))  # let the providers' 1 s windows (and any cooldown) clear
    providers.reset_stats()
    t_start = time.monotonic()
    extra = loop.run_until_complete(batch())
    t_end = time.monotonic()

    recs = sorted((t, pname, status)
                  for pname, rows in zip(names, providers.requests(), strict=True) for t, status in rows)
    stats = dict(zip(names, providers.stats(), strict=True))
    providers.stop()
    first = recs[0][0] if recs else t_start
    ok_times = sorted(t for t, s in done if s == "ok")
    last = max((t for t, _ in done), default=t_end)
    span = last - first
    requests = sum(s["requests"] for s in stats.values())
    n429 = sum(s["429"] for s in stats.values())
    result = {
        "scenario": name, "tasks": n, "deployments": n_deps, "rps_limit_each": rps, "latency_s": latency,
        "setup_s": setup_s, "batch_wall_s": t_end - t_start,
        "first_arrival_after_start_s": first - t_start,
        "span_s": span, "completed": len(ok_times), "failed": len(done) - len(ok_times),
        "lost": n - len(ok_times),
        "throughput_rps": (len(ok_times) / span) if span > 0 else 0.0,
        "sum_of_limits_rps": rps * n_deps,
        "provider_requests": requests, "provider_429": n429,
        "pct_429": 100.0 * n429 / requests if requests else 0.0,
        "provider_max_rps_observed": {k: s["max_rps_observed"] for k, s in stats.items()},
        "provider_stats": stats, "errors": dict(errors),
        "completion_times": [t - first for t in ok_times],
        "failure_times": sorted(t - first for t, s in done if s != "ok"),
        "arrivals": [(t - first, pname, str(st)) for t, pname, st in recs],
        **extra,
    }
    out_path.write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------------
def run_scenario(name: str, args: argparse.Namespace, n: int) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"scheduling-{name}.tmp.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--scenario", name, "--tasks", str(n), "--rps", str(args.rps),
           "--latency", str(args.latency), "--out-json", str(path)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode != 0 or not path.exists():
        raise SystemExit(f"scenario {name} failed (exit {proc.returncode})")
    res = json.loads(path.read_text())
    path.unlink()
    print(f"  {name:>6}: {res['completed']}/{n} ok in {res['span_s']:.1f} s → {res['throughput_rps']:.2f} tasks/s, "
          f"{res['provider_429']} × 429 of {res['provider_requests']} requests "
          f"({time.perf_counter() - t:.0f} s incl. setup)", flush=True)
    return res


def draw(results: dict[str, dict], path: Path, summary: dict) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG (pip install 'hermes-delegate[bench]')"
    rps = results["three"]["rps_limit_each"]
    n = results["three"]["tasks"]
    style = {
        "three": ("#1f77b4", f"hermes-delegate, 3 deployments — {results['three']['throughput_rps']:.1f} tasks/s"),
        "one": ("#2ca02c", f"hermes-delegate, 1 deployment — {results['one']['throughput_rps']:.1f} tasks/s"),
        "router": ("#d62728", f"Router alone, 3 deployments — {results['router']['completed']} ok, "
                              f"{results['router']['failed']} failed"),
    }
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 7.2), height_ratios=[3, 1.3], sharex=True)
    t_max = max(max(r["completion_times"] + r["failure_times"] + [0.0]) for r in results.values())
    for key in ("three", "one", "router"):
        r = results[key]
        color, label = style[key]
        ts = r["completion_times"]
        ax.step([0.0] + ts, list(range(len(ts) + 1)), where="post", color=color, lw=2.2, label=label)
        if r["failure_times"]:
            fs = r["failure_times"]
            ax.step([0.0] + fs, list(range(len(fs) + 1)), where="post", color=color, lw=1.4, ls="--",
                    label=f"Router alone: failed tasks ({len(fs)})" if key == "router" else f"{key}: failed")
        c429 = sorted(t for t, _, st in r["arrivals"] if st.startswith("429"))
        ax2.step([0.0] + c429, list(range(len(c429) + 1)), where="post", color=color, lw=1.8,
                 label=f"{style[key][1].split(' —')[0]}: {len(c429)}")
    for k, lim in ((3, 3 * rps), (1, rps)):
        x_end = min(t_max, n / lim)
        ax.plot([0, x_end], [0, lim * x_end], color="grey", lw=1, ls=":")
        ax.annotate(f"sum of limits {lim:g}/s" if k > 1 else f"limit {lim:g}/s", (x_end, lim * x_end),
                    textcoords="offset points", xytext=(-6, 4), ha="right", color="grey", fontsize=8)
    ax.axhline(n, color="black", lw=0.6, alpha=0.4)
    ax.set_ylabel("tasks completed")
    ax.set_ylim(0, n * 1.05)
    ax.legend(loc="lower right", fontsize=8.5, framealpha=0.9)
    verdict = (f"3 vs 1 deployment: {summary['speedup']:.2f}× (goal ≥ 2.9×)  ·  "
               f"{summary['pct_of_limits']:.0f} % of the summed limits (goal ≥ 95 %)\n"
               f"hermes-delegate: lost {summary['lost']} tasks (goal 0)  ·  429s {summary['pct_429']:.1f} % "
               f"of requests (goal ≤ 1 %)")
    ax.set_title(f"{n} tasks, deployments limited to {rps:g} req/s each, latency "
                 f"{results['three']['latency_s']:g} s\n{verdict}", fontsize=9.5)
    ax.grid(alpha=0.25)
    ax2.set_ylabel("429s received\nby providers")
    ax2.set_xlabel("seconds since the first request reached a provider")
    ax2.legend(loc="center right", fontsize=8)
    ax2.grid(alpha=0.25)
    ax2.set_xlim(0, t_max * 1.02)
    fig.text(0.99, 0.005, f"bench/bench_scheduling.py · {time.strftime('%Y-%m-%d')} · loopback providers",
             ha="right", fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 tasks")
    ap.add_argument("--tasks", type=int, default=None)
    ap.add_argument("--rps", type=float, default=5.0, help="limit per deployment, req/s (R)")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--scenario", choices=["one", "three", "router"], help=argparse.SUPPRESS)
    ap.add_argument("--out-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.tasks or (60 if args.quick else 300)
    if args.scenario:
        scenario_main(args.scenario, n, args.rps, args.latency, Path(args.out_json))
        return

    t0 = time.perf_counter()
    print(f"{n} tasks, R = {args.rps:g} req/s per deployment, latency {args.latency:g} s", flush=True)
    results = {name: run_scenario(name, args, n) for name in ("three", "one", "router")}
    three, one, router = results["three"], results["one"], results["router"]
    speedup = three["throughput_rps"] / one["throughput_rps"] if one["throughput_rps"] else float("inf")
    pct_limits = 100 * three["throughput_rps"] / three["sum_of_limits_rps"]
    lost = three["lost"] + one["lost"]
    reqs = three["provider_requests"] + one["provider_requests"]
    n429 = three["provider_429"] + one["provider_429"]
    pct_429 = 100 * n429 / reqs if reqs else 0.0
    summary = {"speedup": speedup, "pct_of_limits": pct_limits, "lost": lost, "pct_429": pct_429,
               "goals": {"speedup": 2.9, "pct_of_limits": 95, "lost": 0, "pct_429": 1.0}}
    summary["met"] = {"speedup": speedup >= 2.9, "pct_of_limits": pct_limits >= 95, "lost": lost == 0,
                      "pct_429": pct_429 <= 1.0}
    # a --quick or non-default run draws into bench/out/, so it never replaces the committed figure
    default_run = not args.quick and n == 300 and args.rps == 5.0 and args.latency == 0.2
    png = None if args.no_png else draw(results, PNG if default_run else OUT / "scheduling-custom.png", summary)
    out = {"bench": "scheduling", "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "tasks": n,
           "rps_limit_each": args.rps, "latency_s": args.latency, "router_settings": ROUTER_SETTINGS,
           "summary": summary, "png": png, "scenarios": results, "total_runtime_s": time.perf_counter() - t0}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scheduling.json").write_text(json.dumps(out, indent=1))

    def row(label: str, r: dict) -> str:
        mx = max(r["provider_max_rps_observed"].values())
        return (f"{label:<36}{r['completed']:>6}/{r['tasks']:<5}{r['failed']:>7}{r['span_s']:>9.1f}"
                f"{r['throughput_rps']:>10.2f}{r['sum_of_limits_rps']:>8.0f}{r['provider_requests']:>7}"
                f"{r['provider_429']:>6}{r['pct_429']:>7.1f}{mx:>7.0f}")

    print()
    print(f"Scheduling — {n} tasks, limit {args.rps:g} req/s per deployment (rpm {int(args.rps * 60)}), "
          f"latency {args.latency:g} s, router_settings {ROUTER_SETTINGS}")
    print(f"{'scenario':<36}{'ok':>12}{'failed':>7}{'span s':>9}{'tasks/s':>10}{'limit':>8}{'reqs':>7}"
          f"{'429':>6}{'429 %':>7}{'max/s':>7}")
    print(row("hermes-delegate, 3 deployments", three))
    print(row("hermes-delegate, 1 deployment", one))
    print(row("Router alone (gather), 3 deployments", router))
    print()
    print(f"{'metric':<46}{'measured':>10}{'goal':>10}")

    def line(label: str, value: str, goal: str, ok: bool) -> None:
        print(f"{label:<46}{value:>10}{goal:>10}  {'ok' if ok else 'MISSED'}")
    line("throughput 3 deployments ÷ 1 deployment", f"{speedup:.2f}x", "≥ 2.9x", summary["met"]["speedup"])
    line("3 deployments, share of the summed limits", f"{pct_limits:.1f}%", "≥ 95%", summary["met"]["pct_of_limits"])
    line("tasks lost (both hermes-delegate runs)", f"{lost}", "0", summary["met"]["lost"])
    line("429s / provider requests (both runs)", f"{pct_429:.2f}%", "≤ 1%", summary["met"]["pct_429"])
    print(f"Router alone: {router['provider_429']} × 429 of {router['provider_requests']} requests "
          f"({router['pct_429']:.0f} %), {router['failed']} of {n} tasks failed, errors {router['errors']}")
    if png:
        print(f"\ndrew {png}")
    print(f"wrote {OUT / 'scheduling.json'}  (total {out['total_runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
