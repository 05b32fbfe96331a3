"""Are a deployment's credentials present? Answered by name only: `set`/`missing` plus the env var
name. Values are never read out, returned or printed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .env_refs import env_ref_name
from .providers import credential_envs

__all__ = ["CredentialStatus", "deployment_credentials", "deployment_provider", "unset_refs"]

@dataclass(frozen=True)
class CredentialStatus:
    status: str  # "set" | "missing" | "not_needed"
    key_env: str | None  # the env var that holds (or would hold) the key; None for a literal key

    @property
    def present(self) -> bool:
        return self.status != "missing"

    def to_dict(self) -> dict[str, Any]:
        return {"credentials": self.status, "key_env": self.key_env}


def deployment_provider(params: Mapping[str, Any]) -> str:
    """The LiteLLM provider prefix of a deployment's `litellm_params`."""
    if params.get("custom_llm_provider"):
        return str(params["custom_llm_provider"])
    prefix, _, rest = str(params.get("model", "")).partition("/")
    return prefix if rest else "openai"


def deployment_credentials(params: Mapping[str, Any], env: Mapping[str, str], *, provider: str | None = None,
                           key_env: str | None = None) -> CredentialStatus:
    """For a deployment's `litellm_params`. `provider`/`key_env` override what the params imply
    (for a model that is not a configured deployment, e.g. a `--provider nous` id)."""
    key = params.get("api_key")
    name = env_ref_name(key)
    if name is not None:
        return CredentialStatus("set" if env.get(name) else "missing", name)
    if key:
        return CredentialStatus("set", None)  # a literal key in the config: present, never shown
    names = credential_envs(provider or deployment_provider(params), key_env)
    if not names:
        return CredentialStatus("not_needed", None)
    found = next((n for n in names if env.get(n)), None)
    return CredentialStatus("set" if found else "missing", found or names[0])


def unset_refs(params: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """Names of the `os.environ/NAME` references in a deployment's `litellm_params` (api_key, api_base,
    any other value) that `env` does not set. Such a deployment is not callable: LiteLLM would fall
    back to its own default variable or public endpoint."""
    out: list[str] = []
    for value in params.values():
        name = env_ref_name(value)
        if name is not None and not env.get(name) and name not in out:
            out.append(name)
    return out
