"""Shared pytest fixtures for hermes-delegate. Names here are stable: other test files rely on them.

Running, and the three markers (registered in pyproject.toml; ``--strict-markers`` rejects any other)
    The suite runs in parallel by default (pytest-xdist, ``-n auto --dist loadgroup`` in pyproject's
    addopts; ``auto`` is two workers per core here, :func:`pytest_xdist_auto_num_workers`, since most
    of the suite waits); ``-n 0`` runs it in one process (for ``-s``, ``--pdb``, ``HD_FAULT_TABLE=1``).
    Groups: ``timing`` (below) and ``xdist_group("proxy")`` on the tests that start the real LiteLLM
    proxy (one worker keeps its warm interpreter and the module-scoped proxies). pytest 9.2 broke
    xdist 3.8's groups (see :func:`_xdist_groups_in_node_ids`); a grouped test's id ends in ``@GROUP``
    on the workers. Helper subprocesses that import litellm (hermes scenarios, Redis workers, the
    proxy) are forks of a warm interpreter (``helpers.warm_command``); the product's own entry points
    (the CLI, the MCP server) always start fresh. So every test
    must be safe beside any other: ports from 0, ``tmp_path``, Redis keys unique to the test, no fixed
    file paths, no reliance on test order, and no ``sleep()`` as synchronisation: wait for the
    condition with a deadline (``helpers.wait_until``) and fail with what was last seen.

    A new test declares itself with marks, on the test or for a whole file
    (``pytestmark = [pytest.mark.litellm, pytest.mark.timing]``):

    ``@pytest.mark.slow``
        it takes more than ~3 s (a subprocess that imports litellm or hermes, a real proxy, Retry-After
        waits). ``pytest -m "not slow"`` is the inner loop (README says how long it takes).
    ``@pytest.mark.timing``
        it asserts on real time: rates or windows a provider observed, a deadline that must (not)
        pass, the order of events in time. All ``timing`` tests run on one xdist worker, one at a
        time (the mark adds ``xdist_group("timing")``), so two of them never compete; their summed
        time is the floor of the suite's wall time, so a test that only waits (a Retry-After, a
        provider's rate) but asserts nothing about time or rates stays out. Logic that
        only needs a clock takes an injected one instead (``CapacityGate(clock=...)``,
        ``LocalWindows(clock)``) and needs no mark.
    ``@pytest.mark.litellm``
        it exercises litellm's own behaviour (calls through the Router, its config, its errors, the
        real proxy, the hosts end to end). CI's second pass installs the newest litellm and runs
        ``-m litellm`` only; tests of our own pure code run in the first pass alone. Every test that
        requests the ``providers`` fixture gets the mark automatically; mark the others yourself
        (a CLI or MCP subprocess that makes calls, a test of how litellm reads a config...).
    Property tests take their example counts from ``helpers.examples(n)``, which the second pass
    scales down (``HERMES_DELEGATE_TEST_EXAMPLES=0.25``).

Environment (autouse, every test)
    ``_env_hygiene``
        * ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (also set at import time of this file, before any
          test module can import litellm), so litellm never fetches its cost map from the network;
        * removes real credentials: every ``*_API_KEY`` / ``*_API_TOKEN`` / ``*_ACCESS_TOKEN`` env
          var plus the names in :data:`SECRET_ENV_NAMES` (``HF_TOKEN``, ``GOOGLE_APPLICATION_CREDENTIALS``…);
        * removes ``HERMES_DELEGATE_CONFIG`` and points ``XDG_CONFIG_HOME`` at an empty per-test
          directory (``tmp_path / "xdg"``), so no user config file is ever read;
        * sets ``NO_PROXY``/``no_proxy`` to 127.0.0.1,localhost so loopback HTTP never goes through a proxy.
    Use ``monkeypatch.setenv`` in a test to set a key it needs; it is undone after the test.

Loopback providers
    ``providers`` (session scope, NOT autouse)
        Two started :class:`~hermes_delegate.loopback.LoopbackProvider` s, ``providers.alpha`` and
        ``providers.beta`` (also ``providers["alpha"]``, ``providers[0]``, iteration). They are stopped
        at the end of the session. Before and after every test that requests ``providers`` they are
        reset (:meth:`LoopbackPair.reset`): script and set_fault cleared, ``latency_s=0``, no rps /
        max_concurrent limit, default ``retry_after``/``slow_s``, no responder, stats and request
        records cleared. So a test may freely mutate them (``providers.alpha.latency_s = 2``).

Redis
    ``redis_port`` (session scope): the port of a real ``redis-server`` on 127.0.0.1 (missing binary:
        skipped locally, FAILS under CI=true). Tests share it: use keys (deployment ids) unique to the test.

Configs
    ``loopback_config(providers, *, router_settings=None, model_list_extra=(), **delegation) -> Config``
        Plain function (``from conftest import loopback_config``) building an in-memory Config whose
        Router groups live on the loopback providers:

        ==========  ==============================================  ===============================
        group       deployments (model_info.id: litellm model)      notes
        ==========  ==============================================  ===============================
        alpha       alpha-1: openai/alpha-model on alpha            unpriced
        beta        beta-1: openai/beta-model on beta               unpriced
        both        both-alpha on alpha + both-beta on beta         load-balanced, unpriced
        priced      priced-1: openai/priced-model on alpha          1e-6 $/in-token, 2e-6 $/out
        ==========  ==============================================  ===============================

        Delegation defaults: ``aliases={"small": "alpha", "large": "beta"}``, ``task_timeout_s=30``;
        any ``delegation`` keyword (``model=``, ``max_concurrency=``, ``aliases=``, …) overrides.
        ``router_settings`` defaults to ``{"num_retries": 0}`` (deterministic request counts); pass
        your own dict to change it. ``model_list_extra`` appends raw ``model_list`` entries.
        The API key is the literal :data:`LOOPBACK_KEY`.
    ``loopback_dict(...)``
        Same arguments, returns the plain mapping (what a YAML file would hold).
    ``make_config`` (function scope fixture, uses ``tmp_path``)
        ``make_config(data=None, *, name="config.yaml", providers=None, **delegation) -> Config``:
        writes ``data`` (a mapping, or YAML text used verbatim) to ``tmp_path / "configs" / name``, loads it
        with :func:`hermes_delegate.load_config`, so ``cfg.source`` is that file. With ``data=None``
        it writes ``loopback_dict(providers, **delegation)`` (or just ``{"delegation": delegation}``
        when ``providers`` is None). ``make_config.path(name)`` gives the file path;
        ``make_config.write(data, name)`` only writes and returns the path.
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before any test module imports litellm

import logging
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pytest
import yaml

from hermes_delegate import Config, config_from_dict, load_config
from hermes_delegate.loopback import LoopbackProvider

# No network but loopback: a test that imports litellm directly must not fetch the model cost map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

#: Parts of the stack a CI pass leaves out on purpose (comma-separated). `.ci/run`'s second pass runs
#: the suite on the newest litellm, which cannot co-install with hermes-agent 0.19.0: it sets
#: HERMES_DELEGATE_TEST_WITHOUT=hermes, and only then are the hermes test files not collected.
WITHOUT = frozenset(filter(None, os.environ.get("HERMES_DELEGATE_TEST_WITHOUT", "").replace(" ", "").split(",")))
collect_ignore_glob = ["test_hermes*.py"] if "hermes" in WITHOUT else []


def pytest_configure(config: pytest.Config) -> None:
    """Under CI=true a missing real part fails the run, unless the pass declared it absent."""
    import importlib.util

    in_ci = os.environ.get("CI", "").strip().lower() == "true"
    if in_ci and "hermes" not in WITHOUT and importlib.util.find_spec("run_agent") is None:
        raise pytest.UsageError("CI=true: hermes-agent is not installed (pip install -e '.[test]'); "
                                "set HERMES_DELEGATE_TEST_WITHOUT=hermes only for a pass meant to run without it.")


@pytest.hookimpl(tryfirst=True)  # before xdist's own answer (one worker per core)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. Most of the suite waits (on subprocesses, providers' latency,
    Retry-After, rate windows), so a second worker per core fills the waits; PYTEST_XDIST_AUTO_NUM_WORKERS
    overrides, as it does for xdist."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").strip().isdigit():
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 * cores


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`timing` tests share one xdist group (one worker, one at a time); tests on the loopback
    providers exercise litellm (see the module docstring)."""
    for item in items:
        if item.get_closest_marker("timing") is not None:
            item.add_marker(pytest.mark.xdist_group("timing"))
        if "providers" in getattr(item, "fixturenames", ()) and item.get_closest_marker("litellm") is None:
            item.add_marker(pytest.mark.litellm)
    _xdist_groups_in_node_ids(config, items)


