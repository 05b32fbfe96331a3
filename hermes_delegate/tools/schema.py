"""What the agent sees of the config: the tool schemas (OpenAI function-calling format) and the
list_models listing, both generated from the live config.

The descriptions teach the model-string grammar by example, state the precedence, carry an explicit
DO NOT against the colon-prefix form, and list what this config defines (tiers, aliases, groups, the
allowlist, limits), so the LLM sees what exists. They are sent on every request: keep them short.
Resolving a name reads LiteLLM's catalog from disk but never imports litellm; the listing asks
the Router for cooldowns only once the Router exists (or when cooldowns are shared through Redis).
Keys are reported as `set`/`missing` and by env var name, never by value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..core.budget import Pricing, deployment_price
from ..core.catalog import FAMILIES, ModelPrice
from ..core.errors import DelegateError, TaskPayloadError
from ..core.credentials import deployment_credentials, deployment_provider
from ..core.results import api_host
from ..core.env_refs import resolve_env_ref
from ..core.resolver import TIER_NAMES, Resolution, Resolver
from ..ratelimit.gate import Limits

if TYPE_CHECKING:
    from ..runtime.delegator import Delegator

__all__ = [
    "MODEL_EXAMPLES",
    "PRECEDENCE",
    "COLON_DO_NOT",
    "UNSET",
    "delegate_task_function",
    "list_models_function",
    "configured_names",
    "model_listing",
    "check_model",
]

#: The worked examples of a model string (a test guards that they stay in the schema).
MODEL_EXAMPLES = (
    "Model string forms: a bare id (`glm-4.7`); an alias or tier (`haiku`, `small`); "
    "an id through one provider (`stepfun/step-3.5-flash --provider openrouter`, "
    "`claude-opus-4-6 --provider anthropic`)."
)
PRECEDENCE = "Precedence: task model > call model > config default > parent (your own model)."
COLON_DO_NOT = (
    "DO NOT write the colon-prefix form `openrouter:stepfun/step-3.5-flash`: it is rejected. "
    "Write `stepfun/step-3.5-flash --provider openrouter`."
)
UNSET = 'null or "" means unset: falls through to the next level.'

_INTRO = (
    "Run subtasks in parallel, each on the model it names, and get every result back. "
    "A worker sees only its task's goal and context, not this conversation: put everything it needs there. "
    "One task: pass goal (and context, model). Several: pass tasks. Not both. "
    "Returns JSON: results in input order (status, summary, model, deployment, tokens, cost_usd), "
    "counts, cost and budget."
)
_MAX_LISTED = 24  # names per category in the description; list_models has the rest


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", … (+{len(items) - _MAX_LISTED})" if len(items) > _MAX_LISTED else "")


def configured_names(delegator: Delegator) -> dict[str, dict[str, str | None]]:
    """Configured tiers and aliases → the id each resolves to (None when it does not resolve)."""
    out: dict[str, dict[str, str | None]] = {"tiers": {}, "aliases": {}}
    for name in delegator.config.delegation.aliases:
        try:
            target: str | None = delegator.resolver.resolve(name).model
        except DelegateError:
            target = None
        out["tiers" if name in TIER_NAMES else "aliases"][name] = target
    return out


def _money(x: float) -> str:
    return f"${x:.2f}" if x >= 0.1 else f"${x:g}"


def _config_lines(delegator: Delegator) -> list[str]:
    cfg, s = delegator.config, delegator.config.delegation
    names = configured_names(delegator)
    lines: list[str] = []
    for kind in ("tiers", "aliases"):
        if names[kind]:
            pairs = (f"{k}→{v or '(unresolvable)'}" for k, v in names[kind].items())
            lines.append(f"Configured {kind}: {_listing(pairs)}.")
    groups = list(delegator.resolver.groups)
    if groups:
        lines.append(f"Model groups: {_listing(groups)}.")
    if s.model:
        lines.append(f"Config default: {s.model}.")
    if delegator.parent_model:
        lines.append(f"Parent (your model): {delegator.parent_model}.")
    if s.allow is not None:
        allowed = _listing(s.allow) if s.allow else "(nothing)"
        lines.append(f"Allowed models only: {allowed}; anything else is refused.")
    limits = [f"at most {s.max_tasks} tasks per call"]
    if s.budget_usd is not None:
        limits.append(f"budget {_money(s.budget_usd)} per call")
    lines.append("Limits: " + "; ".join(limits) + ". list_models shows prices, context windows, credentials.")
    return lines


_OUTPUT_SCHEMA_PROPERTY: dict[str, Any] = {
    "type": "object",
    "description": "Optional JSON Schema: the worker answers with JSON matching it, returned parsed as the "
                   "task's `output` (a mismatch after one retry fails the task with error type bad_output).",
}


def _model_property(call_level: bool) -> dict[str, Any]:
    if call_level:
        text = f"Model for every task without its own. {MODEL_EXAMPLES} {COLON_DO_NOT} {PRECEDENCE} {UNSET}"
    else:
        text = f"This task's model; overrides the call-level model. Same forms as the top-level model. {UNSET}"
    return {"type": "string", "description": text}


def delegate_task_function(delegator: Delegator, name: str = "delegate_task") -> dict[str, Any]:
    """The bare OpenAI function object for delegate_task, built from the delegator's config now."""
    s = delegator.config.delegation
    if s.budget_usd is not None:
        budget_doc = (f"Optional cost cap for this call in USD; may lower the configured {_money(s.budget_usd)}, "
                      "never raise it.")
    else:
        budget_doc = "Optional cost cap for this call in USD."
    budget_doc += " Tasks that would pass it are not started (status skipped_budget)."
    task_item = {
        "type": "object",
        "properties": {
            "goal": {"type": "string", "description": "What this worker must do (required)."},
            "context": {"type": "string", "description": "What it needs to know: files, facts, constraints."},
            "model": _model_property(call_level=False),
            "output_schema": _OUTPUT_SCHEMA_PROPERTY,
        },
        "required": ["goal"],
    }
    return {
        "name": name,
        "description": " ".join([_INTRO, *_config_lines(delegator)]),
        "parameters": {
            "type": "object",
            "properties": {
                "goal": {"type": "string", "description": "The task, for a single-task call (instead of tasks)."},
                "context": {"type": "string", "description": "Background for the single task. With tasks, it is "
                                                             "shared: prepended to each task's context."},
                "model": _model_property(call_level=True),
                "tasks": {
                    "type": "array",
                    "description": f"Several independent tasks, run in parallel (1 to {s.max_tasks}).",
                    "items": task_item,
                    "minItems": 1,
                    "maxItems": s.max_tasks,
                },
                "budget_usd": {"type": "number", "description": budget_doc},
                "output_schema": {**_OUTPUT_SCHEMA_PROPERTY, "description": "A JSON Schema for every task "
                                  "without its own output_schema (see tasks[].output_schema)."},
            },
            "required": [],
        },
    }


