"""THE model listing, and the checks built on it: what `list_models` (every host's tool) and
`hermes-delegate models` / `doctor` show. One listing, built from the Resolver's deployments
(`resolver.model_list`: the config's own, or a remote proxy's groups), so a listing never disagrees
with what a model string resolves to; every `os.environ/` reference and credential is read through
the Resolver's lookup (`resolver.env`: the config's environment_variables over the Delegator's env).

Resolving a name reads LiteLLM's catalog from disk but never imports litellm; the listing asks the
Router for cooldowns only once the Router exists (or when cooldowns are shared through Redis). Keys
are reported as `set`/`missing` and by env var name, never by value. Hosts call these through the
Delegator (`model_listing`, `check_model`, `learned_limits`, `doctor`), which redacts the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

from ..core.auto import AUTO_DOC, auto_map, is_auto
from ..core.budget import Pricing, deployment_price
from ..core.catalog import FAMILIES, ModelPrice
from ..core.config_values import ROUTER_SETTINGS, check_values, deployment_problems
from ..core.credentials import deployment_credentials, deployment_provider, unset_refs
from ..core.env_refs import resolve_env_ref
from ..core.errors import ConfigError, DelegateError, TaskPayloadError
from ..core.grammar import parse_model_string
from ..core.resolver import TIER_NAMES, Resolution, Resolver
from ..core.results import api_host
from ..ratelimit.gate import Limits

if TYPE_CHECKING:
    from ..core.config import Config
    from ..core.planning import Allowlist


class Engine(Protocol):
    """What the listing reads of the engine (a delegator.Delegator; delegator imports this module, so
    the type is named here, not imported from there)."""

    config: Config
    resolver: Resolver
    allowlist: Allowlist
    parent_model: str | None

    def context_window(self, resolution: Resolution) -> int | None: ...

    async def deployment_states(self) -> tuple[list[str | None], set[str] | None]: ...

    def deployment_limits(self, router_id: str) -> dict[str, Any] | None: ...

__all__ = ["model_listing", "check_model", "learned_limits", "doctor_report"]


def _prices(price: ModelPrice | None) -> dict[str, float | None]:
    pm = price.per_million if price else None
    return {"input_per_1m": pm["input"] if pm else None, "output_per_1m": pm["output"] if pm else None}


def _deployment(delegator: Engine, dep: Any, router_id: str | None, cooling: set[str] | None,
                index: int) -> dict[str, Any]:
    lp, info, env = dep.litellm_params, dep.model_info, delegator.resolver.env
    problems = deployment_problems(lp, f"router.model_list[{index}].litellm_params", env)
    model = str(lp["model"])
    provider = deployment_provider(lp)
    catalog = delegator.resolver.catalog
    window = delegator.resolver.deployment_window(dep)
    rid = info.get("id") or router_id
    return {
        "provider": provider,
        "deployment_id": str(info.get("id") or model),
        "model": model,
        "api_host": api_host(resolve_env_ref(lp.get("api_base") or lp.get("base_url"), env)),
        "context_window": window,
        **_prices(deployment_price(lp, info) or catalog.price(model)),
        **deployment_credentials(lp, env, provider=provider).to_dict(),
        "cooling_down": None if cooling is None else bool(rid and rid in cooling),
        "limits": _limits(delegator, rid, lp, info),
        **({"problem": "; ".join(problems)} if problems else {}),  # refused by planning; the rest still listed
    }


def _limits(delegator: Engine, rid: str | None, lp: Mapping[str, Any],
            info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The limits in force: learned ones too once the Router has heard from the deployment."""
    if rid:
        live = delegator.deployment_limits(str(rid))
        if live is not None:
            return live
    lim = Limits.from_deployment({"litellm_params": lp, "model_info": info})
    return {k: v for k, v in (("rpm", lim.rpm), ("tpm", lim.tpm), ("max_parallel", lim.max_parallel))
            if v is not None} or None


