"""Keep secrets out of everything we print, return or log.

A Redactor knows the secret values in force (env vars whose names say KEY/TOKEN/SECRET/PASSWORD, and
every credential a config names: `config_secrets`) and also scrubs the shapes secrets take: credentials
in URLs, bearer tokens, `sk-…` keys. Keys are only ever shown as `set`/`missing` or by env var name.

The Delegator builds one (`Redactor.for_config`) and applies it where results, progress events, errors
and logs leave the engine; it also registers its secrets with the process-wide redactor, which the log
filter on our loggers and litellm's (`install_engine_log_filters`) uses.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .env_refs import resolve_env_ref

if TYPE_CHECKING:
    from .config import Config

__all__ = ["Redactor", "redact", "default_redactor", "config_secrets", "url_secrets", "install_log_filter",
           "install_engine_log_filters", "log_filter", "SECRET_ENV_RE", "LITELLM_LOGGERS"]

SECRET_ENV_RE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
#: A URL parameter whose name says it carries a credential (?key=, api_key=, access_token=, X-Amz-Signature=, …).
_CREDENTIAL_PARAM = (r"[\w.\-]*?(?:key|token|secret|passw(?:or)?d|pwd|auth|sig|signature|credential|session|code)"
                     r"[\w.\-]*")
_CREDENTIAL_PARAM_RE = re.compile(rf"(?i)^{_CREDENTIAL_PARAM}$")
#: The shapes secrets take: (regex, replacement, needles). Every match of a shape's regex contains one of
#: its needles, case-folded, so text without any of them (most text) skips that regex, the costly part
#: of redacting text that holds no secret (tests/test_overhead.py checks both against the long way).
_PATTERNS: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    (re.compile(r"(?i)(://)([^/\s:@]+):([^/\s@]+)@"), r"\1***:***@", ("://",)),  # user:pass@host
    (re.compile(r"(?i)(://)[^/\s:@'\"<>]+@"), r"\1***@", ("://",)),  # token@host (userinfo without a password)
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***", ("bearer", "basic")),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-***", ("sk-",)),
    (re.compile(rf"(?i)([?&;#]{_CREDENTIAL_PARAM}=)[^&;#\s\"'<>]+"), r"\1***", ("=",)),
    (re.compile(r"(?i)((?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}]{6,}"), r"\1***",
     ("api", "authorization")),
]
_MIN_SECRET_LEN = 6


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return SECRET_ENV_RE.search(name) is not None


@functools.lru_cache(maxsize=4096)
def _secret_raw_name(name: bytes | str) -> bool:
    """`_secret_name` of a key of os.environ's raw dict (bytes on POSIX, str on Windows)."""
    return _secret_name(os.fsdecode(name) if isinstance(name, bytes) else name)

