"""Rate limits shared by several processes through Redis, so several delegators (hermes sessions,
CI workers) together stay under one provider's limits: the rpm windows, the parallel slots (leases a
dead process gives up within LEASE_S), the token windows and buckets, and the limits learned from a
provider's headers or 429s (which a process that has not yet heard from the provider starts with).

It connects with the Router's own Redis settings (`redis_host`/`redis_port`/`redis_password` or
`redis_url` in `router_settings`), which also share the Router's cooldowns and usage. Admission is
one Lua script, atomic on the server and timed by the server's clock, so processes need not agree
on time. Processes served by one deployment take turns as its windows free: each asks again when
the script says a slot frees, so none is favoured.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence, TypeVar, cast

from ..core.errors import ProviderError
from .sanity import checked_published
from .windows import Ask

__all__ = ["RedisWindows", "limiter_unavailable", "litellm_cache_kwargs", "read_learned", "CONNECT_TIMEOUT_S",
           "DOWN_S", "LEASE_S", "AsyncRedis", "RedisScript"]

_T = TypeVar("_T")

#: How long one Redis command may take (connect and answer together) before the limiter counts as
#: unavailable; also the socket timeouts of LiteLLM's own Redis client (`litellm_cache_kwargs`).
CONNECT_TIMEOUT_S = 1.0
#: After a failure, calls fail at once for this long (no new connection attempt), so the rest of a batch
#: fails typed at once rather than one timeout per task; a new batch tries again at once (`retry_now`).
DOWN_S = 30.0


class RedisScript(Protocol):
    """A Lua script registered on a client (redis.asyncio's AsyncScript): run on its keys and arguments."""

    def __call__(self, keys: Sequence[str] | None = None, args: Sequence[Any] | None = None) -> Awaitable[Any]: ...


class AsyncRedis(Protocol):
    """What this package uses of a redis.asyncio client, typed by what it answers here (no
    decode_responses: bytes). redis-py annotates every command as `Awaitable[Any] | Any`, for its sync
    and async clients alike; `async_client` is the one place that says which this is."""

    def register_script(self, script: str) -> RedisScript: ...
    def zrem(self, name: str, *values: str) -> Awaitable[int]: ...
    def set(self, name: str, value: str, *, px: int | None = None) -> Awaitable[bool | None]: ...
    def get(self, name: str) -> Awaitable[bytes | None]: ...
    async def aclose(self) -> None: ...


def limiter_unavailable(detail: str, *, calling: bool = True) -> ProviderError:
    """The typed error for 'the shared rate windows cannot be reached': not a provider outage, and
    not retried by the Router (LiteLLM reads `num_retries` off an exception)."""
    return ProviderError(
        "limiter_unavailable",
        f"The shared rate limiter (Redis) is unavailable: {detail}."
        + (" Nothing was sent to the provider." if calling else " Runs would fail until it is back."),
        hint="Start the Redis server named by router_settings (redis_host/redis_port or redis_url), or remove "
             "those settings to keep the request windows in this process.", num_retries=0)

#: KEYS: rpm window, parallel slots, token window, token bucket, waiters, waiters' deadlines, the next
#: spaced admission's due time, of one deployment. ARGV: the request's token; rpm L, W (ms); parallel
#: limit, lease (ms); tokens; tpm budget, its window (ms); bucket rate (tokens/ms), capacity (a 0 limit
#: is no limit); the waiter (a process's queue head; '' for none); its grace and poll (ms); the rpm
#: spacing step W/L (ms; 0: none). All of it is taken, or nothing: returns 0, or the ms until it could be
#: (-1: until a parallel slot frees).
#:
#: Fair across processes: a waiter refused is queued here by the time it was first refused, and is
#: told to come back when capacity frees; capacity that frees goes to the waiters queued longest
#: (a newcomer is admitted only while more slots are free than waiters are ahead of it). A waiter
#: admitted leaves the queue, and a process's next head queues behind the others: turns, not a race.
#: A waiter that does not come back by the time it was told (plus FAIR_GRACE_MS) is dropped.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tok = ARGV[1]
local L, W = tonumber(ARGV[2]), tonumber(ARGV[3])
local P, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local amount = tonumber(ARGV[6])
local B, TW = tonumber(ARGV[7]), tonumber(ARGV[8])
local rate, cap = tonumber(ARGV[9]), tonumber(ARGV[10])
local me, grace, poll = ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13])
local step = tonumber(ARGV[14])
local due = step > 0 and tonumber(redis.call('GET', KEYS[7]) or '0') or 0
local wait, par_full, free = 0, false, 1000000000
local ahead = 0
if me ~= '' then
  for _, w in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    if tonumber(redis.call('HGET', KEYS[6], w) or '0') < now then
      redis.call('ZREM', KEYS[5], w)
      redis.call('HDEL', KEYS[6], w)
    end
  end
  local mine = redis.call('ZSCORE', KEYS[5], me)
  if mine then ahead = redis.call('ZCOUNT', KEYS[5], '-inf', '(' .. mine)
  else ahead = redis.call('ZCARD', KEYS[5]) end
