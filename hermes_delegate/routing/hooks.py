"""What we hang on litellm's callback points, filed by our per-call id:

- `async_filter_deployments` (awaited by the Router after its cooldown filter): wait in the
  CapacityGate's queue until a healthy deployment has room, and offer the Router only that one;
  while a deployment has not answered yet, offer every one the Router may choose except those
  whose first request is still out (`admit_unknown`);
- `async_pre_call_deployment_hook` and `log_pre_api_call` (litellm's last step before the HTTP
  client): the request is leaving; its rpm window slot is counted from then (CapacityGate.sent,
  CapacityGate.on_wire);
- per-attempt success/failure deployment hooks: release the slot; hand the gate the response's
  rate-limit headers (it learns limits nobody configured) and status (a 429 holds the deployment
  for its Retry-After, and adapts the pace of one that states no limits);
- the same per-attempt hooks (awaited inline on every try, unlike the deduplicated request-level
  log events): one Attempt row (deployment, status, wait) per try.
"""

from __future__ import annotations

import time
from collections import abc
from typing import TYPE_CHECKING, Any, Awaitable, Mapping, Protocol, cast

from ..core.results import Attempt
from ..ratelimit.headers import headers_of
from ._litellm import exception_text

if TYPE_CHECKING:
    from litellm.types.llms.openai import AllMessageValues
    from litellm.types.utils import CallTypes, LLMResponseTypes

    from ..core.results import DeploymentInfo
    from ..ratelimit.gate import CapacityGate
    from ..ratelimit.windows import TokenEstimate

__all__ = ["CallLog", "make_hooks", "install_dispatcher", "register_call", "unregister_call", "META_KEY"]

META_KEY = "hermes_delegate_call"


def _call_id(data: Mapping[str, Any] | None) -> str | None:
    if not data:
        return None
    found = (data.get("metadata") or {}).get(META_KEY)  # asked several times per request: the cheap place first
    return found or ((data.get("litellm_params") or {}).get("metadata") or {}).get(META_KEY)


def _id_in(src: Any) -> str | None:
    if type(src) is dict or isinstance(src, abc.Mapping):  # litellm's are dicts: no ABC check for them
        found = src.get("id")
        return str(found) if found else None
    return None


def _model_id(data: Mapping[str, Any]) -> str | None:
    return (_id_in(data.get("model_info")) or _id_in((data.get("metadata") or {}).get("model_info"))
            or _id_in((data.get("litellm_params") or {}).get("model_info")))


class CallLog:
    """Per-call state: attempts so far, slots held, and the queue wait not yet given to an attempt."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[tuple[float, float, Attempt]]] = {}
        self.held: dict[str, list[str]] = {}
        self.pending_wait: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.ticket: dict[str, int] = {}  # the order calls were made in: the gate's FIFO order
        self.sending: dict[str, str] = {}  # call id -> the deployment its current attempt is on the wire to
        self.estimated: dict[str, Any] = {}  # call id -> the TokenEstimate the gate counted for it
        self._next = 0

    def open(self, call_id: str) -> None:
        self.attempts[call_id] = []
        self.held[call_id] = []
        self.ticket[call_id] = self._next
        self._next += 1

    def close(self, call_id: str) -> list[str]:
        self.attempts.pop(call_id, None)
        self.pending_wait.pop(call_id, None)
        self.started.pop(call_id, None)
        self.ticket.pop(call_id, None)
        self.estimated.pop(call_id, None)
        return self.held.pop(call_id, [])


class HookedHandle(Protocol):
    """What the hooks use of the handle they serve (a router.RouterHandle; router imports this
    module, so the type is named here, not imported from there)."""

    calls: CallLog
    gate: CapacityGate

    def deployment_info(self, model_id: str | None, api_base: str | None = None,
                        provider: str | None = None) -> DeploymentInfo: ...

    def status_of(self, exc: BaseException | None) -> str: ...

    def estimate_tokens(self, messages: Any, request_kwargs: Mapping[str, Any] | None) -> TokenEstimate: ...


class CallHooks(Protocol):
    """What the dispatcher hands a call's litellm callbacks to, with the call's id worked out once
    (make_hooks()). Plain functions where nothing is awaited: a hook layer of coroutines per call
    was a measurable share of the engine's own cost per request."""

    def filter_now(self, call_id: str, healthy_deployments: list[Any]) -> list[Any] | None:
        """The deployments to offer, when the gate has nothing to wait for (None: `filter_wait`)."""
        ...

    async def filter_wait(self, call_id: str, model: str, healthy_deployments: list[Any],
                          messages: list[AllMessageValues] | None,
                          request_kwargs: dict[str, Any] | None) -> list[dict[str, Any]]: ...

    def pre_call(self, call_id: str, kwargs: Mapping[str, Any]) -> Awaitable[None] | None: ...

    def on_wire(self, call_id: str) -> None: ...

    def on_success(self, call_id: str, request_data: Mapping[str, Any], response: Any) -> None: ...

    def on_failure(self, call_id: str, request_data: Mapping[str, Any], exception: BaseException) -> None: ...


