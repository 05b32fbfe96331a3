"""Issue #5, the fault matrix: every loopback fault × {a group with one deployment, a group with two of
which one is faulty}, through the real LiteLLM Router over real HTTP. Nothing of litellm is patched.

For every cell: each task ends `completed` or with a typed error naming the real failure (its kind and,
where the provider sent one, its HTTP status); nothing outlives the task timeout; no task is lost or
duplicated; the healthy deployment keeps serving; nothing is left behind (server-side requests, client
sockets, threads). docs/reliability.md holds the figures of this matrix.

"stream_cut" is not a cell: no product path streams (the standalone worker and every host make
non-streamed calls), and a cut non-streamed reply is the "reset" cell. The loopback's own tests cover
the fault. Run with HD_FAULT_TABLE=1 and -s to print the per-cell figures (the table in
docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from typing import Any

import pytest

from conftest import LOOPBACK_KEY, LoopbackPair, loopback_config
from hermes_delegate import BatchResult, Delegator, Task
from hermes_delegate.loopback import closed_port_url
from helpers import client_sockets, new_threads, opened_since

pytestmark = pytest.mark.litellm  # generous bounds (a task timeout, +2.5 s for a batch): not in the timing group

N_TASKS = 4
TASK_TIMEOUT_S = 6.5   # the whole task: one Router retry with backoff, each attempt up to ATTEMPT_TIMEOUT_S
ATTEMPT_TIMEOUT_S = 2.0  # router_settings.timeout: per attempt, so a hung deployment fails over (1.0 s: a
#                          healthy attempt on a loaded machine once took 1.16 s and counted as a timeout)
NUM_RETRIES = 1
WALL_BOUND_S = TASK_TIMEOUT_S + 2.5  # generous: a batch must never run much past its task timeout

#: fault -> (error kind, HTTP status or None): what a task hitting only that fault must report.
EXPECTED: dict[str, tuple[str, int | None]] = {
    "429": ("rate_limit", 429),
    "429_no_retry_after": ("rate_limit", 429),
    "500": ("server", 500),
    "503": ("server", 503),
    "slow": ("timeout", None),
    "refused": ("connection", None),
    "reset": ("connection", None),
    "malformed": ("bad_response", None),
    "empty_choices": ("bad_response", None),
}
#: Faults a single-deployment group cannot get out of within the task timeout: LiteLLM's backoff on a
#: persistent 429 or a hung provider outlast TASK_TIMEOUT_S, so the
#: task may end `timeout` instead; its attempt log must then still name the real failure.
MAY_TIME_OUT = {"429", "429_no_retry_after", "slow"}
TOPOLOGIES = ("single", "multi")
TABLE: list[dict[str, Any]] = []


def _groups(providers: LoopbackPair) -> list[dict[str, Any]]:
    """`refused` (one deployment on a closed port) and `refused-multi` (that + a healthy one on beta)."""
    dead = closed_port_url()
    return [
        {"model_name": "refused", "model_info": {"id": "refused-1"},
         "litellm_params": {"model": "openai/alpha-model", "api_base": dead, "api_key": LOOPBACK_KEY}},
        {"model_name": "refused-multi", "model_info": {"id": "both-alpha-dead"},
         "litellm_params": {"model": "openai/alpha-model", "api_base": dead, "api_key": LOOPBACK_KEY}},
        {"model_name": "refused-multi", "model_info": {"id": "refused-beta"},  # ids are unique per config
         "litellm_params": {"model": "openai/beta-model", "api_base": providers.beta.base_url,
                            "api_key": LOOPBACK_KEY}},
    ]


def _attempt_status(kind: str, code: int | None) -> str:
    return str(code) if code is not None else kind


def _served_ok(providers: LoopbackPair) -> int:
    return sum(p.stats()["ok"] for p in providers)


def _wait_idle(providers: LoopbackPair, grace_s: float = 5.0) -> int:
    """Requests still held server-side after a grace period (the client must have hung up on them)."""
    deadline = time.monotonic() + grace_s
    while any(p.in_flight for p in providers) and time.monotonic() < deadline:
        time.sleep(0.02)
    return sum(p.in_flight for p in providers)


@pytest.mark.slow
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("fault", list(EXPECTED))
def test_fault_matrix(providers: LoopbackPair, fault: str, topology: str):
    kind, code = EXPECTED[fault]
    status_in_log = _attempt_status(kind, code)
    faulty = providers.alpha
    if fault != "refused":
        faulty.set_fault(fault)  # persistent: every request to alpha gets it
    faulty.retry_after = 1
    group = {("refused", "single"): "refused", ("refused", "multi"): "refused-multi"}.get(
        (fault, topology), "alpha" if topology == "single" else "both")
    cfg = loopback_config(providers, router_settings={"num_retries": NUM_RETRIES, "timeout": ATTEMPT_TIMEOUT_S},
                          model_list_extra=_groups(providers), task_timeout_s=TASK_TIMEOUT_S)
    d = Delegator(cfg)
    # litellm's import, what its first completion imports lazily and the Router's build, before the
    # clock starts: the wall bound is about the batch, not a cold process's start-up
    asyncio.run(d.warm_up())
    threads_before = {t.ident for t in threading.enumerate()}
    ports = {providers.alpha.port, providers.beta.port}
    sockets_before = client_sockets(ports)

    t0 = time.monotonic()
    batch: BatchResult = d.run_sync([Task(f"task-{i} of {fault}/{topology}", model=group) for i in range(N_TASKS)])
    wall = time.monotonic() - t0

    # -- every task comes back, once, in order, within its timeout --------------------------------------
    results = batch.results
    assert [r.index for r in results] == list(range(N_TASKS)), "a task was lost, duplicated or reordered"
    assert [r.goal for r in results] == [f"task-{i} of {fault}/{topology}" for i in range(N_TASKS)]
    assert wall < WALL_BOUND_S, f"the batch ran {wall:.1f}s past a {TASK_TIMEOUT_S}s task timeout"
    for r in results:
        assert r.duration_s <= TASK_TIMEOUT_S + 0.5, (r.index, r.duration_s)
        assert r.status in ("completed", "failed", "timeout"), r.status
        assert (r.error is None) == (r.status == "completed"), r.error
        if r.status == "completed":
            assert f"task-{r.index} of" in r.summary, "a task got another task's answer"

    # -- the errors are the real ones ----------------------------------------------------------------
    failed = [r for r in results if r.status != "completed"]
    for r in failed:
        tried = [a.status for a in r.attempts]
        if r.status == "failed":
            assert r.error["type"] == kind, (fault, r.error)
            assert r.error["status_code"] == code, (fault, r.error)
            assert r.error["retryable"] is True
            assert tried and set(tried) == {status_in_log}, (fault, tried)
        else:  # timeout: allowed only where a retry budget outlasts the task, and the log names the cause
            assert topology == "single" and fault in MAY_TIME_OUT, (fault, topology, r.error)
            assert r.error["type"] == "timeout" and r.error["retryable"] is True
            # "unanswered": the attempt on the wire when the clock ran out (sent, so it is one)
            assert set(tried) <= {status_in_log, "unanswered"}, (fault, tried)
            assert "unanswered" not in tried[:-1], tried  # only the last attempt can be cut short
            if fault != "slow" and tried:  # a hung provider never answers, so only its retries show
                assert f"the last one {tried[-1]}" in r.error["message"]
            elif fault != "slow":  # queued the whole time behind the other tasks' 429s: it says so
                assert "Nothing was sent" in r.error["message"], "a timeout that hides the 429s it waited on"
                assert "queued (" in r.error["message"], r.error["message"]
        assert LOOPBACK_KEY not in json.dumps(r.to_dict(), default=str)

    # -- topology-specific: the faulty group fails typed; a healthy deployment keeps serving -----------
    if topology == "single":
        assert not any(r.status == "completed" for r in results), "a persistently faulty provider 'served'"
        assert _served_ok(providers) == 0
        per_task = NUM_RETRIES + 1  # one retry layer, the Router's (docs/litellm.md)
        assert len(faulty.requests) <= N_TASKS * per_task, "more requests than the retry budget allows"
        if fault != "refused":
            # every request the provider saw is in some task's attempt log, and every answered attempt
            # reached it (a task that never reached it timed out queued and said so, above); a loaded
            # machine may leave a task queued behind the 429 holds for the whole 6.5 s
            answered = 0 if fault == "slow" else sum(  # a per-attempt timeout may come before arrival
                1 for r in results for a in r.attempts if a.status == status_in_log)
            logged = sum(len(r.attempts) for r in results)
            assert answered <= len(faulty.requests) <= logged, (answered, len(faulty.requests), logged)
            assert len(faulty.requests) >= 1
    else:
        healthy = "refused-beta" if fault == "refused" else "both-beta"
        completed = [r for r in results if r.status == "completed"]
        assert len(completed) == N_TASKS, [(r.index, r.error) for r in failed]
        for r in completed:
            assert r.deployment.deployment_id == healthy, "served by the faulty deployment?"
            assert r.attempts[-1].status == "ok" and r.attempts[-1].deployment.deployment_id == healthy
            before = r.attempts[:-1]
            assert len(before) <= 1, "retried the faulty deployment instead of the healthy one"
            assert all(a.status == status_in_log and a.deployment.deployment_id.startswith("both-alpha")
                       for a in before), [(a.deployment.deployment_id, a.status) for a in before]
        assert providers.beta.stats()["ok"] == len(completed), "a task was answered twice"
        assert len(faulty.requests) <= N_TASKS, "the faulty deployment kept being tried"

    # -- nothing left behind -------------------------------------------------------------------------
    held = _wait_idle(providers)
    sockets = opened_since(sockets_before, ports)
    left_threads = new_threads(threads_before)
    assert held == 0, "a server-side request outlived its task (the client never hung up)"
    assert sockets == [], f"client sockets left open after run_sync: {sockets}"
    assert left_threads == [], left_threads
    TABLE.append({"fault": fault, "topology": topology, "tasks": N_TASKS, "counts": dict(batch.counts()),
                  "kinds": dict(Counter(r.error["type"] for r in failed)),
                  "tried": dict(Counter(a.status for r in results for a in r.attempts if a.status != "ok")),
                  "requests": {p.name: len(p.requests) for p in providers},
                  "wall_s": round(wall, 2), "lost": 0, "leaks": held + len(sockets) + len(left_threads)})


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if os.environ.get("HD_FAULT_TABLE") and TABLE:
        print("\n| fault | group | tasks | outcome | error kinds | failed attempts | requests alpha/beta "
              "| wall s | lost | leaks |")
        for row in TABLE:
            counts = ", ".join(f"{n} {s}" for s, n in row["counts"].items())
            kinds = ", ".join(f"{k}×{n}" for k, n in row["kinds"].items()) or "—"
            tried = ", ".join(f"{k}×{n}" for k, n in row["tried"].items()) or "—"
            req = row["requests"]
            print(f"| {row['fault']} | {row['topology']} | {row['tasks']} | {counts} | {kinds} | {tried} | "
                  f"{req['alpha']}/{req['beta']} | {row['wall_s']} | {row['lost']} | {row['leaks']} |")
        print(f"cells {len(TABLE)}, tasks {sum(r['tasks'] for r in TABLE)}, "
              f"lost {sum(r['lost'] for r in TABLE)}, leaks {sum(r['leaks'] for r in TABLE)}")


# -- regressions for the bugs this matrix found -------------------------------------------------------
def test_connection_refused_is_connection_not_a_generic_500(providers: LoopbackPair):
    """litellm wraps a refused connection in InternalServerError(500); the cause chain is the truth."""
    cfg = loopback_config(providers, model_list_extra=_groups(providers))
    (r,) = Delegator(cfg).run_sync([Task("x", model="refused")]).results
    assert r.status == "failed"
    assert (r.error["type"], r.error["status_code"]) == ("connection", None), r.error
    assert r.error["message"].startswith("APIConnectionError")
    assert [a.status for a in r.attempts] == ["connection"]


@pytest.mark.parametrize(("fault", "kind", "prefix"), [("reset", "connection", "APIConnectionError"),
                                                      ("malformed", "bad_response", "JSONDecodeError")])
def test_reset_and_malformed_body_keep_their_kind(providers: LoopbackPair, fault, kind, prefix):
    providers.alpha.set_fault(fault)
    (r,) = Delegator(loopback_config(providers)).run_sync([Task("x", model="alpha")]).results
    assert (r.error["type"], r.error["status_code"]) == (kind, None), r.error
    assert r.error["message"].startswith(prefix), r.error
    assert [a.status for a in r.attempts] == [kind]


def test_a_real_500_stays_a_server_error_with_its_status(providers: LoopbackPair):
    providers.alpha.set_fault("500")
    (r,) = Delegator(loopback_config(providers)).run_sync([Task("x", model="alpha")]).results
    assert (r.error["type"], r.error["status_code"]) == ("server", 500)


def test_retry_goes_to_the_deployment_that_has_not_failed(providers: LoopbackPair):
    """The Router's retry picks a deployment at random (LiteLLM only cools a deployment down after 5+
    requests in a minute, half of them failed), so a task's one retry used to hit the failing deployment
    again one time in four. 16 fresh Routers, one task each: without the fix ~99% sure to catch it."""
    providers.alpha.set_fault("500")
    for i in range(16):
        d = Delegator(loopback_config(providers, router_settings={"num_retries": 1}))
        (r,) = d.run_sync([Task(f"r{i}", model="both")]).results
        assert r.status == "completed", (i, r.error, [(a.deployment.deployment_id, a.status) for a in r.attempts])
        assert [(a.deployment.deployment_id, a.status) for a in r.attempts] in (
            [("both-beta", "ok")], [("both-alpha", "500"), ("both-beta", "ok")])


def test_empty_choices_is_retried_on_another_deployment_within_num_retries(providers: LoopbackPair):
    providers.alpha.set_fault("empty_choices")
    d = Delegator(loopback_config(providers, router_settings={"num_retries": 1}))
    batch = d.run_sync([Task(f"e{i}", model="both") for i in range(6)])
    assert batch.counts() == {"completed": 6}, [r.error for r in batch.results if r.error]
    for r in batch.results:
        assert r.deployment.deployment_id == "both-beta"
        assert [(a.deployment.deployment_id, a.status) for a in r.attempts] in (
            [("both-beta", "ok")], [("both-alpha", "bad_response"), ("both-beta", "ok")])
    # num_retries 0 means no retry, ours included; a single-deployment group has nowhere else to go
    providers.reset()
    providers.alpha.set_fault("empty_choices")
    for settings, group in (({"num_retries": 0}, "alpha"), ({"num_retries": 2}, "alpha")):
        (r,) = Delegator(loopback_config(providers, router_settings=settings)).run_sync(
            [Task("e", model=group)]).results
        assert (r.status, r.error["type"]) == ("failed", "bad_response")
        assert [a.status for a in r.attempts] == ["bad_response"]  # one request, recorded as failed


def test_deployment_timeout_is_not_overridden_by_the_task_timeout(providers: LoopbackPair):
    """A deployment's own `timeout` (LiteLLM's format) must apply: the worker used to pass the task
    timeout as the call's timeout, which overrides it, so a hung deployment never failed over."""
    providers.alpha.set_fault("slow")
    extra = [{"model_name": "hung-first", "model_info": {"id": "hung"},
              "litellm_params": {"model": "openai/alpha-model", "api_base": providers.alpha.base_url,
                                 "api_key": LOOPBACK_KEY, "timeout": 0.5, "order": 1}},
             {"model_name": "hung-first", "model_info": {"id": "fine"},
              "litellm_params": {"model": "openai/beta-model", "api_base": providers.beta.base_url,
                                 "api_key": LOOPBACK_KEY, "order": 2}}]
    d = Delegator(loopback_config(providers, router_settings={"num_retries": 1}, model_list_extra=extra,
                                  task_timeout_s=10))
    (r,) = d.run_sync([Task("hung", model="hung-first")]).results
    assert r.status == "completed", r.error
    assert [(a.deployment.deployment_id, a.status) for a in r.attempts] == [("hung", "timeout"), ("fine", "ok")]
    assert r.duration_s < 5


