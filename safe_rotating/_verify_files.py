"""The rotated set on disk, for :mod:`safe_rotating.verify`: which files belong to it and in
what order (every naming the handlers make, see that module's docstring), their lines, and what
can be wrong with the set itself (numbering gaps, sizes, file count).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

__all__ = [
    "COMPRESSED",
    "PENDING_NAME",
    "TIMED_NAME",
    "backup_gaps",
    "file_lines",
    "file_set_problems",
    "ordered_files",
    "read_file",
    "rotated_files",
    "strip_compressed",
    "time_stamp",
]

COMPRESSED = (".gz", ".zst")
_STAMP = r"\d{4}-\d{2}-\d{2}(?:_\d{2}(?:-\d{2}(?:-\d{2})?)?)?"
TIMED_NAME = re.compile(rf"({_STAMP})(?:\.([1-9]\d*))?")
PENDING_NAME = re.compile(r"pending\.(\d+)")


def strip_compressed(name: str) -> str:
    """``name`` without its compression suffix (``.gz``, ``.zst``), if it has one."""
    for suffix in COMPRESSED:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def rotated_files(directory: str, basename: str) -> tuple[list[int], bool]:
    """Backup numbers present for ``basename`` (sorted; plain or compressed) and whether the
    current file exists."""
    numbers: list[int] = []
    current = False
    prefix = basename + "."
    for name in os.listdir(directory):
        rest = strip_compressed(name[len(prefix) :]) if name.startswith(prefix) else ""
        if name == basename:
            current = True
        elif rest.isdigit():
            numbers.append(int(rest))
    return sorted(numbers), current


def ordered_files(directory: str, basename: str) -> list[str]:
    """Every file of the set, oldest first, the current file last (the namings and their order:
    :mod:`safe_rotating.verify`)."""
    prefix = basename + "."
    numbered: list[tuple[int, str]] = []
    pending: list[tuple[int, str]] = []
    timed: list[tuple[tuple[str, int], str]] = []
    current = False
    for name in os.listdir(directory):
        if name == basename:
            current = True
            continue
        if not name.startswith(prefix):
            continue
        rest = strip_compressed(name[len(prefix) :])
        if rest.isdigit():
            numbered.append((int(rest), name))
        elif match := PENDING_NAME.fullmatch(rest):
            pending.append((int(match.group(1)), name))
        elif match := TIMED_NAME.fullmatch(rest):
            timed.append(((match.group(1), int(match.group(2) or 0)), name))
    ordered = [name for _, name in sorted(timed)]
    ordered += [name for _, name in sorted(numbered, reverse=True)]
    ordered += [name for _, name in sorted(pending)]
    return ordered + ([basename] if current else [])


def time_stamp(name: str, basename: str) -> str | None:
    """The time stamp in the name of a time-named backup of ``basename``, else ``None``."""
    if not name.startswith(basename + "."):
        return None
    match = TIMED_NAME.fullmatch(strip_compressed(name[len(basename) + 1 :]))
    return match.group(1) if match else None


def read_file(path: str) -> bytes:
    """The content of a file of the set, uncompressed."""
    if path.endswith(COMPRESSED):
        from safe_rotating._engine.compress import open_backup

        with open_backup(path) as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def file_lines(path: str, data: bytes | None = None) -> Iterator[bytes]:
    """The lines of a file of the set (``data``: its content, when already read)."""
    if data is None:
        data = read_file(path)
    if not data:
        return
    parts = data.split(b"\n")
    # A file must end with a newline; an unterminated tail is a torn record.
    tail = parts.pop()
    yield from parts
    if tail:
        yield tail


def backup_gaps(numbers: list[int], pending: bool) -> list[int]:
    """Missing backup numbers — except, while pending backups wait to be numbered, one gap:
    the older run has moved up to make room for them (see :mod:`safe_rotating._engine.staging`)."""
    present = set(numbers)
    missing = [n for n in range(1, max(numbers, default=0)) if n not in present]
    runs = [n for n in missing if n - 1 not in missing]  # the first number of each gap
    if not pending:
        return missing
    if len(runs) <= 1:
        return []
    second = runs[1]
    return [n for n in missing if n >= second]


def file_set_problems(
    oversized: list[tuple[str, int]], size_limit: int, gaps: list[int], extra_files: int
) -> list[str]:
    """What is wrong with the set of files itself, in the words of both verdicts' reports."""
    out = []
    if oversized:
        names = ", ".join(f"{n} ({s} B)" for n, s in oversized[:3])
        out.append(f"{len(oversized)} files over the size limit of {size_limit} B: {names}")
    if gaps:
        out.append(f"backup numbering has gaps at {gaps[:5]}")
    if extra_files:
        out.append(f"{extra_files} files more than backupCount + 1")
    return out
