"""Paying litellm's start-up before the first task instead of during it: the import (seconds, on a
worker thread, off the event loop), the modules litellm imports lazily on its first completion, the
Router's build, and, when asked, one mocked completion per group (litellm's `mock_response`: no
network, no cost) so the call path is loaded too. Once per Router; concurrent callers wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import weakref
from typing import Any

from ..routing._litellm import import_litellm

__all__ = ["warm_up", "import_for_first_call", "FIRST_CALL_MODULES"]

#: What litellm 1.106 imports lazily on its first completion (~1 s).
FIRST_CALL_MODULES = ("openai.resources", "openai.resources.chat", "jiter", "anyio._backends._asyncio",
                      "litellm.proxy._types", "litellm.types.management_endpoints",
                      "litellm.router_utils.baseline_request", "litellm.integrations.shadow_eval_logger",
                      "litellm.integrations.websearch_interception", "litellm.litellm_core_utils.llm_judge",
                      "litellm.proxy.openai_files_endpoints")
MAX_WARM_GROUPS = 8

_locks: "weakref.WeakKeyDictionary[Any, asyncio.Lock]" = weakref.WeakKeyDictionary()
_called: "weakref.WeakSet[Any]" = weakref.WeakSet()


def import_for_first_call() -> None:
    """Import litellm and the modules its first completion would import lazily (instant once done)."""
    import_litellm()
    for name in FIRST_CALL_MODULES:
        with contextlib.suppress(Exception):  # best effort: a module another litellm version lacks
            importlib.import_module(name)


async def warm_up(handle: Any, *, calls: bool = False) -> None:
    """Import litellm and build `handle`'s Router (a RouterHandle); with `calls`, one mocked call per
    group (at most MAX_WARM_GROUPS). Raises what building the Router raises (a bad config)."""
    lock = _locks.setdefault(handle, asyncio.Lock())
    async with lock:
        await asyncio.to_thread(import_for_first_call)  # instant once imported
        router = handle.router  # builds the Router once, on this loop
        if not calls or handle in _called:
            return
        _called.add(handle)
        names = sorted({str(d.get("model_name")) for d in getattr(router, "model_list", []) or []
                        if d.get("model_name")})
        for name in names[:MAX_WARM_GROUPS]:
            with contextlib.suppress(Exception):  # warm-up is best effort
                await router.acompletion(model=name, messages=[{"role": "user", "content": "warm-up"}],
                                         mock_response="ok", _skip_mcp_handler=True)
