"""The loopback's credential fingerprint (RequestRecord.auth_sha): which key a request carried, so a
test can tell each provider got its own key, while the loopback still keeps no key value."""

from __future__ import annotations

import hashlib

import httpx

from hermes_delegate.loopback import LoopbackProvider
from hermes_delegate.loopback.records import auth_fingerprint

KEY = "sk-fingerprint-canary-0123456789"
SHA = hashlib.sha256(KEY.encode()).hexdigest()[:12]
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def test_each_credential_header_is_fingerprinted_and_never_kept():
    with LoopbackProvider("fp").start() as p:
        base = f"http://127.0.0.1:{p.port}"
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"api-key": KEY}, {"x-api-key": KEY}, {}):
            assert httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
        assert httpx.post(f"{base}/v1/messages", json=MESSAGES, headers={"x-api-key": KEY}).status_code == 200
        other = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-other-key"})
        assert other.status_code == 200
        assert httpx.post(f"{base}/v1/chat/completions", content=b"not json",
                          headers={"Authorization": f"Bearer {KEY}"}).status_code == 400
        recs = p.requests
    assert [r.auth_sha for r in recs] == [SHA, SHA, SHA, None, SHA, auth_fingerprint("sk-other-key"), SHA]
    assert [r.has_auth for r in recs] == [True, True, True, False, True, True, True]
    assert auth_fingerprint(f"Bearer {KEY}") == auth_fingerprint(KEY) == SHA
    assert auth_fingerprint("sk-other-key") != SHA
    assert KEY not in repr(recs) and all("authorization" not in r.headers for r in recs)
