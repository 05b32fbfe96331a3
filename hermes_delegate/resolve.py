"""Resolution policy: what a parsed model string means.

Order (first hit wins):
    1. user aliases and tiers (config `delegation.aliases`; the value is itself a model string)
    2. Router model-group names (config `router.model_list`, or the groups of a `remote` proxy)
    3. built-in family aliases (`haiku`, `opus`, `glm`, … → newest in the catalog)
    4. full LiteLLM ids `provider/model…` (prefix in litellm.provider_list)
    5. bare ids, looked up in the catalog (`glm-4.7` → `zai/glm-4.7`)
`--provider SLUG` short-cuts to `<prefix>/<NAME>` (NAME may itself be a family alias).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .catalog import FAMILIES, Catalog, default_catalog
from .config import Config, Deployment
from .credentials import deployment_provider
from .errors import AmbiguousModelError, ConfigError, SpecError, UnknownModelError
from .providers import FIRST_PARTY, credential_envs, has_credentials, is_litellm_provider, provider_for_slug
from .spec import ModelSpec, parse_model_string

__all__ = ["Resolution", "Resolver", "TIER_NAMES"]

TIER_NAMES = frozenset({"tiny", "small", "medium", "large", "xlarge", "xl"})
_MAX_DEPTH = 16


@dataclass(frozen=True)
class Resolution:
    """What a model string resolved to. `model` is what the Router is called with."""

    input: str
    model: str
    provider: str | None
    variant: str | None
    resolved_via: str  # alias | tier | group | family | litellm_id | catalog | provider_flag
    chain: tuple[str, ...]
    is_group: bool = False
    api_base: str | None = field(default=None, compare=False)
    key_env: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "model": self.model,
            "provider": self.provider,
            "variant": self.variant,
            "resolved_via": self.resolved_via,
            "chain": list(self.chain),
        }


def _with_variant(name: str, variant: str | None) -> str:
    return f"{name}:{variant}" if variant else name


class Resolver:
    """Resolves model strings against one config. Results are cached per input string."""

    def __init__(self, config: Config | None = None, *, catalog: Catalog | None = None,
                 env: Mapping[str, str] | None = None):
        self.config = config or Config()
        self._catalog = catalog
        self.env = os.environ if env is None else env
        self.aliases = dict(self.config.delegation.aliases)
        self._groups: dict[str, list[Deployment]] | None = None
        self._cache: dict[str, Resolution] = {}

    @property
    def groups(self) -> dict[str, list[Deployment]]:
        """Router model groups (a remote proxy's are listed on first use, not at construction)."""
        if self._groups is None:
            self._groups = self.config.groups()
        return self._groups

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = default_catalog()
        return self._catalog

    # -- public -----------------------------------------------------------------------------
    def resolve(self, text: str) -> Resolution:
        hit = self._cache.get(text) if isinstance(text, str) else None
        if hit is not None:
            return hit
        res = self._resolve(parse_model_string(text), (), 0)
        self._cache[text] = res
        return res

    def names(self) -> dict[str, list[str]]:
        """Every name an agent may use, by kind."""
        return {"aliases": sorted(self.aliases), "groups": list(self.groups), "families": sorted(FAMILIES)}

    def group_provider(self, group: str) -> str | None:
        provs = {self._deployment_provider(d.litellm_params) for d in self.groups.get(group, [])}
        return provs.pop() if len(provs) == 1 else ("mixed" if provs else None)

    # -- steps ------------------------------------------------------------------------------
    def _resolve(self, spec: ModelSpec, chain: tuple[str, ...], depth: int) -> Resolution:
        base = spec.base
        chain = chain + (spec.raw.strip(),)
        if depth > _MAX_DEPTH:
            raise ConfigError(f"Alias chain too deep: {' -> '.join(chain)}.")
        if spec.provider:
            return self._with_provider(spec, chain)
        for key in (base, spec.name):
            if key in self.aliases:
                return self._alias(key, spec, chain, depth)
        if base in self.groups:
            return Resolution(spec.raw, base, self.group_provider(base), spec.variant, "group", chain + (base,),
                              is_group=True)
        if spec.name in FAMILIES:
            fam_id = self.catalog.family(spec.name)
            if fam_id:
                prov = fam_id.split("/", 1)[0]
                model = _with_variant(fam_id, spec.variant)
                return Resolution(spec.raw, model, prov, spec.variant, "family", chain + (model,))
        prefix, _, rest = spec.name.partition("/")
        if rest and is_litellm_provider(prefix):
            model = _with_variant(spec.name, spec.variant)
            return Resolution(spec.raw, model, prefix, spec.variant, "litellm_id", chain + (model,))
        return self._from_catalog(spec, chain)

    def _alias(self, key: str, spec: ModelSpec, chain: tuple[str, ...], depth: int) -> Resolution:
        target = self.aliases[key]
        if any(step == target.strip() for step in chain):
            raise ConfigError(
                f"Alias cycle: {' -> '.join(chain + (target.strip(),))}.",
                hint=f"Point delegation.aliases.{key} at a model id, not back at another alias in the cycle.",
            )
        try:
            inner_spec = parse_model_string(target)
        except SpecError as exc:
            raise ConfigError(f"delegation.aliases.{key}: {exc.message}", hint=exc.hint,
                              suggestions=exc.suggestions) from None
        if spec.variant and key != spec.base and not inner_spec.variant:
            inner_spec = ModelSpec(inner_spec.raw, inner_spec.name, spec.variant, inner_spec.provider)
        inner = self._resolve(inner_spec, chain, depth + 1)
        via = "tier" if key in TIER_NAMES else "alias"
        return Resolution(spec.raw, inner.model, inner.provider, inner.variant, via, inner.chain,
                          inner.is_group, inner.api_base, inner.key_env)

    def _with_provider(self, spec: ModelSpec, chain: tuple[str, ...]) -> Resolution:
        info = provider_for_slug(spec.provider or "")
        name = spec.name
        if name in self.aliases or name in self.groups:
            raise SpecError(
                f"{name!r} is a configured {'alias' if name in self.aliases else 'model group'}; "
                "it already names its provider.",
                hint=f"Drop --provider, or give a model id: `<model> --provider {spec.provider}`.",
                suggestions=[name],
            )
        if name in FAMILIES:
            fam_id = self.catalog.family(name)
            if fam_id:  # `haiku --provider openrouter` → openrouter/anthropic/claude-haiku-…
                home, _, bare = fam_id.partition("/")
                name = bare if home == info.prefix else fam_id
        if not name.startswith(info.prefix + "/"):
            name = f"{info.prefix}/{name}"
        model = _with_variant(name, spec.variant)
        return Resolution(spec.raw, model, info.prefix, spec.variant, "provider_flag", chain + (model,),
                          api_base=info.api_base, key_env=info.key_env)

    def _from_catalog(self, spec: ModelSpec, chain: tuple[str, ...]) -> Resolution:
        cands = self.catalog.providers_for(spec.name)
        if not cands and spec.name in TIER_NAMES:
            tiers = [a for a in self.aliases if a in TIER_NAMES]
            raise UnknownModelError(f"Tier {spec.base!r} is not configured.",
                                    hint=f"Configured tiers: {', '.join(tiers) or 'none'} (delegation.aliases).",
                                    suggestions=tiers)
        if not cands:
            raise UnknownModelError(
                f"Unknown model {spec.base!r}.",
                hint=self._unknown_hint(spec),
                suggestions=self.suggest(spec.name),
            )
        chosen = cands[0] if len(cands) == 1 else self._disambiguate(spec, cands)
        model = _with_variant(f"{chosen}/{spec.name}", spec.variant)
        return Resolution(spec.raw, model, chosen, spec.variant, "catalog", chain + (model,))

    def _disambiguate(self, spec: ModelSpec, cands: list[str]) -> str:
        keyed = [p for p in cands
                 if (credential_envs(p) and has_credentials(p, self.env)) or self._configured(p)]
        pool = keyed or cands
        if len(pool) == 1:
            return pool[0]
        native = self.catalog.native_provider(spec.name)
        if native in pool:
            return native
        first_party = [p for p in pool if p in FIRST_PARTY]
        if len(first_party) == 1:
            return first_party[0]
        options = [f"{spec.base} --provider {p}" for p in pool]
        raise AmbiguousModelError(
            f"{spec.base!r} is served by several providers ({', '.join(pool)}).",
            hint="Name one with --provider, or set that provider's API key.",
            suggestions=options,
        )

    def _configured(self, prefix: str) -> bool:
        return any(self._deployment_provider(d.litellm_params) == prefix
                   for deps in self.groups.values() for d in deps)

    _deployment_provider = staticmethod(deployment_provider)

    def _unknown_hint(self, spec: ModelSpec) -> str:
        prefix = spec.name.split("/", 1)[0]
        if "/" in spec.name and not is_litellm_provider(prefix):
            return (f"{prefix!r} is not a LiteLLM provider. For an aggregator id, add the provider: "
                    f"`{spec.base} --provider openrouter`.")
        return "Use a configured alias or group, a family alias (haiku, sonnet, opus, gpt, glm, …), or provider/model."

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Nearest valid names, user-defined first."""
        own = list(self.aliases) + list(self.groups) + list(FAMILIES)
        out = difflib.get_close_matches(name, own, n=n, cutoff=0.6)
        if len(out) < n:
            more = difflib.get_close_matches(name, self.catalog.bare_names(), n=n, cutoff=0.75)
            out += [m for m in more if m not in out]
        if "/" in name and is_litellm_provider(name.split("/", 1)[0]) is False:
            out.append(f"{name} --provider openrouter")
        return out[:n + 1]
