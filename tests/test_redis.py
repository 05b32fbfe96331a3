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
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hermes_delegate.loopback import LoopbackProvider
from helpers import free_port, max_in_window, run_together, start_redis, stop_process

pytestmark = [pytest.mark.litellm, pytest.mark.slow]  # litellm's Redis
timing = pytest.mark.timing  # rates between processes, a Redis stop mid-batch, the order of paced sends

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
    outs = run_together(script, [[json.dumps({"config": cfg, "n": N_PER_PROCESS, "name": name})]
                                 for name in ("p1", "p2")], tmp_path, timeout_s=90)
    return [json.loads(o) for o in outs]


@timing
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
    assert max_in_window(arrivals) <= R + 1, "requests sent (admitted or not) in one second"
    # and both processes did queue for the shared capacity
    assert all(o["gate_waits"] > 0 for o in outs), outs


@timing
def test_without_redis_two_processes_overload_the_provider(limited_provider: LoopbackProvider, tmp_path: Path):
    outs = _run_two(limited_provider, None, tmp_path)
    stats = limited_provider.stats()
    assert [o["shared"] for o in outs] == ["LocalWindows", "LocalWindows"]
    arrivals = [r.time for r in limited_provider.requests]
    # each process alone keeps to R/s, so together they send more than the provider admits
    assert stats["429"] >= 3 or stats["max_rps_observed"] > R, stats
    assert max_in_window(arrivals) > R, "requests sent (admitted or not) in one second"
    statuses = [s for o in outs for row in o["attempts"] for s in row]
    assert "429" in statuses, "the overload is visible in the attempt logs too"


# -- Redis going away, Redis down, queue order ---------------------------------------------------

def _delegator(provider: LoopbackProvider, port: int, rps: int) -> Any:
    from hermes_delegate import Delegator, config_from_dict

    cfg = _config(provider, port, f"t{os.getpid()}-{time.time_ns()}")
    cfg["router"]["model_list"][0]["litellm_params"]["rpm"] = 60 * rps
    return Delegator(config_from_dict(cfg, source="(redis test)"))


@timing
def test_redis_going_away_mid_batch_is_a_typed_error_and_nothing_is_sent(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture,
                                                                          capfd: pytest.CaptureFixture[str]):
    import threading

    from hermes_delegate import Task

    port = free_port()
    server = start_redis(port, tmp_path)
    try:
        with LoopbackProvider("limited", rps=R, latency_s=0.05, retry_after=1).start() as provider:
            d = _delegator(provider, port, rps=2)
            d.router.router  # noqa: B018 - build before the batch

            def stop_after_three() -> None:
                while len(provider.requests) < 3:
                    time.sleep(0.02)
                stop_process(server)
            stopper = threading.Thread(target=stop_after_three, daemon=True)
            stopper.start()
            batch = d.run_sync([Task(f"task {i}", model="limited") for i in range(12)])
            stopper.join(10)
            statuses = [r.status for r in batch.results]
            failed = [r for r in batch.results if r.status != "completed"]
            assert failed and "completed" in statuses, statuses
            # every unfinished task says why: the limiter, not the provider
            assert {(r.status, r.error["type"]) for r in failed} == {("failed", "limiter_unavailable")}, \
                [r.error for r in failed]
            assert all("Redis" in r.error["message"] and r.error["retryable"] is False for r in failed)
            # nothing was sent for them: the provider saw exactly the completed tasks
            assert len(provider.requests) == statuses.count("completed")

            # Redis back on the same port: the same delegator shares its windows again (a new batch
            # tries Redis at once, however long the fail-fast period after an outage)
            server = start_redis(port, tmp_path)
            again = d.run_sync([Task(f"again {i}", model="limited") for i in range(3)])
            assert again.counts() == {"completed": 3}, [r.error for r in again.results]
            assert type(d.router.gate.windows).__name__ == "RedisWindows"
    finally:
        stop_process(server)
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "never retrieved" not in logged and "Traceback" not in logged, logged[-2000:]


def test_redis_down_from_the_start_fails_every_task_typed_without_tracebacks(tmp_path: Path):
    # not `timing`: nothing listens on the port, so nothing here depends on how fast anything runs
    port = free_port()  # nothing listens there
    with LoopbackProvider("limited", rps=R, latency_s=0.05).start() as provider:
        cfg = _config(provider, port, f"t{os.getpid()}-{time.time_ns()}")
        (tmp_path / "c.yaml").write_text(json.dumps(cfg), encoding="utf-8")
        (tmp_path / "t.yaml").write_text(json.dumps({"model": "limited", "tasks": [f"t{i}" for i in range(8)]}),
                                         encoding="utf-8")
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        proc = subprocess.run([sys.executable, "-m", "hermes_delegate.hosts.cli", "--config", str(tmp_path / "c.yaml"),
                               "run", str(tmp_path / "t.yaml"), "--json"],
                              capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert provider.requests == [], "nothing may be sent without the shared windows"
    assert proc.returncode == 1, proc.stderr[-2000:]
    batch = json.loads(proc.stdout)
    assert [(t["status"], t["error"]["type"]) for t in batch["results"]] == [("failed", "limiter_unavailable")] * 8
    assert "never retrieved" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@timing
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "local"])
def test_queue_order_does_not_depend_on_where_the_windows_live(redis_port: int, shared: bool):
    from hermes_delegate import Task

    with LoopbackProvider("limited", rps=R, latency_s=0.02).start() as provider:
        d = _delegator(provider, redis_port, rps=3)
        if not shared:
            from hermes_delegate import Delegator, config_from_dict
            cfg = _config(provider, None, "local")
            cfg["router"]["model_list"][0]["litellm_params"]["rpm"] = 180
            d = Delegator(config_from_dict(cfg, source="(redis test)"))
        d.router.router  # noqa: B018
        batch = d.run_sync([Task(f"task {i}", model="limited") for i in range(7)])
        assert batch.counts() == {"completed": 7}
        assert type(d.router.gate.windows).__name__ == ("RedisWindows" if shared else "LocalWindows")
        sent = [r.messages[-1]["content"] for r in provider.requests]
    assert sent == [f"task {i}" for i in range(7)], "first come, first served"