def _xdist_groups_in_node_ids(config: pytest.Config, items: list[pytest.Item]) -> None:
    """What `--dist loadgroup` needs on an xdist worker: each grouped test's node id ends in `@GROUP`.
    pytest-xdist 3.8 appends it to `item._nodeid`, which pytest 9.2 no longer reads (the id is
    `str(item._id)`), so every group was silently spread over all workers; set it where pytest reads it.
    Does nothing where xdist's own suffix already shows (a fixed pytest-xdist)."""
    if not getattr(config.option, "loadgroup", False) or not hasattr(config, "workerinput"):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own suffix works there
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)  # type: ignore[attr-defined]


__all__ = ["LOOPBACK_KEY", "LoopbackPair", "loopback_config", "loopback_dict", "SECRET_ENV_NAMES"]

LOOPBACK_KEY = "sk-loopback-test-key"
#: Credential env vars removed for every test besides the *_API_KEY / *_API_TOKEN pattern.
SECRET_ENV_NAMES = frozenset({
    "HERMES_DELEGATE_CONFIG", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS", "VERTEXAI_PROJECT", "VERTEX_PROJECT", "AZURE_API_BASE",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_BASE_URL", "OPENROUTER_API_BASE",
    "LITELLM_PROXY_API_BASE", "HERMES_DELEGATE_LITELLM_LOGS",
})
_SECRET_ENV_RE = re.compile(r"_(API_KEY|API_TOKEN|ACCESS_TOKEN|AUTH_TOKEN)$", re.I)
_LOCAL = "127.0.0.1,localhost"


