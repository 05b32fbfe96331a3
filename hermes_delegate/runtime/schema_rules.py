"""What an `output_schema` may be, and the one safe way an answer is checked against it.

A schema is data, never a fetch, and checking an answer is bounded work:

* **Checked once, before anything is sent** (`check`, called by every door and by `Delegator.plan`;
  the verdict is cached by content): plain JSON, at most MAX_SCHEMA_CHARS of it nested at most
  MAX_SCHEMA_DEPTH deep, with at most MAX_SUBSCHEMAS subschemas; a valid JSON Schema (its
  `$schema` draft, 2020-12 by default); every `$ref` (`$dynamicRef`, `$recursiveRef`) resolves inside
  the schema itself: a ref to `http://…`, `file:…`, a meta-schema or any other document (also through
  a relative `$id`) is refused (inline the definition under `$defs`); no ref cycle that never reaches
  into the answer (`{"$ref": "#"}` at the root, `a → b → a` through `$ref`/`allOf`/`anyOf`/…), while
  recursion through `properties`/`items`/… (a tree schema) is fine; at most MAX_INPLACE subschemas applied to one
  value (a `$ref` fan-out that multiplies); every `pattern` and `patternProperties` key at most
  MAX_PATTERN_CHARS and compiling under RE2 (no lookaround, no backreferences).
* **An answer is checked** (`validate`) with a registry that serves only the schema's own document
  (no retrieval: nothing is fetched or read, whatever the schema says), patterns on RE2 (linear
  time, never catastrophic backtracking), `format` asserted (jsonschema's FormatChecker: the formats
  it can check here, e.g. date, date-time, time, email, ipv4, ipv6, uuid; other formats are
  annotations), an answer nested at most MAX_ANSWER_DEPTH deep, and at most MAX_VALIDATION_STEPS
  keyword checks (what a recursive schema that fans out could multiply). Callers run it off the
  event loop (structured.check_answer).

A schema at the bounds costs at most about 0.4 s to check (once; DelegateTools checks it in a thread).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any, Iterator, Mapping

from ..core.errors import TaskPayloadError

__all__ = ["check", "validate", "MAX_SCHEMA_CHARS", "MAX_SCHEMA_DEPTH", "MAX_PATTERN_CHARS", "MAX_SUBSCHEMAS",
           "MAX_INPLACE", "MAX_ANSWER_DEPTH", "MAX_VALIDATION_STEPS"]

MAX_SCHEMA_CHARS = 65_536  # the schema's JSON text (it is also sent with every request)
MAX_SCHEMA_DEPTH = 48  # nested objects/arrays in the schema document
MAX_PATTERN_CHARS = 1_000
MAX_SUBSCHEMAS = 1_000  # subschemas written in the schema (checking it against its draft costs per subschema)
MAX_INPLACE = 2_000  # subschemas applied to one value through $ref/allOf/anyOf/oneOf/not/if
MAX_ANSWER_DEPTH = 64  # nested objects/arrays in an answer
MAX_VALIDATION_STEPS = 100_000  # keyword checks for one answer

_INLINE = ('Inline the definition under "$defs" and point at it with "$ref": "#/$defs/NAME"; '
           "a schema may refer only to itself.")
_DRAFT_2020 = "https://json-schema.org/draft/2020-12/schema"

# keywords whose subschemas apply to the same value (in place), or to a part of it (descending)
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf", "extends")
_IN_PLACE_MAP = ("dependentSchemas", "dependencies")
_DESCEND_ONE = ("additionalProperties", "additionalItems", "contains", "propertyNames",
                "unevaluatedProperties", "unevaluatedItems", "items", "contentSchema")
_DESCEND_LIST = ("prefixItems", "items")
_DESCEND_MAP = ("properties", "patternProperties")
_CONTAINERS = ("$defs", "definitions")
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")


class _RefusedError(Exception):
    """A rule the schema breaks: (message, hint), the door adds where."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


# -- the schema, checked once ----------------------------------------------------------------------
class _Lru:
    """A small thread-safe LRU map (the doors call from several threads)."""

    _MISSING = object()

    def __init__(self, size: int = 256):
        self.size, self._items, self._lock = size, OrderedDict[str, Any](), threading.Lock()

    def get(self, key: str, default: Any = _MISSING) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: str, value: Any) -> Any:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


_verdicts = _Lru()  # canonical JSON -> (message, hint) or None