def list_models_function(name: str = "list_models", delegate_name: str = "delegate_task") -> dict[str, Any]:
    return {
        "name": name,
        "description": (
            f"List what {delegate_name} may use: tiers and aliases with the id each resolves to; model groups "
            "with their deployments (provider, api host, context window, price per 1M tokens, credentials "
            "set/missing, cooling down); the allowlist; built-in family aliases. No arguments needed. "
            "Pass model to check one model string instead."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "model": {"type": "string",
                          "description": "Optional: one model string to check (what it resolves to, allowed, price)."},
            },
            "required": [],
        },
    }


# -- list_models --------------------------------------------------------------------------------
def _prices(price: ModelPrice | None) -> dict[str, float | None]:
    pm = price.per_million if price else None
    return {"input_per_1m": pm["input"] if pm else None, "output_per_1m": pm["output"] if pm else None}


def _deployment(delegator: Delegator, dep: Any, router_id: str | None, cooling: set[str] | None) -> dict[str, Any]:
    lp, info, env = dep.litellm_params, dep.model_info, delegator.env
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
    }


def _limits(delegator: Delegator, rid: str | None, lp: Mapping[str, Any], info: Mapping[str, Any]) -> dict | None:
    """The limits in force: learned ones too once the Router has heard from the deployment."""
    if rid:
        live = delegator.deployment_limits(str(rid))
        if live is not None:
            return live
    lim = Limits.from_deployment({"litellm_params": lp, "model_info": info})
    return {k: v for k, v in (("rpm", lim.rpm), ("tpm", lim.tpm), ("max_parallel", lim.max_parallel))
            if v is not None} or None


