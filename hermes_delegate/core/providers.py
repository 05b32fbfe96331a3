"""Provider slugs: hermes-agent's names and LiteLLM's, mapped to a LiteLLM prefix.

Pure data plus two lookups. `--provider SLUG` goes through `provider_for_slug()`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from .litellm_providers import LITELLM_PROVIDERS
from .errors import UnknownProviderError

__all__ = ["FIRST_PARTY", "VENDOR_PREFIXED", "ProviderInfo", "provider_for_slug", "credential_envs", "all_slugs",
           "is_litellm_provider", "aggregator_vendor"]


@dataclass(frozen=True)
class ProviderInfo:
    slug: str  # what the user typed (normalised)
    prefix: str  # the LiteLLM provider prefix
    api_base: str | None = None  # set for OpenAI-compatible providers LiteLLM does not know by name
    key_env: str | None = None  # the env var holding the key, when LiteLLM would not guess it


# hermes-agent slug (and common spellings) -> LiteLLM prefix. Identity mappings for every
# LiteLLM provider are added below, so only the differences live here.
_HERMES_SLUGS: dict[str, ProviderInfo] = {
    "google": ProviderInfo("google", "gemini"),
    "google-gemini": ProviderInfo("google-gemini", "gemini"),
    "z-ai": ProviderInfo("z-ai", "zai"),
    "zhipu": ProviderInfo("zhipu", "zai"),
    "glm": ProviderInfo("glm", "zai"),
    "kimi": ProviderInfo("kimi", "moonshot"),
    "kimi-coding": ProviderInfo("kimi-coding", "moonshot"),
    "moonshotai": ProviderInfo("moonshotai", "moonshot"),
    "qwen": ProviderInfo("qwen", "dashscope"),
    "alibaba": ProviderInfo("alibaba", "dashscope"),
    "together": ProviderInfo("together", "together_ai"),
    "fireworks": ProviderInfo("fireworks", "fireworks_ai"),
    "copilot": ProviderInfo("copilot", "github_copilot"),
    "github-copilot": ProviderInfo("github-copilot", "github_copilot"),
    "openai-api": ProviderInfo("openai-api", "openai"),
    "vercel": ProviderInfo("vercel", "vercel_ai_gateway"),
    "lmstudio": ProviderInfo("lmstudio", "lm_studio"),
    "hf": ProviderInfo("hf", "huggingface"),
    "meta": ProviderInfo("meta", "meta_llama"),
    "grok": ProviderInfo("grok", "xai"),
    "claude": ProviderInfo("claude", "anthropic"),
    "litellm": ProviderInfo("litellm", "litellm_proxy"),
    "nous": ProviderInfo(
        "nous", "openai", api_base="https://inference-api.nousresearch.com/v1", key_env="NOUS_API_KEY"
    ),
}

# Env vars LiteLLM reads for a provider's key. Presence is all we check; values are never read out.
_KEY_ENVS: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY", "OR_API_KEY"),
    "zai": ("ZAI_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "moonshot": ("MOONSHOT_API_KEY",),
    "dashscope": ("DASHSCOPE_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
    "fireworks_ai": ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"),
    "meta_llama": ("LLAMA_API_KEY",),
    "minimax": ("MINIMAX_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "huggingface": ("HF_TOKEN", "HUGGINGFACE_API_KEY"),
    "vercel_ai_gateway": ("VERCEL_AI_GATEWAY_API_KEY",),
    "litellm_proxy": ("LITELLM_PROXY_API_KEY",),
    "nebius": ("NEBIUS_API_KEY",),
    "deepinfra": ("DEEPINFRA_API_KEY",),
    "perplexity": ("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"),
    "cerebras": ("CEREBRAS_API_KEY",),
}
# Providers that need no key (local servers) or whose auth is not an API-key env var.
_KEYLESS = frozenset({"ollama", "ollama_chat", "lm_studio", "vllm", "hosted_vllm", "llamafile", "github_copilot",
                      "bedrock", "bedrock_converse", "vertex_ai", "sagemaker", "chatgpt"})


#: Providers that make the models they serve. Among several catalog providers for one bare id,
#: a single first-party one wins over resellers and clouds (azure_ai, snowflake, aihubmix, …).
FIRST_PARTY = frozenset({"anthropic", "openai", "gemini", "xai", "deepseek", "zai", "moonshot", "dashscope",
                         "mistral", "meta_llama", "minimax", "cohere", "ai21", "perplexity"})


#: Aggregators whose ids are `<vendor>/<model>`, and what each calls a model maker (by LiteLLM prefix)
#: where it differs from the prefix: `gpt-5 --provider openrouter` → `openrouter/openai/gpt-5`.
VENDOR_PREFIXED: dict[str, dict[str, str]] = {
    "openrouter": {"anthropic": "anthropic", "openai": "openai", "text-completion-openai": "openai",
                   "gemini": "google", "xai": "x-ai", "deepseek": "deepseek", "zai": "z-ai",
                   "moonshot": "moonshotai", "dashscope": "qwen", "mistral": "mistralai",
                   "meta_llama": "meta-llama", "minimax": "minimax", "cohere": "cohere", "cohere_chat": "cohere",
                   "ai21": "ai21", "perplexity": "perplexity"},
    "vercel_ai_gateway": {"anthropic": "anthropic", "openai": "openai", "text-completion-openai": "openai",
                          "gemini": "google", "xai": "xai", "deepseek": "deepseek", "zai": "zai",
                          "moonshot": "moonshotai", "dashscope": "alibaba", "mistral": "mistral",
                          "meta_llama": "meta", "cohere": "cohere", "cohere_chat": "cohere",
                          "perplexity": "perplexity"},
}


def aggregator_vendor(aggregator: str, maker: str | None) -> str | None:
    """The vendor namespace `aggregator` files `maker`'s models under (`openrouter`, `gemini` →
    `google`), or None when it is not a vendor-prefixed aggregator or the maker is not known to it."""
    return VENDOR_PREFIXED.get(aggregator, {}).get(maker or "")


def _norm(slug: str) -> str:
    return slug.strip().lower()


def is_litellm_provider(prefix: str) -> bool:
    return prefix in LITELLM_PROVIDERS


def all_slugs() -> list[str]:
    return sorted(set(_HERMES_SLUGS) | set(LITELLM_PROVIDERS))


def provider_for_slug(slug: str) -> ProviderInfo:
    """Map a hermes or LiteLLM provider slug to its LiteLLM prefix, or raise with the nearest slugs."""
    s = _norm(slug)
    if s in _HERMES_SLUGS:
        return _HERMES_SLUGS[s]
    if s in LITELLM_PROVIDERS:
        return ProviderInfo(s, s)
    alt = s.replace("-", "_")
    if alt in LITELLM_PROVIDERS:
        return ProviderInfo(s, alt)
    close = difflib.get_close_matches(s, all_slugs(), n=3, cutoff=0.6)
    raise UnknownProviderError(
        f"Unknown provider {slug!r}.",
        hint="Use a LiteLLM provider name or a hermes slug (openrouter, anthropic, zai, deepseek, xai, gemini, "
             "nous, …).",
        suggestions=close,
    )


def credential_envs(prefix: str, key_env: str | None = None) -> tuple[str, ...]:
    """The env var names that would hold a key for this provider; () when none is needed."""
    if key_env:
        return (key_env,)
    if prefix in _KEYLESS:
        return ()
    return _KEY_ENVS.get(prefix, (f"{prefix.upper()}_API_KEY",))


def has_credentials(prefix: str, env: Mapping[str, str], key_env: str | None = None) -> bool:
    names = credential_envs(prefix, key_env)
    return not names or any(env.get(n) for n in names)
