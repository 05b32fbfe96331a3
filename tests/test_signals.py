"""Real signals to a real `hermes-delegate run` subprocess: SIGTERM and SIGHUP interrupt like the first
Ctrl-C (unfinished tasks `interrupted`, the batch result printed as JSON, exit 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import slow_run_files
from hermes_delegate.loopback import LoopbackProvider

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.slow]  # CLI subprocesses


def _start_run(tmp_path: Path, provider: LoopbackProvider, n: int = 4) -> subprocess.Popen[str]:
    slow_run_files(tmp_path, provider.base_url, n)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.Popen([sys.executable, "-m", "hermes_delegate.hosts.cli", "--config", str(tmp_path / "c.yaml"),
                             "run", str(tmp_path / "t.yaml"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_requests(provider: LoopbackProvider, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(provider.requests) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the provider saw {len(provider.requests)} requests, expected {n}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_interrupts_and_prints_the_results(tmp_path: Path, sig: signal.Signals):
    with LoopbackProvider("slowpoke", latency_s=30.0).start() as provider:
        proc = _start_run(tmp_path, provider)
        try:
            _wait_for_requests(provider, 4)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    batch = json.loads(out)
    assert [t["status"] for t in batch["results"]] == ["interrupted"] * 4



@pytest.mark.parametrize("first,second", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT),
                                          (signal.SIGINT, signal.SIGTERM)], ids=lambda s: s.name)
def test_a_second_signal_during_shutdown_still_prints_the_results_and_exits_1(
        tmp_path: Path, first: signal.Signals, second: signal.Signals):
    with LoopbackProvider("slowpoke", latency_s=30.0).start() as provider:
        proc = _start_run(tmp_path, provider)
        try:
            _wait_for_requests(provider, 4)
            proc.send_signal(first)
            proc.send_signal(second)  # at once: while the first one's shutdown is under way
            time.sleep(0.05)
            proc.send_signal(second)  # and again, whatever phase it is in by now
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    batch = json.loads(out)
    assert [t["status"] for t in batch["results"]] == ["interrupted"] * 4
    assert "Traceback" not in err, err[-2000:]