end
if P > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local n = redis.call('ZCARD', KEYS[2])
  if n >= P then par_full = true else free = math.min(free, P - n) end
end
if L > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - W)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= L then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + W - now)
  elseif step > 0 then  -- evenly spaced, on a schedule step = W/L apart (windows.next_due)
    if due > now then wait = math.max(wait, due - now) else free = math.min(free, 1) end
  else free = math.min(free, L > 1 and 1 or L - n) end
end
if B > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - TW)
  local used, n = 0, 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    used = used + tonumber(string.match(m, ':([^:]+)$'))
    n = n + 1
  end
  if n > 0 and used + amount > B then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + TW - now)
  else free = math.min(free, 1) end
end
local level = 0
if rate > 0 then
  local b = redis.call('HMGET', KEYS[4], 'level', 'at')
  if b[1] then
    level = math.min(cap, tonumber(b[1]) + (now - tonumber(b[2])) * rate)
  else  -- a new bucket starts empty (the provider may have counted others' tokens) and fills from now
    redis.call('HSET', KEYS[4], 'level', '0', 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[4], math.ceil(cap / rate) * 2 + 1000)
  end
  local need = math.min(amount, cap)
  if level < need then wait = math.max(wait, (need - level) / rate) else free = math.min(free, 1) end
end
if par_full or wait > 0 or free <= ahead then
  local back = poll
  if not par_full and wait > 0 then back = math.max(1, math.ceil(wait)) end
  if me ~= '' then
    redis.call('ZADD', KEYS[5], 'NX', now, me)
    redis.call('HSET', KEYS[6], me, tostring(now + back + grace))
    redis.call('PEXPIRE', KEYS[5], 60000)
    redis.call('PEXPIRE', KEYS[6], 60000)
  end
  if par_full then return -1 end
  return back
end
if me ~= '' then
  redis.call('ZREM', KEYS[5], me)
  redis.call('HDEL', KEYS[6], me)
end
if P > 0 then
  redis.call('ZADD', KEYS[2], now + lease, tok)
  redis.call('PEXPIRE', KEYS[2], lease * 2)
end
if L > 0 then
  redis.call('ZADD', KEYS[1], now, tok)
  redis.call('PEXPIRE', KEYS[1], W * 2 + 1000)
end
if step > 0 then
  if now - due < step then due = due + step else due = now + step end
  redis.call('SET', KEYS[7], tostring(due), 'PX', math.ceil(W * 2 + 1000))
end
if B > 0 then
  redis.call('ZADD', KEYS[3], now, tok .. ':' .. amount)
  redis.call('PEXPIRE', KEYS[3], TW * 2 + 1000)
end
if rate > 0 then
  redis.call('HSET', KEYS[4], 'level', tostring(level - math.min(amount, cap)), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[4], math.ceil(cap / rate) * 2 + 1000)
end
return 0
"""

#: Count one request in an rpm window (KEYS[1]) as sent ARGV[2] ms ago; ARGV[3]: the key's lifetime (ms).
_RECORD_AGO = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZADD', KEYS[1], now - tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 0
"""

_RESTAMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
"""

#: Move the leases of the parallel slots still held (ARGV[2..]) to now + ARGV[1] ms.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 0
"""

#: A parallel slot is held for this long unless renewed: a process that dies holding one frees it by then.
LEASE_S = 30.0
#: Leases still held are renewed this often.
RENEW_EVERY_S = 10.0
#: A full parallel limit frees when another process's request ends, which nothing here announces, and
#: a waiter behind others is served when they are: look again after this.
PARALLEL_POLL_S = 0.05
#: A queued waiter not back this long after it was told to come back has left the queue.
FAIR_GRACE_MS = 250
#: Learned limits stay this long after they were last confirmed (a process still hearing the same limits
#: publishes them again every first_request.CONFIRM_EVERY_S): a value nobody confirms is soon gone.
LEARNED_TTL_S = 120


@dataclass(frozen=True)
class _Connection:
    """One event loop's client and the scripts registered on it."""

    client: AsyncRedis
    admit: RedisScript
    restamp: RedisScript
    record_ago: RedisScript
    renew: RedisScript


class RedisWindows:
    """A WindowStore (see windows.py) in Redis. Keys:
    `hermes_delegate:{rpm,par,tpm,bucket,wait,due,next,learned}:<name>`, the name of a deployment being
    `names[deployment id]` (keys.store_key: its id and a digest of its provider, api_base and model), or
    its id when not named."""

    shared = True

    def __init__(self, *, url: str | None = None, host: str | None = None, port: int | None = None,
                 password: str | None = None, prefix: str = "hermes_delegate:"):
        self._kw: dict[str, Any] = {"url": url, "host": host, "port": port, "password": password}
        self.prefix = prefix
        self._conn: _Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the client's: its connections belong to it
        self._down_until = 0.0
        self._down_reason = ""
        self._held: dict[str, set[str]] = {}  # deployment -> tokens of the parallel slots held
        self._renewer: asyncio.Task[None] | None = None
        #: deployment id -> its name in Redis (keys.store_key), set by whoever knows the deployments
        self.names: dict[str, str] = {}
        self.learned_ttl_s = LEARNED_TTL_S

    @classmethod
    def from_router_settings(cls, settings: Mapping[str, Any]) -> "RedisWindows":
        port = settings.get("redis_port")
        return cls(url=settings.get("redis_url"), host=settings.get("redis_host"),
                   port=int(port) if port else None, password=settings.get("redis_password"))

    def _connect(self) -> _Connection:
        try:
            import redis.asyncio as aioredis  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the environment
            from ..core.errors import ConfigError  # noqa: PLC0415

            raise ConfigError("router_settings name a Redis server, but the redis package is not installed.",
                              hint='pip install "hermes-delegate[redis]"') from exc
        client = async_client({"redis_url": self._kw["url"], "redis_host": self._kw["host"],
                               "redis_port": self._kw["port"], "redis_password": self._kw["password"]}, aioredis)
        return _Connection(client, client.register_script(_ADMIT), client.register_script(_RESTAMP),
                           client.register_script(_RECORD_AGO), client.register_script(_RENEW))

    async def _run(self, call: Callable[[_Connection], Awaitable[_T]]) -> _T:
        """One Redis command, failing fast: no client-side retries (the caller holds its group's queue),
        a short timeout, and while Redis is known to be down no new attempt for DOWN_S seconds."""
        if time.monotonic() < self._down_until:
            raise limiter_unavailable(self._down_reason)
        loop = asyncio.get_running_loop()
        if self._conn is not None and self._loop is not loop:
            # a new loop (run_sync runs each batch on its own): the old client's connections belong to a
            # loop that has ended and would fail with "Event loop is closed"; they are dropped
            self._conn, self._renewer = None, None
        if self._conn is None:
            self._conn, self._loop = self._connect(), loop
        conn = self._conn
        from redis.exceptions import RedisError  # noqa: PLC0415

        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):  # not wait_for: it can swallow a cancellation
                return await call(conn)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_reason = _reason(exc)
            self._down_until = time.monotonic() + DOWN_S
            raise limiter_unavailable(self._down_reason) from None

    def retry_now(self) -> None:
        """End the fail-fast period: the next command tries Redis again (called as a batch starts)."""
        self._down_until = 0.0

    def _keys(self, key: str) -> list[str]:
        name = self.names.get(key, key)
        return [f"{self.prefix}{kind}:{name}" for kind in ("rpm", "par", "tpm", "bucket", "wait", "due", "next")]

    def learned_key(self, key: str) -> str:
        return f"{self.prefix}learned:{self.names.get(key, key)}"

    async def admit(self, key: str, ask: Ask) -> float:
        limit, window_s = ask.rpm or (0, 0.0)
        budget, per_s = ask.tpm_window or (0.0, 0.0)
        rate, cap = ask.tpm_bucket or (0.0, 0.0)
        wait_ms = await self._run(lambda c: c.admit(keys=self._keys(key), args=[
            ask.token or uuid.uuid4().hex, limit, int(window_s * 1000), ask.parallel or 0, int(LEASE_S * 1000),
            repr(float(ask.tokens)), repr(float(budget)), int(per_s * 1000), repr(rate / 1000.0), repr(float(cap)),
            ask.waiter, FAIR_GRACE_MS, int(PARALLEL_POLL_S * 1000),
            repr(window_s * 1000.0 / limit) if limit > 1 else "0"]))
        if int(wait_ms) < 0:
            return PARALLEL_POLL_S
        if int(wait_ms) == 0 and ask.parallel:
            self._held.setdefault(key, set()).add(ask.token)
            self._keep_renewing()
        return float(wait_ms) / 1000.0

    async def restamp(self, key: str, token: str) -> None:
        await self._run(lambda c: c.restamp(keys=[self._keys(key)[0]], args=[token]))

    async def record(self, key: str, window_s: float, token: str = "", ago_s: float = 0.0) -> None:
        if ago_s > 0:
            await self._run(lambda c: c.record_ago(keys=self._keys(key)[:1], args=[
                token or uuid.uuid4().hex, int(ago_s * 1000), int(window_s * 2000) + 1000]))
            return
        await self._run(lambda c: c.admit(keys=self._keys(key), args=[
            token or uuid.uuid4().hex, 1_000_000, int(window_s * 1000), 0, 0, "0", "0", 0, "0", "0", "", 0, 0, "0"]))

    async def release(self, key: str, token: str) -> None:
        held = self._held.get(key)
        if held is not None:
            held.discard(token)
        await self._run(lambda c: c.client.zrem(self._keys(key)[1], token))

    def _keep_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """Renew the leases of the slots this process holds, while it holds any."""
        while any(self._held.values()):
            await asyncio.sleep(RENEW_EVERY_S)
            for key, tokens in list(self._held.items()):
                if tokens:
                    try:
                        await self._run(self._renewal(key, tuple(tokens)))
                    except Exception:  # noqa: BLE001, S110 - Redis away: the next admission reports it
                        pass

    def _renewal(self, key: str, tokens: tuple[str, ...]) -> Callable[[_Connection], Awaitable[Any]]:
        """The command that renews these slots' leases."""
        return lambda c: c.renew(keys=[self._keys(key)[1]], args=[int(LEASE_S * 1000), *tokens])

    async def leave(self, key: str, waiter: str) -> None:
        await self._run(lambda c: c.client.zrem(self._keys(key)[4], waiter))

    async def publish(self, key: str, learned: Mapping[str, Any]) -> None:
        body = json.dumps({k: v for k, v in learned.items() if v is not None})
        await self._run(lambda c: c.client.set(self.learned_key(key), body, px=int(self.learned_ttl_s * 1000)))

    async def recall(self, key: str) -> dict[str, Any] | None:
        body = await self._run(lambda c: c.client.get(self.learned_key(key)))
        return _learned(body)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if self._conn is not None:
            await self._conn.client.aclose()
            self._conn = None


