"""`model: auto`: a task's model chosen from its text by LiteLLM's complexity classifier.

Pure: the classifier itself (LiteLLM's `ComplexityRouter.classify`, local, no API call) lives at the
litellm edge (`routing/auto.py`) and is handed in as a function `text -> (tier, score)`. This module
only says what `auto` is, which text is classified, and maps the tier to the user's ladder:

    delegation:
      auto: {SIMPLE: small, MEDIUM: medium, COMPLEX: large, REASONING: large}   # the default mapping
      # other keys are LiteLLM's complexity_router_config (tier_boundaries, dimension_weights, …)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import ConfigError, DelegateError
from .grammar import ModelSpec

__all__ = ["AUTO", "AUTO_TIERS", "DEFAULT_AUTO_MAP", "AUTO_DOC", "SCORER_KEYS", "AutoPick", "Classify", "is_auto",
           "auto_map", "classifier_options", "task_text", "pick_auto", "unmapped", "check_auto_settings"]

AUTO = "auto"
#: The tiers LiteLLM's local (heuristic) classifier answers with, cheapest first.
AUTO_TIERS = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
DEFAULT_AUTO_MAP: Mapping[str, str] = {"SIMPLE": "small", "MEDIUM": "medium", "COMPLEX": "large",
                                       "REASONING": "large"}
#: One line for the tool schemas.
AUTO_DOC = "`auto` picks a tier per task from its goal and context (a local classifier, no API call)."
#: The classifier: text → (tier, score).
Classify = Callable[[str], "tuple[str, float]"]
#: The complexity_router_config keys that tune LiteLLM's local scorer (`ComplexityRouter.classify`), passed
#: through as they are. Its other keys configure its own routing (tiers, LLM classifiers, adaptive
#: pools, …), which `auto` does not use: they are refused rather than silently ignored.
SCORER_KEYS = ("tier_boundaries", "reasoning_override_min_score", "token_thresholds", "dimension_weights",
               "custom_dimensions", "code_keywords", "reasoning_keywords", "technical_keywords",
               "custom_technical_keywords", "simple_keywords", "classifier_type")


@dataclass(frozen=True)
class AutoPick:
    """What `auto` chose for one task: the classifier's tier and score, and the model string it maps to."""

    tier: str
    score: float
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "score": round(self.score, 4), "model": self.model}


def is_auto(spec: ModelSpec) -> bool:
    """`auto` (or `auto!`, pinned) with no variant or provider: `auto --provider x` is a model id."""
    return spec.name == AUTO and spec.variant is None and spec.provider is None


def auto_map(settings: Mapping[str, Any]) -> dict[str, str]:
    """Tier → model string: the default mapping with the user's tier keys over it."""
    return {**DEFAULT_AUTO_MAP, **{k: v for k, v in settings.items() if k in AUTO_TIERS}}


def classifier_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `delegation.auto` that are LiteLLM's complexity_router_config, passed through."""
    return {k: v for k, v in settings.items() if k not in AUTO_TIERS}


def task_text(goal: str, context: str | None) -> str:
    """What is classified: the goal, then the context (what the worker is sent as the user's ask)."""
    return f"{goal}\n\n{context}" if context else goal


def pick_auto(text: str, classify: Classify, mapping: Mapping[str, str]) -> AutoPick:
    tier, score = classify(text)
    model = mapping.get(tier)
    if not model:
        raise ConfigError(
            f"model auto: the task was classified {tier} (score {score:.3f}), and delegation.auto maps no "
            f"model to {tier}.",
            hint=f"Add `{tier}: <model>` under delegation.auto, or give this task a model.")
    return AutoPick(tier, float(score), model)


def unmapped(pick: AutoPick, exc: DelegateError) -> ConfigError:
    """The typed error for a tier that maps to a model string that does not resolve (a tier not defined)."""
    return ConfigError(
        f"model auto: the task was classified {pick.tier} (score {pick.score:.3f}), which delegation.auto maps "
        f"to {pick.model!r}, and that does not resolve: {exc.message}",
        hint=f"Define {pick.model!r} under delegation.aliases, or map {pick.tier} to a model that exists "
             f"(`delegation.auto: {{{pick.tier}: <model>}}`); or give this task a model.",
        suggestions=exc.suggestions)


def check_auto_settings(value: dict[str, Any]) -> dict[str, Any]:
    """`delegation.auto` validated (a pydantic validator): tier keys name one of AUTO_TIERS and map to a
    model string; lower-case keys are LiteLLM's (checked when the classifier is built), except those that
    would make it call a model or that mean nothing here."""
    for key, val in value.items():
        if key.isupper() or key.upper() in AUTO_TIERS:
            if key not in AUTO_TIERS:
                raise ValueError(f"{key!r} is not a complexity tier; the tiers are {', '.join(AUTO_TIERS)}")
            if not isinstance(val, str) or not val.strip():
                raise ValueError(f"{key} must map to a model string (usually a tier alias such as small)")
        elif key == "tiers":
            raise ValueError("tiers: write the mapping directly under delegation.auto (e.g. SIMPLE: small)")
        elif key not in SCORER_KEYS:
            raise ValueError(f"{key}: model auto uses only LiteLLM's local scorer, so it takes the scorer's "
                             f"complexity_router_config keys ({', '.join(SCORER_KEYS)}) and the tier mapping "
                             f"({', '.join(AUTO_TIERS)})")
        elif key == "classifier_type" and val != "heuristic":
            raise ValueError(f"classifier_type {val!r}: model auto classifies locally, with LiteLLM's heuristic "
                             "scorer (no API call); remove classifier_type or set it to heuristic")
    return value
