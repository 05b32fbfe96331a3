"""Issue #5, interrupts and time: cancelling a running batch returns at once, ends every unfinished task
`interrupted`, and leaves nothing behind; a per-task timeout ends only that task.

"Left behind" means, precisely:
  * asyncio: no task of ours (fan-out tasks, stop waiters, timers) still pending on the loop after
    `Delegator.run()` returned or was cancelled;
  * threads: no thread started during the batch still alive after a short grace period (the loopback
    servers' daemon threads exist before and are not counted);
  * sockets: no request still held by the provider (the client hung up on every cancelled request),
    and, after `run_sync()` (whose loop ends with the batch), no client socket to the provider at all.
    Inside a long-lived loop (`await Delegator.run()`), LiteLLM keeps its HTTP connection pool for the
    next batch: the connections that stay open must be idle (none has a request in flight, the
    provider holds none) and bounded (at most the batch's concurrency).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from conftest import LoopbackPair, loopback_config
from hermes_delegate import BatchResult, Delegator, Task
from hermes_delegate.routing._litellm import close_loop_clients
from helpers import async_wait_until, client_sockets, new_threads, opened_since

pytestmark = [pytest.mark.timing, pytest.mark.litellm]  # "returns within 1 s", "ends at its timeout"

N = 50
LATENCY_S = 60.0  # far past the 30 s the test waits for all N in flight: none is answered first


def _our_tasks() -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me and not t.done()]


async def _settled(before: set[asyncio.Task[Any]], timeout_s: float = 5.0) -> list[str]:
    """The names of our asyncio tasks started since `before` still pending once they have had up to
    `timeout_s` to unwind (cancelled HTTP requests take a few loop turns): [] as soon as there are none."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [t.get_name() for t in _our_tasks() if t not in before]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.01)


