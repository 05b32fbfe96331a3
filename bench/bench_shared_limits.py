"""Four processes, one provider limit, one real redis-server (issue 14, "Everything shared").

    python bench/bench_shared_limits.py           # 400 tasks per scenario, 100 per process (~1 min)
    python bench/bench_shared_limits.py --quick   # 160 tasks per scenario

One LoopbackProvider admits R requests per sliding second (429 + an exact Retry-After beyond it).
Four separate delegator processes, each with its own batch, name the same deployment and the same
Redis (router_settings.redis_host/redis_port), and start their batches at the same moment:

- configured: the deployment has rpm = 60·R in the config;
- learned: no limit in the config; the provider states R in OpenAI-style x-ratelimit-* headers.

Measured at the provider: every request it received (admitted or refused) in every sliding second
(the aggregate must stay ≤ R), the 429s, and the throughput over the run (completed ÷ span, span =
first arrival to last completion; goal ≥ 0.9 R). FIFO within each process: each process's tasks
must reach the provider for the first time in the order the batch lists them (within 20 ms: requests
let go together race on the wire). Fairness across
processes: Jain's index of their throughputs while all four ran (1.0 = equal shares).

Writes bench/out/shared_limits.json and draws bench/shared_limits.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PNG = HERE / "shared_limits.png"
SCENARIOS = ("configured", "learned")
PROCS = 4
FIFO_SLACK_S = 0.02


def worker_main(spec: dict) -> None:
    from hermes_delegate import Delegator, Task, config_from_dict

    d = Delegator(config_from_dict(spec["config"]), env={})
    d.router.router  # noqa: B018 - import litellm, build the Router: before the common start
    print("READY", flush=True)
    sys.stdin.readline()
    done: list[float] = []

    def on_event(ev) -> None:
        if ev.kind == "done" and ev.result is not None and ev.result.status == "completed":
            done.append(time.monotonic())

    tasks = [Task(f"{spec['name']}-{k}: summarise item {k}.", model="g") for k in range(spec["n"])]
    batch = d.run_sync(tasks, on_event=on_event)
    print(json.dumps({"done": done, "counts": batch.counts(), "shared": d.router.gate.windows.shared}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(workdir: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install -y redis-server")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def run_scenario(name: str, n_per: int, rps: float, latency: float, redis_port: int) -> dict:
    from hermes_delegate.loopback import LoopbackProvider

    provider = LoopbackProvider(name, rps=rps, latency_s=latency, retry_after="auto",
                                ratelimit_headers="openai").start()
    params: dict = {"model": "openai/bench", "api_base": provider.base_url, "api_key": "sk-loopback-bench"}
    if name == "configured":
        params["rpm"] = 60 * rps
    config = {
        "delegation": {"max_tasks": max(n_per, 100), "task_timeout_s": 600, "max_concurrency": 16},
        "router": {"model_list": [{"model_name": "g", "litellm_params": params,
                                   "model_info": {"id": f"{name}-{os.getpid()}-{time.time_ns()}"}}],
                   "router_settings": {"num_retries": 8, "redis_host": "127.0.0.1", "redis_port": redis_port}},
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker",
                               json.dumps({"config": config, "n": n_per, "name": f"p{i}"})],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
             for i in range(PROCS)]
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != b"READY":
            raise SystemExit(f"a worker did not start: {line!r}")
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=900)
        outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    recs = sorted((r.time, str(r.status), _task_of(r.messages)) for r in provider.requests)
    provider.stop()

    first = recs[0][0]
    arrivals = [t for t, _, _ in recs]
    done_all = sorted(t for o in outs for t in o["done"])
    span = done_all[-1] - first
    total = PROCS * n_per
    # FIFO within each process: no task reaches the provider first more than FIFO_SLACK_S after a
    # later task of its process did (requests let go together race on the wire by a millisecond or two)
    first_seen: dict[tuple[str, int], float] = {}
    for t, _, task in recs:
        if task is not None:
            first_seen.setdefault(task, t)
    out_of_order: dict[str, int] = {}
    for proc in sorted({p for p, _ in first_seen}):
        times = [first_seen[(proc, k)] for k in range(n_per) if (proc, k) in first_seen]
        earliest_later = [min(times[k:]) for k in range(len(times))]
        out_of_order[proc] = sum(1 for k in range(len(times) - 1) if times[k] > earliest_later[k + 1] + FIFO_SLACK_S)
    # fairness while all four ran: each process's completions up to the first process's end
    cut = min(max(o["done"]) for o in outs)
    shares = [sum(1 for t in o["done"] if t <= cut) for o in outs]
    jain = sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares)) if any(shares) else 0.0
    n429 = sum(1 for _, st, _ in recs if st.startswith("429"))
    return {
        "scenario": name, "processes": PROCS, "tasks": total, "latency_s": latency, "limit_rps": rps,
        "completed": len(done_all), "lost": total - len(done_all), "span_s": span,
        "throughput_rps": len(done_all) / span, "ratio_of_limit": len(done_all) / span / rps,
        "max_sent_in_any_second": _max_in_window(arrivals), "provider_requests": len(recs), "provider_429": n429,
        "pct_429": 100.0 * n429 / len(recs), "fifo_out_of_order": out_of_order, "jain_fairness": jain,
        "all_shared": all(o["shared"] for o in outs),
        "completion_times": {f"p{i}": [t - first for t in o["done"]] for i, o in enumerate(outs)},
    }


def _task_of(messages: list) -> tuple[str, int] | None:
    text = str((messages or [{}])[-1].get("content", "")) if messages else ""
    head = text.split(":", 1)[0]
    proc, _, k = head.partition("-")
    return (proc, int(k)) if k.isdigit() else None


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def verdict(r: dict) -> dict:
    in_order = not any(r["fifo_out_of_order"].values())
    met = (r["max_sent_in_any_second"] <= r["limit_rps"] and r["ratio_of_limit"] >= 0.9 and in_order
           and r["lost"] == 0 and r["all_shared"])
    return {"goal": "≤ R in every second, ≥ 0.9 R over the run, FIFO within each process, 0 lost", "met": met}


def draw(results: dict[str, dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG"
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2))
    for ax, (name, r) in zip(axes, results.items(), strict=True):
        everything = sorted(t for ts in r["completion_times"].values() for t in ts)
        ax.step([0.0] + everything, list(range(len(everything) + 1)), where="post", lw=2, color="black",
                label="all four")
        for proc, ts in r["completion_times"].items():
            ax.step([0.0] + ts, list(range(len(ts) + 1)), where="post", lw=1.2, label=proc)
        end = everything[-1]
        ax.plot([0, end], [0, r["limit_rps"] * end], ls="--", color="grey", lw=1, label="R × t")
        ax.set_title(f"{name}: {r['ratio_of_limit']:.3f} R, max {r['max_sent_in_any_second']}/s sent "
                     f"(R = {r['limit_rps']:g}),\n{r['provider_429']} × 429, Jain {r['jain_fairness']:.3f}",
                     fontsize=9)
        ax.set_xlabel("s since the first request")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7.5, loc="upper left")
    axes[0].set_ylabel("tasks completed")
    fig.text(0.99, 0.005, f"bench/bench_shared_limits.py · {time.strftime('%Y-%m-%d')} · loopback provider, "
             "real redis-server", ha="right", fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 tasks per process")
    ap.add_argument("--per-process", type=int, default=None)
    ap.add_argument("--rps", type=float, default=10.0, help="the provider's limit, req/s (R)")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--only", choices=SCENARIOS, action="append")
    args = ap.parse_args()
    n_per = args.per_process or (40 if args.quick else 100)
    with tempfile.TemporaryDirectory() as tmp:
        redis, port = _redis(Path(tmp))
        try:
            results = {}
            for name in args.only or SCENARIOS:
                r = run_scenario(name, n_per, args.rps, args.latency, port)
                r["verdict"] = verdict(r)
                results[name] = r
                print(f"  {name:>10}: {r['completed']}/{r['tasks']} in {r['span_s']:.1f} s"
                      f" → {r['ratio_of_limit']:.3f} R, "
                      f"max {r['max_sent_in_any_second']} sent in a second (R = {args.rps:g}), "
                      f"{r['provider_429']} × 429 "
                      f"({r['pct_429']:.1f} %), FIFO out of order {r['fifo_out_of_order']}, Jain "
                      f"{r['jain_fairness']:.3f} — {'met' if r['verdict']['met'] else 'MISSED'}", flush=True)
        finally:
            redis.terminate()
            redis.wait(5)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "shared_limits.json").write_text(json.dumps(
        {k: {kk: vv for kk, vv in r.items() if kk != "completion_times"} for k, r in results.items()}, indent=2))
    if len(results) == len(SCENARIOS):
        print(draw(results, PNG if not args.quick and not args.per_process else OUT / "shared_limits-custom.png"))


if __name__ == "__main__":
    main()
