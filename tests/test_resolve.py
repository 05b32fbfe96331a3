"""Model-string resolution: one table of inputs → expected resolution or error, plus family aliases,
key-based disambiguation, and the litellm snapshots the pure core relies on.

No litellm import except in the snapshot test at the bottom; expected family ids are computed from
the installed catalog (never hard-coded), so these tests survive litellm upgrades.
"""

from __future__ import annotations

import re

import pytest

from hermes_delegate import (
    AmbiguousModelError,
    ConfigError,
    Resolution,
    Resolver,
    SpecError,
    UnknownModelError,
    UnknownProviderError,
    UsageError,
    config_from_dict,
)
from hermes_delegate.core.catalog import FAMILIES, default_catalog

NOUS_BASE = "https://inference-api.nousresearch.com/v1"

CONFIG = {
    "delegation": {
        "aliases": {
            "small": "haiku",  # tiers
            "medium": "sonnet",
            "large": "opus",
            "cheap": "small",  # alias → tier → family
            "fast": "glm-4.7 --provider z-ai",
            "free-or": "openrouter/stepfun/step-3.5-flash:free",
            "teamalias": "team",
            "loop1": "loop2",  # cycle
            "loop2": "loop1",
            "selfloop": "selfloop",
            "bad-target": "openrouter:stepfun/x",
        }
    },
    "router": {
        "model_list": [
            {"model_name": "team", "litellm_params": {"model": "openai/team-model", "api_base": "http://127.0.0.1:9/v1"}},
            {"model_name": "mixed", "litellm_params": {"model": "openai/m1"}},
            {"model_name": "mixed", "litellm_params": {"model": "anthropic/m2"}},
        ]
    },
}


def fam(name: str) -> str:
    fid = default_catalog().family(name)
    assert fid, f"family {name!r} resolves to nothing in the installed catalog"
    return fid


def expand(value):
    """'{haiku}' → the catalog's current haiku id (so the table never hard-codes the newest model)."""
    if isinstance(value, str):
        return re.sub(r"\{([a-z-]+)\}", lambda m: fam(m.group(1)), value)
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    # An explicit empty env: no key is set, whatever the machine has.
    return Resolver(config_from_dict(CONFIG), env={})