def _model_facts(delegator: Engine, res: Resolution) -> dict[str, Any]:
    """A direct id (not a group): a configured deployment of the same id lends its credentials."""
    params: Mapping[str, Any] = delegator.config.params_for_model(res.model) or {}
    env = delegator.resolver.env
    provider = res.provider or deployment_provider({"model": res.model})
    pricing = Pricing(delegator.config, delegator.resolver, cap_usd=None, max_tokens=0)
    return {
        "provider": provider,
        "api_host": api_host(resolve_env_ref(params.get("api_base") or res.api_base, env)),
        "context_window": delegator.context_window(res),
        **_prices(pricing.price(res)),
        **deployment_credentials(params, env, provider=provider,
                                 key_env=None if params else res.key_env).to_dict(),
        "on_allowlist": delegator.allowlist.allows(res),
    }


def _try_resolve(r: Resolver, name: str, warnings: list[str], where: str) -> Resolution | None:
    try:
        return r.resolve(name)
    except DelegateError as exc:
        warnings.append(f"{where}: {exc.message}")
        return None


async def model_listing(delegator: Engine) -> dict[str, Any]:
    """Everything an agent (list_models) or a person (`hermes-delegate models`) may pick. The groups are
    the Resolver's (`resolver.model_list`: the config's own, or a remote proxy's), as resolution uses."""
    s, r, allow = delegator.config.delegation, delegator.resolver, delegator.allowlist
    warnings: list[str] = []
    tiers: dict[str, str | None] = {}
    aliases: dict[str, str | None] = {}
    resolved: dict[str, Resolution] = {}
    for name in s.aliases:
        res = _try_resolve(r, name, warnings, f"delegation.aliases.{name}")
        (tiers if name in TIER_NAMES else aliases)[name] = res.model if res else None
        if res:
            resolved[name] = res
    configured = [res for res in resolved.values() if not res.is_group]
    ids, cooling = await delegator.deployment_states()
    groups: dict[str, dict[str, Any]] = {}
    for i, dep in enumerate(r.model_list):
        name = dep.model_name
        if name not in groups:
            via = "wildcard" if "*" in name else "group"  # a wildcard model_name routes the names it matches
            as_group = Resolution(name, name, r.group_provider(name), None, via, (name,), is_group=True,
                                  pattern=name if via == "wildcard" else None)
            groups[name] = {"on_allowlist": allow.allows(as_group), "deployments": []}
            if via == "wildcard":
                groups[name]["wildcard"] = True
        groups[name]["deployments"].append(_deployment(delegator, dep, ids[i], cooling, i))
    families: dict[str, str] = {}
    for name in () if r.proxy_only else FAMILIES:  # remote mode: a family would go around the proxy
        fam_id = r.catalog.family(name)
        if fam_id and name not in s.aliases and name not in groups:  # an alias or group shadows a family
            families[name] = fam_id
            resolved[name] = r.resolve(name)
    chosen: dict[str, dict[str, Any] | None] = {}
    for level, level_model in {"default": s.model, "parent": delegator.parent_model}.items():
        res = _try_resolve(r, level_model, warnings, f"{level} model {level_model!r}") if level_model else None
        chosen[level] = {"model": level_model, "resolves_to": res.model} if res else None
        if res and not res.is_group:
            configured.append(res)
    models = {res.model: _model_facts(delegator, res) for res in configured}
    allowlist = None
    if allow.active:
        allowlist = {"patterns": list(allow.patterns or []),
                     "allowed": [*(n for n in [*tiers, *aliases, *families]
                                   if n in resolved and allow.allows(resolved[n])),
                                 *(n for n, g in groups.items() if g["on_allowlist"] and n not in resolved)]}
    return {
        "tiers": tiers,
        "aliases": aliases,
        "groups": groups,
        "group_aliases": dict(r.routes.aliases),  # router_settings.model_group_alias: name → group
        "models": models,
        "families": families,
        "default": chosen["default"],
        "parent": chosen["parent"],
        "allowlist": allowlist,
        "limits": {"max_tasks": s.max_tasks, "max_concurrency": s.max_concurrency, "budget_usd": s.budget_usd,
                   "max_tokens": s.max_tokens, "allow_unpriced": s.allow_unpriced},
        "note": "Prices are USD per 1M tokens (null: unknown). " + (
            "Only models on the allowlist run." if allow.active else
            "Any other model string works too, e.g. `glm-4.7` or `stepfun/step-3.5-flash --provider openrouter`.")
            + " Pass model to check one model string.",
        "warnings": warnings,
    }


