"""Embedded loopback OpenAI-compatible provider for tests and local runs.

Stdlib-only HTTP/1.1 server (asyncio streams in a daemon thread) speaking the
OpenAI chat-completions wire format, with rate limiting, latency and fault
injection. See :mod:`hermes_delegate.loopback.server` for the details.
"""

from .group import ProviderGroup, start_providers
from .records import RequestRecord
from .responses import FAULTS
from .server import LoopbackProvider, closed_port_url

__all__ = [
    "FAULTS",
    "LoopbackProvider",
    "ProviderGroup",
    "RequestRecord",
    "closed_port_url",
    "start_providers",
]
