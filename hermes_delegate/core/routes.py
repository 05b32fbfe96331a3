"""LiteLLM's own routing rules, for resolution: model groups, `model_group_alias`, wildcard patterns.

Pure (no litellm import). The rules mirror litellm's Router (1.106):
    * `router_settings.model_group_alias` maps a name to a group (a str, or `{model, hidden}`);
      the Router applies it before anything else.
    * an exact `model_name` is a group.
    * a `model_name` containing `*` is a pattern: `re.escape(name)` with each `*` as `(.*)`,
      matched with `re.match` (anchored at the start only), most specific first (longer pattern,
      then more regex characters) — `PatternMatchRouter` in litellm/router_utils.
A name one of these matches goes to the Router unchanged; the Router picks the deployment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["RouteMatch", "RouteTable", "pattern_to_regex", "thinking_params", "THINKING_BUDGET"]

#: Default `budget_tokens` for `:thinking` on Anthropic (extended thinking needs a budget ≥ 1024).
THINKING_BUDGET = 4096


def pattern_to_regex(pattern: str) -> str:
    """As litellm's PatternMatchRouter.pattern_to_regex."""
    return re.escape(pattern).replace(r"\*", "(.*)")


def _specificity(pattern: str) -> tuple[int, int]:
    chars = ["*", "+", "?", "\\", "^", "$", "|", "(", ")"]
    return len(pattern), sum(pattern.count(c) for c in chars)


@dataclass(frozen=True)
class RouteMatch:
    """How a name reaches a configured route. `group` is the group it lands on (for an alias),
    `pattern` the wildcard `model_name` (for a wildcard)."""

    via: str  # group | group_alias | wildcard
    name: str
    group: str
    pattern: str | None = None


class RouteTable:
    """The configured routes of one config, matched as litellm's Router matches them."""

    def __init__(self, groups: Mapping[str, Any], router_settings: Mapping[str, Any] | None = None):
        self.groups = groups
        raw = (router_settings or {}).get("model_group_alias") or {}
        self.aliases: dict[str, str] = {}
        for alias, item in raw.items() if isinstance(raw, Mapping) else ():
            target = item.get("model") if isinstance(item, Mapping) else item
            if isinstance(target, str) and target:
                self.aliases[str(alias)] = target
        pats = [(pattern_to_regex(name), name) for name in groups if "*" in name]
        # litellm keys patterns by regex and sorts the regexes by specificity (stable for ties)
        self.patterns = sorted(pats, key=lambda p: _specificity(p[0]), reverse=True)

    def match(self, name: str) -> RouteMatch | None:
        if name in self.aliases:
            return RouteMatch("group_alias", name, self.aliases[name])
        if name in self.groups and "*" not in name:
            return RouteMatch("group", name, name)
        return self.wildcard(name)

    def wildcard(self, name: str) -> RouteMatch | None:
        for regex, pattern in self.patterns:
            if re.match(regex, name):
                return RouteMatch("wildcard", name, pattern, pattern)
        return None

    def names(self) -> list[str]:
        return list(self.aliases) + [g for g in self.groups if "*" not in g]


def thinking_params(budget: int = THINKING_BUDGET) -> dict[str, Any]:
    """LiteLLM's `thinking` param (Anthropic extended thinking)."""
    return {"thinking": {"type": "enabled", "budget_tokens": budget}}