def check(schema: Any, where: str = "output_schema") -> None:
    """Raise TaskPayloadError (prefixed with `where`) when the schema breaks a rule above. Pure: no
    I/O; a schema seen before (same content) is answered from the cache."""
    try:
        _shape(schema)
    except _RefusedError as exc:
        raise TaskPayloadError(f"{where} {exc.message}", hint=exc.hint) from None
    key = _canonical(schema)
    verdict = _verdicts.get(key, _Lru._MISSING)
    if verdict is _Lru._MISSING:
        try:
            _rules(schema)
            verdict = None
        except _RefusedError as exc:
            verdict = (exc.message, exc.hint)
        except RecursionError:  # a bound above should have caught it first
            verdict = ("is too deeply nested to check.", f"Nest at most {MAX_SCHEMA_DEPTH} levels.")
        _verdicts.put(key, verdict)
    if verdict is not None:
        raise TaskPayloadError(f"{where} {verdict[0]}", hint=verdict[1])


def _canonical(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _shape(schema: Any) -> None:
    """Plain JSON within the size and depth bounds, walked without recursion and stopping at the first
    bound passed (a 4 MB or 5,000-deep schema costs no more than one at the limit)."""
    if not isinstance(schema, Mapping):
        raise _RefusedError(f"must be a JSON Schema object, got {type(schema).__name__}.",
                       'E.g. {"type": "object", "properties": {"title": {"type": "string"}}}.')
    chars = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping) or isinstance(value, list):
            if depth > MAX_SCHEMA_DEPTH:
                raise _RefusedError(f"nests deeper than {MAX_SCHEMA_DEPTH} levels.",
                               f"Flatten it (at most {MAX_SCHEMA_DEPTH} nested objects/arrays); name repeated "
                               'parts under "$defs" and refer to them with "$ref".')
            chars += 2
            if isinstance(value, Mapping):
                for k, v in value.items():
                    if not isinstance(k, str):
                        raise _RefusedError(f"has a key that is not a string ({k!r}).", "Use JSON: string keys only.")
                    chars += len(k) + 4
                    stack.append((v, depth + 1))
            else:
                chars += len(value)
                stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            chars += len(value) + 2
        elif isinstance(value, int) and not isinstance(value, bool):
            chars += len(str(value)) if abs(value) < 10 ** 30 else 31
        elif value is None or isinstance(value, bool):
            chars += 5
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _RefusedError(f"contains {value!r}, which is not JSON.", "Use finite numbers only.")
            chars += 24
        else:
            raise _RefusedError(f"contains a {type(value).__name__} value ({str(value)[:40]!r}), which is not JSON.",
                           "Use JSON values only: objects, arrays, strings, numbers, true/false, null.")
        if chars > MAX_SCHEMA_CHARS:
            raise _RefusedError(f"is larger than {MAX_SCHEMA_CHARS:,} characters of JSON.",
                           "Shorten it: drop descriptions and examples, or ask for less structure per task.")


def _rules(schema: Mapping[str, Any]) -> None:
    import jsonschema  # noqa: PLC0415 - only when a task asks for structured output

    cls = _validator_class(schema)
    unreadable: Exception | None = None
    try:
        graph = _Graph(schema)
        graph.walk()  # first: it bounds what check_schema costs (about 0.3 ms per subschema)
    except _RefusedError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a $id that is not a string: check_schema names it
        unreadable = exc
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _RefusedError(f"is not a valid JSON Schema: {exc.message}.",
                       "Fix the schema (draft 2020-12 keywords), or leave output_schema out.") from None
    if unreadable is not None:
        raise _RefusedError(f"cannot be read as a JSON Schema ({type(unreadable).__name__}: {str(unreadable)[:100]}).",
                       "$schema, $id, $anchor and $ref values must be strings (URI references).")
    graph.check()


def _validator_class(schema: Mapping[str, Any]) -> Any:
    import jsonschema  # noqa: PLC0415

    dialect = schema.get("$schema")
    if dialect is not None and (not isinstance(dialect, str)
                                or dialect.rstrip("#") not in {u.rstrip("#") for u in _known_dialects()}):
        raise _RefusedError(f"names an unknown $schema ({str(dialect)[:80]!r}).",
                       f'Leave "$schema" out (draft 2020-12 is used), or name a draft jsonschema knows, e.g. '
                       f'"{_DRAFT_2020}".')
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _known_dialects() -> list[str]:
    import jsonschema  # noqa: PLC0415

    return [v.META_SCHEMA["$schema"] if "$schema" in v.META_SCHEMA else "" for v in (
        jsonschema.Draft3Validator, jsonschema.Draft4Validator, jsonschema.Draft6Validator,
        jsonschema.Draft7Validator, jsonschema.Draft201909Validator, jsonschema.Draft202012Validator)]


