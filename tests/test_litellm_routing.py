"""Routing by LiteLLM's rules (issue 10, parts 1 and 6): wildcards, model_group_alias, variants.

Configs are shaped as LiteLLM's proxy docs show them. Every task goes through real HTTP to the
loopback providers. The honest check that nothing reaches a provider's public endpoint: the
provider default-base env vars LiteLLM reads when a deployment has no `api_base`
(OPENAI_API_BASE/OPENAI_BASE_URL, ANTHROPIC_API_BASE/ANTHROPIC_BASE_URL) point at a *sentinel*
loopback (`providers.beta`), with sentinel keys set; a request that would have gone to the public
endpoint lands there instead. `test_sentinel_is_live` shows an unrouted id does land there.
"""

from __future__ import annotations

import pytest

from conftest import LOOPBACK_KEY, LoopbackPair
from hermes_delegate import Delegator, Task, config_from_dict
from hermes_delegate.core.errors import BatchValidationError, SpecError
from hermes_delegate.core.resolver import Resolver

pytestmark = pytest.mark.litellm


def _root(url: str) -> str:
    return url.rsplit("/v1", 1)[0]


@pytest.fixture
def sentinel(providers: LoopbackPair, monkeypatch: pytest.MonkeyPatch):
    s = providers.beta
    for name in ("OPENAI_API_BASE", "OPENAI_BASE_URL"):
        monkeypatch.setenv(name, s.base_url)
    for name in ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"):
        monkeypatch.setenv(name, _root(s.base_url))
    monkeypatch.setenv("OPENAI_API_KEY", "sentinel-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sentinel-anthropic-key")
    return s


def _config(model_list: list[dict], **router_settings):
    return config_from_dict({"router": {"model_list": model_list,
                                        "router_settings": {"num_retries": 0, **router_settings}}},
                            source="(routing test)")


def _run(cfg, *models: str):
    return Delegator(cfg).run_sync([Task(f"task {m}", model=m) for m in models]).results


def test_sentinel_is_live(providers: LoopbackPair, sentinel):
    """Control: an id no configured route matches gets an implicit deployment with LiteLLM's defaults."""
    cfg = _config([{"model_name": "alpha", "litellm_params": {"model": "openai/alpha-model",
                                                             "api_base": providers.alpha.base_url,
                                                             "api_key": LOOPBACK_KEY}}])
    (r,) = _run(cfg, "openai/gpt-4o")
    assert r.status == "completed", r.error
    assert [q.model for q in sentinel.requests] == ["gpt-4o"]


def test_provider_wildcard_uses_its_api_base(providers: LoopbackPair, sentinel):
    cfg = _config([{"model_name": "openai/*", "litellm_params": {"model": "openai/*",
                                                                "api_base": providers.alpha.base_url,
                                                                "api_key": LOOPBACK_KEY}}])
    res = Resolver(cfg).resolve("openai/gpt-4o").to_dict()
    assert (res["resolved_via"], res["pattern"], res["model"]) == ("wildcard", "openai/*", "openai/gpt-4o")
    rs = _run(cfg, "openai/gpt-4o", "gpt-4o-mini")  # the bare catalog id resolves to openai/… then matches
    assert [r.status for r in rs] == ["completed", "completed"], [r.error for r in rs]
    assert sorted(q.model for q in providers.alpha.requests) == ["gpt-4o", "gpt-4o-mini"]
    assert all(q.has_auth for q in providers.alpha.requests)
    assert sentinel.requests == []


def test_star_wildcard_routes_any_name_unchanged(providers: LoopbackPair, sentinel):
    cfg = _config([{"model_name": "*", "litellm_params": {"model": "openai/*",
                                                         "api_base": providers.alpha.base_url,
                                                         "api_key": LOOPBACK_KEY}}])
    res = Resolver(cfg).resolve("gpt-4o")
    assert (res.resolved_via, res.pattern, res.model) == ("wildcard", "*", "gpt-4o")
    (r,) = _run(cfg, "gpt-4o")
    assert r.status == "completed", r.error
    assert [q.model for q in providers.alpha.requests] == ["gpt-4o"]
    assert sentinel.requests == []


