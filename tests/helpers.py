"""Shared test helpers (plain functions, not fixtures). Test files import from here, never from
each other: ``from helpers import ...`` (tests/ is on sys.path, as for ``conftest``).

    require_binary(path_or_name, how_to_install) -> str
        The path of an executable the test needs. Missing: a skip locally, a FAILURE under CI=true.
    missing(what, how_to_install)
        The same fail-under-CI / skip-locally outcome, for a requirement found by other means.
    client_sockets(ports) / opened_since(before, ports)
        This process's client sockets to `ports` (Linux /proc), for "nothing left behind" checks.
    new_threads(before, grace_s=2.0)
        Threads started since `before` still alive after a grace period, minus litellm's bounded pools.
    free_port() / start_redis(port, workdir) / stop_process(proc)
        A real redis-server on loopback (the `redis_port` fixture in conftest starts one per session).
    run_together(script, args_list, cwd, timeout_s=120) -> list[str]
        Start one Python process per args (a warm one, see below), wait for each to print READY, start
        them all at once (a line on stdin), and return the last stdout line of each (a process that
        fails fails the test).
    warm_command(script, *args) -> list[str]
        The command that runs `python SCRIPT ARG...` as a fork of a server that has already imported
        litellm and openai (tests/warm_python.py; one server per pytest process, started on first use):
        the same process semantics for Popen/run, ~2 s less CPU each. Only for the tests' own helper
        scripts (a hermes scenario, a Redis worker), never for the product's entry points, and not for
        a check of what an import pulls in (those need a fresh `sys.executable`).
    proxy_command(binary, *args) -> list[str]
        The same for the real LiteLLM proxy (`require_proxy()`'s binary): forked from a server of the
        proxy's own interpreter that has imported litellm.proxy.proxy_server (~4 s of CPU per start).
    wait_until(predicate, timeout_s=10, what="", interval_s=0.01) -> value
        Poll `predicate` until it returns something truthy (returned) or the deadline passes (the test
        fails, naming `what` and the last value seen). The way to wait: never a fixed sleep().
    await async_wait_until(predicate, ...)
        The same inside a coroutine (the predicate may be sync or async).
    examples(n) -> int
        A property test's example count: `n`, scaled by HERMES_DELEGATE_TEST_EXAMPLES (CI's second
        pass sets 0.25), at least 5.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

T = TypeVar("T")

import pytest

__all__ = ["KNOWN_POOLS", "client_sockets", "in_ci", "max_in_window", "missing", "new_threads", "opened_since",
           "require_binary", "free_port", "start_redis", "stop_process", "REDIS_SERVER", "run_together",
           "wait_until", "async_wait_until", "examples", "warm_command", "proxy_command"]


def wait_until(predicate: "Callable[[], T]", timeout_s: float = 10.0, what: str = "",
               interval_s: float = 0.01) -> "T":
    """Poll `predicate` until it returns a truthy value (returned); past `timeout_s` the test fails
    with `what` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:g} s for {what or predicate!r}; last seen: {value!r}", pytrace=False)
        time.sleep(interval_s)


async def async_wait_until(predicate: "Callable[[], Any]", timeout_s: float = 10.0, what: str = "",
                           interval_s: float = 0.01) -> Any:
    """`wait_until` inside a coroutine: polls without blocking the loop; `predicate` may return an awaitable."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:g} s for {what or predicate!r}; last seen: {value!r}", pytrace=False)
        await asyncio.sleep(interval_s)


def examples(n: int) -> int:
    """A property test's max_examples: `n` scaled by HERMES_DELEGATE_TEST_EXAMPLES (default 1), at least 5."""
    scale = float(os.environ.get("HERMES_DELEGATE_TEST_EXAMPLES", "1") or 1)
    return max(5, round(n * scale))


