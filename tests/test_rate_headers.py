"""Rate-limit headers in each provider dialect, read into one shape (pure: no network)."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from hermes_delegate.ratelimit.headers import RateHeaders, headers_of, parse_duration_s, parse_rate_headers
from hermes_delegate.ratelimit.learned import BETA, GROWTH_BEYOND, GROWTH_FAR, GROWTH_NEAR, Adaptive, jitter_pad

NOW = 1_800_000_000.0


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("250ms", 0.25), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("17", 17.0),
    ("20ms", 0.02), ("1.5s", 1.5),
])
def test_openai_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-1", "s1", "nan", "inf"])
def test_unreadable_durations_are_none(text: str) -> None:
    assert parse_duration_s(text) is None


def test_openai_dialect_as_litellm_passes_it_back() -> None:
    # litellm's additional_headers: raw provider headers prefixed llm_provider-, plus its own copies
    headers = {
        "x-ratelimit-limit-requests": "999",  # litellm's copy loses to the raw header
        "llm_provider-x-ratelimit-limit-requests": "300",
        "llm_provider-x-ratelimit-remaining-requests": "299",
        "llm_provider-x-ratelimit-reset-requests": "200ms",
        "llm_provider-x-ratelimit-limit-tokens": "40000",
        "llm_provider-x-ratelimit-remaining-tokens": "39000",
        "llm_provider-x-ratelimit-reset-tokens": "1.5s",
    }
    rate = parse_rate_headers(headers, NOW)
    assert rate == RateHeaders(300, 299, 0.2, 40000, 39000, 1.5, None)
    assert rate.has_limits and rate.wait_s() == 0.0


def test_anthropic_dialect_resets_are_times() -> None:
    reset = datetime.fromtimestamp(NOW + 2.5, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": "30000", "anthropic-ratelimit-input-tokens-remaining": "100",
        "anthropic-ratelimit-input-tokens-reset": reset,
        "Retry-After": "2",
    }
    rate = parse_rate_headers(headers, NOW)
    assert (rate.requests_limit, rate.requests_remaining) == (50, 0)
    assert rate.requests_reset_s == pytest.approx(2.5)
    assert (rate.tokens_limit, rate.tokens_remaining) == (30000, 100)  # input tokens stand in for tokens
    assert rate.retry_after_s == 2.0
    assert rate.wait_s() == 2.0  # the Retry-After is the provider's word; a reset is when the limit is whole


def test_retry_after_forms() -> None:
    assert parse_rate_headers({"retry-after-ms": "350", "retry-after": "1"}, NOW).retry_after_s == 0.35
    assert parse_rate_headers({"Retry-After": "0.5"}, NOW).retry_after_s == 0.5
    date = "Fri, 15 Jan 2027 08:00:03 GMT"
    base = datetime(2027, 1, 15, 8, 0, 0, tzinfo=timezone.utc).timestamp()
    assert parse_rate_headers({"retry-after": date}, base).retry_after_s == pytest.approx(3.0)
    assert not parse_rate_headers({"retry-after": "1"}, NOW).has_limits


def test_no_headers_or_garbage_states_nothing() -> None:
    assert parse_rate_headers(None, NOW) == RateHeaders()
    assert parse_rate_headers({"x-ratelimit-limit-requests": "lots", "content-type": "json"}, NOW) == RateHeaders()


def test_headers_are_found_on_responses_and_errors() -> None:
    class Response:
        _hidden_params = {"additional_headers": {"llm_provider-x-ratelimit-limit-requests": "60"}}

    class Error(Exception):
        litellm_response_headers = {"retry-after": "3"}

    assert parse_rate_headers(headers_of(Response()), NOW).requests_limit == 60
    assert parse_rate_headers(headers_of(Error()), NOW).retry_after_s == 3
    assert headers_of(None) is None and headers_of(object()) is None


def test_a_429_sets_the_pace_below_the_rate_the_provider_accepted() -> None:
    ad = Adaptive(answered=True)
    for i in range(20):  # 10 requests a second for 2 s; the last 4 of them refused
        ad.on_sent(i * 0.1)
    for t in (1.6, 1.7, 1.8, 1.9):
        ad.on_429(now=t + 0.01, hold_s=0.5, latency_s=0.01)
    assert ad.rate_limited == 4 and ad.rpm is None  # nothing changes before the hold ends
    ad.settle(now=2.5)
    # accepted: 17 of the sends in [0, 1.61] less the 4 refused... of them 1 (1.6) falls in the span
    assert ad.adapted and ad.rpm == pytest.approx(60 * BETA * 16 / 1.61, rel=0.01)
    first = ad.rpm
    ad.on_429(now=2.6, hold_s=0.5, latency_s=0.0)  # a new hold: a new measure, never above the pace
    ad.settle(now=3.2)
    assert ad.rpm <= first


def test_the_pace_climbs_back_quickly_then_slowly_then_probes_up() -> None:
    ad = Adaptive(answered=True, adapted=True, rpm=270.0, measured_rpm=300.0)
    ad.on_success(now=0.0, latency_s=0.2)
    assert ad.rpm == pytest.approx(270 * (1 + GROWTH_FAR))  # far below the measured rate
    ad.rpm = 295.0
    ad.on_success(now=0.0, latency_s=0.2)
    assert ad.rpm == pytest.approx(295 * (1 + GROWTH_NEAR))  # just below it: where the 429 came
    ad.rpm = 301.0
    rates = []
    for _ in range(60):
        ad.on_success(now=0.0, latency_s=0.2)
        rates.append(ad.rpm)
    steps = [b / a - 1 for a, b in itertools.pairwise(rates)]
    assert steps[0] >= GROWTH_BEYOND and steps[-1] == pytest.approx(5 * GROWTH_BEYOND)  # faster the longer


def test_a_provider_that_states_limits_is_not_adapted() -> None:
    ad = Adaptive(answered=True)
    assert ad.learn(RateHeaders(requests_limit=120))
    ad.on_sent(0.0)
    ad.on_429(now=0.1, hold_s=1.0)
    ad.settle(now=1.2)
    assert (ad.rpm, ad.adapted, ad.rate_limited) == (120, False, 1)
    assert not ad.learn(RateHeaders(requests_limit=120))  # unchanged
    assert ad.learn(RateHeaders(requests_limit=60)) and ad.rpm == 60  # a limit that changes mid-run is followed


def test_jitter_pad_follows_measured_spread() -> None:
    assert jitter_pad([0.2] * 3, 0.06) == 0.06  # too few samples: the default
    assert jitter_pad([0.2] * 20, 0.06) == 0.005  # steady round trips: the floor
    assert jitter_pad([0.2, 0.21, 0.22, 0.23, 0.24, 0.25, 0.26, 0.27, 0.28, 0.29], 0.06) == pytest.approx(0.1)
    assert jitter_pad([0.2 + i * 0.001 for i in range(10)], 0.06) == pytest.approx(0.016)
