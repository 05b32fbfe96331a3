"""The LiteLLM Router, built lazily from the config, and one call path through it.

Credentials, retries, fallbacks and cooldowns are the Router's (from `router_settings`). What this
module adds: direct ids that are not a configured group become implicit deployments; every attempt
the Router makes is recorded (deployment, status, wait); there is no retry layer of our own (a task
makes at most 1 + num_retries attempts per group tried, see docs/litellm.md); costs are reported
only when a price is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._litellm import import_litellm, map_litellm_errors, to_provider_error
from ..core.budget import estimate_tokens
from .hooks import (META_KEY, CallLog, install_dispatcher, make_hooks, register_call,
                           unregister_call)
from ..ratelimit.gate import CapacityGate, Limits, TokenEstimate
from ..ratelimit.keys import store_key
from ..core.budget import deployment_price
from ..core.config import Config
from ..core.credentials import deployment_provider, unset_refs
from ..core.env_refs import env_ref
from .litellm_settings import resolve_mapping
from ..core.errors import ProviderError
from ..core.resolver import Resolution, Resolver
from ..core.results import Attempt, DeploymentInfo, api_host
from ..sources.groups import resolver_for

__all__ = ["RouterHandle", "Completion", "api_host"]

log = logging.getLogger(__name__)
_CALL_PREFIX = uuid.uuid4().hex[:12]  # our call ids: this process's prefix and a counter
_CALL_NUMBERS = itertools.count()


@dataclass
class Completion:
    """One finished call: the raw response plus what we learned on the way."""

    response: Any
    text: str
    deployment: DeploymentInfo | None
    attempts: list[Attempt] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    cost_usd: float | None = None


class RouterHandle:
    """Owns one litellm.Router. Safe to share between concurrent tasks on one event loop."""

    def __init__(self, config: Config, resolver: Resolver | None = None):
        self.config = config
        self.resolver = resolver or resolver_for(config)
        self._router: Any = None
        self._implicit: set[str] = set()
        self.calls = CallLog()
        self.gate = CapacityGate({})
        self._info_cache: dict[tuple[str | None, str | None, str | None], DeploymentInfo] = {}
        self._price_cache: dict[str, bool] = {}

    # -- building ---------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        """Whether the Router (and so litellm) exists yet."""
        return self._router is not None

    @property
    def router(self) -> Any:
        if self._router is None:
            self._router = self._build()
        return self._router

    def _build(self) -> Any:
        from .litellm_settings import apply_litellm_settings, resolved_settings  # noqa: PLC0415

        litellm = import_litellm()
        # every os.environ/ reference resolved here, from the Resolver's lookup (the config's
        # environment_variables over the Delegator's env), so litellm never reads a variable itself
        env = self.resolver.env
        model_list, settings, litellm_settings = resolved_settings(self.config, self.resolver.model_list, env)
        # a deployment with an unset os.environ/ reference is not callable: left out, so LiteLLM can never
        # put its own default key or public endpoint in its place (planning refuses names only it serves)
        model_list = [d for d in model_list if not unset_refs(d.get("litellm_params") or {}, {})]
        apply_litellm_settings(litellm, litellm_settings, env)
        if litellm_settings.get("cache") is True:  # as the proxy does: the Router passes caching=True
            settings.setdefault("cache_responses", True)
        if settings.get("redis_host") or settings.get("redis_url"):
            # LiteLLM's own Redis client fails fast too (~1 s, no retries), the config's cache_kwargs first
            from ..ratelimit.redis_windows import litellm_cache_kwargs  # noqa: PLC0415

            settings["cache_kwargs"] = {**litellm_cache_kwargs(), **(settings.get("cache_kwargs") or {})}
        with map_litellm_errors():
            router = litellm.Router(model_list=model_list, **settings)
        _retrieve_redis_pings()
        # A Router hangs its cooldown/usage callbacks on litellm's global lists, which hold at most
        # MAX_CALLBACKS (100) and keep the Router alive: unhook it when this handle goes, or from the
        # 101st Router on, cooldowns silently stop working.
        weakref.finalize(self, router.discard)
        self._default_parallel = settings.get("default_max_parallel_requests")
        self.gate = CapacityGate(
            {str(d["model_info"]["id"]): Limits.from_deployment(d, self._default_parallel)
             for d in router.get_model_list() or []},
            windows=_shared_windows(settings),
            learn=self.config.delegation.learn_limits,
            labels={str(d["model_info"]["id"]): {"group": d.get("model_name"),
                                                 "model": (d.get("litellm_params") or {}).get("model")}
                    for d in router.get_model_list() or []},
            max_wait_s=self.config.delegation.max_queue_wait_s,
        )
        for d in router.get_model_list() or []:
            self._name_in_store(str(d["model_info"]["id"]), d.get("litellm_params") or {})
        self.hooks = make_hooks(self)
        install_dispatcher(litellm)
        return router

    def new_batch(self) -> None:
        """A batch starts: shared windows found down earlier are tried again (within a batch, a Redis
        outage fails the rest at once)."""
        retry_now = getattr(self.gate.windows, "retry_now", None)
        if retry_now is not None:
            retry_now()

    def model_name_for(self, res: Resolution) -> str:
        """The Router model name for a resolution, adding an implicit deployment for direct ids."""
        if res.is_group or res.model in self.resolver.groups:
            return res.model
        if res.model not in self._implicit:
            params = self._implicit_params(res)
            from litellm.types.router import Deployment  # noqa: PLC0415

            # litellm_params as a dict, which pydantic validates into LiteLLM_Params (as for the configured ones)
            added = self.router.add_deployment(Deployment(model_name=res.model,
                                                          litellm_params=params,  # type: ignore[arg-type]
                                                          model_info={}))
            if added is not None:
                self.gate.add(str(added.model_info.id),
                              Limits.from_deployment(added.model_dump(exclude_none=True), self._default_parallel),
                              label={"group": res.model, "model": params.get("model")})
                self._name_in_store(str(added.model_info.id), params)
            self._implicit.add(res.model)
        return res.model

    def _name_in_store(self, dep_id: str, params: Mapping[str, Any]) -> None:
        """A shared store (Redis) names a deployment by its id and what makes it distinct (provider,
        api_base, model; hashed): two configs reusing one `model_info.id` never share its windows."""
        names = getattr(self.gate.windows, "names", None)
        if names is not None:
            names[dep_id] = store_key(dep_id, params)

    def _implicit_params(self, res: Resolution) -> dict[str, Any]:
        """Params of an implicit deployment, `os.environ/` refs resolved here (with the config's
        environment_variables) as for the configured ones, so litellm never reads another variable."""
        params = self.config.params_for_model(res.model)
        if params is None:
            params = {"model": res.model}
            if res.api_base:
                params["api_base"] = res.api_base
            if res.key_env:
                params["api_key"] = env_ref(res.key_env)
        return resolve_mapping(params, self.resolver.env, f"implicit deployment {res.model}")

    # -- facts about deployments ------------------------------------------------------------
    def deployment_info(self, model_id: str | None, api_base: str | None = None,
                        provider: str | None = None) -> DeploymentInfo:
        """Who a deployment is (cached: litellm rebuilds a pydantic Deployment on every lookup)."""
        key = (model_id, api_base, provider)
        hit = self._info_cache.get(key)
        if hit is None:
            hit = self._lookup_deployment(model_id, api_base, provider)
            if hit.model is not None:  # found: a deployment id never changes what it names
                self._info_cache[key] = hit
        return DeploymentInfo(hit.provider, hit.deployment_id, hit.api_host, hit.model)  # callers may mutate

    def _lookup_deployment(self, model_id: str | None, api_base: str | None,
                           provider: str | None) -> DeploymentInfo:
        dep = self.router.get_deployment(model_id) if model_id else None
        lp: dict[str, Any] = {}
        if dep is not None:
            lp = dep.litellm_params.model_dump(exclude_none=True)
            api_base = api_base or lp.get("api_base")
        model = lp.get("model")
        if provider is None and model:
            provider = deployment_provider(lp)
        return DeploymentInfo(provider=provider, deployment_id=model_id, api_host=api_host(api_base),
                              model=model)

    def price_known(self, model_id: str | None) -> bool:
        hit = self._price_cache.get(model_id or "")
        if hit is None:
            hit = self._price_cache[model_id or ""] = self._lookup_price(model_id)
        return hit

    def _lookup_price(self, model_id: str | None) -> bool:
        dep = self.router.get_deployment(model_id) if model_id else None
        if dep is None:
            return False
        lp = dep.litellm_params.model_dump(exclude_none=True)
        info = dep.model_info.model_dump(exclude_none=True) if dep.model_info else {}
        if deployment_price(lp, info) is not None:
            return True
        return self.resolver.catalog.price(str(lp.get("model", ""))) is not None

    @staticmethod
    def status_of(exc: BaseException | None) -> str:
        if exc is None:
            return "error"
        err = to_provider_error(exc)  # a refused connection is "connection", not litellm's "500"
        return str(err.status_code) if err.status_code is not None else err.kind

    @staticmethod
    def estimate_tokens(messages: Any, request_kwargs: Mapping[str, Any] | None) -> TokenEstimate:
        text = "".join(str(m.get("content") or "") for m in messages or [] if isinstance(m, Mapping))
        kw = request_kwargs or {}
        cap = kw.get("max_tokens") or kw.get("max_completion_tokens") or 0
        return TokenEstimate(float(estimate_tokens(text)), float(cap) if isinstance(cap, (int, float)) else 0.0)

    def deployment_ids(self) -> list[str | None]:
        """The Router's id of each deployment the Resolver knows (`resolver.model_list`: the config's, or
        a remote proxy's groups), in that order (``None`` if it has none)."""
        by_group: dict[str, list[str | None]] = {}
        for m in self.router.model_list or []:
            by_group.setdefault(m.get("model_name"), []).append((m.get("model_info") or {}).get("id"))
        ids: list[str | None] = []
        seen: dict[str, int] = {}
        for dep in self.resolver.model_list:
            k = seen[dep.model_name] = seen.get(dep.model_name, -1) + 1
            row = by_group.get(dep.model_name, [])
            ids.append(row[k] if k < len(row) else None)
        return ids

    async def cooling_down(self) -> set[str]:
        """Deployments the Router has cooled down, plus those a 429's Retry-After holds in our queue
        (the Router cools nothing in a one-deployment group)."""
        from litellm.router_utils.cooldown_handlers import async_get_cooldown_deployments  # noqa: PLC0415

        held = self.gate.blocked_ids()
        try:
            return held | set(await async_get_cooldown_deployments(self.router, None))
        except Exception:  # noqa: BLE001 - a cooldown query must never break a listing
            return held

    # -- calling ----------------------------------------------------------------------------
    async def acompletion(self, res: Resolution, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        """One completion through the Router, with attempts, deployment, tokens and cost."""
        name = self.model_name_for(res)
        for key, value in res.params.items():  # a mapped variant (`:thinking` → thinking=…); the task's own win
            kwargs.setdefault(key, value)
        call_id = f"{_CALL_PREFIX}-{next(_CALL_NUMBERS)}"  # unique in this process; no syscall per call
        self.calls.open(call_id)
        self.router  # noqa: B018 - building the Router makes self.hooks
        register_call(call_id, self.hooks)
        tools = kwargs.get("tools")
        if tools and not any(isinstance(t, Mapping) and t.get("type") == "mcp" for t in tools):
            # litellm 1.106 routes any `tools=` call through its MCP gateway check, which imports
            # the optional `mcp` package and fails without it; plain function tools never need it.
            kwargs.setdefault("_skip_mcp_handler", True)
        meta = dict(kwargs.pop("metadata", None) or {})
        meta[META_KEY] = call_id
        try:
            # One retry layer, the Router's (num_retries, fallbacks, Retry-After). The only loop here is
            # for a 200 the Router took for a success (no choices): it is re-sent with what is left of
            # num_retries, so a task never makes more than 1 + num_retries attempts per group.
            while True:
                with map_litellm_errors():
                    response = await self.router.acompletion(model=name, messages=messages,
                                                             metadata=meta, **kwargs)
                try:
                    return self._completion(response, self._attempts(call_id))
                except ProviderError as exc:
                    left = self._retries_left(exc, name, call_id)
                    if left is None:
                        raise
                    kwargs["num_retries"] = left
        except asyncio.CancelledError as exc:  # a task timeout or an interrupt: keep what was tried
            tried = self._attempts(call_id) + self._unanswered(call_id)
            exc.attempts = tried  # type: ignore[attr-defined]
            if not tried:  # never sent: say what held it in the queue
                exc.queued = self._holding(name) or "behind earlier calls"  # type: ignore[attr-defined]
            raise
        except ProviderError as exc:  # redacted where it leaves the engine (the Delegator)
            exc.attempts = self._attempts(call_id)
            raise
        finally:
            unregister_call(call_id)
            self.gate.unreserve(call_id)
            self.gate.forget_call(call_id)
            on_wire = self.calls.sending.pop(call_id, None)  # an attempt cancelled on the wire
            if on_wire is not None:
                self.gate.finished(on_wire)
            for dep_id in self.calls.close(call_id):  # slots a cancelled attempt never gave back
                self.gate.release(dep_id)

    def _unanswered(self, call_id: str) -> list[Attempt]:
        """The attempt on the wire when the call was cancelled: it was sent (the provider may have it,
        may even have answered), so it is an attempt, `unanswered`, never "nothing was sent"."""
        dep_id = self.calls.sending.get(call_id)
        if dep_id is None:
            return []
        wait = self.calls.pending_wait.get(call_id, 0.0)
        return [Attempt(self.deployment_info(dep_id), "unanswered", round(wait, 4),
                        "sent; no answer had come back when the call was cancelled")]

    def _holding(self, name: str) -> str | None:
        try:
            deps = self.router.get_model_list(model_name=name) or []
        except Exception:  # noqa: BLE001 - only words for an error message
            return None
        return self.gate.holding([str((d.get("model_info") or {}).get("id")) for d in deps])

    def _attempts(self, call_id: str) -> list[Attempt]:
        rows = sorted(self.calls.attempts.get(call_id, []), key=lambda r: r[0])
        out: list[Attempt] = []
        prev_end: float | None = None
        for t0, t1, att in rows:
            gap = max(0.0, t0 - prev_end) if prev_end is not None else 0.0
            att.wait_s = round(max(att.wait_s, gap), 4)  # queue wait, or backoff between tries
            prev_end = t1
            out.append(att)
        return out

    def _retries_left(self, exc: BaseException, name: str, call_id: str) -> int | None:
        """After a 200 without choices (the Router took it for a success, so its retries never ran):
        the num_retries still unspent for this call, when the group has a deployment this call has not
        seen fail; None when it must not be retried."""
        if not (isinstance(exc, ProviderError) and exc.unusable_200):
            return None
        rows = [a for _, _, a in self.calls.attempts.get(call_id, [])]
        left = int(self.router.num_retries or 0) - (len(rows) - 1) - 1
        if left < 0:
            return None
        failed = {a.deployment.deployment_id for a in rows if a.status != "ok" and a.deployment is not None}
        fresh = any(str((d.get("model_info") or {}).get("id")) not in failed
                    for d in self.router.get_model_list(model_name=name) or [])
        return left if fresh else None

    def _completion(self, response: Any, attempts: list[Attempt]) -> Completion:
        hidden = getattr(response, "_hidden_params", None) or {}
        model_id = hidden.get("model_id")
        dep = self.deployment_info(model_id, hidden.get("api_base"), hidden.get("custom_llm_provider"))
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        if not choices or not (getattr(message, "content", None) or getattr(message, "tool_calls", None)
                               or getattr(message, "function_call", None)):
            # the Router took this 200 for a success (no choices, or, from Anthropic's `content: []`, one
            # empty message); the attempt failed, and a retry goes elsewhere
            what = "no choices" if not choices else "an empty message"
            if attempts and attempts[-1].status == "ok":
                attempts[-1].status, attempts[-1].error = "bad_response", f"a 200 response with {what}"
            else:
                attempts.append(Attempt(dep, "bad_response", 0.0, f"a 200 response with {what}"))
            with contextlib.suppress(ProviderError):  # an answer, billed even when unusable
                self._charge(response, attempts[-1], model_id, hidden)
            err = ProviderError("bad_response", f"The provider returned {what}.", unusable_200=True)
            raise err
        if not attempts or attempts[-1].status != "ok":
            attempts.append(Attempt(dep, "ok", 0.0))
        if model_id:
            dep.limits = self.gate.describe(str(model_id)) or None
        tokens, cost_usd = self._charge(response, attempts[-1], model_id, hidden)
        text = getattr(message, "content", None) or ""
        return Completion(response, text, dep, attempts, tokens, cost_usd)

    def _charge(self, response: Any, attempt: Attempt, model_id: Any,
                hidden: Mapping[str, Any]) -> tuple[dict[str, int], float | None]:
        """An answered attempt is paid: its tokens and cost (LiteLLM's `response_cost`, where the price is
        known; None when unknown or when the answer carried no usage). Negative or non-finite usage is a
        `bad_response` (never a credit); the attempt stays paid at an unknown cost."""
        attempt.paid = True
        usage = getattr(response, "usage", None)
        raw = (getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))
        numbers = [v for v in raw if v is not None]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
               for v in numbers):
            attempt.status, attempt.error = "bad_response", f"usage {raw[0]!r} in / {raw[1]!r} out"
            raise ProviderError("bad_response", "The provider reported negative or non-finite token usage.",
                                hint="Its answer was dropped; the call is charged at its reservation.")
        tokens = {"input": int(raw[0] or 0), "output": int(raw[1] or 0)}
        cost = hidden.get("response_cost")
        cost_usd: float | None = None
        if (usage is not None and any(numbers) and isinstance(cost, (int, float)) and math.isfinite(cost)
                and cost >= 0 and self.price_known(model_id)):
            cost_usd = float(cost)
        attempt.cost_usd = cost_usd
        return tokens, cost_usd


def _retrieve_redis_pings() -> None:
    """LiteLLM's RedisCache starts a health ping on the running loop and never awaits it: with Redis
    down, its exception would print "Task exception was never retrieved" on whichever loop built the
    Router (the CLI's, or a host's own, e.g. the MCP server's). Its outcome is retrieved here instead
    (logged at debug): a batch reports the outage itself, every limited task `limiter_unavailable`."""
    try:
        pending = asyncio.all_tasks()
    except RuntimeError:  # no running loop: LiteLLM started no async ping
        return
    for task in pending:
        name = getattr(task.get_coro(), "__qualname__", "")
        if name.rsplit(".", 1)[-1] == "ping" and "Redis" in name:
            task.add_done_callback(_retrieved)


def _retrieved(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("LiteLLM's Redis health ping failed: %s", type(task.exception()).__name__)


def _shared_windows(settings: Mapping[str, Any]) -> Any:
    """Request windows in Redis when router_settings name a Redis server, else in this process."""
    if not (settings.get("redis_host") or settings.get("redis_url")):
        return None
    from ..ratelimit.redis_windows import RedisWindows  # noqa: PLC0415

    return RedisWindows.from_router_settings(settings)
