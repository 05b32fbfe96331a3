"""Provider lies cannot stall a batch (issue 25 item 3) and Redis names a deployment by what makes it
distinct (item 9).

End to end (the real Router, loopback providers stating whatever a test wants in their headers, the
real redis-server): a learned limit that cannot admit one request is refused and said so; a task
never waits in the queue longer than delegation.max_queue_wait_s, with or without a task timeout,
and then fails typed naming the limit that held it and where it came from; limits published to
Redis expire soon after they stop being confirmed, are refused when unbelievable, and two configs
reusing one model_info.id never share them. The pure logic (header parsing, learning, the gate's
waits) is tested directly with an injected clock, and with Hypothesis over generated headers:
every Retry-After form, every limit, garbage: a typed outcome and a bounded wait.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LOOPBACK_KEY
from hermes_delegate import Delegator, Task, config_from_dict
from hermes_delegate.core.errors import ProviderError
from hermes_delegate.loopback import LoopbackProvider
from hermes_delegate.ratelimit.first_request import CONFIRM_EVERY_S
from hermes_delegate.ratelimit.gate import CapacityGate, Limits, TokenEstimate
from hermes_delegate.ratelimit.headers import parse_rate_headers
from hermes_delegate.ratelimit.keys import store_key
from hermes_delegate.ratelimit.sanity import MAX_HOLD_S, MIN_LEARNED_RPM, MIN_LEARNED_TPM

PROPS = settings(max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])


# -- end to end: the real Router, loopback providers that lie ----------------------------------------
def lying(*headers: tuple[str, str], latency_s: float = 0.0) -> LoopbackProvider:
    """A provider that enforces nothing and states `headers` on every answer."""
    return LoopbackProvider("liar", latency_s=latency_s, extra_headers=list(headers)).start()


@pytest.fixture
def stop_after() -> Iterator[list[LoopbackProvider]]:
    started: list[LoopbackProvider] = []
    yield started
    for p in started:
        p.stop()


def dep(p: LoopbackProvider, dep_id: str = "liar-1", **params: Any) -> dict[str, Any]:
    return {"model_name": "g", "model_info": {"id": dep_id},
            "litellm_params": {"model": "openai/liar-model", "api_base": p.base_url, "api_key": LOOPBACK_KEY,
                               **params}}


def delegator(*deployments: dict[str, Any], router_settings: dict[str, Any] | None = None,
              **delegation: Any) -> Delegator:
    cfg = config_from_dict({"delegation": {"max_concurrency": 8, "task_timeout_s": 30, **delegation},
                            "router": {"model_list": list(deployments),
                                       "router_settings": router_settings or {"num_retries": 0}}})
    d = Delegator(cfg)
    d.router.router  # noqa: B018 - import litellm and build the Router outside the batch
    return d


@pytest.mark.parametrize("header, value, key", [
    ("x-ratelimit-limit-tokens", "1", "tpm"),
    ("x-ratelimit-limit-requests", "1e-9", "rpm"),
])
def test_a_limit_that_cannot_admit_one_request_is_refused_and_said(stop_after: list, header: str, value: str,
                                                                   key: str) -> None:
    p = lying((header, value))
    stop_after.append(p)
    d = delegator(dep(p))
    out = d.run_sync([Task(f"task {i}", model="g") for i in range(6)])

    assert out.counts() == {"completed": 6}, [r.error for r in out.results]  # before: queued until the timeout
    limits = out.results[-1].deployment.limits
    assert limits["refused"] == {key: float(value)}
    assert key not in limits  # not in force
    assert any(f"{key} {float(value):g}" in w and "refused" in w for w in limits["warnings"]), limits
    # list_models says so too
    listed = d.model_listing_sync()["groups"]["g"]["deployments"][0]["limits"]
    assert listed["refused"] == {key: float(value)} and listed["warnings"], listed


def test_no_task_waits_longer_than_max_queue_wait_s_even_without_a_task_timeout(stop_after: list) -> None:
    # one request a minute is believable (the floor), but 3 more tasks would wait minutes: with no
    # task timeout (the hermes plugin's default) they used to wait for ever
    p = lying(("x-ratelimit-limit-requests", "1"))
    stop_after.append(p)
    d = delegator(dep(p), task_timeout_s=None, max_queue_wait_s=2)
    out = d.run_sync([Task(f"task {i}", model="g") for i in range(4)])

    assert out.counts() == {"completed": 1, "failed": 3}, [r.error for r in out.results]
    for r in out.results[1:]:
        assert r.error["type"] == "queue_timeout", r.error
        msg = r.error["message"]
        assert "Nothing was sent" in msg and "delegation.max_queue_wait_s" in msg
        assert "rpm 1, learned from the provider's rate-limit headers" in msg, msg
    assert p.stats()["requests"] == 1


def test_a_call_behind_a_full_deployment_gives_up_at_the_bound_naming_the_limit(stop_after: list) -> None:
    p = lying(latency_s=1.5)
    stop_after.append(p)
    d = delegator(dep(p, max_parallel_requests=1), task_timeout_s=None, max_queue_wait_s=0.3)
    out = d.run_sync([Task(f"task {i}", model="g") for i in range(2)])

    assert sorted(r.status for r in out.results) == ["completed", "failed"], [r.error for r in out.results]
    failed = next(r for r in out.results if r.status == "failed")
    assert failed.error["type"] == "queue_timeout"
    assert "max_parallel 1, configured" in failed.error["message"], failed.error
    assert p.stats()["requests"] == 1


def test_max_queue_wait_s_is_validated() -> None:
    from hermes_delegate import ConfigError

    for bad in (0, -1, float("inf"), "soon"):
        with pytest.raises(ConfigError, match="max_queue_wait_s"):
            config_from_dict({"delegation": {"max_queue_wait_s": bad}})
    assert config_from_dict({}).delegation.max_queue_wait_s == 300.0


# -- Redis: distinct names, short lives, nothing unbelievable -----------------------------------------
def _redis_settings(port: int) -> dict[str, Any]:
    return {"num_retries": 0, "redis_host": "127.0.0.1", "redis_port": port}


def _learned_keys(client: Any, dep_id: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"hermes_delegate:learned:{dep_id}*"))


def test_redis_names_a_deployment_by_provider_and_forgets_what_nobody_confirms(
        stop_after: list, redis_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import redis
    import yaml

    from hermes_delegate.hosts.cli import main

    slow = LoopbackProvider("slow", rps=2).start()
    fast = LoopbackProvider("fast", rps=20).start()
    stop_after += [slow, fast]
    shared_id = f"main-{uuid.uuid4().hex[:8]}"  # two configs, one id, two providers
    a = delegator(dep(slow, shared_id), router_settings=_redis_settings(redis_port))
    b = delegator(dep(fast, shared_id), router_settings=_redis_settings(redis_port))
    assert a.run_sync([Task(f"a{i}", model="g") for i in range(3)]).ok
    assert b.run_sync([Task(f"b{i}", model="g") for i in range(3)]).ok
    client = redis.Redis(port=redis_port)
    deadline = time.monotonic() + 10  # published in the background: wait for it, not for a time
    while len(_learned_keys(client, shared_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)

    assert a.learned_limits()["learned_limits"][shared_id]["rpm"] == 120.0  # not the other config's
    assert b.learned_limits()["learned_limits"][shared_id]["rpm"] == 1200.0
    keys = _learned_keys(client, shared_id)
    assert len(keys) == 2, keys  # before: one key, each config overwriting the other's limits
    assert all(LOOPBACK_KEY not in k and "127.0.0.1" not in k for k in keys)
    for k in keys:
        assert 0 < client.ttl(k) <= 4 * CONFIRM_EVERY_S, (k, client.ttl(k))  # before: an hour

    # a value nobody should believe (an earlier version published it): refused by a process that
    # recalls it, and shown as refused by `models`
    silent = LoopbackProvider("silent", ratelimit_headers="none").start()
    stop_after.append(silent)
    lied_id = f"lied-{uuid.uuid4().hex[:8]}"
    deployment = dep(silent, lied_id)
    client.set(f"hermes_delegate:learned:{store_key(lied_id, deployment['litellm_params'])}",
               json.dumps({"tpm": 1e-12, "learned_from": "headers", "group": "g", "model": "openai/liar-model",
                           "at": time.time()}), ex=60)
    c = delegator(deployment, router_settings=_redis_settings(redis_port))
    out = c.run_sync([Task(f"c{i}", model="g") for i in range(3)])
    assert out.counts() == {"completed": 3}, [r.error for r in out.results]  # before: queued for centuries

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"router": {"model_list": [deployment], "router_settings": _redis_settings(redis_port)}}))
    assert main(["models", "--config", str(path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["learned_limits"][lied_id]
    assert "tpm" not in row and row["refused"]["tpm"]["value"] == 1e-12, row
    assert main(["models", "--config", str(path)]) == 0
    assert "tpm 1e-12 refused" in capsys.readouterr().out


def test_a_refused_limit_is_never_published(stop_after: list, redis_port: int) -> None:
    import redis

    p = lying(("x-ratelimit-limit-tokens", "1"), ("x-ratelimit-limit-requests", "6000"))
    stop_after.append(p)
    dep_id = f"liar-{uuid.uuid4().hex[:8]}"
    d = delegator(dep(p, dep_id), router_settings=_redis_settings(redis_port))
    assert d.run_sync([Task(f"t{i}", model="g") for i in range(3)]).ok
    client = redis.Redis(port=redis_port)
    deadline = time.monotonic() + 10  # published in the background
    while not _learned_keys(client, dep_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    (key,) = _learned_keys(client, dep_id)
    body = json.loads(client.get(key))
    assert body["rpm"] == 6000.0 and "tpm" not in body and body["refused"]["tpm"]["value"] == 1.0


# -- the pure logic, on an injected clock -------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recording:
    """A shared store that only records what is published (no windows)."""

    shared = True

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def admit(self, key: str, ask: Any) -> float:
        return 0.0

    async def restamp(self, key: str, token: str) -> None:
        return None

    async def record(self, key: str, window_s: float, token: str = "", ago_s: float = 0.0) -> None:
        return None

    async def release(self, key: str, token: str) -> None:
        return None

    async def leave(self, key: str, waiter: str) -> None:
        return None

    async def publish(self, key: str, learned: Any) -> None:
        self.published.append(dict(learned))

    async def recall(self, key: str) -> None:
        return None


def _gate(clock: Clock, **kw: Any) -> CapacityGate:
    return CapacityGate({"d": Limits()}, clock=clock, learn=True, **kw)


def test_a_stated_rpm_that_successes_contradict_is_raised_and_stays_raised() -> None:
    clock = Clock()
    gate = _gate(clock)
    gate.observe("d", {"x-ratelimit-limit-requests": "2"}, status=200)
    assert gate.describe("d")["rpm"] == 2.0
    for _ in range(8):  # eight successes within a minute: it allows more than it says
        clock.t += 1.0
        gate.observe("d", {"x-ratelimit-limit-requests": "2"}, status=200)
    described = gate.describe("d")
    assert described["rpm"] >= 8 and described["corrected"]["rpm"]["stated"] == 2.0, described
    assert any("raised" in w for w in described["warnings"])
    clock.t += 1.0
    gate.observe("d", {"x-ratelimit-limit-requests": "2"}, status=200)  # stated again: not believed below what succeeded
    assert gate.describe("d")["rpm"] >= 8


def test_a_stated_tpm_that_successes_contradict_is_raised() -> None:
    clock = Clock()
    gate = _gate(clock)
    gate.observe("d", {"x-ratelimit-limit-tokens": "500"}, status=200)
    for _ in range(4):
        clock.t += 1.0
        gate.used_tokens("d", TokenEstimate(100.0), 200.0, 100.0)  # 300 tokens each, 1,200 within a minute
    assert gate.describe("d")["tpm"] >= 1200, gate.describe("d")


def test_a_learned_tpm_smaller_than_one_request_is_refused_at_admission() -> None:
    clock = Clock()
    gate = _gate(clock)
    gate.observe("d", {"x-ratelimit-limit-tokens": "150"}, status=200)  # above the floor, too small for this one
    wait, _slot = asyncio.run(gate._try("d", TokenEstimate(400.0)))
    assert wait == 0.0
    described = gate.describe("d")
    assert "tpm" not in described and described["refused"] == {"tpm": 150.0}, described
    gate.observe("d", {"x-ratelimit-limit-tokens": "150"}, status=200)  # stated again: still not believed
    assert "tpm" not in gate.describe("d") and "d" not in gate.limits
    gate.observe("d", {"x-ratelimit-limit-tokens": "60000"}, status=200)  # a larger one is
    assert gate.describe("d")["tpm"] == 60000.0


def test_limits_stated_again_are_republished_and_so_kept_alive() -> None:
    clock, store = Clock(), Recording()
    gate = _gate(clock, windows=store)

    async def main() -> None:
        for _ in range(100):  # one answer a second, each stating the same limit
            gate.observe("d", {"x-ratelimit-limit-requests": "600"}, status=200)
            await asyncio.sleep(0)
            clock.t += 1.0

    asyncio.run(main())
    n = len(store.published)
    assert 100 / CONFIRM_EVERY_S <= n <= 100 / CONFIRM_EVERY_S + 2, n
    assert all(p["rpm"] == 600.0 for p in store.published)


def test_a_head_whose_turn_comes_too_late_fails_at_once() -> None:
    clock = Clock()
    gate = _gate(clock, max_wait_s=5.0)
    gate.observe("d", {"x-ratelimit-limit-requests": "1"}, status=200)  # one a minute
    deps = [{"model_info": {"id": "d"}}]

    async def main() -> None:
        await gate.acquire("g", deps, 10.0)  # the first of the minute goes
        with pytest.raises(ProviderError) as info:
            await gate.acquire("g", deps, 10.0)  # the next is ~60 s away: more than 5
        assert info.value.kind == "queue_timeout" and "its turn would come in" in info.value.message

    asyncio.run(main())


# -- properties over generated headers -----------------------------------------------------------------
_NUMBERS = st.one_of(
    st.integers(min_value=-10, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e-9", "1e-12", "0", "-0", "1e400", "nan", "inf", "-inf", "0x10", "1_000", " 7 ", ""]),
)
_DURATIONS = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.floats(min_value=0, max_value=1e12, allow_nan=False).map(lambda f: f"{f:.3f}"),
              st.sampled_from(["h", "m", "s", "ms", "us", "µs", "ns"])),
    st.sampled_from(["6m0s", "1h2m3.5s", "250ms", "1s1", "ms", "9999999999h"]),
)
_DATES = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30),
                      timezones=st.just(timezone.utc))
_HTTP_DATES = _DATES.map(lambda d: format_datetime(d, usegmt=True))
_RFC3339 = st.one_of(_DATES.map(lambda d: d.isoformat().replace("+00:00", "Z")),
                     st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
                         lambda d: d.isoformat()))
_GARBAGE = st.text(max_size=40)
_VALUES = st.one_of(_NUMBERS, _DURATIONS, _HTTP_DATES, _RFC3339, _GARBAGE)
_NAMES = [
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit", "anthropic-ratelimit-input-tokens-reset",
    "retry-after", "retry-after-ms", "x-ms-retry-after-ms",
]
_HEADER_NAME = st.builds(lambda n, prefix, upper: (prefix + n).upper() if upper else prefix + n,
                         st.sampled_from(_NAMES), st.sampled_from(["", "llm_provider-"]), st.booleans())
HEADERS = st.dictionaries(_HEADER_NAME, _VALUES, max_size=8)
ANSWERS = st.lists(st.tuples(HEADERS, st.sampled_from([200, 429, 500, None]),
                             st.floats(min_value=0, max_value=120)), min_size=1, max_size=5)
#: The longest any single admission may be told to wait: a 429's hold (MAX_HOLD_S), one request a
#: minute (an rpm window of 60 s plus the jitter pad), a token bucket refilled at half a tpm that
#: holds at least one request (120 s, plus the pad).
BOUND_S = 2 * 60.0 * 1.2


@PROPS
@given(HEADERS)
def test_any_headers_parse_to_finite_non_negative_values(headers: dict[str, str]) -> None:
    rate = parse_rate_headers(headers, time.time())
    for value in vars(rate).values():
        assert value is None or (math.isfinite(value) and value >= 0), rate
    assert math.isfinite(rate.wait_s()) and rate.wait_s() >= 0


@PROPS
@given(ANSWERS, st.floats(min_value=1, max_value=50_000), st.sampled_from([0.0, 16.0, 4096.0]))
def test_whatever_a_provider_says_the_next_wait_is_bounded(answers: list, prompt: float, cap: float) -> None:
    clock = Clock()
    gate = _gate(clock)
    loop = asyncio.new_event_loop()
    try:
        for headers, status, after in answers:
            gate.observe("d", headers, status=status, latency_s=0.1)
            clock.t += after
            wait, slot = loop.run_until_complete(gate._try("d", TokenEstimate(prompt, cap)))
            assert 0.0 <= wait <= BOUND_S, (wait, gate.describe("d"), gate.holding(["d"]))
            if slot:
                gate.release("d")
        described = gate.describe("d")
    finally:
        loop.close()
    assert described.get("rpm", MIN_LEARNED_RPM) >= MIN_LEARNED_RPM, described
    assert described.get("tpm", MIN_LEARNED_TPM) >= MIN_LEARNED_TPM, described
    assert gate._state["d"].blocked_until <= clock.t + MAX_HOLD_S


@settings(PROPS, max_examples=40)
@given(ANSWERS, st.integers(min_value=1, max_value=4))
def test_a_queued_call_is_admitted_or_fails_typed_within_its_bound(answers: list, calls: int) -> None:
    gate = CapacityGate({"d": Limits()}, learn=True, max_wait_s=0.05)  # the real clock
    for headers, status, _after in answers:
        gate.observe("d", headers, status=status)
    deps = [{"model_info": {"id": "d"}}]

    async def one() -> str:
        try:
            await gate.acquire("g", deps, TokenEstimate(50.0))
        except ProviderError as exc:
            assert exc.kind == "queue_timeout" and "max_queue_wait_s" in exc.message
            return "queue_timeout"
        return "admitted"

    async def main() -> list[str]:
        async with asyncio.timeout(5):  # bounded: far below any provider's word
            return await asyncio.gather(*(one() for _ in range(calls)))

    assert set(asyncio.run(main())) <= {"admitted", "queue_timeout"}


def test_reading_learned_limits_from_a_redis_that_is_down_is_the_typed_error() -> None:
    """`models`/`doctor` read what was learned from Redis: an unreachable Redis is `limiter_unavailable`
    (a merge once left read_learned without its `redis` import: a NameError instead)."""
    from helpers import free_port
    from hermes_delegate.ratelimit.redis_windows import read_learned

    with pytest.raises(ProviderError) as info:
        read_learned({"redis_url": f"redis://127.0.0.1:{free_port()}"})
    assert info.value.kind == "limiter_unavailable", info.value
