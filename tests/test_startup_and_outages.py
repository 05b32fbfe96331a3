"""Hardening, second pass (issue 13): a stop signal while `run`/`demo` is still starting up, Redis down
from the start or frozen mid-batch, the stray "Task exception was never retrieved" in a host's own
loop, --concurrency / max_concurrency out of range, and `doctor` on loopback:// configs.

Signals go to a real `hermes-delegate` process (cli.main, run as `python -c`) held at a chosen start-up
step: the step prints a marker on stderr and waits for a line on stdin, so the signal provably arrives
during that step (no sleeps to guess the timing); the test then lets the step finish.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hermes_delegate import Delegator, Task, UsageError, config_from_dict
from hermes_delegate.hosts.cli import main
from hermes_delegate.loopback import LoopbackProvider
from helpers import async_wait_until, free_port, slow_run_files, start_redis, stop_process

pytestmark = pytest.mark.litellm

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

#: Runs the CLI with one start-up step held until a line arrives on stdin (announced on stderr).
HELD_CLI = textwrap.dedent('''
    import sys

    step = sys.argv[1]

    def held(fn):
        def wrapper(*args, **kwargs):
            print(f"HELD AT {step}", file=sys.stderr, flush=True)
            sys.stdin.readline()
            return fn(*args, **kwargs)
        return wrapper

    from hermes_delegate.hosts import cli, demo
    from hermes_delegate.routing import router
    from hermes_delegate.runtime import warmup

    if step == "config":  # the config file loading
        cli._config = held(cli._config)
    elif step == "demo-config":  # the demo's config loading (and its providers starting)
        demo.loopback_config = held(demo.loopback_config)
    elif step == "import":  # litellm's import, on a worker thread ("loading providers…")
        warmup.import_for_first_call = held(warmup.import_for_first_call)
    elif step == "build":  # the Router's build, on the event loop
        router.RouterHandle._build = held(router.RouterHandle._build)
    sys.exit(cli.main(sys.argv[2:]))
''')


def _held_cli(tmp_path: Path, step: str, argv: list[str]) -> subprocess.Popen[str]:
    script = tmp_path / "held_cli.py"
    script.write_text(HELD_CLI, encoding="utf-8")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(script), step, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def _signal_while_held(proc: subprocess.Popen[str], step: str, sig: signal.Signals) -> tuple[str, str]:
    """Wait for the held step's marker, send `sig`, let the step go on; return (stdout, stderr)."""
    assert proc.stderr is not None and proc.stdin is not None
    seen: list[str] = []
    for line in proc.stderr:  # stderr lines until the marker (a failure before it ends the loop)
        seen.append(line)
        if line.strip() == f"HELD AT {step}":
            break
    else:
        proc.wait(30)
        pytest.fail(f"never reached {step}: rc={proc.returncode} {''.join(seen)[-2000:]}")
    proc.send_signal(sig)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    return out, "".join(seen) + err


@POSIX
@pytest.mark.parametrize("step,sig", [
    ("config", signal.SIGTERM), ("config", signal.SIGHUP),
    ("import", signal.SIGTERM), ("import", signal.SIGINT), ("import", signal.SIGHUP),
    ("build", signal.SIGTERM),
], ids=lambda v: v.name if isinstance(v, signal.Signals) else v)
@pytest.mark.slow
def test_a_stop_signal_during_start_up_interrupts_before_anything_is_sent(tmp_path: Path, step: str,
                                                                          sig: signal.Signals):
    with LoopbackProvider("slowpoke", latency_s=2.0).start() as provider:
        cfg, tasks = slow_run_files(tmp_path, provider.base_url)
        proc = _held_cli(tmp_path, step, ["--config", str(cfg), "run", str(tasks), "--json"])
        try:
            out, err = _signal_while_held(proc, step, sig)
        finally:
            proc.kill()
        sent = len(provider.requests)
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    batch = json.loads(out)
    assert [t["status"] for t in batch["results"]] == ["interrupted"] * 3
    assert {t["error"]["type"] for t in batch["results"]} == {"interrupted"}
    assert sent == 0, "nothing may be sent after a stop signal"
    assert "Traceback" not in err, err[-2000:]


@pytest.mark.slow
@POSIX
def test_a_stop_signal_while_the_demo_loads_its_config_still_prints_the_result(tmp_path: Path):
    proc = _held_cli(tmp_path, "demo-config", ["demo", "--json"])
    try:
        out, err = _signal_while_held(proc, "demo-config", signal.SIGTERM)
    finally:
        proc.kill()
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    statuses = {t["status"] for t in json.loads(out)["results"]}
    assert statuses == {"interrupted"}
    assert "Traceback" not in err, err[-2000:]


