"""Helpers to run several loopback providers at once."""

from __future__ import annotations

from typing import Any, Iterable

from .server import LoopbackProvider


class ProviderGroup(list[LoopbackProvider]):
    """A list of started providers; usable as a context manager that stops them all."""

    def __enter__(self) -> "ProviderGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for provider in self:
            provider.stop()


def start_providers(spec: int | Iterable[Any] = 1, **common: Any) -> ProviderGroup:
    """Start several providers.

    ``spec`` is a count (names ``p1``..``pN``) or an iterable of configs: kwargs
    dicts for :class:`LoopbackProvider`, plain names, or provider instances.
    ``common`` kwargs apply to every dict/name config. Returns a started
    :class:`ProviderGroup` (``with start_providers(3) as ps: ...``).
    """
    configs: list[Any] = [{"name": f"p{i + 1}"} for i in range(spec)] if isinstance(spec, int) else list(spec)
    group = ProviderGroup()
    try:
        for cfg in configs:
            if isinstance(cfg, LoopbackProvider):
                group.append(cfg.start())
            elif isinstance(cfg, str):
                group.append(LoopbackProvider(cfg, **common).start())
            else:
                group.append(LoopbackProvider(**{**common, **dict(cfg)}).start())
    except BaseException:
        group.stop()
        raise
    return group
