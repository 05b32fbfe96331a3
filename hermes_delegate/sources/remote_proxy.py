"""Remote mode: a running LiteLLM proxy owns the providers, keys, limits and routing.

    remote:
      base_url: http://127.0.0.1:4000        # the proxy (with or without a trailing /v1)
      api_key_env: LITELLM_PROXY_API_KEY     # the env var holding a proxy key (virtual or master)

On first use (the first resolution, listing or budget check, never at load time) the groups are
listed from `GET {base_url}/v1/models` (with the proxy's wildcard routes, `anthropic/*`, which stay
wildcard groups here), and from `GET /model/info` when the proxy answers it (its
upstream models, prices and rpm/tpm; optional: a 404 or a refusal there is fine). Each group
becomes one deployment of the local Router:

    {model_name: G, litellm_params: {model: litellm_proxy/G, api_base: base_url,
                                     api_key: os.environ/<api_key_env>}, model_info: {id: remote:G, …}}

so the rest of the engine treats remote groups exactly like configured ones. A name that is not a
proxy group is refused before anything is sent (the Resolver's rule), unless `remote.allow_direct`. Synchronous HTTP
(httpx) with a short timeout; a failed listing is a typed ProviderError (connection, timeout, auth, …)
with a hint, is not cached, and never shows the key. Bad `remote` settings are ConfigErrors at load.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from ..core.env_refs import env_ref
from ..core.errors import ProviderError
from ..core.redact import Redactor

if TYPE_CHECKING:
    from ..core.config import Deployment, RemoteProxy

__all__ = ["RemoteGroup", "fetch_groups", "group_deployment", "remote_deployments", "REMOTE_PREFIX", "NO_KEY"]

log = logging.getLogger("hermes_delegate.sources.remote_proxy")
REMOTE_PREFIX = "litellm_proxy/"
_MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class RemoteGroup:
    """One model group of the proxy, as far as it tells us."""

    name: str
    upstream: tuple[str, ...] = ()  # litellm_params.model of each deployment behind it (/model/info)
    input_cost_per_token: float | None = None  # the dearest deployment's, when every one is priced
    output_cost_per_token: float | None = None
    rpm: float | None = None  # the group's total, when every deployment declares one
    tpm: float | None = None


def _display(url: str) -> str:
    """The URL without credentials, query or fragment (safe to print)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return f"{p.scheme}://{host}{p.path}"


def _endpoints(base_url: str) -> tuple[str, str]:
    """(models URL, model-info URL) for a base URL given with or without /v1. The models URL asks for
    the proxy's wildcard routes too (`anthropic/*`): they become wildcard groups here, so a name they
    match resolves to the proxy (an OpenAI-compatible server ignores the parameter)."""
    base = base_url.rstrip("/")
    root = base[:-3] if base.endswith("/v1") else base
    return f"{root}/v1/models?return_wildcard_routes=true", f"{root}/model/info"


def _api_key(remote: "RemoteProxy", env: Mapping[str, str]) -> str | None:
    return (env.get(remote.api_key_env) or None) if remote.api_key_env else None


def _key_hint(remote: "RemoteProxy", key: str | None) -> str:
    if not remote.api_key_env:
        return "No key is sent (remote.api_key_env is empty); set it if the proxy needs one."
    if key is None:
        return f"No key was sent: ${remote.api_key_env} is not set. Export a proxy key (virtual or master key) there."
    return f"Check the proxy key in ${remote.api_key_env} (a virtual key or the master key)."


def _body_message(raw: bytes) -> str:
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
        err = data.get("error", data.get("detail")) if isinstance(data, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg if msg is not None else data)[:200]
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace").strip()[:200]


def _get_json(url: str, key: str | None, timeout: float, remote: "RemoteProxy", scrub: Redactor) -> Any:
    """GET url → parsed JSON. Raises ProviderError (kind by failure) with a key-free message."""
    import httpx  # noqa: PLC0415 - only remote mode pays for it (it comes with litellm)

    headers = {"Accept": "application/json", "User-Agent": "hermes-delegate"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    shown = _display(url)
    try:
        # trust_env: $HTTP(S)_PROXY / $NO_PROXY apply, as they do to litellm's own calls
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=True) as client, \
                client.stream("GET", url, headers=headers) as resp:
            raw = b""
            for chunk in resp.iter_bytes():
                raw += chunk
                if len(raw) > _MAX_BODY:
                    raise ProviderError("bad_response", f"GET {shown} answered with more than "
                                        f"{_MAX_BODY // (1024 * 1024)} MB.", hint="Is remote.base_url a LiteLLM proxy?")
            status = resp.status_code
    except httpx.TimeoutException:
        raise ProviderError("timeout", f"The LiteLLM proxy at {shown} did not answer within {timeout:g} s.",
                            hint="Start the proxy, or fix remote.base_url in the config.") from None
    except (httpx.RemoteProtocolError, httpx.DecodingError) as exc:  # not HTTP at all, or cut short
        raise ProviderError("bad_response", f"GET {shown} did not get a valid HTTP answer "
                            f"({type(exc).__name__}).", hint="Is remote.base_url a LiteLLM proxy?") from None
    except httpx.HTTPError as exc:  # connection refused, DNS, TLS, …
        raise ProviderError("connection", f"The LiteLLM proxy at {shown} is unreachable "
                            f"({scrub(str(exc) or type(exc).__name__)}).",
                            hint="Start the proxy, or fix remote.base_url in the config.") from None
    if status >= 400 or status < 200:
        detail = scrub(_body_message(raw[:64 * 1024]))
        kind = ("auth" if status in (401, 403) else "not_found" if status == 404
                else "rate_limit" if status == 429 else "server" if status >= 500 else "bad_request")
        hint = (_key_hint(remote, key) if status in (400, 401, 403) or (status >= 500 and key is None)
                else "Is remote.base_url a LiteLLM proxy?" if status == 404 else "")
        raise ProviderError(kind, f"The LiteLLM proxy answered GET {shown} with HTTP {status}: {detail}",
                            status_code=status, hint=hint)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProviderError("bad_response", f"GET {shown} did not return JSON.",
                            hint="Is remote.base_url a LiteLLM proxy?") from None


