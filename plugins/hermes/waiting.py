"""Waiting on the plugin loop from a hermes thread, in short polls.

`fut.result(timeout)` raising TimeoutError does not mean the call timed out: the future may have
completed just after the timed wait gave up, before the caller looks at it again; and a call that
itself timed out raises the same TimeoutError from a done future. Either way the future, once
done, holds the one true outcome, so that is what `wait` returns or raises.

Stdlib only at import: this module is loaded at plugin registration (middleware imports it).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable


def wait(fut: concurrent.futures.Future[Any], poll_s: float, between: Callable[[], None]) -> Any:
    """`fut`'s result (or its exception, raised; CancelledError once cancelled), calling `between()`
    after every poll that found it still running (print progress, forward an interrupt)."""
    while True:
        try:
            return fut.result(timeout=poll_s)
        except concurrent.futures.TimeoutError:
            if fut.done():  # done after all: its own TimeoutError, or completed just now
                return fut.result()
            between()
