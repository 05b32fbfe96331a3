"""Engine overhead (issue 2): hermes-delegate's batch vs the raw Router and vs a 3-thread pool.

    python bench/bench_engine.py            # 500 tasks, 3 alternating rounds (~75 s)
    python bench/bench_engine.py --quick    # 100 tasks, 1 round (~15 s)
    python bench/bench_engine.py --ledger   # issue 22: ours with the spend ledger on ÷ off
    python bench/bench_engine.py --profile  # then one cProfile'd batch per side (bench/out/engine-*.prof)

What it measures, all in this one run, on loopback traffic only:

1. batch wall time of `Delegator.run(500 tasks)` ÷ `asyncio.gather(router.acompletion(...))` over the
   same 500 requests, through a Router built from the same model_list and router_settings.
   Provider latency 100 ms, no provider limits, delegation.max_concurrency = 500.
   Goal: median ratio ≤ 1.05.
2. the same batch ÷ a 3-worker ThreadPoolExecutor doing sync `router.completion` (hermes's built-in
   delegation default): the speed-up.
3. the engine alone, without litellm: CPU per task of Delegator.run over a worker that answers at once,
   with the spend ledger on and off (low-noise; the ratios above swing a few per cent a round here);
   then the same with the RouterHandle and its hooks in the path (a stand-in Router that calls the hooks
   as litellm does and answers at once, in a process of its own): all of our code a request runs.
4. model-string resolution cost: `Resolver.resolve` cached (goal ≤ 20 µs) and uncached (a fresh
   Resolver per string, catalog already loaded), over 10 representative strings; catalog load time.

How: the loopback provider runs in this (parent) process. Each side runs in its own long-lived
worker process (this script with --worker), built and warmed up (import + Router build + one
call) before any timing; each side then runs one full batch, reported on its own line ("first
batch of a process": ours pays slow start there, issue 24 item 6, and both sides open their
connection pools), and the parent then runs the rounds alternating raw / ours / pool. Separate
processes because litellm's callback lists are process-global: in one process, our Router hooks
and each Router's own deployment callbacks fire on the other side's calls too (measured here:
+30 % CPU per raw call), which would flatter us. Each side's process CPU time per round is
recorded too; on a shared 2-core machine it is steadier than wall time.

Writes bench/out/engine.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
GROUP = "g"
API_KEY = "sk-loopback-bench"
ROUTER_SETTINGS: dict = {}  # litellm defaults, identical for both sides
TIMEOUT_S = 60.0            # delegation.task_timeout_s (bounds the task in the fan-out; not sent to litellm)


def model_list(url: str) -> list[dict]:
    return [{"model_name": GROUP,
             "litellm_params": {"model": "openai/bench-model", "api_base": url, "api_key": API_KEY},
             "model_info": {"id": "bench-1"}}]


def goal(i: int) -> str:
    return f"Summarise item {i} of the benchmark batch."


# ------------------------------------------------------------------------------------------------
# worker side (one process per side)
# ------------------------------------------------------------------------------------------------
def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def worker_main(side: str, url: str, n: int) -> None:
    # The protocol goes over the original stdout; anything printed by libraries goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")

    t0 = time.perf_counter()
    from hermes_delegate import Delegator, Task, config_from_dict
    from hermes_delegate.core.config import DEFAULT_SYSTEM_PROMPT
    from hermes_delegate.routing._litellm import import_litellm

    litellm = import_litellm()
    t_import = time.perf_counter() - t0
    ml = model_list(url)
    loop = asyncio.new_event_loop()  # one loop for warm-up and every round: clients and pools persist
    asyncio.set_event_loop(loop)

    def msgs(i: int) -> list[dict]:
        # exactly what CompletionWorker sends (build_messages): system prompt + goal, no other kwargs
        return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": goal(i)}]

    if side.startswith("ours"):
        import tempfile

        # the spend ledger (issue 22): on by default (here in a temp file, not the user's); `ours_off` without it
        ledger: object = False if side == "ours_off" else str(Path(tempfile.mkdtemp()) / "ledger.sqlite3")
        cfg = config_from_dict({
            "delegation": {"max_concurrency": max(n, 500), "max_tasks": max(n, 500), "task_timeout_s": TIMEOUT_S,
                           "ledger": ledger},
            "router": {"model_list": ml, "router_settings": dict(ROUTER_SETTINGS)},
        })
        d = Delegator(cfg, env={})
        tasks = [Task(goal(i), model=GROUP) for i in range(n)]
        loop.run_until_complete(d.run([Task(goal(-1), model=GROUP)]))  # warm-up: Router build + one call

        async def batch() -> tuple[int, int]:
            b = await d.run(tasks)
            ok = sum(1 for r in b.results if r.status == "completed")
            return ok, len(b.results) - ok
    elif side == "raw":
        router = litellm.Router(model_list=ml, **ROUTER_SETTINGS)

        async def warm() -> None:
            await router.acompletion(model=GROUP, messages=msgs(-1))
        loop.run_until_complete(warm())

        async def batch() -> tuple[int, int]:
            out = await asyncio.gather(*[router.acompletion(model=GROUP, messages=msgs(i))
                                         for i in range(n)], return_exceptions=True)
            bad = sum(1 for r in out if isinstance(r, BaseException))
            return n - bad, bad
    elif side == "pool":
        from concurrent.futures import ThreadPoolExecutor

        router = litellm.Router(model_list=ml, **ROUTER_SETTINGS)
        router.completion(model=GROUP, messages=msgs(-1))
        ex = ThreadPoolExecutor(max_workers=3)

        def one(i: int) -> bool:
            try:
                router.completion(model=GROUP, messages=msgs(i))
                return True
            except Exception:  # noqa: BLE001
                return False

        async def batch() -> tuple[int, int]:
            ok = sum(ex.map(one, range(n)))
            return ok, n - ok
    else:
        raise SystemExit(f"unknown side {side}")

    say({"ready": True, "import_s": t_import, "startup_s": time.perf_counter() - t0})
    for line in sys.stdin:
        if line.startswith("profile "):  # one untimed batch under cProfile, after the rounds (--profile)
            import cProfile

            prof = cProfile.Profile()
            gc.collect()
            prof.enable()
            ok, failed = loop.run_until_complete(batch())
            prof.disable()
            prof.dump_stats(line.split(" ", 1)[1].strip())
            say({"ok": ok, "failed": failed})
            continue
        if line.strip() != "run":
            break
        gc.collect()
        c0, w0 = _cpu(), time.perf_counter()
        ok, failed = loop.run_until_complete(batch())
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
        say({"wall_s": wall, "cpu_s": cpu, "ok": ok, "failed": failed})


# ------------------------------------------------------------------------------------------------
# parent side
# ------------------------------------------------------------------------------------------------
class Side:
    def __init__(self, name: str, url: str, n: int):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", name, "--url", url, "--tasks", str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info: dict = {}

    def wait_ready(self) -> dict:
        self.info = self._read()
        return self.info

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def profile(self, path: Path) -> dict:
        self.proc.stdin.write(f"profile {path}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


RESOLVE_STRINGS = [
    "small",                          # tier -> family alias
    "cheap",                          # user alias -> bare catalog id
    "changelog",                      # alias -> aggregator id with --provider
    "fast",                           # Router model group
    "haiku",                          # built-in family
    "opus:thinking",                  # family + variant
    "anthropic/claude-sonnet-4-5",    # full LiteLLM id
    "glm-4.7",                        # bare id, catalog lookup
    "gpt-4o",                         # bare id served by several providers (disambiguation)
    "grok --provider openrouter",     # --provider short-cut over a family
]


def bench_engine_only(quick: bool) -> dict:
    """The engine's own CPU per task, without litellm: Delegator.run over a worker that answers at once
    (planning, the fan-out, results, redaction and, with the ledger, reservation, settlement and the
    SQLite commit). Low-noise, unlike the wall ratios: it is this process's CPU, median of 9 batches."""
    import tempfile

    from hermes_delegate import Delegator, Task, config_from_dict
    from hermes_delegate.runtime.worker import WorkerOutput

    class Instant:
        async def run(self, job: object) -> WorkerOutput:
            await asyncio.sleep(0)
            return WorkerOutput(f"The answer to {getattr(job, 'goal', '')}", {"input": 20, "output": 30})

    n, reps = (100, 5) if quick else (500, 9)
    out = {}
    for label, ledger in (("ledger_off", False), ("ledger_on", str(Path(tempfile.mkdtemp()) / "ledger.sqlite3"))):
        cfg = config_from_dict({
            "delegation": {"max_concurrency": n, "max_tasks": n, "task_timeout_s": TIMEOUT_S, "ledger": ledger},
            "router": {"model_list": model_list("http://127.0.0.1:9/v1")}})
        d = Delegator(cfg, env={}, worker=Instant())
        tasks = [Task(goal(i), model=GROUP) for i in range(n)]
        loop = asyncio.new_event_loop()
        loop.run_until_complete(d.run(tasks))  # warm: the ledger file's first commit, caches
        per = []
        for _ in range(reps):
            gc.collect()
            c0 = time.process_time()
            loop.run_until_complete(d.run(tasks))
            per.append((time.process_time() - c0) / n * 1e6)
        loop.close()
        out[label] = statistics.median(per)
    return out


