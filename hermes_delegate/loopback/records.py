"""Request records kept by the loopback provider (credentials are never stored, only a fingerprint)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

#: Request headers never copied into a :class:`RequestRecord`.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"})


def auth_fingerprint(value: str) -> str:
    """The first 12 hex digits of the credential's sha256: enough to tell which key a request carried,
    useless for recovering it. ``value`` is a header's value; an ``Authorization: Bearer <key>``
    is fingerprinted as ``<key>``, so ``auth_fingerprint(key)`` matches whichever header sent it."""
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        text = rest.strip()
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@dataclass
class RequestRecord:
    """One chat request as seen by the server."""

    time: float  # time.monotonic() at arrival
    model: str | None
    stream: bool
    status: int | str  # HTTP status, fault name, "pending" while in flight, 499 if the client left
    messages: list[Any]
    # an Authorization / api-key header was present (its value is not kept). The HTTP layer passes the
    # credential's fingerprint here instead of True; __post_init__ moves it to auth_sha
    has_auth: bool | str
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # request headers minus SECRET_HEADERS
    body: dict[str, Any] = field(default_factory=dict)  # the parsed request body
    auth_sha: str | None = None  # auth_fingerprint() of the credential sent, None without one

    def __post_init__(self) -> None:
        if isinstance(self.has_auth, str):
            self.auth_sha = self.has_auth
        self.has_auth = bool(self.has_auth)
