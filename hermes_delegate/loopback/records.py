"""Request records kept by the loopback provider (credentials are never stored)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Request headers never copied into a :class:`RequestRecord`.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"})


@dataclass
class RequestRecord:
    """One chat request as seen by the server."""

    time: float  # time.monotonic() at arrival
    model: str | None
    stream: bool
    status: int | str  # HTTP status, fault name, "pending" while in flight, 499 if the client left
    messages: list
    has_auth: bool  # an Authorization / api-key header was present (its value is not kept)
    path: str = ""
    headers: dict = field(default_factory=dict)  # request headers minus SECRET_HEADERS
    body: dict = field(default_factory=dict)  # the parsed request body
