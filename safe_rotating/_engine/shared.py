"""What the writers of one file keep in its lock table besides the lock and the generation.

* Their settings (:func:`register_settings`): each process records its ``maxBytes`` and
  ``backupCount``, and is told once when another process writing the same file uses others,
  or when a process that has exited kept more backups than it will (before any is deleted).
* The time schedule (:class:`SharedSchedule`): the next rollover time, which the first process
  to need one sets and every other follows, and the count of files of the current period, so
  that naming a time-rotated file takes two ``lstat`` calls, not a scan of the directory.

A table of a newer layout (written by a newer release) keeps only the lock and the generation
for us: the schedule is then kept by each process for itself.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Callable

from safe_rotating._common.once import first_time
from safe_rotating._engine.janitor.names import taken
from safe_rotating._engine.lock import SidecarLock, pid_alive
from safe_rotating._engine.locktable import KNOWN, LAYOUT
from safe_rotating._engine.notices import Warnings
from safe_rotating._engine.plan import SizePolicy
from safe_rotating._engine.schedule import COMPRESSED_SUFFIXES, Schedule, parse_timed_name

__all__ = ["SharedSchedule", "register_settings"]

# More files in one period than this means a count in the lock table nobody wrote honestly.
_MOST_PERIOD_FILES = 1 << 31


def register_settings(
    lock: SidecarLock,
    path: str,
    policy: SizePolicy,
    backup_count: int,
    schedule: Schedule | None,
    warnings: Warnings,
) -> None:
    """Record our settings in the sidecar; warn once when another process differs, or when
    an exited one kept more backups than ``backup_count`` (``schedule``: time rotation's)."""
    scheduled = schedule is not None
    if lock.newer_layout is not None:
        warnings.once(
            "layout",
            f"the rotation lock file {lock.path!r} has layout {lock.newer_layout}, written by "
            f"a newer safe_rotating; this one knows layout {LAYOUT} and uses only the lock and "
            "the rotation counter, which every layout shares"
            + (", and keeps its time schedule to itself" if scheduled else "")
            + f". Upgrade every process writing {path!r} to the same release",
        )
        return
    if not policy.enabled and not (scheduled and backup_count):
        return
    if backup_count:  # 0 (time rotation) keeps every backup: nothing to lose
        _warn_before_trimming(lock, path, backup_count, schedule, warnings)
    max_bytes = policy.max_bytes
    other = lock.register(max_bytes, backup_count)
    if other is not None:
        warnings.once(
            "settings",
            f"{path!r} is also written by pid {other.pid} with "
            f"maxBytes={other.max_bytes}, backupCount={other.backup_count}, but pid "
            f"{os.getpid()} uses maxBytes={max_bytes}, backupCount={backup_count}. "
            "Backups are kept up to the largest backupCount of the running processes; "
            "use the same settings in every process",
        )


def _warn_before_trimming(
    lock: SidecarLock,
    path: str,
    backup_count: int,
    schedule: Schedule | None,
    warnings: Warnings,
) -> None:
    """Warn, before registering, when the settings recorded last are those of a process that
    has exited and kept more backups than ``backup_count``, and more than that are on disk:
    the rule "the largest backupCount of the running processes" no longer protects them, so
    the oldest are about to be deleted (a test once lost 167 k records so, without a word)."""
    recorded = lock.recorded_keeper()
    if (
        recorded is None
        or recorded.backup_count <= backup_count
        or recorded.pid == os.getpid()
        or pid_alive(recorded.pid)
    ):
        return
    found = _count_backups(path, schedule)
    if found <= backup_count or not first_time("smaller backupCount", path):
        return
    warnings.once(
        "smaller backupCount",
        f"{path!r} was last written with backupCount={recorded.backup_count}, by pid "
        f"{recorded.pid}, which has exited; pid {os.getpid()} uses backupCount={backup_count}, "
        f"so {found - backup_count} of its {found} backups, the oldest, are about to be "
        f"deleted. To keep them, use backupCount={recorded.backup_count} here (or copy them "
        "away first)",
    )


def _count_backups(path: str, schedule: Schedule | None) -> int:
    """The backups of ``path`` on disk, a plain and a compressed copy counted once: time-named
    ones, or numbered ones (``app.log.3``, ``app.log.pending.7``; a ``namer`` that moves the
    number elsewhere hides them, and then nothing is told)."""
    directory, base = os.path.split(path)
    numbered = re.compile(rf"{re.escape(base)}\.(?:pending\.)?\d+", re.ASCII)
    names = set()
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return 0
    for entry in entries:
        plain = entry
        for suffix in COMPRESSED_SUFFIXES:
            if entry.endswith(suffix):
                plain = entry[: -len(suffix)]
        if schedule is not None:
            if parse_timed_name(entry, base, schedule.stamp_pattern) is not None:
                names.add(plain)
        elif numbered.fullmatch(plain):
            names.add(plain)
    return len(names)


class SharedSchedule:
    """The next rollover time of ``path``, shared through its lock table, and the names of the
    files of a period. ``name_for`` is a handler's ``rotation_filename`` (for ``namer``)."""

    def __init__(
        self,
        schedule: Schedule,
        lock: SidecarLock,
        path: str,
        *,
        clock: Callable[[], float],
        lock_timeout: float,
        name_for: Callable[[str], str],
        warnings: Warnings,
    ) -> None:
        self.schedule = schedule
        self._lock = lock
        self._path = path
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._name_for = name_for
        self._warnings = warnings
        # The shared next rollover time as this process last read it.
        self.rollover_at = math.inf
        self._local_at = 0.0  # the schedule kept here when the table cannot hold it

    def load(self) -> None:
        """Cache the shared next rollover time; the first process to need one sets it."""
        schedule = self.schedule
        lock = self._lock
        if not lock.extended:  # a newer layout: keep a schedule of our own
            if not self._local_at:
                self._local_at = schedule.first_rollover(self._file_mtime(), self._clock())
            self.rollover_at = self._local_at
            return
        at, signature = lock.schedule()
        if not schedule.plausible(at, self._clock()):
            lock.acquire(max(self._lock_timeout, 1.0))
            try:  # read again under the lock: another process may have set it meanwhile
                at = self.shared_at()
                _, signature = lock.schedule()
            finally:
                lock.release()
        if signature != schedule.signature:
            self._warnings.once(
                "schedule",
                f"{self._path!r} is also written by a process with another rotation schedule; "
                f"pid {os.getpid()} uses {schedule.describe()}. All processes follow one shared "
                "schedule, and each computes the next boundary with its own settings when it "
                "rotates: use the same when/interval/utc/atTime in every process",
            )
        self.rollover_at = at

    def _file_mtime(self) -> float | None:
        try:
            return os.stat(self._path).st_mtime
        except OSError:
            return None

    def shared_at(self) -> float:
        """The next rollover time from the table (under the lock), or our own.

        None yet (0), or a value no clock could have set (``inf``, ``NaN``, the year 9999 that
        an older release let a record's time write; see :meth:`Schedule.plausible`): computed
        again from the file's time, as at a first start, and recorded.
        """
        if not self._lock.extended:
            return self._local_at
        schedule = self.schedule
        at, _ = self._lock.schedule()
        now = self._clock()
        if not schedule.plausible(at, now):
            if at:
                self._warnings.once(
                    "implausible-schedule",
                    f"the rotation lock file {self._lock.path!r} said the next time rotation of "
                    f"{self._path!r} is at {at!r}, which no clock reaches (a record dated in the "
                    "future, with an older safe_rotating?); it is computed again, as at a start",
                )
            at = schedule.first_rollover(self._file_mtime(), now)
            self._lock.set_schedule(at, schedule.signature)
        return at

    def set_shared_at(self, at: float) -> None:
        if self._lock.extended:
            self._lock.set_schedule(at, self.schedule.signature)
        else:
            self._local_at = at

    def timed_dest(self, stamp: str) -> str:
        """The next free name of the period ``stamp``: ``base.stamp``, then ``.1``, ``.2``…

        Names are never reused: after the oldest file of a period was deleted, the next one still
        gets a number above every existing one, so the names keep sorting oldest first. The count
        of the current period is kept in the table, so this is two ``lstat`` calls, not a scan.
        """
        lock = self._lock
        key = zlib.crc32(stamp.encode()) + 1
        base = f"{self._path}.{stamp}"

        def name(n: int) -> str:
            return self._name_for(base if n == 0 else f"{base}.{n}")

        flags, (cached_key, count, *_) = lock.state() if lock.extended else (0, (0, 0))
        n = -1
        # The count comes from a file others may write: only a plausible one is believed.
        plausible = 0 <= count < _MOST_PERIOD_FILES
        if flags & KNOWN and cached_key == key and plausible and not taken(name(count)):
            n = count
        elif not taken(name(0)) and not taken(name(1)):
            n = 0
        if n < 0:
            n = self._highest_of(stamp) + 1
            while taken(name(n)):  # a namer we cannot parse back: probe upwards
                n += 1
        if lock.extended:
            lock.set_state(KNOWN, (key, n + 1, 0, 0, 0))
        return name(n)

    def _highest_of(self, stamp: str) -> int:
        directory, base = os.path.split(self._path)
        highest = 0
        for entry in os.listdir(directory or "."):
            parsed = parse_timed_name(entry, base, self.schedule.stamp_pattern)
            # A name numbered past any honest count (planted?) is not continued from.
            if parsed is not None and parsed.stamp == stamp and parsed.n < _MOST_PERIOD_FILES:
                highest = max(highest, parsed.n)
        return highest
