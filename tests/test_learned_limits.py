"""Limits nobody configured (issue 14): learned from the provider's rate-limit headers, or adapted
on its 429s, through the real LiteLLM Router over real HTTP to loopback providers that enforce
their limits and speak each header dialect. Every assertion is checked against what the provider
itself saw (its request log, its 429 count), and against what a user reads: the result's
deployment limits, the batch's 429 count, list_models."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from conftest import LOOPBACK_KEY
from helpers import max_in_window
from hermes_delegate import DelegateTools, Delegator, Task, config_from_dict
from hermes_delegate.loopback import LoopbackProvider

pytestmark = [pytest.mark.timing, pytest.mark.slow]  # rates a provider observed


@pytest.fixture
def provider() -> Iterator[LoopbackProvider]:
    with LoopbackProvider("lim", latency_s=0.05, retry_after="auto") as p:
        yield p


def delegator(*deployments: dict[str, Any], concurrency: int = 16, **delegation: Any) -> Delegator:
    cfg = config_from_dict({"delegation": {"max_concurrency": concurrency, "task_timeout_s": 60, **delegation},
                            "router": {"model_list": list(deployments),
                                       "router_settings": {"num_retries": 6}}})
    d = Delegator(cfg)
    d.router.router  # noqa: B018 - import litellm and build the Router outside the batch
    return d


def openai_dep(p: LoopbackProvider, **params: Any) -> dict[str, Any]:
    return {"model_name": "g", "model_info": {"id": "g-1"},
            "litellm_params": {"model": "openai/lim-model", "api_base": p.base_url, "api_key": LOOPBACK_KEY,
                               **params}}


def batch(d: Delegator, n: int) -> Any:
    out = d.run_sync([Task(f"task {i}", model="g") for i in range(n)])
    assert out.counts() == {"completed": n}, [r.error for r in out.results if r.error]
    return out


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_limit_the_headers_state_paces_the_batch(provider: LoopbackProvider, dialect: str) -> None:
    provider.rps, provider.ratelimit_headers = 4, dialect
    d = delegator(openai_dep(provider))
    out = batch(d, 16)

    s = provider.stats()
    # the first request goes alone; its answer says 240/min; the rest are paced by it. One 429 is
    # tolerated for a loaded machine (the jitter margin is measured, and can be caught short once).
    assert s["429"] <= 1, s
    assert max_in_window([r.time for r in provider.requests]) <= 4
    learned = {"rpm": 240.0, "learned": ["rpm"], "learned_from": "headers"}
    assert {k: v for k, v in out.results[-1].deployment.limits.items() if k != "rate_limited"} == learned
    assert d.router.gate.waits > 0, "the batch queued"


def test_anthropic_endpoint_and_token_headers(provider: LoopbackProvider) -> None:
    # Anthropic charges max_tokens at admission: 20 tasks of ~80 tokens, 800 admitted per 2 s
    provider.tpm, provider.token_window_s, provider.ratelimit_headers = 24000, 2.0, "anthropic"
    dep = {"model_name": "g", "model_info": {"id": "claude-1"},
           "litellm_params": {"model": "anthropic/claude-test", "api_key": LOOPBACK_KEY,
                              "api_base": f"http://127.0.0.1:{provider.port}"}}
    d = delegator(dep, max_tokens=50)
    out = batch(d, 20)
    assert all(r.path.endswith("/v1/messages") for r in provider.requests)
    limits = out.results[-1].deployment.limits
    assert (limits["tpm"], limits["learned"]) == (24000.0, ["tpm"])
    assert provider.stats()["429"] <= 1, provider.stats()


def test_a_token_limit_is_kept_without_configuring_it(provider: LoopbackProvider) -> None:
    # 24000 tokens/min = 400 a second, 800 per 2 s window; each task costs ~41 tokens: 30 tasks at
    # once would take the window 1.5 times over
    provider.tpm, provider.token_window_s = 24000, 2.0
    d = delegator(openai_dep(provider), concurrency=30)
    out = batch(d, 30)
    s = provider.stats()
    assert s["429"] <= 1, s
    assert out.results[-1].deployment.limits["tpm"] == 24000.0
    per_request = s["tokens"] / s["ok"]
    starts = sorted(r.time for r in provider.requests if r.status == 200)
    # the provider's window never held more than its capacity: paced, not burst
    assert max_in_window(starts, 2.0) * per_request <= 800 + per_request


def test_without_headers_the_pace_adapts_to_429s(provider: LoopbackProvider) -> None:
    provider.rps, provider.ratelimit_headers = 4, "none"
    d = delegator(openai_dep(provider), concurrency=8)
    out = batch(d, 40)

    s = provider.stats()
    # the first burst (7 after the first request) meets the provider's limit unknown; after that the
    # pace is set from the rate it accepted, so later 429s are few
    assert s["429"] <= 3 + 6, s
    limits = out.results[-1].deployment.limits
    assert limits["learned"] == ["rpm"] and limits["learned_from"] == "429s"
    # never above the provider's rate for long, and not stuck far below it: the requests the first 429
    # held do not all go at once into a window the provider still counts full (a second burst of 429s
    # would be measured as a rate of ~1 request/s)
    assert 0.5 * 4 * 60 <= limits["rpm"] <= 4 * 60 * 1.1, limits
    report = out.to_dict()["rate_limited"]
    assert [row["count"] for row in report] == [s["429"]] and report[0]["deployment_id"] == "g-1"


def test_the_requests_a_first_429_held_do_not_burst_into_a_full_window() -> None:
    """The first burst at a header-less provider meets its limit; the 429's Retry-After says when one
    request fits again, not all of those it refused. The pace set then must count what the provider
    still holds in its window, or the held requests all go at once, most are refused again, and the
    rate measured from that second burst (~1 request/s) paces the rest of the batch."""
    with LoopbackProvider("burst", latency_s=0.2, retry_after="auto", rps=5, ratelimit_headers="none") as p:
        d = delegator(openai_dep(p), concurrency=12)
        out = batch(d, 30)
        limits = out.results[-1].deployment.limits
        refused_after_first_second = [r for r in p.requests if r.status == 429 and r.time - p.requests[0].time > 0.9]
    assert limits["learned_from"] == "429s"
    assert limits["rpm"] >= 0.5 * 5 * 60, limits
    assert len(refused_after_first_second) <= 2, [round(r.time - p.requests[0].time, 2) for r in p.requests if r.status == 429]


def test_a_limit_that_changes_mid_run_is_followed(provider: LoopbackProvider) -> None:
    provider.rps = 5
    d = delegator(openai_dep(provider))
    first = batch(d, 6)
    assert first.results[-1].deployment.limits["rpm"] == 300.0
    provider.rps = 2  # the account's tier dropped
    provider.reset_stats()
    second = batch(d, 10)
    assert second.results[-1].deployment.limits["rpm"] == 120.0
    times = sorted(r.time for r in provider.requests)
    assert max_in_window(times[len(times) // 2:]) <= 2, "paced by the new limit once it was stated"
    assert provider.stats()["429"] <= 4


def test_configured_limits_win(provider: LoopbackProvider) -> None:
    provider.rps = 5  # says 300/min
    d = delegator(openai_dep(provider, rpm=120))
    out = batch(d, 6)
    assert out.results[-1].deployment.limits == {"rpm": 120.0}
    assert max_in_window([r.time for r in provider.requests]) <= 2


def test_learning_can_be_turned_off(provider: LoopbackProvider) -> None:
    provider.rps = 2
    d = delegator(openai_dep(provider), learn_limits=False)
    out = d.run_sync([Task(f"task {i}", model="g") for i in range(8)])
    assert out.results[-1].deployment.limits is None or "learned" not in out.results[-1].deployment.limits
    assert provider.stats()["429"] > 0, "unpaced: the batch ran into the provider's limit"


def test_list_models_shows_learned_limits(provider: LoopbackProvider) -> None:
    provider.rps = 3
    d = delegator(openai_dep(provider))
    tools = DelegateTools(d)
    before = json.loads(tools.list_models_sync())
    batch(d, 4)
    after = json.loads(tools.list_models_sync())

    def limits(listing: dict[str, Any]) -> Any:
        (group,) = [g for name, g in listing["groups"].items() if name == "g"]
        return group["deployments"][0]["limits"]

    assert limits(before) is None
    assert limits(after)["rpm"] == 180.0 and limits(after)["learned"] == ["rpm"]
