"""Resolution policy: what a parsed model string means.

Order (first hit wins):
    1. user aliases and tiers (config `delegation.aliases`; the value is itself a model string)
    2. Router model-group names (config `router.model_list`, or the groups of a `remote` proxy)
    3. built-in family aliases (`haiku`, `opus`, `glm`, … → newest in the catalog)
    4. full LiteLLM ids `provider/model…` (prefix in litellm.provider_list)
    5. bare ids, looked up in the catalog (`glm-4.7` → `zai/glm-4.7`)
`--provider SLUG` short-cuts to `<prefix>/<NAME>` (NAME may itself be a family alias).

Remote mode (`remote:`) without `remote.allow_direct`: a name must land on a proxy group (directly,
through an alias or tier, a `model_group_alias`, or one of the proxy's wildcard routes); anything
else (a family, a LiteLLM id, a catalog id) is refused, so no task goes around the proxy.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from .catalog import FAMILIES, Catalog, default_catalog
from .config import Config, Deployment
from .config_values import deployment_problems
from .credentials import deployment_provider, unset_refs
from .errors import AmbiguousModelError, ConfigError, DelegateError, ProviderError, SpecError, UnknownModelError
from .routes import THINKING_BUDGET, RouteMatch, RouteTable, thinking_params
from .providers import (FIRST_PARTY, VENDOR_PREFIXED, aggregator_vendor, credential_envs, has_credentials,
                        is_litellm_provider, provider_for_slug)
from .grammar import ModelSpec, parse_model_string

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
    resolved_via: str  # alias | tier | group | group_alias | wildcard | family | litellm_id | catalog | provider_flag
    chain: tuple[str, ...]
    is_group: bool = False  # a configured route (group, group_alias, wildcard): the Router is called with `model`
    api_base: str | None = field(default=None, compare=False)
    key_env: str | None = field(default=None, compare=False)
    pattern: str | None = None  # the wildcard model_name, or the group a model_group_alias names
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)  # request params (a mapped variant)
    pinned: bool = False  # written with a trailing `!` (here or in an alias it went through): never downgraded

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input": self.input,
            "model": self.model,
            "provider": self.provider,
            "variant": self.variant,
            "resolved_via": self.resolved_via,
            "chain": list(self.chain),
        }
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.params:
            out["params"] = dict(self.params)
        if self.pinned:
            out["pinned"] = True
        return out


def _with_variant(name: str, variant: str | None) -> str:
    return f"{name}:{variant}" if variant else name


class Resolver:
    """Resolves model strings against one config. Results are cached per input string."""

    def __init__(self, config: Config | None = None, *, catalog: Catalog | None = None,
                 env: Mapping[str, str] | None = None,
                 model_list: Callable[[], Sequence[Deployment]] | None = None):
        """`model_list` is where the deployments come from when not from the config itself (a remote
        proxy's groups: `sources.groups.resolver_for`); it is called once, on first use, and a failure
        propagates and is asked again next time. The Resolver never fetches anything itself."""
        self.config = config or Config()
        self._model_list_source = model_list
        self._catalog = catalog
        # the config's environment_variables over the given (or process) env, as LiteLLM's proxy reads them
        self.env = self.config.env_lookup(os.environ if env is None else env)
        self.aliases = dict(self.config.delegation.aliases)
        self._model_list: list[Deployment] | None = None
        self._groups: dict[str, list[Deployment]] | None = None
        self._routes: RouteTable | None = None
        self._cache: dict[str, Resolution] = {}

    @property
    def model_list(self) -> list[Deployment]:
        """Every deployment, in file order: the config's, or those its `model_list` source gave."""
        if self._model_list is None:
            source = self._model_list_source
            self._model_list = list(source() if source is not None else self.config.router.model_list)
        return self._model_list

    @property
    def groups(self) -> dict[str, list[Deployment]]:
        """Router model groups, in file order."""
        if self._groups is None:
            out: dict[str, list[Deployment]] = {}
            for dep in self.model_list:
                out.setdefault(dep.model_name, []).append(dep)
            self._groups = out
        return self._groups

    @property
    def routes(self) -> RouteTable:
        """Groups, model_group_alias and wildcard patterns, matched by LiteLLM's rules."""
        if self._routes is None:
            self._routes = RouteTable(self.groups, self.config.router.router_settings)
        return self._routes

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = default_catalog()
        return self._catalog

    # -- public -----------------------------------------------------------------------------
    def resolve_or_error(self, name: str) -> dict[str, Any]:
        """`resolve(name).to_dict()`, or `{input, error}` when it does not resolve (listings, doctor)."""
        try:
            return self.resolve(name).to_dict()
        except DelegateError as exc:
            return {"input": name, "error": str(exc)}

    def resolve(self, text: str) -> Resolution:
        hit = self._cache.get(text) if isinstance(text, str) else None
        if hit is not None:
            return hit
        spec = parse_model_string(text)
        if not self.proxy_only:
            res = self._settle(self._resolve(spec, (), 0))
        else:
            try:
                res = self._settle(self._resolve(spec, (), 0))
            except (UnknownModelError, AmbiguousModelError):
                raise self._not_a_proxy_group(text, None) from None
            if not res.is_group:
                raise self._not_a_proxy_group(text, res)
        self._cache[text] = res
        return res

    @property
    def proxy_only(self) -> bool:
        """Remote mode without `remote.allow_direct`: every name must reach one of the proxy's groups."""
        remote = self.config.remote
        return remote is not None and not remote.allow_direct

    def _not_a_proxy_group(self, text: str, res: Resolution | None) -> UnknownModelError:
        name = text.strip()
        own = [*self.aliases, *self.routes.aliases, *(g for g in self.groups if "*" not in g)]
        suggestions = difflib.get_close_matches(name, own, n=3, cutoff=0.5)
        tail = name.split(" ", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
        suggestions += [m for m in difflib.get_close_matches(tail, own, n=3, cutoff=0.5) if m not in suggestions]
        groups = [g for g in self.groups if "*" in g] + [g for g in self.groups if "*" not in g]
        shown = ", ".join(groups[:20]) + (f" and {len(groups) - 20} more" if len(groups) > 20 else "")
        url = urlsplit(self.config.remote.base_url if self.config.remote else "")
        where = f"{url.scheme}://{url.hostname or ''}{f':{url.port}' if url.port else ''}{url.path}"
        went = f" (it would go to {res.model} directly, via {res.resolved_via})" if res is not None else ""
        return UnknownModelError(
            f"{name!r} is not a model group of the LiteLLM proxy at {where}{went}. In remote mode every task "
            "goes through the proxy: nothing was sent.",
            hint=f"Name one of the proxy's groups ({shown or 'it lists none'}), or an alias of one. To send "
                 "names that are not proxy groups directly to their providers with this machine's keys, "
                 "set remote.allow_direct: true.",
            suggestions=suggestions[:3])

    def names(self) -> dict[str, list[str]]:
        """Every name an agent may use, by kind (remote mode without allow_direct: no families)."""
        return {"aliases": sorted(self.aliases), "groups": [g for g in self.groups if "*" not in g],
                "group_aliases": sorted(self.routes.aliases),
                "wildcards": [p for _, p in self.routes.patterns],
                "families": [] if self.proxy_only else list(FAMILIES)}  # catalog order

    def group_provider(self, group: str) -> str | None:
        provs = {self._deployment_provider(d.litellm_params) for d in self.groups.get(group, [])}
        return provs.pop() if len(provs) == 1 else ("mixed" if provs else None)

    def reachable_params(self, res: Resolution) -> list[Mapping[str, Any]]:
        """The configured `litellm_params` a resolution can be served by (empty: an implicit id)."""
        if res.is_group:
            group = res.pattern if res.resolved_via in ("wildcard", "group_alias") else res.model
            return [d.litellm_params for d in self.groups.get(group or "", [])]
        borrowed = self.config.params_for_model(res.model)
        return [borrowed] if borrowed is not None else []

    def check_callable(self, res: Resolution) -> None:
        """Refuse (config) a resolution that can reach a deployment with a bad value (config_values).
        Refuse (auth) a resolution whose every configured deployment has an unset `os.environ/`
        reference, or an implicit id whose own key variable (`--provider nous` → NOUS_API_KEY) is unset:
        LiteLLM would otherwise substitute its own default key or public endpoint, or send the literal
        reference as the key. Planning lists it as that task's problem."""
        params = self.reachable_params(res)
        broken = [problem for i, dep in enumerate(self.model_list) if any(dep.litellm_params is p for p in params)
                  for problem in deployment_problems(dep.litellm_params, f"router.model_list[{i}].litellm_params",
                                                     self.env)]
        if broken:  # a port out of range, a URL that is not one, a timeout that is not a number
            raise ConfigError(f"{res.input.strip()!r} can reach a deployment whose config is wrong: "
                              f"{'; '.join(broken)}.",
                              hint="Fix the named key in the config (or remove that deployment); nothing was sent.")
        missing = [unset_refs(p, self.env) for p in params]
        if params and all(missing):
            names = sorted({n for m in missing for n in m})
            raise ProviderError(
                "auth", f"{res.input.strip()!r} can only reach deployments whose os.environ/ reference is "
                f"not set: {', '.join(names)}.",
                hint=f"Set {names[0]} (export it, or define it under environment_variables: in the LiteLLM "
                     "config), or correct the os.environ/ reference in the config; no other key or endpoint "
                     "is used in its place.")
        if not params and not res.is_group and res.key_env and not self.env.get(res.key_env):
            raise ProviderError(
                "auth", f"{res.input.strip()!r} needs its key in {res.key_env}, which is not set.",
                hint=f"Set {res.key_env} (export it, or define it under environment_variables: in the "
                     "LiteLLM config); no other key is sent in its place.")

    # -- steps ------------------------------------------------------------------------------
    def _resolve(self, spec: ModelSpec, chain: tuple[str, ...], depth: int) -> Resolution:
        if spec.pinned:  # `opus!` means opus, pinned (also through an alias whose value is pinned)
            return replace(self._resolve(spec.unpinned(), chain, depth), pinned=True)
        base = spec.base
        chain = chain + (spec.raw.strip(),)
        if depth > _MAX_DEPTH:
            raise ConfigError(f"Alias chain too deep: {' -> '.join(chain)}.")
        if spec.provider:
            return self._with_provider(spec, chain)
        for key in (base, spec.name):
            if key in self.aliases:
                return self._alias(key, spec, chain, depth)
        for key in (base, spec.name) if spec.variant else (base,):
            hit = self.routes.match(key) if "*" not in key else None
            if hit is not None and hit.via != "wildcard":
                return self._routed(spec, hit, chain, key)
        if spec.name not in FAMILIES:
            for key in (spec.name, base) if spec.variant else (base,):
                hit = self.routes.wildcard(key)
                if hit is not None:
                    return self._routed(spec, hit, chain, key)
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
        return replace(inner, input=spec.raw, resolved_via=via)

    def _routed(self, spec: ModelSpec, hit: RouteMatch, chain: tuple[str, ...], key: str) -> Resolution:
        """A configured route: the Router is called with the matched name unchanged."""
        if hit.via == "wildcard":
            prefix = key.split("/", 1)[0]
            prov = prefix if "/" in key and is_litellm_provider(prefix) else self.group_provider(hit.group)
        else:
            prov = self.group_provider(hit.group)
        pattern = hit.pattern if hit.via == "wildcard" else (hit.group if hit.via == "group_alias" else None)
        stripped = spec.variant is not None and key == spec.name  # the suffix was split off the routed name
        if stripped and hit.via == "wildcard" and prov == "openrouter":
            key, stripped = spec.base, False  # OpenRouter serves the suffixed id: keep it on the name
        res = Resolution(spec.raw, key, prov, spec.variant, hit.via,
                         chain if chain[-1] == key else chain + (key,), is_group=True,
                         pattern=pattern)
        return self._variant_on_route(res, spec.variant or "") if stripped else res

    def _settle(self, res: Resolution) -> Resolution:
        """A direct id that a configured wildcard serves goes to that wildcard (its api_base and key),
        never to an implicit deployment; then the variant is applied as its provider means it."""
        if not res.is_group:
            suffix = f":{res.variant}" if res.variant else ""
            core = res.model[: -len(suffix)] if suffix and res.model.endswith(suffix) else res.model
            for key in ((res.model, core) if res.provider == "openrouter" else (core,)):
                hit = self.routes.wildcard(key)
                if hit is not None:
                    kept = key == res.model and bool(suffix)
                    res = replace(res, model=key, resolved_via="wildcard", is_group=True, pattern=hit.pattern,
                                  chain=res.chain + (key,) if res.chain[-1] != key else res.chain,
                                  api_base=None, key_env=None)
                    if not kept and res.variant:
                        return self._variant_on_route(res, res.variant)
                    return res
            if res.variant and res.provider != "openrouter":
                return self._variant_direct(res, core)
        return res

    def _variant_direct(self, res: Resolution, core: str) -> Resolution:
        if res.variant == "thinking" and res.provider == "anthropic":
            return replace(res, model=core, chain=res.chain[:-1] + (core,), params=thinking_params())
        raise self._variant_error(res.input, res.variant or "", res.provider, core)

    def _variant_on_route(self, res: Resolution, variant: str) -> Resolution:
        if variant == "thinking" and res.provider == "anthropic":
            return replace(res, variant=variant, params=thinking_params())
        raise self._variant_error(res.input, variant, res.provider, res.model)

    @staticmethod
    def _variant_error(text: str, variant: str, provider: str | None, model: str) -> SpecError:
        if variant == "thinking":
            hint = (f"`:thinking` maps to extended thinking on Anthropic models only (budget_tokens "
                    f"{THINKING_BUDGET}). Drop the suffix (`{model}`), or use an OpenRouter id "
                    f"(`... --provider openrouter`), which serves suffixed variants.")
        else:
            hint = (f"Suffix variants (`:{variant}`) are an OpenRouter convention. Drop the suffix "
                    f"(`{model}`), or use the OpenRouter id (`... --provider openrouter`).")
        return SpecError(f"{text.strip()!r}: provider {provider or 'of this route'!s} does not serve "
                         f"`:{variant}` ids.", hint=hint, suggestions=[model])

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
                vendor = aggregator_vendor(info.prefix, home)  # `gemini` → openrouter/google/gemini-…
                name = bare if home == info.prefix else (f"{vendor}/{bare}" if vendor else fam_id)
        elif "/" not in name and not self.catalog.knows(f"{info.prefix}/{name}"):
            # gpt-5 → openai/gpt-5 on OpenRouter: the catalog's own vendor-prefixed id, else the vendor
            # of the model's maker; an aggregator id without a vendor is never sent
            name = (self.catalog.vendor_form(info.prefix, name)
                    or (self._vendor_id(spec, info.prefix) if info.prefix in VENDOR_PREFIXED else name))
        if not name.startswith(info.prefix + "/"):
            name = f"{info.prefix}/{name}"
        model = _with_variant(name, spec.variant)
        return Resolution(spec.raw, model, info.prefix, spec.variant, "provider_flag", chain + (model,),
                          api_base=info.api_base, key_env=info.key_env)

    def _vendor_id(self, spec: ModelSpec, aggregator: str) -> str:
        """`<vendor>/<name>` for an aggregator whose ids name the model's maker, the maker taken from
        the catalog (the provider LiteLLM picks for the bare id, else its one first-party provider)."""
        name = spec.name
        native = self.catalog.native_provider(name)
        first_party = [p for p in self.catalog.providers_for(name) if p in FIRST_PARTY]
        vendor = aggregator_vendor(aggregator, native)
        if vendor is None and len(first_party) == 1:
            vendor = aggregator_vendor(aggregator, first_party[0])
        if vendor is not None:
            return f"{vendor}/{name}"
        forms = self.catalog.vendor_forms(aggregator, name)
        example = f"openai/gpt-5 --provider {spec.provider}"
        raise SpecError(
            f"{spec.raw.strip()!r}: {aggregator} ids name the model's vendor (`vendor/{name}`), and the "
            f"catalog does not say who makes {name!r}" + (" unambiguously." if forms else "."),
            hint=f"Write the vendor-prefixed id: `vendor/{_with_variant(name, spec.variant)} --provider "
                 f"{spec.provider}` (for example `{example}`).",
            suggestions=[f"{_with_variant(f, spec.variant)} --provider {spec.provider}" for f in forms])

    def _from_catalog(self, spec: ModelSpec, chain: tuple[str, ...]) -> Resolution:
        cands = self.catalog.providers_for(spec.name)
        if not cands and spec.name == "auto":
            raise UnknownModelError("`auto` is not one model: a task's `model: auto` is resolved when it is "
                                    "planned, to the model its complexity tier maps to (delegation.auto).",
                                    hint="Check one of the models delegation.auto maps to (list_models with "
                                         "model auto shows the mapping).")
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

    # -- context windows (the one lookup: tools, listings and hosts ask here) ---------------------
    def deployment_window(self, dep: Deployment) -> int | None:
        """A deployment's input window: its model_info, else the catalog's entry for its model."""
        info = dep.model_info
        win = (info.get("max_input_tokens") or info.get("max_tokens")
               or self.catalog.context_window(str(dep.litellm_params.get("model"))))
        return int(win) if isinstance(win, (int, float)) and not isinstance(win, bool) and win > 0 else None

    def context_window(self, res: Resolution) -> int | None:
        """The input window of what a resolution reaches: for a group, the smallest its deployments
        declare (a task must fit wherever the Router sends it); else the catalog's."""
        deps = self.groups.get(res.model)
        if deps:
            windows = [w for w in map(self.deployment_window, deps) if w]
            if windows:
                return min(windows)
        return self.catalog.context_window(res.model)

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
