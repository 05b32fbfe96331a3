"""What the gate knows about one deployment: its slots, holds, token counts and first request.

One `DeploymentState` per deployment, kept by CapacityGate (gate.py) and read by its mixins:
first_request.py (the first request goes alone), learning.py (limits learned from responses) and
tokens.py (tpm: token windows and buckets). `GateState` names, for the type checker, what the mixins
read of each other and of the gate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Mapping, Sequence

from .learned import Adaptive
from .windows import Limits, WindowStore

__all__ = ["DeploymentState", "GateState", "NO_LIMITS"]

#: A deployment with nothing configured: the base learned limits are merged into.
NO_LIMITS = Limits()


@dataclass
class DeploymentState:
    warm: bool = False  # a deployment's first request pays LiteLLM's client setup: send it alone
    in_flight: int = 0  # slots taken through the gate
    sending: int = 0  # requests on the wire, gated or not
    blocked_until: float = 0.0
    tokens: deque[tuple[float, float]] = field(default_factory=deque)
    first_sent: float = 0.0  # when the first request (the probe) was sent; inf: reserved, not sent yet
    probe_by: str | None = None  # the call making (or reserved to make) the first request
    bucket: float = 0.0  # learned tpm: tokens in hand (starts empty: the provider may have counted others)
    bucket_at: float = 0.0
    token_ratio: float = 1.0  # prompt tokens responses reported ÷ what we estimated (learned tpm only)
    completion_avg: float = 0.0  # completion tokens of an uncapped request, as responses reported
    leases: deque[str] = field(default_factory=deque)  # parallel slots held in a shared store
    published_at: float = float("-inf")  # when learned limits were last written to a shared store
    probe_token: str | None = None  # the first request's entry in a shared store's rpm window
    held_by: str = ""  # what made the last admission here wait (rpm, tpm, max_parallel, ...), for `holding`


class GateState:
    """What CapacityGate's mixins share: the attributes the gate sets in its `__init__`, and the
    methods one part calls on another. Declarations only (nothing here at run time but the class)."""

    configured: dict[str, Limits]  # as configured (may be unlimited)
    limits: dict[str, Limits]  # in force: configured or learned
    labels: dict[str, Mapping[str, Any]]  # what a deployment is (group, model), for a shared store
    learn: bool
    adaptive: dict[str, Adaptive]  # a defaultdict
    windows: WindowStore
    clock: Callable[[], float]
    _state: dict[str, DeploymentState]  # a defaultdict
    _reserved: dict[str, set[str]]  # call id -> deployments reserved for its probe (a defaultdict)
    _recalled: set[str]
    _probing: set[int]
    _served: set[int]
    _skipped: set[int]

    if TYPE_CHECKING:  # defined by the gate (gate.py) or another mixin
        def _wake(self) -> None: ...
        def _pad(self, dep_id: str) -> float: ...
        def _background(self, update: Coroutine[Any, Any, None], counting: str | None = None) -> None: ...
        def _restamp(self, dep_id: str) -> None: ...
        def block(self, dep_id: str, seconds: float) -> None: ...
        def limited(self, deployments: Sequence[Mapping[str, Any]]) -> bool: ...
        def tracked(self, dep_id: str) -> bool: ...
        async def _sleep(self, timeout: float | None, event: asyncio.Event | None = None) -> None: ...
        def _deadline(self, ticket: int, now: float) -> float: ...
        def _left(self, deadline: float) -> float | None: ...
        def _bounded(self, wait: float, deadline: float) -> float | None: ...
        def _spend(self, ticket: int, t0: float) -> None: ...
        def _check_deadline(self, deadline: float, group: str, deployments: Sequence[Mapping[str, Any]],
                            soonest: float = 0.0) -> None: ...
        def _not_arrived(self, ticket: int) -> set[int]: ...
        def _apply_learned(self, dep_id: str, ad: Adaptive, *, publish: bool = True) -> None: ...
        def _publish(self, dep_id: str, ad: Adaptive, *, confirmed: bool = False) -> None: ...
