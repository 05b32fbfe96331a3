"""Files a task names by path, read for the child so the parent sends a path, not the content.

Every rule is checked before a byte is sent, and a file is never opened unless it passes them:

- the path (relative ones against the first root) must lie under one of the roots, lexically AND
  after resolving symlinks (a link that leaves the roots is refused);
- no part of it may match the deny list (secrets: `.env*`, `*.pem`, `id_*`, `.git` internals, …);
- it must be a regular file: a directory, device, FIFO or socket is refused from `stat`, and the file
  is opened with O_NOFOLLOW | O_NONBLOCK (a FIFO swapped in after the check cannot block the read)
  and checked again on the open descriptor (same inode, still regular);
- at most `max_file_bytes` each and `max_task_bytes` per task; text only (no NUL byte, valid UTF-8).

A refusal is a FileRefusedError whose `kind` says which rule (file_outside_roots, file_denied,
file_not_found, file_directory, file_special, file_binary, file_too_large, file_unreadable).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable, Sequence

from ..core.config import DEFAULT_FILE_DENY as DEFAULT_DENY
from ..core.errors import UsageError

__all__ = ["DEFAULT_DENY", "FilePolicy", "FileRefusedError", "TaskFile", "read_task_files", "render_files"]

_SNIFF = 8192


class FileRefusedError(UsageError):
    """A file a task names that may not be read; `kind` is the rule that refused it."""

    def __init__(self, kind: str, path: str, message: str, hint: str = ""):
        super().__init__(message, hint=hint)
        self.kind = kind
        self.path = path


@dataclass(frozen=True)
class FilePolicy:
    roots: tuple[Path, ...]
    deny: tuple[str, ...] = DEFAULT_DENY
    max_file_bytes: int = 100_000
    max_task_bytes: int = 200_000

    @classmethod
    def build(cls, roots: Iterable[str | os.PathLike[str]], deny: Sequence[str] | None = None,
              max_file_bytes: int = 100_000, max_task_bytes: int = 200_000) -> "FilePolicy":
        """Roots resolved now (realpath), in order, without duplicates."""
        seen: list[Path] = []
        for r in roots:
            p = Path(os.path.realpath(os.path.expanduser(os.fspath(r))))
            if p not in seen:
                seen.append(p)
        return cls(tuple(seen), tuple(DEFAULT_DENY if deny is None else deny), max_file_bytes, max_task_bytes)


@dataclass(frozen=True)
class TaskFile:
    path: str  # as the task named it
    text: str


def _under(path: Path, roots: Sequence[Path]) -> Path | None:
    for root in roots:
        if path == root or root in path.parents:
            return root
    return None


def _denied(rel: Path, deny: Sequence[str]) -> str | None:
    for part in rel.parts:
        for pattern in deny:
            if fnmatchcase(part, pattern):
                return pattern
    return None


def _refuse(kind: str, name: str, message: str, hint: str = "") -> FileRefusedError:
    return FileRefusedError(kind, name, message, hint)


def _check(name: str, policy: FilePolicy) -> tuple[Path, os.stat_result]:
    if not policy.roots:
        raise _refuse("file_outside_roots", name, f"File {name!r}: no file roots are configured.",
                      "Add a root (--root DIR, or delegation.files.roots), or paste the content into context.")
    roots_text = ", ".join(map(str, policy.roots))
    outside_hint = f"Name a file under {roots_text}, or paste what the task needs into context."
    if "\x00" in name:
        raise _refuse("file_unreadable", name, "A file path contains a NUL character.", outside_hint)
    raw = Path(os.path.expanduser(name))
    lexical = Path(os.path.normpath(raw if raw.is_absolute() else policy.roots[0] / raw))
    root = _under(lexical, policy.roots)
    if root is None:
        raise _refuse("file_outside_roots", name, f"File {name!r} is outside the allowed roots.", outside_hint)
    pattern = _denied(lexical.relative_to(root), policy.deny)
    if pattern:
        raise _refuse("file_denied", name, f"File {name!r} matches the deny list ({pattern!r}): it may hold "
                      "secrets.", "Pick another file; the deny list is delegation.files.deny.")
    real = Path(os.path.realpath(lexical))
    real_root = _under(real, policy.roots)
    if real_root is None:
        raise _refuse("file_outside_roots", name, f"File {name!r} is a symlink that leads outside the allowed "
                      "roots.", outside_hint)
    pattern = _denied(real.relative_to(real_root), policy.deny)
    if pattern:
        raise _refuse("file_denied", name, f"File {name!r} leads to a path on the deny list ({pattern!r}).",
                      "Pick another file; the deny list is delegation.files.deny.")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise _refuse("file_not_found", name, f"File {name!r} does not exist.",
                      f"Check the path (relative paths start at {policy.roots[0]}).") from None
    except OSError as exc:
        raise _refuse("file_unreadable", name, f"File {name!r} cannot be read ({exc.strerror}).") from None
    _check_mode(name, st.st_mode)
    if st.st_size > policy.max_file_bytes:
        raise _refuse("file_too_large", name, f"File {name!r} is {st.st_size:,} bytes; the limit is "
                      f"{policy.max_file_bytes:,} per file.", "Name a smaller file, or paste the relevant part "
                      "into context (delegation.files.max_file_bytes sets the limit).")
    return real, st


def _check_mode(name: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise _refuse("file_directory", name, f"{name!r} is a directory, not a file.",
                      "Name the files in it one by one.")
    if not stat.S_ISREG(mode):
        what = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise _refuse("file_special", name, f"{name!r} is {what}, not a regular file.", "Name a regular text file.")


def _read(name: str, real: Path, st: os.stat_result, limit: int) -> str:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a symlink after the check
            raise _refuse("file_outside_roots", name, f"File {name!r} became a symlink while it was read.") from None
        raise _refuse("file_unreadable", name, f"File {name!r} cannot be read ({exc.strerror}).") from None
    try:
        now = os.fstat(fd)
        _check_mode(name, now.st_mode)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise _refuse("file_unreadable", name, f"File {name!r} changed while it was read.", "Call again.")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except BlockingIOError:
        raise _refuse("file_special", name, f"{name!r} would block: not a regular file.") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise _refuse("file_too_large", name, f"File {name!r} is over the limit of {limit:,} bytes per file.")
    if b"\x00" in data[:_SNIFF]:
        raise _refuse("file_binary", name, f"File {name!r} is binary.", "Name a text file.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("file_binary", name, f"File {name!r} is not UTF-8 text.", "Name a text file.") from None


def read_task_files(names: Sequence[str], policy: FilePolicy) -> list[TaskFile]:
    """Every file a task names, checked (all of them first) and read; FileRefusedError otherwise."""
    checked = [(name, *_check(name, policy)) for name in names]
    total = sum(st.st_size for _, _, st in checked)
    if total > policy.max_task_bytes:
        raise _refuse("file_too_large", ", ".join(names), f"The task's files are {total:,} bytes together; the "
                      f"limit is {policy.max_task_bytes:,} per task.", "Split the files over several tasks.")
    out, total = [], 0
    for name, real, st in checked:
        text = _read(name, real, st, policy.max_file_bytes)
        total += len(text.encode("utf-8"))
        if total > policy.max_task_bytes:
            raise _refuse("file_too_large", name, f"The task's files grew past {policy.max_task_bytes:,} bytes "
                          "while they were read.", "Split the files over several tasks.")
        out.append(TaskFile(name, text))
    return out


def render_files(files: Sequence[TaskFile]) -> str:
    """The files as the child reads them: one fenced block per file, headed by its path."""
    return "\n\n".join(f'<file path="{f.path}">\n{f.text}\n</file>' for f in files)
