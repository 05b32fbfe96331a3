"""The MCP server's overhead (issue 12), on loopback traffic only.

    python bench/bench_mcp.py            # 100-task batch, 7 rounds per side (--rounds N), + the first-call latency

1. A 100-task `delegate_task` through `hermes-delegate mcp` (stdio, the SDK's own client) ÷ the same
   batch through `Delegator.run` in a process of its own. Both sides warmed up (one call) first;
   provider latency 100 ms, max_concurrency 100; 7 rounds alternating the sides. Goal: median ratio ≤ 1.10.
2. First call after start-up: launch the server, initialize, stay idle 5 s, call delegate_task with
   one task; time from the call to the first request reaching the provider. Goal: ≤ 150 ms.

The loopback providers run in this (parent) process; the in-process side runs in a child process
(`--worker`) like the server, so both sides compete with the providers the same way.
Writes bench/out/mcp.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
BIN = str(ROOT / ".venv" / "bin" / "hermes-delegate")
N = 100
KEY_ENV = "BENCH_LOOPBACK_API_KEY"


def write_config(path: Path, alpha: str, beta: str) -> None:
    import yaml

    def dep(group: str, model: str, url: str) -> dict:
        return {"model_name": group, "litellm_params": {"model": model, "api_base": url,
                                                          "api_key": f"os.environ/{KEY_ENV}"}}

    data = {"delegation": {"max_tasks": N, "max_concurrency": N, "task_timeout_s": 60},
            "router": {"model_list": [dep("alpha", "openai/alpha-model", alpha),
                                      dep("beta", "openai/beta-model", beta)]}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def batch(n: int) -> list[dict]:
    return [{"goal": f"Summarise item {i} of the benchmark batch.", "model": "alpha" if i % 2 else "beta"}
            for i in range(n)]


def env() -> dict[str, str]:
    return {**os.environ, KEY_ENV: "sk-bench-loopback", "NO_PROXY": "127.0.0.1,localhost"}


# -- in-process side (child) ------------------------------------------------------------------
def worker(cfg: str) -> None:
    """One batch per line read from stdin; prints its wall time."""
    from hermes_delegate import Delegator, load_config

    async def main() -> None:
        d = Delegator(load_config(cfg))
        await d.run(batch(1))
        print("ready", flush=True)
        while await asyncio.to_thread(sys.stdin.readline):
            t0 = time.perf_counter()
            b = await d.run(batch(N))
            dt = time.perf_counter() - t0
            assert b.ok, b.counts()
            print(dt, flush=True)

    asyncio.run(main())


class InProcess:
    def __init__(self, cfg: Path):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(cfg)], env=env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout.readline().strip() == "ready"

    async def round(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(await asyncio.to_thread(self.proc.stdout.readline))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


# -- MCP side ---------------------------------------------------------------------------------
def params(cfg: Path):
    from mcp.client.stdio import StdioServerParameters

    return StdioServerParameters(command=BIN, args=["mcp", "--config", str(cfg)], env=env())


async def alternate(cfg: Path, rounds: int) -> tuple[list[float], list[float]]:
    """Rounds alternate in-process / MCP, so machine noise hits both sides alike."""
    from mcp import Client

    ours, mcp = [], []
    local = InProcess(cfg)
    try:
        async with Client(params(cfg), read_timeout_seconds=120) as client:
            await client.call_tool("delegate_task", {"tasks": batch(1)})
            for _ in range(rounds):
                ours.append(await local.round())
                t0 = time.perf_counter()
                res = await client.call_tool("delegate_task", {"tasks": batch(N)})
                mcp.append(time.perf_counter() - t0)
                statuses = [r["status"] for r in res.structured_content["results"]]
                assert not res.is_error and statuses == ["completed"] * N
    finally:
        local.close()
    return ours, mcp


async def first_call(cfg: Path, providers: list, idle_s: float = 5.0) -> float:
    from mcp import Client

    async with Client(params(cfg), read_timeout_seconds=120) as client:
        await asyncio.sleep(idle_s)
        for p in providers:
            p.reset_stats()
        t0 = time.monotonic()
        res = await client.call_tool("delegate_task", {"goal": "one task", "model": "alpha"})
        assert not res.is_error
        return min(r.time for p in providers for r in p.requests) - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    from hermes_delegate.loopback import start_providers

    with start_providers([{"name": "alpha", "latency_s": 0.1}, {"name": "beta", "latency_s": 0.1}]) as ps, \
            tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        write_config(cfg, ps[0].base_url, ps[1].base_url)
        ours, mcp = asyncio.run(alternate(cfg, args.rounds))
        first = asyncio.run(first_call(cfg, list(ps)))
    ratio = statistics.median(mcp) / statistics.median(ours)
    report = {"tasks": N, "in_process_s": [round(x, 3) for x in ours], "mcp_stdio_s": [round(x, 3) for x in mcp],
              "median_ratio": round(ratio, 3), "ratio_goal": 1.10,
              "first_call_to_first_request_ms": round(first * 1000, 1), "first_call_goal_ms": 150}
    OUT.mkdir(exist_ok=True)
    (OUT / "mcp.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
