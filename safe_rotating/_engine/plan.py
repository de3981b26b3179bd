"""Pure rotation logic: when to rotate, and which renames/removals a rotation performs.

Nothing here touches the file system; callers pass ``exists`` and ``name_for`` functions, so the
plans are unit-tested without processes or files.

Naming is the stdlib's: ``app.log`` is current, ``app.log.1`` the newest backup, ``app.log.N`` the
oldest, each passed through the handler's ``namer``.

Why a rotation's plan only looks at backups that exist: the backups ``1..k`` always form a
contiguous run, because every plan renames from the oldest down to ``.1`` and only ever renames onto
the free slot just above the run. A process killed halfway leaves ``1..j-1`` plus a shifted tail
``j+1..``; the next plan probes the run ``1..j-1`` and shifts it onto the gap at ``j``, which
completes the interrupted rotation. So probing stops at the first missing name: ``k + 1`` probes
for ``k`` backups, however large ``backupCount`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Backup",
    "Remove",
    "Rename",
    "Retention",
    "RotateCurrent",
    "SizePolicy",
    "Step",
    "count_backups",
    "plan_rollover",
]


@dataclass(frozen=True)
class SizePolicy:
    """Size-based rotation, parsed once from the handler's arguments.

    A file never grows past ``max_bytes`` because of this process: a record that would cross the
    limit goes into a fresh file, unless the file is empty (a record larger than ``max_bytes`` then
    lives alone in its own file). ``backup_count == 0`` or ``max_bytes == 0`` means never rotate,
    as in the stdlib.
    """

    max_bytes: int
    backup_count: int

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.backup_count > 0

    def full(self, size: int, incoming: int) -> bool:
        """Does a file of ``size`` bytes need rotating before ``incoming`` more bytes go in?"""
        return self.enabled and size > 0 and size + incoming > self.max_bytes


@dataclass(frozen=True)
class Rename:
    source: str
    dest: str


@dataclass(frozen=True)
class Remove:
    path: str


@dataclass(frozen=True)
class RotateCurrent:
    """Move the current file to the first backup name (through the handler's ``rotator``)."""

    source: str
    dest: str


Step = Rename | Remove | RotateCurrent


def count_backups(name_for: Callable[[int], str], exists: Callable[[str], bool]) -> int:
    """Length of the contiguous run of backups ``1..k`` that exist (``k + 1`` probes)."""
    k = 0
    while exists(name_for(k + 1)):
        k += 1
    return k


def plan_rollover(
    base: str,
    existing: int,
    backup_count: int,
    name_for: Callable[[int], str],
    current_exists: bool = True,
) -> list[Step]:
    """The steps of one rotation, in order, given ``existing`` contiguous backups.

    Backups numbered ``backup_count`` and above are removed (all of them, should ``backupCount``
    have been lowered since they were written), the rest shift up by one, and the current file
    becomes backup 1. The plan never renames onto a name that exists.

    Without a current file there is nothing to do: an interrupted rotation already moved it to
    backup 1, and shifting the backups again would leave ``.1`` empty.
    """
    if backup_count < 1:
        raise ValueError(f"backup_count must be >= 1 to rotate, got {backup_count!r}")
    if existing < 0:
        raise ValueError(f"existing must be >= 0, got {existing!r}")
    if not current_exists:
        return []
    steps: list[Step] = [Remove(name_for(n)) for n in range(existing, backup_count - 1, -1)]
    for n in range(min(existing, backup_count - 1), 0, -1):
        steps.append(Rename(name_for(n), name_for(n + 1)))
    steps.append(RotateCurrent(base, name_for(1)))
    return steps


@dataclass(frozen=True)
class Backup:
    """One backup as retention sees it: its name, size on disk and last modification time."""

    name: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Retention:
    """Which backups to keep, parsed once: by count, by age, by the size of the whole set.

    ``count`` 0 keeps any number; ``max_age`` (seconds) drops backups last written longer ago;
    ``max_total_bytes`` bounds the current file plus every backup. The oldest go first, a younger
    backup is never deleted while an older one is kept, and the current file is never deleted.
    """

    count: int = 0
    max_age: float | None = None
    max_total_bytes: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.count or self.max_age or self.max_total_bytes)

    @property
    def needs_sizes(self) -> bool:
        return bool(self.max_age or self.max_total_bytes)

    def to_delete(self, backups: list[Backup], current_size: int, now: float) -> list[Backup]:
        """The backups to delete, oldest first; ``backups`` is ordered oldest first."""
        total = current_size + sum(b.size for b in backups)
        remaining = len(backups)
        doomed: list[Backup] = []
        for backup in backups:
            too_many = bool(self.count) and remaining > self.count
            too_old = self.max_age is not None and now - backup.mtime > self.max_age
            too_big = self.max_total_bytes is not None and total > self.max_total_bytes
            if not (too_many or too_old or too_big):
                break
            doomed.append(backup)
            remaining -= 1
            total -= backup.size
        return doomed
