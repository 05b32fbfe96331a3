"""What names a deployment in a shared store (Redis): its id plus a digest of what makes it distinct.

Two configs may give different deployments the same `model_info.id` (`main` for two providers);
their windows and learned limits must not be one. The store key is ``<id>:<digest>``, the digest a
hash of the provider, the api_base and the model (never a credential, and only a hash of the
api_base, which may carry one in its userinfo). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from ..core.credentials import deployment_provider

__all__ = ["deployment_digest", "store_key", "split_store_key"]

_DIGEST = re.compile(r"^(.*):([0-9a-f]{16})$")


def deployment_digest(params: Mapping[str, Any]) -> str:
    """16 hex digits naming (provider, api_base, model) of a deployment's resolved `litellm_params`."""
    base = str(params.get("api_base") or params.get("base_url") or "").strip().rstrip("/")
    what = [deployment_provider(params), base, str(params.get("model") or "")]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def store_key(dep_id: str, params: Mapping[str, Any]) -> str:
    return f"{dep_id}:{deployment_digest(params)}"


def split_store_key(key: str) -> tuple[str, str | None]:
    """(deployment id, digest) of a store key; (key, None) for a key of an earlier version (id only)."""
    m = _DIGEST.match(key)
    return (m.group(1), m.group(2)) if m else (key, None)
