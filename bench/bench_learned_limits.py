"""Limits nobody configured (issue 14): paced by what the provider says, or by its 429s.

    python bench/bench_learned_limits.py           # 300 tasks per scenario (~2 min)
    python bench/bench_learned_limits.py --quick   # 100 tasks per scenario (~45 s)

Each scenario runs in its own fresh process, against one LoopbackProvider that enforces its limit
(sliding window, 429 + an exact Retry-After beyond it) and is given NO limit in the config:

- headers: the provider admits R req/s and says so in OpenAI-style x-ratelimit-* headers.
- no-headers: the same provider, but it sends no limit headers: only 429 + Retry-After.
- tokens: the provider admits T tokens per minute (over a 10 s sliding window) and says so in
  x-ratelimit-*-tokens headers; no request limit.
- short-batch: 48 tasks (whatever --tasks says) against a provider limited to 4 req/s that sends only
  429 + Retry-After (issue 24, slow start): the first burst is most of the batch.

Nothing is warmed up but litellm's import and the Router's build: the first request, the learning
and the first burst are part of the timed batch. delegation.max_concurrency is the default (16).
Throughput = completed / (last completion − first arrival at the provider); tokens = what the
provider admitted over the same span. 429s are counted by the provider.

Goals: headers ≥ 0.95 R, 429s ≤ 1 %; no-headers ≥ 0.8 R, 429s ≤ 5 %; tokens ≥ 0.9 T;
short-batch ≥ 0.8 × 4 req/s, 429s ≤ 10 %; 0 lost.

Writes bench/out/learned_limits.json and draws bench/learned_limits.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PNG = HERE / "learned_limits.png"
SCENARIOS = ("headers", "no-headers", "tokens", "short-batch")
#: the short batch: this many tasks against a provider limited to this many req/s, whatever the options
SHORT_TASKS, SHORT_RPS = 48, 4.0


def scenario_main(name: str, n: int, rps: float, tpm: float, latency: float, out_path: Path) -> None:
    from hermes_delegate import Delegator, Task, config_from_dict
    from hermes_delegate.loopback import LoopbackProvider

    kw: dict = {"latency_s": latency, "retry_after": "auto"}
    if name == "short-batch":
        n, rps = SHORT_TASKS, SHORT_RPS
    if name == "tokens":
        kw.update(tpm=tpm, token_window_s=10.0)
    else:
        kw.update(rps=rps, ratelimit_headers="openai" if name == "headers" else "none")  # short-batch: none
    provider = LoopbackProvider(name, **kw).start()
    cfg = config_from_dict({
        "delegation": {"max_tasks": max(n, 100), "task_timeout_s": 600},
        "router": {"model_list": [{"model_name": "g", "model_info": {"id": name},
                                   "litellm_params": {"model": "openai/bench", "api_base": provider.base_url,
                                                      "api_key": "sk-loopback-bench"}}],
                   "router_settings": {"num_retries": 8}},
    })
    d = Delegator(cfg, env={})
    d.router.router  # noqa: B018 - import litellm, build the Router: not part of the batch
    done: list[float] = []

    def on_event(ev) -> None:
        if ev.kind == "done" and ev.result is not None and ev.result.status == "completed":
            done.append(time.monotonic())

    loop = asyncio.new_event_loop()
    t0 = time.monotonic()
    batch = loop.run_until_complete(d.run([Task(f"Summarise item {i}.", model="g") for i in range(n)],
                                          on_event=on_event))
    wall = time.monotonic() - t0
    recs = sorted((r.time, str(r.status)) for r in provider.requests)
    stats = provider.stats()
    limits = batch.results[-1].deployment.limits if batch.results[-1].deployment else None
    provider.stop()
    first = recs[0][0]
    span = max(done) - first if done else 0.0
    requests, n429 = stats["requests"], stats["429"]
    out = {
        "scenario": name, "tasks": n, "latency_s": latency, "batch_wall_s": wall, "span_s": span,
        "completed": len(done), "lost": n - len(done),
        "throughput_rps": len(done) / span if span else 0.0, "limit_rps": rps,
        "tokens": stats["tokens"], "tokens_per_s": stats["tokens"] / span if span else 0.0,
        "limit_tokens_per_s": tpm / 60.0,
        "provider_requests": requests, "provider_429": n429, "pct_429": 100.0 * n429 / requests if requests else 0.0,
        "limits_learned": limits, "batch_rate_limited": batch.to_dict()["rate_limited"],
        "completion_times": sorted(t - first for t in done),
        "rate_limited_times": [t - first for t, st in recs if st.startswith("429")],
    }
    out_path.write_text(json.dumps(out))


def run_scenario(name: str, args: argparse.Namespace, n: int) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"learned-{name}.tmp.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--scenario", name, "--tasks", str(n), "--rps", str(args.rps),
           "--tpm", str(args.tpm), "--latency", str(args.latency), "--out-json", str(path)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode != 0 or not path.exists():
        raise SystemExit(f"scenario {name} failed (exit {proc.returncode})")
    res = json.loads(path.read_text())
    path.unlink()
    return res


def verdicts(r: dict) -> dict:
    if r["scenario"] == "tokens":
        ratio = r["tokens_per_s"] / r["limit_tokens_per_s"]
        return {"ratio_of_limit": ratio, "goal": "≥ 0.9 of the token limit, 0 lost",
                "met": ratio >= 0.9 and r["lost"] == 0}
    ratio = r["throughput_rps"] / r["limit_rps"]
    need, cap = {"headers": (0.95, 1.0), "short-batch": (0.8, 10.0)}.get(r["scenario"], (0.8, 5.0))
    return {"ratio_of_limit": ratio, "goal": f"≥ {need} R, 429s ≤ {cap:g} %, 0 lost",
            "met": ratio >= need and r["pct_429"] <= cap and r["lost"] == 0}


def draw(results: dict[str, dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG"
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2))
    for ax, (name, r) in zip(axes, results.items(), strict=True):
        ts = r["completion_times"]
        ax.step([0.0] + ts, list(range(len(ts) + 1)), where="post", lw=2, color="#1f77b4", label="completed")
        if r["rate_limited_times"]:
            ax.plot(r["rate_limited_times"], [0] * len(r["rate_limited_times"]), "|", color="#d62728",
                    ms=12, label=f"429s ({len(r['rate_limited_times'])})")
        per_s = (r["limit_tokens_per_s"] / (r["tokens"] / max(1, r["completed"]))) if name == "tokens" \
            else r["limit_rps"]
        x_end = max(ts + [1.0])
        ax.plot([0, x_end], [0, per_s * x_end], color="grey", ls=":", lw=1, label="the provider's limit")
        v = r["verdict"]
        ax.set_title(f"{name}: {v['ratio_of_limit']:.2f} of the limit, {r['pct_429']:.1f} % 429s\n"
                     f"goal {v['goal']}", fontsize=8.5)
        ax.set_xlabel("s since the first request")
        ax.set_ylim(0, r["tasks"] * 1.05)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7.5, loc="upper left")
    axes[0].set_ylabel("tasks completed")
    fig.text(0.99, 0.005, f"bench/bench_learned_limits.py · {time.strftime('%Y-%m-%d')} · loopback providers",
             ha="right", fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 tasks per scenario")
    ap.add_argument("--tasks", type=int, default=None)
    ap.add_argument("--rps", type=float, default=10.0, help="the provider's request limit, req/s (R)")
    ap.add_argument("--tpm", type=float, default=24000.0, help="the provider's token limit, tokens/min (T)")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--only", choices=SCENARIOS, action="append")
    ap.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    ap.add_argument("--out-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.tasks or (100 if args.quick else 300)
    if args.scenario:
        scenario_main(args.scenario, n, args.rps, args.tpm, args.latency, Path(args.out_json))
        return
    results: dict[str, dict] = {}
    for name in args.only or SCENARIOS:
        r = run_scenario(name, args, n)
        r["verdict"] = verdicts(r)
        results[name] = r
        v = r["verdict"]
        print(f"  {name:>11}: {r['completed']}/{r['tasks']} in {r['span_s']:.1f} s"
              f" → {v['ratio_of_limit']:.3f} of the limit, "
              f"{r['provider_429']} × 429 of {r['provider_requests']} ({r['pct_429']:.1f} %), learned "
              f"{r['limits_learned']} — goal {v['goal']}: {'met' if v['met'] else 'MISSED'}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "learned_limits.json").write_text(json.dumps(
        {k: {kk: vv for kk, vv in r.items() if kk not in ("completion_times", "rate_limited_times")}
         for k, r in results.items()}, indent=2))
    if len(results) == len(SCENARIOS):
        print(draw(results, PNG if not args.quick and not args.tasks else OUT / "learned_limits-custom.png"))


if __name__ == "__main__":
    main()