# (input, expected fields). Fields are model/provider/variant/resolved_via and optionally chain.
OK = [
    # -- tiers and aliases (recursive) ---------------------------------------------------------
    ("small", dict(model="{haiku}", provider="anthropic", variant=None, resolved_via="tier",
                   chain=["small", "haiku", "{haiku}"])),
    ("medium", dict(model="{sonnet}", provider="anthropic", variant=None, resolved_via="tier")),
    ("large", dict(model="{opus}", provider="anthropic", variant=None, resolved_via="tier")),
    ("cheap", dict(model="{haiku}", provider="anthropic", variant=None, resolved_via="alias",
                   chain=["cheap", "small", "haiku", "{haiku}"])),
    ("fast", dict(model="zai/glm-4.7", provider="zai", variant=None, resolved_via="alias",
                  chain=["fast", "glm-4.7 --provider z-ai", "zai/glm-4.7"])),
    ("free-or", dict(model="openrouter/stepfun/step-3.5-flash:free", provider="openrouter", variant="free",
                     resolved_via="alias")),
    # -- groups --------------------------------------------------------------------------------
    ("team", dict(model="team", provider="openai", variant=None, resolved_via="group")),
    ("teamalias", dict(model="team", provider="openai", variant=None, resolved_via="alias")),
    ("mixed", dict(model="mixed", provider="mixed", variant=None, resolved_via="group")),
    # -- families ------------------------------------------------------------------------------
    ("haiku", dict(model="{haiku}", provider="anthropic", variant=None, resolved_via="family",
                   chain=["haiku", "{haiku}"])),
    # `:thinking` on Anthropic is extended thinking (a param), never a suffixed id Anthropic does not serve
    ("haiku:thinking", dict(model="{haiku}", provider="anthropic", variant="thinking",
                            resolved_via="family",
                            params={"thinking": {"type": "enabled", "budget_tokens": 4096}})),
    ("gpt", dict(model="{gpt}", provider="openai", variant=None, resolved_via="family")),
    ("glm", dict(model="{glm}", provider="zai", variant=None, resolved_via="family")),
    # -- full litellm ids ----------------------------------------------------------------------
    ("anthropic/claude-sonnet-4-5", dict(model="anthropic/claude-sonnet-4-5", provider="anthropic", variant=None,
                                         resolved_via="litellm_id")),
    ("openrouter/anthropic/claude-3.5-sonnet", dict(model="openrouter/anthropic/claude-3.5-sonnet",
                                                    provider="openrouter", variant=None, resolved_via="litellm_id")),
    ("openrouter/stepfun/step-3.5-flash:free", dict(model="openrouter/stepfun/step-3.5-flash:free",
                                                    provider="openrouter", variant="free",
                                                    resolved_via="litellm_id")),
    ("openrouter/deepseek/deepseek-r1:thinking", dict(model="openrouter/deepseek/deepseek-r1:thinking",
                                                      provider="openrouter", variant="thinking",
                                                      resolved_via="litellm_id")),
    ("zai/glm-4.7", dict(model="zai/glm-4.7", provider="zai", variant=None, resolved_via="litellm_id")),
    # -- bare ids via the catalog --------------------------------------------------------------
    ("glm-4.7", dict(model="zai/glm-4.7", provider="zai", variant=None, resolved_via="catalog",
                     chain=["glm-4.7", "zai/glm-4.7"])),
    ("deepseek-chat", dict(model="deepseek/deepseek-chat", provider="deepseek", variant=None,
                           resolved_via="catalog")),
    ("gpt-4o", dict(model="openai/gpt-4o", provider="openai", variant=None, resolved_via="catalog")),
    ("claude-sonnet-4-5", dict(model="anthropic/claude-sonnet-4-5", provider="anthropic", variant=None,
                               resolved_via="catalog")),
    # -- --provider (hermes slugs and litellm names) -------------------------------------------
    ("Qwen/Qwen3-14B --provider nebius", dict(model="nebius/Qwen/Qwen3-14B", provider="nebius", variant=None,
                                              resolved_via="provider_flag")),
    ("gemini-2.5-pro --provider google", dict(model="gemini/gemini-2.5-pro", provider="gemini", variant=None,
                                              resolved_via="provider_flag")),
    ("glm-4.7 --provider z-ai", dict(model="zai/glm-4.7", provider="zai", variant=None,
                                     resolved_via="provider_flag")),
    ("glm-4.7 --provider=zai", dict(model="zai/glm-4.7", provider="zai", variant=None,
                                    resolved_via="provider_flag")),
    ("GLM-4.7 --provider ZAI", dict(model="zai/GLM-4.7", provider="zai", variant=None,
                                    resolved_via="provider_flag")),
    ("zai/glm-4.7 --provider zai", dict(model="zai/glm-4.7", provider="zai", variant=None,
                                        resolved_via="provider_flag")),
    ("kimi-k2 --provider kimi", dict(model="moonshot/kimi-k2", provider="moonshot", variant=None,
                                     resolved_via="provider_flag")),
    ("hermes-3 --provider nous", dict(model="openai/hermes-3", provider="openai", variant=None,
                                      resolved_via="provider_flag")),
    ("haiku --provider openrouter", dict(model="openrouter/{haiku}", provider="openrouter", variant=None,
                                         resolved_via="provider_flag")),
    ("haiku --provider anthropic", dict(model="{haiku}", provider="anthropic", variant=None,
                                        resolved_via="provider_flag")),
    ("stepfun/step-3.5-flash:free --provider openrouter", dict(model="openrouter/stepfun/step-3.5-flash:free",
                                                               provider="openrouter", variant="free",
                                                               resolved_via="provider_flag")),
    # -- ignored hermes flags ------------------------------------------------------------------
    ("haiku --global", dict(model="{haiku}", provider="anthropic", variant=None, resolved_via="family")),
    ("haiku --session --once", dict(model="{haiku}", provider="anthropic", variant=None, resolved_via="family")),
    ("glm-4.7 --once --provider zai", dict(model="zai/glm-4.7", provider="zai", variant=None,
                                           resolved_via="provider_flag")),
    ("  glm-4.7  ", dict(model="zai/glm-4.7", provider="zai", variant=None, resolved_via="catalog")),
]

