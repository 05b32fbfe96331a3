"""What the gate knows about one deployment: its slots, holds, token counts and first request.

One `DeploymentState` per deployment, kept by CapacityGate (gate.py) and read by its mixins:
first_request.py (the first request goes alone), learning.py (limits learned from responses) and
tokens.py (tpm: token windows and buckets).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .windows import Limits

__all__ = ["DeploymentState", "NO_LIMITS"]

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
