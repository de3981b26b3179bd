"""The rotation engine: one log file shared by many processes, and nothing of ``logging``.

:class:`LogFile` opens and follows the current file, appends whole records (:meth:`LogFile.append`,
one ``write``; :meth:`LogFile.append_batch`, one ``write`` for many), rotates under the sidecar lock
and repairs what a crashed rotation left. Every writer of the package is a thin facade over it:
``SafeRotatingFileHandler`` (format, encode, ``LogFile.append``, ``handleError``), and the server's
single writer. A fix in rotation is therefore a fix everywhere, and a file may be shared by
handlers in many processes and the server at once.

How a record is written (:meth:`LogFile.append`):

1. At most once a millisecond (:data:`~safe_rotating._engine.current.CHECK_EVERY`), and always
   after an idle spell, read the shared rotation generation from the sidecar (one ``pread``) and
   reopen the path if another process rotated (:mod:`safe_rotating._engine.current`).
2. If the last known end of file says the record would not fit, take the slow path: lock, re-read
   the truth (``stat`` of the path vs ``fstat`` of our descriptor, real size), and rotate only if
   the current file really is full (:mod:`safe_rotating._engine.rotator`).
3. One ``write`` of the whole record on an ``O_APPEND`` descriptor — atomic on a local file system,
   so lines never tear or interleave — then ``lseek`` to learn where it ended.
4. Keep the record's bytes until the next check. If that check finds that the file they went to
   has since been rotated away *and removed* (``st_nlink == 0``: ``backupCount`` rotations within a
   millisecond, or a writer stalled across them), they are written again into the current file.
   If the file is now full, rotate at once.

Records therefore never wait for the inter-process lock; only a writer that finds the file full
does, and for a short, bounded time. While several processes write, a file may exceed
``max_bytes`` by at most one record (or one batch) per other concurrently writing process.

The directory may be writable by users we do not trust ("Several users" in docs): how the path
is opened, and what is refused there, is :mod:`safe_rotating._engine.opener`'s; what is told
about it, :mod:`safe_rotating._engine.notices`'. The settings and the time schedule the writers
share through the lock table are :mod:`safe_rotating._engine.shared`'s.

Not thread-safe: a facade serialises its callers (the handler's lock, the server's one task).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence

from safe_rotating._engine.compress import Compression
from safe_rotating._engine.counters import Counters
from safe_rotating._engine.current import CurrentFile
from safe_rotating._engine.janitor.runner import Janitor
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.lock import SidecarLock
from safe_rotating._engine.notices import Refusals, Warnings
from safe_rotating._engine.opener import PathOpener
from safe_rotating._engine.plan import Retention, SizePolicy
from safe_rotating._engine.rotator import NumberedBackups, Rotator, TimedBackups
from safe_rotating._engine.schedule import Schedule
from safe_rotating._engine.shared import SharedSchedule
from safe_rotating._engine.stats import HandlerStats
from safe_rotating._engine.upkeep import Upkeep

__all__ = ["LogFile", "Records", "default_lock_path"]

_monotonic = time.monotonic


def default_lock_path(path: str, directory: str | None = None) -> str:
    """The sidecar lock file of the log file ``path``: ``.<name>.lock``, in ``directory`` if
    given (a handler's ``lock_file_directory``), else beside the log file."""
    return os.path.join(directory or os.path.dirname(path), "." + os.path.basename(path) + ".lock")


def _same_name(path: str) -> str:
    return path


def _rename(source: str, dest: str) -> None:
    os.rename(source, dest)


class Records(bytes):
    """Several whole records in one piece of bytes, each one line ending in a line feed (a
    protocol-2 batch the server writes as it came). :meth:`LogFile.append_batch` writes it with
    one ``write`` when it fits the current file, and cuts it between lines when it does not."""


class LogFile:
    """``path`` and its backups ``path.1`` (newest) … ``path.N``, written by many processes.

    ``name_for`` maps ``"app.log.3"`` to the name on disk (a handler's ``rotation_filename``, for
    ``namer``); ``rotate(source, dest)`` moves the current file to the first backup name (a
    handler's ``rotate``, for ``rotator``); ``warn`` receives messages a person should read that do
    not stop writing. ``newline`` starts a new line after a record cut short by a full disk.
    """

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = 0,
        backup_count: int = 0,
        truncate: bool = False,
        lock_timeout: float = 0.25,
        lock_path: str | None = None,
        chmod: int | None = None,
        owner: tuple[int, int] | None = None,
        newline: bytes = b"\n",
        name_for: Callable[[str], str] = _same_name,
        rotate: Callable[[str, str], None] = _rename,
        warn: Callable[[str], None] | None = None,
        schedule: Schedule | None = None,
        clock: Callable[[], float] = time.time,
        retention: Retention | None = None,
        compression: Compression | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.lock_timeout = lock_timeout
        self.lock_path = lock_path or default_lock_path(path)
        self._clock = clock
        # A time-rotated file keeps every backup when backup_count is 0, and still rotates at
        # max_bytes: its size rule needs a non-zero count to be enabled.
        policy = self._policy = SizePolicy(max_bytes, max(backup_count, 1 if schedule else 0))
        janitor = self._janitor = Janitor(
            path,
            self.lock_path,
            schedule=schedule,
            name_for=name_for,
            retention=retention or Retention(count=backup_count),
            compression=compression,
            chmod=chmod,
            owner=owner,
            warn=warn,
            clock=clock,
        )
        staged = None if schedule is not None else StagedSet(path, name_for)
        self._staging = staged is not None
        lock = self._lock = SidecarLock(self.lock_path, chmod, owner, log_path=path, warn=warn)
        warnings = Warnings(warn)
        upkeep = Upkeep(janitor)
        counters = self._counters = Counters()
        refusals = self._refusals = Refusals(lock)
        shared = self._shared = (
            None
            if schedule is None
            else SharedSchedule(
                schedule,
                lock,
                path,
                clock=clock,
                lock_timeout=lock_timeout,
                name_for=name_for,
                warnings=warnings,
            )
        )
        current = self._current = CurrentFile(
            path,
            lock,
            PathOpener(path, chmod, owner, truncate),
            newline=newline,
            policy=policy,
            backup_count=backup_count,
            compression=compression,
            shared=shared,
            upkeep=upkeep,
            counters=counters,
            refusals=refusals,
            warnings=warnings,
        )
        backups: NumberedBackups | TimedBackups = (
            NumberedBackups(
                path,
                lock,
                max_bytes=max_bytes,
                backup_count=backup_count,
                name_for=name_for,
                rotate=rotate,
                staged=staged,
                upkeep=upkeep,
            )
            if shared is None
            else TimedBackups(path, shared, rotate=rotate, clock=clock)
        )
        self._rotator = Rotator(
            current,
            backups,
            policy=policy,
            lock_timeout=lock_timeout,
            upkeep=upkeep,
            counters=counters,
            refusals=refusals,
        )

    def stats(self) -> HandlerStats:
        """The engine's counters (``records``, ``bytes`` and the queue are the callers')."""
        return self._counters.stats()

    @property
    def lock(self) -> SidecarLock:
        return self._lock

    @property
    def is_open(self) -> bool:
        return self._current.fd >= 0

    @property
    def scheduled(self) -> bool:
        """Does this file rotate by time?"""
        return self._shared is not None

    @property
    def rollover_at(self) -> float:
        """The next time-based rollover as this process knows it (``inf`` without a schedule)."""
        shared = self._shared
        if shared is None:
            return math.inf
        if self._current.fd < 0:
            self._current.open()
        return shared.rollover_at

    def files_to_delete(self) -> list[str]:
        """The backups retention would delete now, oldest first."""
        return self._janitor.doomed()

    def open(self) -> None:
        """Open the current file (and the lock) now; ``append`` does it when needed."""
        if self._current.fd < 0:
            self._current.open()

    # -- appending -------------------------------------------------------------------------------
    def append(self, data: bytes, when: float | None = None) -> Exception | None:
        """Write ``data`` (one whole record) with one ``write``.

        ``when`` is the record's time (``LogRecord.created``) for a time schedule; the clock's
        time if not given. A record is written to the file of the period it belongs to: one
        created at or after the shared next rollover time rotates first (or follows the process
        that did), with one float comparison per record.

        Raises ``OSError`` (re-phrased for a person) when the record could not be written; returns,
        not raises, a rotation problem, because the record was written all the same.
        """
        now = _monotonic()
        current = self._current
        if current.fd < 0:
            current.open()
        elif now >= current.next_check:
            current.follow(now)
        policy = self._policy
        rotator = self._rotator
        problem: Exception | None = None
        shared = self._shared
        if shared is not None:
            at = self._clock() if when is None else when
            if at >= shared.rollover_at:
                problem = rotator.try_rollover(0, at)
        if current.rewrite:  # records to write again (see CurrentFile.open): ahead of this one
            problem = rotator.write_again() or problem
        if policy.enabled and current.end + len(data) > policy.max_bytes:
            problem = rotator.try_rollover(len(data)) or problem
            if current.rewrite:  # the rotation followed to a new file, and found ours removed
                problem = rotator.write_again() or problem
        end = current.write(data, now)
        if policy.enabled and end >= policy.max_bytes:
            self._counters.overshoot(end, policy.max_bytes)
            problem = rotator.try_rollover(1) or problem
        if self._refusals.unsafe and problem is None:  # one attribute look on the hot path
            problem = self._refusals.news()
        return problem

    def check(self, now: float | None = None) -> None:
        """Follow a rotation done by another process (see :meth:`CurrentFile.follow`); runs at
        most every ``CHECK_EVERY`` from a write, and from ``flush`` and ``close``, which also
        write again at once the records found to have gone to a removed file."""
        external = now is None  # from flush or close, not from a write
        if now is None:
            now = _monotonic()
        current = self._current
        current.follow(now)
        if external and current.rewrite:
            problem = self._rotator.write_again()
            if problem is not None:
                raise problem

    # -- batches ---------------------------------------------------------------------------------
    def append_batch(
        self, records: Sequence[bytes], when: float | None = None, most: int = 0
    ) -> Exception | None:
        """Write many whole records, in order, with one ``write`` per file they land in.

        The batch is split where the next record would push the current file past
        ``max_bytes`` (a record larger than ``max_bytes`` gets a file of its own, as with
        :meth:`append`), so with one writer no file grows past the limit; with several, a file
        may exceed it by at most one batch per other concurrently writing process. ``most``
        (bytes, 0: no limit) also splits it into writes of at most that much (a larger record
        is written alone), which bounds what a batch can add past ``max_bytes``.
        """
        if not records:
            return None
        policy = self._policy
        if not policy.enabled:
            return self.append(b"".join(records), when)
        current = self._current
        rotator = self._rotator
        refusals = self._refusals
        problem: Exception | None = None
        chunk: list[bytes] = []
        size = 0
        if current.fd < 0:
            current.open()
        else:
            now = _monotonic()
            if now >= current.next_check:
                current.follow(now)
            # The true end now, not as of our last write: the batch is cut to the room that is
            # really left, so what others wrote meanwhile does not push a file far past the limit.
            current.end = os.fstat(current.fd).st_size
            self._counters.overshoot(current.end, policy.max_bytes)
        # Unless the file still ends where our own last batch ended it (then with a newline).
        if current.end and current.end != current.own_end and not current.ends_a_line():
            current.glue = True  # the batch starts with a newline, if it goes to this file
        shared = self._shared
        if shared is not None:
            at = self._clock() if when is None else when
            if at >= shared.rollover_at:
                problem = rotator.try_rollover(0, at)
        limit = policy.max_bytes
        most = most or limit
        total = sum(map(len, records))
        if total <= most and current.end + total <= limit:  # the usual case: no cut, no loop
            problem = rotator.write_part(records, last=True) or problem
            return problem or (refusals.news() if refusals.unsafe else None)
        for record in records:
            while True:
                room = min(limit - current.end, most) - size
                if len(record) <= room or not (chunk or isinstance(record, Records)):
                    chunk.append(record)  # it fits (or a record alone: a file of its own)
                    size += len(record)
                    break
                if isinstance(record, Records):  # whole lines, as many as fit
                    cut = record.rfind(b"\n", 0, room) + 1 if room > 0 else 0
                    if not cut and not chunk:  # not one fits: the first alone, after a rotation
                        cut = record.find(b"\n") + 1 or len(record)
                    if cut:
                        chunk.append(record[:cut])
                        size += cut
                        record = Records(record[cut:])
                        if not record:
                            break
                problem = rotator.write_part(chunk) or problem
                chunk, size = [], 0
        problem = rotator.write_part(chunk) or problem
        return problem or (refusals.news() if refusals.unsafe else None)

    def periods(
        self, records: Sequence[bytes], times: Sequence[float]
    ) -> Iterator[tuple[Sequence[bytes], float]]:
        """Cut a batch where a record's time (``times``, as ``LogRecord.created``) reaches the
        next rollover: ``(part, time of its first record)``, each to be written with
        :meth:`append_batch` before the next is cut (the rollover time moves on as it rotates),
        so that every record goes to the file of its period (a record dated after the clock: to
        the file of the clock's period, see :meth:`Rotator.try_rollover`)."""
        start = 0
        for index, created in enumerate(times):
            if index > start and created >= self.rollover_at:
                yield records[start:index], times[start]
                start = index
        if start < len(records):
            yield records[start:], times[start]

    # -- control ---------------------------------------------------------------------------------
    def current_size(self) -> int:
        """The real size of the current file (opening it if needed)."""
        if self._current.fd < 0:
            self._current.open()
        return os.fstat(self._current.fd).st_size

    def would_rotate(self, incoming: int) -> bool:
        """Would a record of ``incoming`` bytes make the current file rotate first?"""
        return self._policy.full(self.current_size(), incoming)

    def do_rollover(self) -> None:
        """Rotate now, under the lock, unless the file is empty or already rotated elsewhere.

        When several processes each do this at start-up (a "fresh file per start" idiom), one
        rotation happens and no history is pushed out: a file that another process rotated since
        this one opened its file is already fresh, and an empty file is not rotated.
        """
        self._rotator.do_rollover()

    def close(self) -> None:
        """Check once more (see :meth:`check`), then close the file and the lock. Idempotent."""
        current = self._current
        try:
            if current.fd >= 0:
                self.check()
        finally:
            was_open = current.close()
            # Only where this process used the file, and once: logging.shutdown() closes a
            # handler again at exit, when its directory may be gone.
            if (
                was_open
                and current.registered_pid == os.getpid()
                and (self._janitor.needed or self._staging)
            ):
                self._janitor.close()

    def forget_parent(self) -> None:
        """In a forked child: the records written since the last check are the parent's to
        write again if need be, not this process's; counters start from zero."""
        self._current.forget_parent()
