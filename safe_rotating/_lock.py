"""The inter-process rotation lock: an exclusive portalocker lock on a sidecar file.

The sidecar (``.<logname>.lock`` beside the log, or in ``lock_file_directory``) is never the log
itself, so a rename of the log never fights the lock. Its first page is also mapped into every
writer as a tiny shared table:

* slot 0, the *generation*: bumped by the rotating process right after it moved the current file
  away. A writer compares it with the generation it opened at before every record — a memory read,
  no system call — and reopens the path when it changed.
* slot 1, the *holder*: the pid of the process holding the lock, so a timeout can name it.

``flock`` locks belong to an open file description, which ``fork`` shares between parent and
child. :meth:`SidecarLock.reopen_after_fork` gives a child its own description (and therefore its
own lock); the handler calls it from an ``os.register_at_fork`` hook.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable

import portalocker

from ._oserror import explain
from .exceptions import LockError, LockTimeout

__all__ = ["SidecarLock"]

_PAGE = 4096
_GENERATION = 0
_HOLDER = 1
_FIRST_POLL = 0.0001  # seconds; doubled after each failed try ...
_LONGEST_POLL = 0.005  # ... up to this, so a waiter notices a release within ~5 ms
_FLAGS = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING


class SidecarLock:
    """An exclusive, bounded-wait lock on ``path`` plus the shared generation counter.

    Not thread-safe by itself: the owning handler serialises its threads with its own lock.
    ``acquire`` is re-entrant within one owner (a rotator that logs must not unlock its caller).
    """

    def __init__(self, path: str, mode: int = 0o644) -> None:
        self.path = path
        self._mode = mode
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._slots: memoryview | None = None
        self._depth = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed) and map the sidecar. Idempotent."""
        if self._fd >= 0:
            return
        try:
            fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), self._mode
            )
        except OSError as exc:
            raise explain(exc, "open the rotation lock file", self.path, LockError) from None
        try:
            if os.fstat(fd).st_size < _PAGE:
                # Growing only; every process grows it to the same size, zero-filled.
                os.ftruncate(fd, _PAGE)
            mapped = mmap.mmap(fd, _PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            os.close(fd)
            raise explain(exc, "map the rotation lock file", self.path, LockError) from None
        self._fd = fd
        self._map = mapped
        self._slots = memoryview(mapped).cast("Q")
        self._depth = 0

    def close(self) -> None:
        if self._slots is not None:
            self._slots.release()
            self._slots = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the last descriptor of the description also drops the lock
        self._depth = 0

    def reopen_after_fork(self) -> None:
        """In a forked child: drop the parent's open file description, take a fresh one.

        Closing the child's copy never releases a lock the parent holds: the parent still has its
        own descriptor on the shared description.
        """
        if self._fd < 0:
            return
        self.close()
        self.open()

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    # -- shared table ----------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        slots = self._slots
        assert slots is not None, "SidecarLock.open() was not called"
        return int(slots[_GENERATION])

    def bump_generation(self) -> int:
        """Announce a rotation. Only call while holding the lock."""
        slots = self._slots
        assert slots is not None, "SidecarLock.open() was not called"
        assert self._depth > 0, "bump_generation() without the lock"
        new = int(slots[_GENERATION]) + 1
        slots[_GENERATION] = new
        return new

    def holder_pid(self) -> int | None:
        slots = self._slots
        if slots is None:
            return None
        pid = int(slots[_HOLDER])
        return pid or None

    # -- locking ---------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self, timeout: float, abandon: Callable[[], bool] | None = None) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds.

        Returns ``True`` once held. Returns ``False`` without the lock if ``abandon()`` became true
        while waiting (the caller no longer needs it, e.g. another process already rotated).
        Raises :class:`LockTimeout` naming the holder when the bound runs out, and
        :class:`LockError` for failures that are not contention.
        """
        self.open()
        if self._depth:
            self._depth += 1
            return True
        deadline = time.monotonic() + timeout
        pause = _FIRST_POLL
        while True:
            try:
                portalocker.lock(self._fd, _FLAGS)
            except portalocker.AlreadyLocked:
                pass  # contention: somebody else holds it
            except portalocker.LockException as exc:
                raise LockError(f"cannot lock {self.path!r}: {exc}") from exc
            else:
                self._depth = 1
                assert self._slots is not None
                self._slots[_HOLDER] = os.getpid()
                return True
            if abandon is not None and abandon():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(self.path, timeout, self.holder_pid())
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LONGEST_POLL)

    def release(self) -> None:
        if self._depth == 0:
            raise RuntimeError(f"release of {self.path!r} that is not held")
        self._depth -= 1
        if self._depth:
            return
        assert self._slots is not None
        self._slots[_HOLDER] = 0
        try:
            portalocker.unlock(self._fd)
        except portalocker.LockException as exc:
            raise LockError(f"cannot unlock {self.path!r}: {exc}") from exc
