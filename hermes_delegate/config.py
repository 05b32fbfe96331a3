"""The config file: one YAML document, validated with pydantic. No network, no litellm.

    delegation:            # what this package decides
      model: small         # default model (precedence level 3)
      aliases: {small: haiku, medium: sonnet, large: opus}
      max_concurrency: 16
      task_timeout_s: 600
      allow: [small, "anthropic/*"]
      max_tasks: 50
      budget_usd: 1.00
    router:                # LiteLLM's own format, for litellm.Router (os.environ/ refs resolved by us)
      model_list: [...]
      router_settings: {...}
      litellm_settings: {...}
      environment_variables: {...}   # feed os.environ/ lookups only (Config.env_lookup)
    litellm_config: ./litellm.yaml   # or: an existing LiteLLM proxy config (include: merged; what is
                                     # honoured, ignored or refused: docs/litellm.md)
    remote:                          # or: a running LiteLLM proxy (see remote.py)
      base_url: http://127.0.0.1:4000
      api_key_env: LITELLM_PROXY_API_KEY

Where it comes from: `--config PATH`, then $HERMES_DELEGATE_CONFIG, then
$XDG_CONFIG_HOME/hermes-delegate/config.yaml (~/.config/…). No file at the default place is fine.
Loading never touches the network; a `remote` config lists the proxy's groups on first use.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ConfigError, DelegateError

__all__ = [
    "Config",
    "DelegationSettings",
    "RouterSection",
    "RemoteProxy",
    "Deployment",
    "load_config",
    "config_from_dict",
    "default_config_path",
    "DEFAULT_SYSTEM_PROMPT",
]

log = logging.getLogger("hermes_delegate.config")

DEFAULT_SYSTEM_PROMPT = (
    "You are a focused worker agent. Complete the task you are given and reply with the result "
    "only: concise, complete, and without asking questions back."
)
#: Top-level sections of a LiteLLM proxy config that the Router uses (docs/litellm.md has the table).
ROUTER_SECTIONS = ("model_list", "router_settings", "litellm_settings", "environment_variables")
#: Proxy-server sections: accepted and ignored (they configure the proxy's HTTP server, DB, UI, keys).
IGNORED_SECTIONS = ("general_settings",)
#: `litellm_settings` keys hermes-delegate honours (set on the litellm module, or `cache` built from
#: `cache_params`). Anything else there is refused: callbacks, guardrails and the proxy's key/team/
#: budget settings need the proxy server (use `remote:` to go through one).
LITELLM_SETTINGS = frozenset({
    "cache", "cache_params", "drop_params", "modify_params", "request_timeout", "num_retries",
    "set_verbose", "json_logs", "turn_off_message_logging", "redact_messages_in_exceptions",
    "redact_user_api_key_info", "disable_add_transform_inline_image_block", "force_ipv4",
    "ssl_verify", "disable_end_user_cost_tracking", "max_budget",
})
_PROXY_KEY_HINT = ("hermes-delegate runs LiteLLM's Router in-process, without the proxy server: remove the "
                   "key, or run the LiteLLM proxy and point hermes-delegate at it with `remote:` "
                   "(docs/litellm.md lists what is honoured).")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DelegationSettings(_Strict):
    model: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(16, ge=1, le=100_000)
    task_timeout_s: float | None = Field(600.0, gt=0)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int | None = Field(None, ge=1, description="completion cap per task; prices the budget")
    allow: list[str] | None = None
    max_tasks: int = Field(100, ge=1, le=100_000)
    budget_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    allow_unpriced: bool = False
    max_input_chars: int = Field(200_000, ge=1, description="largest goal+context accepted per task")

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not name or not name.strip() or " " in name.strip():
                raise ValueError(f"alias name {name!r} must be one word")
        return v


class Deployment(BaseModel):
    """One entry of LiteLLM's `model_list`. Extra keys are LiteLLM's business and pass through."""

    model_config = ConfigDict(extra="allow")
    model_name: str = Field(min_length=1)
    litellm_params: dict[str, Any]
    model_info: dict[str, Any] = Field(default_factory=dict)

    @field_validator("litellm_params")
    @classmethod
    def _needs_model(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(v.get("model"), str) or not v["model"].strip():
            raise ValueError("litellm_params.model is required (a LiteLLM id such as openai/gpt-4o)")
        return v


class RouterSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_list: list[Deployment] = Field(default_factory=list)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    environment_variables: dict[str, str] = Field(
        default_factory=dict, description="feed os.environ/ lookups; never written to the environment")
    ignored_sections: list[str] = Field(default_factory=list, description="proxy-only sections, not used")

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _env_strings(cls, v: Any) -> Any:
        if isinstance(v, Mapping):  # the proxy sets os.environ[k] = str(v): numbers are fine
            return {str(k): ("" if val is None else str(val)) for k, val in v.items()}
        return v


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RemoteProxy(_Strict):
    """A running LiteLLM proxy: its model groups become ours, each sent as `litellm_proxy/<group>`."""

    base_url: str = Field(min_length=1, description="the proxy's URL, e.g. http://127.0.0.1:4000")
    api_key_env: str | None = Field("LITELLM_PROXY_API_KEY", description="env var holding the proxy key")
    timeout_s: float = Field(10.0, gt=0, le=300, description="for listing the groups")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:4000")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):  # never echo the value: it may be a pasted key
            raise ValueError("must be the name of an environment variable (like LITELLM_PROXY_API_KEY), "
                             "not the key itself")
        return v


class Config(_Strict):
    delegation: DelegationSettings = Field(default_factory=DelegationSettings)
    router: RouterSection = Field(default_factory=RouterSection)
    litellm_config: str | None = None
    remote: RemoteProxy | None = None
    source: str | None = Field(None, exclude=True, description="the file this came from")
    _remote_loaded: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _one_source_of_groups(self) -> "Config":
        if self.remote is not None and (self.router.model_list or self.router.router_settings
                                        or self.router.litellm_settings or self.litellm_config):
            raise ValueError("remote: give either remote or router/litellm_config, not both")
        ids = [str(d.model_info["id"]) for d in self.router.model_list if d.model_info.get("id") is not None]
        if len(set(ids)) != len(ids):  # the Router keeps one of them, and results would name the wrong one
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"router.model_list: model_info.id {dup!r} is given to more than one deployment; "
                             "give each deployment its own id, or leave model_info.id out")
        return self

    def env_lookup(self, base: Mapping[str, str]) -> Mapping[str, str]:
        """Where `os.environ/NAME` references are read: the config's `environment_variables` over `base`
        (the process environment), as LiteLLM's proxy lets them override. Nothing is written anywhere."""
        extra = self.router.environment_variables
        if not extra:
            return base
        from collections import ChainMap  # noqa: PLC0415

        from .env_refs import env_ref_name  # noqa: PLC0415

        own: dict[str, str] = {}
        for key, value in extra.items():  # `KEY: os.environ/OTHER` copies OTHER, when set (as the proxy)
            ref = env_ref_name(value)
            if ref is None:
                own[key] = value
            elif base.get(ref) is not None:
                own[key] = base[ref]
        return ChainMap(own, base)  # type: ignore[arg-type]

    def params_for_model(self, model: str) -> dict[str, Any] | None:
        """The `litellm_params` of the first configured deployment serving this LiteLLM id: a direct
        id that is not a group borrows its credentials and api_base."""
        return next((dict(d.litellm_params) for d in self.router.model_list
                     if d.litellm_params.get("model") == model), None)

    def groups(self) -> dict[str, list[Deployment]]:
        """Router model groups, in file order. With `remote`, the proxy's groups (listed on first use)."""
        if self.remote is not None and not self._remote_loaded:
            from .remote import load_remote_groups  # noqa: PLC0415 - network only in remote mode

            load_remote_groups(self)
        out: dict[str, list[Deployment]] = {}
        for dep in self.router.model_list:
            out.setdefault(dep.model_name, []).append(dep)
        return out


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hermes-delegate" / "config.yaml"