def test_pattern_inside_a_name(providers: LoopbackPair, sentinel):
    cfg = _config([{"model_name": "team-*", "litellm_params": {"model": "openai/*",
                                                              "api_base": providers.alpha.base_url,
                                                              "api_key": LOOPBACK_KEY}}])
    (r,) = _run(cfg, "team-fast")
    assert r.status == "completed", r.error
    assert [q.model for q in providers.alpha.requests] == ["fast"]
    assert sentinel.requests == []


def test_model_group_alias_beats_the_catalog(providers: LoopbackPair, sentinel):
    a, b = providers.alpha, providers.beta
    cfg = _config([{"model_name": "main", "litellm_params": {"model": "openai/alpha-model",
                                                            "api_base": a.base_url, "api_key": LOOPBACK_KEY}}],
                  model_group_alias={"best": "main", "gpt-4o": {"model": "main", "hidden": True}})
    r = Resolver(cfg)
    assert r.resolve("best").to_dict()["resolved_via"] == "group_alias"
    assert (r.resolve("gpt-4o").resolved_via, r.resolve("gpt-4o").pattern) == ("group_alias", "main")
    rs = _run(cfg, "best", "gpt-4o")
    assert [x.status for x in rs] == ["completed", "completed"], [x.error for x in rs]
    assert [q.model for q in a.requests] == ["alpha-model", "alpha-model"]
    assert b.requests == []  # gpt-4o did not go to the catalog's openai (the sentinel)


def _claude(providers: LoopbackPair) -> list[dict]:
    return [{"model_name": "claude", "model_info": {"id": "claude-1"},
             "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": LOOPBACK_KEY,
                                "api_base": _root(providers.alpha.base_url)}}]


def test_thinking_variant_on_a_group_maps_to_extended_thinking(providers: LoopbackPair, sentinel):
    (r,) = _run(_config(_claude(providers)), "claude:thinking")
    assert r.status == "completed", r.error
    (q,) = providers.alpha.requests
    assert q.path.endswith("/v1/messages")
    assert q.model == "claude-sonnet-4-5"  # never the suffixed id
    assert q.body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sentinel.requests == []


@pytest.mark.parametrize("wildcard", [True, False], ids=["via-wildcard", "via-deployment"])
def test_a_suffix_does_not_hide_a_configured_deployment(providers: LoopbackPair, sentinel, wildcard: bool):
    """`anthropic/claude-sonnet-4-5:thinking` uses the configured deployment (its key and api_base)."""
    extra = [{"model_name": "anthropic/*", "litellm_params": {
        "model": "anthropic/*", "api_key": LOOPBACK_KEY, "api_base": _root(providers.alpha.base_url)}}]
    cfg = _config(_claude(providers) + (extra if wildcard else []))
    (r,) = _run(cfg, "anthropic/claude-sonnet-4-5:thinking")
    assert r.status == "completed", r.error
    (q,) = providers.alpha.requests
    assert q.model == "claude-sonnet-4-5" and "thinking" in q.body
    assert sentinel.requests == []


@pytest.mark.parametrize("text", ["claude:free", "openai/gpt-4o:thinking"])
def test_a_variant_the_provider_does_not_serve_is_refused(providers: LoopbackPair, sentinel, text: str):
    cfg = _config(_claude(providers) + [{"model_name": "openai/*", "litellm_params": {
        "model": "openai/*", "api_key": LOOPBACK_KEY, "api_base": providers.alpha.base_url}}])
    with pytest.raises(SpecError) as info:
        Resolver(cfg).resolve(text)
    assert "OpenRouter" in (info.value.hint or "")
    with pytest.raises(BatchValidationError, match="OpenRouter"):  # planning refuses; nothing starts
        _run(cfg, text)
    assert providers.alpha.requests == [] and sentinel.requests == []


def test_openrouter_wildcard_keeps_the_suffix(providers: LoopbackPair, sentinel):
    cfg = _config([{"model_name": "openrouter/*", "litellm_params": {
        "model": "openai/*", "api_key": LOOPBACK_KEY, "api_base": providers.alpha.base_url}}])
    res = Resolver(cfg).resolve("openrouter/stepfun/step-3.5-flash:free")
    assert (res.model, res.resolved_via) == ("openrouter/stepfun/step-3.5-flash:free", "wildcard")