def test_interrupt_during_start_up_is_not_lost_in_an_async_host():
    """Delegator.interrupt() while run() is still importing litellm: the batch starts stopped."""
    from hermes_delegate.runtime import warmup

    real = warmup.import_for_first_call
    entered, release = threading.Event(), threading.Event()

    def slow_import() -> None:
        entered.set()
        release.wait(30)
        real()

    with LoopbackProvider("slowpoke", latency_s=2.0).start() as provider:
        d = Delegator(config_from_dict({"router": {"model_list": [{"model_name": "slow", "litellm_params": {
            "model": "openai/slow-model", "api_base": provider.base_url, "api_key": "sk-loopback-test"}}]}},
            source="(start-up test)"))

        async def host() -> Any:
            run = asyncio.ensure_future(d.run([Task(f"t{i}", model="slow") for i in range(3)]))
            await asyncio.to_thread(entered.wait, 30)
            d.interrupt()
            release.set()
            return await run

        warmup.import_for_first_call = slow_import
        try:
            batch = asyncio.run(host())
        finally:
            warmup.import_for_first_call = real
            release.set()
        assert [r.status for r in batch.results] == ["interrupted"] * 3
        assert provider.requests == []
    # and the next batch of the same Delegator runs normally
    with LoopbackProvider("fast", latency_s=0.01).start() as provider:
        d = Delegator(config_from_dict({"router": {"model_list": [{"model_name": "fast", "litellm_params": {
            "model": "openai/fast-model", "api_base": provider.base_url, "api_key": "sk-loopback-test"}}]}},
            source="(start-up test)"))
        assert d.run_sync([Task("again", model="fast")]).counts() == {"completed": 1}


# -- Redis down from the start, frozen mid-batch --------------------------------------------------

def _redis_config(provider: LoopbackProvider, port: int, rpm: int = 600) -> Any:
    return config_from_dict({
        "delegation": {"max_concurrency": 64, "task_timeout_s": 60},
        "router": {"model_list": [{"model_name": "limited", "litellm_params": {
            "model": "openai/limited-model", "api_base": provider.base_url, "api_key": "sk-loopback-test",
            "rpm": rpm}, "model_info": {"id": f"t{os.getpid()}-{time.time_ns()}-limited"}}],
            "router_settings": {"num_retries": 0, "redis_host": "127.0.0.1", "redis_port": port}}},
        source="(redis outage test)")


