"""The fan-out through the real LiteLLM Router over real HTTP to the loopback providers.

Nothing of litellm is patched. Assertions are structural (statuses, request records, max_in_flight,
event order) rather than timings; the few time bounds are generous on purpose.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from conftest import LOOPBACK_KEY, LoopbackPair, loopback_config
from hermes_delegate import BatchResult, Delegator, ProgressEvent, Task
from hermes_delegate.routing.router import api_host

HOST_PORT = re.compile(r"127\.0\.0\.1:\d+")


def ordered_group(providers: LoopbackPair) -> list[dict[str, Any]]:
    """Group `ordered`: alpha is always tried first (litellm `order`), beta second."""
    return [
        {"model_name": "ordered", "model_info": {"id": "ord-alpha"},
         "litellm_params": {"model": "openai/alpha-model", "api_base": providers.alpha.base_url,
                            "api_key": LOOPBACK_KEY, "order": 1}},
        {"model_name": "ordered", "model_info": {"id": "ord-beta"},
         "litellm_params": {"model": "openai/beta-model", "api_base": providers.beta.base_url,
                            "api_key": LOOPBACK_KEY, "order": 2}},
    ]


@pytest.fixture
def not_first_delegator(providers: LoopbackPair) -> None:
    """Run one task on a throwaway Delegator first, so the Delegator under test is never the first
    one in the process (regression: attempts must be recorded by every Delegator, not only the first)."""
    batch = Delegator(loopback_config(providers)).run_sync([Task("warm-up", model="alpha")])
    assert batch.ok
    providers.reset()


def test_results_in_input_order_when_later_tasks_finish_first(providers: LoopbackPair):
    models = ["alpha", "alpha", "beta", "beta", "beta"]
    beta = {i for i, m in enumerate(models) if m == "beta"}

    # alpha answers only once beta has answered all its requests: later (beta) tasks finish first.
    def gate(body, provider):
        deadline = time.monotonic() + 15
        # until the engine has finished the beta tasks (the provider's own count comes earlier:
        # the client may still be reading beta's last answer when alpha's goes out)
        while not beta <= set(done) and time.monotonic() < deadline:
            time.sleep(0.01)
        return None

    providers.alpha.latency_s = 0.3
    providers.alpha.responder = gate
    done: list[int] = []
    d = Delegator(loopback_config(providers))
    batch = d.run_sync([Task(f"goal-{i}", model=m) for i, m in enumerate(models)],
                       on_event=lambda ev: ev.kind == "done" and done.append(ev.index))
    assert batch.counts() == {"completed": 5}
    assert [r.index for r in batch.results] == [0, 1, 2, 3, 4]
    for i, (r, m) in enumerate(zip(batch.results, models, strict=True)):
        assert r.goal == f"goal-{i}"
        assert r.summary.startswith(f"[{m}] {m}-model:") and f"goal-{i}" in r.summary
        assert r.deployment.deployment_id == f"{m}-1"
    assert beta == {2, 3, 4} and set(done[:len(beta)]) == beta, done  # the beta tasks finished first...
    assert [r.index for r in batch.results] != done  # ...yet results keep the input order


@pytest.mark.parametrize(("config_cap", "call_cap", "cap"), [(3, None, 3), (16, 2, 2)])
def test_batch_larger_than_max_concurrency_queues(providers: LoopbackPair, config_cap, call_cap, cap):
    providers.alpha.latency_s = 0.3
    providers.alpha.max_concurrent = cap  # the provider 429s anything above the cap (num_retries 0 → failed)
    d = Delegator(loopback_config(providers, max_concurrency=config_cap))
    n = 4 * cap + 1
    kw = {"max_concurrency": call_cap} if call_cap else {}
    batch = d.run_sync([Task(f"q{i}", model="alpha") for i in range(n)], **kw)
    assert batch.counts() == {"completed": n}, [r.error for r in batch.results if r.error]
    stats = providers.alpha.stats()
    assert stats["requests"] == n and stats["429"] == 0
    assert 1 <= stats["max_in_flight"] <= cap


def test_per_task_timeout_ends_only_that_task(providers: LoopbackPair):
    providers.alpha.script(["slow"])  # the first alpha request takes latency + 30 s
    d = Delegator(loopback_config(providers, task_timeout_s=1.5))
    batch = d.run_sync([Task("slow one", model="alpha"), Task("b1", model="beta"), Task("b2", model="beta")])
    slow, b1, b2 = batch.results
    assert slow.status == "timeout"
    assert slow.error["type"] == "timeout" and slow.error["retryable"] is True
    assert slow.summary is None and slow.cost_usd is None
    assert slow.duration_s < 20  # ended by our timeout, not by the 30 s server delay
    for r in (b1, b2):
        assert r.status == "completed" and r.error is None and r.summary.startswith("[beta]")
    # the server notices the hang-up on its own loop, a moment after the client has gone
    deadline = time.monotonic() + 5
    while providers.alpha.requests[0].status == "pending" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert providers.alpha.requests[0].status in ("slow", 499)


def test_failing_provider_never_touches_other_results(providers: LoopbackPair):
    providers.alpha.set_fault("500")
    d = Delegator(loopback_config(providers))  # num_retries 0
    models = ["alpha", "beta", "alpha", "beta"]
    batch = d.run_sync([Task(f"t{i}", model=m) for i, m in enumerate(models)])
    assert [r.status for r in batch.results] == ["failed", "completed", "failed", "completed"]
    for r in batch.results[0::2]:
        assert r.error["type"] == "server" and r.error["status_code"] == 500 and r.error["retryable"] is True
        assert "Injected 500" in r.error["message"]
        assert r.summary is None and r.deployment is None
    for i in (1, 3):
        r = batch.results[i]
        assert r.error is None and r.summary.startswith("[beta] beta-model:") and f"t{i}" in r.summary
        assert r.deployment.deployment_id == "beta-1"
        assert [a.deployment.deployment_id for a in r.attempts] == ["beta-1"]
        assert [a.status for a in r.attempts] == ["ok"]
    assert providers.beta.stats()["ok"] == 2
    assert not batch.ok and batch.counts() == {"failed": 2, "completed": 2}


def test_failed_task_records_its_attempt(providers: LoopbackPair, not_first_delegator):
    providers.alpha.set_fault("500")
    d = Delegator(loopback_config(providers))  # num_retries 0: exactly one attempt
    (r,) = d.run_sync([Task("fails", model="alpha")]).results
    assert r.status == "failed"
    assert [(a.deployment.deployment_id, a.status) for a in r.attempts] == [("alpha-1", "500")]
    assert r.to_dict()["attempts"] == 1


def test_interrupt_from_another_thread(providers: LoopbackPair):
    released = threading.Event()

    def hold(body, provider):  # no request is answered before the interrupt (structural, not timed)
        released.wait(15)
        return None

    providers.alpha.latency_s = 2.0
    providers.alpha.responder = hold
    d = Delegator(loopback_config(providers))  # max_concurrency 16: 16 run, 4 queue
    out: dict[str, Any] = {}
    started: list[int] = []

    def run() -> None:
        try:
            out["batch"] = d.run_sync([Task(f"i{i}", model="alpha") for i in range(20)],
                                      on_event=lambda ev: ev.kind == "start" and started.append(ev.index))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            out["error"] = exc

    th = threading.Thread(target=run, daemon=True)
    try:
        th.start()
        deadline = time.monotonic() + 30  # the first run imports litellm
        while providers.alpha.in_flight < 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert providers.alpha.in_flight == 16, "the batch never got its 16 requests in flight"
        time.sleep(0.5)  # not synchronisation: a window in which a 17th start (the bug) would show
        t0 = time.monotonic()
        d.interrupt()
        th.join(10)
        elapsed = time.monotonic() - t0
        assert not th.is_alive(), "run_sync did not return after interrupt()"
    finally:
        released.set()
        th.join(10)
    assert "error" not in out, out.get("error")
    batch: BatchResult = out["batch"]
    assert elapsed < 5  # generous: it must not wait for the 2 s latency, let alone the held replies
    assert batch.counts() == {"interrupted": 20}
    assert [r.index for r in batch.results] == list(range(20))
    for r in batch.results:
        assert r.error["type"] == "interrupted" and r.summary is None
    assert len(started) == 16
    assert providers.alpha.stats()["ok"] == 0


def test_progress_events(providers: LoopbackPair):
    providers.alpha.set_fault("500")
    events: list[ProgressEvent] = []
    d = Delegator(loopback_config(providers))
    batch = d.run_sync([Task("p0", model="beta"), Task("p1", model="alpha"), Task("p2", model="small")],
                       on_event=events.append)
    assert len(events) == 6
    for i, r in enumerate(batch.results):
        mine = [e for e in events if e.index == i]
        assert [e.kind for e in mine] == ["start", "done"]
        start, done = mine
        assert start.result is None and start.total == done.total == 3
        assert start.goal == done.goal == f"p{i}"
        assert start.model == done.model == r.model
        assert done.result is not None and done.result.to_dict() == r.to_dict()
    assert [e.result.status for e in events if e.kind == "done" and e.index == 1] == ["failed"]


def test_progress_callback_errors_never_fail_a_task(providers: LoopbackPair):
    def boom(ev):
        raise RuntimeError("printer broke")

    batch = Delegator(loopback_config(providers)).run_sync([Task("x", model="alpha")], on_event=boom)
    assert batch.ok


def test_cost_null_when_unpriced_number_when_priced(providers: LoopbackPair):
    d = Delegator(loopback_config(providers))
    batch = d.run_sync([Task("priced task", model="priced"), Task("free task", model="alpha"),
                        Task("another", model="beta")])
    priced, unpriced, unpriced2 = batch.results
    assert batch.ok
    assert isinstance(priced.cost_usd, float) and priced.cost_usd > 0
    expected = priced.tokens["input"] * 1e-6 + priced.tokens["output"] * 2e-6
    assert priced.cost_usd == pytest.approx(expected, rel=1e-6)
    assert unpriced.cost_usd is None and unpriced2.cost_usd is None  # unknown, never 0
    d_out = batch.to_dict()
    assert set(d_out["cost"]) == {"total_usd", "unknown"}
    assert d_out["cost"]["total_usd"] == pytest.approx(priced.cost_usd)
    assert d_out["cost"]["unknown"] == 2
    assert isinstance(d_out["total_duration_s"], float) and d_out["total_duration_s"] > 0
    assert d_out["total_duration_s"] + 1e-3 >= max(r.duration_s for r in batch.results)
    assert [r["cost_usd"] for r in d_out["results"]] == [priced.cost_usd, None, None]


def test_cost_total_is_null_when_nothing_is_priced(providers: LoopbackPair):
    batch = Delegator(loopback_config(providers)).run_sync([Task("a", model="alpha"), Task("b", model="beta")])
    assert batch.to_dict()["cost"] == {"total_usd": None, "unknown": 2}


def test_deployment_api_host_is_host_port_only(providers: LoopbackPair):
    d = Delegator(loopback_config(providers))
    batch = d.run_sync([Task("h1", model="alpha"), Task("h2", model="beta")])
    for r, p in zip(batch.results, providers, strict=True):
        assert r.deployment.api_host == f"127.0.0.1:{p.port}"
        d_out = r.to_dict()
        hosts = [d_out["deployment"]["api_host"]] + [a["deployment"]["api_host"] for a in d_out["attempt_log"]]
        for host in hosts:
            assert HOST_PORT.fullmatch(host), host
        text = repr(d_out)
        assert LOOPBACK_KEY not in text and "http://" not in text and "/v1" not in text


@pytest.mark.parametrize(("url", "host"), [
    ("https://user:pw@api.x.ai/v1?key=secret", "api.x.ai"),
    ("http://127.0.0.1:8080/v1/chat", "127.0.0.1:8080"),
    ("api.example.com:443/path", "api.example.com:443"),
    (None, None),
    ("", None),
])
def test_api_host_helper(url, host):
    assert api_host(url) == host


def test_attempts_recorded_for_429_then_success(providers: LoopbackPair, not_first_delegator):
    providers.alpha.script(["429"])
    d = Delegator(loopback_config(providers, router_settings={"num_retries": 2},
                                  model_list_extra=ordered_group(providers)))
    (r,) = d.run_sync([Task("retry me", model="ordered")]).results
    assert r.status == "completed", r.error
    # the Router may retry on beta (alpha cooling down) or on alpha again: either way 429, then ok
    assert r.deployment.deployment_id in ("ord-alpha", "ord-beta")
    assert [(a.deployment.deployment_id, a.status) for a in r.attempts] == [
        ("ord-alpha", "429"), (r.deployment.deployment_id, "ok")]
    assert r.attempts[0].error and LOOPBACK_KEY not in r.attempts[0].error
    assert all(a.wait_s >= 0 for a in r.attempts)
    assert r.to_dict()["attempts"] == 2
    assert providers.alpha.stats()["429"] == 1
    assert providers.alpha.stats()["ok"] + providers.beta.stats()["ok"] == 1


def test_finished_delegators_are_not_retained_by_litellm(providers: LoopbackPair):
    """litellm.callbacks is process-global: what a Delegator hangs there must not keep it (and its
    RouterHandle, gate and call logs) alive forever, nor grow with every Delegator ever built."""
    import gc
    import weakref

    import litellm

    Delegator(loopback_config(providers)).run_sync([Task("first", model="alpha")])  # litellm + hooks in place
    before = len(litellm.callbacks or [])
    handles = []
    for i in range(3):
        d = Delegator(loopback_config(providers))
        assert d.run_sync([Task(f"d{i}", model="alpha")]).ok
        handles.append(weakref.ref(d.router))
        del d
    gc.collect()
    assert len(litellm.callbacks or []) == before, [type(c).__name__ for c in litellm.callbacks]
    assert [h() for h in handles] == [None, None, None]
