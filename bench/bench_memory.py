"""Memory with 1,000 tasks in flight (issue 6, P4): hermes-delegate vs the raw Router.

    python bench/bench_memory.py            # each side twice, median (~1 min)
    python bench/bench_memory.py --quick    # each side once
    python bench/bench_memory.py --profile  # also: tracemalloc top allocations at the peak, per side

Peak RSS above idle while 1,000 requests are in flight (provider latency 2 s, no provider limits,
delegation.max_concurrency = 1000), for hermes-delegate's Delegator.run and for a raw
asyncio.gather(router.acompletion(...)) over a Router built from the same model_list.
Goal: ours ≤ 1.15 × the raw Router's increase.

How: the loopback provider runs in this (parent) process, so its sockets and buffers are not
counted. Each side runs in its own fresh subprocess, alternating raw / ours, twice (median).
In the child: idle = RSS after imports + Router build + one warm-up call + gc.collect(); peak =
the highest RSS sampled every 50 ms by a psutil thread during the batch (ru_maxrss is recorded
too, as a cross-check; it also covers the import phase). The provider's max_in_flight confirms
that 1,000 requests were open at once.

litellm's aiohttp transport allows 500 connections per host by default
(AIOHTTP_CONNECTOR_LIMIT_PER_HOST); both children get AIOHTTP_CONNECTOR_LIMIT_PER_HOST=1000 so that
all 1,000 requests really are in flight (--litellm-default-pool keeps the default: 500 open,
500 queued in the pool).

If ours is over 1.15×, or with --profile, each side runs once more under tracemalloc (started
after the warm-up) against a provider with 30 s latency; the snapshot is taken once that provider
holds all 1,000 requests. The top allocation sites of each side and their difference are printed
and saved.

Writes bench/out/memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
GROUP = "g"
API_KEY = "sk-loopback-bench"
ROUTER_SETTINGS: dict = {}
GOAL = 1.15
MB = 1024 * 1024


def model_list(url: str) -> list[dict]:
    return [{"model_name": GROUP,
             "litellm_params": {"model": "openai/bench-model", "api_base": url, "api_key": API_KEY},
             "model_info": {"id": "bench-1"}}]


def goal(i: int) -> str:
    return f"Summarise item {i} of the benchmark batch."


# ------------------------------------------------------------------------------------------------
# child: one side
# ------------------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.is_set():
            rss = self.proc.memory_info().rss
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic() - t0, rss))
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return self.peak


def side_main(side: str, url: str, n: int, latency: float, out_path: Path, profile: bool) -> None:
    import psutil

    me = psutil.Process()
    t0 = time.perf_counter()
    from hermes_delegate import Delegator, Task, config_from_dict
    from hermes_delegate.routing._litellm import import_litellm
    from hermes_delegate.core.config import DEFAULT_SYSTEM_PROMPT

    litellm = import_litellm()
    ml = model_list(url)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def msgs(i: int) -> list[dict]:
        return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": goal(i)}]

    if side == "ours":
        cfg = config_from_dict({
            "delegation": {"max_concurrency": n, "max_tasks": n, "task_timeout_s": 600},
            "router": {"model_list": ml, "router_settings": dict(ROUTER_SETTINGS)},
        })
        d = Delegator(cfg, env={})
        loop.run_until_complete(d.run([Task(goal(-1), model=GROUP)]))
        tasks = [Task(goal(i), model=GROUP) for i in range(n)]

        async def batch() -> int:
            b = await d.run(tasks)
            return sum(1 for r in b.results if r.status == "completed")
    else:
        router = litellm.Router(model_list=ml, **ROUTER_SETTINGS)
        loop.run_until_complete(router.acompletion(model=GROUP, messages=msgs(-1)))

        async def batch() -> int:
            out = await asyncio.gather(*[router.acompletion(model=GROUP, messages=msgs(i)) for i in range(n)],
                                       return_exceptions=True)
            return sum(1 for r in out if not isinstance(r, BaseException))

    setup_s = time.perf_counter() - t0
    gc.collect()
    time.sleep(0.5)
    idle = statistics.median(me.memory_info().rss for _ in range(5))
    res: dict = {"side": side, "setup_s": setup_s, "idle_rss": idle}

    if profile:
        import tracemalloc

        tracemalloc.start(1)
        trigger = out_path.with_suffix(".trigger")

        async def profiled() -> tuple[object, int]:
            # the parent touches the trigger file once its (slow) provider holds all n requests
            running = asyncio.ensure_future(batch())
            while not trigger.exists():
                if running.done():
                    raise SystemExit("the batch ended before every request was open")
                await asyncio.sleep(0.05)
            return tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[1]
        snap, traced_peak = loop.run_until_complete(profiled())
        tracemalloc.stop()
        snapshot = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snapshot.statistics("lineno")
        res.update({"ok": None, "traced_at_snapshot": sum(s.size for s in stats), "traced_peak": traced_peak,
                    "top_lineno": [{"where": str(s.traceback[0]), "kb": s.size / 1024, "count": s.count}
                                   for s in stats[:40]],
                    "own_sites": [{"where": str(s.traceback[0]), "kb": s.size / 1024, "count": s.count}
                                  for s in stats if any(k in s.traceback[0].filename
                                                        for k in ("hermes_delegate", "tenacity"))][:25],
                    "by_file": _by_file(snapshot)})
        out_path.write_text(json.dumps(res))
        os._exit(0)  # no need to wait for the slow provider's answers
    else:
        sampler = Sampler(0.05)
        sampler.start()
        t1 = time.perf_counter()
        ok = loop.run_until_complete(batch())
        wall = time.perf_counter() - t1
        peak = sampler.stop()
        res.update({"ok": ok, "batch_wall_s": wall, "peak_rss": peak, "delta_rss": peak - idle,
                    "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    "samples": len(sampler.samples),
                    "rss_trace": [(round(t, 3), r)
                                  for t, r in sampler.samples[:: max(1, len(sampler.samples) // 200)]]})
    out_path.write_text(json.dumps(res))


def _by_file(snapshot) -> list[dict]:
    """Sizes grouped by package (site-packages/<pkg>, hermes_delegate, stdlib module)."""
    groups: dict[str, list[int]] = {}
    for s in snapshot.statistics("filename"):
        fn = s.traceback[0].filename
        if "site-packages/" in fn:
            key = fn.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "hermes_delegate" in fn:
            key = "hermes_delegate/" + fn.split("hermes_delegate/", 1)[1]
        else:
            key = "stdlib:" + Path(fn).name
        g = groups.setdefault(key, [0, 0])
        g[0] += s.size
        g[1] += s.count
    return [{"group": k, "kb": v[0] / 1024, "count": v[1]}
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1][0])[:25]]


# ------------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------------
def run_side(side: str, provider, args: argparse.Namespace, n: int, profile: bool = False) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"memory-{side}.tmp.json"
    trigger = path.with_suffix(".trigger")
    path.unlink(missing_ok=True)
    trigger.unlink(missing_ok=True)
    env = dict(os.environ)
    if not args.litellm_default_pool:
        env["AIOHTTP_CONNECTOR_LIMIT_PER_HOST"] = str(max(n, 500))
        env["AIOHTTP_CONNECTOR_LIMIT"] = str(max(n, 1000))
    provider.reset_stats()
    cmd = [sys.executable, __file__, "--side", side, "--url", provider.base_url, "--tasks", str(n),
           "--latency", str(provider.latency_s), "--out-json", str(path)] + (["--profile"] if profile else [])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    if profile:  # tell the child when every request is open at the provider
        while proc.poll() is None and not trigger.exists():
            if provider.in_flight >= n:
                trigger.touch()
            time.sleep(0.02)
    rc = proc.wait()
    trigger.unlink(missing_ok=True)
    if rc != 0 or not path.exists():
        raise SystemExit(f"side {side} failed (exit {rc})")
    res = json.loads(path.read_text())
    path.unlink()
    res["provider_max_in_flight"] = provider.stats()["max_in_flight"]
    if not profile:
        print(f"  {side:>4}: idle {res['idle_rss'] / MB:6.1f} MB, peak {res['peak_rss'] / MB:6.1f} MB, "
              f"+{res['delta_rss'] / MB:5.1f} MB; ok {res['ok']}/{n}; provider max in flight "
              f"{res['provider_max_in_flight']}; batch {res['batch_wall_s']:.1f} s", flush=True)
    return res


def print_profile(prof: dict[str, dict]) -> dict:
    raw, ours = prof["raw"], prof["ours"]
    print()
    print(f"tracemalloc snapshot with all {raw['provider_max_in_flight']} requests open: traced raw "
          f"{raw['traced_at_snapshot'] / MB:.1f} MB, ours {ours['traced_at_snapshot'] / MB:.1f} MB")
    rb = {g["group"]: g for g in raw["by_file"]}
    ob = {g["group"]: g for g in ours["by_file"]}
    diff = sorted(((ob.get(k, {}).get("kb", 0) - rb.get(k, {}).get("kb", 0), k) for k in set(rb) | set(ob)),
                  reverse=True)
    print(f"{'allocated in':<58}{'raw KB':>10}{'ours KB':>10}{'diff KB':>10}")
    for d, k in diff[:15]:
        print(f"{k:<58.58}{rb.get(k, {}).get('kb', 0):>10.0f}{ob.get(k, {}).get('kb', 0):>10.0f}{d:>+10.0f}")
    print("\nours, top allocation sites (all code):")
    for row in ours["top_lineno"][:10]:
        print(f"  {row['kb']:>9.0f} KB {row['count']:>8} blocks  {row['where']}")
    print("ours, top allocation sites in hermes_delegate and tenacity (absent from raw):")
    for row in ours.get("own_sites", [])[:12]:
        print(f"  {row['kb']:>9.0f} KB {row['count']:>8} blocks  {row['where']}")
    return {"by_group_diff_kb": [{"group": k, "diff_kb": d} for d, k in diff[:25]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="each side once")
    ap.add_argument("--runs", type=int, default=None, help="runs per side (default 2)")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=2.0)
    ap.add_argument("--profile", action="store_true", help="always run the tracemalloc pass")
    ap.add_argument("--litellm-default-pool", action="store_true",
                    help="keep litellm's 500-connections-per-host pool (500 in flight, 500 queued)")
    ap.add_argument("--side", choices=["raw", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--out-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.tasks
    if args.side:
        side_main(args.side, args.url, n, args.latency, Path(args.out_json), args.profile)
        return
    runs = args.runs or (1 if args.quick else 2)

    from hermes_delegate.loopback import LoopbackProvider

    t0 = time.perf_counter()
    provider = LoopbackProvider("memory-bench", latency_s=args.latency).start()
    results: dict[str, list[dict]] = {"raw": [], "ours": []}
    prof: dict[str, dict] = {}
    try:
        print(f"{n} requests in flight, provider latency {args.latency:g} s, {runs} run(s) per side, "
              "each in a fresh process", flush=True)
        for _ in range(runs):
            for side in ("raw", "ours"):
                results[side].append(run_side(side, provider, args, n))
        med = {s: statistics.median(r["delta_rss"] for r in results[s]) for s in results}
        ratio = med["ours"] / med["raw"] if med["raw"] > 0 else float("inf")
        if args.profile or ratio > GOAL:
            print("profiling both sides with tracemalloc (provider latency 30 s, so that every request is "
                  "open when the snapshot is taken) …", flush=True)
            slow = LoopbackProvider("memory-profile", latency_s=30.0).start()
            try:
                for side in ("raw", "ours"):
                    prof[side] = run_side(side, slow, args, n, profile=True)
            finally:
                slow.stop()
    finally:
        provider.stop()

    idle = {s: statistics.median(r["idle_rss"] for r in results[s]) for s in results}
    out = {
        "bench": "memory", "date": time.strftime("%Y-%m-%d %H:%M"), "tasks": n, "latency_s": args.latency,
        "runs_per_side": runs, "aiohttp_limit_per_host": None if args.litellm_default_pool else max(n, 500),
        "median_delta_mb": {s: med[s] / MB for s in med}, "median_idle_mb": {s: idle[s] / MB for s in idle},
        "ratio": ratio, "goal": GOAL, "met": ratio <= GOAL, "runs": results,
    }
    print()
    print(f"Memory — {n} requests in flight (latency {args.latency:g} s, no limits), RSS above idle, "
          f"median of {runs} fresh process(es) per side")
    print(f"{'side':<40}{'idle MB':>9}{'peak MB':>9}{'+MB':>8}{'runs (+MB)':>22}{'in flight':>11}")
    for side, label in (("raw", "raw asyncio.gather(router.acompletion)"), ("ours", "hermes-delegate Delegator.run")):
        rs = results[side]
        peak = statistics.median(r["peak_rss"] for r in rs) / MB
        print(f"{label:<40}{idle[side] / MB:>9.1f}{peak:>9.1f}{med[side] / MB:>8.1f}"
              f"{', '.join('%.1f' % (r['delta_rss'] / MB) for r in rs):>22}"
              f"{min(r['provider_max_in_flight'] for r in rs):>11}")
    verdict = 'ok' if ratio <= GOAL else 'MISSED'
    print(f"\n{'ours ÷ raw, increase over idle':<40}{ratio:>8.3f}x   goal ≤ {GOAL}x   {verdict}")
    if prof:
        out["profile"] = {"raw": prof["raw"], "ours": prof["ours"], **print_profile(prof)}
    out["total_runtime_s"] = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "memory.json").write_text(json.dumps(out, indent=1))
    print(f"\nwrote {OUT / 'memory.json'}  (total {out['total_runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
