"""README's CLI table against the real `hermes-delegate --help` (and every subcommand's help).

Each command the CLI has gets a row, each row's options are the ones the command takes (no more,
no fewer), and the options every command takes are in the "every command" row.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def _cli() -> list[str]:
    """The installed console script next to this interpreter, else the same entry point via -m."""
    script = Path(sys.executable).parent / ("hermes-delegate.exe" if os.name == "nt" else "hermes-delegate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hermes_delegate"]


def _help(*args: str) -> str:
    proc = subprocess.run([*_cli(), *args, "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _options(help_text: str) -> set[str]:
    """The option strings of the `options:` section (each line's flags before its help text)."""
    section = help_text.split("\noptions:\n", 1)[1]
    found: set[str] = set()
    for line in section.splitlines():
        m = re.match(r"^  (-[^ ].*?)(?:  |$)", line)
        if m:
            found |= {flag.split()[0] for flag in m.group(1).split(", ")}
    return found - {"-h", "--help"}


def _commands(help_text: str) -> list[str]:
    section = help_text.split("\n  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^    ([a-z][a-z-]*)\s", section, re.M)]


def _rows() -> dict[str, set[str]]:
    """README's CLI table: first cell (the command, or 'every command') -> the options it names."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## CLI\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) < 2 or cells[0] in ("command", "---"):
            continue
        first = cells[0]
        m = re.match(r"`hermes-delegate ([a-z][a-z-]*)", first)
        key = m.group(1) if m else "every command" if first.startswith("every command") else first
        rows[key] = set(OPTION.findall(first.replace("hermes-delegate", "")))
    return rows


@pytest.fixture(scope="module")
def main_help() -> str:
    return _help()


def test_every_command_has_a_row_and_no_row_names_a_command_that_is_gone(main_help):
    rows = _rows()
    commands = _commands(main_help)
    assert {"resolve", "models", "run", "doctor", "demo", "mcp"} <= set(commands), commands
    assert set(rows) - {"every command"} == set(commands)


def test_the_options_every_command_takes_are_in_the_every_command_row(main_help):
    common = _options(main_help)
    assert {"--config", "--hermes", "-v"} <= common
    documented = _rows()["every command"]
    assert common - {"--verbose"} <= documented <= common, (sorted(documented), sorted(common))


@pytest.mark.parametrize("command", ["resolve", "models", "run", "doctor", "demo", "mcp"])
def test_each_rows_options_are_exactly_the_commands_own(main_help, command):
    own = _options(_help(command)) - _options(main_help)
    assert _rows()[command] == own, f"README row for {command!r}: {sorted(_rows()[command])}, --help: {sorted(own)}"
