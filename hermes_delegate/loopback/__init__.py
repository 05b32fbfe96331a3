"""Embedded loopback OpenAI-compatible provider for tests and local runs.

An ``aiohttp.web`` server in a daemon thread speaking the OpenAI chat-completions
(and Anthropic messages) wire format, with rate limits and their headers, latency
and fault injection. :mod:`.server` is the provider (lifecycle, routing, faults),
:mod:`.limits` its rate limits, :mod:`.chat` / :mod:`.anthropic` the two formats,
:mod:`._web` the HTTP layer (including the broken connections faults need).
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