def _short(ref: str) -> str:
    return ref if len(ref) <= 80 else ref[:77] + "..."


class _Graph:
    """The schema's subschemas, each with where its refs lead, walked once: refs inside the document
    only, no in-place cycle, a bounded in-place fan-out, patterns RE2 can run."""

    def __init__(self, schema: Mapping[str, Any]):
        from referencing import Registry, Resource  # noqa: PLC0415
        from referencing.jsonschema import specification_with  # noqa: PLC0415

        named = schema.get("$schema")
        dialect = named if isinstance(named, str) else _DRAFT_2020
        self.spec = specification_with(dialect, default=specification_with(_DRAFT_2020))
        self.Resource = Resource
        root = Resource.from_contents(schema, default_specification=self.spec)
        self.root = schema
        # an empty Registry: no retrieval, so a lookup of any other document fails (nothing is fetched)
        self.resolver = Registry().resolver_with_root(root)
        self.in_place: dict[int, list[int]] = {}  # node -> nodes applied to the same value
        self.nodes: dict[int, Any] = {}
        self.dynamic_anchors: dict[str, list[int]] = {}
        self.recursive_anchors: list[int] = []
        self.dynamic_refs: list[tuple[int, str | None]] = []  # ($dynamicRef's anchor | None for $recursiveRef)
        self.has_pattern_properties = False
        self.unevaluated_properties = False
        self.subschemas = 0

    def check(self) -> None:
        for node, anchor in self.dynamic_refs:  # may land on any anchor of that name (or $recursiveAnchor)
            self.in_place[node] += self.dynamic_anchors.get(anchor, []) if anchor else self.recursive_anchors
        self._acyclic_and_bounded()
        if self.has_pattern_properties and self.unevaluated_properties:
            raise _RefusedError("combines unevaluatedProperties with patternProperties, which cannot be checked "
                           "in bounded time.", "Use additionalProperties instead of unevaluatedProperties, "
                           "or list the properties by name.")

    def walk(self) -> None:
        from referencing.exceptions import Unresolvable  # noqa: PLC0415

        work: list[tuple[Any, Any]] = [(self.root, self.resolver)]
        while work:
            node, resolver = work.pop()
            if id(node) in self.nodes:
                continue
            self.nodes[id(node)] = node  # keeps node alive, so its id stays unique
            edges = self.in_place[id(node)] = []
            if not isinstance(node, Mapping):
                continue  # true / false (or a ref into a non-schema value: nothing applies under it)
            resolver = resolver.in_subresource(self.Resource.from_contents(node, default_specification=self.spec))

            def child(sub: Any, in_place: bool, resolver: Any = resolver, edges: list[int] = edges) -> None:
                if isinstance(sub, (Mapping, bool)):
                    self.subschemas += 1
                    if self.subschemas > MAX_SUBSCHEMAS:
                        raise _RefusedError(f"has more than {MAX_SUBSCHEMAS:,} subschemas.",
                                       "Ask for less structure per task, or name repeated parts under "
                                       '"$defs" and refer to them with "$ref".')
                    work.append((sub, resolver))
                    if in_place:
                        edges.append(id(sub))

            for kw in _IN_PLACE_ONE:
                child(node.get(kw), True)
            for kw in _IN_PLACE_LIST:
                subs = node.get(kw)
                for sub in subs if isinstance(subs, list) else [subs] if kw == "extends" else []:
                    child(sub, True)
            for kw in _IN_PLACE_MAP:
                if isinstance(node.get(kw), Mapping):
                    for sub in node[kw].values():
                        child(sub, True)
            for kw in _DESCEND_ONE:
                child(node.get(kw), False)
            for kw in _DESCEND_LIST:
                if isinstance(node.get(kw), list):
                    for sub in node[kw]:
                        child(sub, False)
            for kw in (*_DESCEND_MAP, *_CONTAINERS):
                if isinstance(node.get(kw), Mapping):
                    for sub in node[kw].values():
                        child(sub, False)
            if isinstance(node.get("patternProperties"), Mapping):
                self.has_pattern_properties = True
                for pattern in node["patternProperties"]:
                    _pattern_problem(pattern)
            if "unevaluatedProperties" in node:
                self.unevaluated_properties = True
            if isinstance(node.get("pattern"), str):
                _pattern_problem(node["pattern"])
            if isinstance(node.get("$dynamicAnchor"), str):
                self.dynamic_anchors.setdefault(node["$dynamicAnchor"], []).append(id(node))
            if node.get("$recursiveAnchor") is True:
                self.recursive_anchors.append(id(node))
            for kw in _REFS:
                ref = node.get(kw)
                if not isinstance(ref, str):
                    continue
                try:
                    target = resolver.lookup(ref)
                except Unresolvable:
                    raise _refused_ref(kw, ref, resolver) from None
                work.append((target.contents, target.resolver))
                edges.append(id(target.contents))
                if kw != "$ref":
                    self.dynamic_refs.append((id(node), ref.split("#", 1)[-1] if kw == "$dynamicRef" else None))

    def _acyclic_and_bounded(self) -> None:
        """No cycle through in-place edges (validation would never end), and at most MAX_INPLACE
        subschemas applied to one value (counted with multiplicity: 10 levels of 2-way $ref is 2,047)."""
        state: dict[int, int] = {}  # 1 on the stack, 2 done
        weight: dict[int, int] = {}
        for start in self.in_place:
            if start in state:
                continue
            stack: list[tuple[int, Iterator[int]]] = [(start, iter(self.in_place[start]))]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    state[node] = 2
                    weight[node] = min(MAX_INPLACE + 1, 1 + sum(weight[c] for c in self.in_place[node]))
                    if weight[node] > MAX_INPLACE:
                        raise _RefusedError(f"applies more than {MAX_INPLACE:,} subschemas to one value (a $ref, "
                                       "allOf, anyOf or oneOf fan-out that multiplies).",
                                       "Refer to each definition once per level; merge alternatives.")
                elif state.get(nxt) == 1:
                    raise _RefusedError("has a $ref cycle that never reaches into the answer (a schema that, through "
                                   "$ref/allOf/anyOf/oneOf/not/if, applies itself to the same value), so "
                                   "checking an answer could never finish.",
                                   'Recursion must go through properties, items or another keyword that '
                                   'applies to a part of the value, e.g. {"type": "object", "properties": '
                                   '{"children": {"type": "array", "items": {"$ref": "#"}}}}.')
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(self.in_place[nxt])))