def bench_own_code(quick: bool) -> dict:
    """Our code per task with the RouterHandle and its hooks in the path too (what `bench_engine_only`
    leaves out): a stand-in Router calls the hooks the way litellm does (filter, pre-call, wire, success)
    and answers at once with a real litellm ModelResponse. Run in a process of its own (`--own`): it
    imports litellm, which the parent (the loopback provider's process) must not. CPU per task, median of
    batches, minus the same gather over a coroutine that answers at once (asyncio's own cost)."""
    import tempfile

    from hermes_delegate import Delegator, Task, config_from_dict
    from hermes_delegate.core.config import DEFAULT_SYSTEM_PROMPT
    from hermes_delegate.routing import hooks
    from hermes_delegate.routing._litellm import import_litellm

    litellm = import_litellm()
    n, reps = (100, 5) if quick else (500, 15)
    resp = litellm.ModelResponse(
        choices=[{"message": {"role": "assistant", "content": "The answer."}, "finish_reason": "stop", "index": 0}],
        usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25})
    resp._hidden_params = {"model_id": "bench-1", "api_base": "http://127.0.0.1:9/v1", "custom_llm_provider": "openai",
                           "additional_headers": {"content-type": "application/json", "x-request-id": "r"},
                           "response_cost": 0.0001}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def answer(*_: object) -> object:
        await asyncio.sleep(0)
        return resp

    async def gather_only() -> None:
        await asyncio.gather(*[answer(goal(i)) for i in range(n)])

    def timed(batch: object) -> float:
        loop.run_until_complete(batch())  # type: ignore[operator]
        per = []
        for _ in range(reps):
            gc.collect()
            c0 = time.process_time()
            loop.run_until_complete(batch())  # type: ignore[operator]
            per.append((time.process_time() - c0) / n * 1e6)
        return statistics.median(per)

    def measure(ledger: object) -> tuple[float, float]:
        """(the handle's calls alone, Delegator.run), each CPU µs per task, asyncio's own cost included."""
        cfg = config_from_dict({
            "delegation": {"max_concurrency": n, "max_tasks": n, "task_timeout_s": TIMEOUT_S, "ledger": ledger},
            "router": {"model_list": model_list("http://127.0.0.1:9/v1")}})
        d = Delegator(cfg, env={})
        handle = d.router
        real = handle.router  # built: the hooks and the dispatcher are in place
        dep = real.get_model_list()[0]
        dispatch = hooks._DISPATCH

        class StandIn:  # what litellm's Router does around one call, minus the call
            num_retries = 0

            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

            async def acompletion(self, model: str, messages: list, metadata: dict, **_: object) -> object:
                kw = {"model": model, "messages": messages, "model_info": dep["model_info"],
                      "metadata": {**metadata, "model_info": dep["model_info"]},
                      "litellm_params": {"api_base": "http://127.0.0.1:9/v1", "custom_llm_provider": "openai",
                                         "metadata": metadata}}
                await dispatch.async_filter_deployments(model, [dep], messages, request_kwargs=kw)
                await dispatch.async_pre_call_deployment_hook(kw, None)
                dispatch.log_pre_api_call(model, messages, kw)
                await asyncio.sleep(0)
                await dispatch.async_post_call_success_deployment_hook(kw, resp, None)
                return resp

        handle._router = StandIn()
        res = d.resolver.resolve(GROUP)
        msgs = [[{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": goal(i)}]
                for i in range(n)]
        tasks = [Task(goal(i), model=GROUP) for i in range(n)]

        async def handle_only() -> None:
            await asyncio.gather(*[handle.acompletion(res, m) for m in msgs])

        async def delegator() -> None:
            b = await d.run(tasks)
            assert all(r.status == "completed" for r in b.results), b.results[0]

        try:
            return timed(handle_only), timed(delegator)
        finally:
            handle._router = real

    base = timed(gather_only)
    handle_us, off = measure(False)
    _, on = measure(str(Path(tempfile.mkdtemp()) / "ledger.sqlite3"))
    out = {"asyncio_us": base, "handle_us": handle_us - base, "ledger_off": off - base, "ledger_on": on - base}
    loop.close()
    return out


def bench_resolver(quick: bool) -> dict:
    from hermes_delegate import Resolver, config_from_dict
    from hermes_delegate.core.catalog import default_catalog

    cfg = config_from_dict({
        "delegation": {"aliases": {"small": "haiku", "medium": "sonnet", "large": "opus", "cheap": "glm-4.7",
                                   "changelog": "stepfun/step-3.5-flash --provider openrouter"}},
        "router": {"model_list": [{"model_name": "fast", "litellm_params": {"model": "openai/fast-model",
                                                                            "api_base": "http://127.0.0.1:9/v1"}}]},
    })
    default_catalog.cache_clear()
    t = time.perf_counter()
    cat = default_catalog()
    first_load = time.perf_counter() - t
    reloads = []
    for _ in range(3):
        default_catalog.cache_clear()
        t = time.perf_counter()
        cat = default_catalog()
        reloads.append(time.perf_counter() - t)

    reps_cached = 5_000 if quick else 20_000
    reps_fresh = 100 if quick else 400
    rows = []
    pc = time.perf_counter_ns
    for s in RESOLVE_STRINGS:
        r = Resolver(cfg, catalog=cat, env={})
        res = r.resolve(s)
        # cached: the same Resolver, the same string
        per = []
        for _ in range(5):
            t0 = pc()
            for _ in range(reps_cached):
                r.resolve(s)
            per.append((pc() - t0) / reps_cached / 1000)
        cached_us = statistics.median(per)
        # uncached: a fresh Resolver per call (construction not timed); catalog loaded
        fresh, cold, build = [], [], []
        for i in range(reps_fresh):
            t0 = pc()
            rr = Resolver(cfg, catalog=cat, env={})
            t1 = pc()
            if i % 2:  # every other call also forgets the catalog's family-alias cache
                cat._family_cache.clear()
                t2 = pc()
                rr.resolve(s)
                cold.append((pc() - t2) / 1000)
            else:
                t2 = pc()
                rr.resolve(s)
                fresh.append((pc() - t2) / 1000)
            build.append((t1 - t0) / 1000)
        rows.append({"string": s, "model": res.model, "via": res.resolved_via, "cached_us": cached_us,
                     "uncached_us": statistics.median(fresh), "uncached_cold_family_us": statistics.median(cold),
                     "resolver_build_us": statistics.median(build)})
    return {
        "catalog_first_load_ms": first_load * 1000,
        "catalog_reload_ms_median": statistics.median(reloads) * 1000,
        "catalog_entries": len(cat._entries),
        "rows": rows,
        "cached_us_max": max(r["cached_us"] for r in rows),
        "cached_us_median": statistics.median(r["cached_us"] for r in rows),
        "uncached_us_median": statistics.median(r["uncached_us"] for r in rows),
        "uncached_us_max": max(r["uncached_us"] for r in rows),
        "uncached_cold_us_max": max(r["uncached_cold_family_us"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 tasks, 1 round")
    ap.add_argument("--tasks", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--no-pool", action="store_true", help="skip the 3-thread pool baseline")
    ap.add_argument("--ledger", action="store_true", help="only ours with the spend ledger on ÷ off (issue 22)")
    ap.add_argument("--profile", action="store_true",
                    help="after the rounds, one more batch per side under cProfile: bench/out/engine-{raw,ours}.prof")
    ap.add_argument("--worker", choices=["raw", "ours", "pool", "ours_on", "ours_off"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--own", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.tasks or (100 if args.quick else 500)
    if args.own:
        print(json.dumps(bench_own_code(args.quick)))
        return
    if args.worker:
        worker_main(args.worker, args.url, n)
        return
    rounds = args.rounds or (1 if args.quick else 3)

    t_start = time.perf_counter()
    resolver = None
    engine_only = None
    if not args.ledger:
        print("resolver micro-bench …", flush=True)
        resolver = bench_resolver(args.quick)
        engine_only = bench_engine_only(args.quick)
        own = subprocess.run([sys.executable, __file__, "--own"] + (["--quick"] if args.quick else []),
                             capture_output=True, text=True, check=True)
        engine_only["own"] = json.loads(own.stdout.strip().splitlines()[-1])

    from hermes_delegate.loopback import LoopbackProvider

    provider = LoopbackProvider("engine-bench", latency_s=0.1).start()
    names = ["ours_off", "ours_on"] if args.ledger else ["raw", "ours"] + ([] if args.no_pool else ["pool"])
    print(f"starting workers {names} (import + Router build + one warm-up call each) …", flush=True)
    sides = {name: Side(name, provider.base_url, n) for name in names}
    runs: dict[str, list[dict]] = {name: [] for name in names}
    try:
        for s in sides.values():
            s.wait_ready()
        # Each side's first full batch, timed but kept out of the rounds: for ours it is slow start's batch
        # (an unknown deployment's window grows from 2 to 32, issue 24 item 6), paid once per process and
        # deployment, and on both sides the one that opens the connection pool's 500 connections. With it
        # among the rounds, the median of 3 was the larger of the other two.
        first: dict[str, dict] = {}
        for name in names:
            first[name] = sides[name].run()
            print(f"  first batch {name:>4}: {first[name]['wall_s']:7.3f} s wall, {first[name]['cpu_s']:6.3f} s CPU, "
                  f"ok {first[name]['ok']}/{n}", flush=True)
        for r in range(rounds):
            for name in names:
                provider.reset_stats()
                res = sides[name].run()
                st = provider.stats()
                res["provider_max_in_flight"] = st["max_in_flight"]
                res["provider_requests"] = st["requests"]
                runs[name].append(res)
                print(f"  round {r + 1}/{rounds} {name:>4}: {res['wall_s']:7.3f} s wall, {res['cpu_s']:6.3f} s CPU, "
                      f"ok {res['ok']}/{n}, provider max in flight {st['max_in_flight']}", flush=True)
        if args.profile:
            OUT.mkdir(parents=True, exist_ok=True)
            for name in ("raw", "ours"):
                sides[name].profile(OUT / f"engine-{name}.prof")
                print(f"  profiled one {name} batch: {OUT / f'engine-{name}.prof'}", flush=True)
    finally:
        for s in sides.values():
            s.close()
        provider.stop()

    if args.ledger:
        on_off = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["ours_on"], runs["ours_off"], strict=True)]
        cpu = [a["cpu_s"] / b["cpu_s"] for a, b in zip(runs["ours_on"], runs["ours_off"], strict=True)]
        result = {"bench": "engine_ledger", "date": time.strftime("%Y-%m-%d %H:%M"), "tasks": n, "rounds": rounds,
                  "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "runs": runs,
                  "ratio_on_off_wall": on_off, "ratio_on_off_wall_median": statistics.median(on_off),
                  "ratio_on_off_cpu": cpu, "ratio_on_off_cpu_median": statistics.median(cpu), "goal": 1.03}
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "engine_ledger.json").write_text(json.dumps(result, indent=2))
        print(f"ledger on ÷ off: wall {statistics.median(on_off):.3f} (runs {[round(x, 3) for x in on_off]}), "
              f"CPU {statistics.median(cpu):.3f}  (goal ≤ 1.03)")
        return
    ratios = [o["wall_s"] / r["wall_s"] for o, r in zip(runs["ours"], runs["raw"], strict=True)]
    cpu_ratios = [o["cpu_s"] / r["cpu_s"] for o, r in zip(runs["ours"], runs["raw"], strict=True)]
    result = {
        "bench": "engine", "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "tasks": n,
        "rounds": rounds, "latency_s": 0.1, "max_concurrency": max(n, 500), "cpus": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "runs": runs, "startup": {k: s.info for k, s in sides.items()},
        "ratio_vs_raw_wall": ratios, "ratio_vs_raw_wall_median": statistics.median(ratios),
        "ratio_vs_raw_cpu": cpu_ratios, "ratio_vs_raw_cpu_median": statistics.median(cpu_ratios),
        "goal_ratio_vs_raw": 1.05,
        "first_batch": first, "first_batch_ratio_vs_raw_wall": first["ours"]["wall_s"] / first["raw"]["wall_s"],
        "resolver": resolver, "engine_only_cpu_us_per_task": engine_only,
    }
    if "pool" in runs:
        speedups = [p["wall_s"] / o["wall_s"] for p, o in zip(runs["pool"], runs["ours"], strict=True)]
        result["speedup_vs_pool3"] = speedups
        result["speedup_vs_pool3_median"] = statistics.median(speedups)
    result["total_runtime_s"] = time.perf_counter() - t_start

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engine.json").write_text(json.dumps(result, indent=2))

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[name])

    print()
    print(f"Engine overhead — {n} tasks, provider latency 100 ms, concurrency {max(n, 500)}, "
          f"{rounds} alternating round(s), median")
    print(f"{'side':<34}{'wall s':>9}{'CPU s':>9}{'CPU ms/task':>13}{'ok':>7}")
    labels = {"raw": "raw asyncio.gather(router.acompletion)", "ours": "hermes-delegate Delegator.run",
              "pool": "ThreadPoolExecutor(3) + completion"}
    for name in names:
        print(f"{labels[name]:<34.34}{med(name, 'wall_s'):>9.3f}{med(name, 'cpu_s'):>9.3f}"
              f"{1000 * med(name, 'cpu_s') / n:>13.2f}{int(med(name, 'ok')):>7}")
    print()
    print(f"{'metric':<44}{'measured':>12}{'goal':>10}  ")
    m = result["ratio_vs_raw_wall_median"]
    print(f"{'ours ÷ raw Router, wall (median)':<44}{m:>11.3f}x{'≤ 1.05x':>10}  {'ok' if m <= 1.05 else 'MISSED'}"
          f"   rounds: {', '.join(f'{x:.3f}' for x in ratios)}")
    f1 = result["first_batch_ratio_vs_raw_wall"]
    print(f"{'first batch of a process, ours ÷ raw, wall':<44}{f1:>11.3f}x{'—':>10}   (slow start: "
          "an unknown deployment's window grows from 2; not in the rounds)")
    print(f"{'ours ÷ raw Router, process CPU (median)':<44}{result['ratio_vs_raw_cpu_median']:>11.3f}x{'—':>10}"
          f"   rounds: {', '.join(f'{x:.3f}' for x in cpu_ratios)}")
    if "pool" in runs:
        print(f"{'speed-up vs 3-thread pool (median)':<44}{result['speedup_vs_pool3_median']:>11.1f}x{'—':>10}")
    print(f"{'engine alone (no litellm), CPU per task':<44}{engine_only['ledger_on']:>9.1f} µs"
          f"   (ledger off: {engine_only['ledger_off']:.1f} µs; median of batches, this process)")
    own = engine_only["own"]
    print(f"{'+ RouterHandle and hooks, CPU per task':<44}{own['ledger_on']:>9.1f} µs"
          f"   (ledger off: {own['ledger_off']:.1f} µs; the handle and hooks alone: {own['handle_us']:.1f} µs;"
          " a stand-in Router answering at once)")
    print()
    print(f"Resolver — catalog load {resolver['catalog_first_load_ms']:.0f} ms first, "
          f"{resolver['catalog_reload_ms_median']:.0f} ms reload ({resolver['catalog_entries']} entries)")
    print(f"{'string':<30}{'→ model':<40}{'via':<14}{'cached µs':>10}{'fresh µs':>10}{'cold µs':>10}")
    for row in resolver["rows"]:
        print(f"{row['string']:<30}{row['model']:<40.40}{row['via']:<14}{row['cached_us']:>10.2f}"
              f"{row['uncached_us']:>10.1f}{row['uncached_cold_family_us']:>10.1f}")
    c = resolver["cached_us_max"]
    print(f"cached: max {c:.2f} µs (goal ≤ 20 µs: {'ok' if c <= 20 else 'MISSED'}); "
          f"uncached: median {resolver['uncached_us_median']:.1f} µs, max {resolver['uncached_us_max']:.1f} µs; "
          "cold = family-alias cache cleared too")
    print(f"\nwrote {OUT / 'engine.json'}  (total {result['total_runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
