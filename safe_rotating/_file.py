"""``SafeRotatingFileHandler``: a process-safe drop-in for ``logging.handlers.RotatingFileHandler``.

How a record is written (the hot path, :meth:`SafeRotatingFileHandler._append`):

1. Format and encode outside any inter-process lock.
2. At most once a millisecond (:data:`_CHECK_EVERY`), and always after an idle spell, read the
   shared rotation generation from the sidecar (one ``pread``) and reopen the path if another
   process rotated.
3. If this handler's last known end of file says the record would not fit, take the slow path:
   lock, re-read the truth (``stat`` of the path vs ``fstat`` of our descriptor, real size), and
   rotate only if the current file really is full.
4. One ``write`` of the whole record on an ``O_APPEND`` descriptor — atomic on a local file system,
   so lines never tear or interleave — then ``lseek`` to learn where it ended.
5. Keep the record's bytes until the next check. If that check finds that the file they went
   to has since been rotated away *and removed* (``st_nlink == 0``: ``backupCount`` rotations
   within a millisecond, or a writer stalled across them), they are written again into the
   current file. If the file is now full, rotate at once.

Records therefore never wait for the inter-process lock; only a writer that finds the file full
does, and for a short, bounded time. The price is documented in the README: while several
processes write, a file may exceed ``maxBytes`` by at most one record per other concurrently
writing handler.

Once a second (:data:`_AUDIT_EVERY`) a writer also checks that the paths still name the files it
has open, so a log or lock file deleted or replaced under it is followed, not written into
forever.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass

from . import _options
from ._lock import SidecarLock
from ._oserror import explain as _explain
from ._rotation import Remove, Rename, RotateCurrent, SizePolicy, count_backups, plan_rollover
from .exceptions import LockTimeout, RecordsLost, RotationError, SafeRotatingWarning

__all__ = ["SafeRotatingFileHandler"]

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
# Seconds between two looks at the shared generation (one pread): a rotation done by another
# process is followed within this long, and a record after an idle spell always looks first.
_CHECK_EVERY = 0.001
_AUDIT_EVERY = 1.0  # seconds between checks that the paths still name the files we hold open
_REMIND_EVERY = 60.0  # seconds between reminders while rotation keeps failing
# A lock holder that is running (not stopped, not stuck in I/O) but slow — a loaded machine —
# delays rotation quietly for this long before it is reported; writers never wait for it.
_SLOW_HOLDER_GRACE = 5.0
_monotonic = time.monotonic

# Handlers alive in this process. The at-fork hook is the fast path only: every use of the lock
# compares the pid, because a fork done in C (uWSGI, embedding hosts) never runs the hook.
_LIVE: weakref.WeakSet[SafeRotatingFileHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_LIVE):
        handler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _warn(message: str) -> None:
    """A warning that can never break logging (``-W error`` would otherwise raise in emit)."""
    try:
        warnings.warn(message, SafeRotatingWarning, stacklevel=3)
    except Exception:
        sys.stderr.write(f"safe_rotating: {message}\n")


@dataclass
class _Episode:
    """A run of records that could not be written, reported once at its start and its end."""

    started: float
    first_error: str
    count: int = 1


@dataclass
class _RotationTrouble:
    """A run of failed rotations (stuck lock holder, failing rename): records are still written."""

    started: float
    attempts: int = 1
    reported: float = 0.0


class SafeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotate ``filename`` at ``maxBytes``, keeping ``backupCount`` backups, from many processes.

    Arguments are those of :class:`logging.handlers.RotatingFileHandler`, plus keyword-only:

    ``lock_timeout``
        Longest wait, in seconds, for the rotation lock (default 0.25; a rotation normally holds
        it for milliseconds). When another process holds it longer (stopped, hung), the record
        is still written — to the current file, which then grows past ``maxBytes`` — and the
        delay is reported once through ``handleError`` naming the holder; later records do not
        wait again until a rotation succeeds.
    ``lock_file_directory``
        Where the sidecar lock file ``.<name>.lock`` lives (default: beside the log).
    ``chmod`` / ``owner``
        Permission mode and ``(user, group)`` for the log and lock files this handler creates.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        maxBytes: int = 0,
        backupCount: int = 0,
        encoding: str | None = None,
        delay: bool = False,
        errors: str | None = None,
        *,
        lock_timeout: float = 0.25,
        lock_file_directory: str | os.PathLike[str] | None = None,
        chmod: int | None = None,
        owner: tuple[str | int, str | int] | None = None,
    ) -> None:
        path = _options.check_filename(filename)
        max_bytes = _options.check_count("maxBytes", maxBytes)
        backup_count = _options.check_count("backupCount", backupCount)
        open_mode = _options.check_mode(mode, rotating=max_bytes > 0)
        codec = _options.check_encoding(encoding)
        errors_policy = _options.check_errors(errors)
        self.lock_timeout = _options.check_timeout("lock_timeout", lock_timeout)
        lock_dir = _options.check_directory("lock_file_directory", lock_file_directory)
        self._chmod = _options.check_permissions("chmod", chmod)
        self._owner = _options.check_owner(owner)

        # The stdlib base sets baseFilename, mode, encoding, errors, namer, rotator and the
        # handler lock; ``delay=True`` keeps it from opening a stream we do not use.
        logging.handlers.BaseRotatingHandler.__init__(
            self, path, open_mode, encoding=codec, delay=True, errors=errors_policy
        )
        self.delay = delay
        self.maxBytes = max_bytes
        self.backupCount = backup_count
        self._codec = codec
        self._errors_policy = errors_policy
        self._newline = self.terminator.encode(codec, errors_policy)
        self._policy = SizePolicy(max_bytes, backup_count)
        lock_name = "." + os.path.basename(path) + ".lock"
        self.lock_path = os.path.join(lock_dir or os.path.dirname(path), lock_name)
        self._lock = SidecarLock(self.lock_path, self._chmod, self._owner, log_path=path)
        self._fd = -1
        self._gen = b""
        self._end = 0
        self._next_check = 0.0
        self._next_audit = 0.0
        self._unconfirmed: list[bytes] = []  # written since the last check, see _check()
        self._registered_pid = 0
        self._truncate_next_open = open_mode == "w"
        self._torn = False  # the last record was cut short: the next one starts a new line
        self._failure: _Episode | None = None
        self._trouble: _RotationTrouble | None = None
        self._warned: set[str] = set()
        if not delay:
            with self._handler_lock():
                self._open_current()

    # -- small helpers ---------------------------------------------------------------------------
    def _handler_lock(self) -> threading.RLock:
        assert self.lock is not None
        return self.lock

    def _create_flags(self) -> int:
        flags = _OPEN_FLAGS | os.O_CREAT
        if self._truncate_next_open:
            flags |= os.O_TRUNC
        return flags

    def _open_path(self) -> int:
        path = self.baseFilename
        try:
            if self._chmod is None and self._owner is None:
                return os.open(path, self._create_flags(), 0o666)
            try:  # we must know whether we created it, to set mode and owner
                fd = os.open(path, self._create_flags() | os.O_EXCL, 0o600)
            except FileExistsError:
                return os.open(path, self._create_flags() & ~os.O_CREAT)
            if self._chmod is not None:
                os.fchmod(fd, self._chmod)
            if self._owner is not None:
                os.fchown(fd, *self._owner)
            return fd
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _warn(message)

    def _open_current(self) -> None:
        """Open the path as it is now; remember the generation read *before* opening."""
        lock = self._lock
        lock.open()  # a no-op unless closed, or inherited through a fork of any kind
        if self._registered_pid != os.getpid():
            self._register()
        generation = lock.read_generation()
        if len(generation) != 8 and lock.validate():
            self._warn_once(
                "repaired",
                f"the rotation lock file {lock.path!r} was truncated or replaced while in use; "
                "its table was re-created. Exclude '.*.lock' files from clean-up jobs",
            )
            generation = lock.read_generation()
        fd = self._open_path()
        self._truncate_next_open = False
        old, self._fd = self._fd, fd
        self._gen = generation
        try:
            if old >= 0 and self._unconfirmed and os.fstat(old).st_nlink == 0:
                # Records written since the last check went into a file that has since been
                # rotated away and removed (or deleted by hand): write them again, in order.
                self._write_all(fd, b"".join(self._unconfirmed))
        finally:
            self._unconfirmed.clear()
            self._end = os.fstat(fd).st_size
            if old >= 0:
                os.close(old)
        _LIVE.add(self)  # again after a close(): a reopened handler must stay fork-safe

    def _register(self) -> None:
        """Record our settings in the sidecar; warn once when another process differs."""
        lock = self._lock
        self._registered_pid = os.getpid()
        if lock.newer_layout is not None:
            self._warn_once(
                "layout",
                f"the rotation lock file {lock.path!r} has layout {lock.newer_layout}, written by "
                "a newer safe_rotating; this one knows layout 1 and uses only the lock and the "
                "rotation counter, which every layout shares. Upgrade every process writing "
                f"{self.baseFilename!r} to the same release",
            )
            return
        if not self._policy.enabled:
            return
        other = lock.register(self.maxBytes, self.backupCount)
        if other is not None:
            self._warn_once(
                "settings",
                f"{self.baseFilename!r} is also written by pid {other.pid} with "
                f"maxBytes={other.max_bytes}, backupCount={other.backup_count}, but pid "
                f"{os.getpid()} uses maxBytes={self.maxBytes}, backupCount={self.backupCount}. "
                "Backups are kept up to the largest backupCount of the running processes; "
                "use the same settings in every process",
            )

    def _is_current(self) -> bool:
        """Is our descriptor the file at the path? (Only meaningful under the lock.)"""
        if self._gen != self._lock.read_generation():
            return False
        return self._names_our_file()

    def _names_our_file(self) -> bool:
        try:
            here = os.stat(self.baseFilename)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _name_for(self, n: int) -> str:
        return self.rotation_filename(f"{self.baseFilename}.{n}")

    # -- the hot path ----------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        """Format, then append the whole record with one write; failures go to ``handleError``.

        A failure to write is reported once per episode, with a count when writing works again.
        """
        try:
            text = self.format(record) + self.terminator
            data = text.encode(self._codec, self._errors_policy)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)  # a bad record, not a bad disk: reported every time
            return
        try:
            problem = self._append(data)
        except RecursionError:
            raise
        except Exception as exc:
            self._write_failed(record, exc)
            return
        if self._failure is not None:
            self._write_recovered(record)
        if problem is not None:
            self._report(record, problem)

    def _append(self, data: bytes) -> Exception | None:
        """Write ``data`` as one record; return (not raise) a rotation problem."""
        now = _monotonic()
        if self._fd < 0:
            self._open_current()
        elif now >= self._next_check:
            self._check(now)
        policy = self._policy
        problem: Exception | None = None
        if policy.enabled and self._end + len(data) > policy.max_bytes:
            problem = self._try_rollover(len(data))
        fd = self._fd
        self._write_all(fd, data)
        self._unconfirmed.append(data)
        end = self._end = os.lseek(fd, 0, os.SEEK_CUR)
        if policy.enabled and end >= policy.max_bytes:
            problem = self._try_rollover(1) or problem
        return problem

    def _check(self, now: float) -> None:
        """Follow a rotation done by another process; runs at most every :data:`_CHECK_EVERY`.

        Also runs before the first record after an idle spell, from ``flush`` and ``close``.
        When nothing changed, the records written since the last check are known to be in the
        current file and are forgotten; otherwise :meth:`_open_current` finds out where they went.
        """
        self._next_check = now + _CHECK_EVERY
        if now >= self._next_audit:
            self._audit(now)
        if self._lock.read_generation() != self._gen:
            self._open_current()
        else:
            self._unconfirmed.clear()

    def _audit(self, now: float) -> None:
        """Do the paths still name the files we hold? Follow a deleted or replaced file."""
        self._next_audit = now + _AUDIT_EVERY
        if not self._lock.names_its_file():
            self._lock.reopen()
            self._open_current()
        elif not self._names_our_file():
            self._open_current()

    def _write_all(self, fd: int, data: bytes) -> None:
        if self._torn:  # the previous record was cut short: start on a new line
            data = self._newline + data
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise _explain(exc, "write to", self.baseFilename) from None
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
            failure = _explain(exc, "write to", self.baseFilename)
            raise type(failure)(
                failure.errno,
                f"{failure.strerror}. A record was cut short: {written} of {len(data)} bytes "
                "were written; the rest is lost and the next record starts on a new line",
            ) from None
        self._torn = False

    # -- reporting -------------------------------------------------------------------------------
    def _report(self, record: logging.LogRecord, problem: BaseException) -> None:
        """Hand ``problem`` to ``handleError`` as the exception being handled."""
        try:
            raise problem
        except Exception:
            self.handleError(record)

    def _write_failed(self, record: logging.LogRecord, exc: Exception) -> None:
        episode = self._failure
        if episode is not None:
            episode.count += 1
            return
        self._failure = _Episode(_monotonic(), str(exc))
        note = "later failures are counted and reported once, when writing works again"
        if isinstance(exc, OSError):
            told: Exception = type(exc)(exc.errno, f"{exc.strerror or exc}; {note}")
            told.__cause__ = exc
        else:
            told = exc
        self._report(record, told)

    def _write_recovered(self, record: logging.LogRecord) -> None:
        episode, self._failure = self._failure, None
        assert episode is not None
        seconds = _monotonic() - episode.started
        self._report(
            record, RecordsLost(self.baseFilename, episode.count, seconds, episode.first_error)
        )

    # -- rotation --------------------------------------------------------------------------------
    def _try_rollover(self, incoming: int) -> Exception | None:
        """Rotate if needed; return (not raise) what went wrong, so the record is still written."""
        trouble = self._trouble
        try:
            self._rollover(incoming, self.lock_timeout if trouble is None else 0.0)
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
                f"could not rotate {self.baseFilename!r}: {exc}.{failing} Records keep going to "
                f"the current file, now {size} bytes (maxBytes={self.maxBytes}), without waiting "
                "for the lock again; rotation resumes by itself once this is resolved"
            )
            failure.__cause__ = exc
            return failure
        self._trouble = None
        return None

    def _rollover(self, incoming: int, timeout: float, force: bool = False) -> None:
        lock = self._lock
        seen = self._gen

        def rotated_elsewhere() -> bool:
            return lock.read_generation() != seen

        if not lock.acquire(timeout, abandon=None if force else rotated_elsewhere):
            self._open_current()  # another process rotated while we waited
            return
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

    def _keep(self) -> int:
        """How many backups a rotation keeps: ours, or more if a running process keeps more."""
        other = self._lock.register(self.maxBytes, self.backupCount)
        if other is not None and other.backup_count > self.backupCount:
            return other.backup_count
        return self.backupCount

    def _rotate_locked(self) -> None:
        existing = count_backups(self._name_for, os.path.lexists)
        current = os.path.lexists(self.baseFilename)
        plan = plan_rollover(
            self.baseFilename, existing, self._keep(), self._name_for, current_exists=current
        )
        for step in plan:
            try:
                if isinstance(step, Remove):
                    os.remove(step.path)
                elif isinstance(step, Rename):
                    os.rename(step.source, step.dest)
                elif isinstance(step, RotateCurrent):
                    self.rotate(step.source, step.dest)
            except FileNotFoundError:
                pass  # already gone: a crashed rotation, or an operator cleaning up
            except OSError as exc:
                raise _explain(exc, "rotate", getattr(step, "source", self.baseFilename)) from None
        self._lock.bump_generation()
        self._open_current()

    # -- stdlib API ------------------------------------------------------------------------------
    def shouldRollover(self, record: logging.LogRecord) -> int:
        """Would ``record`` make the current file exceed ``maxBytes``? (Checks the real file.)"""
        if not self._policy.enabled:
            return False
        with self._handler_lock():
            if self._fd < 0:
                self._open_current()
            text = self.format(record) + self.terminator
            size = len(text.encode(self._codec, self._errors_policy))
            return self._policy.full(os.fstat(self._fd).st_size, size)

    def doRollover(self) -> None:
        """Rotate now (as ``RotatingFileHandler.doRollover``), under the lock.

        When several processes each call this at start-up (a "fresh file per start" idiom), one
        rotation happens and no history is pushed out: a file that another process rotated
        since this handler opened its file is already fresh, and an empty file is not rotated.
        """
        with self._handler_lock():
            if self._fd < 0:
                self._open_current()
            if self.backupCount > 0:
                self._rollover(0, self.lock_timeout, force=True)
            else:
                self._open_current()

    def flush(self) -> None:
        """Every record reached the kernel in ``emit``; make sure none is in a removed file.

        Follows a rotation done elsewhere since the last check and writes again any record that
        went into a file removed meanwhile (see :meth:`_check`). Never raises.
        """
        with self._handler_lock():
            if self._fd < 0:
                return
            try:
                self._check(_monotonic())
            except Exception as exc:
                self._report(logging.makeLogRecord({"msg": "flush"}), exc)

    def close(self) -> None:
        with self._handler_lock():
            self.flush()
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)
            self._lock.close()
            _LIVE.discard(self)
            logging.Handler.close(self)

    def _after_fork_in_child(self) -> None:
        # The log descriptor may stay shared (O_APPEND writes are atomic); the lock may not.
        self._lock.reopen_after_fork()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self.baseFilename} ({level})>"