def read_learned(settings: Mapping[str, Any], prefix: str = "hermes_delegate:") -> dict[str, dict[str, Any]]:
    """Every deployment's learned limits in the Redis that router_settings name (for `models`/`doctor`,
    which call no model): store name (keys.store_key) -> what was learned, values that cannot be
    believed moved to `refused` (sanity.checked_published). Raises the typed limiter_unavailable."""
    import redis  # noqa: PLC0415

    client = sync_client(settings)
    try:
        out: dict[str, dict[str, Any]] = {}
        keys = list(client.scan_iter(match=f"{prefix}learned:*", count=500))
        for key, body in zip(keys, client.mget(keys) if keys else [], strict=True):
            learned = _learned(body)
            if learned is not None:
                learned = checked_published(learned)
                out[(key.decode() if isinstance(key, bytes) else key)[len(prefix) + len("learned:"):]] = learned
        return out
    except (redis.RedisError, OSError) as exc:
        raise limiter_unavailable(_reason(exc), calling=False) from None
    finally:
        client.close()


def _learned(body: Any) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def litellm_cache_kwargs() -> dict[str, Any]:
    """The Router's `cache_kwargs` for LiteLLM's own RedisCache (cooldowns, usage): the same ~1 s
    timeouts and no client-side retries. Its constructor pings Redis synchronously (twice) with redis-py's
    default retries and backoff, which with Redis down stalled the Router's build ~8 s. A sync `Retry`:
    LiteLLM builds a sync client from these kwargs (redis-py turns it into an async one for the async
    client; url-configured clients drop it and have no retries anyway)."""
    kw: dict[str, Any] = {"socket_timeout": CONNECT_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S}
    try:
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the Router then reports the missing package itself
        return kw
    kw["retry"] = Retry(NoBackoff(), 0)
    # redis-py ≥ 8 converts it for the async client (the same policy) and warns that it did
    warnings.filterwarnings("ignore", message="A synchronous redis.retry.Retry was passed to an asyncio client",
                            category=UserWarning)
    return kw