def _wait_in_flight(p, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout  # the first run in the process imports litellm
    while p.in_flight < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.in_flight == n, f"only {p.in_flight} of {n} requests reached the provider"


def _wait_idle(providers: LoopbackPair, grace_s: float = 3.0) -> int:
    deadline = time.monotonic() + grace_s
    while any(p.in_flight for p in providers) and time.monotonic() < deadline:
        time.sleep(0.02)
    return sum(p.in_flight for p in providers)


def _assert_all_interrupted(batch: BatchResult, n: int) -> None:
    assert [r.index for r in batch.results] == list(range(n))
    assert batch.counts() == {"interrupted": n}
    for r in batch.results:
        assert r.error["type"] == "interrupted" and r.summary is None


def test_interrupt_from_another_thread_returns_within_1s_and_leaves_nothing(providers: LoopbackPair):
    providers.alpha.latency_s = LATENCY_S
    d = Delegator(loopback_config(providers, max_concurrency=N))
    d.router.router  # noqa: B018 - build the Router (imports litellm) before the clock starts
    threads_before = {t.ident for t in threading.enumerate()}
    ports = {providers.alpha.port, providers.beta.port}
    sockets_before = client_sockets(ports)
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["batch"] = d.run_sync([Task(f"i{i}", model="alpha") for i in range(N)])
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            out["error"] = exc

    th = threading.Thread(target=run, name="batch-runner", daemon=True)
    th.start()
    _wait_in_flight(providers.alpha, N)
    t0 = time.monotonic()
    d.interrupt()
    th.join(5)
    elapsed = time.monotonic() - t0
    assert not th.is_alive(), "run_sync did not return after interrupt()"
    assert "error" not in out, out.get("error")
    assert elapsed < 1.0, f"control came back after {elapsed:.2f}s"
    _assert_all_interrupted(out["batch"], N)
    assert providers.alpha.stats()["ok"] == 0
    # nothing left behind: the provider holds no request, no socket to it, no new thread
    assert _wait_idle(providers) == 0
    assert opened_since(sockets_before, ports) == [], "run_sync left client sockets open"
    assert new_threads(threads_before) == []
    assert not d._stops, "the Delegator still tracks a finished batch"


def test_cancelling_the_asyncio_task_running_the_batch(providers: LoopbackPair):
    providers.alpha.latency_s = LATENCY_S
    d = Delegator(loopback_config(providers, max_concurrency=N))
    d.router.router  # noqa: B018
    threads_before = {t.ident for t in threading.enumerate()}
    ports = {providers.alpha.port, providers.beta.port}

    async def main() -> dict[str, Any]:
        before = set(_our_tasks())
        sockets_before = client_sockets(ports)
        runner = asyncio.create_task(d.run([Task(f"c{i}", model="alpha") for i in range(N)]))
        await async_wait_until(lambda: providers.alpha.in_flight >= N, 30, f"{N} requests at the provider")
        t0 = time.monotonic()
        runner.cancel()
        try:
            await runner
        except asyncio.CancelledError:
            pass
        elapsed = time.monotonic() - t0
        left = await _settled(before)  # cancelled HTTP requests unwind
        held = await asyncio.to_thread(_wait_idle, providers)
        pooled = opened_since(sockets_before, ports)
        await close_loop_clients()  # this loop ends here: close its clients, as run_sync does
        closed = opened_since(sockets_before, ports)
        return {"elapsed": elapsed, "cancelled": runner.cancelled(), "left": left, "held": held,
                "pooled": pooled, "after_close": closed}

    res = asyncio.run(main())
    assert res["cancelled"], "cancelling the task must propagate CancelledError to its awaiter"
    assert res["elapsed"] < 1.0, res
    assert res["left"] == [], f"asyncio tasks left pending: {res['left']}"
    assert res["held"] == 0, "a cancelled request is still held by the provider"
    assert len(res["pooled"]) <= N, res["pooled"]  # pooled keep-alive: idle (held == 0) and bounded
    assert res["after_close"] == []
    assert not d._stops
    assert new_threads(threads_before) == []
    # the interrupted batch did not poison the Delegator: the next batch runs normally
    providers.alpha.latency_s = 0
    assert d.run_sync([Task("after", model="alpha")]).ok


def test_run_async_interrupt_returns_results_and_keeps_the_pool_idle_and_bounded(providers: LoopbackPair):
    """Delegator.interrupt() while `await run()` runs inside the caller's (long-lived) loop."""
    providers.alpha.latency_s = LATENCY_S
    d = Delegator(loopback_config(providers, max_concurrency=N))
    ports = {providers.alpha.port, providers.beta.port}

    async def main() -> tuple[BatchResult, float, list[str], Any, int]:
        before = set(_our_tasks())
        sockets_before = client_sockets(ports)
        runner = asyncio.create_task(d.run([Task(f"a{i}", model="alpha") for i in range(N)]))
        await async_wait_until(lambda: providers.alpha.in_flight >= N, 30, f"{N} requests at the provider")
        t0 = time.monotonic()
        threading.Thread(target=d.interrupt).start()  # from another thread, as a host would
        batch = await runner
        elapsed = time.monotonic() - t0
        left = await _settled(before)
        held = await asyncio.to_thread(_wait_idle, providers)
        # a second batch in the same loop reuses the pool instead of growing it
        providers.alpha.latency_s = 0
        again = await d.run([Task(f"b{i}", model="alpha") for i in range(8)])
        assert again.ok
        pooled = opened_since(sockets_before, ports)
        # a host whose loop ends closes that loop's clients, as run_sync does
        await close_loop_clients()
        assert opened_since(sockets_before, ports) == []
        return batch, elapsed, left, pooled, held

    batch, elapsed, left, pooled, held = asyncio.run(main())
    assert elapsed < 1.0
    _assert_all_interrupted(batch, N)
    assert left == []
    assert held == 0
    assert len(pooled) <= N, pooled  # idle (held == 0) and bounded by the batch's concurrency


def test_per_task_timeout_ends_only_that_task(providers: LoopbackPair):
    providers.alpha.script(["slow"])  # the first alpha request hangs for 30 s
    d = Delegator(loopback_config(providers, task_timeout_s=1.0))
    t0 = time.monotonic()
    batch = d.run_sync([Task("hangs", model="alpha"), Task("fine-a", model="alpha"),
                        Task("fine-b", model="beta"), Task("fine-c", model="beta")])
    wall = time.monotonic() - t0
    hung, *rest = batch.results
    assert hung.status == "timeout" and hung.error["type"] == "timeout"
    assert 0.9 <= hung.duration_s < 2.0
    assert [r.status for r in rest] == ["completed"] * 3
    assert all(r.duration_s < 1.0 for r in rest)
    assert wall < 4
    assert _wait_idle(providers) == 0, "the hung request was not abandoned by the client"


def test_run_sync_closes_its_connections(providers: LoopbackPair):
    """Regression: every run_sync() (a fresh event loop) used to leave its keep-alive connections open:
    litellm caches clients per event loop and never closes those of a loop that ended."""
    d = Delegator(loopback_config(providers))
    ports = {providers.alpha.port, providers.beta.port}
    before = client_sockets(ports)
    if before is None:
        pytest.skip("needs /proc")
    for i in range(3):
        assert d.run_sync([Task(f"s{i}-{j}", model="alpha") for j in range(8)]).ok
        assert client_sockets(ports) == before, f"batch {i} left sockets open"


def test_tools_sync_calls_close_their_connections(providers: LoopbackPair):
    from hermes_delegate.tools.delegate_tools import DelegateTools

    tools = DelegateTools(Delegator(loopback_config(providers)))
    ports = {providers.alpha.port, providers.beta.port}
    before = client_sockets(ports)
    if before is None:
        pytest.skip("needs /proc")
    for i in range(2):
        assert '"completed"' in tools.delegate_task_sync({"tasks": [{"goal": f"t{i}-{j}", "model": "alpha"}
                                                                    for j in range(4)]})
    assert opened_since(before, ports) == []
