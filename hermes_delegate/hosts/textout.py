"""What the CLI's commands write to: text, then a flush. `sys.stdout`, an `io.StringIO` and the CLI's
redacting stream (`cli._Redacted`) all are one; a command that needs more of a stream than this would
step around the redactor, so it is not offered."""

from __future__ import annotations

from typing import Protocol

__all__ = ["TextOut"]


class TextOut(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...