def _model_facts(delegator: Delegator, res: Resolution) -> dict[str, Any]:
    """A direct id (not a group): a configured deployment of the same id lends its credentials."""
    params: Mapping[str, Any] = delegator.config.params_for_model(res.model) or {}
    provider = res.provider or deployment_provider({"model": res.model})
    pricing = Pricing(delegator.config, delegator.resolver, cap_usd=None, max_tokens=0)
    return {
        "provider": provider,
        "api_host": api_host(resolve_env_ref(params.get("api_base") or res.api_base, delegator.env)),
        "context_window": delegator.context_window(res),
        **_prices(pricing.price(res)),
        **deployment_credentials(params, delegator.env, provider=provider,
                                 key_env=None if params else res.key_env).to_dict(),
        "on_allowlist": delegator.allowlist.allows(res),
    }


def _try_resolve(r: Resolver, name: str, warnings: list[str], where: str) -> Resolution | None:
    try:
        return r.resolve(name)
    except DelegateError as exc:
        warnings.append(f"{where}: {exc.message}")
        return None


async def model_listing(delegator: Delegator) -> dict[str, Any]:
    """Everything the agent may pick, for list_models."""
    cfg, s, r, allow = delegator.config, delegator.config.delegation, delegator.resolver, delegator.allowlist
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
    for i, dep in enumerate(cfg.router.model_list):
        name = dep.model_name
        if name not in groups:
            via = "wildcard" if "*" in name else "group"  # a wildcard model_name routes the names it matches
            as_group = Resolution(name, name, r.group_provider(name), None, via, (name,), is_group=True,
                                  pattern=name if via == "wildcard" else None)
            groups[name] = {"on_allowlist": allow.allows(as_group), "deployments": []}
            if via == "wildcard":
                groups[name]["wildcard"] = True
        groups[name]["deployments"].append(_deployment(delegator, dep, ids[i], cooling))
    families: dict[str, str] = {}
    for name in FAMILIES:
        fam_id = r.catalog.family(name)
        if fam_id and name not in s.aliases and name not in groups:  # an alias or group shadows a family
            families[name] = fam_id
            resolved[name] = r.resolve(name)
    chosen: dict[str, dict[str, Any] | None] = {}
    for level, name in {"default": s.model, "parent": delegator.parent_model}.items():
        res = _try_resolve(r, name, warnings, f"{level} model {name!r}") if name else None
        chosen[level] = {"model": name, "resolves_to": res.model} if res else None
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


async def check_model(delegator: Delegator, model: Any) -> dict[str, Any]:
    """What one model string resolves to, and whether it can run here (raises DelegateError)."""
    if not isinstance(model, str):
        raise TaskPayloadError("model must be a string.", hint='E.g. {"model": "glm-4.7"}.')
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
        out["deployments"] = [_deployment(delegator, d, ids[i], cooling)
                              for i, d in enumerate(delegator.config.router.model_list) if d.model_name == group]
    else:
        out.update(_model_facts(delegator, res))
    return out
