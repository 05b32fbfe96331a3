"""The config models: one YAML document's shape, validated with pydantic. Pure: no files, no network.

    delegation:            # what this package decides
      model: small         # default model (precedence level 3)
      aliases: {small: haiku, medium: sonnet, large: opus}
      max_concurrency: 16
      task_timeout_s: 600
      allow: [small, "anthropic/*"]
      max_tasks: 50
      budget_usd: 1.00     # = budget.per_call_usd
      budget: {daily_usd: 20, per_session_usd: 5, monthly_usd: 200, timezone: UTC,   # core/caps.py
               on_over_budget: refuse}   # or downgrade: move a task that does not fit down `tiers`
      tiers: [small, medium, large]      # the ladder, cheapest first (default: the tier aliases, in order)
      auto: {SIMPLE: small, MEDIUM: medium, COMPLEX: large, REASONING: large}   # `model: auto`
      ledger: true         # the spend ledger (spend/): true = the XDG state dir, a path, or false
    router:                # LiteLLM's own format, for litellm.Router (os.environ/ refs resolved by us)
      model_list: [...]
      router_settings: {...}
      litellm_settings: {...}
      environment_variables: {...}   # feed os.environ/ lookups only (Config.env_lookup)
    litellm_config: ./litellm.yaml   # or: an existing LiteLLM proxy config (include: merged; what is
                                     # honoured, ignored or refused: docs/litellm.md)
    remote:                          # or: a running LiteLLM proxy (see sources/remote_proxy.py)
      base_url: http://127.0.0.1:4000
      api_key_env: LITELLM_PROXY_API_KEY

Reading files (include:, litellm_config:, the default place) is `sources/config_file.py`; a `remote`
proxy's groups are listed by `sources/remote_proxy.py` and handed to the Resolver, never fetched here.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .auto import check_auto_settings
from .caps import BudgetSettings, price_override_problems

__all__ = [
    "Config",
    "DelegationSettings",
    "BudgetSettings",
    "RouterSection",
    "RemoteProxy",
    "Deployment",
    "DEFAULT_SYSTEM_PROMPT",
]


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


#: Names no task may read by path (matched against every path component): credentials, git internals.
DEFAULT_FILE_DENY: tuple[str, ...] = (".env", ".env.*", "*.pem", "*.key", "id_*", ".git", ".netrc", ".pgpass",
                                      "*.p12", "*.pfx", "credentials", "credentials.json", ".npmrc", ".pypirc")


class FilesSettings(_Strict):
    """`delegation.files`: what a task may name in `files` (read by sources/files.py)."""

    roots: list[str] = Field(default_factory=list, description="more roots besides the host's working directory")
    deny: list[str] = Field(default_factory=lambda: list(DEFAULT_FILE_DENY),
                            description="glob patterns matched against every path component")
    max_file_bytes: int = Field(default=100_000, ge=1)
    max_task_bytes: int = Field(default=200_000, ge=1)


class DelegationSettings(_Strict):
    model: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=16, ge=1, le=100_000)
    task_timeout_s: float | None = Field(default=600.0, gt=0)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int | None = Field(default=None, ge=1, description="completion cap per task; prices the budget")
    allow: list[str] | None = None
    max_tasks: int = Field(default=100, ge=1, le=100_000)
    budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    budget: BudgetSettings = Field(default_factory=BudgetSettings, description="caps at every scope (core/caps)")
    ledger: bool | str = Field(default=True, description="the spend ledger: true = $XDG_STATE_HOME/hermes-delegate/"
                                                         "ledger.sqlite3, a path, or false (off)")
    allow_unpriced: bool = False
    max_input_chars: int = Field(default=200_000, ge=1, description="largest goal+context accepted per task")
    learn_limits: bool = Field(default=True, description="pace a deployment with no configured rpm/tpm by the "
                                                         "rate-limit headers it sends, and adapt on its 429s when it "
                                                         "sends none")
    tiers: list[str] | None = Field(default=None, description="the tier ladder, cheapest first (downgrade moves down "
                                                              "it); default: the aliases named like tiers, in order")
    auto: dict[str, Any] = Field(default_factory=dict, description="`model: auto`: complexity tier → model "
                                 "(SIMPLE, MEDIUM, COMPLEX, REASONING); other keys go to LiteLLM's "
                                 "complexity_router_config")

    files: FilesSettings = Field(default_factory=FilesSettings)
    max_queue_wait_s: float = Field(default=300.0, gt=0, allow_inf_nan=False,
                                    description="the longest a task waits in the rate-limit queue (all its attempts "
                                                "together), with or without a task timeout; then it fails "
                                                "queue_timeout, naming the limit that held it")

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not t.strip() for t in v) or len(set(v)) != len(v)):
            raise ValueError("must list model strings (usually tier aliases), cheapest first, each once")
        return v

    @field_validator("auto")
    @classmethod
    def _auto_settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_auto_settings(v)

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _budget_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # pydantic would read true as $1.00; Python and the tools refuse it too
            raise ValueError(f"must be a number of US dollars, not {str(v).lower()}")
        return v

    @model_validator(mode="after")
    def _per_call_alias(self) -> "DelegationSettings":
        """`budget_usd` is `budget.per_call_usd` by its old name: either may be given, or both if equal."""
        a, b = self.budget_usd, self.budget.per_call_usd
        if a is not None and b is not None and a != b:
            raise ValueError(f"budget_usd ({a}) and budget.per_call_usd ({b}) disagree: give one of them")
        cap = a if a is not None else b
        self.budget_usd = cap
        if self.budget.per_call_usd != cap:
            self.budget = self.budget.model_copy(update={"per_call_usd": cap})
        return self

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

    @field_validator("litellm_params", "model_info")
    @classmethod
    def _prices(cls, v: dict[str, Any]) -> dict[str, Any]:
        problems = price_override_problems(v, "price")  # input_cost_per_token & co: finite, >= 0
        if problems:
            raise ValueError("; ".join(p.split(".", 1)[1] for p in problems))
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

    @model_validator(mode="after")
    def _setting_values(self) -> "RouterSection":
        from .config_values import LITELLM_SETTINGS, ROUTER_SETTINGS, settings_problems  # noqa: PLC0415

        problems = [*settings_problems(self.router_settings, ROUTER_SETTINGS, "router_settings"),
                    *settings_problems(self.litellm_settings, LITELLM_SETTINGS, "litellm_settings")]
        if problems:  # ports, Redis URLs, timeouts: what would otherwise fail deep inside litellm or redis
            raise ValueError("; ".join(problems))
        return self


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RemoteProxy(_Strict):
    """A running LiteLLM proxy: its model groups become ours, each sent as `litellm_proxy/<group>`."""

    base_url: str = Field(min_length=1, description="the proxy's URL, e.g. http://127.0.0.1:4000")
    api_key_env: str | None = Field(default="LITELLM_PROXY_API_KEY", description="env var holding the proxy key")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="for listing the groups")
    allow_direct: bool = Field(default=False, description="let a name that is not a proxy group go directly to its "
                                                          "provider with this machine's keys (off: it is refused)")

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
    source: str | None = Field(default=None, exclude=True, description="the file this came from")

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
