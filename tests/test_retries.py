"""Issue 10 part 4: one retry layer, the Router's. A task makes at most 1 + num_retries attempts per
group tried (plus the configured fallbacks), counted both in the result's attempt log and in the
loopback provider's own request records. Real LiteLLM Router, real HTTP to loopback providers."""

from __future__ import annotations

import pytest

from conftest import LoopbackPair, loopback_config
from hermes_delegate import Delegator, Task


def _run(providers: LoopbackPair, settings: dict, model: str = "alpha"):
    cfg = loopback_config(providers, router_settings=settings, task_timeout_s=60)
    (r,) = Delegator(cfg).run_sync([Task("count my attempts", model=model)]).results
    return r


@pytest.mark.parametrize("num_retries", [0, 1, 2])
@pytest.mark.parametrize(("fault", "status", "kind"), [("429", "429", "rate_limit"), ("500", "500", "server")])
def test_attempts_are_one_plus_num_retries(providers: LoopbackPair, fault, status, kind, num_retries):
    providers.alpha.set_fault(fault)
    providers.alpha.retry_after = 0.2  # keep the Router's Retry-After sleeps short
    r = _run(providers, {"num_retries": num_retries})
    assert r.status == "failed", r.error
    assert r.error["type"] == kind
    expected = 1 + num_retries
    assert [(a.deployment.deployment_id, a.status) for a in r.attempts] == [("alpha-1", status)] * expected
    assert len(providers.alpha.requests) == expected, "the provider saw more requests than num_retries allows"
    assert len(providers.beta.requests) == 0


@pytest.mark.slow
@pytest.mark.parametrize("num_retries", [0, 1, 2])
def test_fallback_group_adds_its_own_attempts_only(providers: LoopbackPair, num_retries):
    providers.alpha.set_fault("500")
    providers.beta.set_fault("500")
    r = _run(providers, {"num_retries": num_retries, "fallbacks": [{"alpha": ["beta"]}]})
    assert r.status == "failed"
    per_group = 1 + num_retries
    assert [a.deployment.deployment_id for a in r.attempts] == ["alpha-1"] * per_group + ["beta-1"] * per_group
    assert (len(providers.alpha.requests), len(providers.beta.requests)) == (per_group, per_group)


def test_fallback_serves_after_the_groups_retries(providers: LoopbackPair):
    providers.alpha.set_fault("429")
    providers.alpha.retry_after = 0.2
    r = _run(providers, {"num_retries": 1, "fallbacks": [{"alpha": ["beta"]}]})
    assert r.status == "completed", r.error
    assert [(a.deployment.deployment_id, a.status) for a in r.attempts] == [
        ("alpha-1", "429"), ("alpha-1", "429"), ("beta-1", "ok")]
    assert (len(providers.alpha.requests), len(providers.beta.requests)) == (2, 1)


def test_retry_after_is_honoured_by_the_router_retry(providers: LoopbackPair):
    """The one retry waits the provider's Retry-After (LiteLLM's calculate_retry_after, ≤ 60 s)."""
    providers.alpha.retry_after = 1
    providers.alpha.script(["429"])
    r = _run(providers, {"num_retries": 1})
    assert r.status == "completed", r.error
    first, second = providers.alpha.requests
    assert second.time - first.time >= 0.95, "retried before the Retry-After had passed"
    assert [a.status for a in r.attempts] == ["429", "ok"]


def test_empty_choices_retry_spends_the_same_budget(providers: LoopbackPair):
    """A 200 without choices is re-sent with what is left of num_retries: never more than 1 + n."""
    providers.alpha.set_fault("empty_choices")
    providers.beta.set_fault("500")
    for n in (0, 1, 2):
        providers.reset()
        providers.alpha.set_fault("empty_choices")
        providers.beta.set_fault("500")
        r = _run(providers, {"num_retries": n}, model="both")
        assert r.status == "failed"
        assert len(r.attempts) <= 1 + n, [(a.deployment.deployment_id, a.status) for a in r.attempts]
        assert len(providers.alpha.requests) + len(providers.beta.requests) == len(r.attempts)
