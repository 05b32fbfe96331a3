"""`model: auto`'s classifier: LiteLLM's complexity classifier, local (no API call), built on first use.

The planner (pure) gets it as a function `text -> (tier, score)`; building it imports litellm (seconds
the first time, free once litellm is loaded: the Router's import loads the classifier too), so a
Delegator builds it only when a task asks for `auto`, or in its warm-up.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from ..core.auto import classifier_options
from ..core.errors import ConfigError
from ._litellm import complexity_router

__all__ = ["AutoClassifier"]


class AutoClassifier:
    """`classify(text) -> (tier, score)` with LiteLLM's `ComplexityRouter.classify`; thread-safe, built once.
    `settings` is `delegation.auto` (its non-tier keys are LiteLLM's complexity_router_config)."""

    def __init__(self, settings: Mapping[str, Any]):
        self.options = classifier_options(settings)
        self._router: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._router is not None

    def build(self) -> Any:
        if self._router is None:
            with self._lock:
                if self._router is None:
                    try:
                        self._router = complexity_router(dict(self.options))
                    except ValueError as exc:  # LiteLLM's config model refused it (pydantic's ValidationError)
                        first = str(exc).strip().splitlines()
                        raise ConfigError(
                            f"delegation.auto: LiteLLM's complexity_router_config refused it: "
                            f"{' '.join(first[:3])[:400]}",
                            hint="Fix or remove the key named (see LiteLLM's complexity router docs), or drop "
                                 "the LiteLLM keys and keep only the tier mapping.") from None
        return self._router

    def __call__(self, text: str) -> tuple[str, float]:
        tier, score, _signals = self.build().classify(text)
        return str(getattr(tier, "value", tier)), float(score)
