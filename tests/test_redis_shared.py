"""Every limit is shared through a real Redis, not only the rpm windows: parallel slots, token
counts, and the limits one process learned from the provider.

Each test runs separate delegator processes against ONE loopback provider that enforces the limit
(answering 429 beyond it) and, with Redis configured, asserts from the provider's own records that
together they stayed under it; the control case without Redis shows the same processes overloading it.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hermes_delegate.loopback import LoopbackProvider
from helpers import run_together

timing = pytest.mark.timing  # rates and windows shared between processes

WORKER = textwrap.dedent('''
    import json, os, sys
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    from hermes_delegate import Delegator, Task, config_from_dict

    spec = json.loads(sys.argv[1])
    d = Delegator(config_from_dict(spec["config"], source="(shared limits test worker)"))
    d.router.router  # build the Router (imports litellm) before the common start
    print("READY", flush=True)
    sys.stdin.readline()  # all processes start their batch together
    batch = d.run_sync([Task(f"{spec['name']}-{i}: " + "word " * spec.get("words", 1), model="shared")
                        for i in range(spec["n"])])
    print(json.dumps({
        "counts": batch.counts(),
        "statuses": [s for r in batch.results for s in [a.status for a in r.attempts]],
        "limits": [r.deployment.limits for r in batch.results if r.deployment is not None],
    }))
''')


def _config(provider: LoopbackProvider, redis_port: int | None, dep_id: str, **params: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"num_retries": 3}
    if redis_port is not None:
        settings.update(redis_host="127.0.0.1", redis_port=redis_port)
    return {
        "delegation": {"max_concurrency": 64, "task_timeout_s": 60},
        "router": {
            "model_list": [{
                "model_name": "shared",
                "litellm_params": {"model": "openai/shared-model", "api_base": provider.base_url,
                                   "api_key": "sk-loopback-test-key", **params},
                "model_info": {"id": dep_id},  # the same in every process: the shared key
            }],
            "router_settings": settings,
        },
    }


def _run(config: dict[str, Any], tmp_path: Path, n_procs: int, **spec: Any) -> list[dict[str, Any]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    outs = run_together(script, [[json.dumps({"config": config, "name": f"p{i}", **spec})] for i in range(n_procs)],
                        tmp_path)
    return [json.loads(o) for o in outs]


def _unique(name: str) -> str:
    return f"{name}-{os.getpid()}-{time.time_ns()}"


@pytest.fixture
def provider() -> Iterator[LoopbackProvider]:
    with LoopbackProvider("shared", latency_s=0.05, retry_after=1).start() as p:
        yield p


@timing
@pytest.mark.slow
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "no-redis"])
def test_max_parallel_is_one_limit_across_processes(provider: LoopbackProvider, redis_port: int, shared: bool,
                                                    tmp_path: Path) -> None:
    provider.max_concurrent, provider.latency_s = 2, 0.3
    cfg = _config(provider, redis_port if shared else None, _unique("par"), max_parallel_requests=2)
    outs = _run(cfg, tmp_path, 2, n=6)
    stats = provider.stats()
    if shared:
        assert [o["counts"] for o in outs] == [{"completed": 6}] * 2, outs
        assert stats["max_in_flight"] <= 2, stats
        assert stats["429"] == 0, stats
        assert all(o["limits"][0]["max_parallel"] == 2 for o in outs)
    else:  # each process keeps to 2 on its own: 4 at once at the provider, which refuses the extra
        assert stats["429"] > 0, stats
        assert "429" in [s for o in outs for s in o["statuses"]]


@timing
@pytest.mark.slow
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "no-redis"])
def test_a_learned_token_limit_is_one_budget_across_processes(provider: LoopbackProvider, redis_port: int,
                                                              shared: bool, tmp_path: Path) -> None:
    # the provider states its tpm in headers (none configured): every process learns the same
    # limit, and only a shared bucket keeps the sum of them under it
    provider.tpm, provider.token_window_s, provider.latency_s = 24000, 1.0, 0.02  # 400 tokens per second
    cfg = _config(provider, redis_port if shared else None, _unique("tpm"))
    cfg["delegation"]["max_tokens"] = 20
    outs = _run(cfg, tmp_path, 2, n=12, words=40)
    stats = provider.stats()
    if shared:
        assert [o["counts"] for o in outs] == [{"completed": 12}] * 2, outs
        assert stats["429"] <= 2, stats  # the first request of each process goes before anything is known
        assert all(o["limits"][-1]["tpm"] == 24000.0 and o["limits"][-1]["learned"] == ["tpm"] for o in outs)
    else:
        assert stats["429"] > 2, stats


# not `timing`: what the headers stated, read back; no rate or time is asserted
@pytest.mark.slow
def test_limits_learned_by_one_process_are_known_to_the_next_and_to_the_cli(
        provider: LoopbackProvider, redis_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from hermes_delegate.hosts.cli import main

    provider.rps = 5
    dep_id = _unique("learned")
    cfg = _config(provider, redis_port, dep_id)
    outs = _run(cfg, tmp_path, 1, n=4)
    assert outs[0]["limits"][-1] == {"rpm": 300.0, "learned": ["rpm"], "learned_from": "headers"}

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["models", "--config", str(path), "--json"]) == 0
    inv = json.loads(capsys.readouterr().out)
    row = inv["learned_limits"][dep_id]
    assert (row["rpm"], row["learned_from"], row["group"], row["model"]) == \
        (300.0, "headers", "shared", "openai/shared-model")
    assert "sk-loopback-test-key" not in json.dumps(inv)
    assert main(["models", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "shared (openai/shared-model): rpm 300 (learned from headers" in text



@timing
@pytest.mark.slow
def test_a_pace_adapted_on_429s_is_where_the_next_process_starts(provider: LoopbackProvider, redis_port: int,
                                                                 tmp_path: Path) -> None:
    # no limit headers: the first process finds the rate by its 429s; the next starts at that pace
    # instead of bursting into the provider again
    provider.rps, provider.ratelimit_headers = 5, "none"
    cfg = _config(provider, redis_port, _unique("adapted"))
    first = _run(cfg, tmp_path, 1, n=20)
    assert first[0]["counts"] == {"completed": 20}
    first_429s = provider.stats()["429"]
    assert first_429s >= 1, "the first process meets the limit (slow start: a few requests at once, not a burst)"
    assert first[0]["limits"][-1]["learned_from"] == "429s"

    time.sleep(1.1)  # the provider's window forgets the first process
    provider.reset_stats()
    again = _run(cfg, tmp_path, 1, n=15)
    assert again[0]["counts"] == {"completed": 15}
    assert provider.stats()["429"] <= 1, provider.stats()
    assert again[0]["limits"][0]["learned_from"] == "429s"


# -- the store itself, two "processes" (two clients) on one real Redis ---------------------------

def _stores(redis_port: int, n: int = 2) -> list[Any]:
    from hermes_delegate.ratelimit.redis_windows import RedisWindows

    return [RedisWindows(port=redis_port) for _ in range(n)]


@timing
def test_capacity_that_frees_goes_to_the_process_that_waited_longest(redis_port: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from hermes_delegate.ratelimit import redis_windows
    from hermes_delegate.ratelimit.windows import Ask

    # A comes back when told; a loaded machine may make that later than the 250 ms grace, after which
    # A would count as gone (what test_..._waiter_not_back covers is not this test's point)
    monkeypatch.setattr(redis_windows, "FAIR_GRACE_MS", 30_000)

    async def go() -> None:
        a, b = _stores(redis_port)
        key = _unique("fair")
        assert await a.admit(key, Ask("a0", rpm=(1, 0.3), waiter="A")) == 0.0
        wait_a = await a.admit(key, Ask("a1", rpm=(1, 0.3), waiter="A"))  # refused: A queues
        assert 0 < wait_a <= 0.3
        await asyncio.sleep(wait_a + 0.02)  # not synchronisation: the window must pass (sleep is never early)
        # the slot is free, but A has waited for it: B, asking first, is turned away
        assert await b.admit(key, Ask("b0", rpm=(1, 0.3), waiter="B")) > 0
        assert await a.admit(key, Ask("a1", rpm=(1, 0.3), waiter="A")) == 0.0
        await asyncio.sleep(0.32)  # a1's window passes
        assert await b.admit(key, Ask("b0", rpm=(1, 0.3), waiter="B")) == 0.0  # and then B
        for s in (a, b):
            await s.aclose()

    asyncio.run(go())


@timing
def test_a_parallel_slot_of_a_process_that_died_frees_when_its_lease_ends(redis_port: int,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from hermes_delegate.ratelimit import redis_windows
    from hermes_delegate.ratelimit.windows import Ask

    lease_s = 1.0  # a renewal may come up to ~0.95 s late on a loaded machine and still hold the slot
    monkeypatch.setattr(redis_windows, "LEASE_S", lease_s)
    monkeypatch.setattr(redis_windows, "RENEW_EVERY_S", 0.05)

    async def go() -> None:
        dead, alive = _stores(redis_port)
        key = _unique("lease")
        assert await dead.admit(key, Ask("d0", parallel=1)) == 0.0
        dead._renewer.cancel()  # it dies holding the slot: no release, no renewal
        assert await alive.admit(key, Ask("l0", parallel=1)) > 0
        t0 = time.monotonic()
        while await alive.admit(key, Ask("l0", parallel=1)) > 0:  # until the dead lease ends
            assert time.monotonic() - t0 < 10 * lease_s, "the dead process's slot never freed"
            await asyncio.sleep(0.02)
        assert time.monotonic() - t0 >= lease_s - 0.05, "freed before the lease ended"
        # a live holder renews its lease: the slot stays taken past LEASE_S until it releases it
        await asyncio.sleep(1.5 * lease_s)  # not synchronisation: past the lease (sleep is never early)
        assert await dead.admit(key, Ask("d1", parallel=1)) > 0
        await alive.release(key, "l0")
        assert await dead.admit(key, Ask("d1", parallel=1)) == 0.0
        for s in (dead, alive):
            await s.aclose()

    asyncio.run(go())


@timing
def test_a_configured_token_window_is_one_budget_across_processes(redis_port: int) -> None:
    import asyncio

    from hermes_delegate.ratelimit.windows import Ask

    async def go() -> None:
        a, b = _stores(redis_port)
        key = _unique("tpm-window")
        ask = {"tokens": 100.0, "tpm_window": (300.0, 2.0)}
        assert await a.admit(key, Ask("a0", **ask)) == 0.0
        assert await b.admit(key, Ask("b0", **ask)) == 0.0
        assert await a.admit(key, Ask("a1", **ask)) == 0.0
        wait = await b.admit(key, Ask("b1", **ask))  # 400 > 300 in 2 s: until the first leaves the window
        assert 1.5 < wait <= 2.0
        for s in (a, b):
            await s.aclose()

    asyncio.run(go())


@timing
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "local"])
def test_a_request_counted_as_sent_earlier_leaves_the_window_earlier(redis_port: int, shared: bool) -> None:
    """What a pace set on a 429 starts from: the sends the provider still counts, at their own times."""
    import asyncio

    from hermes_delegate.ratelimit.windows import Ask, LocalWindows

    async def go() -> None:
        store = _stores(redis_port, 1)[0] if shared else LocalWindows()
        key = _unique("ago")
        t0 = time.monotonic()
        await store.record(key, 1.0, ago_s=0.7)
        await store.record(key, 1.0, ago_s=0.2)
        wait = await store.admit(key, Ask("x", rpm=(2, 1.0)))  # full: until the earlier one leaves
        elapsed = time.monotonic() - t0  # the earlier one leaves 0.3 s after it was recorded
        assert 0.3 - elapsed - 0.01 <= wait <= 0.3 + 0.01, (wait, elapsed)
        if shared:
            await store.aclose()

    asyncio.run(go())


@timing
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "local"])
def test_a_window_admits_evenly_spaced_never_a_burst(redis_port: int, shared: bool) -> None:
    """L = 4 per 1 s: the second request waits W/L = 0.25 s after the first (a burst of four, stamped at
    admission but sent over litellm's call-path time, overran a provider's sliding window), and the
    fifth still waits for the first to leave the window. Both stores pace alike."""
    import asyncio

    from hermes_delegate.ratelimit.windows import Ask, LocalWindows

    async def go() -> None:
        store = _stores(redis_port, 1)[0] if shared else LocalWindows()
        key = _unique("spaced")
        ask = lambda tok: Ask(tok, rpm=(4, 1.0))  # noqa: E731
        before0 = time.monotonic()
        assert await store.admit(key, ask("r0")) == 0.0
        after0 = time.monotonic()
        wait = await store.admit(key, ask("r1"))
        assert 0.25 - (time.monotonic() - before0) - 0.01 <= wait <= 0.25 + 0.01, wait  # W/L after r0
        admitted = 1
        deadline = asyncio.get_running_loop().time() + 3
        while admitted < 5 and asyncio.get_running_loop().time() < deadline:
            wait = await store.admit(key, ask(f"r{admitted}"))
            if wait == 0.0:
                admitted += 1
                if admitted == 4:  # the window holds four now: the fifth waits for r0 to leave it
                    asked = time.monotonic()
                    wait4 = await store.admit(key, ask("r4"))
                    assert before0 + 1.0 - time.monotonic() - 0.01 <= wait4 <= after0 + 1.0 - asked + 0.01, wait4
            else:
                await asyncio.sleep(wait)
        assert admitted == 5
        if shared:
            await store.aclose()

    asyncio.run(go())


@timing
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "local"])
def test_the_spacing_keeps_its_schedule_when_sends_are_late(redis_port: int, shared: bool) -> None:
    """L = 4 per 1 s (W/L = 0.25 s): a request restamped when it finally leaves, or a waiter woken a
    little late, does not push the next admission back. Spaced from the send stamps, every gap also
    took the admission-to-send time, a few % of the rate (issue 14's P3 share). The L-per-W window
    over the send stamps still holds."""
    import asyncio

    from hermes_delegate.ratelimit.windows import Ask, LocalWindows

    async def go() -> None:
        store = _stores(redis_port, 1)[0] if shared else LocalWindows()
        key = _unique("schedule")
        ask = lambda tok: Ask(tok, rpm=(4, 1.0))  # noqa: E731
        # every call to admit: (request, started, ended, wait answered); r0's admission sets the schedule
        tries: list[tuple[int, float, float, float]] = []
        for i in range(3):
            while True:
                started = time.monotonic()
                wait = await store.admit(key, ask(f"r{i}"))
                tries.append((i, started, time.monotonic(), wait))
                if wait == 0:
                    break
                await asyncio.sleep(wait + 0.03)  # woken 30 ms late every time
            await asyncio.sleep(0.04)
            await store.restamp(key, f"r{i}")  # sent 40 ms after admission
        (_, s0, e0, _), *rest = tries
        # on schedule: r_i is due 0.25·i after r0 was admitted, however late the sends and wake-ups
        # were: a call that started after its due time is admitted, one that ended before it is not
        # (timed by the calls themselves, so a loaded machine's late wake-ups change nothing here)
        for i, started, ended, wait in rest:
            if started > e0 + 0.25 * i + 0.005:
                assert wait == 0, (i, "refused after its due time", tries)
            if ended < s0 + 0.25 * i - 0.005:
                assert wait > 0, (i, "admitted before its due time", tries)
        if shared:
            await store.aclose()

    asyncio.run(go())