# -- credentials only where the user put them (part 3) -------------------------------------------
@pytest.mark.parametrize("field", ["api_key", "api_base"])
def test_an_unset_reference_is_refused_and_nothing_is_sent(providers: LoopbackPair, sentinel, field: str):
    params = {"model": "openai/*", "api_key": LOOPBACK_KEY, "api_base": providers.alpha.base_url,
              field: "os.environ/HD_TEST_UNSET_REF"}
    cfg = _config([{"model_name": "openai/*", "litellm_params": params}])
    with pytest.raises(BatchValidationError) as info:
        _run(cfg, "openai/gpt-4o")
    (p,) = info.value.problems
    assert (p.index, p.model, p.type) == (0, "openai/gpt-4o", "auth")
    assert "HD_TEST_UNSET_REF" in p.problem and "environment_variables" in p.problem
    assert "HD_TEST_UNSET_REF" in str(info.value)
    assert providers.alpha.requests == [] and sentinel.requests == []


def test_every_bad_task_is_listed_with_an_unset_reference_among_them(providers: LoopbackPair, sentinel):
    """An unset reference is one task's problem (type auth), listed with the others before anything runs:
    it no longer hides the rest of the batch behind one bare ProviderError."""
    good = {"model": "openai/alpha-model", "api_key": LOOPBACK_KEY, "api_base": providers.alpha.base_url}
    bad = dict(good, api_key="os.environ/HD_TEST_UNSET_REF")
    cfg = _config([{"model_name": "good", "litellm_params": good}, {"model_name": "bad", "litellm_params": bad}])
    with pytest.raises(BatchValidationError) as info:
        _run(cfg, "good", "totally-unknown-model-xyz", "bad")
    got = [(p.index, p.model, p.type) for p in info.value.problems]
    assert got == [(1, "totally-unknown-model-xyz", "unknown_model"), (2, "bad", "auth")]
    assert "HD_TEST_UNSET_REF" in info.value.problems[1].problem
    text = str(info.value)
    assert "Task 2 (tasks[1]) [totally-unknown-model-xyz]" in text and "Task 3 (tasks[2]) [bad]" in text
    assert info.value.to_dict()["tasks"][1]["type"] == "auth"
    assert providers.alpha.requests == [] and sentinel.requests == []


def test_a_provider_flag_key_that_is_unset_is_refused_and_nothing_is_sent(
        providers: LoopbackPair, sentinel, monkeypatch: pytest.MonkeyPatch):
    """`--provider nous` names its own key variable (NOUS_API_KEY): unset, planning refuses the task,
    instead of sending `Authorization: Bearer os.environ/NOUS_API_KEY` to the provider."""
    from hermes_delegate.core import providers as core_providers

    capture = providers.alpha  # stands in for Nous' endpoint: must receive nothing
    monkeypatch.setitem(core_providers._HERMES_SLUGS, "nous",
                        core_providers.ProviderInfo("nous", "openai", api_base=capture.base_url, key_env="NOUS_API_KEY"))
    monkeypatch.delenv("NOUS_API_KEY", raising=False)
    with pytest.raises(BatchValidationError) as info:
        _run(_config([]), "hermes-4 --provider nous")
    (p,) = info.value.problems
    assert (p.index, p.type) == (0, "auth") and "NOUS_API_KEY" in p.problem, p
    assert capture.requests == [] and sentinel.requests == []
    # control: with the variable set (here through environment_variables) the same task runs there
    cfg = config_from_dict({"router": {"model_list": [], "router_settings": {"num_retries": 0},
                                       "environment_variables": {"NOUS_API_KEY": LOOPBACK_KEY}}},
                           source="(routing test)")
    (r,) = _run(cfg, "hermes-4 --provider nous")
    assert r.status == "completed", r.error
    assert [(q.model, q.has_auth) for q in capture.requests] == [("hermes-4", True)]
    assert sentinel.requests == []