@pytest.fixture(autouse=True)
def _env_hygiene(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for name in list(os.environ):
        if name in SECRET_ENV_NAMES or _SECRET_ENV_RE.search(name):
            monkeypatch.delenv(name, raising=False)
    xdg = tmp_path / "xdg"
    xdg.mkdir(exist_ok=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("XDG_STATE_HOME", str(xdg / "state"))  # the spend ledger: per test, never the user's
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name)
        monkeypatch.setenv(name, f"{current},{_LOCAL}" if current else _LOCAL)
    # a test that runs the CLI in-process (`main([...])`) points the root logger at that test's captured
    # stderr; put it back, or a later test's log record meets a closed stream ("--- Logging error ---")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# -- loopback providers ------------------------------------------------------------------------
class LoopbackPair:
    """The session's two loopback providers: ``.alpha`` and ``.beta``."""

    NAMES = ("alpha", "beta")

    def __init__(self, alpha: LoopbackProvider, beta: LoopbackProvider):
        self.alpha, self.beta = alpha, beta
        self._defaults = {p.name: (p.retry_after, p.slow_s) for p in (alpha, beta)}

    def __iter__(self) -> Iterator[LoopbackProvider]:
        return iter((self.alpha, self.beta))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, key: int | str) -> LoopbackProvider:
        if isinstance(key, int):
            return (self.alpha, self.beta)[key]
        return {"alpha": self.alpha, "beta": self.beta}[key]

    def stop(self) -> None:
        for p in self:
            p.stop()

    def reset(self, drain_s: float = 5.0) -> None:
        """Back to a clean state (see the module docstring). Waits up to `drain_s` for in-flight
        requests of the previous test (e.g. a cancelled slow call) to end, so max_in_flight is fresh."""
        for p in self:
            p.script([])
            p.set_fault(None)
            p.latency_s = 0.0
            p.rps = None
            p.max_concurrent = None
            p.retry_after, p.slow_s = self._defaults[p.name]
            p.responder = None
        deadline = time.monotonic() + drain_s
        while any(p.in_flight for p in self) and time.monotonic() < deadline:
            time.sleep(0.02)
        for p in self:
            p.reset_stats()