def _format_validation(err: ValidationError, where: str) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{loc}: {e['msg']}")
    msg = f"Invalid config {where}: " + "; ".join(lines)
    return ConfigError(msg, hint="Fix the named keys; see configs/ for working examples.")


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors' aliases (*name): they allow exponential "billion laughs"
    documents. Plain YAML config and tasks files never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def read_yaml_file(path: Path, what: str, error: type[DelegateError] = ConfigError, *,
                   not_found_hint: str = "", nested_hint: str = "") -> Any:
    """The one reader of our YAML files (configs and tasks files): plain YAML only (no !!python tags,
    no *aliases), every way a file can be unusable as one typed `error` naming `what` and the path."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what[:1].upper()}{what[1:]} not found: {path}", hint=not_found_hint) from None
    except OSError as exc:
        raise error(f"Cannot read {what} {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise error(f"Cannot read {what} {path}: it is not UTF-8 text.") from None
    try:
        return yaml.load(text, Loader=NoAliasLoader)  # safe: refuses !!python/object and aliases
    except RecursionError:
        raise error(f"{path} is nested too deeply to be a {what}.", hint=nested_hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise error(f"{path}{at} is not valid YAML: {problem}.",
                    hint="Only plain YAML is accepted (no !!python tags, no *aliases).") from None


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    data = read_yaml_file(path, what, not_found_hint="Check the path, or pass --config PATH.")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}.")
    return data


def _include_path(entry: str, declared_in: Path, root: Path) -> Path:
    """LiteLLM's rule: next to the config that declares it; a file next to the root config still counts."""
    declared = (declared_in.parent / os.path.expanduser(entry)).resolve()
    rooted = (root.parent / os.path.expanduser(entry)).resolve()
    if declared == rooted or declared.exists() or not rooted.exists():
        return declared
    log.warning("%s: include %r not found next to it; read %s instead", declared_in, entry, rooted)
    return rooted


