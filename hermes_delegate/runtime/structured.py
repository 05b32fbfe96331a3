"""Structured results per task: a task's `output_schema` (a JSON Schema) and the JSON answer checked
against it.

The rules live here; the standalone worker (CompletionWorker, worker.py) applies them: it asks for
JSON (LiteLLM's `response_format` json_schema where `litellm.supports_response_schema` says every
deployment of the model supports it; the schema spelled out in the prompt always), parses and
validates the answer, retries once with the validation message, and raises a typed `bad_output`
ProviderError when the second answer does not match either. What a schema may be, and how an answer
is checked against it (no fetching, bounded, RE2 patterns), is schema_rules.py; the check runs in a
thread (`check_answer`), so one task's schema never holds up the event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from ..core.errors import ProviderError, TaskPayloadError
from . import schema_rules

if TYPE_CHECKING:
    from ..core.resolver import Resolution
    from ..routing.router import RouterHandle


class Routed(Protocol):
    """What the rules read of a job (a worker.Job; worker imports this module, so the type is named
    here, not imported from there)."""

    @property
    def resolution(self) -> Resolution: ...

__all__ = ["check_output_schema", "supports_json_schema", "parse_and_validate", "check_answer", "instruction",
           "response_format", "retry_message", "bad_output"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def check_output_schema(schema: Any, where: str = "output_schema") -> dict[str, Any]:
    """A JSON Schema object that keeps schema_rules' rules (checked once per distinct schema), or
    TaskPayloadError saying what is wrong and what to do instead."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError):
            raise TaskPayloadError(f"{where} is a string that is not JSON.",
                                   hint='Pass a JSON Schema object, e.g. {"type": "object", '
                                        '"properties": {...}}.') from None
    if not isinstance(schema, Mapping):
        raise TaskPayloadError(f"{where} must be a JSON Schema object, got {type(schema).__name__}.",
                               hint='E.g. {"type": "object", "properties": {"title": {"type": "string"}}}.')
    schema_rules.check(schema, where)
    return dict(schema)


def parse_and_validate(text: str, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, what is wrong). Blocking and bounded (schema_rules.validate):
    from a coroutine, await `check_answer`."""
    body = text.strip()
    if (m := _FENCE.match(body)) is not None:
        body = m.group(1)
    try:
        value = json.loads(body)
    except ValueError as exc:
        return None, f"the answer is not JSON ({exc})"
    except RecursionError:
        return None, f"the answer nests deeper than {schema_rules.MAX_ANSWER_DEPTH} levels"
    problem = schema_rules.validate(value, schema)
    return (value, None) if problem is None else (None, problem)


async def check_answer(text: str, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """`parse_and_validate` in a thread: the event loop (sibling tasks, other MCP sessions) never waits
    on it."""
    return await asyncio.to_thread(parse_and_validate, text, schema)


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