# (input, error class, a string that must be among the suggestions — or, prefixed "msg:", in the message)
ERRORS = [
    ("loop1", ConfigError, "msg:cycle"),
    # a suffix only OpenRouter serves is refused for other providers, with the corrected form
    ("small:free", SpecError, "msg:does not serve"),
    ("deepseek-reasoner:thinking", SpecError, "deepseek/deepseek-reasoner"),
    ("selfloop", ConfigError, "msg:cycle"),
    ("bad-target", ConfigError, "stepfun/x --provider openrouter"),
    ("Qwen/Qwen3-14B", AmbiguousModelError, "Qwen/Qwen3-14B --provider nebius"),
    ("openrouter:stepfun/step-3.5-flash", SpecError, "stepfun/step-3.5-flash --provider openrouter"),
    ("openrouter:stepfun/step-3.5-flash:free", SpecError, "stepfun/step-3.5-flash:free --provider openrouter"),
    ("haiku --bogus", SpecError, "msg:--bogus"),
    ("haiku -x", SpecError, "msg:'-x'"),
    ("", SpecError, "msg:empty"),
    ("   ", SpecError, "msg:empty"),
    (None, SpecError, "msg:must be a string"),
    (42, SpecError, "msg:must be a string"),
    (["haiku"], SpecError, "msg:must be a string"),
    ("glm-4.7 --provider opnrouter", UnknownProviderError, "openrouter"),
    ("x --provider googel", UnknownProviderError, "google"),
    ("sonet", UnknownModelError, "sonnet"),
    ("hiaku", UnknownModelError, "haiku"),
    ("smal", UnknownModelError, "small"),
    ("stepfun/step-3.5-flash", UnknownModelError, "stepfun/step-3.5-flash --provider openrouter"),
    ("totally-unknown-model-xyz", UnknownModelError, "msg:totally-unknown-model-xyz"),
    ("x" * 600, SpecError, "msg:512"),
    ("a b", SpecError, "msg:more than one name"),
    ("haiku --provider", SpecError, "msg:--provider needs a slug"),
    ("team --provider openai", SpecError, "team"),
    ("small --provider anthropic", SpecError, "small"),
    ("'unbalanced", SpecError, "msg:Cannot parse"),
    ("bad!name", SpecError, "msg:not a valid model name"),
]


def test_table_is_big_enough_and_every_row_resolves_as_stated(resolver: Resolver):
    """The whole table in one test: its size AND each row's actual outcome (model and resolved_via, or
    the exact error type), so a row that stops resolving as stated fails here too."""
    assert len(OK) + len(ERRORS) >= 45
    assert len({repr(t) for t, _ in OK}) == len(OK), "duplicate input in OK"
    assert len({repr(t) for t, _, _ in ERRORS}) == len(ERRORS), "duplicate input in ERRORS"
    wrong = []
    for text, expected in OK:
        assert {"model", "resolved_via"} <= set(expected), f"row {text!r} must state model and resolved_via"
        got = resolver.resolve(text).to_dict()
        for key in ("model", "resolved_via"):
            if got[key] != expand(expected[key]):
                wrong.append((text, key, got[key], expand(expected[key])))
    for text, cls, _ in ERRORS:
        try:
            res = resolver.resolve(text)  # type: ignore[arg-type]
        except UsageError as err:
            if type(err) is not cls:
                wrong.append((text, "error", type(err).__name__, cls.__name__))
        else:
            wrong.append((text, "error", f"resolved to {res.to_dict()['model']!r}", cls.__name__))
    assert wrong == [], "\n".join(f"{t!r}: {k} = {g!r}, table says {e!r}" for t, k, g, e in wrong)


@pytest.mark.parametrize(("text", "expected"), OK, ids=[t for t, _ in OK])
def test_resolves(resolver: Resolver, text: str, expected: dict):
    res = resolver.resolve(text)
    got = res.to_dict()
    assert got["input"] == text
    for key, value in expected.items():
        assert got[key] == expand(value), f"{key} of {text!r}"
    assert got["chain"][0] == text.strip()
    assert got["chain"][-1] == got["model"] or res.is_group


@pytest.mark.parametrize(("text", "cls", "key"), ERRORS, ids=[repr(t)[:40] for t, _, _ in ERRORS])
def test_errors(resolver: Resolver, text: object, cls: type, key: str):
    with pytest.raises(UsageError) as info:
        resolver.resolve(text)  # type: ignore[arg-type]
    err = info.value
    assert type(err) is cls, f"{text!r} raised {type(err).__name__}: {err}"
    if key.startswith("msg:"):
        assert key[4:] in err.message
    else:
        assert key in err.suggestions, err.suggestions
    assert err.to_dict()["type"] == cls.kind


