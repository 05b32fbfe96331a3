"""Reading config files: our YAML config, a LiteLLM proxy `config.yaml` (`litellm_config:`, with
`include:` merged as LiteLLM merges it), and the one YAML reader every file goes through.

Where the config comes from: `--config PATH`, then $HERMES_DELEGATE_CONFIG, then
$XDG_CONFIG_HOME/hermes-delegate/config.yaml (~/.config/…). No file at the default place is fine.
Loading never touches the network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Protocol, cast

import yaml
from pydantic import ValidationError

from ..core.config import (_PROXY_KEY_HINT, IGNORED_SECTIONS, LITELLM_SETTINGS, ROUTER_SECTIONS, Config,
                           RouterSection)
from ..core.errors import BudgetError, ConfigError, DelegateError

__all__ = ["load_config", "config_from_dict", "default_config_path", "read_yaml_file", "read_bounded",
           "NoAliasLoader", "BoundedAliasLoader", "load_tasks", "MAX_YAML_BYTES", "MAX_YAML_NODES"]

log = logging.getLogger(__name__)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hermes-delegate" / "config.yaml"


def _format_validation(err: ValidationError, where: str) -> ConfigError | BudgetError:
    """One sentence naming the file and each bad key. Our own validators' messages (pydantic prefixes
    them "Value error, ") name their keys already. Only budget_usd wrong: a BudgetError, as from every
    other door a budget comes through."""
    lines, keys = [], set()
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).strip()
        ours = msg.startswith(_VALUE_ERROR)
        msg = msg[len(_VALUE_ERROR):] if ours else msg
        lines.append(msg.rstrip(".") if ours and not loc else f"{loc or '(top level)'}: {msg.rstrip('.')}")
        keys.add(e["loc"][-1] if e["loc"] else None)
    msg = f"Invalid config {where}: " + "; ".join(lines) + "."
    if keys == {"budget_usd"}:
        return BudgetError(msg, hint="Set budget_usd to a positive number of US dollars (e.g. 0.5), or leave it "
                                     "out for no cap.")
    return ConfigError(msg, hint="Fix the named keys; see configs/ for working examples.")


_VALUE_ERROR = "Value error, "


#: The largest file read as YAML (a config, an included or litellm_config file, hermes's config.yaml, a
#: tasks file): at most this many bytes (+1, to tell) are read, so /dev/zero or a FIFO is never read
#: whole, and a bigger file is refused before any parsing.
MAX_YAML_BYTES = 8 * 1024 * 1024
#: The most YAML nodes a config file may hold once its aliases are expanded (each alias counts as the
#: whole node it names): bounds "billion laughs" alias bombs while loading, before anything expands.
MAX_YAML_NODES = 1_000_000


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


class _Refused(yaml.YAMLError):
    """YAML we read but do not accept (an alias where none is allowed, an alias bomb)."""

    def __init__(self, problem: str, mark: Any, hint: str):
        super().__init__(problem)
        self.problem, self.problem_mark, self.hint = problem, mark, hint


class _Peeking(Protocol):
    def peek_event(self) -> yaml.Event: ...


def _peek(loader: yaml.SafeLoader) -> yaml.Event:
    """The loader's next event, not consumed (types-PyYAML leaves `Parser.peek_event` unannotated)."""
    return cast(_Peeking, loader).peek_event()


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors' aliases (*name): they allow exponential "billion laughs"
    documents. Tasks files never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = _peek(self)
            raise _Refused("YAML aliases (*name) are not allowed in {a_what}", event.start_mark,
                           "Write each task out in full: a tasks file takes no &anchors, *aliases or <<: merge keys.")
        return super().compose_node(parent, index)


class BoundedAliasLoader(yaml.SafeLoader):
    """SafeLoader for config files: anchors, aliases and merge keys (`<<: *common`) as LiteLLM and
    hermes accept them, with the expanded node count bounded while the document is composed. Each
    node's expanded size (1 + its children's, an alias counting as the node it names) is known when
    the node ends, so an alias bomb is refused after a few dozen nodes, before anything expands; an
    alias to a node that contains it (a structure with no end) is refused too."""

    max_nodes = MAX_YAML_NODES

    def compose_document(self) -> Any:
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size; nodes stay alive in the tree
        try:
            return super().compose_document()
        finally:
            self._sizes = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = _peek(self)
        node = super().compose_node(parent, index)
        if isinstance(event, yaml.AliasEvent):
            if id(node) not in self._sizes:
                raise _Refused(f"the alias *{event.anchor} is used inside the node it names, which makes a "
                               "structure with no end", event.start_mark,
                               "Point aliases only at nodes that are complete where the alias is used.")
            return node
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(v)] for v in node.value)
        else:
            size = 1
        if size > self.max_nodes:
            raise _Refused(f"more than {self.max_nodes:,} YAML nodes once its aliases are expanded, the limit "
                           "for {a_what} (an alias bomb?)", event.start_mark,
                           "Use anchors and aliases (<<: *defaults) for shared settings, not to multiply data.")
        self._sizes[id(node)] = size
        return node