def _connections_per_sync_command(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """From now on, every synchronous redis-py command as (command, TCP connections it tried to open).
    A spy: each call goes on to redis-py's real method (`Connection._connect` opens one connection per
    attempt, its retries included); attempts are counted per thread, so commands on other threads do
    not mix in."""
    import redis.client
    import redis.connection

    made: list[tuple[str, int]] = []
    attempts: dict[int, int] = {}
    connect, execute = redis.connection.Connection._connect, redis.client.Redis.execute_command

    def counted_connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        me = threading.get_ident()
        attempts[me] = attempts.get(me, 0) + 1
        return connect(self, *args, **kwargs)

    def counted_execute(self: Any, *args: Any, **options: Any) -> Any:
        me = threading.get_ident()
        before = attempts.get(me, 0)
        try:
            return execute(self, *args, **options)
        finally:
            made.append((str(args[0]), attempts.get(me, 0) - before))

    monkeypatch.setattr(redis.connection.Connection, "_connect", counted_connect)
    monkeypatch.setattr(redis.client.Redis, "execute_command", counted_execute)
    return made


def test_redis_down_from_the_start_fails_fast_and_quietly_in_an_async_host(caplog: pytest.LogCaptureFixture,
                                                                           capfd: pytest.CaptureFixture[str],
                                                                           monkeypatch: pytest.MonkeyPatch):
    """A host awaiting Delegator.run() in its own loop (as the MCP server does): the Router's build does
    not stall on redis-py's retries (each Redis command LiteLLM's RedisCache makes while it is built
    tries to connect once; redis-py's default retries with backoff made that 11 tries each, ~8 s), every
    task fails typed, saying Redis refused the connection, and LiteLLM's unawaited Redis health ping
    leaves no "Task exception was never retrieved"."""
    port = free_port()  # nothing listens there
    commands = _connections_per_sync_command(monkeypatch)
    with LoopbackProvider("limited", latency_s=0.01).start() as provider:
        d = Delegator(_redis_config(provider, port))

        async def host() -> tuple[Any, list[tuple[str, int]]]:
            assert asyncio.get_running_loop().get_exception_handler() is None  # the host's own default
            before = len(commands)
            d.router.router  # noqa: B018 - the build, on this loop
            built = commands[before:]
            batch = await d.run([Task(f"t{i}", model="limited") for i in range(6)])
            me = asyncio.current_task()
            await async_wait_until(lambda: not [t for t in asyncio.all_tasks() if t is not me and not t.done()],
                                   10, "LiteLLM's Redis health ping to fail and end")
            gc.collect()  # and its task is gone: an unretrieved exception would be reported now
            await asyncio.sleep(0)
            return batch, built

        batch, built = asyncio.run(host())
        gc.collect()
        assert provider.requests == []
    # what the build did with Redis down: e.g. [("INFO", 1), ("PING", 1)], one refused connection each
    assert built and all(tries == 1 for _, tries in built), built
    cache = d.router.router.cache.redis_cache  # because its client has short timeouts and no retries
    assert cache.redis_kwargs["socket_connect_timeout"] <= 1 and cache.redis_kwargs["socket_timeout"] <= 1
    assert cache.redis_kwargs["retry"]._retries == 0
    assert [(r.status, r.error["type"]) for r in batch.results] == [("failed", "limiter_unavailable")] * 6
    for r in batch.results:
        assert "The shared rate limiter (Redis) is unavailable: connection refused" in r.error["message"], r.error
        assert "Nothing was sent to the provider" in r.error["message"], r.error
        assert "Start the Redis server" in r.error["hint"], r.error
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "never retrieved" not in logged and "Traceback" not in logged, logged[-2000:]
    assert "synchronous redis.retry.Retry" not in logged, logged[-2000:]


def _watch_window_commands(monkeypatch: pytest.MonkeyPatch, windows: Any) -> list[tuple[str, int]]:
    """What our rate windows (RedisWindows) ask Redis, in order: ("sent", n) as command n goes to
    redis-py, then ("answered", n), or ("unanswered", n) when no reply came (timed out, or the
    connection failed). A spy on the real client each new connection gets: every command still goes
    to Redis."""
    from redis.exceptions import ResponseError

    events: list[tuple[str, int]] = []
    connect = windows._connect

    def watched() -> Any:
        conn = connect()
        execute = conn.client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            n = sum(1 for kind, _ in events if kind == "sent")
            events.append(("sent", n))
            try:
                result = await execute(*args, **options)
            except ResponseError:  # Redis answered with an error (e.g. NOSCRIPT)
                events.append(("answered", n))
                raise
            except BaseException:
                events.append(("unanswered", n))
                raise
            events.append(("answered", n))
            return result

        conn.client.execute_command = counted  # the instance's own: its commands and scripts call it
        return conn

    monkeypatch.setattr(windows, "_connect", watched)
    return events


@pytest.mark.slow
def test_a_frozen_redis_fails_the_rest_of_the_batch_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            capfd: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch):
    """A redis-server stopped (SIGSTOP) mid-batch answers nothing. The commands our windows had in
    flight time out (~1 s), and from the first timeout on the batch asks Redis nothing more (before: a
    2 s try, a 2 s pause, another try, task after task): every task still queued fails
    `limiter_unavailable` from the "Redis is down for this batch" state, for the first timeout's
    reason, and nothing more is sent to the provider. The next batch tries Redis again.

    "At once", without a clock: the queue's arrival grace (how long its head waits for an earlier call
    that is neither queued nor over, 0.25 s) is made longer than the test, so no queued task can move
    on by that timer. Each learns of the outage only because the queue is woken when a failed call is
    over (`unreserve`); without that wake (the regression e5a166e fixed: on litellm 1.110 it cost each
    queued task 0.25 s more, 7 s in CI) they sit until task_timeout_s and fail `timeout`, on any litellm."""
    from hermes_delegate.ratelimit import first_request, gate

    monkeypatch.setattr(gate, "ARRIVAL_GRACE_S", 3600.0)
    monkeypatch.setattr(first_request, "ARRIVAL_GRACE_S", 3600.0)
    port = free_port()
    server = start_redis(port, tmp_path)
    frozen = threading.Event()
    try:
        with LoopbackProvider("limited", latency_s=0.02).start() as provider:
            d = Delegator(_redis_config(provider, port, rpm=120))  # 2/s: the batch queues
            d.router.router  # noqa: B018 - build before the batch
            events = _watch_window_commands(monkeypatch, d.router.gate.windows)

            def freeze_after_two() -> None:
                while len(provider.requests) < 2:
                    time.sleep(0.02)
                os.kill(server.pid, signal.SIGSTOP)
                frozen.set()

            freezer = threading.Thread(target=freeze_after_two, daemon=True)
            freezer.start()
            batch = d.run_sync([Task(f"task {i}", model="limited") for i in range(20)])
            assert frozen.is_set()
            freezer.join(5)
            statuses = [r.status for r in batch.results]
            failed = [r for r in batch.results if r.status != "completed"]
            assert len(failed) >= 15, statuses
            # no `timeout` among them: every queued task was woken to learn of the outage
            assert {(r.status, r.error["type"]) for r in failed} == {("failed", "limiter_unavailable")}, \
                sorted({r.error["message"] for r in failed})
            for r in failed:  # each for the timeout the batch saw first, not a try of its own
                assert "The shared rate limiter (Redis) is unavailable: no answer within 1 s" in r.error["message"]
                assert "Nothing was sent to the provider" in r.error["message"] and "Start the Redis server" \
                    in r.error["hint"], r.error
            assert len(provider.requests) == statuses.count("completed"), "nothing sent for a failed task"
            # the commands in flight at the freeze got no answer; none was sent after the first of them
            first_timeout = next((k for k, (kind, _) in enumerate(events) if kind == "unanswered"), None)
            assert first_timeout is not None, events
            assert not [e for e in events[first_timeout:] if e[0] == "sent"], events
            in_batch = len(events)

            os.kill(server.pid, signal.SIGCONT)  # Redis answers again: the next batch uses it at once
            again = d.run_sync([Task(f"again {i}", model="limited") for i in range(2)])
            assert again.counts() == {"completed": 2}, [r.error for r in again.results]
            assert any(kind == "answered" for kind, _ in events[in_batch:]), events[in_batch:]
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGCONT)
        stop_process(server)
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "never retrieved" not in logged and "Traceback" not in logged, logged[-2000:]