def _model_ids(data: Any, url: str) -> list[str]:
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ProviderError("bad_response", f'GET {_display(url)} did not return an OpenAI model list '
                                            '({"data": [{"id": …}]}).', hint="Is remote.base_url a LiteLLM proxy?")
    out: list[str] = []
    for row in rows:
        mid = row.get("id") if isinstance(row, dict) else None
        if isinstance(mid, str) and mid.strip() and mid not in out:
            out.append(mid)
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None


def _summarise(name: str, rows: list[Mapping[str, Any]]) -> RemoteGroup:
    """What /model/info says about one group's deployments (credentials are never read)."""
    if not rows:
        return RemoteGroup(name)
    upstream: list[str] = []
    ins, outs, rpms, tpms = [], [], [], []
    for row in rows:
        lp_value, info_value = row.get("litellm_params"), row.get("model_info")
        lp: Mapping[str, Any] = lp_value if isinstance(lp_value, Mapping) else {}
        info: Mapping[str, Any] = info_value if isinstance(info_value, Mapping) else {}
        model = lp.get("model")
        if isinstance(model, str) and model not in upstream:
            upstream.append(model)
        ins.append(_num(info.get("input_cost_per_token", lp.get("input_cost_per_token"))))
        outs.append(_num(info.get("output_cost_per_token", lp.get("output_cost_per_token"))))
        rpms.append(_num(lp.get("rpm", info.get("rpm"))))
        tpms.append(_num(lp.get("tpm", info.get("tpm"))))

    def dearest(xs: list[float | None]) -> float | None:  # every one known: the dearest
        known = [x for x in xs if x is not None]
        return max(known) if known and len(known) == len(xs) else None

    def total(xs: list[float | None]) -> float | None:  # every one known and non-zero: their sum
        known = [x for x in xs if x]
        return sum(known) if known and len(known) == len(xs) else None

    return RemoteGroup(name, tuple(upstream), dearest(ins), dearest(outs), total(rpms), total(tpms))


def fetch_groups(remote: "RemoteProxy", env: Mapping[str, str] | None = None) -> list[RemoteGroup]:
    """The proxy's model groups, in its order. /v1/models is required; /model/info is optional."""
    env = os.environ if env is None else env
    key = _api_key(remote, env)
    scrub = Redactor([key] if key else [])
    models_url, info_url = _endpoints(remote.base_url)
    names = _model_ids(_get_json(models_url, key, remote.timeout_s, remote, scrub), models_url)
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    try:
        info = _get_json(info_url, key, remote.timeout_s, remote, scrub)
        rows = info.get("data") if isinstance(info, dict) else None
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, Mapping) and isinstance(row.get("model_name"), str):
                by_group.setdefault(row["model_name"], []).append(row)
    except ProviderError as exc:  # optional endpoint: older proxies, plain OpenAI-compatible servers
        log.debug("no /model/info from %s: %s", _display(info_url), exc.message)
    return [_summarise(name, by_group.get(name, [])) for name in names]


#: Sent to a proxy that listed its groups without a key (litellm's client refuses to send none).
NO_KEY = "no-key"


def group_deployment(group: RemoteGroup, remote: "RemoteProxy", *, keyed: bool = True) -> dict[str, Any]:
    """One local Router deployment that sends group G to the proxy as litellm_proxy/G. The key stays
    an `os.environ/` reference; `keyed=False` (no key was set, and the proxy answered anyway) sends
    a placeholder."""
    params: dict[str, Any] = {"model": REMOTE_PREFIX + group.name, "api_base": remote.base_url,
                              "api_key": env_ref(remote.api_key_env) if keyed and remote.api_key_env
                              else NO_KEY}
    info: dict[str, Any] = {"id": f"remote:{group.name}"}
    if group.upstream:
        info["remote_upstream"] = list(group.upstream)
    if group.input_cost_per_token is not None and group.output_cost_per_token is not None:
        info["input_cost_per_token"] = group.input_cost_per_token
        info["output_cost_per_token"] = group.output_cost_per_token
    for k in ("rpm", "tpm"):  # the group's total capacity, queued for locally by the CapacityGate
        if getattr(group, k) is not None:
            info[k] = getattr(group, k)
    return {"model_name": group.name, "litellm_params": params, "model_info": info}


def remote_deployments(remote: "RemoteProxy", env: Mapping[str, str] | None = None) -> list["Deployment"]:
    """The proxy's groups as local Router deployments (a failure is a typed ProviderError)."""
    from ..core.config import Deployment  # noqa: PLC0415

    env = os.environ if env is None else env
    groups = fetch_groups(remote, env)
    if not groups:
        log.warning("The LiteLLM proxy at %s lists no models.", _display(remote.base_url))
    keyed = _api_key(remote, env) is not None
    return [Deployment.model_validate(group_deployment(g, remote, keyed=keyed)) for g in groups]
