"""Behaviour the type-checking pass (issue 24, ruff and mypy on hosts, loopback, the hermes plugin, routing,
runtime and tools) found and fixed."""

from __future__ import annotations

import io
import time

from hermes_delegate.hosts import cli


def _secret() -> str:
    return f"typing-fix-secret-{time.monotonic_ns()}"


def test_the_cli_stream_redacts_writelines_too(monkeypatch):
    """Everything the CLI writes goes through the Delegator's redactor; `writelines` used to fall through
    `_Redacted.__getattr__` to the raw stream, unredacted."""
    value = _secret()
    monkeypatch.setenv("HD_TYPING_FIX_API_KEY", value)
    raw = io.StringIO()
    stream = cli._Redacted(raw, cli._Context())
    stream.writelines([f"key {value}\n", "plain line\n"])
    print(f"printed {value}", file=stream, flush=True)
    text = raw.getvalue()
    assert value not in text
    assert "key ***" in text and "plain line\n" in text and "printed ***" in text
