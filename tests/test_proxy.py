"""LiteLLM proxy users (issue #6): an existing proxy config.yaml used unchanged (`litellm_config`),
and remote mode (`remote:`), where a running LiteLLM proxy owns the providers.

The config below has the exact shape of the LiteLLM docs' proxy config.yaml example (docs.litellm.ai
/docs/proxy/configs, "Quick Start"), comments included; only api_base points at the loopback
providers and the Azure deployments became OpenAI-compatible ones (the loopback speaks OpenAI).

Remote mode runs against a real LiteLLM proxy (`litellm --config …` from litellm[proxy], in its own
virtualenv) when one is installed, and always against a test-side server speaking the proxy's
endpoints (/v1/models, /model/info, /v1/chat/completions) for the edge cases.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import LoopbackPair
from hermes_delegate import (ConfigError, DelegateError, Delegator, ProviderError, Resolver, Task, config_from_dict,
                             load_config)
from hermes_delegate.routing._litellm import import_litellm
from hermes_delegate.loopback import LoopbackProvider, closed_port_url
from hermes_delegate.sources.groups import resolver_for
from hermes_delegate.sources.remote_proxy import fetch_groups
from helpers import PROXY_KEY, free_port, proxy_command, require_proxy

pytestmark = pytest.mark.litellm

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_KEYS = {"AZURE_API_KEY_EU": "sk-upstream-eu-0123456789", "AZURE_API_KEY_CA": "sk-upstream-ca-0123456789"}

DOCS_CONFIG = """\
model_list:
  - model_name: gpt-4o ### RECEIVED MODEL NAME ###
    litellm_params: # all params accepted by litellm.completion() - https://docs.litellm.ai/docs/completion/input
      model: openai/gpt-4o-eu ### MODEL NAME sent to `litellm.completion()` ###
      api_base: {alpha}
      api_key: "os.environ/AZURE_API_KEY_EU" # does os.getenv("AZURE_API_KEY_EU")
      rpm: 120      # [OPTIONAL] Rate limit for this deployment: in requests per minute (rpm)
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-ca
      api_base: {beta}
      api_key: "os.environ/AZURE_API_KEY_CA"
      rpm: 120
  - model_name: vllm-models
    litellm_params:
      model: openai/facebook/opt-125m # the `openai/` prefix tells litellm it's openai compatible
      api_base: {alpha}
      api_key: none
      rpm: 1440
    model_info:
      version: 2
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002

litellm_settings: # module level litellm settings - https://github.com/BerriAI/litellm/blob/main/litellm/__init__.py
  drop_params: True

router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  timeout: 30

general_settings:
  master_key: os.environ/PROXY_MASTER_KEY # [OPTIONAL] Only use this if you to require all calls to contain this key (Authorization: Bearer sk-1234)