def _includes(data: Mapping[str, Any], where: Path) -> list[str]:
    entries = data.get("include")
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, str) and e.strip() for e in entries):
        raise ConfigError(f"{where}: include: must be a list of file paths.",
                          hint="include: [models.yaml, more_models.yaml] (paths relative to this file)")
    return entries


def _merge_includes(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`include:` as LiteLLM's proxy merges it: each file relative to the config naming it, lists
    (model_list, …) concatenated, any other top-level value replaced by the included one, a file
    already read skipped, includes of includes followed."""
    root = path.resolve()
    merged = {k: v for k, v in data.items() if k != "include"}
    pending = [(e, root) for e in _includes(data, path)]
    loaded = {root}
    while pending:
        entry, declared_in = pending.pop(0)
        target = _include_path(entry, declared_in, root)
        if target in loaded:
            continue
        loaded.add(target)
        included = _read_yaml(target, f"included LiteLLM config (include of {declared_in})")
        for key, value in included.items():
            if key == "include":
                continue
            base = merged.get(key)
            merged[key] = [*base, *value] if isinstance(base, list) and isinstance(value, list) else value
        pending.extend((e, target) for e in _includes(included, target))
    return merged


def _check_litellm_settings(settings: Any, where: str) -> None:
    if not isinstance(settings, Mapping):
        return  # pydantic names the type error
    refused = sorted(k for k in settings if k not in LITELLM_SETTINGS)
    if refused:
        raise ConfigError(f"{where}: litellm_settings: {', '.join(refused)} cannot be honoured by "
                          "hermes-delegate.", hint=_PROXY_KEY_HINT)
    params = settings.get("cache_params")
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"{where}: litellm_settings.cache_params: must be a mapping.",
                          hint="cache_params: {type: local} or {type: redis, host: ..., port: ...}")


def _load_litellm_config(path: Path) -> dict[str, Any]:
    data = _merge_includes(_read_yaml(path, "LiteLLM config"), path)
    unknown = sorted(k for k in data if k not in ROUTER_SECTIONS and k not in IGNORED_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: {', '.join(unknown)}: cannot be honoured by hermes-delegate "
                          f"(it uses {', '.join(ROUTER_SECTIONS)}, include, and ignores "
                          f"{', '.join(IGNORED_SECTIONS)}).", hint=_PROXY_KEY_HINT)
    out = {k: data[k] for k in ROUTER_SECTIONS if k in data and data[k] is not None}
    ignored = [k for k in IGNORED_SECTIONS if k in data]
    if ignored:
        out["ignored_sections"] = ignored
    _check_litellm_settings(out.get("litellm_settings") or {}, str(path))
    return out


def config_from_dict(data: Mapping[str, Any], *, source: str | None = None,
                     base_dir: Path | None = None) -> Config:
    """Validate a config mapping. `litellm_config` paths resolve against `base_dir`."""
    where = source or "(inline)"
    if not isinstance(data, Mapping):
        raise ConfigError(f"Invalid config {where}: the top level must be a mapping.")
    data = dict(data)
    proxy_keys = sorted(k for k in ("model_list", "router_settings", "litellm_settings", "general_settings")
                        if k in data)
    if proxy_keys and "router" not in data:  # a LiteLLM proxy config.yaml given as our config
        raise ConfigError(
            f"{where} looks like a LiteLLM proxy config (top-level {', '.join(proxy_keys)}), not a "
            "hermes-delegate config.",
            hint=f"Point a hermes-delegate config at it: `litellm_config: {where}` (or move those keys "
                 "under `router:`).")
    lc = data.get("litellm_config")
    if lc is not None:
        if not isinstance(lc, str) or not lc.strip():
            raise ConfigError(f"Invalid config {where}: litellm_config: must be a file path.")
        if data.get("router"):
            raise ConfigError(f"Invalid config {where}: router: give either router or litellm_config, not both.")
        if data.get("remote") is not None:
            raise ConfigError(f"Invalid config {where}: remote: give either remote or litellm_config, not both.")
        lc_path = Path(os.path.expanduser(lc))
        if not lc_path.is_absolute() and base_dir is not None:
            lc_path = base_dir / lc_path
        router = _load_litellm_config(lc_path)
        try:  # errors in the LiteLLM file name that file, with LiteLLM's own key paths
            RouterSection.model_validate(router)
        except ValidationError as exc:
            raise _format_validation(exc, f"{lc_path} (litellm_config of {where})") from None
        data["router"] = router
        data["litellm_config"] = str(lc_path)
    elif isinstance(data.get("router"), Mapping):
        _check_litellm_settings(data["router"].get("litellm_settings") or {}, f"{where}: router")
    if data.get("remote") is not None and data.get("router"):
        raise ConfigError(f"Invalid config {where}: remote: give either remote or router, not both.",
                          hint="remote lists its groups from the proxy; drop the router section.")
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise _format_validation(exc, where) from None


def load_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None) -> Config:
    """Load the config in force: explicit path, then $HERMES_DELEGATE_CONFIG, then the default place."""
    env = os.environ if env is None else env
    if path is None and env.get("HERMES_DELEGATE_CONFIG"):
        path = env["HERMES_DELEGATE_CONFIG"]
    if path is None:
        default = default_config_path(env)
        if not default.exists():
            return Config()
        path = default
    p = Path(os.path.expanduser(str(path)))
    data = _read_yaml(p, "Config file")
    return config_from_dict(data, source=str(p), base_dir=p.parent)
