"""The plugin's one asyncio loop (a daemon thread) and the LiteLLM Router living on it.

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


def router_for(config: Any) -> Any:
    """The RouterHandle for this config's router section (one per distinct section; the Router
    itself, and the litellm import, are built lazily on first use, on the loop)."""
    from hermes_delegate import Resolver  # noqa: PLC0415
    from hermes_delegate.router import RouterHandle  # noqa: PLC0415

    key = json.dumps(config.router.model_dump(mode="json"), sort_keys=True, default=str)
    with _lock:
        handle = _handles.get(key)
        if handle is None:
            _handles.clear()
            handle = _handles[key] = RouterHandle(config, Resolver(config))
        return handle


async def warm(handle: Any) -> None:
    """Build the Router before the first child needs it: litellm's import (seconds) on a worker
    thread, then the Router itself on this loop."""
    from hermes_delegate._litellm import import_litellm  # noqa: PLC0415

    lock = getattr(handle, "_hermes_delegate_warm", None)
    if lock is None:
        lock = handle._hermes_delegate_warm = asyncio.Lock()
    async with lock:
        await asyncio.to_thread(import_litellm)  # instant once imported
        handle.router  # noqa: B018 - builds the Router once


async def warm_calls(handle: Any) -> None:
    """One mocked completion per Router group (litellm's `mock_response`: no network, no cost), so
    the lazy imports and set-up of litellm's call path are paid here, not by the first child."""
    await warm(handle)
    router = handle.router
    names = sorted({str(d.get("model_name")) for d in getattr(router, "model_list", []) or [] if d.get("model_name")})
    for name in names[:8]:
        try:
            await router.acompletion(model=name, messages=[{"role": "user", "content": "warm-up"}],
                                     mock_response="ok", _skip_mcp_handler=True)
        except Exception:  # noqa: BLE001 - warm-up is best effort
            pass


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
            handle = router_for(settings.load_plugin_config())
            submit(warm_calls(handle)).result(timeout=120)
        except Exception:  # noqa: BLE001 - the first delegation then warms (and reports) itself
            logging.getLogger("hermes_delegate.hermes").debug("warm-up skipped", exc_info=True)

    t = threading.Thread(target=run, name="hermes-delegate-warm", daemon=True)
    t.start()
    return t
