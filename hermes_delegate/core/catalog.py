"""LiteLLM's model catalog (`litellm.model_cost`), read as plain data.

The catalog is the JSON file litellm ships (`model_prices_and_context_window_backup.json`), the same
data `litellm.model_cost` holds under LITELLM_LOCAL_MODEL_COST_MAP=True. It is read from disk
without importing litellm, so resolving a name costs milliseconds, not seconds.

Family aliases (`haiku`, `opus`, `glm`, …) resolve to the newest matching chat model of the family's
home provider; the version comes from the catalog, never from this file.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .litellm_providers import LITELLM_PROVIDERS

__all__ = ["Catalog", "Family", "FAMILIES", "default_catalog", "ModelPrice"]

_CHAT_MODES = {"chat", "responses", "completion", None}
_DATED = re.compile(r"\d{6,8}")


@dataclass(frozen=True)
class Family:
    """A built-in alias: the newest model of `provider` whose name matches `pattern`.

    `pattern` must have one group, the version; versions compare numerically part by part
    ("4-5" → (4, 5); "3.1" → (3, 0.1), so 4.20 sorts below 4.7 as its vendor means it)."""

    provider: str
    pattern: str
    prefer_suffix: str = ""  # among equal versions, a name with this suffix wins

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(rf"^{self.pattern}$")


FAMILIES: dict[str, Family] = {
    "haiku": Family("anthropic", r"claude-haiku-(\d+(?:-\d{1,2})?)"),
    "sonnet": Family("anthropic", r"claude-sonnet-(\d+(?:-\d{1,2})?)"),
    "opus": Family("anthropic", r"claude-opus-(\d+(?:-\d{1,2})?)"),
    "claude": Family("anthropic", r"claude-sonnet-(\d+(?:-\d{1,2})?)"),
    "gpt": Family("openai", r"gpt-(\d+(?:\.\d+)?)"),
    "gpt-mini": Family("openai", r"gpt-(\d+(?:\.\d+)?)-mini"),
    "gemini": Family("gemini", r"gemini-(\d+(?:\.\d+)?)-pro(?:-preview)?", prefer_suffix="-pro"),
    "flash": Family("gemini", r"gemini-(\d+(?:\.\d+)?)-flash(?:-preview)?", prefer_suffix="-flash"),
    "grok": Family("xai", r"grok-(\d+(?:\.\d+)?)"),
    "deepseek": Family("deepseek", r"deepseek-v(\d+(?:\.\d+)?)(?:-pro)?", prefer_suffix="-pro"),
    "glm": Family("zai", r"glm-(\d+(?:\.\d+)?)"),
    "kimi": Family("moonshot", r"kimi-k(\d+(?:\.\d+)?)"),
    "qwen": Family("dashscope", r"qwen(\d+(?:\.\d+)?)-max"),
    "llama": Family("meta_llama", r"Llama-(\d+(?:\.\d+)?)-\w+-\w+-\w+-Instruct(?:-FP8)?"),
    "mistral": Family("mistral", r"mistral-large-(\d{1,2})"),
    "minimax": Family("minimax", r"MiniMax-M(\d+(?:\.\d+)?)"),
}


def _version_key(text: str) -> tuple[float, ...]:
    parts: list[float] = []
    for chunk in re.split(r"[-_]", text):
        if "." in chunk:
            major, _, minor = chunk.partition(".")
            parts += [float(major or 0), float(f"0.{minor}") if minor.isdigit() else 0.0]
        elif chunk.isdigit():
            parts.append(float(chunk))
    return tuple(parts)


@dataclass(frozen=True)
class ModelPrice:
    input_per_token: float
    output_per_token: float

    @property
    def per_million(self) -> dict[str, float]:
        return {"input": round(self.input_per_token * 1e6, 6), "output": round(self.output_per_token * 1e6, 6)}


class Catalog:
    """Lookups over a litellm-style model map (`{key: {litellm_provider, mode, prices…}}`)."""

    def __init__(self, entries: Mapping[str, Any]):
        self._entries = {k: v for k, v in entries.items() if isinstance(v, dict) and k != "sample_spec"}
        self._by_bare: dict[str, set[str]] = defaultdict(set)
        self._native: dict[str, str] = {}
        self._by_provider: dict[str, list[str]] = defaultdict(list)
        for key, info in self._entries.items():
            prov = info.get("litellm_provider") or ""
            if prov not in LITELLM_PROVIDERS or info.get("mode") not in _CHAT_MODES:
                continue
            bare = key[len(prov) + 1 :] if key.startswith(prov + "/") else key
            self._by_bare[bare].add(prov)
            self._by_provider[prov].append(bare)
            if bare == key:
                self._native[bare] = prov
        self._family_cache: dict[str, str | None] = {}

    # -- identity ---------------------------------------------------------------------------
    def providers_for(self, bare: str) -> list[str]:
        """Every LiteLLM provider whose catalog serves this bare model id (chat models only)."""
        return sorted(self._by_bare.get(bare, ()))

    def native_provider(self, bare: str) -> str | None:
        """The provider LiteLLM itself would pick for an unprefixed id, if the catalog says."""
        return self._native.get(bare)

    def vendor_form(self, provider: str, bare: str) -> str | None:
        """An aggregator's vendor-prefixed id for a bare one (`openrouter`, `gpt-5` → `openai/gpt-5`),
        when exactly one of the provider's catalog ids is `<vendor>/<bare>`."""
        hits = self.vendor_forms(provider, bare)
        return hits[0] if len(hits) == 1 else None

    def vendor_forms(self, provider: str, bare: str) -> list[str]:
        """Every `<vendor>/<bare>` id of the provider's catalog entries."""
        return sorted(m for m in self._by_provider.get(provider, ()) if m.endswith("/" + bare)
                      and m.count("/") == 1)

    def bare_names(self) -> list[str]:
        return list(self._by_bare)

    def entry(self, model_id: str) -> dict[str, Any] | None:
        """Catalog entry for `provider/model` or a bare id (variant suffixes stripped)."""
        if model_id in self._entries:
            return self._entries[model_id]
        prov, _, rest = model_id.partition("/")
        if rest and rest in self._entries and self._entries[rest].get("litellm_provider") == prov:
            return self._entries[rest]
        if ":" in model_id:
            return self.entry(model_id.rsplit(":", 1)[0])
        return None

    def knows(self, model_id: str) -> bool:
        return self.entry(model_id) is not None

    # -- facts ------------------------------------------------------------------------------
    def price(self, model_id: str) -> ModelPrice | None:
        """Per-token prices, or None when the catalog does not know them (never 0 by default)."""
        e = self.entry(model_id)
        if not e:
            return None
        i, o = e.get("input_cost_per_token"), e.get("output_cost_per_token")
        if i is None or o is None:
            return None
        return ModelPrice(float(i), float(o))

    def context_window(self, model_id: str) -> int | None:
        e = self.entry(model_id)
        if not e:
            return None
        value = e.get("max_input_tokens") or e.get("max_tokens")
        return int(value) if isinstance(value, (int, float)) else None

    # -- families ---------------------------------------------------------------------------
    def family(self, alias: str) -> str | None:
        """`haiku` → `anthropic/claude-haiku-…` (newest in the catalog), or None."""
        if alias in self._family_cache:
            return self._family_cache[alias]
        fam = FAMILIES.get(alias)
        best: tuple[Any, ...] | None = None
        chosen = None
        if fam:
            for bare in self._by_provider.get(fam.provider, ()):
                m = fam.regex.match(bare)
                if not m or _DATED.search(bare):
                    continue
                preferred = bool(fam.prefer_suffix) and bare.endswith(fam.prefer_suffix)
                key = (_version_key(m.group(1)), preferred, -len(bare), bare)
                if best is None or key > best:
                    best, chosen = key, bare
        result = f"{fam.provider}/{chosen}" if fam and chosen else None
        self._family_cache[alias] = result
        return result


def litellm_catalog_path() -> Path | None:
    """Where the installed litellm keeps its bundled model map, found without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model_prices_and_context_window_backup.json"
    return path if path.exists() else None


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The installed litellm's catalog; an empty one when litellm is not installed. When litellm is
    already imported, its own `model_cost` is reused rather than a second copy read from disk."""
    cost = getattr(sys.modules.get("litellm"), "model_cost", None)
    if isinstance(cost, dict) and cost:
        return Catalog(cost)
    path = litellm_catalog_path()
    if path is None:
        return Catalog({})
    with path.open(encoding="utf-8") as fh:
        return Catalog(json.load(fh))