@pytest.fixture(scope="session")
def providers() -> Iterator[LoopbackPair]:
    pair = LoopbackPair(LoopbackProvider("alpha").start(), LoopbackProvider("beta").start())
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(autouse=True)
def _reset_loopback(request: pytest.FixtureRequest) -> Iterator[None]:
    """Resets the shared providers around tests that use them; starts nothing otherwise."""
    if "providers" not in request.fixturenames:
        yield
        return
    pair: LoopbackPair = request.getfixturevalue("providers")
    pair.reset()
    yield
    pair.reset()


# -- configs -----------------------------------------------------------------------------------
def _dep(name: str, dep_id: str, model: str, provider: LoopbackProvider, **extra: Any) -> dict[str, Any]:
    params = {"model": model, "api_base": provider.base_url, "api_key": LOOPBACK_KEY, **extra}
    return {"model_name": name, "litellm_params": params, "model_info": {"id": dep_id}}


def loopback_dict(providers: LoopbackPair, *, router_settings: Mapping[str, Any] | None = None,
                  model_list_extra: Iterable[Mapping[str, Any]] = (), **delegation: Any) -> dict[str, Any]:
    a, b = providers.alpha, providers.beta
    model_list = [
        _dep("alpha", "alpha-1", "openai/alpha-model", a),
        _dep("beta", "beta-1", "openai/beta-model", b),
        _dep("both", "both-alpha", "openai/alpha-model", a),
        _dep("both", "both-beta", "openai/beta-model", b),
        _dep("priced", "priced-1", "openai/priced-model", a,
             input_cost_per_token=1e-6, output_cost_per_token=2e-6),
        *(dict(d) for d in model_list_extra),
    ]
    settings: dict[str, Any] = {"aliases": {"small": "alpha", "large": "beta"}, "task_timeout_s": 30}
    settings.update(delegation)
    return {
        "delegation": settings,
        "router": {
            "model_list": model_list,
            "router_settings": dict(router_settings) if router_settings is not None else {"num_retries": 0},
        },
    }


def loopback_config(providers: LoopbackPair, *, router_settings: Mapping[str, Any] | None = None,
                    model_list_extra: Iterable[Mapping[str, Any]] = (), **delegation: Any) -> Config:
    data = loopback_dict(providers, router_settings=router_settings, model_list_extra=model_list_extra,
                         **delegation)
    return config_from_dict(data, source="(loopback test config)")


class _ConfigMaker:
    def __init__(self, root: Path):
        self.root = root

    def path(self, name: str = "config.yaml") -> Path:
        return self.root / name

    def write(self, data: Mapping[str, Any] | str, name: str = "config.yaml") -> Path:
        p = self.path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        text = data if isinstance(data, str) else yaml.safe_dump(dict(data), sort_keys=False)
        p.write_text(text, encoding="utf-8")
        return p

    def __call__(self, data: Mapping[str, Any] | str | None = None, *, name: str = "config.yaml",
                 providers: LoopbackPair | None = None, **delegation: Any) -> Config:
        if data is None:
            data = loopback_dict(providers, **delegation) if providers is not None else {"delegation": delegation}
        return load_config(self.write(data, name))


@pytest.fixture
def make_config(tmp_path: Path) -> _ConfigMaker:
    return _ConfigMaker(tmp_path / "configs")


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server for the session (tests use keys unique to them). Missing binary: skipped
    locally, FAILS under CI=true."""
    from helpers import free_port, start_redis, stop_process

    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    try:
        yield port
    finally:
        stop_process(proc)
