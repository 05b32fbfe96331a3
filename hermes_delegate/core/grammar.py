"""The model-string grammar, and nothing else: `NAME[:VARIANT][!] [--provider SLUG] [flags]`.

A trailing `!` on the name pins the model (`opus!`): it means the same model, and it is never
downgraded when `delegation.budget.on_over_budget: downgrade` would otherwise move the task down the
tier ladder.

`parse_model_string()` only splits and checks the shape. Deciding what a name means is
`resolver.py`'s job (the pydantic-ai split: parse_model_id vs infer_model).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, replace

from .errors import SpecError

__all__ = ["ModelSpec", "parse_model_string", "KNOWN_VARIANTS", "IGNORED_FLAGS", "MAX_SPEC_LEN"]

#: Variant suffixes that stay on the id (OpenRouter and friends). Others are kept too; these
#: are the ones we recognise as variants rather than part of a version-like name.
KNOWN_VARIANTS = frozenset(
    {"free", "thinking", "extended", "fast", "nitro", "floor", "online", "beta", "exacto", "latest"}
)
#: Flags a user may carry over from hermes's /model command. A per-task choice never persists,
#: so they are accepted and ignored.
IGNORED_FLAGS = frozenset({"--global", "--session", "--once"})
MAX_SPEC_LEN = 512

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@+-]*(?::[A-Za-z0-9._-]+)?$")
# "openrouter:stepfun/step-3.5-flash": a colon prefix before a slash-containing name.
_COLON_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):([^:\s]*/\S*)$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model string. `name` excludes the variant; `base` is name plus variant."""

    raw: str
    name: str
    variant: str | None = None
    provider: str | None = None
    ignored_flags: tuple[str, ...] = ()
    pinned: bool = False  # a trailing `!` on the name: never downgraded

    @property
    def base(self) -> str:
        return f"{self.name}:{self.variant}" if self.variant else self.name

    def unpinned(self) -> "ModelSpec":
        """The same spec without its `!` (its raw text too, so a resolution's chain shows the name)."""
        if not self.pinned:
            return self
        return replace(self, raw=self.raw.replace(f"{self.base}!", self.base, 1), pinned=False)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:  # unbalanced quotes
        raise SpecError(f"Cannot parse model string {text!r}: {exc}.",
                        hint="Write it as NAME[:VARIANT] [--provider SLUG].") from None


def parse_model_string(text: object) -> ModelSpec:
    """Split a model string into its parts. Raises SpecError for anything malformed."""
    if not isinstance(text, str):
        raise SpecError(
            f"A model must be a string, got {type(text).__name__}.",
            hint='Pass a model string such as "haiku" or "glm-4.7", or omit the field.',
        )
    raw = text
    text = text.strip()
    if not text:
        raise SpecError("The model string is empty.",
                        hint='Pass a model such as "haiku", "small" or "glm-4.7", or omit the field.')
    if len(text) > MAX_SPEC_LEN:
        raise SpecError(f"The model string is {len(text)} characters long; the limit is {MAX_SPEC_LEN}.",
                        hint="Pass a model name, not a prompt.")
    tokens = _split(text)
    name: str | None = None
    provider: str | None = None
    ignored: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if (tok == "--provider" or tok.startswith("--provider=")) and provider is not None:
            raise SpecError(f"Model string {raw.strip()!r} names --provider twice.",
                            hint="Give one --provider per model string, e.g. `glm-4.7 --provider zai`.")
        if tok.startswith("--provider="):
            provider = tok.split("=", 1)[1]
            if not provider:
                raise SpecError("--provider needs a slug.", hint="Write e.g. --provider openrouter.")
        elif tok == "--provider":
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("-"):
                raise SpecError("--provider needs a slug.", hint="Write e.g. `glm-4.7 --provider zai`.")
            provider = tokens[i + 1]
            i += 1
        elif tok in IGNORED_FLAGS:
            ignored.append(tok)
        elif tok.startswith("-"):
            raise SpecError(
                f"Unknown flag {tok!r} in model string {raw.strip()!r}.",
                hint="Only --provider SLUG is meaningful (--global, --session and --once are ignored).",
                suggestions=["--provider"],
            )
        elif name is None:
            name = tok
        else:
            raise SpecError(
                f"Model string {raw.strip()!r} has more than one name ({name!r} and {tok!r}).",
                hint="Give one model per task; put the provider after --provider.",
            )
        i += 1
    if name is None:
        raise SpecError(f"Model string {raw.strip()!r} has no model name.",
                        hint="Write NAME [--provider SLUG], e.g. `glm-4.7 --provider zai`.")
    pinned = name.endswith("!")
    if pinned:
        name = name[:-1]
        if not name:
            raise SpecError(f"Model string {raw.strip()!r} has no model name before its `!`.",
                            hint="Write the model to pin, e.g. `opus!`.")
    m = _COLON_PREFIX_RE.match(name)
    if m:
        fixed = f"{m.group(2)} --provider {m.group(1)}"
        raise SpecError(
            f"The colon-prefix form {name!r} is not supported.",
            hint=f"Write the provider as a flag: `{fixed}`.",
            suggestions=[fixed],
        )
    if not _NAME_RE.match(name):
        raise SpecError(
            f"{name!r} is not a valid model name.",
            hint="Model names use letters, digits and . _ / @ + - with an optional :variant suffix "
                 "(and a trailing ! to pin it).",
        )
    variant = None
    if ":" in name:
        name, variant = name.split(":", 1)
    if provider is not None:
        provider = provider.strip().lower()
    return ModelSpec(raw=raw, name=name, variant=variant, provider=provider, ignored_flags=tuple(ignored),
                     pinned=pinned)
