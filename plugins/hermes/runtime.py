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