# -- details the table cannot express ---------------------------------------------------------
def test_nous_provider_sets_api_base_and_key_env(resolver: Resolver):
    res = resolver.resolve("hermes-3 --provider nous")
    assert res.api_base == NOUS_BASE
    assert res.key_env == "NOUS_API_KEY"


def test_group_flag(resolver: Resolver):
    assert resolver.resolve("team").is_group
    assert resolver.resolve("teamalias").is_group
    assert not resolver.resolve("glm-4.7").is_group


def test_ambiguous_suggestions_are_ready_to_use(resolver: Resolver):
    with pytest.raises(AmbiguousModelError) as info:
        resolver.resolve("Qwen/Qwen3-14B")
    sugg = info.value.suggestions
    assert len(sugg) >= 2
    for s in sugg:
        assert re.fullmatch(r"Qwen/Qwen3-14B --provider [a-z_]+", s), s
        res = resolver.resolve(s)  # every suggestion must itself resolve
        assert res.resolved_via == "provider_flag"
        assert res.model == f"{res.provider}/Qwen/Qwen3-14B"


@pytest.mark.parametrize(("env_name", "provider"), [("DEEPINFRA_API_KEY", "deepinfra"), ("NEBIUS_API_KEY", "nebius")])
def test_ambiguous_id_resolves_when_one_key_is_set(monkeypatch: pytest.MonkeyPatch, env_name: str, provider: str):
    monkeypatch.setenv(env_name, "test-value-not-a-real-key")
    res = Resolver(config_from_dict(CONFIG)).resolve("Qwen/Qwen3-14B")  # reads os.environ
    assert (res.model, res.provider, res.resolved_via) == (f"{provider}/Qwen/Qwen3-14B", provider, "catalog")
    # and through an explicit env mapping
    res2 = Resolver(config_from_dict(CONFIG), env={env_name: "x"}).resolve("Qwen/Qwen3-14B")
    assert res2.model == res.model


def test_ambiguous_id_resolves_to_a_configured_provider():
    cfg = dict(CONFIG, router={"model_list": [
        {"model_name": "neb", "litellm_params": {"model": "nebius/Qwen/Qwen3-14B"}}]})
    assert Resolver(config_from_dict(cfg), env={}).resolve("Qwen/Qwen3-14B").provider == "nebius"


def test_alias_cycle_is_a_config_error_naming_the_chain(resolver: Resolver):
    with pytest.raises(ConfigError) as info:
        resolver.resolve("loop1")
    assert "loop1 -> loop2 -> loop1" in info.value.message


def test_to_dict_keys(resolver: Resolver):
    for text in ("small", "team", "glm-4.7", "hermes-3 --provider nous"):
        d = resolver.resolve(text).to_dict()
        assert set(d) == {"input", "model", "provider", "variant", "resolved_via", "chain"}
        assert isinstance(d["chain"], list)


def test_resolution_is_cached_and_stable(resolver: Resolver):
    assert resolver.resolve("glm-4.7") is resolver.resolve("glm-4.7")
    assert isinstance(resolver.resolve("glm-4.7"), Resolution)


# -- family aliases ---------------------------------------------------------------------------
def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_alias(resolver: Resolver, name: str):
    res = resolver.resolve(name)
    family = FAMILIES[name]
    assert res.resolved_via == "family"
    assert res.provider == family.provider
    assert res.model.startswith(family.provider + "/")
    assert default_catalog().knows(res.model), f"{res.model} is not in the catalog"
    assert family.provider in default_catalog().providers_for(res.model.split("/", 1)[1])


def test_haiku_is_claude_haiku_4_5_or_newer(resolver: Resolver):
    model = resolver.resolve("haiku").model
    m = re.fullmatch(r"anthropic/claude-haiku-(\d+)(?:-(\d{1,2}))?", model)
    assert m, model
    assert (int(m.group(1)), int(m.group(2) or 0)) >= (4, 5)
    # the newest haiku the catalog lists, whatever that is
    cat = default_catalog()
    others = [b for b in cat.bare_names() if re.fullmatch(r"claude-haiku-\d+(-\d{1,2})?", b)
              and "anthropic" in cat.providers_for(b)]
    newest = max(others, key=_version)
    assert _version(model.split("/", 1)[1]) == _version(newest)