#: litellm's loggers (the names it logs under; they exist before litellm is imported).
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: its userinfo (`user:pass@`, or a token alone, `TOKEN@`) and the
    value of every credential-named query or fragment parameter (`?key=`, `api_key=`, `token=`, …)."""
    from urllib.parse import parse_qsl, unquote, urlsplit  # noqa: PLC0415

    out: list[str] = []
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return out
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    for piece in (userinfo, *userinfo.split(":", 1)) if userinfo else ():
        out += [piece, unquote(piece)]
    for text in (parts.query, parts.fragment):
        for name, value in parse_qsl(text, keep_blank_values=False):
            if _CREDENTIAL_PARAM_RE.match(name):
                out.append(value)
    return [s for s in dict.fromkeys(out) if s]


def config_secrets(config: "Config", env: Mapping[str, str]) -> list[str]:
    """Every credential a config names: the value of each secret-named `litellm_params` entry of its
    model_list (api_key, aws_secret_access_key, vertex_credentials, …; literal, or the value of the
    `os.environ/NAME` it references, whatever NAME is), the credentials in any URL there (api_base's
    `TOKEN@` or `?key=`: `url_secrets`), and the remote proxy's key. `env` is where references are read
    (the Resolver's lookup: environment_variables over the process env)."""
    out: list[str] = []
    remote = config.remote
    if remote is not None and remote.api_key_env and env.get(remote.api_key_env):
        out.append(str(env[remote.api_key_env]))
    if remote is not None:
        out += url_secrets(remote.base_url)

    def collect(params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            if isinstance(value, Mapping):  # e.g. vertex_credentials given as a mapping
                collect(value)
            elif isinstance(value, str) and value and SECRET_ENV_RE.search(str(key)):
                value = resolve_env_ref(value, env)
                if value:
                    out.append(str(value))
            elif isinstance(value, str) and value:
                resolved = resolve_env_ref(value, env)
                if isinstance(resolved, str) and "://" in resolved:
                    out.extend(url_secrets(resolved))

    for dep in config.router.model_list:
        collect(dep.litellm_params)
    return out


class Redactor:
    """Replaces every known secret value with `***`, then the shapes secrets take. With `live_env`,
    the secret-named variables of that mapping are learned again at each use (a host may load its
    keys after the redactor was built)."""

    def __init__(self, secrets: Iterable[str] = (), *, live_env: Mapping[str, str] | None = None):
        self._secrets: set[str] = set()
        self._sorted: list[str] = []
        self._live_env = live_env
        # os.environ's raw names when last seen, and which of them are secret-named
        self._env_names: tuple[set[Any], list[Any]] | None = None
        self.add(*secrets)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> "Redactor":
        env = os.environ if env is None else env
        vals = [v for k, v in env.items() if SECRET_ENV_RE.search(k)]
        return cls([*vals, *extra])

    @classmethod
    def for_config(cls, config: "Config", env: Mapping[str, str]) -> "Redactor":
        """The engine's rule: the secret-named variables of `env` (the Resolver's lookup, so the config's
        environment_variables too) and every credential of the config (`config_secrets`), and, live,
        the process's secret-named variables."""
        vals = [str(v) for k, v in env.items() if SECRET_ENV_RE.search(str(k)) and v]
        return cls([*vals, *config_secrets(config, env)], live_env=os.environ)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def add(self, *secrets: str) -> None:
        new = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LEN} - self._secrets
        if new:  # copy on write: another thread may be reading them
            self._secrets = self._secrets | new
            self._sorted = sorted(self._secrets, key=len, reverse=True)

    def _refresh(self) -> None:
        env = self._live_env
        if env is None:
            return
        if isinstance(env, os._Environ) and isinstance(raw := getattr(env, "_data", None), dict):
            # os.environ: its raw dict, decoding only the secret-named values; which names those are is
            # worked out again only when the set of names changed (compared in C, not a loop per name)
            names = self._env_names
            if names is None or names[0] != raw.keys():
                names = self._env_names = (set(raw), [k for k in raw if _secret_raw_name(k)])
            decode = env.decodevalue
            found = [decode(raw[k]) for k in names[1] if k in raw]
        else:
            found = [v for k, v in env.items() if _secret_name(k)]
        if not self._secrets.issuperset(found):
            self.add(*found)

    def _apply(self, text: Any) -> Any:
        if not isinstance(text, str) or not text:
            return text
        for s in self._sorted:
            if s in text:
                text = text.replace(s, "***")
        low = text.casefold()  # a superset of what (?i) matches: never skips a match
        for pat, rep, needles in _PATTERNS:
            for n in needles:  # a loop, not any(genexpr): this runs for every string a result carries
                if n in low:
                    text = pat.sub(rep, text)
                    break
        return text

    def __call__(self, text: Any) -> Any:
        if isinstance(text, str) and text:
            self._refresh()
        return self._apply(text)

    def scrub(self, obj: Any) -> Any:
        """`obj` with every string in it (dict values, list items) redacted; other values as they are."""
        self._refresh()
        return self._scrub(obj)

    def _scrub(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self._apply(obj)
        if isinstance(obj, dict):
            return {k: self._scrub(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self._scrub(v) for v in obj]
        return obj


class _ProcessRedactor(Redactor):
    """The process-wide redactor: every secret a Delegator registered with it, plus the secret env vars
    in force at each call (a host may load its keys after importing us; a snapshot would miss them)."""

    def __init__(self) -> None:
        super().__init__(live_env=os.environ)


_default = _ProcessRedactor()


def redact(text: Any) -> Any:
    """Scrub with the process-wide redactor (every Delegator's secrets + env secrets + secret shapes)."""
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
        except Exception:  # noqa: BLE001 - a bad format string is not ours to fix, but must not leak either
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


def log_filter() -> logging.Filter:
    """A filter that redacts records with the process-wide redactor (for a host's own handler)."""
    return _RedactingFilter(_default)


def install_engine_log_filters() -> None:
    """The process-wide redacting filter on every `hermes_delegate*` logger that exists now (the engine's
    and a host's, e.g. the hermes plugin's `hermes_delegate.hermes`) and on litellm's loggers. A logger's
    filter sees only the records logged on it, not its children's, hence every logger by name. Idempotent;
    the Delegator calls it whenever one is created, and the litellm import once."""
    names = [n for n in list(logging.root.manager.loggerDict)
             if n == "hermes_delegate" or n.startswith(("hermes_delegate.", "hermes_delegate_"))]
    install_log_filter(["hermes_delegate", *names, *LITELLM_LOGGERS])