"""


def docs_config(providers: LoopbackPair) -> str:
    return DOCS_CONFIG.format(alpha=providers.alpha.base_url, beta=providers.beta.base_url)


# -- litellm_config: an existing proxy config, used unchanged ----------------------------------
def test_litellm_config_in_docs_format_runs_unchanged(providers: LoopbackPair, make_config,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture):
    litellm = import_litellm()  # the package's own door (quiet loggers, redaction), not a bare import
    monkeypatch.setattr(litellm, "drop_params", litellm.drop_params)  # restored after the test
    for name, value in UPSTREAM_KEYS.items():
        monkeypatch.setenv(name, value)
    make_config.write(docs_config(providers), "litellm-config.yaml")
    with caplog.at_level(logging.WARNING, logger="hermes_delegate.sources.config_file"):
        cfg = make_config("delegation:\n  model: gpt-4o\n  aliases: {small: vllm-models}\n"
                          "litellm_config: litellm-config.yaml\n")
    warnings = [r.getMessage() for r in caplog.records if r.name == "hermes_delegate.sources.config_file"]
    assert warnings == [], warnings  # general_settings: accepted and ignored (doctor lists it), no warning
    assert cfg.router.ignored_sections == ["general_settings"]
    assert list(Resolver(cfg).groups) == ["gpt-4o", "vllm-models"]

    d = Delegator(cfg)
    batch = d.run_sync([*(Task(f"load-balanced {i}") for i in range(6)), Task("priced", model="small")])
    assert batch.ok, [r.error for r in batch.results]
    router = d.router.router
    assert router.routing_strategy == "simple-shuffle" and router.num_retries == 2  # router_settings
    assert litellm.drop_params is True  # litellm_settings
    # rpm from the file is what the queue enforces: 2 requests/s per deployment
    assert {lim.rpm for lim in d.router.gate.limits.values()} == {120.0, 1440.0}
    served = {r.deployment.model for r in batch.results[:6]}
    assert served == {"openai/gpt-4o-eu", "openai/gpt-4o-ca"}
    assert batch.results[6].deployment.model == "openai/facebook/opt-125m"
    assert batch.results[6].cost_usd is not None and batch.results[6].cost_usd > 0  # model_info prices
    # os.environ/ references were resolved: every upstream request carried a key, none is shown
    assert all(r.has_auth for p in providers for r in p.requests)
    text = json.dumps(batch.to_dict())
    assert not any(v in text for v in UPSTREAM_KEYS.values())


# -- remote mode: config ------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "key"), [
    ("remote: {base_url: 'ftp://proxy'}\n", "remote.base_url"),
    ("remote: {base_url: http://127.0.0.1:4000, api_key_env: 'sk-pasted-secret-key-123'}\n", "remote.api_key_env"),
    ("remote: {base_url: http://127.0.0.1:4000, bogus: 1}\n", "remote.bogus"),
    ("remote: {api_key_env: X}\n", "remote.base_url"),
    ("remote: {base_url: http://h:4000}\nrouter:\n  model_list:\n"
     "    - {model_name: a, litellm_params: {model: openai/a}}\n", "remote"),
])
def test_remote_config_errors_name_the_key(make_config, text: str, key: str):
    with pytest.raises(ConfigError) as info:
        make_config(text)
    msg = str(info.value)
    assert key in msg and str(make_config.path()) in msg
    assert "sk-pasted-secret-key-123" not in msg


def test_remote_and_litellm_config_are_exclusive(make_config):
    make_config.write("model_list:\n  - {model_name: a, litellm_params: {model: openai/a}}\n", "lite.yaml")
    with pytest.raises(ConfigError, match="remote"):
        make_config("litellm_config: lite.yaml\nremote: {base_url: 'http://127.0.0.1:4000'}\n")


def test_shipped_remote_example_loads_without_network():
    cfg = load_config(ROOT / "configs" / "remote-proxy.yaml")
    assert cfg.remote is not None and cfg.remote.api_key_env == "LITELLM_PROXY_API_KEY"
    assert cfg.router.model_list == []  # nothing fetched at load time


# -- remote mode against a test-side server speaking the proxy's endpoints -----------------------
class FakeProxy:
    """A tiny HTTP server: `routes[path] = (status, body, delay_s)`; records (path, Authorization)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any, float]] = {}
        self.seen: list[tuple[str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]  # /v1/models?return_wildcard_routes=true is /v1/models
                fake.seen.append((path, self.headers.get("Authorization")))
                status, body, delay = fake.routes.get(path, (404, {"detail": "Not Found"}, 0.0))
                time.sleep(delay)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:  # the client timed out and left
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_proxy() -> Iterator[FakeProxy]:
    fp = FakeProxy()
    try:
        yield fp
    finally:
        fp.stop()


def remote_config(base_url: str, **remote: Any) -> Any:
    return config_from_dict({"delegation": {"aliases": {"small": "fast"}},
                             "remote": {"base_url": base_url, **remote}}, source="(remote test)")


MODELS = {"data": [{"id": "fast", "object": "model"}, {"id": "smart", "object": "model"}], "object": "list"}
MODEL_INFO = {"data": [
    {"model_name": "fast", "litellm_params": {"model": "openai/fast-a", "rpm": 60}, "model_info": {"id": "x1"}},
    {"model_name": "fast", "litellm_params": {"model": "anthropic/fast-b", "rpm": 120}, "model_info": {"id": "x2"}},
    {"model_name": "smart", "litellm_params": {"model": "openai/smart"},
     "model_info": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
]}


def test_remote_groups_listed_lazily_with_the_key_from_env(fake_proxy: FakeProxy, monkeypatch: pytest.MonkeyPatch):
    fake_proxy.routes.update({"/v1/models": (200, MODELS, 0.0), "/model/info": (200, MODEL_INFO, 0.0)})
    monkeypatch.setenv("LITELLM_PROXY_API_KEY", PROXY_KEY)
    cfg = remote_config(fake_proxy.base_url)
    d = Delegator(cfg)
    assert fake_proxy.seen == [], "nothing is fetched before the first resolution"

    res = d.resolver.resolve("small")
    assert (res.model, res.is_group, res.provider) == ("fast", True, "litellm_proxy")
    assert d.resolver.resolve("smart").resolved_via == "group"
    assert fake_proxy.seen == [("/v1/models", f"Bearer {PROXY_KEY}"), ("/model/info", f"Bearer {PROXY_KEY}")]
    deps = {dep.model_name: dep.model_dump() for dep in d.resolver.model_list}
    assert deps["fast"]["litellm_params"] == {"model": "litellm_proxy/fast", "api_base": fake_proxy.base_url,
                                              "api_key": "os.environ/LITELLM_PROXY_API_KEY"}
    assert deps["fast"]["model_info"]["remote_upstream"] == ["openai/fast-a", "anthropic/fast-b"]
    assert deps["fast"]["model_info"]["rpm"] == 180  # the group's total capacity
    assert deps["smart"]["model_info"]["input_cost_per_token"] == 1e-6
    assert "input_cost_per_token" not in deps["fast"]["model_info"]  # unpriced upstreams stay unpriced
    d.resolver.resolve("fast")
    resolver_for(cfg).resolve("fast")
    Delegator(cfg).resolver.resolve("fast")
    assert len(fake_proxy.seen) == 2, "listed once per proxy and key, for the process"
    assert PROXY_KEY not in json.dumps(deps)


def test_remote_model_info_is_optional_and_base_url_may_end_in_v1(fake_proxy: FakeProxy):
    fake_proxy.routes["/v1/models"] = (200, MODELS, 0.0)  # /model/info: 404
    groups = fetch_groups(remote_config(fake_proxy.base_url + "/v1/").remote, env={})
    assert [g.name for g in groups] == ["fast", "smart"]
    assert all(g.upstream == () and g.rpm is None for g in groups)
    assert fake_proxy.seen == [("/v1/models", None), ("/model/info", None)]  # no key set: none sent


@pytest.mark.parametrize(("route", "kind", "needle"), [
    ((401, {"error": {"message": f"Authentication Error, invalid key {PROXY_KEY}"}}, 0.0), "auth", "HTTP 401"),
    ((400, {"error": {"message": "No connected db."}}, 0.0), "bad_request", "No connected db"),
    ((500, b"Internal Server Error", 0.0), "server", "HTTP 500"),
    ((200, b"<html>not json</html>", 0.0), "bad_response", "did not return JSON"),
    ((200, {"models": []}, 0.0), "bad_response", "OpenAI model list"),
    ((200, MODELS, 1.0), "timeout", "did not answer within 0.3 s"),
])
def test_remote_listing_errors_are_clear_and_keyless(fake_proxy: FakeProxy, monkeypatch: pytest.MonkeyPatch,
                                                     route: tuple[int, Any, float], kind: str, needle: str):
    fake_proxy.routes["/v1/models"] = route
    monkeypatch.setenv("MY_PROXY_KEY", PROXY_KEY)
    cfg = remote_config(fake_proxy.base_url, api_key_env="MY_PROXY_KEY", timeout_s=0.3)
    resolver = Delegator(cfg).resolver
    with pytest.raises(ProviderError) as info:
        resolver.resolve("small")
    err = info.value
    assert err.kind == kind and needle in str(err), str(err)
    assert PROXY_KEY not in str(err) and PROXY_KEY not in json.dumps(err.to_dict())
    if kind in ("auth", "bad_request"):
        assert "$MY_PROXY_KEY" in err.hint
    # a failed listing is not cached: the next use asks again
    fake_proxy.routes["/v1/models"] = (200, MODELS, 0.0)
    assert resolver.groups.keys() == {"fast", "smart"}
    assert cfg.router.model_list == []  # listed into the Resolver, never written into the config


def test_remote_unreachable_proxy_is_a_connection_error():
    url = closed_port_url().removesuffix("/v1")
    d = Delegator(remote_config(url))
    with pytest.raises(ProviderError) as info:
        d.resolver.resolve("small")
    assert info.value.kind == "connection" and url in str(info.value) and "remote.base_url" in info.value.hint
    with pytest.raises(DelegateError, match="unreachable"):  # before anything runs
        d.plan([Task("x", model="small")])


def test_remote_groups_run_through_litellm_proxy_provider(monkeypatch: pytest.MonkeyPatch):
    """The loopback speaks /v1/models and chat: it stands in for the proxy (no /model/info)."""
    monkeypatch.setenv("LITELLM_PROXY_API_KEY", PROXY_KEY)
    with LoopbackProvider("proxy", models=["fast", "smart"]).start() as proxy:
        d = Delegator(remote_config(proxy.base_url.removesuffix("/v1")))
        batch = d.run_sync([Task("one", model="small"), Task("two", model="smart")])
        assert batch.ok, [r.error for r in batch.results]
        assert sorted(r.model for r in proxy.requests) == ["fast", "smart"]  # sent as litellm_proxy/<group>
        assert all(r.has_auth for r in proxy.requests)
        r0 = batch.results[0]
        assert (r0.deployment.provider, r0.deployment.deployment_id, r0.deployment.model) == (
            "litellm_proxy", "remote:fast", "litellm_proxy/fast")
        assert [(a.deployment.deployment_id, a.status) for a in r0.attempts] == [("remote:fast", "ok")]
        assert PROXY_KEY not in json.dumps(batch.to_dict())


def test_remote_proxy_without_auth_needs_no_key():
    """A proxy that lists its groups without a key gets a placeholder (litellm refuses to send none)."""
    with LoopbackProvider("open-proxy", models=["fast"]).start() as proxy:
        cfg = remote_config(proxy.base_url)
        d = Delegator(cfg)
        batch = d.run_sync([Task("no key", model="fast")])
        assert batch.ok, batch.results[0].error
        assert d.resolver.model_list[0].litellm_params["api_key"] == "no-key"


def test_remote_groups_are_what_list_models_and_the_cli_list(fake_proxy: FakeProxy, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path):
    """One listing: list_models and `hermes-delegate models` show the groups the Resolver resolves
    against, so in remote mode the proxy's groups (the config's own model_list is empty there)."""
    import io

    from hermes_delegate import DelegateTools
    from hermes_delegate.hosts.cli import main as cli_main

    fake_proxy.routes.update({"/v1/models": (200, MODELS, 0.0), "/model/info": (200, MODEL_INFO, 0.0)})
    monkeypatch.setenv("LITELLM_PROXY_API_KEY", PROXY_KEY)
    cfg = remote_config(fake_proxy.base_url)
    tools = DelegateTools(Delegator(cfg))
    listing = json.loads(tools.list_models_sync())
    assert list(listing["groups"]) == ["fast", "smart"], listing
    (fast,) = listing["groups"]["fast"]["deployments"]
    assert (fast["model"], fast["provider"], fast["credentials"], fast["key_env"], fast["deployment_id"]) == (
        "litellm_proxy/fast", "litellm_proxy", "set", "LITELLM_PROXY_API_KEY", "remote:fast")
    assert fast["limits"] == {"rpm": 180}  # the group's total capacity, from /model/info
    assert listing["tiers"] == {"small": "fast"} and listing["warnings"] == []
    checked = json.loads(tools.list_models_sync({"model": "small"}))
    assert [d["model"] for d in checked["deployments"]] == ["litellm_proxy/fast"]

    path = tmp_path / "remote.yaml"
    path.write_text(f"delegation: {{aliases: {{small: fast}}}}\nremote: {{base_url: '{fake_proxy.base_url}'}}\n",
                    encoding="utf-8")
    out = io.StringIO()
    assert cli_main(["models", "--json", "--config", str(path)], out=out) == 0
    inv = json.loads(out.getvalue())
    assert inv["groups"] == {"fast": [{"model": "litellm_proxy/fast", "credentials": "set",
                                       "key_env": "LITELLM_PROXY_API_KEY"}],
                             "smart": [{"model": "litellm_proxy/smart", "credentials": "set",
                                        "key_env": "LITELLM_PROXY_API_KEY"}]}
    assert inv["aliases"]["small"]["model"] == "fast"
    text = io.StringIO()
    assert cli_main(["models", "--config", str(path)], out=text) == 0
    assert "fast           → litellm_proxy/fast [set]" in text.getvalue()
    assert PROXY_KEY not in json.dumps(listing) + out.getvalue() + text.getvalue()


# -- remote mode against a real LiteLLM proxy ----------------------------------------------------


@pytest.fixture(scope="module")
def real_proxy(providers: LoopbackPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_proxy()  # skip locally, FAIL under CI=true
    work = tmp_path_factory.mktemp("litellm-proxy")
    (work / "config.yaml").write_text(docs_config(providers), encoding="utf-8")
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "PROXY_MASTER_KEY": PROXY_KEY, **UPSTREAM_KEYS}
    log_path = work / "proxy.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(proxy_command(binary, "--config", str(work / "config.yaml"), "--host", "127.0.0.1",
                                 "--port", str(port)), stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"the LiteLLM proxy ({binary}) did not start: {tail}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.xdist_group("proxy")  # one worker starts the real proxies (tests/helpers.proxy_command)
def test_real_litellm_proxy_remote_mode(real_proxy: str, providers: LoopbackPair, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LITELLM_PROXY_API_KEY", PROXY_KEY)
    cfg = config_from_dict({"delegation": {"model": "gpt-4o", "aliases": {"small": "vllm-models"}},
                            "remote": {"base_url": real_proxy}})
    d = Delegator(cfg)
    assert list(d.resolver.groups) == ["gpt-4o", "vllm-models"]  # from the proxy's /v1/models
    info = {dep.model_name: dep.model_info for dep in d.resolver.model_list}
    assert info["gpt-4o"]["remote_upstream"] == ["openai/gpt-4o-eu", "openai/gpt-4o-ca"]  # /model/info
    assert info["vllm-models"]["input_cost_per_token"] == pytest.approx(1e-6)

    batch = d.run_sync([Task(f"via the proxy {i}") for i in range(4)])
    assert batch.ok, [r.error for r in batch.results]
    for r in batch.results:
        assert r.deployment.deployment_id == "remote:gpt-4o" and r.deployment.provider == "litellm_proxy"
        assert [a.status for a in r.attempts] == ["ok"]
    # prices from /model/info make a remote group usable under a budget
    (priced,) = d.run_sync([Task("priced", model="small")], budget_usd=1.0).results
    assert priced.status == "completed" and priced.cost_usd is not None and priced.cost_usd > 0
    with pytest.raises(DelegateError, match="no known price"):  # the proxy lists no price for gpt-4o
        d.plan([Task("unpriced", model="gpt-4o")], budget_usd=1.0)
    # the proxy sent the work on to its own deployments, with their own upstream keys
    upstream = sorted(r.model for p in providers for r in p.requests)
    assert upstream.count("facebook/opt-125m") == 1
    assert {m for m in upstream if m.startswith("gpt-4o")} <= {"gpt-4o-eu", "gpt-4o-ca"}
    assert len(upstream) == 5 and all(r.has_auth for p in providers for r in p.requests)
    assert PROXY_KEY not in json.dumps(batch.to_dict())


@pytest.mark.slow
@pytest.mark.xdist_group("proxy")  # one worker starts the real proxies (tests/helpers.proxy_command)
def test_real_litellm_proxy_refuses_a_wrong_key(real_proxy: str, monkeypatch: pytest.MonkeyPatch):
    wrong = "sk-wrong-proxy-key-0123456789"
    monkeypatch.setenv("LITELLM_PROXY_API_KEY", wrong)
    with pytest.raises(ProviderError) as info:
        _ = resolver_for(config_from_dict({"remote": {"base_url": real_proxy}})).groups
    assert wrong not in str(info.value) and "$LITELLM_PROXY_API_KEY" in info.value.hint
    assert info.value.status_code in (400, 401, 403)