def _refused_ref(kw: str, ref: str, resolver: Any) -> _RefusedError:
    from urllib.parse import urldefrag, urljoin  # noqa: PLC0415

    target = ref if ref.startswith("#") else urldefrag(urljoin(getattr(resolver, "_base_uri", ""), ref))[0]
    scheme = target.split(":", 1)[0].lower() if ":" in target else ""
    if ref.startswith("#") or not target:
        return _RefusedError(f"has {kw} {_short(ref)!r}, which points at nothing inside the schema.",
                        'Point it at a definition that exists, e.g. "#/$defs/NAME".')
    what = {"http": "a web address", "https": "a web address", "file": "a local file"}.get(scheme, "another document")
    return _RefusedError(f"has {kw} {_short(ref)!r}, which points at {what} ({_short(target)}): refs are never "
                    "fetched or read.", _INLINE)


# -- patterns: RE2, linear time --------------------------------------------------------------------
_UNICODE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")
_compiled = _Lru()  # pattern -> its RE2 form


def _re2(pattern: str) -> Any:
    """The RE2 form of a JSON Schema (ECMA-262) pattern, cached."""
    compiled = _compiled.get(pattern, None)
    return compiled if compiled is not None else _compiled.put(pattern, _re2_compile(pattern))


def _re2_compile(pattern: str) -> Any:
    """RE2 compiles the pattern (re2.error if it cannot run it); `\\uXXXX` becomes RE2's `\\x{XXXX}`."""
    import re2  # noqa: PLC0415 - google-re2

    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported by us, not on stderr
    return re2.compile(_UNICODE_ESCAPE.sub(r"\1\\x{\2}", pattern), options=options)


