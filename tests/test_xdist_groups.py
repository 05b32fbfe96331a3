"""The suite's xdist groups hold: every test of a group runs on one worker (the `timing` group's promise
that two timing tests never compete rests on it). pytest 9.2 + pytest-xdist 3.8 silently spread a group
over all workers; tests/conftest.py puts the group back into the node id (`_xdist_groups_in_node_ids`).
A small pytest session in a subprocess, with this suite's conftest as a plugin, shows where each test ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a pytest session with three workers

HERE = Path(__file__).resolve().parent

INNER = '''
import json, os, pytest
from pathlib import Path

OUT = Path(os.environ["HD_GROUP_OUT"])


def _record(name):
    with open(OUT, "a") as fh:
        fh.write(json.dumps([name, os.environ.get("PYTEST_XDIST_WORKER")]) + "\\n")


@pytest.mark.timing
@pytest.mark.parametrize("i", range(4))
def test_timed(i):
    _record(f"timed{i}")


@pytest.mark.xdist_group("other")
@pytest.mark.parametrize("i", range(4))
def test_other(i):
    _record(f"other{i}")


@pytest.mark.parametrize("i", range(6))
def test_free(i):
    _record(f"free{i}")
'''


def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER, encoding="utf-8")
    out = tmp_path / "ran.jsonl"
    env = {**os.environ, "HD_GROUP_OUT": str(out), "PYTHONPATH": str(HERE)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
                           "-o", "addopts=", "--strict-markers", "-n", "3", "--dist", "loadgroup", "-q",
                           "-W", "ignore::pytest.PytestAssertRewriteWarning",
                           "-o", "markers=slow\ntiming\nlitellm", "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(ran) == 14, ran
    workers = {kind: {w for name, w in ran if name.startswith(kind)} for kind in ("timed", "other", "free")}
    assert len(workers["timed"]) == 1, ran  # the timing group: one worker
    assert len(workers["other"]) == 1, ran  # any xdist_group: one worker
    assert None not in workers["free"], ran  # it really ran under xdist