def async_client(settings: Mapping[str, Any], aioredis: Any = None) -> AsyncRedis:
    """A redis.asyncio client for the server router_settings name (redis_url, or redis_host/port), failing
    fast (no client-side retries, short timeouts)."""
    if aioredis is None:
        import redis.asyncio as aioredis  # noqa: PLC0415
    port = settings.get("redis_port")
    if settings.get("redis_url"):
        client = aioredis.from_url(settings["redis_url"], password=settings.get("redis_password"), **_fail_fast())
    else:
        client = aioredis.Redis(host=settings.get("redis_host") or "127.0.0.1", port=int(port) if port else 6379,
                                password=settings.get("redis_password"), **_fail_fast())
    return cast(AsyncRedis, client)


def sync_client(settings: Mapping[str, Any]) -> Any:
    """The same server, for a command that calls no model (models, doctor, spend)."""
    import redis  # noqa: PLC0415

    port = settings.get("redis_port")
    if settings.get("redis_url"):
        return redis.Redis.from_url(settings["redis_url"], password=settings.get("redis_password"),
                                    socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    return redis.Redis(host=settings.get("redis_host") or "127.0.0.1", port=int(port) if port else 6379,
                       password=settings.get("redis_password"), socket_connect_timeout=CONNECT_TIMEOUT_S,
                       socket_timeout=CONNECT_TIMEOUT_S)


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
