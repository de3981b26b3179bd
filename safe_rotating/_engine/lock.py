"""The inter-process rotation lock: an exclusive ``flock`` on a sidecar file.

The file, as one process has it open (safely created, moved when replaced, fresh after a fork),
is :class:`~safe_rotating._engine.sidecar.SidecarFile`; the table at its head, with its fields
and layouts, is :mod:`safe_rotating._engine.locktable`. Here: taking and giving up the lock
with a bounded wait that names the holder (``with lock.hold(timeout):``, or
:meth:`SidecarLock.acquire` and :meth:`SidecarLock.release` for a wait that may be abandoned),
and what the table's fields mean to the processes that share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from typing import Final

from safe_rotating._common.forksafe import current_pid
from safe_rotating._engine.locktable import TABLE_END, Field, Keeper, initialise
from safe_rotating._engine.sidecar import SidecarFile
from safe_rotating.exceptions import LockError, LockTimeout

__all__ = ["SidecarLock", "path_names", "pid_alive", "process_running", "process_state"]

# How long in all a waiter stays for a holder that is running (see SidecarLock.acquire).
RUNNING_HOLDER_PATIENCE = 5.0
_FIRST_POLL = 0.0001  # seconds; doubled after each failed try ...
_LONGEST_POLL = 0.005  # ... up to this, so a waiter notices a release within ~5 ms
_FLAGS = fcntl.LOCK_EX | fcntl.LOCK_NB  # flock(2): one lock per open file description
# Pids above this are no process (Linux's pid_max is at most 2**22; a C ``pid_t`` is 32 bits):
# the table is writable by every process that may log, so it may hold any 64-bit number.
_PID_MAX = 2**31 - 1


def pid_alive(pid: int) -> bool:
    """Does ``pid`` name a running process (as far as this process can tell)? Any number is
    answered: one that cannot be a pid (read from a table somebody else wrote) is not alive."""
    if pid <= 0 or pid > _PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except (OSError, OverflowError, ValueError):
        return False
    return True


def path_names(path: str, fd: int, follow: bool = True) -> bool:
    """Does ``path`` name the file open on ``fd`` (same device and inode)? ``follow=False``:
    the path itself, so a link to the file does not count."""
    try:
        here = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _state_letter(pid: int) -> bytes | None:
    """The one-letter state of ``pid`` from ``/proc/<pid>/stat`` (Linux), else ``None``."""
    if pid <= 0 or pid > _PID_MAX:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0] if fields else None


def process_running(pid: int) -> bool:
    """Is ``pid`` on a CPU or waiting for one (state ``R``)? A holder in that state is making
    progress — a rotation on a loaded machine — not stuck."""
    return _state_letter(pid) == b"R"


_STATES: Final = {
    b"T": "stopped",
    b"t": "stopped by a debugger",
    b"D": "waiting on uninterruptible I/O (a hung disk or network mount?)",
    b"Z": "a zombie",
}


def process_state(pid: int) -> str | None:
    """``"stopped"``, ``"in uninterruptible I/O"``… from ``/proc`` (Linux), else ``None``."""
    letter = _state_letter(pid)
    return None if letter is None else _STATES.get(letter)


class SidecarLock(SidecarFile):
    """An exclusive, bounded-wait lock on ``path`` plus the shared table.

    Not thread-safe by itself: the owning handler serialises its threads with its own lock.
    ``acquire`` is re-entrant within one owner (a rotator that logs must not unlock its caller).
    """

    def __init__(
        self,
        path: str,
        mode: int | None = None,
        owner: tuple[int, int] | None = None,
        log_path: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(path, mode, owner, log_path, warn)
        self.repaired = False  # set when a truncated or foreign table was re-initialised

    def reopen(self) -> None:
        """Drop our description and open the file at the path again (it was replaced)."""
        if self._pid == current_pid() and self._depth:
            raise RuntimeError(f"reopen of {self.path!r} while holding the lock")
        if self._fd >= 0 and self._pid == current_pid():
            self._move()  # keeps ours if the path holds something we refuse (see refusal)
            return
        if self._fd >= 0:
            self._drop_inherited()
        self.open()

    def close(self) -> None:
        if self._fd >= 0:
            if self._pid == current_pid() and self._depth:
                # Clear the holder while the descriptor is still ours; a failure here (a full
                # disk) must not keep the descriptor, and with it the lock, open.
                with contextlib.suppress(OSError):
                    self._write_holder(0)
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the last descriptor of the description also drops the lock
        self._depth = 0

    # -- shared table ----------------------------------------------------------------------------
    def read_generation(self) -> bytes:
        """The generation as raw bytes — the hot path's only look at the table.

        A truncated table reads short (``b""``), which differs from any cached value, so the
        caller takes its slow path and :meth:`validate` repairs the table.
        """
        return os.pread(self._fd, 8, 0)  # Field.GENERATION, not decoded

    @property
    def generation(self) -> int:
        assert self._fd >= 0, "SidecarLock.open() was not called"
        return int(self._table.read(self._fd, Field.GENERATION)[0])

    def bump_generation(self) -> int:
        """Announce a rotation. Only call while holding the lock."""
        assert self._depth > 0, "bump_generation() without the lock"
        new = (self.generation + 1) & 0xFFFF_FFFF_FFFF_FFFF
        self._table.write(self._fd, Field.GENERATION, new)
        return new

    def holder_pid(self) -> int | None:
        pid = int(self._table.read(self._fd, Field.HOLDER)[0])
        return pid or None

    def held_since(self) -> float | None:
        """Wall-clock time at which the current holder took the lock, if it recorded it."""
        since = float(self._table.read(self._fd, Field.SINCE)[0])
        return since or None

    def _write_holder(self, pid: int) -> None:
        self._table.write(self._fd, Field.HOLDER, pid)
        self._table.write(self._fd, Field.SINCE, time.time() if pid else 0.0)

    def validate(self) -> bool:
        """Is the table intact? If it was truncated, re-initialise it (under the lock).

        Returns ``True`` when the table was repaired. Contention is not an error here: if the lock
        is busy the holder will find the same damage, and we look again next time.
        """
        self.open()
        if os.fstat(self._fd).st_size >= TABLE_END:
            return False
        try:
            with self.hold(0.05, patience=0.0):
                if os.fstat(self._fd).st_size >= TABLE_END:
                    return False  # somebody else repaired it while we waited
                initialise(self._fd)
                self._write_holder(current_pid())
                self._table.newer_layout = None
                self.repaired = True
                return True
        except LockTimeout:
            return False

    def schedule(self) -> tuple[float, int]:
        """The shared next rollover time (0.0: none yet) and the signature that set it."""
        at, signature = self._table.read(self._fd, Field.SCHEDULE)
        return float(at), int(signature)

    def set_schedule(self, at: float, signature: int) -> None:
        """Record the next rollover time. Only call while holding the lock."""
        assert self._depth > 0, "set_schedule() without the lock"
        self._table.write(self._fd, Field.SCHEDULE, at, signature)

    def state(self) -> tuple[int, tuple[int, int, int, int, int]]:
        """Flags (``KNOWN``, ``DIRTY``, ``STAGED``) and the five counters of the backup set."""
        flags, a, b, c, d, e = self._table.read(self._fd, Field.STATE)
        return int(flags), (a, b, c, d, e)

    def set_state(self, flags: int, counters: tuple[int, int, int, int, int]) -> None:
        """Record the backup set (one ``pwrite``). Only call while holding the lock."""
        assert self._depth > 0, "set_state() without the lock"
        self._table.write(self._fd, Field.STATE, flags, *counters)

    def set_flags(self, flags: int) -> None:
        assert self._depth > 0, "set_flags() without the lock"
        self._table.write(self._fd, Field.FLAGS, flags)

    def wanted_since(self) -> float:
        """Since when a writer waits for the lock (0.0: nobody)."""
        return float(self._table.read(self._fd, Field.WANTED)[0])

    def _want(self, since: float) -> None:
        with contextlib.suppress(OSError):
            self._table.write(self._fd, Field.WANTED, since)

    # -- settings --------------------------------------------------------------------------------
    def recorded_keeper(self) -> Keeper | None:
        """The settings last recorded as the keeper's, by a live process or one that exited."""
        pid, max_bytes, backup_count = self._table.read(self._fd, Field.KEEPER)
        return Keeper(pid, max_bytes, backup_count) if pid else None

    def keeper(self) -> Keeper | None:
        """The live process with the largest ``backupCount`` that registered, if any."""
        recorded = self.recorded_keeper()
        return recorded if recorded is not None and pid_alive(recorded.pid) else None

    def register(self, max_bytes: int, backup_count: int) -> Keeper | None:
        """Record our settings if no live process keeps more backups; return the other keeper.

        Returns the keeper found *before* registering when its settings differ from ours, so the
        caller can warn. Best effort: skipped when the lock is busy.
        """
        try:
            with self.hold(0.05, patience=0.0):
                other = self.keeper()
                pid = current_pid()
                if other is None or other.pid == pid or other.backup_count <= backup_count:
                    self._table.write(self._fd, Field.KEEPER, pid, max_bytes, backup_count)
                if other is not None and (other.max_bytes, other.backup_count) != (
                    max_bytes,
                    backup_count,
                ):
                    return other
                return None
        except LockTimeout:
            return None

    # -- locking ---------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._depth > 0 and self._pid == current_pid()

    @contextlib.contextmanager
    def hold(self, timeout: float, patience: float | None = None) -> Iterator[None]:
        """The lock for the ``with`` block: :meth:`acquire` (which raises :class:`LockTimeout`
        or :class:`LockError` when it cannot be had), and :meth:`release` at the end."""
        self.acquire(timeout, patience=patience)  # without ``abandon``: True, or it raises
        try:
            yield
        finally:
            self.release()

    def acquire(
        self,
        timeout: float,
        abandon: Callable[[], bool] | None = None,
        announce: bool = False,
        patience: float | None = None,
    ) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds.

        ``timeout`` bounds the wait for a holder that is stopped, stuck in I/O, or gone quiet.
        A holder that is *running* (on a CPU or waiting for one: a rotation on a loaded machine)
        is waited for up to ``patience`` seconds in all (default :data:`RUNNING_HOLDER_PATIENCE`
        when ``timeout`` is positive), so that a slow rotation does not make every waiter write
        past ``maxBytes``.

        With ``announce``, a wait is recorded in the table so that a background janitor
        holding the lock between small steps gives it up at once.

        Returns ``True`` once held. Returns ``False`` without the lock if ``abandon()`` became true
        while waiting (the caller no longer needs it, e.g. another process already rotated).
        Raises :class:`LockTimeout` naming the holder when the bound runs out, and
        :class:`LockError` for failures that are not contention.
        """
        self.open()  # also: a description inherited through any kind of fork is replaced here
        if self._depth:
            self._depth += 1
            return True
        started = time.monotonic()
        deadline = started + timeout
        if patience is None:
            patience = RUNNING_HOLDER_PATIENCE if timeout > 0 else 0.0
        last_chance = started + max(timeout, patience)
        pause = _FIRST_POLL
        announced = False
        while True:
            try:
                fcntl.flock(self._fd, _FLAGS)
            except BlockingIOError:
                pass  # contention: somebody else holds it (EWOULDBLOCK)
            except OSError as exc:
                raise LockError(f"cannot lock {self.path!r}: {exc}") from exc
            else:
                try:  # deleted or replaced: move to the file at the path, and lock that one
                    moved = not self.names_its_file() and self._move()
                except BaseException:
                    with contextlib.suppress(OSError):
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
                    raise
                if moved:
                    continue
                self._depth = 1
                # A full disk cannot stop the lock; the holder is just unnamed.
                with contextlib.suppress(OSError):
                    self._write_holder(current_pid())
                if announced:
                    self._want(0.0)
                return True
            if announce and not announced:  # not written into a newer layout
                announced = True
                self._want(time.time())
            if abandon is not None and abandon():
                if announced:
                    self._want(0.0)
                return False
            now = time.monotonic()
            if now >= deadline and now < last_chance:
                holder = self.holder_pid()
                if holder not in (None, current_pid()) and process_running(holder):
                    deadline = min(now + _LONGEST_POLL * 4, last_chance)  # progressing: wait on
            if now >= deadline:
                if announced:
                    self._want(0.0)
                holder = self.holder_pid()
                since = self.held_since()
                raise LockTimeout(
                    self.path,
                    now - started,
                    holder,
                    held_for=None if since is None else max(0.0, time.time() - since),
                    holder_state=None if holder is None else process_state(holder),
                )
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, _LONGEST_POLL)

    def names_its_file(self) -> bool:
        """Does the path still name the file we hold open (not deleted, not replaced)? A link
        to it does not count: the path must be the file itself."""
        return self._fd >= 0 and path_names(self.path, self._fd, follow=False)

    def release(self) -> None:
        if self._depth == 0:
            raise RuntimeError(f"release of {self.path!r} that is not held")
        self._depth -= 1
        if self._depth:
            return
        with contextlib.suppress(OSError):
            self._write_holder(0)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise LockError(f"cannot unlock {self.path!r}: {exc}") from exc