def read_bounded(path: Path, max_bytes: int = MAX_YAML_BYTES) -> bytes:
    """At most `max_bytes` + 1 bytes of the file (OSError as open/read raise it): a caller that gets
    more than `max_bytes` knows the file is too large without reading an endless stream to its end."""
    chunks, total = [], 0
    with open(path, "rb") as f:
        while total <= max_bytes:  # in chunks: a small file does not cost a max_bytes buffer
            chunk = f.read(min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks)


_CHUNK = 64 * 1024


def read_yaml_file(path: Path, what: str, error: type[DelegateError] = ConfigError, *,
                   not_found_hint: str = "", nested_hint: str = "", aliases: bool = False,
                   max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The one reader of our YAML files (configs and tasks files): plain YAML only (no !!python tags),
    at most `max_bytes`; `aliases` (config files): anchors, aliases and merge keys, bounded by
    MAX_YAML_NODES once expanded; otherwise (tasks files) no aliases at all. Every way a file can be
    unusable is one typed `error` naming `what` and the path, each sentence ending in a full stop."""
    try:
        raw = read_bounded(path, max_bytes)
    except FileNotFoundError:
        raise error(f"{what[:1].upper()}{what[1:]} not found: {path}.", hint=not_found_hint) from None
    except OSError as exc:
        reason = str(exc.strerror or exc)
        raise error(f"Cannot read {what} {path}: {reason[:1].lower()}{reason[1:]}.") from None
    if len(raw) > max_bytes:
        raise error(f"Cannot read {what} {path}: it is larger than {_mib(max_bytes)}, the limit for a YAML file.",
                    hint="Split it into smaller files (several tasks files, or a LiteLLM config's include:), "
                         "and let workers read large inputs from files instead of pasting them.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"Cannot read {what} {path}: it is not UTF-8 text.") from None
    loader = BoundedAliasLoader if aliases else NoAliasLoader
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - SafeLoaders: no !!python/object; aliases refused or bounded
    except RecursionError:
        raise error(f"{path} is nested too deeply to be {_a(what)}.", hint=nested_hint) from None
    except MemoryError:
        raise error(f"{path} is too large to load as {_a(what)}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        if isinstance(exc, _Refused):
            raise error(f"{path}{at}: {problem.replace('{a_what}', _a(what))}.", hint=exc.hint) from None
        plain = "no !!python tags" if aliases else "no !!python tags, no *aliases"
        raise error(f"{path}{at} is not valid YAML: {problem}.",
                    hint=f"Only plain YAML is accepted ({plain}).") from None


def load_tasks(path: str | os.PathLike[str]) -> tuple[list[Any], str | None]:
    """A tasks file (what `hermes-delegate run` takes): a list of tasks or goal strings, or a mapping
    {tasks: [...], model: ..., output_schema: ...}. A task may carry its own output_schema; the file's
    applies to every task without one (as the tools' top-level output_schema does). Returns (tasks, the
    file's model or None); TaskPayloadError otherwise. Read like a config (plain YAML, at most 8 MiB) but
    with no aliases; the tasks themselves (and their schemas) are checked by Delegator.plan."""
    from ..core.errors import TaskPayloadError  # noqa: PLC0415

    shape = "Each task has goal (required), context, model and output_schema."
    data = read_yaml_file(Path(path), "tasks file", TaskPayloadError, nested_hint=shape)
    if isinstance(data, dict):
        tasks = data.get("tasks")
        if tasks is None:
            tasks = []
        if not isinstance(tasks, list):
            raise TaskPayloadError(
                f"{path}: `tasks` must be a list of tasks or goal strings, got {type(tasks).__name__}.",
                hint="Write tasks: [{goal: ...}, ...] or tasks: [\"a goal\", ...]. " + shape)
        schema = data.get("output_schema")
        if schema is not None:
            tasks = [t if isinstance(t, dict) and t.get("output_schema") is not None
                     else {**t, "output_schema": schema} if isinstance(t, dict)
                     else {"goal": t, "output_schema": schema} if isinstance(t, str) else t for t in tasks]
        return tasks, data.get("model")
    if isinstance(data, list):
        return data, None
    raise TaskPayloadError(f"{path}: expected a list of tasks or a mapping with `tasks:`.", hint=shape)


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    data = read_yaml_file(path, what, not_found_hint="Check the path, or pass --config PATH.", aliases=True)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}.")
    return data


def _include_path(entry: str, declared_in: Path, root: Path) -> Path:
    """LiteLLM's rule: next to the config that declares it; a file next to the root config still counts."""
    declared = (declared_in.parent / os.path.expanduser(entry)).resolve()
    rooted = (root.parent / os.path.expanduser(entry)).resolve()
    if declared == rooted or declared.exists() or not rooted.exists():
        return declared
    log.warning("%s: include %r not found next to it; read %s instead", declared_in, entry, rooted)
    return rooted


def _includes(data: Mapping[str, Any], where: Path) -> list[str]:
    entries = data.get("include")
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, str) and e.strip() for e in entries):
        raise ConfigError(f"{where}: include: must be a list of file paths.",
                          hint="Write include: [models.yaml, more_models.yaml] (paths relative to this file).")
    return entries