async def check_model(delegator: Engine, model: Any) -> dict[str, Any]:
    """What one model string resolves to, and whether it can run here (raises DelegateError)."""
    if not isinstance(model, str):
        raise TaskPayloadError("model must be a string.", hint='E.g. {"model": "glm-4.7"}.')
    if is_auto(parse_model_string(model)):
        return {"input": model, "resolved_via": "auto", "note": AUTO_DOC, "tiers": _auto_targets(delegator)}
    res = delegator.resolver.resolve(model)
    out: dict[str, Any] = {"input": model, "resolves_to": res.model, "resolved_via": res.resolved_via}
    if res.pattern is not None:
        out["pattern"] = res.pattern  # the wildcard model_name, or the group a model_group_alias names
    if res.params:
        out["params"] = dict(res.params)  # a mapped variant, e.g. `:thinking` → thinking={...}
    try:
        delegator.resolver.check_callable(res)
    except DelegateError as exc:
        out["not_callable"] = exc.message
    if res.is_group:
        group = res.pattern if res.resolved_via in ("wildcard", "group_alias") else res.model
        ids, cooling = await delegator.deployment_states()
        out["on_allowlist"] = delegator.allowlist.allows(res)
        out["deployments"] = [_deployment(delegator, d, ids[i], cooling, i)
                              for i, d in enumerate(delegator.resolver.model_list) if d.model_name == group]
    else:
        out.update(_model_facts(delegator, res))
    return out


def _auto_targets(delegator: Engine) -> dict[str, dict[str, Any]]:
    """`model: auto`'s mapping: each complexity tier → its model string, what that resolves to (or why
    not), and whether the allowlist lets it run."""
    out: dict[str, dict[str, Any]] = {}
    for tier, target in auto_map(delegator.config.delegation.auto).items():
        row: dict[str, Any] = {"model": target}
        try:
            res = delegator.resolver.resolve(target)
            row.update(resolves_to=res.model, on_allowlist=delegator.allowlist.allows(res))
        except DelegateError as exc:
            row["error"] = exc.message
        out[tier] = row
    return out


# -- what the CLI's `models` and `doctor` add ------------------------------------------------------
def learned_limits(delegator: Engine) -> dict[str, Any]:
    """Limits processes learned from this config's deployments, when they share them through the Redis
    the router_settings name: {"learned_limits": {deployment id: {...}}}, or the reason they cannot be
    read ({"learned_limits_error": ...}); {} without Redis (a process keeps what it learns to itself)."""
    settings = delegator.config.router.router_settings
    if not (settings.get("redis_host") or settings.get("redis_url")):
        return {}
    from ..ratelimit.redis_windows import read_learned  # noqa: PLC0415

    from ..ratelimit.keys import deployment_digest, split_store_key  # noqa: PLC0415

    r = delegator.resolver
    conn = {k: resolve_env_ref(v, r.env) if isinstance(v, str) else v for k, v in settings.items()
            if k in ("redis_host", "redis_port", "redis_url", "redis_password")}
    check_values(conn, ROUTER_SETTINGS, "router_settings")  # an os.environ/ value, now resolved
    ours = {(d.model_name, d.litellm_params.get("model")) for d in r.model_list}
    ids = {str(d.model_info["id"]) for d in r.model_list if d.model_info.get("id")}
    # a deployment is named by its id and a digest of (provider, api_base, model): only ours are shown
    digests = {deployment_digest({**d.litellm_params, "api_base": resolve_env_ref(
        d.litellm_params.get("api_base") or d.litellm_params.get("base_url"), r.env)}) for d in r.model_list}
    try:
        found = read_learned(conn)
    except DelegateError as exc:
        return {"learned_limits_error": exc.message}
    shown: dict[str, Any] = {}
    for key, value in sorted(found.items()):
        dep_id, digest = split_store_key(key)
        if digest in digests if digest is not None else (dep_id in ids
                                                          or (value.get("group"), value.get("model")) in ours):
            shown[dep_id] = value
    return {"learned_limits": shown}


