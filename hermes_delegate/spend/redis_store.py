"""The spend store across machines: the Redis that `router_settings` name (the one that shares rate
limits). Keys under `hermes_delegate:spend:<namespace>:`: `spent` and `unknown` (hashes by scope),
`held` (hash: scope -> dollars held), `holds` (zset: hold id by lease expiry), `hold:<id>` (its amount and
scopes) and `ledger` (a list of JSON rows). A reservation and a settlement are each one Lua script: every
scope checked and taken at once, expired holds released first, the ledger row appended in the same step.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..core.caps import Scope
from ..ratelimit.redis_windows import AsyncRedis, RedisScript, async_client, sync_client

if TYPE_CHECKING:  # the fallback's type: sqlite3 is not imported unless a fallback is kept
    from .sqlite_store import SqliteStore

__all__ = ["RedisStore"]

_PURGE = """
local function purge(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    local h = redis.call('HGETALL', KEYS[3] .. id)
    local amount, scopes = 0, ''
    for i = 1, #h, 2 do
      if h[i] == 'amount' then amount = tonumber(h[i + 1]) elseif h[i] == 'scopes' then scopes = h[i + 1] end
    end
    for scope in string.gmatch(scopes, '[^\\n]+') do redis.call('HINCRBYFLOAT', KEYS[2], scope, -amount) end
    redis.call('DEL', KEYS[3] .. id)
    redis.call('ZREM', KEYS[1], id)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
"""

# KEYS: holds, held, hold prefix, spent. ARGV: hold id, amount, lease_s, n, then scope, cap pairs.
_RESERVE = _PURGE + """
purge(now)
local id, amount, lease, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local scopes = {}
for i = 1, n do
  local scope, cap = ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i])
  local spent = tonumber(redis.call('HGET', KEYS[4], scope) or '0')
  local held = tonumber(redis.call('HGET', KEYS[2], scope) or '0')
  if spent + held + amount > cap + 1e-12 then return {i, tostring(spent), tostring(held)} end
  scopes[#scopes + 1] = scope
end
for _, scope in ipairs(scopes) do redis.call('HINCRBYFLOAT', KEYS[2], scope, amount) end
redis.call('HSET', KEYS[3] .. id, 'amount', tostring(amount), 'scopes', table.concat(scopes, '\\n'))
redis.call('ZADD', KEYS[1], now + lease, id)
return {0}
"""

# KEYS: holds, held, hold prefix, spent, unknown, ledger. ARGV: hold id, usd, unknown (0/1), row json, scopes...
_SETTLE = _PURGE + """
local id, usd, unknown, row = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if id ~= '' and redis.call('ZSCORE', KEYS[1], id) then
  local amount = tonumber(redis.call('HGET', KEYS[3] .. id, 'amount') or '0')
  local scopes = redis.call('HGET', KEYS[3] .. id, 'scopes') or ''
  for scope in string.gmatch(scopes, '[^\\n]+') do redis.call('HINCRBYFLOAT', KEYS[2], scope, -amount) end
  redis.call('DEL', KEYS[3] .. id)
  redis.call('ZREM', KEYS[1], id)
end
for i = 5, #ARGV do
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i], usd)
  if unknown == 1 then redis.call('HINCRBY', KEYS[5], ARGV[i], 1) end
end
if row ~= '' then redis.call('RPUSH', KEYS[6], row) end
purge(now)
return 1
"""

# KEYS: holds. ARGV: lease_s, ids...
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
return 1
"""