def _merge_includes(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`include:` as LiteLLM's proxy merges it: each file relative to the config naming it, lists
    (model_list, …) concatenated, any other top-level value replaced by the included one, a file
    already read skipped, includes of includes followed."""
    root = path.resolve()
    merged = {k: v for k, v in data.items() if k != "include"}
    pending = [(e, root) for e in _includes(data, path)]
    loaded = {root}
    while pending:
        entry, declared_in = pending.pop(0)
        target = _include_path(entry, declared_in, root)
        if target in loaded:
            continue
        loaded.add(target)
        included = _read_yaml(target, f"included LiteLLM config (include of {declared_in})")
        for key, value in included.items():
            if key == "include":
                continue
            base = merged.get(key)
            merged[key] = [*base, *value] if isinstance(base, list) and isinstance(value, list) else value
        pending.extend((e, target) for e in _includes(included, target))
    return merged


def _check_litellm_settings(settings: Any, where: str) -> None:
    if not isinstance(settings, Mapping):
        return  # pydantic names the type error
    refused = sorted(k for k in settings if k not in LITELLM_SETTINGS)
    if refused:
        raise ConfigError(f"{where}: litellm_settings: {', '.join(refused)} cannot be honoured by "
                          "hermes-delegate.", hint=_PROXY_KEY_HINT)
    params = settings.get("cache_params")
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"{where}: litellm_settings.cache_params: must be a mapping.",
                          hint="Write cache_params: {type: local} or {type: redis, host: ..., port: ...}.")


def _load_litellm_config(path: Path) -> dict[str, Any]:
    data = _merge_includes(_read_yaml(path, "LiteLLM config"), path)
    unknown = sorted(k for k in data if k not in ROUTER_SECTIONS and k not in IGNORED_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: {', '.join(unknown)}: cannot be honoured by hermes-delegate "
                          f"(it uses {', '.join(ROUTER_SECTIONS)}, include, and ignores "
                          f"{', '.join(IGNORED_SECTIONS)}).", hint=_PROXY_KEY_HINT)
    out = {k: data[k] for k in ROUTER_SECTIONS if k in data and data[k] is not None}
    ignored = [k for k in IGNORED_SECTIONS if k in data]
    if ignored:
        out["ignored_sections"] = ignored
    _check_litellm_settings(out.get("litellm_settings") or {}, str(path))
    return out


def config_from_dict(data: Mapping[str, Any], *, source: str | None = None,
                     base_dir: Path | None = None) -> Config:
    """Validate a config mapping. `litellm_config` paths resolve against `base_dir`."""
    where = source or "(inline)"
    if not isinstance(data, Mapping):
        raise ConfigError(f"Invalid config {where}: the top level must be a mapping.")
    data = dict(data)
    proxy_keys = sorted(k for k in ("model_list", "router_settings", "litellm_settings", "general_settings")
                        if k in data)
    if proxy_keys and "router" not in data:  # a LiteLLM proxy config.yaml given as our config
        raise ConfigError(
            f"{where} looks like a LiteLLM proxy config (top-level {', '.join(proxy_keys)}), not a "
            "hermes-delegate config.",
            hint=f"Point a hermes-delegate config at it: `litellm_config: {where}` (or move those keys "
                 "under `router:`).")
    lc = data.get("litellm_config")
    if lc is not None:
        if not isinstance(lc, str) or not lc.strip():
            raise ConfigError(f"Invalid config {where}: litellm_config: must be a file path.")
        if data.get("router"):
            raise ConfigError(f"Invalid config {where}: router: give either router or litellm_config, not both.")
        if data.get("remote") is not None:
            raise ConfigError(f"Invalid config {where}: remote: give either remote or litellm_config, not both.")
        lc_path = Path(os.path.expanduser(lc))
        if not lc_path.is_absolute() and base_dir is not None:
            lc_path = base_dir / lc_path
        router = _load_litellm_config(lc_path)
        try:  # errors in the LiteLLM file name that file, with LiteLLM's own key paths
            RouterSection.model_validate(router)
        except ValidationError as exc:
            raise _format_validation(exc, f"{lc_path} (litellm_config of {where})") from None
        data["router"] = router
        data["litellm_config"] = str(lc_path)
    elif isinstance(data.get("router"), Mapping):
        _check_litellm_settings(data["router"].get("litellm_settings") or {}, f"{where}: router")
    if data.get("remote") is not None and data.get("router"):
        raise ConfigError(f"Invalid config {where}: remote: give either remote or router, not both.",
                          hint="remote lists its groups from the proxy; drop the router section.")
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise _format_validation(exc, where) from None


def load_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None) -> Config:
    """Load the config in force: explicit path, then $HERMES_DELEGATE_CONFIG, then the default place."""
    env = os.environ if env is None else env
    if path is None and env.get("HERMES_DELEGATE_CONFIG"):
        path = env["HERMES_DELEGATE_CONFIG"]
    if path is None:
        default = default_config_path(env)
        if not default.exists():
            return Config()
        path = default
    p = Path(os.path.expanduser(str(path)))
    data = _read_yaml(p, "config file")
    return config_from_dict(data, source=str(p), base_dir=p.parent)