def doctor_report(delegator: Engine) -> dict[str, Any]:
    """The config checked, for `hermes-delegate doctor`: {config, deployments (group, model, credentials,
    key_env), aliases (name → id or error), ignored, problems[, learned_limits]}. Every deployment is
    the Resolver's (a remote proxy's groups in remote mode)."""
    cfg, r = delegator.config, delegator.resolver
    problems: list[str] = []
    report: dict[str, Any] = {"config": cfg.source or "(defaults: no config file)", "deployments": [],
                              "aliases": {}, "problems": problems}
    default_auto = bool(cfg.delegation.model) and is_auto(parse_model_string(cfg.delegation.model))
    for name in [*cfg.delegation.aliases, *([cfg.delegation.model] if cfg.delegation.model and not default_auto
                                             else [])]:
        res = r.resolve_or_error(name)
        report["aliases"][name] = res.get("model") or res.get("error")
        if "error" in res:
            problems.append(f"{name}: {res['error']}")
        else:  # every deployment it reaches has an unset os.environ/ key or api_base: it cannot run
            try:
                r.check_callable(r.resolve(name))
            except DelegateError as exc:
                problems.append(f"{name}: {exc.message}")
    for i, dep in enumerate(r.model_list):
        cred = deployment_credentials(dep.litellm_params, r.env)
        row = {"group": dep.model_name, "model": dep.litellm_params.get("model"), **cred.to_dict()}
        report["deployments"].append(row)
        for bad in deployment_problems(dep.litellm_params, f"router.model_list[{i}].litellm_params", r.env):
            problems.append(f"{dep.model_name} ({row['model']}): {bad}")
        if not cred.present:
            problems.append(f"{dep.model_name} ({row['model']}): credentials missing — set {cred.key_env}")
        for ref in unset_refs(dep.litellm_params, r.env):  # api_base and any other reference too
            if ref != cred.key_env:
                problems.append(f"{dep.model_name} ({row['model']}): os.environ/{ref} is not set")
    report["auto"] = _auto_targets(delegator)
    if default_auto:  # every task without a model goes through the mapping: each tier must resolve
        problems += [f"delegation.auto.{tier} → {row['model']}: {row['error']}"
                     for tier, row in report["auto"].items() if "error" in row]
    report["ignored"] = [f"{k} (proxy-server settings: not used by hermes-delegate)"
                         for k in cfg.router.ignored_sections]
    try:
        report.update(learned_limits(delegator))
    except ConfigError as exc:  # a Redis setting given as an os.environ/ reference, bad once resolved
        problems.append(exc.message)
    report["spend"] = spend_summary(delegator)
    if "learned_limits_error" in report:  # every run would fail typed (limiter_unavailable)
        problems.append(f"router_settings: {report['learned_limits_error']}")
    return report


def spend_summary(delegator: Any) -> dict[str, Any]:
    """For doctor: where the ledger is, and each cap (spent and left where the store is readable)."""
    from ..spend import ledger_location  # noqa: PLC0415

    b = delegator.config.delegation.budget
    out: dict[str, Any] = {"ledger": ledger_location(delegator.config, delegator.resolver.env),
                           "timezone": b.timezone or "local", "on_over_budget": b.on_over_budget}
    try:
        out["caps"] = delegator.spend_report()["caps"] if out["ledger"] else []
    except Exception as exc:  # noqa: BLE001 - doctor reports what it cannot read
        out["caps"], out["error"] = [], f"{type(exc).__name__}"
    return out