class RedisStore:
    """Caps and ledger in Redis, shared by every process and machine that names the same server."""

    shared_across_machines = True

    def __init__(self, settings: Mapping[str, Any], where: str):
        self.settings, self.where = dict(settings), where
        ns = where.rsplit("/", 1)[-1] or "default"
        self.prefix = f"hermes_delegate:spend:{ns}:"
        #: per event loop: its client, and the scripts registered on it
        self._clients: dict[asyncio.AbstractEventLoop, tuple[AsyncRedis, dict[str, RedisScript]]] = {}
        self.fallback: SqliteStore | None = None  # a SqliteStore for rows Redis cannot take (spend.open_store sets it)

    def _keys(self, *names: str) -> list[str]:
        return [self.prefix + n for n in names]

    def _client(self) -> tuple[AsyncRedis, dict[str, RedisScript]]:
        loop = asyncio.get_running_loop()
        hit = self._clients.get(loop)
        if hit is None:
            self._clients = {k: v for k, v in self._clients.items() if not k.is_closed()}
            client = async_client(self.settings)
            hit = self._clients[loop] = (client, {name: client.register_script(src) for name, src in
                                                  (("reserve", _RESERVE), ("settle", _SETTLE), ("renew", _RENEW))})
        return hit

    async def reserve(self, hold_id: str, owner: str,  # noqa: ARG002 - holds here expire by lease, owner unrecorded
                      scopes: Sequence[Scope], amount: float, lease_s: float) -> tuple[Scope, float, float] | None:
        _, scripts = self._client()
        args: list[Any] = [hold_id, repr(float(amount)), repr(float(lease_s)), len(scopes)]
        for s in scopes:
            args += [s.key, repr(float(s.cap_usd))]
        out = await scripts["reserve"](keys=self._keys("holds", "held", "hold:", "spent"), args=args)
        if int(out[0]) == 0:
            return None
        return scopes[int(out[0]) - 1], float(out[1]), float(out[2])

    async def settle(self, hold_id: str | None, scope_keys: Sequence[str], usd: float, unknown: bool,
                     row: dict[str, Any] | None) -> None:
        _, scripts = self._client()
        body = json.dumps(row, default=str) if row is not None else ""
        await scripts["settle"](keys=self._keys("holds", "held", "hold:", "spent", "unknown", "ledger"),
                                args=[hold_id or "", repr(float(usd)), int(unknown), body, *scope_keys])

    async def renew(self, hold_ids: Iterable[str], lease_s: float) -> None:
        ids = list(hold_ids)
        if ids:
            _, scripts = self._client()
            await scripts["renew"](keys=self._keys("holds"), args=[repr(float(lease_s)), *ids])

    async def release(self, hold_ids: Iterable[str]) -> None:
        for i in hold_ids:
            await self.settle(i, [], 0.0, False, None)

    # -- reading (sync: commands that call no model) ---------------------------------------------------
    def scope_states(self, keys: Sequence[str]) -> dict[str, dict[str, float]]:
        client = sync_client(self.settings)
        try:
            import time  # noqa: PLC0415

            expired = client.zrangebyscore(self.prefix + "holds", "-inf", time.time())
            out = {}
            for k in keys:
                spent = float(client.hget(self.prefix + "spent", k) or 0)
                held = float(client.hget(self.prefix + "held", k) or 0)
                for hid in expired:  # lapsed but not yet purged: not held any more
                    h = client.hgetall(self.prefix + "hold:" + (hid.decode() if isinstance(hid, bytes) else hid))
                    scopes = (h.get(b"scopes") or b"").decode().split("\n")
                    if k in scopes:
                        held -= float(h.get(b"amount") or 0)
                out[k] = {"spent_usd": round(spent, 10), "reserved_usd": round(max(0.0, held), 10),
                          "unknown": int(client.hget(self.prefix + "unknown", k) or 0)}
            return out
        finally:
            client.close()

    def rows(self, since: float | None = None) -> list[dict[str, Any]]:
        client = sync_client(self.settings)
        try:
            rows = [json.loads(r) for r in client.lrange(self.prefix + "ledger", 0, -1)]
        finally:
            client.close()
        return sorted((r for r in rows if (r.get("ts") or 0) >= (since or 0)), key=lambda r: r.get("ts") or 0)
