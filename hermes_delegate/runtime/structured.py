"""Structured results per task: a task's `output_schema` (a JSON Schema) and the JSON answer checked
against it.

The worker asks for JSON (LiteLLM's `response_format` json_schema where `litellm.supports_response_schema`
says every deployment of the model supports it; the schema spelled out in the prompt always), parses
and validates the answer, retries once with the validation message, and raises a typed `bad_output`
ProviderError when the second answer does not match either.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Mapping

from ..core.errors import ProviderError, TaskPayloadError

if TYPE_CHECKING:
    from ..routing.router import RouterHandle
    from .worker import Job, WorkerOutput

__all__ = ["check_output_schema", "run_structured", "supports_json_schema", "parse_and_validate"]

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


def supports_json_schema(router: RouterHandle, job: Job) -> bool:
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


def _instruction(schema: Mapping[str, Any]) -> str:
    return ("Answer with only a JSON value (no prose, no code fence) that matches this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False))


async def run_structured(router: RouterHandle, job: Job, messages: list[dict[str, Any]],
                         kwargs: dict[str, Any]) -> WorkerOutput:
    from .worker import WorkerOutput  # noqa: PLC0415

    schema = job.output_schema or {}
    messages = [dict(m) for m in messages]
    messages[0]["content"] = f"{messages[0]['content']}\n\n{_instruction(schema)}".strip()
    if supports_json_schema(router, job):
        kwargs = {**kwargs, "response_format": {"type": "json_schema",
                                                "json_schema": {"name": "output", "schema": schema}}}
    tokens = {"input": 0, "output": 0}
    cost: float | None = 0.0
    attempts: list[Any] = []
    problem = ""
    for attempt in range(2):
        done = await router.acompletion(job.resolution, messages, **kwargs)
        for k, v in (done.tokens or {}).items():
            tokens[k] = tokens.get(k, 0) + int(v or 0)
        cost = None if cost is None or done.cost_usd is None else cost + done.cost_usd
        attempts += list(done.attempts or [])
        value, problem = parse_and_validate(done.text or "", schema)
        if problem is None:
            return WorkerOutput(done.text, tokens, cost, done.deployment, attempts, output=value)
        if attempt == 0:
            messages = [*messages, {"role": "assistant", "content": done.text or ""},
                        {"role": "user", "content": f"That answer does not match the schema: {problem}. "
                                                    "Reply again with only the corrected JSON."}]
    err = ProviderError("bad_output", f"The answer did not match output_schema after 2 tries: {problem}.",
                        hint="Loosen the schema, or pick a model that supports JSON output.", attempts=attempts)
    raise err
