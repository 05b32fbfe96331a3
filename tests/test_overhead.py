"""The engine's per-request shortcuts (issue 24) change nothing but their cost.

Redaction skips a secret shape's regex when the text lacks that shape's literal; rate-limit header
parsing skips the headers that carry no limit. Each is checked against the long way round.
"""

from __future__ import annotations

import os
import time

from hypothesis import given, settings, strategies as st

from hermes_delegate.core import redact
from hermes_delegate.ratelimit.headers import RateHeaders, parse_rate_headers

SAMPLES = [
    "plain text without anything",
    "see https://user:pa55word@example.com/path and https://token123@example.com",
    "Authorization: Bearer abcdefghijklmnop, BASIC QWxhZGRpbjpvcGVu",
    "key sk-abcdefghijkl12 and SK-ABCDEFGHIJKL",
    "GET /v1?api_key=abc123&x=1#frag ?token=zzz&sig=qqq",
    'config {"api_key": "abcdefgh1234", "x-api-key"= \'zyxwvuts\', authorization:zzzzzzzz}',
    "Ünïcödé ſk-abcdefghij bearer ſecretvalue1 K-ey=1",
]
PIECES = [*"abcdeksK:/@=?&#-_ '\"BbearrsicAPIapiuthorzion{},.\u017f\u0130\u212a", "sk-", "://", "bearer ", "api_key=",
          "Authorization: ", "abcdefgh12"]
TEXT = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


def _the_long_way(text: str) -> str:
    for pat, rep, _ in redact._PATTERNS:
        text = pat.sub(rep, text)
    return text


def test_every_secret_shape_still_applies_to_text_that_has_it():
    r = redact.Redactor()
    for text in SAMPLES:
        assert r(text) == _the_long_way(text), text


def test_every_secret_shape_has_needles_so_text_without_them_skips_its_regex():
    assert all(needles and all(n == n.casefold() for n in needles) for _, _, needles in redact._PATTERNS)
    assert not hasattr(redact, "_NEEDLES")  # one list: a shape's needles cannot drift from its regex


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_skipping_a_shapes_regex_never_changes_the_result(text):
    assert redact.Redactor()(text) == _the_long_way(text)


def test_a_secret_set_in_the_environment_after_the_redactor_was_built_is_redacted(monkeypatch):
    r = redact.Redactor(live_env=os.environ)
    value = f"late-secret-{time.monotonic_ns()}"
    monkeypatch.setenv("HD_TEST_LATE_API_KEY", value)
    monkeypatch.setenv("HD_TEST_PLAIN_VALUE", "visible-value-123")
    assert r.scrub([f"got {value}", "visible-value-123"]) == ["got ***", "visible-value-123"]


def test_rate_limit_headers_among_many_others_are_read_and_none_means_none():
    others = {f"llm_provider-x-other-{i}": "v" for i in range(20)} | {"content-type": "application/json"}
    assert parse_rate_headers(others, time.time()) == RateHeaders()
    got = parse_rate_headers({**others, "llm_provider-X-RateLimit-Limit-Requests": "60",
                              "x-ratelimit-remaining-requests": "7", "Retry-After": "3"}, time.time())
    assert (got.requests_limit, got.requests_remaining, got.retry_after_s) == (60.0, 7.0, 3.0)
    anthropic = parse_rate_headers({**others, "anthropic-ratelimit-requests-limit": "50",
                                    "anthropic-ratelimit-requests-remaining": "49"}, time.time())
    assert (anthropic.requests_limit, anthropic.requests_remaining) == (50.0, 49.0)