def _pattern_problem(pattern: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _RefusedError(f"has a pattern of {len(pattern):,} characters; the limit is {MAX_PATTERN_CHARS:,}.",
                       "Shorten the pattern, or check the value with enum or format instead.")
    try:
        _re2(pattern)
    except Exception as exc:  # noqa: BLE001 - re2.error, or a pattern too large for RE2's memory
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise _RefusedError(f"has pattern {_short(pattern)!r}, which the linear-time regex engine (RE2) cannot "
                       f"run: {detail}.",
                       "Patterns run on RE2: no lookahead/lookbehind and no backreferences; rewrite the "
                       "pattern without them, or drop it.") from None


def _search(pattern: str, text: str) -> bool:
    return _re2(pattern).search(text) is not None


# -- the answer, checked -----------------------------------------------------------------------------
class _TooCostlyError(Exception):
    pass


_steps: ContextVar[list[int] | None] = ContextVar("hermes_delegate_schema_steps", default=None)
_validators = _Lru()  # canonical JSON -> its validator


def _counted(fn: Any) -> Any:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        left = _steps.get()
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise _TooCostlyError
        return fn(validator, value, instance, schema)

    return keyword


def _pattern_kw(validator: Any, patrn: Any, instance: Any, _schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError  # noqa: PLC0415

    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties_kw(validator: Any, pp: Any, instance: Any, _schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pp.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties_kw(original: Any) -> Any:
    """jsonschema's own additionalProperties, told which keys patternProperties matched (by RE2)
    instead of running the patterns on Python's backtracking engine."""
    def keyword(validator: Any, ap: Any, instance: Any, schema: Any) -> Any:
        pp = schema.get("patternProperties") if isinstance(schema, Mapping) else None
        if validator.is_type(instance, "object") and isinstance(pp, Mapping) and pp:
            props = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
            matched = {k: True for k in instance if k not in props and any(_search(p, k) for p in pp)}
            schema = {k: v for k, v in schema.items() if k != "patternProperties"}
            schema["properties"] = {**props, **matched}
        return original(validator, ap, instance, schema)

    return keyword


def _safe_validator(schema: Mapping[str, Any]) -> Any:
    """A validator for this schema (cached by content): no retrieval, RE2 patterns, formats asserted,
    every keyword counted."""
    key = _canonical(schema)
    validator = _validators.get(key, None)
    if validator is not None:
        return validator
    import jsonschema  # noqa: PLC0415
    from referencing import Registry  # noqa: PLC0415

    base = _validator_class(schema)
    kws = dict(base.VALIDATORS)
    kws["pattern"] = _pattern_kw
    kws["patternProperties"] = _pattern_properties_kw
    if "additionalProperties" in kws:
        kws["additionalProperties"] = _additional_properties_kw(kws["additionalProperties"])
    # types-jsonschema leaves extend() unannotated
    cls = jsonschema.validators.extend(base, validators={k: _counted(v) for k, v in kws.items()})  # type: ignore[no-untyped-call]
    formats = jsonschema.FormatChecker(base.FORMAT_CHECKER.checkers)
    # format "regex": a pattern RE2 runs (what `pattern` uses); Python's re.compile on an answer can
    # raise more than re.error (a repetition count too large: OverflowError)
    formats.checks("regex", raises=Exception)(_is_re2_pattern)
    return _validators.put(key, cls(schema, registry=Registry(), format_checker=formats))


def _is_re2_pattern(instance: object) -> bool:
    if isinstance(instance, str):
        _re2_compile(instance)
    return True


def _answer_depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_ANSWER_DEPTH:
                return False
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            if depth > MAX_ANSWER_DEPTH:
                return False
            stack.extend((x, depth + 1) for x in v)
    return True


def validate(value: Any, schema: Mapping[str, Any]) -> str | None:
    """None when `value` (parsed JSON) matches the schema (checked by `check` before), else what is
    wrong, in words a model can act on. Bounded: see the module's rules. Blocking: run it in a thread."""
    import jsonschema  # noqa: PLC0415

    if not _answer_depth_ok(value):
        return f"the answer nests deeper than {MAX_ANSWER_DEPTH} levels"
    validator = _safe_validator(schema)
    token = _steps.set([MAX_VALIDATION_STEPS])
    try:
        err = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except _TooCostlyError:
        return (f"checking the answer against the schema took more than {MAX_VALIDATION_STEPS:,} steps; "
                "the schema is too costly for this answer")
    except RecursionError:
        return "the answer is nested too deeply to check against the schema"
    except Exception as exc:  # noqa: BLE001 - a keyword or format check that broke: a typed problem, not a crash
        return f"the answer could not be checked against the schema ({type(exc).__name__}: {str(exc)[:200]})"
    finally:
        _steps.reset(token)
    if err is None:
        return None
    at = "/".join(map(str, err.absolute_path)) or "(root)"
    return f"at {at}: {err.message}"
