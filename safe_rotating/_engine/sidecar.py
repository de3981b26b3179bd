"""The rotation lock file as one process has it open: safely opened, moved, and fork-aware.

The sidecar (``.<logname>.lock`` beside the log, or in ``lock_file_directory``) is never the log
itself, so a rename of the log never fights the lock; its table is described in
:mod:`safe_rotating._engine.locktable`, its locking in :mod:`safe_rotating._engine.lock`.

``flock`` locks belong to an open file description, which ``fork`` shares between parent and
child. The file remembers the pid that opened it and takes a fresh description whenever it is
used from another process, so a child forked in C (uWSGI, embedding hosts), where Python's
at-fork hooks never run, still gets its own lock. The pid is the cached one of
:mod:`safe_rotating._common.forksafe`, which every kind of fork resets. A sidecar deleted or
replaced under running processes is noticed the next time the lock is taken (the path no longer
names the locked file) and every process moves to the file at the path.

The sidecar lives in a directory that other users may write (a group-shared log directory), so
it is opened through :mod:`safe_rotating._common.osfiles`: never through a symbolic link, a
regular file with one name only, created 0600 and given its mode and owner once checked. Its
contents are ours to rebuild, so anything else found at the path — a link, a FIFO, a socket, a
device, a hard link to some other file — is removed (the name only: a link's target, a
hard-linked file's contents are untouched), a new sidecar created in its place and the removal
reported once through ``warn``: a planted link cannot stop a process from starting, nor make it
write elsewhere. Processes already running move to the new file within a second (their audit)
or at their next lock, whichever comes first, as after any deletion of the sidecar. Only what
cannot be removed — a directory, or an entry of another user in a sticky directory — is refused
(:class:`~safe_rotating.exceptions.UnsafeFileError`): a new process cannot start, and each
running one keeps the file it has (they all refuse the same thing, so they still agree on one
lock), the refusal kept in :attr:`SidecarFile.refusal` for the caller to report.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from safe_rotating._common import osfiles as _safefs
from safe_rotating._common.forksafe import current_pid
from safe_rotating._common.oserror import explain
from safe_rotating._engine.locktable import TABLE_END, LockTable, initialise
from safe_rotating.exceptions import UnsafeFileError

__all__ = ["SidecarFile"]


class SidecarFile:
    """The sidecar open in this process, with its table's layout; the base of the lock."""

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
        self._depth = 0  # how often this process holds the lock: a new description holds none
        self._table = LockTable()
        # Set while the path holds something we refuse (a link, a FIFO) in place of the file we
        # keep using; cleared once we could move to a proper file at the path again.
        self.refusal: UnsafeFileError | None = None

    def open(self) -> None:
        """Open (creating if needed) the sidecar in this process. Idempotent within a process."""
        if self._fd >= 0:
            if self._pid == current_pid():
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
            if os.fstat(fd).st_size < TABLE_END:
                initialise(fd)
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
        self._pid = current_pid()
        self._depth = 0
        self.refusal = None
        self._table.check_layout(fd)

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

        Correctness never depends on it: :meth:`open` and the lock's ``acquire`` compare the
        pid.
        """
        if self._fd < 0:
            return
        self._drop_inherited()
        # Left closed on failure (descriptors exhausted, say): the next use opens it again.
        with contextlib.suppress(OSError):
            self.open()

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    @property
    def newer_layout(self) -> int | None:
        """The layout of the table when it is newer than ours (only the lock, the generation
        and the holder are used then), else ``None``."""
        return self._table.newer_layout

    @property
    def extended(self) -> bool:
        """Does this table carry the layout-2 fields (not a newer layout we do not know)?"""
        return self._fd >= 0 and self._table.newer_layout is None
