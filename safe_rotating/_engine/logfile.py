"""The rotation engine: one log file shared by many processes, and nothing of ``logging``.

:class:`LogFile` opens and follows the current file, appends whole records (:meth:`LogFile.append`,
one ``write``; :meth:`LogFile.append_batch`, one ``write`` for many), rotates under the sidecar lock
and repairs what a crashed rotation left. Every writer of the package is a thin facade over it:
``SafeRotatingFileHandler`` (format, encode, ``LogFile.append``, ``handleError``), and the server's
single writer. A fix in rotation is therefore a fix everywhere, and a file may be shared by
handlers in many processes and the server at once.

How a record is written (:meth:`LogFile.append`):

1. At most once a millisecond (:data:`CHECK_EVERY`), and always after an idle spell, read the
   shared rotation generation from the sidecar (one ``pread``) and reopen the path if another
   process rotated.
2. If the last known end of file says the record would not fit, take the slow path: lock, re-read
   the truth (``stat`` of the path vs ``fstat`` of our descriptor, real size), and rotate only if
   the current file really is full.
3. One ``write`` of the whole record on an ``O_APPEND`` descriptor — atomic on a local file system,
   so lines never tear or interleave — then ``lseek`` to learn where it ended.
4. Keep the record's bytes until the next check. If that check finds that the file they went to
   has since been rotated away *and removed* (``st_nlink == 0``: ``backupCount`` rotations within a
   millisecond, or a writer stalled across them), they are written again into the current file.
   If the file is now full, rotate at once.

Records therefore never wait for the inter-process lock; only a writer that finds the file full
does, and for a short, bounded time. While several processes write, a file may exceed
``max_bytes`` by at most one record (or one batch) per other concurrently writing process.

Once a second (:data:`AUDIT_EVERY`) a writer also checks that the paths still name the files it
has open, so a log or lock file deleted or replaced under it is followed, not written into
forever.

The directory may be writable by users we do not trust (README's "Several users"). The first
open takes the path as configured, as ``FileHandler`` does: a symbolic link there is followed —
if it belongs to root, to this process's user or to the directory's owner (the kernel's
``protected_symlinks`` rule, applied whatever the system's setting; a neighbour's link is
refused like one planted later), and a pipe or device (``/dev/stdout``) is opened as it is.
Every later open — after a rotation, ours or another process's, or of a replaced or deleted
file — creates the file ``O_EXCL`` 0600 (then gives it its mode and owner) or opens it without
following a link, a regular file with one name only (:mod:`._safefs`). A link, a FIFO or a
hard link that appears at the path is refused and reported once (``handleError``): records
keep going to the file this process had open while it still has a name (it was rotated or
moved away), else they are counted and reported as lost; a new file is opened as soon as the
path is clear.

Not thread-safe: a facade serialises its callers (the handler's lock, the server's one task).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from safe_rotating._common import osfiles as _safefs
from safe_rotating._common.oserror import _user
from safe_rotating._common.oserror import explain as _explain
from safe_rotating._engine.compress import Compression
from safe_rotating._engine.janitor.names import move_any, remove_any, taken
from safe_rotating._engine.janitor.runner import Janitor
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.lock import SidecarLock, path_names
from safe_rotating._engine.locktable import KNOWN, LAYOUT
from safe_rotating._engine.plan import (
    Remove,
    Rename,
    Retention,
    RotateCurrent,
    SizePolicy,
    count_backups,
    plan_rollover,
)
from safe_rotating._engine.schedule import Schedule, parse_timed_name
from safe_rotating._engine.staging import INLINE
from safe_rotating._engine.stats import HandlerStats, WaitHistogram
from safe_rotating.exceptions import LockTimeout, RotationError, UnsafeFileError

__all__ = ["AUDIT_EVERY", "CHECK_EVERY", "LogFile", "Records"]

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_MOST_LINKS = 40  # links followed one after the other, as the kernel's MAXSYMLINKS
_PROC_FD = re.compile(r"/proc/[0-9]+(?:/task/[0-9]+)?/fd")  # a process's open files

# More files in one period than this means a count in the lock table nobody wrote honestly.
_MOST_PERIOD_FILES = 1 << 31

# Read access too, for one look at a file's last byte per batch (see _ends_a_line); a file we
# may only write is opened write-only.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_WRITE_ONLY = ~(os.O_RDWR | os.O_WRONLY)
# Seconds between two looks at the shared generation (one pread): a rotation done by another
# process is followed within this long, and a record after an idle spell always looks first.
CHECK_EVERY = 0.001
AUDIT_EVERY = 1.0  # seconds between checks that the paths still name the files we hold open
# A rotation that finds another process rotated while it waited, and the new file already full,
# tries again on that file, at most this many times in all.
_FOLLOWS = 8
# A file found ending inside a line is looked at again after this long before it is taken for
# the tail a killed process left (rather than another process's write under way).
_TAIL_SETTLE = 0.002
_REMIND_EVERY = 60.0  # seconds between reminders while rotation keeps failing
# A lock holder that is running (not stopped, not stuck in I/O) but slow — a loaded machine —
# delays rotation quietly for this long before it is reported; writers never wait for it.
_SLOW_HOLDER_GRACE = 5.0
_monotonic = time.monotonic

# Files open in this process. The at-fork hook is the fast path only: every use of the lock
# compares the pid, because a fork done in C (uWSGI, embedding hosts) never runs the hook.
_LIVE: weakref.WeakSet[LogFile] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for log_file in list(_LIVE):
        log_file.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _trusted_end(path: str) -> tuple[str, os.stat_result | None]:
    """Follow the links at ``path`` one by one to the name the last one gives: ``(name, its
    lstat)``, ``None`` when nothing is there (a file to create).

    Each link on the way, and a FIFO or socket at the end, must belong to root, to this
    process's effective user or to the owner of the directory holding it — the rule of the
    kernel's ``protected_symlinks`` and ``protected_fifos``, which a neighbour cannot meet —
    else :class:`UnsafeFileError`. Not checked: a regular file (it may belong to anyone, as in
    the stdlib), a device (only root makes device nodes: a neighbour can only link to one, and
    that link is checked — a terminal belongs to whoever logged in, say the user who ran
    ``sudo``), and what a link in ``/proc/<pid>/fd`` leads to (``/dev/stdout``: a file the
    process already has open, whoever owns it). Directories on the way are not checked either:
    keeping the parents of a log directory unwritable to others is the administrator's part.
    """
    me = os.geteuid()
    held = False  # reached through /proc/<pid>/fd
    for _ in range(_MOST_LINKS + 1):
        try:
            here = os.lstat(path)
        except FileNotFoundError:
            return path, None
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        mode = here.st_mode
        link = stat.S_ISLNK(mode)
        directory = os.path.dirname(path) or "."
        if link or (not held and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))):
            try:
                directory_owner = os.stat(directory).st_uid
            except OSError:
                directory_owner = 0  # unknown: root and ourselves only
            if here.st_uid not in (0, me, directory_owner):
                raise _untrusted(path, here, directory_owner)
        if not link:
            return path, here
        held = held or _PROC_FD.fullmatch(os.path.realpath(directory)) is not None
        try:
            path = os.path.join(directory, os.readlink(path))
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
    raise UnsafeFileError(
        errno.ELOOP, f"cannot open the log file {path!r}: more than {_MOST_LINKS} links in a row"
    )


def _untrusted(path: str, here: os.stat_result, directory_owner: int) -> UnsafeFileError:
    what = _safefs.what_is_at(path, here)
    owner = _user(here.st_uid)
    return UnsafeFileError(
        errno.ELOOP if stat.S_ISLNK(here.st_mode) else errno.EACCES,
        f"refusing to open the log file through {path!r}: it is {what} owned by {owner}, and a "
        "link (or a named pipe) at a log path is used only when it belongs to root, to "
        f"the user this process runs as ({_user(os.geteuid())}) or to the owner of its directory "
        f"({_user(directory_owner)}), as the kernel's protected_symlinks rule says: anyone else "
        "who may write the directory could have planted it to make this process write, or "
        "create, a file elsewhere; remove it (or have one of those users make it), and make sure "
        "only trusted users can write the directory",
    )


def _same_name(path: str) -> str:
    return path


def _rename(source: str, dest: str) -> None:
    os.rename(source, dest)


@dataclass
class _RotationTrouble:
    """A run of failed rotations (stuck lock holder, failing rename): records are still written."""

    started: float
    attempts: int = 1
    reported: float = 0.0


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
        self.lock_path = lock_path or os.path.join(
            os.path.dirname(path), "." + os.path.basename(path) + ".lock"
        )
        self._chmod = chmod
        self._owner = owner
        self._newline = newline
        self._rotation_name = name_for
        self._rotate = rotate
        self._warn = warn
        # A time-rotated file keeps every backup when backup_count is 0, and still rotates at
        # max_bytes: its size rule needs a non-zero count to be enabled.
        self._policy = SizePolicy(max_bytes, max(backup_count, 1 if schedule else 0))
        self._schedule = schedule
        self._clock = clock
        # The shared next rollover time as this process last read it (math.inf: no schedule).
        self._rollover_at = math.inf
        self._local_at = 0.0  # the schedule kept here when the table cannot hold it
        self._retention = retention or Retention(count=backup_count)
        self._compression = compression
        janitor = Janitor(
            path,
            self.lock_path,
            schedule=schedule,
            name_for=name_for,
            retention=self._retention,
            compression=compression,
            chmod=chmod,
            owner=owner,
            warn=warn,
            clock=clock,
        )
        self._janitor = janitor
        self._staged = None if schedule is not None else StagedSet(path, name_for)
        self._rotated = False  # a rotation was done here since the janitor was last woken
        self._staged_busy = False  # our last rotation left backups to renumber
        self._last_write = 0.0  # monotonic time of our last append
        self._lock = SidecarLock(self.lock_path, chmod, owner, log_path=path, warn=warn)
        self._fd = -1
        self._gen = b""
        self._end = 0
        self._next_check = 0.0
        self._next_audit = 0.0
        self._unconfirmed: list[bytes] = []  # written since the last check, see check()
        self._rewrite = b""  # of those, the ones whose file was removed: to write again
        self._registered_pid = 0
        self._truncate_next_open = truncate
        self._torn = False  # the last record was cut short: the next one starts a new line
        self._glue = False  # the open file ends inside a line another process left cut short
        self._own_end = -1  # where our last batch ended the open file (-1: unknown)
        self._trouble: _RotationTrouble | None = None
        self._warned: set[str] = set()
        self._opened = False  # the path was opened once: from now on it must be a plain file
        # A link at the path at the first open: its text, and the file it led to then.
        self._configured: tuple[str, str] | None = None
        # What the first open opened through the path's links (``/dev/stdout``: a pipe, a
        # terminal, a file the process has open): its (st_dev, st_ino).
        self._special: tuple[int, int] | None = None
        # The path holds a link or FIFO we refuse while we write to the file we had (reported
        # once, then None again when a proper file is opened), and the lock's refusal, told.
        self._refusal: UnsafeFileError | None = None
        self._refusal_told = False
        self._refused_as: str | None = None  # what was found, to tell a new episode
        self._lock_refusal_told = False
        self._unsafe = False  # either refusal is set or was: _news has something to look at
        self._reset_counters()

    def _reset_counters(self) -> None:
        """The counters behind ``stats()``: plain numbers, changed under the handler's lock."""
        self.rotations = 0  # rotations done by this process
        self.rotations_seen = 0  # rotations by other processes that this one followed
        self.lock_waits = WaitHistogram()  # how long each rotation waited for the lock
        self.largest_overshoot = 0  # the most bytes past max_bytes seen in the current file

    def stats(self) -> HandlerStats:
        """The engine's counters (``records``, ``bytes`` and the queue are the callers')."""
        return HandlerStats(
            rotations=self.rotations,
            rotations_seen=self.rotations_seen,
            lock_waits=self.lock_waits.summary(),
            largest_overshoot=self.largest_overshoot,
        )

    @property
    def lock(self) -> SidecarLock:
        return self._lock

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    @property
    def scheduled(self) -> bool:
        """Does this file rotate by time?"""
        return self._schedule is not None

    @property
    def rollover_at(self) -> float:
        """The next time-based rollover as this process knows it (``inf`` without a schedule)."""
        if self._schedule is not None and self._fd < 0:
            self._open_current()
        return self._rollover_at

    def files_to_delete(self) -> list[str]:
        """The backups retention would delete now, oldest first."""
        return self._janitor.doomed()

    def open(self) -> None:
        """Open the current file (and the lock) now; ``append`` does it when needed."""
        if self._fd < 0:
            self._open_current()

    def _create_flags(self) -> int:
        flags = _OPEN_FLAGS | os.O_CREAT
        if self._truncate_next_open:
            flags |= os.O_TRUNC
        return flags

    @staticmethod
    def _os_open(path: str, flags: int, mode: int) -> int:
        """Read-write if allowed (for :meth:`_ends_a_line`), else write-only (mode 0o220)."""
        try:
            return os.open(path, flags, mode)
        except PermissionError:
            return os.open(path, flags & _WRITE_ONLY | os.O_WRONLY, mode)

    def _open_path(self) -> int:
        """Open the log file at the path, creating it if missing.

        The first open takes the path as configured (:meth:`_open_configured`). Later, a link
        found there stays trusted while the path holds a link with the same text: then the file
        it led to at the first open is opened again (never through the link itself, so swapping
        links in between gains nothing); and a pipe or device opened at the first open
        (``/dev/stdout``) is opened again while the path still leads to that very one.
        Everything else goes through :mod:`._safefs`: a regular file with one name only.
        Raises :class:`UnsafeFileError` for a link or anything but such a file at the path.
        """
        path = self.path
        flags = self._create_flags()
        try:
            here = os.lstat(path)
        except FileNotFoundError:
            here = None
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        if not self._opened:
            if here is not None and not stat.S_ISREG(here.st_mode):
                fd = self._open_configured(path, flags)
            else:  # as configured: a file with other names too is the stdlib's to open
                fd = self._open_plain(path, flags, links=None)
            self._opened = True
            return fd
        if here is not None and not stat.S_ISREG(here.st_mode):
            if self._special is not None:
                with contextlib.suppress(OSError):
                    now = os.stat(path)
                    if (now.st_dev, now.st_ino) == self._special:
                        return self._open_configured(path, flags)
            configured = self._configured
            if configured is not None and stat.S_ISLNK(here.st_mode):
                with contextlib.suppress(OSError):
                    if os.readlink(path) == configured[0]:
                        path = configured[1]
        return self._open_plain(path, flags)

    def _open_configured(self, path: str, flags: int) -> int:
        """The first open of a path that holds a link, or anything but a regular file.

        The rule of the kernel's ``protected_symlinks`` (and ``protected_fifos``), whatever the
        system's settings: every link on the way, and a FIFO at its end, must belong to root,
        to this process's user or to the owner of its directory (:func:`_trusted_end`) — else
        anyone who may write the directory could plant ``app.log -> /etc/…`` before a process
        starts and have it write there, or create a file there with ``chmod``. Then:

        * a pipe, terminal or other device (``/dev/stdout``, ``/dev/null``) is opened through
          the path, as ``FileHandler`` would — never created nor truncated — and must be the one
          looked at; later opens do the same while the path leads to that very one;
        * a regular or missing file at the end of the links is opened, or created with
          ``chmod``/``owner``, right there without following a link; later opens go back to it
          while the path holds the same link (see :meth:`_open_path`).
        """
        try:
            target: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            target = None  # a dangling link: its target is created, once trusted
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        end, last = _trusted_end(path)
        if target is not None and (
            not stat.S_ISREG(target.st_mode)
            or last is None
            or (last.st_dev, last.st_ino) != (target.st_dev, target.st_ino)
        ):
            # A pipe or a device; or a file the links do not name as a path (``/dev/stdout``
            # into a file since deleted): the stdlib's open, through the trusted links.
            fd = self._open_through(path, flags, target)
            self._special = (target.st_dev, target.st_ino)
            return fd
        fd = self._open_plain(end, flags, links=None)
        if end != path:
            with contextlib.suppress(OSError):
                self._configured = (os.readlink(path), end)
        return fd

    def _open_through(self, path: str, flags: int, expected: os.stat_result) -> int:
        """Open what ``path`` leads to, following links, as ``FileHandler`` does — but never
        creating nor truncating it, nor waiting on a FIFO nobody reads (``O_NONBLOCK``, undone
        once open) — and check it is ``expected``: else the path was changed meanwhile."""
        flags = (flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | _NONBLOCK
        try:
            fd = self._os_open(path, flags, 0)
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
                raise UnsafeFileError(
                    errno.ESTALE,
                    f"refusing to open the log file {path!r}: what it leads to was replaced "
                    "while it was being opened",
                )
            if _NONBLOCK:
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_plain(self, path: str, flags: int, links: int | None = 1) -> int:
        """A regular file at ``path``, never through a link: created ``O_EXCL`` 0600 and then
        given its mode (``chmod``, else 0666 less the umask, as ``open()``) and owner. An
        existing one must have at most ``links`` names (``None``: the first open, as
        configured): a file hard-linked there could be any file of its owner's — unless it is
        the file we have open (a reopen after a new lock table), which gives nothing new."""
        mode = self._chmod if self._chmod is not None else _safefs.default_mode(0o666)
        known = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                known = os.fstat(self._fd)
        try:
            try:
                fd, _ = _safefs.open_or_create(
                    path, flags, mode=mode, owner=self._owner, role="the log file",
                    links=links, known=known,
                )  # fmt: skip
            except PermissionError:  # may write but not read it: write-only (mode 0o220)
                fd, _ = _safefs.open_or_create(
                    path, flags & _WRITE_ONLY | os.O_WRONLY, mode=mode, owner=self._owner,
                    role="the log file", links=links, known=known,
                )  # fmt: skip
        except UnsafeFileError:
            raise
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        return fd

    def _refuse(self, exc: UnsafeFileError) -> None:
        """The path holds something we refuse. Keep writing to the file we have if it still
        has a name (rotated or moved away: nothing is lost, it is in the backups or beside
        them), reporting the episode once; else there is nothing to write to: raise, and the
        caller counts and reports the records as lost."""
        old = self._fd
        try:
            named = old >= 0 and os.fstat(old).st_nlink > 0
        except OSError:
            named = False
        if not named:
            if old >= 0:
                self._fd = -1  # the next record looks at the path again, and so on
                os.close(old)
            # Written since the last check into the file now removed: again, once we can.
            self._rewrite += b"".join(self._unconfirmed)
            self._unconfirmed.clear()
            raise UnsafeFileError(
                exc.errno, f"{exc.strerror}. Until then records cannot be written"
            ) from exc
        self._unconfirmed.clear()  # they are in the file we keep, which has a name
        if self._refusal is None or self._refused_as != exc.strerror:
            told = UnsafeFileError(
                exc.errno,
                f"{exc.strerror}. Until then this process writes its records to the file it "
                "had open, no longer at that path (rotated or moved away: look for them in "
                "the backups), and opens a new file at the path once it is clear",
            )
            told.__cause__ = exc
            self._refusal, self._refusal_told = told, False
            self._refused_as = exc.strerror
            self._unsafe = True

    def _news(self) -> Exception | None:
        """A refusal not yet reported (the log path's, else the lock's), once per episode."""
        refusal = self._refusal
        if refusal is not None and not self._refusal_told:
            self._refusal_told = True
            return refusal
        lock_refusal = self._lock.refusal
        if lock_refusal is None:
            self._lock_refusal_told = False
            self._unsafe = refusal is not None
        elif not self._lock_refusal_told:
            self._lock_refusal_told = True
            told = UnsafeFileError(
                lock_refusal.errno,
                f"{lock_refusal.strerror}. Meanwhile this process keeps using the lock file it "
                "had open, as does every process already running, so rotation goes on; a "
                "process started now cannot log until this is resolved",
            )
            told.__cause__ = lock_refusal
            return told
        return None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            if self._warn is not None:
                self._warn(message)

    def _open_current(self, own: bool = False) -> None:
        """Open the path as it is now; remember the generation read *before* opening.

        ``own``: after this process's own rotation (else a new generation is another's)."""
        lock = self._lock
        lock.open()  # a no-op unless closed, or inherited through a fork of any kind
        if self._registered_pid != os.getpid():
            self._register()
            self._rotated = self._janitor.needed  # catch up on work left by others
        generation = lock.read_generation()
        if len(generation) != 8 and lock.validate():
            self._warn_once(
                "repaired",
                f"the rotation lock file {lock.path!r} was truncated or replaced while in use; "
                "its table was re-created. Exclude '.*.lock' files from clean-up jobs",
            )
            generation = lock.read_generation()
        if self._schedule is not None:
            self._load_schedule()
        try:
            fd = self._open_path()
        except UnsafeFileError as exc:
            self._refuse(exc)  # raises unless we keep writing to the file we have
            return
        self._refusal = None
        self._truncate_next_open = False
        old, self._fd = self._fd, fd
        self._glue = False
        self._own_end = -1
        if old >= 0 and generation != self._gen and not own:
            self.rotations_seen += 1
        previous, self._gen = self._gen, generation
        try:
            if old >= 0 and self._unconfirmed and self._lost(os.fstat(old), previous, generation):
                # Records written since the last check went into a file that has since been
                # rotated away and removed (or deleted by hand): they are written again, in
                # order, ahead of the next record — through the size check, so that several
                # processes doing this at once cannot push the new file past the limit.
                self._rewrite += b"".join(self._unconfirmed)
        finally:
            self._unconfirmed.clear()
            self._end = os.fstat(fd).st_size
            if old >= 0:
                os.close(old)
        _LIVE.add(self)  # again after a close(): a reopened handler must stay fork-safe
        if self._rotated and not self._lock.held:
            self._wake_janitor()

    def _lost(self, old: os.stat_result, previous: bytes, generation: bytes) -> bool:
        """Were the records written since the last check into ``old``, a file now removed,
        lost — rather than kept in its compressed copy, or deleted by retention with it?

        * Removed by hand (fewer rotations since our last look than ``backupCount``): written
          again.
        * Removed by retention: records written before that went with their file, oldest first,
          as retention means. Only a record written *after* the removal (a writer held up
          between its look and its write while the set rotated past it) is lost; then the file
          was written after its last rename or unlink, which its times tell (``mtime`` not
          older than ``ctime``; equal counts as after).
        * Compressed: a backup is compressed once nobody wrote to it for ``grace`` seconds, and
          records written less than half of that ago cannot be in the compressed copy.
        """
        if old.st_nlink:
            return False
        if self._compression is not None and (
            _monotonic() - self._last_write >= self._compression.grace / 2
        ):
            return False
        if len(generation) == 8 and len(previous) == 8:
            rotations = int.from_bytes(generation, "little") - int.from_bytes(previous, "little")
            if rotations % (1 << 64) > max(self.backup_count, 1):
                return old.st_mtime_ns >= old.st_ctime_ns
        return True

    def _register(self) -> None:
        """Record our settings in the sidecar; warn once when another process differs."""
        lock = self._lock
        self._registered_pid = os.getpid()
        if lock.newer_layout is not None:
            self._warn_once(
                "layout",
                f"the rotation lock file {lock.path!r} has layout {lock.newer_layout}, written by "
                f"a newer safe_rotating; this one knows layout {LAYOUT} and uses only the lock and "
                "the rotation counter, which every layout shares"
                + (", and keeps its time schedule to itself" if self._schedule else "")
                + f". Upgrade every process writing {self.path!r} to the same release",
            )
            return
        if not self._policy.enabled and not (self._schedule and self.backup_count):
            return
        other = lock.register(self.max_bytes, self.backup_count)
        if other is not None:
            self._warn_once(
                "settings",
                f"{self.path!r} is also written by pid {other.pid} with "
                f"maxBytes={other.max_bytes}, backupCount={other.backup_count}, but pid "
                f"{os.getpid()} uses maxBytes={self.max_bytes}, backupCount={self.backup_count}. "
                "Backups are kept up to the largest backupCount of the running processes; "
                "use the same settings in every process",
            )

    def _is_current(self) -> bool:
        """Is our descriptor the file at the path? (Only meaningful under the lock.)"""
        if self._gen != self._lock.read_generation():
            return False
        return self._names_our_file()

    def _names_our_file(self) -> bool:
        return path_names(self.path, self._fd)

    def _name_for(self, n: int) -> str:
        return self._rotation_name(f"{self.path}.{n}")

    # -- the shared schedule ----------------------------------------------------------------------
    def _load_schedule(self) -> None:
        """Cache the shared next rollover time; the first process to need one sets it."""
        schedule = self._schedule
        assert schedule is not None
        lock = self._lock
        if not lock.extended:  # a newer layout: keep a schedule of our own
            if not self._local_at:
                self._local_at = schedule.first_rollover(self._file_mtime(), self._clock())
            self._rollover_at = self._local_at
            return
        at, signature = lock.schedule()
        if not schedule.plausible(at, self._clock()):
            lock.acquire(max(self.lock_timeout, 1.0))
            try:  # read again under the lock: another process may have set it meanwhile
                at = self._shared_at()
                _, signature = lock.schedule()
            finally:
                lock.release()
        if signature != schedule.signature:
            self._warn_once(
                "schedule",
                f"{self.path!r} is also written by a process with another rotation schedule; "
                f"pid {os.getpid()} uses {schedule.describe()}. All processes follow one shared "
                "schedule, and each computes the next boundary with its own settings when it "
                "rotates: use the same when/interval/utc/atTime in every process",
            )
        self._rollover_at = at

    def _file_mtime(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    def _shared_at(self) -> float:
        """The next rollover time from the table (under the lock), or our own.

        None yet (0), or a value no clock could have set (``inf``, ``NaN``, the year 9999 that
        an older release let a record's time write; see :meth:`Schedule.plausible`): computed
        again from the file's time, as at a first start, and recorded.
        """
        if not self._lock.extended:
            return self._local_at
        schedule = self._schedule
        assert schedule is not None
        at, _ = self._lock.schedule()
        now = self._clock()
        if not schedule.plausible(at, now):
            if at:
                self._warn_once(
                    "implausible-schedule",
                    f"the rotation lock file {self._lock.path!r} said the next time rotation of "
                    f"{self.path!r} is at {at!r}, which no clock reaches (a record dated in the "
                    "future, with an older safe_rotating?); it is computed again, as at a start",
                )
            at = schedule.first_rollover(self._file_mtime(), now)
            self._lock.set_schedule(at, schedule.signature)
        return at

    def _set_shared_at(self, at: float) -> None:
        assert self._schedule is not None
        if self._lock.extended:
            self._lock.set_schedule(at, self._schedule.signature)
        else:
            self._local_at = at

    def _taken(self, name: str) -> bool:
        return taken(name)

    def _timed_dest(self, stamp: str) -> str:
        """The next free name of the period ``stamp``: ``base.stamp``, then ``.1``, ``.2``…

        Names are never reused: after the oldest file of a period was deleted, the next one still
        gets a number above every existing one, so the names keep sorting oldest first. The count
        of the current period is kept in the table, so this is two ``lstat`` calls, not a scan.
        """
        lock = self._lock
        key = zlib.crc32(stamp.encode()) + 1
        base = f"{self.path}.{stamp}"

        def name(n: int) -> str:
            return self._rotation_name(base if n == 0 else f"{base}.{n}")

        flags, (cached_key, count, *_) = lock.state() if lock.extended else (0, (0, 0))
        n = -1
        # The count comes from a file others may write: only a plausible one is believed.
        plausible = 0 <= count < _MOST_PERIOD_FILES
        if flags & KNOWN and cached_key == key and plausible and not self._taken(name(count)):
            n = count
        elif not self._taken(name(0)) and not self._taken(name(1)):
            n = 0
        if n < 0:
            n = self._highest_of(stamp) + 1
            while self._taken(name(n)):  # a namer we cannot parse back: probe upwards
                n += 1
        if lock.extended:
            lock.set_state(KNOWN, (key, n + 1, 0, 0, 0))
        return name(n)

    def _highest_of(self, stamp: str) -> int:
        assert self._schedule is not None
        directory, base = os.path.split(self.path)
        highest = 0
        for entry in os.listdir(directory or "."):
            parsed = parse_timed_name(entry, base, self._schedule.stamp_pattern)
            # A name numbered past any honest count (planted?) is not continued from.
            if parsed is not None and parsed.stamp == stamp and parsed.n < _MOST_PERIOD_FILES:
                highest = max(highest, parsed.n)
        return highest

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
        if self._fd < 0:
            self._open_current()
        elif now >= self._next_check:
            self.check(now)
        policy = self._policy
        problem: Exception | None = None
        if self._schedule is not None:
            at = self._clock() if when is None else when
            if at >= self._rollover_at:
                problem = self._try_rollover(0, at)
        if self._rewrite:  # records to write again (see _open_current): ahead of this one
            problem = self._write_again() or problem
        if policy.enabled and self._end + len(data) > policy.max_bytes:
            problem = self._try_rollover(len(data)) or problem
            if self._rewrite:  # the rotation followed to a new file, and found ours removed
                problem = self._write_again() or problem
        fd = self._fd
        self._write_all(fd, data)
        self._unconfirmed.append(data)
        self._last_write = now
        try:
            end = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:  # a pipe or a terminal (``/dev/stdout``) has no position
            end = self._end + len(data)
        self._end = end
        if policy.enabled and end >= policy.max_bytes:
            if end - policy.max_bytes > self.largest_overshoot:
                self.largest_overshoot = end - policy.max_bytes
            problem = self._try_rollover(1) or problem
        if self._unsafe and problem is None:  # one attribute look on the hot path
            problem = self._news()
        return problem

    def check(self, now: float | None = None) -> None:
        """Follow a rotation done by another process; runs at most every :data:`CHECK_EVERY`.

        Also runs before the first record after an idle spell, from ``flush`` and ``close``.
        When nothing changed, the records written since the last check are known to be in the
        current file and are forgotten; otherwise :meth:`_open_current` finds out where they went.
        """
        external = now is None  # from flush or close, not from a write
        if now is None:
            now = _monotonic()
        self._next_check = now + CHECK_EVERY
        if now >= self._next_audit:
            self._audit(now)
        if self._lock.read_generation() != self._gen:
            self._open_current()
        else:
            self._unconfirmed.clear()
        if external and self._rewrite:
            problem = self._write_again()
            if problem is not None:
                raise problem

    def _audit(self, now: float) -> None:
        """Do the paths still name the files we hold? Follow a deleted or replaced file."""
        self._next_audit = now + AUDIT_EVERY
        if not self._lock.names_its_file():
            self._lock.reopen()  # keeps ours if the path holds something it refuses
            self._open_current()
        elif not self._names_our_file():
            self._open_current()
        if self._lock.refusal is not None:
            self._unsafe = True

    def _write_all(self, fd: int, data: bytes) -> None:
        if self._torn or self._glue:  # a line was cut short (by us, or by a killed process)
            data = self._newline + data
            self._glue = False
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise _explain(exc, "write to", self.path) from None
        if written == len(data):
            self._torn = False
            return
        # Only on a nearly full disk: the kernel took part of the record.
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as exc:
            self._torn = True
            try:  # end the torn line now if a byte still fits
                if os.write(fd, self._newline) == len(self._newline):
                    self._torn = False
            except OSError:
                pass
            failure = _explain(exc, "write to", self.path)
            raise type(failure)(
                failure.errno,
                f"{failure.strerror}. A record was cut short: {written} of {len(data)} bytes "
                "were written; the rest is lost and the next record starts on a new line",
            ) from None
        self._torn = False

    # -- rotation --------------------------------------------------------------------------------
    def _try_rollover(self, incoming: int, due: float | None = None) -> Exception | None:
        """Rotate if needed; return (not raise) what went wrong, so the record is still written.

        ``due``: a record of this time reached the cached rollover time (a time rotation).
        """
        trouble = self._trouble
        try:
            timeout = self.lock_timeout if trouble is None else 0.0
            if due is not None:
                self._timed_rollover(due, timeout)
            else:
                self._rollover(incoming, timeout)
        except Exception as exc:  # a stuck lock, a failed rename, a faulty rotator or namer
            with contextlib.suppress(Exception):
                if not self._is_current():  # still follow a rotation done by someone else
                    self._open_current()
            now = _monotonic()
            if trouble is None:
                trouble = self._trouble = _RotationTrouble(now)
            else:
                trouble.attempts += 1
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
                size = os.fstat(self._fd).st_size
            except OSError:
                size = self._end
            failing = (
                "" if trouble.attempts == 1
                else f" Rotation has failed for {now - trouble.started:.0f}s "
                f"({trouble.attempts} attempts)."
            )  # fmt: skip
            failure = RotationError(
                f"could not rotate {self.path!r}: {exc}.{failing} Records keep going to "
                f"the current file, now {size} bytes (maxBytes={self.max_bytes}), without waiting "
                "for the lock again; rotation resumes by itself once this is resolved"
            )
            failure.__cause__ = exc
            return failure
        finally:
            self._wake_janitor()
        self._trouble = None
        return None

    def _wake_janitor(self) -> None:
        if self._rotated:
            self._rotated = False
            if self._janitor.needed or self._staged_busy:
                self._janitor.kick()

    def _timed_rollover(self, due: float, timeout: float) -> None:
        """A record of time ``due`` reached the rollover time: rotate, unless done already.

        Under the lock the shared time is read again: the process that finds the boundary still
        due rotates and records the next one; every other process finds the new time, later
        than its record, and only follows to the new file.

        Only the clock moves the schedule: a record dated later than the clock (a wrong
        ``created``, the year 9999) counts as written now, so it neither rotates before the
        boundary nor sets the next boundary from its own time.
        """
        now = self._clock()
        if due > now:
            due = now
            if due < self._rollover_at:
                return
        lock = self._lock
        seen = self._gen

        def rotated_elsewhere() -> bool:
            return lock.read_generation() != seen

        if not self._acquire(timeout, abandon=rotated_elsewhere):
            self._open_current()  # another process rotated while we waited
            if due < self._rollover_at:
                return
            self._acquire(timeout)
        try:
            if not self._is_current():
                self._open_current()
            at = self._shared_at()
            if due >= at:
                self._end = os.fstat(self._fd).st_size
                now = self._clock()
                assert self._schedule is not None
                following = self._schedule.next_rollover(now)
                if self._end > 0:
                    self._rotate_locked(boundary=at, now=now, next_at=following)
                else:  # nothing to keep: an empty file just starts the next period
                    self._set_shared_at(following)
                    self._lock.bump_generation()
                    self._open_current(own=True)
            else:
                self._rollover_at = at
        finally:
            lock.release()

    def _rollover(self, incoming: int, timeout: float, force: bool = False) -> None:
        for _ in range(_FOLLOWS):
            if self._rollover_once(incoming, timeout, force):
                return
            # Another process rotated while we waited, and the file we followed it to is full
            # already (a slow lock holder on a loaded machine): rotate that one in turn.

    def _rollover_once(self, incoming: int, timeout: float, force: bool) -> bool:
        """One attempt: False if another process rotated meanwhile and the file we then
        followed it to is already full (never when forced)."""
        lock = self._lock
        seen = self._gen

        def rotated_elsewhere() -> bool:
            return lock.read_generation() != seen

        if not self._acquire(timeout, abandon=None if force else rotated_elsewhere):
            self._open_current()  # another process rotated while we waited
            return force or not self._policy.full(self._end, incoming)
        try:
            rotated_meanwhile = lock.read_generation() != seen
            if not self._is_current():
                self._open_current()
            self._end = os.fstat(self._fd).st_size  # the truth, not this process's estimate
            if force:
                # A file that another process rotated since we opened ours is already fresh for
                # us, and rotating an empty file would only push history out.
                if not rotated_meanwhile and self._end > 0:
                    self._rotate_locked()
            elif self._policy.full(self._end, incoming):
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
            self.lock_waits.add(_monotonic() - started)
            if self._lock.refusal is not None:  # it kept its file: say so (see _news)
                self._unsafe = True

    def _keep(self) -> int:
        """How many backups a rotation keeps: ours, or more if a running process keeps more."""
        other = self._lock.register(self.max_bytes, self.backup_count)
        if other is not None and other.backup_count > self.backup_count:
            return other.backup_count
        return self.backup_count

    def _rotate_locked(
        self, boundary: float | None = None, now: float | None = None, next_at: float | None = None
    ) -> None:
        """Move the current file into the backup set; ``next_at``: a time rotation's schedule.

        Not while the path holds something we refused (reported already): the rename would
        hand a neighbour's link to ``rotator`` and into the backup set."""
        if self._refusal is not None:
            return
        if self._schedule is not None:
            if now is None:
                now = self._clock()
            if boundary is None:
                boundary = self._shared_at()
            dest = self._timed_dest(self._schedule.stamp(boundary, now))
            try:
                self._rotate(self.path, dest)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _explain(exc, "rotate", self.path) from None
            if next_at is not None:
                self._set_shared_at(next_at)
            self._rotated = True
            self.rotations += 1
            self._lock.bump_generation()
            self._open_current(own=True)
            return
        if self._staged is not None and self._lock.extended:
            self._rotate_staged(self._staged)
            return
        existing = count_backups(self._name_for, self._taken)
        current = os.path.lexists(self.path)
        plan = plan_rollover(
            self.path, existing, self._keep(), self._name_for, current_exists=current
        )
        for step in plan:
            try:
                if isinstance(step, Remove):
                    self._remove_any(step.path)
                elif isinstance(step, Rename):
                    self._move_any(step.source, step.dest)
                elif isinstance(step, RotateCurrent):
                    self._rotate(step.source, step.dest)
            except FileNotFoundError:
                pass  # already gone: a crashed rotation, or an operator cleaning up
            except OSError as exc:
                raise _explain(exc, "rotate", getattr(step, "source", self.path)) from None
        self._rotated = True
        self.rotations += 1
        self._lock.bump_generation()
        self._open_current(own=True)

    def _rotate_staged(self, staged: StagedSet) -> None:
        """Move the current file to a pending name (one rename, whatever the number of
        backups), trim to ``backupCount``, renumber at once if the set is small, else leave
        the renumbering to the janitor."""
        lock = self._lock
        try:
            state = staged.load(lock)
            keep = self._keep()
            shifted = None
            if state.at_rest and state.total < INLINE and os.path.lexists(self.path):
                # A small set: the stdlib's rotation, ``rotator`` called with the name of .1.
                shifted = staged.shift_in(lock, state, self._rotate, keep)
            if shifted is not None:
                state = shifted
            else:
                if os.path.lexists(self.path):
                    state = staged.rotate(lock, staged.load(lock), self._rotate)
                state = staged.trim(lock, state, keep)
                if state.total <= INLINE:
                    state = staged.renumber(lock, state, 4 * INLINE)
        except OSError as exc:
            raise _explain(exc, "rotate", self.path) from None
        self._rotated = True
        self.rotations += 1
        self._staged_busy = not state.at_rest
        lock.bump_generation()
        self._open_current(own=True)

    def _remove_any(self, name: str) -> None:
        remove_any(name)

    def _move_any(self, source: str, dest: str) -> None:
        move_any(source, dest)

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
        problem: Exception | None = None
        chunk: list[bytes] = []
        size = 0
        if self._fd < 0:
            self._open_current()
        else:
            now = _monotonic()
            if now >= self._next_check:
                self.check(now)
            # The true end now, not as of our last write: the batch is cut to the room that is
            # really left, so what others wrote meanwhile does not push a file far past the limit.
            self._end = os.fstat(self._fd).st_size
            if self._end - policy.max_bytes > self.largest_overshoot:
                self.largest_overshoot = self._end - policy.max_bytes
        # Unless the file still ends where our own last batch ended it (then with a newline).
        if self._end and self._end != self._own_end and not self._ends_a_line():
            self._glue = True  # the batch starts with a newline, if it goes to this file
        if self._schedule is not None:
            at = self._clock() if when is None else when
            if at >= self._rollover_at:
                problem = self._try_rollover(0, at)
        limit = policy.max_bytes
        most = most or limit
        total = sum(map(len, records))
        if total <= most and self._end + total <= limit:  # the usual case: no cut, no loop
            problem = self._write_chunk(records, last=True) or problem
            return problem or (self._news() if self._unsafe else None)
        for record in records:
            while True:
                room = min(limit - self._end, most) - size
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
                problem = self._write_chunk(chunk) or problem
                chunk, size = [], 0
        problem = self._write_chunk(chunk) or problem
        return problem or (self._news() if self._unsafe else None)

    def _ends_a_line(self) -> bool:
        """Does the file end with a newline? A process killed (SIGKILL) in the middle of a
        large write leaves the part written so far, which can end inside a record; the next
        batch then starts on a new line, so no record of ours is glued to that tail. One
        ``pread`` per batch (a single record's ``write`` is not cut this way: see the README)."""
        newline = self._newline
        try:
            tail = os.pread(self._fd, len(newline), self._end - len(newline))
            if not tail or tail == newline:
                return True
            # Or another process's large write is under way (the size grows page by page, and
            # its write ends with a whole record): a cut tail stays as it is. Look again.
            time.sleep(_TAIL_SETTLE)
            if os.fstat(self._fd).st_size != self._end:
                return True
        except OSError:
            return True
        self._warn_once(
            "partial-line",
            f"{self.path!r} ended in the middle of a line, most likely left by a process killed "
            "while writing a batch: the part it had written is kept, and the next records start "
            "on a new line",
        )
        return False

    def periods(
        self, records: Sequence[bytes], times: Sequence[float]
    ) -> Iterator[tuple[Sequence[bytes], float]]:
        """Cut a batch where a record's time (``times``, as ``LogRecord.created``) reaches the
        next rollover: ``(part, time of its first record)``, each to be written with
        :meth:`append_batch` before the next is cut (the rollover time moves on as it rotates),
        so that every record goes to the file of its period (a record dated after the clock: to
        the file of the clock's period, see :meth:`_timed_rollover`)."""
        start = 0
        for index, created in enumerate(times):
            if index > start and created >= self.rollover_at:
                yield records[start:index], times[start]
                start = index
        if start < len(records):
            yield records[start:], times[start]

    def _write_again(self) -> Exception | None:
        """Write the records of :attr:`_rewrite` (see :meth:`_open_current`) under the rotation
        lock, rotating first if they do not fit: several processes doing this at once after a
        burst of rotations would otherwise each add many records past ``max_bytes``, where a
        lock-free writer adds at most one. Rare, so the lock costs nothing that matters.
        Returns (does not raise) a rotation problem; the records are written all the same."""
        data, self._rewrite = self._rewrite, b""
        problem: Exception | None = None
        held = False
        try:
            held = self._acquire(self.lock_timeout if self._trouble is None else 0.0)
        except Exception as exc:  # a stuck holder: write anyway, and say why the file may grow
            problem = exc
        try:
            if held:
                try:
                    if not self._is_current():
                        self._open_current()
                    self._end = os.fstat(self._fd).st_size
                    if self._policy.full(self._end, len(data)):
                        self._rotate_locked()
                except Exception as exc:  # a failed rename, rotator or namer: write anyway
                    problem = exc
            self._write_all(self._fd, data)
            self._unconfirmed.append(data)
            self._last_write = _monotonic()
            try:
                self._end = os.lseek(self._fd, 0, os.SEEK_CUR)
            except OSError:  # no position: a pipe or a terminal
                self._end += len(data)
        finally:
            if held:
                self._lock.release()
        return problem

    def _write_chunk(self, chunk: Sequence[bytes], last: bool = False) -> Exception | None:
        """Write ``chunk`` in one ``write``. ``last``: no other chunk of this batch follows, so
        the end is not asked for (the next batch starts with an ``fstat``): the end we keep
        is then a lower bound, enough to rotate a file we filled ourselves."""
        data = b"".join(chunk)
        policy = self._policy
        problem: Exception | None = None
        if self._rewrite:  # older records, from a file found removed since the batch began
            problem = self._write_again()
        if self._end + len(data) > policy.max_bytes:
            problem = self._try_rollover(len(data)) or problem
            if self._rewrite:
                problem = self._write_again() or problem
        fd = self._fd
        self._write_all(fd, data)
        self._unconfirmed.append(data)
        self._last_write = _monotonic()
        if last:
            end = self._end = self._end + len(data)
        else:
            try:
                end = self._end = os.lseek(fd, 0, os.SEEK_CUR)
            except OSError:  # no position: a pipe or a terminal
                end = self._end = self._end + len(data)
        self._own_end = end
        if end >= policy.max_bytes:
            if end - policy.max_bytes > self.largest_overshoot:
                self.largest_overshoot = end - policy.max_bytes
            problem = self._try_rollover(1) or problem
        return problem

    # -- control ---------------------------------------------------------------------------------
    def current_size(self) -> int:
        """The real size of the current file (opening it if needed)."""
        if self._fd < 0:
            self._open_current()
        return os.fstat(self._fd).st_size

    def would_rotate(self, incoming: int) -> bool:
        """Would a record of ``incoming`` bytes make the current file rotate first?"""
        return self._policy.full(self.current_size(), incoming)

    def do_rollover(self) -> None:
        """Rotate now, under the lock, unless the file is empty or already rotated elsewhere.

        When several processes each do this at start-up (a "fresh file per start" idiom), one
        rotation happens and no history is pushed out: a file that another process rotated since
        this one opened its file is already fresh, and an empty file is not rotated.
        """
        if self._fd < 0:
            self._open_current()
        if self.backup_count > 0 or self._schedule is not None:
            try:
                self._rollover(0, self.lock_timeout, force=True)
            finally:
                self._wake_janitor()
        else:
            self._open_current()

    def close(self) -> None:
        """Check once more (see :meth:`check`), then close the file and the lock. Idempotent."""
        try:
            if self._fd >= 0:
                self.check()
        finally:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)
            self._lock.close()
            _LIVE.discard(self)
            # Only where this process used the file, and once: logging.shutdown() closes a
            # handler again at exit, when its directory may be gone.
            if (
                fd >= 0
                and self._registered_pid == os.getpid()
                and (self._janitor.needed or self._staged is not None)
            ):
                self._janitor.close()

    def after_fork_in_child(self) -> None:
        # The log descriptor may stay shared (O_APPEND writes are atomic); the lock may not.
        self._lock.reopen_after_fork()
        self._reset_counters()
        self._rewrite = b""  # the parent's records: the parent writes them again if need be
        self._glue = False

    def forget_parent(self) -> None:
        """In a forked child: the records written since the last check are the parent's to
        write again if need be, not this process's; counters start from zero. New objects
        only: a thread of the parent may have been changing the old ones at the fork."""
        self._unconfirmed = []
        self._rewrite = b""
        self._glue = False
        self._next_check = 0.0
        self._reset_counters()
