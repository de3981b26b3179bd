"""Rotating a log file shared by many processes, under the sidecar lock.

A writer that finds the file full (by size), or a record that reaches the shared next rollover
time (by time), takes the slow path: lock, re-read the truth (``stat`` of the path vs ``fstat``
of our descriptor, real size), and rotate only if the current file really is full or the boundary
still due — another process may have rotated while we waited, and then we only follow it. Records
never wait for the lock otherwise; a rotation that fails (a stuck lock holder, a failing rename)
is reported, and records keep going to the current file meanwhile.

Where the current file goes is the backup set's business, one of two strategies:
:class:`NumberedBackups` (size rotation: ``path.1`` newest … ``path.N``, renumbered at once or
staged for the janitor) and :class:`TimedBackups` (time rotation: ``path.<stamp>``, then
``.1``, ``.2``… within a period).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from functools import partial

from safe_rotating._common.episode import Episode
from safe_rotating._common.oserror import explain as _explain
from safe_rotating._engine.counters import Counters
from safe_rotating._engine.current import CurrentFile
from safe_rotating._engine.janitor.names import move_any, remove_any, taken
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.lock import SidecarLock
from safe_rotating._engine.notices import Refusals
from safe_rotating._engine.plan import (
    Remove,
    Rename,
    RotateCurrent,
    SizePolicy,
    count_backups,
    plan_rollover,
)
from safe_rotating._engine.shared import SharedSchedule
from safe_rotating._engine.staging import INLINE
from safe_rotating._engine.upkeep import Upkeep
from safe_rotating.exceptions import LockTimeout, RotationError

__all__ = ["NumberedBackups", "Rotator", "TimedBackups"]

# A rotation that finds another process rotated while it waited, and the new file already full,
# tries again on that file, at most this many times in all.
_FOLLOWS = 8
_REMIND_EVERY = 60.0  # seconds between reminders while rotation keeps failing
# A lock holder that is running (not stopped, not stuck in I/O) but slow — a loaded machine —
# delays rotation quietly for this long before it is reported; writers never wait for it.
_SLOW_HOLDER_GRACE = 5.0
_monotonic = time.monotonic


class NumberedBackups:
    """Size rotation's backup set: ``path.1`` (newest) … ``path.N``, moved under the lock.

    ``name_for`` maps ``"app.log.3"`` to the name on disk (a handler's ``rotation_filename``);
    ``rotate(source, dest)`` moves the current file to the first backup name (``rotator``).
    ``staged``: the set is renumbered by the janitor when large (see :class:`StagedSet`).
    """

    def __init__(
        self,
        path: str,
        lock: SidecarLock,
        *,
        max_bytes: int,
        backup_count: int,
        name_for: Callable[[str], str],
        rotate: Callable[[str, str], None],
        staged: StagedSet | None,
        upkeep: Upkeep,
    ) -> None:
        self._path = path
        self._lock = lock
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._rotation_name = name_for
        self._rotate = rotate
        self._staged = staged
        self._upkeep = upkeep

    @property
    def keeps_backups(self) -> bool:
        return self._backup_count > 0

    def _name_for(self, n: int) -> str:
        return self._rotation_name(f"{self._path}.{n}")

    def _keep(self) -> int:
        """How many backups a rotation keeps: ours, or more if a running process keeps more."""
        other = self._lock.register(self._max_bytes, self._backup_count)
        if other is not None and other.backup_count > self._backup_count:
            return other.backup_count
        return self._backup_count

    def move(self) -> None:
        """Move the current file to ``path.1``, the older backups one number up (under the
        lock); a crashed rotation's leftovers are part of the plan."""
        if self._staged is not None and self._lock.extended:
            self._move_staged(self._staged)
            return
        existing = count_backups(self._name_for, taken)
        current = os.path.lexists(self._path)
        plan = plan_rollover(
            self._path, existing, self._keep(), self._name_for, current_exists=current
        )
        for step in plan:
            try:
                if isinstance(step, Remove):
                    remove_any(step.path)
                elif isinstance(step, Rename):
                    move_any(step.source, step.dest)
                elif isinstance(step, RotateCurrent):
                    self._rotate(step.source, step.dest)
            except FileNotFoundError:
                pass  # already gone: a crashed rotation, or an operator cleaning up
            except OSError as exc:
                raise _explain(exc, "rotate", getattr(step, "source", self._path)) from None

    def _move_staged(self, staged: StagedSet) -> None:
        """Move the current file to a pending name (one rename, whatever the number of
        backups), trim to ``backupCount``, renumber at once if the set is small, else leave
        the renumbering to the janitor."""
        lock = self._lock
        try:
            state = staged.load(lock)
            keep = self._keep()
            shifted = None
            if state.at_rest and state.total < INLINE and os.path.lexists(self._path):
                # A small set: the stdlib's rotation, ``rotator`` called with the name of .1.
                shifted = staged.shift_in(lock, state, self._rotate, keep)
            if shifted is not None:
                state = shifted
            else:
                if os.path.lexists(self._path):
                    state = staged.rotate(lock, staged.load(lock), self._rotate)
                state = staged.trim(lock, state, keep)
                if state.total <= INLINE:
                    state = staged.renumber(lock, state, 4 * INLINE)
        except OSError as exc:
            raise _explain(exc, "rotate", self._path) from None
        self._upkeep.staged_busy = not state.at_rest


class TimedBackups:
    """Time rotation's backup set: the current file moves to the next free name of the period
    that ended (see :meth:`SharedSchedule.timed_dest`); size rotation within a period too."""

    keeps_backups = True  # a time-rotated file keeps every backup when backup_count is 0

    def __init__(
        self,
        path: str,
        shared: SharedSchedule,
        *,
        rotate: Callable[[str, str], None],
        clock: Callable[[], float],
    ) -> None:
        self._path = path
        self.shared = shared
        self._rotate = rotate
        self.clock = clock

    def move(
        self, boundary: float | None = None, now: float | None = None, next_at: float | None = None
    ) -> None:
        """Move the current file (under the lock); ``next_at``: the next boundary, recorded."""
        shared = self.shared
        if now is None:
            now = self.clock()
        if boundary is None:
            boundary = shared.shared_at()
        dest = shared.timed_dest(shared.schedule.stamp(boundary, now))
        try:
            self._rotate(self._path, dest)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _explain(exc, "rotate", self._path) from None
        if next_at is not None:
            shared.set_shared_at(next_at)


class Rotator:
    """Rotates ``current`` when it is full or its period ended, following other processes'
    rotations; ``backups`` says where the current file goes, ``timed`` is set for time rotation.
    """

    def __init__(
        self,
        current: CurrentFile,
        backups: NumberedBackups | TimedBackups,
        *,
        policy: SizePolicy,
        lock_timeout: float,
        upkeep: Upkeep,
        counters: Counters,
        refusals: Refusals,
    ) -> None:
        self.path = current.path
        self.max_bytes = policy.max_bytes
        self.lock_timeout = lock_timeout
        self._current = current
        self._lock = current.lock
        self._backups = backups
        self._timed = backups if isinstance(backups, TimedBackups) else None
        self._policy = policy
        self._upkeep = upkeep
        self._counters = counters
        self._refusals = refusals
        # A run of failed rotations (stuck lock holder, failing rename): records are still written.
        self._trouble: Episode | None = None

    def _rotate_locked(self, move: Callable[[], None] | None = None) -> None:
        """Move the current file into the backup set (``move``: a time rotation's own, with its
        boundary and the next one), and open a new file at the path.

        Not while the path holds something we refused (reported already): the rename would
        hand a neighbour's link to ``rotator`` and into the backup set."""
        if self._refusals.refusal is not None:
            return
        (move or self._backups.move)()
        self._upkeep.rotated = True
        self._counters.rotations += 1
        self._lock.bump_generation()
        self._current.open(own=True)

    def try_rollover(self, incoming: int, due: float | None = None) -> Exception | None:
        """Rotate if needed; return (not raise) what went wrong, so the record is still written.

        ``due``: a record of this time reached the cached rollover time (a time rotation).
        """
        trouble = self._trouble
        current = self._current
        try:
            timeout = self.lock_timeout if trouble is None else 0.0
            if due is not None:
                self._timed_rollover(due, timeout)
            else:
                self.rollover(incoming, timeout)
        except Exception as exc:  # a stuck lock, a failed rename, a faulty rotator or namer
            with contextlib.suppress(Exception):
                if not current.is_current():  # still follow a rotation done by someone else
                    current.open()
            now = _monotonic()
            if trouble is None:
                trouble = self._trouble = Episode(now)
            else:
                trouble.count += 1
            if trouble.reported:
                if now - trouble.reported < _REMIND_EVERY:
                    return None  # reported already; the record is kept anyway
            elif (
                isinstance(exc, LockTimeout)
                and exc.holder_state is None
                and now - trouble.started < _SLOW_HOLDER_GRACE
            ):
                return None  # a busy holder on a loaded machine, not a stuck one: not yet
            trouble.reported = now
            try:
                size = os.fstat(current.fd).st_size
            except OSError:
                size = current.end
            failing = (
                "" if trouble.count == 1
                else f" Rotation has failed for {now - trouble.started:.0f}s "
                f"({trouble.count} attempts)."
            )  # fmt: skip
            failure = RotationError(
                f"could not rotate {self.path!r}: {exc}.{failing} Records keep going to "
                f"the current file, now {size} bytes (maxBytes={self.max_bytes}), without waiting "
                "for the lock again; rotation resumes by itself once this is resolved"
            )
            failure.__cause__ = exc
            return failure
        finally:
            self._upkeep.wake()
        self._trouble = None
        return None

    def _timed_rollover(self, due: float, timeout: float) -> None:
        """A record of time ``due`` reached the rollover time: rotate, unless done already.

        Under the lock the shared time is read again: the process that finds the boundary still
        due rotates and records the next one; every other process finds the new time, later
        than its record, and only follows to the new file.

        Only the clock moves the schedule: a record dated later than the clock (a wrong
        ``created``, the year 9999) counts as written now, so it neither rotates before the
        boundary nor sets the next boundary from its own time.
        """
        timed = self._timed
        assert timed is not None
        shared = timed.shared
        current = self._current
        now = timed.clock()
        if due > now:
            due = now
            if due < shared.rollover_at:
                return
        lock = current.lock
        seen = current.gen

        def rotated_elsewhere() -> bool:
            return lock.read_generation() != seen

        if not self._acquire(timeout, abandon=rotated_elsewhere):
            current.open()  # another process rotated while we waited
            if due < shared.rollover_at:
                return
            self._acquire(timeout)
        try:
            if not current.is_current():
                current.open()
            at = shared.shared_at()
            if due >= at:
                current.end = os.fstat(current.fd).st_size
                now = timed.clock()
                following = shared.schedule.next_rollover(now)
                if current.end > 0:
                    self._rotate_locked(partial(timed.move, at, now, following))
                else:  # nothing to keep: an empty file just starts the next period
                    shared.set_shared_at(following)
                    lock.bump_generation()
                    current.open(own=True)
            else:
                shared.rollover_at = at
        finally:
            lock.release()

    def rollover(self, incoming: int, timeout: float, force: bool = False) -> None:
        for _ in range(_FOLLOWS):
            if self._rollover_once(incoming, timeout, force):
                return
            # Another process rotated while we waited, and the file we followed it to is full
            # already (a slow lock holder on a loaded machine): rotate that one in turn.

    def _rollover_once(self, incoming: int, timeout: float, force: bool) -> bool:
        """One attempt: False if another process rotated meanwhile and the file we then
        followed it to is already full (never when forced)."""
        current = self._current
        lock = current.lock
        seen = current.gen

        def rotated_elsewhere() -> bool:
            return lock.read_generation() != seen

        if not self._acquire(timeout, abandon=None if force else rotated_elsewhere):
            current.open()  # another process rotated while we waited
            return force or not self._policy.full(current.end, incoming)
        try:
            rotated_meanwhile = lock.read_generation() != seen
            if not current.is_current():
                current.open()
            current.end = os.fstat(current.fd).st_size  # the truth, not this process's estimate
            if force:
                # A file that another process rotated since we opened ours is already fresh for
                # us, and rotating an empty file would only push history out.
                if not rotated_meanwhile and current.end > 0:
                    self._rotate_locked()
            elif self._policy.full(current.end, incoming):
                self._rotate_locked()
        finally:
            lock.release()
        return True

    def _acquire(self, timeout: float, abandon: Callable[[], bool] | None = None) -> bool:
        """Take the rotation lock (see :meth:`SidecarLock.acquire`), counting the wait."""
        started = _monotonic()
        try:
            return self._lock.acquire(timeout, abandon=abandon, announce=True)
        finally:
            self._counters.lock_waits.add(_monotonic() - started)
            if self._lock.refusal is not None:  # it kept its file: say so (see Refusals.news)
                self._refusals.unsafe = True

    def write_again(self) -> Exception | None:
        """Write the records of :attr:`CurrentFile.rewrite` (see :meth:`CurrentFile.open`) under
        the rotation lock, rotating first if they do not fit: several processes doing this at
        once after a burst of rotations would otherwise each add many records past
        ``max_bytes``, where a lock-free writer adds at most one. Rare, so the lock costs
        nothing that matters. Returns (does not raise) a rotation problem; the records are
        written all the same."""
        current = self._current
        data, current.rewrite = current.rewrite, b""
        problem: Exception | None = None
        held = False
        try:
            held = self._acquire(self.lock_timeout if self._trouble is None else 0.0)
        except Exception as exc:  # a stuck holder: write anyway, and say why the file may grow
            problem = exc
        try:
            if held:
                try:
                    if not current.is_current():
                        current.open()
                    current.end = os.fstat(current.fd).st_size
                    if self._policy.full(current.end, len(data)):
                        self._rotate_locked()
                except Exception as exc:  # a failed rename, rotator or namer: write anyway
                    problem = exc
            current.write(data)
        finally:
            if held:
                self._lock.release()
        return problem

    def write_part(self, chunk: Sequence[bytes], last: bool = False) -> Exception | None:
        """Write ``chunk``, a part of a batch cut to fit (see ``LogFile.append_batch``), in one
        ``write``, rotating first if it does not fit and after it if it fills the file.
        ``last``: no other chunk of this batch follows, so the end is not asked for (the next
        batch starts with an ``fstat``): the end we keep is then a lower bound, enough to rotate
        a file we filled ourselves."""
        data = b"".join(chunk)
        policy = self._policy
        current = self._current
        problem: Exception | None = None
        if current.rewrite:  # older records, from a file found removed since the batch began
            problem = self.write_again()
        if current.end + len(data) > policy.max_bytes:
            problem = self.try_rollover(len(data)) or problem
            if current.rewrite:
                problem = self.write_again() or problem
        end = current.write(data, ask_end=not last)
        current.own_end = end
        if end >= policy.max_bytes:
            self._counters.overshoot(end, policy.max_bytes)
            problem = self.try_rollover(1) or problem
        return problem

    def do_rollover(self) -> None:
        """Rotate now, under the lock, unless the file is empty or already rotated elsewhere.

        When several processes each do this at start-up (a "fresh file per start" idiom), one
        rotation happens and no history is pushed out: a file that another process rotated since
        this one opened its file is already fresh, and an empty file is not rotated.
        """
        current = self._current
        if current.fd < 0:
            current.open()
        if self._backups.keeps_backups:
            try:
                self.rollover(0, self.lock_timeout, force=True)
            finally:
                self._upkeep.wake()
        else:
            current.open()
