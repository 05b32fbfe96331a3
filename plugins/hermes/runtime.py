"""The plugin's one asyncio loop (a daemon thread) and the Delegator whose Router lives on it.

hermes runs agents on plain threads; a litellm Router and its async HTTP clients belong to one
event loop. So every Router call, from any child thread, goes to this loop through
asyncio.run_coroutine_threadsafe, and the batch fan-out runs here too. Started on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from typing import Any, Coroutine

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_handles: dict[str, Any] = {}


def loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new)
                new.call_soon(ready.set)
                new.run_forever()

            threading.Thread(target=run, name="hermes-delegate-loop", daemon=True).start()
            ready.wait()
            _loop = new
        return _loop


def submit(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
    return asyncio.run_coroutine_threadsafe(coro, loop())


def delegator_for(config: Any) -> Any:
    """The plugin's base Delegator for this config's router section (one per distinct section); each
    call derives its own from it (`Delegator.derive`), sharing the one Router. The Router itself, and
    the litellm import, are built lazily on first use, on the loop."""
    from hermes_delegate import Delegator  # noqa: PLC0415

    key = json.dumps(config.router.model_dump(mode="json"), sort_keys=True, default=str)
    with _lock:
        base = _handles.get(key)
        if base is None:
            _handles.clear()
            base = _handles[key] = Delegator(config)
        return base


WARM_DELAY_S = 0.5  # let hermes finish building its first agent before litellm's import competes
_warm_started = threading.Event()


def warm_in_background(delay_s: float = WARM_DELAY_S) -> threading.Thread | None:
    """Once per process: after `delay_s`, import litellm and build the Router for the config in force,
    on a daemon thread, so the first delegation of a session pays neither (issue 11).
    `hermes_delegate.warm_up: false` turns it off. Never raises; a bad config is reported by the tools."""
    if _warm_started.is_set():
        return None
    _warm_started.set()

    def run() -> None:
        import logging  # noqa: PLC0415
        import time  # noqa: PLC0415

        time.sleep(delay_s)
        try:
            from . import settings  # noqa: PLC0415

            block = settings.raw_block()
            if isinstance(block, dict) and block.get("warm_up") is False:
                return
            base = delegator_for(settings.load_plugin_config())
            submit(base.warm_up(calls=True)).result(timeout=120)
        except Exception:  # noqa: BLE001 - the first delegation then warms (and reports) itself
            logging.getLogger("hermes_delegate.hermes").debug("warm-up skipped", exc_info=True)

    t = threading.Thread(target=run, name="hermes-delegate-warm", daemon=True)
    t.start()
    return t
