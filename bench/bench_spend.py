"""Spend caps across processes (issue 22): 4 processes × 50 tasks against one daily cap that fits about
60 % of them, with the caps and ledger in SQLite (one file) and in Redis.

    python bench/bench_spend.py              # 3 runs per store, 4 × 50 tasks
    python bench/bench_spend.py --quick      # 1 run per store, 4 × 20 tasks
    python bench/bench_spend.py --no-redis   # SQLite only

Checks, per run: the total charged (the caps' own account, the ledger's sum) ≤ the cap; every settled
task is a ledger row (rows == the tasks the processes report as run); every task not run is
`skipped_budget` with error type `budget`. The provider is a loopback provider (in this process) that
answers every task with max_tokens of output, so a task costs close to its reservation.

Writes bench/out/spend.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
IN_PRICE, OUT_PRICE, MAX_TOKENS = 1e-6, 1e-5, 100


def config(url: str, ledger: str, cap: float, redis_url: str | None, ns: str) -> dict:
    rs: dict = {"num_retries": 0}
    if redis_url:
        rs["redis_url"] = redis_url
    return {"delegation": {"max_tokens": MAX_TOKENS, "max_concurrency": 8, "max_tasks": 1000, "learn_limits": False,
                           "ledger": ledger, "budget": {"daily_usd": cap, "timezone": "UTC", "namespace": ns}},
            "router": {"model_list": [{"model_name": "priced", "model_info": {"id": "priced-1"},
                                       "litellm_params": {"model": "openai/bench-priced", "api_base": url,
                                                          "api_key": "sk-bench", "input_cost_per_token": IN_PRICE,
                                                          "output_cost_per_token": OUT_PRICE}}],
                       "router_settings": rs}}


def worker(cfg_path: str, n: int, tag: str) -> None:
    from hermes_delegate import Delegator, Task, load_config

    import asyncio

    d = Delegator(load_config(cfg_path))
    asyncio.run(d.warm_up())  # litellm's import and the Router's build, before the clock starts
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    sys.stdin.readline()
    t0 = time.perf_counter()
    batch = d.run_sync([Task(f"{tag} task {i}: say hello", model="priced") for i in range(n)])
    wall = time.perf_counter() - t0
    out = {"counts": batch.counts(), "charged": sum((r.cost_usd or 0.0) for r in batch.results),
           "refused_types": sorted({(r.error or {}).get("type") for r in batch.results
                                    if r.status == "skipped_budget"}),
           "run": sum(1 for r in batch.results if r.status != "skipped_budget"), "batch_s": round(wall, 3)}
    sys.stdout.write(json.dumps(out) + "\n")


def one_run(url: str, n_procs: int, n: int, cap: float, redis_url: str | None, tmp: Path) -> dict:
    ns = f"bench{uuid.uuid4().hex[:8]}"
    ledger = tmp / f"{ns}.sqlite3"
    cfg = tmp / f"{ns}.json"
    cfg.write_text(json.dumps(config(url, str(ledger), cap, redis_url, ns)))  # JSON is YAML
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(cfg), str(n), f"p{i}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(n_procs)]
    for p in procs:
        assert p.stdout.readline().strip() == "READY"
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - t0
    if redis_url:
        import redis

        r = redis.Redis.from_url(redis_url)
        rows = [json.loads(x) for x in r.lrange(f"hermes_delegate:spend:{ns}:ledger", 0, -1)]
        spent = {k.decode(): float(v) for k, v in r.hgetall(f"hermes_delegate:spend:{ns}:spent").items()}
    else:
        with sqlite3.connect(ledger) as db:
            db.row_factory = sqlite3.Row
            rows = [dict(x) for x in db.execute("SELECT * FROM ledger")]
            spent = {k: v for k, v in db.execute("SELECT scope, usd FROM spent")}
    charged_ledger = sum(x["charged_usd"] for x in rows)
    day_spent = max(spent.values()) if spent else 0.0
    run = sum(o["run"] for o in outs)
    refused_types = sorted({t for o in outs for t in o["refused_types"]})
    return {"store": "redis" if redis_url else "sqlite", "wall_s": round(wall, 3),
            "batch_s_max": max(o["batch_s"] for o in outs), "tasks": n_procs * n,
            "run": run, "refused": n_procs * n - run, "ledger_rows": len(rows), "rows_lost": run - len(rows),
            "charged_ledger_usd": round(charged_ledger, 8), "cap_spent_usd": round(day_spent, 8), "cap_usd": cap,
            "within_cap": charged_ledger <= cap + 1e-9 and day_spent <= cap + 1e-9,
            "refused_types": refused_types, "per_process": outs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--tasks", type=int, help="tasks per process (default 50)")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.worker[2])
        return
    n = args.tasks or (20 if args.quick else 50)
    runs = args.runs or (1 if args.quick else 3)
    n_procs = 4

    from hermes_delegate.loopback import LoopbackProvider

    provider = LoopbackProvider("spend-bench", latency_s=0.05,
                                responder=lambda body, p: "x" * (4 * MAX_TOKENS)).start()
    # one task's cost: the prompt (about 60 tokens as the provider counts) and MAX_TOKENS out
    per_task = 60 * IN_PRICE + MAX_TOKENS * OUT_PRICE
    cap = round(0.6 * n_procs * n * per_task, 6)
    tmp = Path(tempfile.mkdtemp(prefix="bench-spend-"))
    redis_proc, redis_url = None, None
    if not args.no_redis and shutil.which("redis-server"):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        redis_url = f"redis://127.0.0.1:{port}"
        time.sleep(0.3)
    results = []
    try:
        for store_url in [None] + ([redis_url] if redis_url else []):
            for i in range(runs):
                res = one_run(provider.base_url, n_procs, n, cap, store_url, tmp)
                results.append(res)
                print(f"{res['store']:>6} run {i + 1}: {res['run']}/{res['tasks']} run, charged "
                      f"${res['charged_ledger_usd']:.6f} of ${cap:.6f} cap ({res['charged_ledger_usd'] / cap:.1%}), "
                      f"rows lost {res['rows_lost']}, refused typed {res['refused_types']}, "
                      f"batches {res['batch_s_max']} s",
                      flush=True)
    finally:
        provider.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    ok = all(r["within_cap"] and r["rows_lost"] == 0 and r["refused_types"] in ([], ["budget"]) for r in results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "spend.json").write_text(json.dumps({"bench": "spend", "date": time.strftime("%Y-%m-%d %H:%M"),
                                                "processes": n_procs, "tasks_per_process": n, "cap_usd": cap,
                                                "per_task_usd": per_task, "cpus": os.cpu_count(),
                                                "load_avg_at_end": os.getloadavg(), "all_ok": ok,
                                                "runs": results}, indent=2))
    print("all runs within the cap, no row lost, every refusal typed budget" if ok else "FAILED: see spend.json")


if __name__ == "__main__":
    main()
