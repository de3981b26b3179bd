"""``SafeRotatingFileHandler``: a process-safe drop-in for ``logging.handlers.RotatingFileHandler``.

How a record is written (the hot path, :meth:`SafeRotatingFileHandler._append`):

1. Format and encode outside any inter-process lock.
2. Compare the shared rotation generation (a memory read from the sidecar's mapped page) with
   the one this handler opened at; reopen the path if another process rotated.
3. If this handler's last known end of file says the record would not fit, take the slow path:
   lock, re-read the truth (``stat`` of the path vs ``fstat`` of our descriptor, real size), and
   rotate only if the current file really is full.
4. One ``write`` of the whole record on an ``O_APPEND`` descriptor — atomic on a local file system,
   so lines never tear or interleave — then ``lseek`` to learn where it ended.
5. If a rotation happened while the record was in flight and the file it went to has since been
   removed (``st_nlink == 0``: a writer stalled across ``backupCount`` rotations), write it again
   into the current file. If the file is now full, rotate at once.

Records therefore never wait for the inter-process lock; only a writer that finds the file full
does. The price is documented in the README: while several processes write, a file may exceed
``maxBytes`` by at most one record per other concurrently writing handler.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import threading
import time
import weakref

from . import _options
from ._lock import SidecarLock
from ._oserror import explain as _explain
from ._rotation import Remove, Rename, RotateCurrent, SizePolicy, count_backups, plan_rollover
from .exceptions import RotationError

__all__ = ["SafeRotatingFileHandler"]

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)

# Handlers alive in this process; a forked child gives each its own lock description.
_LIVE: weakref.WeakSet[SafeRotatingFileHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_LIVE):
        handler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SafeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotate ``filename`` at ``maxBytes``, keeping ``backupCount`` backups, from many processes.

    Arguments are those of :class:`logging.handlers.RotatingFileHandler`, plus keyword-only:

    ``lock_timeout``
        Longest wait, in seconds, for the rotation lock (default 10). When another process holds
        it longer (stopped, hung), the record is still written — to the current file, which then
        grows past ``maxBytes`` — and the delay is reported through ``handleError`` naming the
        holder's pid; later records do not wait again until a rotation succeeds.
    ``lock_file_directory``
        Where the sidecar lock file ``.<name>.lock`` lives (default: beside the log).
    ``chmod`` / ``owner``
        Permission mode and ``(user, group)`` for log and lock files this handler creates.
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
        lock_timeout: float = 10.0,
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
        self._policy = SizePolicy(max_bytes, backup_count)
        lock_name = "." + os.path.basename(path) + ".lock"
        self.lock_path = os.path.join(lock_dir or os.path.dirname(path), lock_name)
        self._lock = SidecarLock(self.lock_path, self._chmod if self._chmod is not None else 0o644)
        self._fd = -1
        self._gen = -1
        self._end = 0
        self._truncate_next_open = open_mode == "w"
        self._patient = True
        self._next_report = 0.0
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

    def _open_current(self) -> None:
        """Open the path as it is now; remember the generation read *before* opening."""
        lock = self._lock
        if not lock.is_open:
            lock.open()
            if self._owner is not None:
                os.chown(lock.path, *self._owner)
        generation = lock.generation
        fd = self._open_path()
        self._truncate_next_open = False
        old, self._fd = self._fd, fd
        self._gen = generation
        self._end = os.fstat(fd).st_size
        if old >= 0:
            os.close(old)
        _LIVE.add(self)  # again after a close(): a reopened handler must stay fork-safe

    def _is_current(self) -> bool:
        """Is our descriptor the file at the path? (Only meaningful under the lock.)"""
        if self._gen != self._lock.generation:
            return False
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
        """Format, then append the whole record with one write; failures go to ``handleError``."""
        try:
            text = self.format(record) + self.terminator
            self._append(text.encode(self._codec, self._errors_policy))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _append(self, data: bytes) -> None:
        lock = self._lock
        if self._fd < 0 or not lock.is_open or lock.generation != self._gen:
            self._open_current()
        size = len(data)
        policy = self._policy
        problem: Exception | None = None
        if policy.enabled and self._end + size > policy.max_bytes:
            problem = self._try_rollover(size)
        fd = self._fd
        generation = self._gen
        self._write_all(fd, data)
        end = os.lseek(fd, 0, os.SEEK_CUR)
        if lock.generation != generation and os.fstat(fd).st_nlink == 0:
            # Rotated away and removed while the record was in flight: it is in no file.
            self._open_current()
            fd = self._fd
            self._write_all(fd, data)
            end = os.lseek(fd, 0, os.SEEK_CUR)
        self._end = end
        if policy.enabled and end >= policy.max_bytes:
            problem = self._try_rollover(1) or problem
        if problem is not None:
            raise problem

    def _write_all(self, fd: int, data: bytes) -> None:
        try:
            written = os.write(fd, data)
            while written < len(data):  # only on a nearly full disk; the line may tear
                written += os.write(fd, data[written:])
        except OSError as exc:
            raise _explain(exc, "write to", self.baseFilename) from None

    # -- rotation --------------------------------------------------------------------------------
    def _try_rollover(self, incoming: int) -> Exception | None:
        """Rotate if needed; return (not raise) what went wrong, so the record is still written."""
        try:
            self._rollover(incoming, self.lock_timeout if self._patient else 0.0)
        except Exception as exc:  # a stuck lock, a failed rename, a faulty rotator or namer
            self._patient = False  # later records try once instead of waiting again
            now = time.monotonic()
            if now < self._next_report:
                return None  # reported less than lock_timeout ago; the record is kept anyway
            self._next_report = now + self.lock_timeout
            failure = RotationError(
                f"could not rotate {self.baseFilename!r}: {exc}. The record was written to "
                f"the current file, which is now past maxBytes={self.maxBytes}; rotation "
                "resumes by itself once this is resolved"
            )
            failure.__cause__ = exc
            return failure
        self._patient = True
        self._next_report = 0.0
        return None

    def _rollover(self, incoming: int, timeout: float, force: bool = False) -> None:
        lock = self._lock
        seen = self._gen

        def rotated_elsewhere() -> bool:
            return lock.generation != seen

        if not lock.acquire(timeout, abandon=None if force else rotated_elsewhere):
            self._open_current()  # another process rotated while we waited
            return
        try:
            if not self._is_current():
                self._open_current()
            self._end = os.fstat(self._fd).st_size  # the truth, not this process's estimate
            if force or self._policy.full(self._end, incoming):
                self._rotate_locked()
        finally:
            lock.release()

    def _rotate_locked(self) -> None:
        existing = count_backups(self._name_for, os.path.lexists)
        current = os.path.lexists(self.baseFilename)
        plan = plan_rollover(
            self.baseFilename, existing, self.backupCount, self._name_for, current_exists=current
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
        """Rotate now, whatever the size (as ``RotatingFileHandler.doRollover``), under the lock."""
        with self._handler_lock():
            if self._fd < 0:
                self._open_current()
            if self.backupCount > 0:
                self._rollover(0, self.lock_timeout, force=True)
            else:
                self._open_current()

    def flush(self) -> None:
        """Nothing to do: every record reached the kernel in ``emit``."""

    def close(self) -> None:
        with self._handler_lock():
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