# -- snapshots of litellm data used without importing litellm ---------------------------------
@pytest.mark.litellm
def test_provider_snapshot_and_family_ids_match_installed_litellm():
    import litellm  # the only litellm import in this file

    from hermes_delegate.core.litellm_providers import LITELLM_PROVIDERS

    installed = {getattr(p, "value", p) for p in litellm.provider_list}
    # The snapshot is the union over the litellm versions CI runs (1.106.2 and the newest): every
    # prefix the installed litellm knows must be accepted.
    assert installed <= set(LITELLM_PROVIDERS), f"missing: {sorted(installed - set(LITELLM_PROVIDERS))}"

    for name in FAMILIES:
        fid = default_catalog().family(name)
        assert fid, name
        prov, _, bare = fid.partition("/")
        entry = litellm.model_cost.get(fid) or litellm.model_cost.get(bare)
        assert entry is not None, f"{name} → {fid} is not in litellm.model_cost"
        assert entry.get("litellm_provider") == prov


def test_a_second_provider_flag_is_an_error_not_a_silent_override():
    from hermes_delegate import SpecError, parse_model_string

    for text in ("glm-4.7 --provider zai --provider openrouter", "x --provider=a --provider b"):
        with pytest.raises(SpecError, match="twice"):
            parse_model_string(text)
    assert parse_model_string("glm-4.7 --provider zai").provider == "zai"


def test_provider_flag_finds_the_vendor_prefixed_catalog_id():
    from hermes_delegate.core.catalog import Catalog
    from hermes_delegate.core.config import Config

    cat = Catalog({"gpt-5": {"litellm_provider": "openai", "mode": "chat"},
                   "openrouter/openai/gpt-5": {"litellm_provider": "openrouter", "mode": "chat"}})
    r = Resolver(Config(), catalog=cat, env={})
    assert r.resolve("gpt-5 --provider openrouter").model == "openrouter/openai/gpt-5"
    assert r.resolve("gpt-5:free --provider openrouter").model == "openrouter/openai/gpt-5:free"
    assert r.resolve("openai/gpt-5 --provider openrouter").model == "openrouter/openai/gpt-5"


def test_provider_flag_names_the_vendor_with_the_installed_catalog():
    """litellm 1.106.2's own catalog has no openrouter/* ids, so the vendor comes from the model's maker
    (the catalog's native provider, else its one first-party provider), in the aggregator's spelling."""
    from hermes_delegate.core.config import Config

    cat = default_catalog()
    r = Resolver(Config(), env={})  # default_catalog()
    assert cat.native_provider("gpt-5") == "openai"
    assert r.resolve("gpt-5 --provider openrouter").model == "openrouter/openai/gpt-5"
    assert r.resolve("gpt-5:free --provider openrouter").model == "openrouter/openai/gpt-5:free"
    assert r.resolve("gpt-5 --provider vercel").model == "vercel_ai_gateway/openai/gpt-5"
    sonnet = fam("sonnet").split("/", 1)[1]
    assert cat.native_provider(sonnet) == "anthropic"
    assert r.resolve(f"{sonnet} --provider openrouter").model == f"openrouter/anthropic/{sonnet}"
    gemini = fam("gemini").split("/", 1)[1]  # catalog key gemini/…: no native provider, one first-party
    assert r.resolve(f"{gemini} --provider openrouter").model == f"openrouter/google/{gemini}"
    assert r.resolve("gemini --provider openrouter").model == f"openrouter/google/{gemini}"
    assert r.resolve("glm-4.7 --provider openrouter").model == "openrouter/z-ai/glm-4.7"
    # an id that already names its vendor, and a provider whose ids are not vendor-prefixed: unchanged
    assert r.resolve("stepfun/step-3.5-flash --provider openrouter").model == "openrouter/stepfun/step-3.5-flash"
    assert r.resolve("gpt-5 --provider nebius").model == "nebius/gpt-5"


@pytest.mark.parametrize("slug", ["openrouter", "vercel"])
def test_provider_flag_refuses_an_aggregator_id_without_a_vendor(slug: str):
    from hermes_delegate.core.config import Config

    with pytest.raises(SpecError) as info:
        Resolver(Config(), env={}).resolve(f"totally-unknown-model-xyz:free --provider {slug}")
    err = info.value
    assert err.to_dict()["type"] == "spec"
    assert f"vendor/totally-unknown-model-xyz:free --provider {slug}" in err.hint
    assert "openrouter/totally-unknown-model-xyz" not in str(err)