def in_ci() -> bool:
    """True when the environment variable CI is "true" (any case), as CI services set it."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_binary(path_or_name: str | os.PathLike[str], how_to_install: str) -> str:
    """Return the path of the executable `path_or_name` (a path, or a name looked up on PATH).

    When it is missing: under CI=true the calling test FAILS (CI must never silently skip what it is
    meant to test); otherwise the test is skipped. Either way the message names what is missing and
    how to install it."""
    text = os.fspath(path_or_name)
    if os.sep in text or (os.altsep and os.altsep in text):
        found = text if os.path.isfile(text) and os.access(text, os.X_OK) else None
    else:
        found = shutil.which(text)
    if found:
        return found
    missing(f"required binary {text!r} not found", how_to_install)


def missing(what: str, how_to_install: str) -> NoReturn:
    """Fail (CI=true) or skip (locally) the calling test because `what` is missing."""
    msg = f"{what}; install it with: {how_to_install}"
    if in_ci():
        pytest.fail(f"{msg} (CI=true: a missing binary is a failure, not a skip)", pytrace=False)
    pytest.skip(msg)


def client_sockets(ports: set[int]) -> dict[str, tuple[int, str]] | None:
    """{socket inode: (remote port, TCP state)} of this process's sockets connected to one of `ports`
    (Linux /proc); None where /proc is not available. The in-process loopback servers' own sockets have the port as
    their local port, so they are not counted."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return None
    inodes = set()
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    states = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "0A": "LISTEN", "0B": "CLOSING"}
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port in ports and cols[9] in inodes:
                out[cols[9]] = (remote_port, states.get(cols[3], cols[3]))
    return out


def opened_since(before: dict[str, tuple[int, str]] | None, ports: set[int]) -> list[tuple[int, str]]:
    """Sockets to `ports` open now that were not open at `before` ([] where /proc is not available)."""
    now = client_sockets(ports)
    if now is None or before is None:
        return []
    return [v for k, v in now.items() if k not in before]


#: Process-wide, bounded worker pools of litellm, started on first use and reused: not "left behind".
KNOWN_POOLS = ("litellm-logging",)


def new_threads(before: set[int], grace_s: float = 2.0) -> list[str]:
    """Threads started since `before` still alive after a grace period, minus litellm's bounded pools
    (whose size is checked against litellm's own cap)."""
    from litellm.constants import LOGGING_EXECUTOR_MAX_THREADS

    deadline = time.monotonic() + grace_s
    while True:
        alive = [t for t in threading.enumerate() if t.is_alive()]
        pooled = [t for t in alive if t.name.startswith(KNOWN_POOLS)]
        assert len(pooled) <= LOGGING_EXECUTOR_MAX_THREADS, [t.name for t in pooled]
        extra = [t.name for t in alive if t.ident not in before and t not in pooled]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most requests (admitted or turned away) that arrived within any `window` seconds."""
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_HOW = "apt-get install -y redis-server (.ci/run installs it)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, workdir: Path) -> "subprocess.Popen[bytes]":
    """A real redis-server on 127.0.0.1:`port`, answering PING (fails the test if it does not start;
    a missing binary skips locally and FAILS under CI=true)."""
    redis_server = require_binary(REDIS_SERVER, REDIS_HOW)
    proc = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def stop_process(proc: "subprocess.Popen[bytes]") -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_WARM_PRELOAD = ("litellm", "openai")
#: the real LiteLLM proxy's server module (its venv, tests/helpers.proxy_binary): ~4 s of CPU per start
PROXY_PRELOAD = ("litellm.proxy.proxy_server",)
_warm: "dict[tuple[str, tuple[str, ...], bool], tuple[subprocess.Popen[bytes], str]]" = {}


def warm_command(script: "Path | str", *args: str, python: "str | None" = None,
                 preload: "tuple[str, ...]" = _WARM_PRELOAD, minimal_env: bool = False) -> list[str]:
    """`[python, SCRIPT, ARG...]` as a fork of this process's warm server for (python, preload)
    (tests/warm_python.py). The server imports its modules in this process's environment (without
    HERMES_* and XDG_*), or with minimal_env in PATH, LANG, HOME (its own temporary directory), NO_PROXY
    for loopback only, as the proxy tests start the proxy; litellm's local cost map in both. The child
    runs in the caller's environment."""
    import atexit
    import tempfile

    here = Path(__file__).resolve().parent / "warm_python.py"
    python = python or sys.executable
    key = (python, tuple(preload), minimal_env)
    server, sock = _warm.get(key, (None, ""))
    if server is None or server.poll() is not None:
        workdir = Path(tempfile.mkdtemp(prefix="hd-warm-"))
        sock, log = str(workdir / "s"), workdir / "server.log"
        if minimal_env:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(workdir),
                   "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES", "XDG_"))}
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        with open(log, "wb") as logf:
            server = subprocess.Popen([python, str(here), "serve", sock, *preload], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=logf, cwd=workdir, env=env)
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"READY":
            server.kill()
            pytest.fail(f"the warm Python server did not start: {log.read_text(errors='replace')[-3000:]}")

        def stop(proc: "subprocess.Popen[bytes]" = server, workdir: Path = workdir) -> None:
            if proc.stdin is not None:
                proc.stdin.close()  # the server exits when its stdin closes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)

        atexit.register(stop)
        _warm[key] = (server, sock)
    return [sys.executable, "-I", "-S", str(here), "run", sock, str(script), *map(str, args)]


