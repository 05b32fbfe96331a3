"""Keep secrets out of everything we print, return or log.

A Redactor knows the secret values in force (env vars whose names say KEY/TOKEN/SECRET/PASSWORD,
and literal `api_key`s from the config) and also scrubs the shapes secrets take: credentials in
URLs, bearer tokens, `sk-…` keys. Keys are only ever shown as `set`/`missing` or by env var name.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterable, Mapping

__all__ = ["Redactor", "redact", "install_log_filter", "SECRET_ENV_RE"]

SECRET_ENV_RE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
_PATTERNS = [
    (re.compile(r"(?i)(://)([^/\s:@]+):([^/\s@]+)@"), r"\1***:***@"),  # user:pass@host
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-***"),
    (re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|sig)=)[^&\s#]+"), r"\1***"),
    (re.compile(r"(?i)((?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}]{6,}"), r"\1***"),
]
_MIN_SECRET_LEN = 6


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LEN}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> "Redactor":
        env = os.environ if env is None else env
        vals = [v for k, v in env.items() if SECRET_ENV_RE.search(k)]
        return cls([*vals, *extra])

    def add(self, *secrets: str) -> None:
        self._secrets.update(s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LEN)

    def __call__(self, text: Any) -> Any:
        if not isinstance(text, str) or not text:
            return text
        for s in sorted(self._secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, "***")
        for pat, rep in _PATTERNS:
            text = pat.sub(rep, text)
        return text


class _ProcessRedactor(Redactor):
    """The process-wide redactor: every secret added to it, plus the secret env vars in force at each
    call (a host may load its keys after importing us; a snapshot taken at import would miss them)."""

    def __call__(self, text: Any) -> Any:
        if isinstance(text, str) and text:
            self.add(*(v for k, v in os.environ.items() if SECRET_ENV_RE.search(k)))
        return super().__call__(text)


_default = _ProcessRedactor()


def redact(text: Any) -> Any:
    """Scrub with the process-wide redactor (env secrets + secret shapes)."""
    return _default(text)


def default_redactor() -> Redactor:
    return _default


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string is not ours to fix, but must not leak either
            msg = str(record.msg)
        record.msg, record.args = self.redactor(msg), None
        if record.exc_info and not record.exc_text:  # a traceback's messages can carry keys too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None  # handlers print exc_text (redacted) instead of re-formatting the raw one
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


def install_log_filter(logger_names: Iterable[str], redactor: Redactor | None = None) -> None:
    """Attach one redacting filter to each named logger and to each of its handlers (idempotent)."""
    flt = _RedactingFilter(redactor or _default)
    for name in logger_names:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in lg.filters):
            lg.addFilter(flt)
        for h in lg.handlers:
            if not any(isinstance(f, _RedactingFilter) for f in h.filters):
                h.addFilter(flt)