def make_hooks(handle: HookedHandle) -> CallHooks:
    """The hooks of one RouterHandle's calls."""
    log, gate = handle.calls, handle.gate
    gate.outstanding = log.ticket.values

    def record(call_id: str, data: Mapping[str, Any], dep_id: str | None, exc: BaseException | None) -> float | None:
        """One Attempt row; returns the attempt's round trip (None when unknown)."""
        rows = log.attempts.get(call_id)
        if rows is None:
            return None
        lp = data.get("litellm_params") or {}
        dep = handle.deployment_info(dep_id, data.get("api_base") or lp.get("api_base"),
                                     data.get("custom_llm_provider") or lp.get("custom_llm_provider"))
        t1 = time.time()
        t0 = log.started.pop(call_id, t1)
        wait = log.pending_wait.pop(call_id, 0.0)
        if exc is None:
            rows.append((t0, t1, Attempt(dep, "ok", round(wait, 4))))
        else:
            rows.append((t0, t1, Attempt(dep, handle.status_of(exc), round(wait, 4), exception_text(exc))))
        return t1 - t0 if t0 < t1 else None

    def release(call_id: str, dep_id: str | None, exc: BaseException | None, answer: Any,
                latency_s: float | None) -> None:
        if dep_id is None:
            return
        if log.sending.get(call_id) == dep_id:
            del log.sending[call_id]
            gate.finished(dep_id)
        status = 200 if exc is None else getattr(exc, "status_code", None)
        # learn first: a first request's release then counts it in the windows of the limits it taught
        gate.observe(dep_id, headers_of(answer if exc is None else exc),
                     status=status if isinstance(status, int) else None, latency_s=latency_s)
        if exc is None and call_id in log.estimated:
            usage = getattr(answer, "usage", None)
            gate.used_tokens(dep_id, log.estimated[call_id], float(getattr(usage, "prompt_tokens", 0) or 0),
                             float(getattr(usage, "completion_tokens", 0) or 0))
        gate.forget_call(call_id)
        held = log.held.get(call_id)
        if held and dep_id in held:
            held.remove(dep_id)
            gate.release(dep_id)

    def not_failed(call_id: str, deployments: list[Any]) -> list[Any]:
        """A retry goes to a deployment this call has not seen fail, while the group has one: the
        Router's own retry picks at random and may hit the failing deployment again and again."""
        rows = log.attempts.get(call_id)
        if not rows or not isinstance(deployments, list):
            return deployments
        failed = {a.deployment.deployment_id for _, _, a in rows if a.status != "ok" and a.deployment is not None}
        if not failed:
            return deployments
        fresh = [d for d in deployments if str((d.get("model_info") or {}).get("id")) not in failed]
        return fresh or deployments

    class Hooks:
        def filter_now(self, call_id: str, healthy_deployments: list[Any]) -> list[Any] | None:
            healthy_deployments = not_failed(call_id, healthy_deployments)
            if call_id not in log.held or gate.free(healthy_deployments):
                return healthy_deployments  # nothing for the gate to do: no limits, none to learn, no hold
            return None

        async def filter_wait(self, call_id: str, model: str, healthy_deployments: list[Any],
                              messages: list[AllMessageValues] | None,
                              request_kwargs: dict[str, Any] | None) -> list[dict[str, Any]]:
            healthy_deployments = not_failed(call_id, healthy_deployments)
            if gate.unknown(healthy_deployments):
                await gate.recall(healthy_deployments)  # what another process learned (shared store)
            if not gate.limited(healthy_deployments) and gate.unknown(healthy_deployments):
                # the Router still chooses; a deployment's first request goes alone
                offered = await gate.admit_unknown(call_id, healthy_deployments, log.ticket.get(call_id))
                if offered is not None:  # litellm's own deployment dicts, which the gate only reads
                    return cast("list[dict[str, Any]]", offered)
            if not (gate.limited(healthy_deployments) or gate.blocked(healthy_deployments)):
                return healthy_deployments
            est = log.estimated[call_id] = handle.estimate_tokens(messages, request_kwargs)
            dep, waited, slot = await gate.acquire(model, healthy_deployments, est, ticket=log.ticket.get(call_id))
            dep_id = str((dep.get("model_info") or {}).get("id"))
            if slot:
                log.held[call_id].append(dep_id)
            log.pending_wait[call_id] = log.pending_wait.get(call_id, 0.0) + waited
            return [cast("dict[str, Any]", dep)]  # one of litellm's own deployment dicts

        def pre_call(self, call_id: str, kwargs: Mapping[str, Any]) -> Awaitable[None] | None:
            if call_id not in log.attempts:
                return None
            log.started[call_id] = time.time()
            dep_id = _model_id(kwargs)
            if dep_id is None:
                return None
            left = log.sending.pop(call_id, None)
            if left is not None:  # an attempt the hooks never heard back from
                gate.finished(left)
            log.sending[call_id] = dep_id
            gate.picked(call_id, dep_id)
            return gate.sent(dep_id, call_id)

        def on_wire(self, call_id: str) -> None:
            if gate.awaits_wire():  # only requests to limited deployments are counted again at the wire
                gate.on_wire(call_id)

        def on_success(self, call_id: str, request_data: Mapping[str, Any], response: Any) -> None:
            dep_id = _model_id(request_data)
            release(call_id, dep_id, None, response, record(call_id, request_data, dep_id, None))

        def on_failure(self, call_id: str, request_data: Mapping[str, Any], exception: BaseException) -> None:
            dep_id = _model_id(request_data)
            release(call_id, dep_id, exception, None, record(call_id, request_data, dep_id, exception))

    return Hooks()