def proxy_command(binary: str, *args: str) -> list[str]:
    """The real LiteLLM proxy (`binary` from require_proxy(), its console script) started as a fork of a
    warm server of its own interpreter that has imported the proxy's server module."""
    return warm_command(binary, *args, python=str(Path(binary).parent / "python"), preload=PROXY_PRELOAD,
                        minimal_env=True)


def run_together(script: Path, args_list: "list[list[str]]", cwd: Path, timeout_s: float = 120) -> list[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(warm_command(script, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, cwd=cwd)
             for args in args_list]
    for p in procs:  # each has imported litellm and built its Router
        line = p.stdout.readline() if p.stdout else b""
        if line.strip() != b"READY":
            for q in procs:
                q.kill()
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            pytest.fail(f"a worker process did not start: {line!r} {err[-2000:]}")
    for p in procs:  # go (all before waiting on any)
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a worker process did not finish within {timeout_s:g} s")
        assert p.returncode == 0, err.decode(errors="replace")[-2000:]
        outs.append(out.decode().strip().splitlines()[-1])
    return outs


# -- the real LiteLLM proxy (its own venv: .ci/run installs litellm[proxy] into .proxyvenv) -----------
PROXY_KEY = "sk-proxy-master-key-0123456789"
PROXY_HOW = ('python -m venv .proxyvenv && .proxyvenv/bin/pip install "litellm[proxy]" (.ci/run does it), '
             "or set HERMES_DELEGATE_TEST_LITELLM_PROXY to such a venv's bin/litellm")
_PROXY_MODULES = ("fastapi", "uvicorn", "backoff", "apscheduler", "orjson")
_ROOT = Path(__file__).resolve().parents[1]


def proxy_binary() -> str | None:
    """A `litellm` executable whose interpreter has the proxy extras (litellm[proxy]), or None."""
    candidates = [os.environ.get("HERMES_DELEGATE_TEST_LITELLM_PROXY"), str(_ROOT.parent / "proxyvenv/bin/litellm"),
                  str(_ROOT / ".proxyvenv/bin/litellm"), shutil.which("litellm")]
    check = "import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in %r) else 1)" % (
        _PROXY_MODULES,)
    for cand in candidates:
        if not cand or not os.access(cand, os.X_OK):
            continue
        python = Path(cand).parent / "python"
        if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
            return cand
    return None


def require_proxy() -> str:
    """The real proxy's `litellm` executable; when it is missing or lacks its extras the calling test is
    skipped locally and FAILS under CI=true."""
    binary = proxy_binary()
    if binary is None:
        default = os.environ.get("HERMES_DELEGATE_TEST_LITELLM_PROXY") or str(_ROOT / ".proxyvenv/bin/litellm")
        require_binary(default, PROXY_HOW)
        missing(f"{default} exists but its interpreter lacks the proxy extras {_PROXY_MODULES}", PROXY_HOW)
    return binary


def slow_run_files(tmp_path: Path, api_base: str, n: int = 3) -> tuple[Path, Path]:
    """A config (one group `slow` on `api_base`, no retries) and a tasks file of `n` tasks on it, for
    `hermes-delegate run` subprocesses that get a signal mid-batch or mid-start-up."""
    import yaml

    cfg = {"delegation": {"task_timeout_s": 60},
           "router": {"model_list": [{"model_name": "slow", "litellm_params": {
               "model": "openai/slow-model", "api_base": api_base, "api_key": "sk-loopback-test"}}],
               "router_settings": {"num_retries": 0}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"model": "slow", "tasks": [f"task {i}" for i in range(n)]}),
                                     encoding="utf-8")
    return tmp_path / "c.yaml", tmp_path / "t.yaml"
