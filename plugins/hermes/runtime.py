"""The plugin's one asyncio loop (a daemon thread) and the Delegator whose Router lives on it.

hermes runs agents on plain threads; a litellm Router and its async HTTP clients belong to one
event loop. So every Router call, from any child thread, goes to this loop through
asyncio.run_coroutine_threadsafe, and the batch fan-out runs here too. Started on first use.

At interpreter exit (`shutdown`, an atexit handler) the warm-up stops at its next step and the loop
stops, before Python finalises. A daemon thread still importing litellm or building the Router when
the interpreter finalises is killed holding an import lock; a litellm `__del__` on the main thread
then waits on that lock forever (hermes hangs on exit), or the kill aborts the process ("FATAL:
exception not rethrown").
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import threading
from collections import OrderedDict
from typing import Any, Coroutine

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None
_handles: "OrderedDict[str, Any]" = OrderedDict()  # config content → base Delegator, least recently used first
MAX_BASES = 8  # distinct configs kept at once (each holds a Router, learned limits and cooldowns)
_stopping = threading.Event()
EXIT_WAIT_S = 15.0  # at exit, the longest we wait for a synchronous step (litellm import, Router build)


def loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_thread
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new)
                new.call_soon(ready.set)
                new.run_forever()

            thread = threading.Thread(target=run, name="hermes-delegate-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _loop_thread = new, thread
        return _loop


def submit(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
    return asyncio.run_coroutine_threadsafe(coro, loop())


def delegator_for(config: Any) -> Any:
    """The plugin's base Delegator for this config (one per distinct content: every section, so two
    configs that alternate each keep their own Router, learned limits and cooldowns; the
    `MAX_BASES` most recently used are kept); each call derives its own from it
    (`Delegator.derive`), sharing the one Router. The Router itself, and the litellm import, are
    built lazily on first use, on the loop."""
    from hermes_delegate import Delegator  # noqa: PLC0415

    key = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)
    with _lock:
        base = _handles.get(key)
        if base is None:
            base = _handles[key] = Delegator(config)
            while len(_handles) > MAX_BASES:
                _handles.popitem(last=False)
        _handles.move_to_end(key)
        return base


WARM_DELAY_S = 0.5  # let hermes finish building its first agent before litellm's import competes
_warm_started = threading.Event()
_warm_thread: threading.Thread | None = None


def warm_in_background(delay_s: float = WARM_DELAY_S) -> threading.Thread | None:
    """Once per process: after `delay_s`, a daemon thread loads the config in force and hands the
    warm-up (litellm's import, the Router's build, one mocked call per group) to the plugin's loop,
    so the first delegation of a session pays none of it (issue 11).
    `hermes_delegate.warm_up: false` turns it off. Never raises; a bad config is reported by the tools.
    Interpreter exit stops it at its next step (`shutdown`)."""
    global _warm_thread
    if _warm_started.is_set():
        return None
    _warm_started.set()

    import logging  # noqa: PLC0415

    log = logging.getLogger("hermes_delegate.hermes")

    def skipped(fut: concurrent.futures.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.debug("warm-up skipped", exc_info=fut.exception())

    def run() -> None:
        if _stopping.wait(delay_s):
            return
        try:
            from . import settings  # noqa: PLC0415

            block = settings.raw_block()
            if isinstance(block, dict) and block.get("warm_up") is False:
                return
            base = delegator_for(settings.load_plugin_config())
            if not _stopping.is_set():  # the rest runs on the loop, where `shutdown` cancels it
                submit(base.warm_up(calls=True)).add_done_callback(skipped)
        except Exception:
            log.debug("warm-up skipped", exc_info=True)

    t = _warm_thread = threading.Thread(target=run, name="hermes-delegate-warm", daemon=True)
    t.start()
    return t


@atexit.register
def shutdown(wait_s: float = EXIT_WAIT_S) -> None:
    """Stop the warm-up and the loop before the interpreter finalises (see the module docstring).
    Work still running on the loop is cancelled; each step waits at most `wait_s`. Idempotent."""
    _stopping.set()
    warm = _warm_thread
    if warm is not None and warm.is_alive():
        warm.join(wait_s)
    with _lock:
        lp, thread = _loop, _loop_thread
    if lp is None or thread is None or not thread.is_alive() or lp.is_closed():
        return

    async def _cancel_all() -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=min(wait_s, 2.0))
        asyncio.get_running_loop().stop()

    try:
        asyncio.run_coroutine_threadsafe(_cancel_all(), lp)
    except RuntimeError:  # closed in between
        return
    thread.join(wait_s)