def test_a_task_timeout_keeps_the_attempts_it_made(providers: LoopbackPair):
    """A timed-out task used to come back with no attempts: the 429s it waited on were hidden."""
    providers.alpha.set_fault("429")
    providers.alpha.retry_after = 6  # the Router's wait outlasts the task: a timeout, never a finished failure
    d = Delegator(loopback_config(providers, router_settings={"num_retries": 1}, task_timeout_s=2.5))
    (r,) = d.run_sync([Task("x", model="alpha")]).results
    assert r.status == "timeout"
    assert r.attempts and {a.status for a in r.attempts} == {"429"}
    assert r.error["message"].endswith(f"Attempts before the timeout: {len(r.attempts)}, the last one 429.")


def test_cooldowns_keep_working_after_many_delegators(providers: LoopbackPair):
    """litellm keeps each Router's cooldown callback in a global list capped at 100 entries, and never
    drops it: once 100 Routers had been built in a process, the next ones silently had no cooldowns
    (and every Router ever built stayed alive). Each RouterHandle now unhooks its Router when it goes."""
    import gc

    import litellm

    for _ in range(110):
        Delegator(loopback_config(providers)).router.router  # noqa: B018 - build it, then drop it
    gc.collect()
    assert len(litellm.failure_callback) < 100, len(litellm.failure_callback)
    d = Delegator(loopback_config(providers, router_settings={"num_retries": 1}))
    router = d.router.router
    if any(getattr(cb, "__self__", None) is not None for cb in litellm.failure_callback):
        # litellm up to 1.109 hangs each Router's cooldown callback on this global list (newer ones keep
        # it inside the Router): where it does, the newest Router's must be there.
        assert router.deployment_callback_on_failure in litellm.failure_callback
    providers.alpha.set_fault("429")
    providers.alpha.retry_after = 5  # the cooldown LiteLLM takes from Retry-After
    for i in range(12):  # the first pick is random: run until one task has hit alpha
        (r,) = d.run_sync([Task(f"cool down {i}", model="both")]).results
        assert r.status == "completed"
        if r.attempts[0].status == "429":
            break
    assert [(a.deployment.deployment_id, a.status) for a in r.attempts] == [("both-alpha", "429"),
                                                                           ("both-beta", "ok")]
    assert asyncio.run(d.router.cooling_down()) == {"both-alpha"}


def test_a_request_on_the_wire_at_the_timeout_is_an_attempt_not_nothing_sent(providers: LoopbackPair):
    """A task whose request had reached the provider and hung used to time out saying "Nothing was sent:
    it was queued (behind earlier calls)": the attempt on the wire was in no log (the fault matrix's
    flake under load: a 429 not yet read when the task clock ran out)."""
    providers.alpha.set_fault("slow")  # holds the request far past the task timeout
    d = Delegator(loopback_config(providers, task_timeout_s=2.0))
    asyncio.run(d.warm_up())
    (r,) = d.run_sync([Task("hangs", model="alpha")]).results
    assert r.status == "timeout"
    assert len(providers.alpha.requests) == 1
    assert [(a.deployment.deployment_id, a.status) for a in r.attempts] == [("alpha-1", "unanswered")]
    assert "Nothing was sent" not in r.error["message"]
    assert r.error["message"].endswith("Attempts before the timeout: 1, the last one unanswered."), r.error
