"""Request windows shared by several processes through Redis, so several delegators (hermes
sessions, CI workers) together stay under one provider's rate limit.

It connects with the Router's own Redis settings (`redis_host`/`redis_port`/`redis_password` or
`redis_url` in `router_settings`), which also share the Router's cooldowns and usage. Admission is
one Lua script, atomic on the server and timed by the server's clock, so processes need not agree
on time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Awaitable, Callable, Mapping

from ..core.errors import ProviderError

__all__ = ["RedisWindows", "limiter_unavailable", "CONNECT_TIMEOUT_S", "DOWN_S"]

#: How long one Redis command may take (connect, then answer) before the limiter counts as unavailable.
CONNECT_TIMEOUT_S = 1.0
#: After a failure, calls fail at once for this long (no new connection attempt), then one tries again.
DOWN_S = 2.0


def limiter_unavailable(detail: str) -> ProviderError:
    """The typed error for 'the shared rate windows cannot be reached': not a provider outage, and
    not retried by the Router (LiteLLM reads `num_retries` off an exception)."""
    exc = ProviderError(
        "limiter_unavailable",
        f"The shared rate limiter (Redis) is unavailable: {detail}. Nothing was sent to the provider.",
        hint="Start the Redis server named by router_settings (redis_host/redis_port or redis_url), or remove "
             "those settings to keep the request windows in this process.")
    exc.num_retries = 0  # type: ignore[attr-defined]
    return exc

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2 + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

_RESTAMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
"""


class RedisWindows:
    """A WindowStore (see gate.py) in Redis. Keys: `hermes_delegate:rpm:<deployment id>`."""

    def __init__(self, *, url: str | None = None, host: str | None = None, port: int | None = None,
                 password: str | None = None, prefix: str = "hermes_delegate:rpm:"):
        self._kw: dict[str, Any] = {"url": url, "host": host, "port": port, "password": password}
        self.prefix = prefix
        self._client: Any = None
        self._script: Any = None
        self._restamp_script: Any = None
        self._down_until = 0.0
        self._down_reason = ""

    @classmethod
    def from_router_settings(cls, settings: Mapping[str, Any]) -> "RedisWindows":
        port = settings.get("redis_port")
        return cls(url=settings.get("redis_url"), host=settings.get("redis_host"),
                   port=int(port) if port else None, password=settings.get("redis_password"))

    def _connect(self) -> Any:
        try:
            import redis.asyncio as aioredis  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the environment
            from ..core.errors import ConfigError  # noqa: PLC0415

            raise ConfigError("router_settings name a Redis server, but the redis package is not installed.",
                              hint='pip install "hermes-delegate[redis]"') from exc
        if self._kw["url"]:
            client = aioredis.from_url(self._kw["url"], password=self._kw["password"], **_fail_fast())
        else:
            client = aioredis.Redis(host=self._kw["host"] or "127.0.0.1", port=self._kw["port"] or 6379,
                                    password=self._kw["password"], **_fail_fast())
        self._script = client.register_script(_ADMIT)
        self._restamp_script = client.register_script(_RESTAMP)
        return client

    async def _run(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """One Redis command, failing fast: no client-side retries (the caller holds its group's queue),
        a short timeout, and while Redis is known to be down no new attempt for DOWN_S seconds."""
        if time.monotonic() < self._down_until:
            raise limiter_unavailable(self._down_reason)
        if self._client is None:
            self._client = self._connect()
        from redis.exceptions import RedisError  # noqa: PLC0415

        try:
            return await asyncio.wait_for(call(), 2 * CONNECT_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_reason = _reason(exc)
            self._down_until = time.monotonic() + DOWN_S
            raise limiter_unavailable(self._down_reason) from None

    async def admit(self, key: str, limit: int, window_s: float, token: str = "") -> float:
        wait_ms = await self._run(lambda: self._script(
            keys=[self.prefix + key], args=[limit, int(window_s * 1000), token or uuid.uuid4().hex]))
        return float(wait_ms) / 1000.0

    async def restamp(self, key: str, token: str) -> None:
        await self._run(lambda: self._restamp_script(keys=[self.prefix + key], args=[token]))

    async def record(self, key: str, window_s: float) -> None:
        await self._run(lambda: self._script(
            keys=[self.prefix + key], args=[1_000_000, int(window_s * 1000), uuid.uuid4().hex]))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _fail_fast() -> dict[str, Any]:
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415

    return {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": CONNECT_TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0)}


def _reason(exc: BaseException) -> str:
    """What failed, without the URL (it may carry a password)."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    if "refused" in str(exc).lower() or "111" in str(exc):
        return "connection refused"
    return name