# -- max_concurrency, from the CLI and from Python -------------------------------------------------

@pytest.mark.parametrize("value", ["-1", "0", "x", "1.5"])
def test_cli_concurrency_must_be_a_positive_whole_number(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         value: str):
    (tmp_path / "t.yaml").write_text("- hi\n", encoding="utf-8")
    code = main(["run", str(tmp_path / "t.yaml"), "--concurrency", value], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2
    assert "--concurrency" in err and "at least 1" in err and "Traceback" not in err and "Semaphore" not in err


@pytest.mark.parametrize("value", [-1, 0, 1.5, "4", True])
def test_python_max_concurrency_out_of_range_is_a_usage_error(value: Any):
    with LoopbackProvider("fast", latency_s=0.01).start() as provider:
        d = Delegator(config_from_dict({"router": {"model_list": [{"model_name": "fast", "litellm_params": {
            "model": "openai/fast-model", "api_base": provider.base_url, "api_key": "sk-loopback-test"}}]}},
            source="(concurrency test)"))
        with pytest.raises(UsageError, match="max_concurrency must be a whole number of at least 1"):
            d.run_sync([Task("a", model="fast")], max_concurrency=value)
        with pytest.raises(UsageError, match="at least 1"):
            asyncio.run(d.run([Task("a", model="fast")], max_concurrency=value))
        planned, cap = d.plan([Task("a", model="fast")])
        with pytest.raises(UsageError, match="at least 1"):
            asyncio.run(d.run_planned(planned, cap=cap, max_concurrency=value))
        assert provider.requests == []
        assert d.run_sync([Task("b", model="fast")], max_concurrency=1).counts() == {"completed": 1}


# -- doctor on a loopback:// config ----------------------------------------------------------------

def test_doctor_reports_loopback_api_bases_as_run_does(capsys: pytest.CaptureFixture[str]):
    demo_cfg = Path(__file__).resolve().parents[1] / "hermes_delegate" / "demo_data" / "demo.yaml"
    out = io.StringIO()
    code = main(["doctor", "--config", str(demo_cfg)], out=out)
    text = out.getvalue()
    assert code == 1, text
    assert "ok: no problems found" not in text
    assert "only works under `hermes-delegate demo`" in text and "python -m hermes_delegate.loopback" in text
    out = io.StringIO()
    assert main(["doctor", "--config", str(demo_cfg), "--json"], out=out) == 1
    problems = json.loads(out.getvalue())["problems"]
    assert any("loopback://" in p and "hermes-delegate demo" in p for p in problems), problems
