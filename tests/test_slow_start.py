"""Slow start for unknown limits (issue 24 item 6): a deployment with no configured limit that sends no
rate-limit headers is not sent its whole first burst at once. After its first answer a small
in-flight window grows by one request per success (TCP's slow start) until the first 429 hands over
to the pace adapted on 429s; configured limits and limits learned from headers are unchanged.

One end-to-end case (the real Router, a loopback provider that answers only 429 + Retry-After over
its limit); the window's logic is tested directly on the gate, with no waiting on the clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import LOOPBACK_KEY
from hermes_delegate import Delegator, Task, config_from_dict
from hermes_delegate.loopback import LoopbackProvider
from hermes_delegate.ratelimit.gate import CapacityGate, Limits
from hermes_delegate.ratelimit.learned import SLOW_START_END, SLOW_START_WINDOW

DEPS = [{"model_info": {"id": "d"}}]


@pytest.mark.slow
@pytest.mark.timing  # counts 429s against a provider limited to a real rate
def test_the_first_burst_at_a_provider_that_states_nothing_does_not_collide() -> None:
    with LoopbackProvider("ss", latency_s=0.2, rps=4, retry_after="auto", ratelimit_headers="none") as p:
        cfg = config_from_dict({
            "delegation": {"max_concurrency": 16, "task_timeout_s": 60},
            "router": {"model_list": [{"model_name": "g", "model_info": {"id": "ss-1"},
                                       "litellm_params": {"model": "openai/ss-model", "api_base": p.base_url,
                                                          "api_key": LOOPBACK_KEY}}],
                       "router_settings": {"num_retries": 8}}})
        d = Delegator(cfg)
        d.router.router  # noqa: B018 - import litellm and build the Router outside the batch
        out = d.run_sync([Task(f"task {i}", model="g") for i in range(16)])
        stats = p.stats()
    assert out.counts() == {"completed": 16}, [r.error for r in out.results if r.error]
    # before: the 15 calls queued behind the first request all went at once when it answered, and
    # 11 or more of them were refused; now the window meets the limit at a few requests in flight
    assert stats["429"] <= 6, stats
    limits = out.results[-1].deployment.limits
    assert limits["learned_from"] == "429s", limits  # then the pace adapted on 429s, as before


def _gate(**configured: Any) -> CapacityGate:
    return CapacityGate({"d": Limits(**configured)}, learn=True)


async def _admitted(gate: CapacityGate, n: int) -> tuple[list[asyncio.Task], list[asyncio.Task]]:
    """Start n calls at the gate; (admitted, still queued) once the queue has settled."""
    calls = [asyncio.create_task(gate.acquire("g", DEPS, 10.0, ticket=i)) for i in range(n)]
    for _ in range(50):  # let every call reach the gate (no timing: loop turns)
        await asyncio.sleep(0)
    return [c for c in calls if c.done()], [c for c in calls if not c.done()]


def test_after_the_first_answer_a_small_window_grows_one_per_success() -> None:
    gate = _gate()
    assert not gate.paced("d")  # nothing known yet: the first request goes alone (first_request.py)
    gate.observe("d", None, status=200)  # answered, no headers
    assert gate.paced("d") and gate.adaptive["d"].window == SLOW_START_WINDOW

    async def main() -> None:
        done, queued = await _admitted(gate, 6)
        assert len(done) == SLOW_START_WINDOW and len(queued) == 6 - SLOW_START_WINDOW
        assert "slow start" in (gate.holding(["d"]) or "")
        gate.observe("d", None, status=200)  # a success widens the window by one, and frees a slot
        gate.release("d")
        for _ in range(50):
            await asyncio.sleep(0)
        assert sum(c.done() for c in queued) == 2  # the freed slot and the new one
        for c in queued:
            c.cancel()
        await asyncio.gather(*queued, return_exceptions=True)

    asyncio.run(main())


def test_a_window_that_never_meets_a_limit_ends() -> None:
    gate = _gate()
    for _ in range(SLOW_START_END):
        gate.observe("d", None, status=200)
    assert not gate.paced("d") and not gate.limited(DEPS)  # nothing held any more


def test_a_429_hands_over_to_the_adapted_pace() -> None:
    gate = _gate()
    gate.adaptive["d"].on_sent(gate.clock())  # accepted
    gate.observe("d", None, status=200)
    gate.adaptive["d"].on_sent(gate.clock())  # refused
    gate.observe("d", {"retry-after": "0"}, status=429)
    assert gate.adaptive["d"].settle_at is not None and gate.paced("d")

    async def main() -> None:
        await gate.acquire("g", DEPS, 10.0)  # the hold is over: the pace is set

    asyncio.run(main())
    ad = gate.adaptive["d"]
    assert ad.adapted and not ad.slow_starting() and "d" in gate.limits


def test_configured_and_header_learned_limits_have_no_window() -> None:
    configured = _gate(max_parallel=8)  # a slot count: its first wave goes at once
    configured.observe("d", None, status=200)
    assert not configured.adaptive["d"].slow_starting()

    stated = _gate()
    stated.observe("d", {"x-ratelimit-limit-requests": "6000"}, status=200)
    assert not stated.adaptive["d"].slow_starting() and stated.describe("d")["rpm"] == 6000.0

    async def main() -> None:
        done, queued = await _admitted(configured, 8)
        assert len(done) == 8 and not queued  # 8 slots, no in-flight window of 2

    asyncio.run(main())