def test_environment_variables_count_as_set(providers: LoopbackPair, sentinel):
    cfg = config_from_dict({"router": {
        "model_list": [{"model_name": "openai/*", "litellm_params": {
            "model": "openai/*", "api_key": "os.environ/HD_TEST_KEY", "api_base": "os.environ/HD_TEST_BASE"}}],
        "router_settings": {"num_retries": 0},
        "environment_variables": {"HD_TEST_KEY": LOOPBACK_KEY, "HD_TEST_BASE": providers.alpha.base_url}}},
        source="(routing test)")
    (r,) = _run(cfg, "openai/gpt-4o")
    assert r.status == "completed", r.error
    assert [q.model for q in providers.alpha.requests] == ["gpt-4o"] and sentinel.requests == []


def test_a_group_with_one_unset_deployment_only_uses_the_other(providers: LoopbackPair, sentinel):
    ok = {"model": "openai/alpha-model", "api_key": LOOPBACK_KEY, "api_base": providers.alpha.base_url}
    bad = {"model": "openai/alpha-model", "api_key": "os.environ/HD_TEST_UNSET_REF"}  # would fall back
    cfg = _config([{"model_name": "g", "litellm_params": bad}, {"model_name": "g", "litellm_params": ok}])
    rs = _run(cfg, *["g"] * 4)
    assert [r.status for r in rs] == ["completed"] * 4, [r.error for r in rs]
    assert len(providers.alpha.requests) == 4 and sentinel.requests == []


def test_list_models_reports_the_route(providers: LoopbackPair):
    import asyncio

    cfg = _config([{"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": LOOPBACK_KEY,
                                                                "api_base": providers.alpha.base_url}},
                   {"model_name": "main", "litellm_params": {"model": "anthropic/claude-sonnet-4-5",
                                                            "api_key": "os.environ/HD_TEST_UNSET_REF"}}],
                  model_group_alias={"best": "main"})
    d = Delegator(cfg)
    one = asyncio.run(d.check_model("openai/gpt-4o"))
    assert (one["resolved_via"], one["pattern"], len(one["deployments"])) == ("wildcard", "openai/*", 1)
    best = asyncio.run(d.check_model("best:thinking"))
    assert (best["resolved_via"], best["pattern"]) == ("group_alias", "main")
    assert best["params"]["thinking"]["type"] == "enabled"
    assert "HD_TEST_UNSET_REF" in best["not_callable"]
    listing = asyncio.run(d.model_listing())
    assert listing["group_aliases"] == {"best": "main"} and listing["groups"]["openai/*"]["wildcard"] is True


def test_doctor_checks_api_base_refs_and_reachable_names(make_config, providers: LoopbackPair):
    import io
    import json

    from hermes_delegate.hosts.cli import main as cli_main

    make_config.write({
        "delegation": {"model": "best", "aliases": {"small": "main"}},
        "router": {"model_list": [{"model_name": "main", "litellm_params": {
            "model": "openai/alpha-model", "api_key": LOOPBACK_KEY, "api_base": "os.environ/HD_TEST_UNSET_BASE"}}],
            "router_settings": {"model_group_alias": {"best": "main"}}}})
    out = io.StringIO()
    rc = cli_main(["doctor", "--json", "--config", str(make_config.path())], out=out)
    problems = json.loads(out.getvalue())["problems"]
    assert rc != 0
    assert any("os.environ/HD_TEST_UNSET_BASE is not set" in p for p in problems), problems
    assert any(p.startswith("best:") and "HD_TEST_UNSET_BASE" in p for p in problems), problems
    assert any(p.startswith("small:") and "HD_TEST_UNSET_BASE" in p for p in problems), problems
    assert LOOPBACK_KEY not in out.getvalue()


