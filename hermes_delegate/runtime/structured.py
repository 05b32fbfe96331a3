"""Structured results per task: a task's `output_schema` (a JSON Schema) and the JSON answer checked
against it.

The rules live here; the standalone worker (CompletionWorker, worker.py) applies them: it asks for
JSON (LiteLLM's `response_format` json_schema where `litellm.supports_response_schema` says every
deployment of the model supports it; the schema spelled out in the prompt always), parses and
validates the answer, retries once with the validation message, and raises a typed `bad_output`
ProviderError when the second answer does not match either.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from ..core.errors import ProviderError, TaskPayloadError

if TYPE_CHECKING:
    from ..core.resolver import Resolution
    from ..routing.router import RouterHandle


class Routed(Protocol):
    """What the rules read of a job (a worker.Job; worker imports this module, so the type is named
    here, not imported from there)."""

    @property
    def resolution(self) -> Resolution: ...

__all__ = ["check_output_schema", "supports_json_schema", "parse_and_validate", "instruction", "response_format",
           "retry_message", "bad_output"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def check_output_schema(schema: Any, where: str = "output_schema") -> dict[str, Any]:
    """A valid JSON Schema object, or TaskPayloadError saying what is wrong."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            raise TaskPayloadError(f"{where} is a string that is not JSON.",
                                   hint='Pass a JSON Schema object, e.g. {"type": "object", "properties": {...}}.') from None
    if not isinstance(schema, Mapping):
        raise TaskPayloadError(f"{where} must be a JSON Schema object, got {type(schema).__name__}.",
                               hint='E.g. {"type": "object", "properties": {"title": {"type": "string"}}}.')
    import jsonschema  # noqa: PLC0415 - only when a task asks for structured output

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise TaskPayloadError(f"{where} is not a valid JSON Schema: {exc.message}.",
                               hint="Fix the schema (draft 2020-12 keywords), or leave output_schema out.") from None
    return dict(schema)


def parse_and_validate(text: str, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, what is wrong)."""
    import jsonschema  # noqa: PLC0415

    body = text.strip()
    if (m := _FENCE.match(body)) is not None:
        body = m.group(1)
    try:
        value = json.loads(body)
    except ValueError as exc:
        return None, f"the answer is not JSON ({exc})"
    err = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
    if err is not None:
        at = "/".join(map(str, err.absolute_path)) or "(root)"
        return None, f"at {at}: {err.message}"
    return value, None


def supports_json_schema(router: RouterHandle, job: Routed) -> bool:
    """True when every deployment the task may land on supports response_format json_schema."""
    from ..routing._litellm import import_litellm  # noqa: PLC0415

    litellm = import_litellm()
    res = job.resolution
    deps = router.resolver.groups.get(res.model) if hasattr(router.resolver, "groups") else None
    models = [str(d.litellm_params.get("model")) for d in deps] if deps else [res.model]
    try:
        return all(litellm.supports_response_schema(model=m) for m in models)
    except Exception:  # noqa: BLE001 - an unknown model: ask through the prompt
        return False


def instruction(schema: Mapping[str, Any]) -> str:
    """What the system prompt adds for a task with an output_schema."""
    return ("Answer with only a JSON value (no prose, no code fence) that matches this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False))


def response_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """LiteLLM's `response_format` asking for JSON matching `schema`."""
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def retry_message(problem: str) -> str:
    """The user turn asking once more, after an answer that did not match."""
    return f"That answer does not match the schema: {problem}. Reply again with only the corrected JSON."


def bad_output(problem: str, attempts: list[Any]) -> ProviderError:
    """The typed error when the second answer does not match either."""
    return ProviderError("bad_output", f"The answer did not match output_schema after 2 tries: {problem}.",
                         hint="Loosen the schema, or pick a model that supports JSON output.", attempts=attempts)
