"""The inter-process rotation lock: an exclusive portalocker lock on a sidecar file.

The sidecar (``.<logname>.lock`` beside the log, or in ``lock_file_directory``) is never the log
itself, so a rename of the log never fights the lock. Its first bytes are a small shared table,
read and written with ``pread``/``pwrite`` (never memory-mapped: touching a mapped page of a file
that someone truncated, or whose blocks a full disk never allocated, kills the process with
``SIGBUS``; a short read is just a value we notice):

======  ====  =============================================================================
offset  size  meaning
======  ====  =============================================================================
0       8     *generation*, bumped by the rotating process right after it moved the current
              file away; writers compare it with the value they opened at and reopen the path
8       8     *holder*: pid of the process holding the lock, so a waiter can name it
16      8     magic ``b"safe_rot"``
24      4     layout version (:data:`LAYOUT`)
28      4     reserved (zero)
32      8     *keeper* pid: a live process whose settings are recorded below
40      8     the keeper's ``maxBytes``
48      8     the keeper's ``backupCount`` (the largest among processes that registered)
56      8     when the holder took the lock (``time.time()``, a double)
64      8     *schedule*: the next time-based rollover (``time.time()`` scale, a double; 0: none
              set yet), shared by every process writing the file (layout 2)
72      8     schedule signature: which ``when``/``interval``/``utc``/``atTime`` set it (layout 2)
80      8     *state*: bit 0 = the fields below describe the files on disk; bit 1 = a step of a
              rotation or renumbering was in progress (its holder may have died) (layout 2)
88      40    the backup set of a size-rotated file (see ``_naming.IndexState``), or for a
              time-rotated one the name counter of the current period (layout 2)
128     8     when a writer started waiting for the lock (a double; 0: nobody waits), so that a
              janitor doing background work gives the lock up at once (layout 2)
======  ====  =============================================================================

Offsets 0 and 8 and the ``flock`` itself are the stable contract every layout keeps: a process
that meets a newer layout than it knows keeps rotating through them, reports the mismatch once,
and never writes anything else into the table. The file is created a whole page long, written
with real zeros (no hole), so a full disk fails at creation with ``ENOSPC`` — an error, not a
crash — and never later.

``flock`` locks belong to an open file description, which ``fork`` shares between parent and
child. The lock remembers the pid that opened it and takes a fresh description whenever it is
used from another process, so a child forked in C (uWSGI, embedding hosts), where Python's
at-fork hooks never run, still gets its own lock. A sidecar deleted or replaced under running
processes is noticed the next time the lock is taken (the path no longer names the locked file)
and every process moves to the file at the path.

The sidecar lives in a directory that other users may write (a group-shared log directory), so
it is opened through :mod:`._safefs`: never through a symbolic link, a regular file with one
name only, created 0600 and given its mode and owner once checked. Its contents are ours to
rebuild, so anything else found at the path — a link, a FIFO, a socket, a device, a hard link
to some other file — is removed (the name only: a link's target, a hard-linked file's contents
are untouched), a new sidecar created in its place and the removal reported once through
``warn``: a planted link cannot stop a process from starting, nor make it write elsewhere.
Processes already running move to the new file within a second (their audit) or at their next
lock, whichever comes first, as after any deletion of the sidecar. Only what cannot be removed
— a directory, or an entry of another user in a sticky directory — is refused
(:class:`~safe_rotating.exceptions.UnsafeFileError`): a new process cannot start, and each
running one keeps the file it has (they all refuse the same thing, so they still agree on one
lock), the refusal kept in :attr:`SidecarLock.refusal` for the caller to report.
Numbers read from the table are never trusted: anyone who may write the file may write any pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import portalocker

from safe_rotating._common import osfiles as _safefs
from safe_rotating._common.oserror import explain
from safe_rotating.exceptions import LockError, LockTimeout, UnsafeFileError

__all__ = ["DIRTY", "KNOWN", "LAYOUT", "STAGED", "Keeper", "SidecarLock"]

LAYOUT = 2
_MAGIC = b"safe_rot"
_PAGE = 4096
_HEADER = struct.Struct("<QQ8sIIQQQd")  # 64 bytes, see the module docstring
_GENERATION = struct.Struct("<Q")
_MARK = struct.Struct("<8sII")  # magic, layout, reserved at offset 16
_KEEPER = struct.Struct("<QQQ")  # pid, max_bytes, backup_count at offset 32
_HOLDER = struct.Struct("<Q")  # offset 8
_SINCE = struct.Struct("<d")  # offset 56
_DOUBLE = struct.Struct("<d")
_SCHEDULE = struct.Struct("<dQ")  # offset 64: next rollover, signature
_STATE = struct.Struct("<QQQQQQ")  # offset 80: flags, then five counters
_WANTED = 128
_TABLE_END = 136  # bytes of the layout-2 table
KNOWN = 1  # state flag: the counters are a time-named set's (period key, count)
DIRTY = 2  # state flag: a step was in progress
STAGED = 4  # state flag: the counters are a size-rotated set's (see _staging.IndexState)
# How long in all a waiter stays for a holder that is running (see SidecarLock.acquire).
RUNNING_HOLDER_PATIENCE = 5.0
_FIRST_POLL = 0.0001  # seconds; doubled after each failed try ...
_LONGEST_POLL = 0.005  # ... up to this, so a waiter notices a release within ~5 ms
_FLAGS = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
# Pids above this are no process (Linux's pid_max is at most 2**22; a C ``pid_t`` is 32 bits):
# the table is writable by every process that may log, so it may hold any 64-bit number.
_PID_MAX = 2**31 - 1


@dataclass(frozen=True)
class Keeper:
    """Settings a live process registered in the sidecar (the largest ``backupCount`` wins)."""

    pid: int
    max_bytes: int
    backup_count: int


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


class SidecarLock:
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
        self.path = path
        self._what = "the rotation lock file" + (f" of {log_path!r}" if log_path else "")
        self._mode = mode
        self._owner = owner
        self._warn = warn
        self._fd = -1
        self._pid = 0
        self._depth = 0
        self.newer_layout: int | None = None  # set when the table has a layout we do not know
        self.repaired = False  # set when a truncated or foreign table was re-initialised
        # Set while the path holds something we refuse (a link, a FIFO) in place of the file we
        # keep using; cleared once we could move to a proper file at the path again.
        self.refusal: UnsafeFileError | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed) the sidecar in this process. Idempotent within a process."""
        if self._fd >= 0:
            if self._pid == os.getpid():
                return
            self._drop_inherited()
        self._use(self._open_fd())

    def _open_fd(self) -> int:
        """A descriptor on the sidecar at the path, created if missing, its table valid.

        Something else planted at the path is removed and reported (see the module
        docstring); raises :class:`UnsafeFileError` (as is: its message says what to do) for
        what cannot be removed."""
        path = self.path
        try:
            fd, removed = _safefs.open_or_replace(
                path, os.O_RDWR, mode=self._mode, owner=self._owner, role=self._what
            )
        except UnsafeFileError:
            raise
        except OSError as exc:
            raise explain(exc, f"open {self._what},", path) from None
        if removed is not None:
            self._report_removal(removed)
        try:
            if os.fstat(fd).st_size < _TABLE_END:
                self._initialise(fd)
        except OSError as exc:
            os.close(fd)
            raise explain(exc, f"prepare {self._what},", path) from None
        return fd

    def _report_removal(self, removed: str) -> None:
        """Say what was removed: someone who may write the directory put it there."""
        if self._warn is None:
            return
        directory = os.path.dirname(self.path) or "."
        with contextlib.suppress(Exception):
            self._warn(
                f"found {removed} at {self.path!r}, where safe_rotating keeps {self._what}: "
                "removed it (a link's target, a hard-linked file's contents are untouched) and "
                "created a new lock file, which every process writing the log moves to. Someone "
                f"who may write {directory!r} put it there: make sure only trusted users can "
                "write that directory"
            )

    def _use(self, fd: int) -> None:
        self._fd = fd
        self._pid = os.getpid()
        self._depth = 0
        self.refusal = None
        self._check_layout()

    def _move(self) -> bool:
        """The sidecar was deleted or replaced: drop our description (and the lock it may
        hold) and use the file at the path; ``True`` when done.

        If the path now holds something we refuse, keep ours (``False``): every running process
        does the same, so they still share one lock, and :attr:`refusal` says why. Any other
        failure to open the new file is raised, with ours kept as well."""
        try:
            fd = self._open_fd()
        except UnsafeFileError as exc:
            self.refusal = exc
            return False
        self._drop_inherited()
        self._use(fd)
        return True

    def _initialise(self, fd: int) -> None:
        """Write a whole page of real bytes: a valid table, never a hole.

        Two processes may do this at once on a new file; both write the same layout and a
        fresh random generation, so the result is a valid table either way. Writers compare the
        generation only for a change, so a random start also invalidates what anybody cached
        from a table that was truncated under them.
        """
        generation = secrets.randbits(62) + 1
        header = _HEADER.pack(generation, 0, _MAGIC, LAYOUT, 0, 0, 0, 0, 0.0)
        page = header + bytes(_PAGE - len(header))
        written = os.pwrite(fd, page, 0)
        if written != len(page):
            raise OSError(28, "No space left on device")  # ENOSPC: a short write of the page

    def _check_layout(self) -> None:
        magic, layout, _ = _MARK.unpack(self._read(16, _MARK.size))
        if magic != _MAGIC:
            # A table from release 0.1.0 (only generation and holder) or zeros: mark it ours.
            self.newer_layout = None
            self._write(16, _MARK.pack(_MAGIC, LAYOUT, 0))
        elif layout > LAYOUT:
            self.newer_layout = layout
        else:
            self.newer_layout = None
            if layout < LAYOUT:
                # Layout 1 kept the same meaning for offsets 0-63 and zeros after them, which
                # layout 2 reads as "nothing known": upgrading in place is safe, and releases
                # that know only layout 1 and open the file later are told to upgrade.
                self._write(16, _MARK.pack(_MAGIC, LAYOUT, 0))

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            if self._pid == os.getpid() and self._depth:
                self._write_holder(0)
            os.close(fd)  # closing the last descriptor of the description also drops the lock
        self._depth = 0

    def _drop_inherited(self) -> None:
        """In a forked child: drop the parent's open file description (not its lock).

        Closing the child's copy never releases a lock the parent holds: the parent still has
        its own descriptor on the shared description.
        """
        fd, self._fd = self._fd, -1
        self._depth = 0
        with contextlib.suppress(OSError):
            os.close(fd)

    def reopen_after_fork(self) -> None:
        """The fast path of the fork rule, called from ``os.register_at_fork``.

        Correctness never depends on it: :meth:`open` and :meth:`acquire` compare the pid.
        """
        if self._fd < 0:
            return
        self._drop_inherited()
        # Left closed on failure (descriptors exhausted, say): the next use opens it again.
        with contextlib.suppress(OSError):
            self.open()

    def reopen(self) -> None:
        """Drop our description and open the file at the path again (it was replaced)."""
        if self._pid == os.getpid() and self._depth:
            raise RuntimeError(f"reopen of {self.path!r} while holding the lock")
        if self._fd >= 0 and self._pid == os.getpid():
            self._move()  # keeps ours if the path holds something we refuse (see refusal)
            return
        if self._fd >= 0:
            self._drop_inherited()
        self.open()

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    # -- shared table ----------------------------------------------------------------------------
    def _read(self, offset: int, size: int) -> bytes:
        data = os.pread(self._fd, size, offset)
        return data if len(data) == size else bytes(size)

    def _write(self, offset: int, data: bytes) -> None:
        if self.newer_layout is not None and offset >= 16:
            return  # never write into a table whose layout we do not know
        os.pwrite(self._fd, data, offset)

    def read_generation(self) -> bytes:
        """The generation as raw bytes — the hot path's only look at the table.

        A truncated table reads short (``b""``), which differs from any cached value, so the
        caller takes its slow path and :meth:`validate` repairs the table.
        """
        return os.pread(self._fd, 8, 0)

    @property
    def generation(self) -> int:
        assert self._fd >= 0, "SidecarLock.open() was not called"
        return int(_GENERATION.unpack(self._read(0, 8))[0])

    def bump_generation(self) -> int:
        """Announce a rotation. Only call while holding the lock."""
        assert self._depth > 0, "bump_generation() without the lock"
        new = (self.generation + 1) & 0xFFFF_FFFF_FFFF_FFFF
        os.pwrite(self._fd, _GENERATION.pack(new), 0)
        return new

    def holder_pid(self) -> int | None:
        if self._fd < 0:
            return None
        pid = int(_HOLDER.unpack(self._read(8, 8))[0])
        return pid or None

    def held_since(self) -> float | None:
        """Wall-clock time at which the current holder took the lock, if it recorded it."""
        if self._fd < 0 or self.newer_layout is not None:
            return None
        since = float(_SINCE.unpack(self._read(56, 8))[0])
        return since or None

    def _write_holder(self, pid: int) -> None:
        os.pwrite(self._fd, _HOLDER.pack(pid), 8)
        self._write(56, _SINCE.pack(time.time() if pid else 0.0))

    def validate(self) -> bool:
        """Is the table intact? If it was truncated, re-initialise it (under the lock).

        Returns ``True`` when the table was repaired. Contention is not an error here: if the lock
        is busy the holder will find the same damage, and we look again next time.
        """
        self.open()
        if os.fstat(self._fd).st_size >= _TABLE_END:
            return False
        try:
            if not self.acquire(0.05, patience=0.0):
                return False
        except LockTimeout:
            return False
        try:
            if os.fstat(self._fd).st_size >= _TABLE_END:
                return False  # somebody else repaired it while we waited
            self._initialise(self._fd)
            self._write_holder(os.getpid())
            self.newer_layout = None
            self.repaired = True
            return True
        finally:
            self.release()

    # -- layout 2: schedule, backup-set state, waiters ---------------------------------------------
    @property
    def extended(self) -> bool:
        """Does this table carry the layout-2 fields (not a newer layout we do not know)?"""
        return self._fd >= 0 and self.newer_layout is None

    def read_head(self) -> bytes:
        """Generation and schedule in one ``pread`` (72 bytes; short if the table was cut)."""
        return os.pread(self._fd, 72, 0)

    def schedule(self) -> tuple[float, int]:
        """The shared next rollover time (0.0: none yet) and the signature that set it."""
        if not self.extended:
            return 0.0, 0
        at, signature = _SCHEDULE.unpack(self._read(64, _SCHEDULE.size))
        return float(at), int(signature)

    def set_schedule(self, at: float, signature: int) -> None:
        """Record the next rollover time. Only call while holding the lock."""
        assert self._depth > 0, "set_schedule() without the lock"
        self._write(64, _SCHEDULE.pack(at, signature))

    def state(self) -> tuple[int, tuple[int, int, int, int, int]]:
        """Flags (:data:`KNOWN`, :data:`DIRTY`) and the five counters of the backup set."""
        if not self.extended:
            return 0, (0, 0, 0, 0, 0)
        flags, *counters = _STATE.unpack(self._read(80, _STATE.size))
        a, b, c, d, e = counters
        return int(flags), (a, b, c, d, e)

    def set_state(self, flags: int, counters: tuple[int, int, int, int, int]) -> None:
        """Record the backup set (one ``pwrite``). Only call while holding the lock."""
        assert self._depth > 0, "set_state() without the lock"
        self._write(80, _STATE.pack(flags, *counters))

    def set_flags(self, flags: int) -> None:
        assert self._depth > 0, "set_flags() without the lock"
        self._write(80, struct.pack("<Q", flags))

    def wanted_since(self) -> float:
        """Since when a writer waits for the lock (0.0: nobody)."""
        if not self.extended:
            return 0.0
        return float(_DOUBLE.unpack(self._read(_WANTED, 8))[0])

    def _want(self, since: float) -> None:
        with contextlib.suppress(OSError):
            self._write(_WANTED, _DOUBLE.pack(since))

    # -- settings --------------------------------------------------------------------------------
    def keeper(self) -> Keeper | None:
        """The live process with the largest ``backupCount`` that registered, if any."""
        if self._fd < 0 or self.newer_layout is not None:
            return None
        pid, max_bytes, backup_count = _KEEPER.unpack(self._read(32, _KEEPER.size))
        if not pid_alive(pid):
            return None
        return Keeper(pid, max_bytes, backup_count)

    def register(self, max_bytes: int, backup_count: int) -> Keeper | None:
        """Record our settings if no live process keeps more backups; return the other keeper.

        Returns the keeper found *before* registering when its settings differ from ours, so the
        caller can warn. Best effort: skipped when the lock is busy.
        """
        try:
            if not self.acquire(0.05, patience=0.0):
                return None
        except LockTimeout:
            return None
        try:
            other = self.keeper()
            if other is None or other.pid == os.getpid() or other.backup_count <= backup_count:
                self._write(32, _KEEPER.pack(os.getpid(), max_bytes, backup_count))
            if other is not None and (other.max_bytes, other.backup_count) != (
                max_bytes,
                backup_count,
            ):
                return other
            return None
        finally:
            self.release()

    # -- locking ---------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._depth > 0 and self._pid == os.getpid()

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
                portalocker.lock(self._fd, _FLAGS)
            except portalocker.AlreadyLocked:
                pass  # contention: somebody else holds it
            except portalocker.LockException as exc:
                raise LockError(f"cannot lock {self.path!r}: {exc}") from exc
            else:
                try:  # deleted or replaced: move to the file at the path, and lock that one
                    moved = not self.names_its_file() and self._move()
                except BaseException:
                    with contextlib.suppress(portalocker.LockException, OSError):
                        portalocker.unlock(self._fd)
                    raise
                if moved:
                    continue
                self._depth = 1
                # A full disk cannot stop the lock; the holder is just unnamed.
                with contextlib.suppress(OSError):
                    self._write_holder(os.getpid())
                if announced:
                    self._want(0.0)
                return True
            if announce and not announced and self.extended:
                announced = True
                self._want(time.time())
            if abandon is not None and abandon():
                if announced:
                    self._want(0.0)
                return False
            now = time.monotonic()
            if now >= deadline and now < last_chance:
                holder = self.holder_pid()
                if holder not in (None, os.getpid()) and process_running(holder):
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
            portalocker.unlock(self._fd)
        except portalocker.LockException as exc:
            raise LockError(f"cannot unlock {self.path!r}: {exc}") from exc
