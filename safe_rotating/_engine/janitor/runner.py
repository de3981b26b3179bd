"""The janitor of one log file: runs its jobs in a background thread, one process at a time.

Only one process works at a time: the janitor lock is a POSIX record lock (``lockf``) on
``.<base>.janitor`` — owned by the process, so a child forked while the parent's janitor runs
never inherits it — plus a mutex for the threads of one process. A process that finds it busy
leaves the work to the holder, which looks again for new rotations before it stops.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable

from safe_rotating._common import osfiles as _safefs
from safe_rotating._engine.compress import Compression
from safe_rotating._engine.janitor.compression import Compressor
from safe_rotating._engine.janitor.context import JobContext
from safe_rotating._engine.janitor.listing import Listing
from safe_rotating._engine.janitor.renumbering import Renumbering
from safe_rotating._engine.janitor.retention import Retainer
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.lock import SidecarLock
from safe_rotating._engine.plan import Retention
from safe_rotating._engine.schedule import Schedule

__all__ = ["Janitor", "janitor_path"]

_MUTEXES: dict[str, threading.Lock] = {}
_MUTEXES_GUARD = threading.Lock()
# A pass looks only at backups newer than those it found settled (compressed, or failed); a
# full look, which also clears temporary files a crashed janitor left, runs this often.
_FULL_SCAN_EVERY = 60.0


def _reset_after_fork() -> None:
    global _MUTEXES_GUARD
    _MUTEXES.clear()  # a parent's thread may have held one: the child starts afresh
    _MUTEXES_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _mutex(path: str) -> threading.Lock:
    with _MUTEXES_GUARD:
        return _MUTEXES.setdefault(path, threading.Lock())


def janitor_path(lock_path: str) -> str:
    """``.app.log.lock`` -> ``.app.log.janitor``."""
    stem = lock_path[: -len(".lock")] if lock_path.endswith(".lock") else lock_path
    return stem + ".janitor"


class Janitor:
    """Renumbering, compression and retention for one log file; see the package docstring."""

    def __init__(
        self,
        path: str,
        lock_path: str,
        *,
        schedule: Schedule | None,
        name_for: Callable[[str], str],
        retention: Retention,
        compression: Compression | None,
        chmod: int | None = None,
        owner: tuple[int, int] | None = None,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.base = os.path.basename(path)
        self._schedule = schedule
        self.retention = retention
        self.compression = compression
        self._lock = SidecarLock(lock_path, chmod, owner, log_path=path, warn=warn)
        self._janitor_path = janitor_path(lock_path)
        self._chmod = chmod
        self._owner = owner
        self._context = JobContext(path, self._lock, warn)
        staged = None if schedule is not None else StagedSet(path, name_for)
        self._listing = Listing(self._context, schedule, staged)
        self._renumbering = Renumbering(self._context, staged, self._listing)
        self._retainer = Retainer(self._context, retention, self._listing, staged, clock)
        self._compressor = Compressor(
            self._context,
            compression,
            self._listing,
            staged,
            chmod=chmod,
            owner=owner,
            clock=clock,
            closing=self._is_closing,
        )
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._state = threading.Lock()
        self._again = False
        self._closing = False
        self._wakeup = threading.Event()  # set by close(): a sleeping thread stops at once
        self._full_scan_at = -_FULL_SCAN_EVERY  # monotonic time of the last full pass

    @property
    def needed(self) -> bool:
        """Is there any work for a janitor with these settings (beyond renumbering)?"""
        timed_count = self._schedule is not None and self.retention.count > 0
        return bool(self.compression or self.retention.needs_sizes or timed_count)

    def doomed(self) -> list[str]:
        """The backups retention would delete now, oldest first."""
        return self._retainer.doomed()

    # -- the background thread -------------------------------------------------------------------
    def kick(self) -> None:
        """Make sure a pass runs soon, in a background thread of this process."""
        with self._state:
            if self._closing:
                return
            alive = (
                self._thread is not None
                and self._thread_pid == os.getpid()
                and self._thread.is_alive()
            )
            if alive:
                self._again = True
                return
            self._again = False
            if self._thread_pid != os.getpid():
                self._wakeup = threading.Event()  # never one inherited through a fork
            thread = threading.Thread(
                target=self._loop, name=f"safe_rotating janitor {self.base}", daemon=True
            )
            self._thread, self._thread_pid = thread, os.getpid()
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: the next process does the work
            self._thread = None

    def _loop(self) -> None:
        try:
            while True:
                wait = self.run(compress=True)
                with self._state:
                    if self._closing:
                        return
                    again, self._again = self._again, False
                if wait is None:  # busy: the holder looks for new work before it stops
                    return
                if wait > 0:
                    self._wakeup.wait(min(wait, 1.0))
                elif not again:
                    return
        except Exception as exc:  # never let a background problem pass silently
            self._context.warn_once("thread", f"background work on {self.path!r} stopped: {exc!r}")

    def _is_closing(self) -> bool:
        with self._state:
            return self._closing

    def close(self, timeout: float = 5.0) -> None:
        """Let a running pass finish its current step, bring the names back to the stdlib's,
        then apply retention once more."""
        with self._state:
            self._closing = True
            thread = self._thread if self._thread_pid == os.getpid() else None
        if thread is None:
            self._wakeup = threading.Event()  # an inherited one may have been held at a fork
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._full_scan_at = -_FULL_SCAN_EVERY  # look at everything once more
        with contextlib.suppress(Exception):
            self._renumbering.renumber()
        with contextlib.suppress(Exception):
            self.run(compress=False)
        self._lock.close()
        with self._state:
            self._closing = False
            self._wakeup = threading.Event()

    # -- one pass --------------------------------------------------------------------------------
    def run(self, compress: bool = True) -> float | None:
        """One pass, if no other janitor is at work: ``None`` if busy, else seconds until a
        backup becomes old enough to compress (0.0: nothing waits)."""
        mutex = _mutex(self._janitor_path)
        if not mutex.acquire(blocking=False):
            return None
        try:
            fd = self._open_janitor_lock()
            if fd < 0:
                return None
            try:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EAGAIN):
                        return None
                    raise
                return self._work(compress)
            finally:
                os.close(fd)  # also releases the record lock
        finally:
            mutex.release()

    def _open_janitor_lock(self) -> int:
        """The janitor lock file, or -1 (reported once) when it cannot be used: then no
        background work is done here, and writers never notice."""
        try:
            fd, _ = _safefs.open_or_create(
                self._janitor_path,
                os.O_RDWR,
                mode=self._chmod,
                owner=self._owner,
                role="the janitor lock file",
            )
        except OSError as exc:
            self._context.warn_once(
                "janitor-lock",
                f"cannot open {self._janitor_path!r}: {exc}. Compression and retention of "
                f"{self.path!r} are not done by this process until this is resolved",
            )
            return -1
        return fd

    def _work(self, compress: bool) -> float:
        self._lock.open()
        renumbering = self._renumbering
        busy = renumbering.rotating_for() if compress else 0.0  # close() renumbers at once
        if not busy:
            renumbering.renumber()
        now = time.monotonic()
        full = now - self._full_scan_at >= _FULL_SCAN_EVERY
        if full:
            self._full_scan_at = now
            self._listing.settled = -1  # worked out again from everything
            self._compressor.remove_temporaries()
        listed = self._listing.backups(None if full else self._listing.settled)
        self._compressor.resolve_pairs(listed)
        self._retainer.apply()
        wait = self._compressor.compress_all(listed) if compress and self.compression else 0.0
        if busy:
            wait = busy if not wait else min(wait, busy)
        return wait