# One process-wide callback forwards to the hooks of the handle that made the call. litellm.callbacks is
# global: a Hooks instance per RouterHandle there would keep every handle (its Router, gate and logs)
# alive forever, and every call would walk the hooks of every Delegator ever built.
_ACTIVE: dict[str, CallHooks] = {}  # call id -> make_hooks() of the RouterHandle making that call
_DISPATCH: Any = None


def register_call(call_id: str, hooks: CallHooks) -> None:
    _ACTIVE[call_id] = hooks


def unregister_call(call_id: str) -> None:
    _ACTIVE.pop(call_id, None)


def install_dispatcher(litellm: Any) -> None:
    """Put the single forwarding CustomLogger in litellm.callbacks (idempotent)."""
    global _DISPATCH
    if _DISPATCH is None:
        from litellm.integrations.custom_logger import CustomLogger  # noqa: PLC0415

        def hooks_for(data: Mapping[str, Any] | None) -> tuple[str, CallHooks] | None:
            """The call's id and the hooks of the handle that made it (None: not one of our calls)."""
            call_id = _call_id(data)
            hooks = _ACTIVE.get(call_id) if call_id is not None else None
            return None if hooks is None or call_id is None else (call_id, hooks)

        class Dispatch(CustomLogger):
            async def async_filter_deployments(self, model: str, healthy_deployments: list[Any],
                                               messages: list[AllMessageValues] | None,
                                               request_kwargs: dict[str, Any] | None = None,
                                               parent_otel_span: object = None,  # noqa: ARG002 - litellm's signature
                                               ) -> list[dict[str, Any]]:
                found = hooks_for(request_kwargs)
                if found is None:
                    return healthy_deployments
                call_id, h = found
                now = h.filter_now(call_id, healthy_deployments)
                if now is not None:
                    return now
                return await h.filter_wait(call_id, model, healthy_deployments, messages, request_kwargs)

            async def async_pre_call_deployment_hook(self, kwargs: dict[str, object],
                                                     call_type: CallTypes | None,  # noqa: ARG002 - litellm's signature
                                                     ) -> dict[str, Any] | None:
                found = hooks_for(kwargs)
                pending = found[1].pre_call(found[0], kwargs) if found is not None else None
                if pending is not None:
                    await pending
                return None

            def log_pre_api_call(self, model: Any, messages: Any,  # noqa: ARG002 - litellm's signature
                                 kwargs: Mapping[str, Any]) -> None:
                # litellm's last stop before the HTTP client (Logging.pre_call): the wire time
                found = hooks_for(kwargs)
                if found is not None:
                    found[1].on_wire(found[0])

            async def async_post_call_success_deployment_hook(
                    self, request_data: dict[str, Any], response: LLMResponseTypes,
                    call_type: CallTypes | None,  # noqa: ARG002 - litellm's signature
            ) -> LLMResponseTypes | None:
                found = hooks_for(request_data)
                if found is not None:
                    found[1].on_success(found[0], request_data, response)
                return None

            async def async_post_call_failure_deployment_hook(
                    self, request_data: Mapping[str, object], exception: Exception,
                    call_type: CallTypes | None,  # noqa: ARG002 - litellm's signature
                    fallback_depth: int | None = None,  # noqa: ARG002 - litellm's signature
            ) -> None:
                found = hooks_for(request_data)
                if found is not None:
                    found[1].on_failure(found[0], request_data, exception)

        _DISPATCH = Dispatch()
    if not any(cb is _DISPATCH for cb in (litellm.callbacks or [])):
        litellm.callbacks = [*(litellm.callbacks or []), _DISPATCH]
