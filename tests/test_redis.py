"""Several delegator processes share one provider's rate limit through a real Redis.

Two separate Python processes each run a batch against ONE loopback provider that admits R
requests per sliding second (and answers 429 beyond that). Both name the same deployment (same
`model_info.id`, rpm = 60·R). With `router_settings.redis_host/redis_port`, their request windows
live in Redis, so together they stay at R/s: no 429s, nothing lost. Without Redis, each process
alone keeps to R/s, so together they send ~2R/s and the provider has to turn requests away.

The provider counts only admitted requests in max_rps_observed (it can never exceed R), so the
overload shows as 429 responses; both are asserted from the provider's own request records.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hermes_delegate.loopback import LoopbackProvider
from helpers import require_binary

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"  # checked by require_binary in the fixture
REDIS_HOW = "apt-get install -y redis-server (.ci/run installs it)"
R = 5  # provider limit: requests per sliding second
N_PER_PROCESS = 15


WORKER = textwrap.dedent('''
    import json, os, sys, time
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    from hermes_delegate import Delegator, Task, config_from_dict

    spec = json.loads(sys.argv[1])
    cfg = config_from_dict(spec["config"], source="(redis test worker)")
    d = Delegator(cfg)
    d.router.router  # build the Router (imports litellm) before the common start
    print("READY", flush=True)
    sys.stdin.readline()  # both processes start their batch together
    batch = d.run_sync([Task(f"{spec['name']}-{i}", model="limited") for i in range(spec["n"])])
    print(json.dumps({
        "counts": batch.counts(),
        "attempts": [[a.status for a in r.attempts] for r in batch.results],
        "gate_waits": d.router.gate.waits,
        "shared": type(d.router.gate.windows).__name__,
    }))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    redis_server = require_binary(REDIS_SERVER, REDIS_HOW)  # skip locally, FAIL under CI=true
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"redis-server did not start on port {port}: {out[-800:]}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def limited_provider() -> Iterator[LoopbackProvider]:
    with LoopbackProvider("limited", rps=R, latency_s=0.05, retry_after=1).start() as p:
        yield p


def _config(provider: LoopbackProvider, redis_port: int | None, key_prefix: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"num_retries": 3}
    if redis_port is not None:
        settings.update(redis_host="127.0.0.1", redis_port=redis_port)
    return {
        "delegation": {"max_concurrency": 64, "task_timeout_s": 60},
        "router": {
            "model_list": [{
                "model_name": "limited",
                "litellm_params": {"model": "openai/limited-model", "api_base": provider.base_url,
                                   "api_key": "sk-loopback-test-key", "rpm": 60 * R},
                # the same id in both processes: the shared window key (unique per test run)
                "model_info": {"id": f"{key_prefix}-limited"},
            }],
            "router_settings": settings,
        },
    }


def _run_two(provider: LoopbackProvider, redis_port: int | None, tmp_path: Path) -> list[dict[str, Any]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    prefix = f"t{os.getpid()}-{time.time_ns()}"
    cfg = _config(provider, redis_port, prefix)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, str(script),
                               json.dumps({"config": cfg, "n": N_PER_PROCESS, "name": name})],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              cwd=tmp_path)
             for name in ("p1", "p2")]
    for p in procs:  # wait until both have imported litellm and built their Router
        line = p.stdout.readline() if p.stdout else b""
        if line.strip() != b"READY":
            for q in procs:
                q.kill()
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            pytest.fail(f"a delegator process did not start: {line!r} {err[-2000:]}")
    for p in procs:  # go (both before waiting on either)
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a delegator process did not finish within 90 s")
        assert p.returncode == 0, err.decode(errors="replace")[-2000:]
        outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    return outs


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most requests (admitted or not) that arrived within any `window` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_two_processes_share_one_rate_limit_through_redis(limited_provider: LoopbackProvider, redis_port: int,
                                                          tmp_path: Path):
    outs = _run_two(limited_provider, redis_port, tmp_path)
    stats = limited_provider.stats()
    total = 2 * N_PER_PROCESS
    assert [o["shared"] for o in outs] == ["RedisWindows", "RedisWindows"]
    # nothing lost: every task of both processes completed
    assert [o["counts"] for o in outs] == [{"completed": N_PER_PROCESS}] * 2, outs
    assert stats["ok"] == total
    # together they stayed under the provider's limit: no 429, or one at most (network jitter
    # between two processes), which its retry then absorbed
    assert stats["429"] <= 1, stats
    assert stats["max_rps_observed"] <= R
    arrivals = [r.time for r in limited_provider.requests]
    assert _max_in_window(arrivals) <= R + 1, "requests sent (admitted or not) in one second"
    # and both processes did queue for the shared capacity
    assert all(o["gate_waits"] > 0 for o in outs), outs


def test_without_redis_two_processes_overload_the_provider(limited_provider: LoopbackProvider, tmp_path: Path):
    outs = _run_two(limited_provider, None, tmp_path)
    stats = limited_provider.stats()
    assert [o["shared"] for o in outs] == ["LocalWindows", "LocalWindows"]
    arrivals = [r.time for r in limited_provider.requests]
    # each process alone keeps to R/s, so together they send more than the provider admits
    assert stats["429"] >= 3 or stats["max_rps_observed"] > R, stats
    assert _max_in_window(arrivals) > R, "requests sent (admitted or not) in one second"
    statuses = [s for o in outs for row in o["attempts"] for s in row]
    assert "429" in statuses, "the overload is visible in the attempt logs too"