# -- the real LiteLLM proxy routes the same config the same way ------------------------------------
def _parity_config(providers: LoopbackPair) -> dict:
    a, b = providers.alpha.base_url, providers.beta.base_url
    return {"model_list": [
        {"model_name": "main", "litellm_params": {"model": "openai/alpha-model", "api_base": a, "api_key": LOOPBACK_KEY}},
        {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_base": a, "api_key": LOOPBACK_KEY}},
        {"model_name": "team-*", "litellm_params": {"model": "openai/*", "api_base": b, "api_key": LOOPBACK_KEY}}],
        "router_settings": {"num_retries": 0, "model_group_alias": {"best": "main"}}}


PARITY_NAMES = ["main", "best", "openai/gpt-4o", "team-fast", "team-openai/x"]


def _hits(providers: LoopbackPair) -> list[tuple[str, str | None]]:
    return [(p.name, q.model) for p in providers for q in p.requests if q.path.endswith("/chat/completions")]


@pytest.mark.slow
@pytest.mark.xdist_group("proxy")  # one worker starts the real proxies (tests/helpers.proxy_command)
def test_real_proxy_routes_the_same_names_to_the_same_deployments(providers: LoopbackPair, tmp_path):
    import os
    import subprocess
    import time
    import urllib.request

    import json as _json

    import yaml
    from helpers import PROXY_KEY, free_port as _free_port, proxy_command, require_proxy

    binary = require_proxy()  # skipped locally, FAILS under CI=true
    data = _parity_config(providers)
    proxy_file = {**data, "general_settings": {"master_key": "os.environ/PROXY_MASTER_KEY"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(proxy_file), encoding="utf-8")
    ours = []
    for name in PARITY_NAMES:
        providers.reset()
        (r,) = _run(config_from_dict({"router": data}, source="(parity)"), name)
        assert r.status == "completed", (name, r.error)
        ours.append(_hits(providers))
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "PROXY_MASTER_KEY": PROXY_KEY}
    with open(tmp_path / "proxy.log", "wb") as logf:
        proc = subprocess.Popen(proxy_command(binary, "--config", str(tmp_path / "config.yaml"), "--host", "127.0.0.1",
                                 "--port", str(port)), stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # start-up wait only; nothing is asserted about time
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the LiteLLM proxy did not start: "
                            + (tmp_path / "proxy.log").read_text(errors="replace")[-3000:])
            time.sleep(0.25)
        theirs = []
        for name in PARITY_NAMES:
            providers.reset()
            body = _json.dumps({"model": name, "messages": [{"role": "user", "content": f"task {name}"}]}).encode()
            req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, method="POST", headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {PROXY_KEY}"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200
            theirs.append(_hits(providers))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert ours == theirs
    assert ours == [[("alpha", "alpha-model")], [("alpha", "alpha-model")], [("alpha", "gpt-4o")],
                    [("beta", "fast")], [("beta", "openai/x")]]


@pytest.mark.parametrize(("fault", "kind", "status"), [("500", "server", 500), ("429", "rate_limit", 429),
                                                       ("html", "bad_response", None),
                                                       ("binary", "bad_response", None),
                                                       ("wrong_shape", "bad_response", None),
                                                       ("malformed", "bad_response", None),
                                                       ("empty_choices", "bad_response", None)])
def test_anthropic_loopback_faults_match_the_openai_ones(providers: LoopbackPair, fault, kind, status):
    """`empty_choices` is a message with `content: []`: litellm makes it one choice with an empty
    message, which is as unusable as OpenAI's `choices: []`."""
    providers.alpha.set_fault(fault)
    (r,) = _run(_config(_claude(providers)), "claude")
    assert r.status == "failed"
    assert (r.error["type"], r.error["status_code"]) == (kind, status), r.error
    assert providers.alpha.requests and providers.alpha.requests[0].path.endswith("/v1/messages")
    if kind == "bad_response":
        assert [a.status for a in r.attempts] == ["bad_response"]


def test_anthropic_empty_content_is_retried_on_the_healthy_deployment(providers: LoopbackPair):
    """The retry-with-what-is-left rule applies to Anthropic's `content: []` as to `choices: []`."""
    both = _claude(providers) + [{"model_name": "claude", "model_info": {"id": "claude-2"},
                                  "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": LOOPBACK_KEY,
                                                     "api_base": _root(providers.beta.base_url)}}]
    providers.alpha.set_fault("empty_choices")
    results = _run(_config(both, num_retries=1), *["claude"] * 4)
    assert [r.status for r in results] == ["completed"] * 4, [r.error for r in results]
    for r in results:
        assert r.summary
        assert [(a.deployment.deployment_id, a.status) for a in r.attempts] in (
            [("claude-2", "ok")], [("claude-1", "bad_response"), ("claude-2", "ok")])
