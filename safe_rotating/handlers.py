"""Process-safe drop-ins for ``RotatingFileHandler`` and ``TimedRotatingFileHandler``.

Thin ``logging`` facades over the rotation engine (:class:`safe_rotating._engine.logfile.LogFile`):
format and encode outside any lock, hand the bytes and the record's time to the engine (one
``write``), and turn what goes wrong into ``handleError`` reports — a run of failed writes once
when it starts and once, with a count, when writing works again.

With ``enqueue=True`` the bytes go to a bounded in-process queue instead, and one writer thread
per handler and process hands them to the same engine in batches (see :mod:`._queue`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import logging.handlers
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from safe_rotating._common import validate as _options
from safe_rotating._common.episode import Episode
from safe_rotating._common.forksafe import ForkRegistry
from safe_rotating._common.keywords import checked_keywords
from safe_rotating._common.once import first_time
from safe_rotating._engine.compress import parse_compression
from safe_rotating._engine.lock import SidecarLock
from safe_rotating._engine.logfile import LogFile, default_lock_path
from safe_rotating._engine.plan import Retention
from safe_rotating._engine.schedule import Schedule
from safe_rotating._engine.stats import HandlerStats
from safe_rotating.exceptions import RecordsLost, SafeRotatingWarning

if TYPE_CHECKING:
    from safe_rotating._engine.queued import Queue

__all__ = ["HandlerStats", "SafeRotatingFileHandler", "SafeTimedRotatingFileHandler"]

_monotonic = time.monotonic
_T = TypeVar("_T")
DEFAULT_QUEUE_SIZE = 1024 * 1024  # bytes
BATCH_PARTS = 16  # queued mode: one write holds at most maxBytes / BATCH_PARTS (or one record)


# Handlers of this process, whose counters a child forked by os.fork starts from zero (in queued
# mode the counters live with the queue, which a child of any fork replaces).
def _zero_counters(handler: _Facade) -> None:
    handler._records = handler._bytes = handler._errors = 0


_LIVE: ForkRegistry[_Facade] = ForkRegistry(_zero_counters)


def _writer_record() -> logging.LogRecord:
    """The record handed to ``handleError`` for a problem of the writer thread."""
    return logging.makeLogRecord(
        {"name": "safe_rotating", "msg": "queued records", "levelno": logging.ERROR}
    )


def _warn(message: str) -> None:
    """A warning that can never break logging (``-W error`` would otherwise raise in emit)."""
    try:
        warnings.warn(message, SafeRotatingWarning, stacklevel=4)
    except Exception:
        sys.stderr.write(f"safe_rotating: {message}\n")


class _Facade(logging.handlers.BaseRotatingHandler):
    """What both handlers share: the engine behind ``emit``, reporting, ``flush``, ``close``."""

    _file: LogFile
    _codec: str
    _errors_policy: str
    _failure: Episode | None
    _queue: Queue | None
    _put: Callable[[bytes, float], None] | None

    def _start(
        self,
        path: str,
        open_mode: str,
        delay: bool,
        *,
        lock_timeout: Any,
        lock_file_directory: Any,
        chmod: Any,
        owner: Any,
        encoding: Any,
        errors: Any,
        compress: Any,
        use_gzip: Any,
        max_age: Any,
        max_total_bytes: Any,
        max_bytes: int,
        backup_count: int,
        schedule: Schedule | None = None,
        enqueue: Any = False,
        queue_size: Any = DEFAULT_QUEUE_SIZE,
        on_full: Any = "block",
        block_timeout: Any = 1.0,
    ) -> None:
        if not isinstance(enqueue, bool):
            raise TypeError(f"enqueue must be True or False, got {enqueue!r}")
        capacity = _options.check_size("queue_size", queue_size)
        if capacity is None or capacity < 1:
            raise ValueError(f"queue_size must be a size in bytes >= 1, got {queue_size!r}")
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        waiting = _options.check_timeout("block_timeout", block_timeout)
        codec = _options.check_encoding(encoding)
        errors_policy = _options.check_errors(errors)
        self.lock_timeout = _options.check_timeout("lock_timeout", lock_timeout)
        lock_dir = _options.check_directory("lock_file_directory", lock_file_directory)
        chmod = _options.check_permissions("chmod", chmod)
        owner_ids = _options.check_owner(owner)
        compression = parse_compression(compress, use_gzip)
        retention = Retention(
            count=backup_count,
            max_age=_options.check_age("max_age", max_age),
            max_total_bytes=_options.check_size("max_total_bytes", max_total_bytes),
        )
        # The stdlib base sets baseFilename, mode, encoding, errors, namer, rotator and the
        # handler lock; ``delay=True`` keeps it from opening a stream we do not use.
        logging.handlers.BaseRotatingHandler.__init__(
            self, path, open_mode, encoding=codec, delay=True, errors=errors_policy
        )
        self.delay = delay
        self.maxBytes = max_bytes
        self.backupCount = backup_count
        self.compress = compression.kind if compression else None
        self.max_age = retention.max_age
        self.max_total_bytes = retention.max_total_bytes
        self._codec = codec
        self._errors_policy = errors_policy
        self.lock_path = default_lock_path(path, lock_dir)
        self._file = LogFile(
            path,
            max_bytes=max_bytes,
            backup_count=backup_count,
            truncate=open_mode == "w",
            lock_timeout=self.lock_timeout,
            lock_path=self.lock_path,
            chmod=chmod,
            owner=owner_ids,
            newline=self.terminator.encode(codec, errors_policy),
            name_for=self.rotation_filename,  # bound methods: namer/rotator set later count
            rotate=self.rotate,
            warn=_warn,
            schedule=schedule,
            retention=retention,
            compression=compression,
        )
        self._failure = None
        self._records = self._bytes = self._errors = 0
        # Queued mode writes a batch in parts of at most 1/16 of maxBytes (one record if larger),
        # so a batch in flight adds little past maxBytes when several processes write at once.
        self._batch_most = max_bytes // BATCH_PARTS
        self.enqueue = enqueue
        self.queue_size = capacity
        self.on_full = on_full
        self.block_timeout = waiting
        if enqueue:  # the writer thread and its queue load only for queued mode
            from safe_rotating._engine.queued import Queue
        self._queue = (
            Queue(
                self._file,
                path,
                self._write_batch,
                self._report_from_writer,
                capacity,
                on_full == "block",
                waiting,
            )
            if enqueue
            else None
        )
        self._put = None if self._queue is None else self._queue.put
        _LIVE.add(self)
        if not delay:
            with self._handler_lock():
                self._file.open()

    def _handler_lock(self) -> threading.RLock:
        assert self.lock is not None
        return self.lock

    def _engine(self, action: Callable[[], _T]) -> _T:
        """Run ``action`` on the engine, with the writer thread (queued mode) kept out."""
        queue = self._queue
        if queue is None:
            return action()
        return queue.run_locked(action)

    @property
    def _lock(self) -> SidecarLock:
        """The inter-process rotation lock (for tests and diagnostics)."""
        return self._file.lock

    # -- the hot path ----------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        """Format, then append the whole record with one write; failures go to ``handleError``.

        A failure to write is reported once per episode, with a count when writing works again.
        """
        try:
            data = (self.format(record) + self.terminator).encode(self._codec, self._errors_policy)
        except RecursionError:
            raise
        except Exception:
            self._errors += 1
            self.handleError(record)  # a bad record, not a bad disk: reported every time
            return
        put = self._put
        if put is not None:
            try:
                put(data, record.created)
            except RecursionError:
                raise
            except Exception:
                self._errors += 1
                self.handleError(record)
            return
        try:
            problem = self._file.append(data, record.created)
        except RecursionError:
            raise
        except Exception as exc:
            self._errors += 1
            self._write_failed(record, exc)
            return
        self._records += 1
        self._bytes += len(data)
        if self._failure is not None:
            self._write_recovered(record)
        if problem is not None:
            self._report(record, problem)

    def _write_batch(self, records: list[bytes], when: float | None) -> int:
        """Queued mode, on the writer thread: write a batch; return how many records were
        written (all or none). Never raises."""
        try:
            problem = self._file.append_batch(records, when, self._batch_most)
        except RecursionError:
            raise
        except Exception as exc:
            self._write_failed(_writer_record(), exc, len(records))
            return 0
        if self._failure is not None:
            self._write_recovered(_writer_record())
        if problem is not None:
            self._report(_writer_record(), problem)
        return len(records)

    def _report_from_writer(self, problem: BaseException) -> None:
        self._report(_writer_record(), problem)

    def stats(self) -> HandlerStats:
        """Counters of this handler in this process: records and bytes written, rotations done
        and followed, waits for the rotation lock, the largest overshoot past ``maxBytes``,
        queue depth and peak, records dropped and records that failed (see
        :class:`HandlerStats`). Plain numbers kept without locks, cheap to read."""
        engine = dataclasses.replace(
            self._file.stats(), records=self._records, bytes=self._bytes, errors=self._errors
        )
        if self._queue is not None:
            return self._queue.stats(engine, self._errors)
        return engine

    # -- reporting -------------------------------------------------------------------------------
    def _report(self, record: logging.LogRecord, problem: BaseException) -> None:
        """Hand ``problem`` to ``handleError`` as the exception being handled."""
        try:
            raise problem
        except Exception:
            self.handleError(record)

    def _write_failed(self, record: logging.LogRecord, exc: Exception, count: int = 1) -> None:
        episode = self._failure
        if episode is not None:
            episode.count += count
            return
        self._failure = Episode(_monotonic(), str(exc), count)
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

    def flush(self) -> None:
        """Make sure every record emitted so far is in the current set of files.

        Without ``enqueue`` every record reached the kernel in ``emit``; with it, whatever is
        still queued is written now, on this thread (waiting at most 5 s for a write under way).
        Then follows a rotation done elsewhere since the last check and writes again any record
        that went into a file removed meanwhile. Never raises.
        """
        with self._handler_lock():
            queue = self._queue
            if queue is not None and not queue.flush():
                return  # the writer is stuck in a write: nothing more to do here
            self._engine(self._check)

    def _check(self) -> None:
        if not self._file.is_open:
            return
        try:
            self._file.check()
        except Exception as exc:
            self._report(logging.makeLogRecord({"msg": "flush"}), exc)

    def close(self) -> None:
        """Write what is queued (``enqueue``), stop the writer thread, close the files. A record
        emitted later opens them again (and starts a new writer thread), as with ``FileHandler``."""
        with self._handler_lock():
            self.flush()
            try:
                if self._queue is not None:
                    self._queue.close()
                self._engine(self._file.close)
            finally:
                logging.Handler.close(self)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self.baseFilename} ({level})>"


class SafeRotatingFileHandler(_Facade, logging.handlers.RotatingFileHandler):
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
        Every file it creates in the directory starts as mode 0600 and gets these only once it
        is checked to be the regular file just created; nothing there is opened through a
        symbolic link, except a link that is already at the log path when the handler first
        opens it (as with ``FileHandler``). A link or FIFO that appears there later, put by
        anyone else who may write the directory, is refused and reported once through
        ``handleError``.
    ``compress``
        ``"gzip"`` or ``"zstd"``: backups are compressed in the background, never by a writer
        waiting for it (``use_gzip=True`` is accepted for ``"gzip"``).
    ``max_age`` / ``max_total_bytes``
        Also delete the oldest backups once last written longer ago than this (``"14d"``,
        ``"12h"``, seconds), or while the whole set is larger than this (``"5GiB"``).
    ``enqueue``
        ``True``: ``emit`` formats and encodes the record, queues the bytes and returns; one
        writer thread per process writes everything queued in one batch per wake-up, normally
        within a fraction of a millisecond. ``flush()``, ``close()`` and interpreter exit write
        what is queued; a forked child starts its own queue and thread (the parent writes what
        it had queued). A record is then in the file shortly *after* ``emit`` returns: a process
        killed with ``SIGKILL`` loses what was still queued.
    ``queue_size``
        Bound of the queue in **bytes** (default 1 MiB; ``"16MiB"`` accepted): records vary
        from tens of bytes to tracebacks of many kilobytes, and bytes are what a bound is for
        (memory, and how much a killed process can lose). A record larger than the bound is
        still taken when the queue is empty.
    ``on_full`` / ``block_timeout``
        What ``emit`` does when the queue is full: ``"block"`` (default) waits for room, at
        most ``block_timeout`` seconds (default 1), then drops the record; ``"drop"`` drops it
        at once. Drops are counted (:meth:`stats`) and reported through ``handleError`` once
        when they start and once, with the count, when records are accepted again; while they
        last, ``"block"`` does not wait again.
    """

    @checked_keywords
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
        compress: str | None = None,
        use_gzip: bool = False,
        max_age: str | float | None = None,
        max_total_bytes: str | int | None = None,
        enqueue: bool = False,
        queue_size: int | str = DEFAULT_QUEUE_SIZE,
        on_full: str = "block",
        block_timeout: float = 1.0,
    ) -> None:
        path = _options.check_filename(filename)
        max_bytes = _options.check_count("maxBytes", maxBytes)
        backup_count = _options.check_count("backupCount", backupCount)
        open_mode = _options.check_mode(mode, rotating=max_bytes > 0)
        self._start(
            path,
            open_mode,
            delay,
            lock_timeout=lock_timeout,
            lock_file_directory=lock_file_directory,
            chmod=chmod,
            owner=owner,
            encoding=encoding,
            errors=errors,
            compress=compress,
            use_gzip=use_gzip,
            max_age=max_age,
            max_total_bytes=max_total_bytes,
            max_bytes=max_bytes,
            backup_count=backup_count,
            enqueue=enqueue,
            queue_size=queue_size,
            on_full=on_full,
            block_timeout=block_timeout,
        )
        if max_bytes > 0 and backup_count == 0 and first_time("maxBytes alone", path):
            # The stdlib says nothing, and a newcomer's file just grows.
            _warn(
                f"{path!r}: maxBytes={max_bytes} without backupCount never rotates (as with "
                "logging's RotatingFileHandler, backupCount=0 turns rotation off), so the file "
                "grows without bound; add backupCount=5 (the number of backups to keep)"
            )  # stacklevel 4 of _warn: the caller of __init__, past checked_keywords

    # -- stdlib API ------------------------------------------------------------------------------
    def shouldRollover(self, record: logging.LogRecord) -> int:
        """Would ``record`` make the current file exceed ``maxBytes``? (Checks the real file.)"""
        if not (self.maxBytes > 0 and self.backupCount > 0):
            return False
        with self._handler_lock():
            text = self.format(record) + self.terminator
            size = len(text.encode(self._codec, self._errors_policy))
            return self._engine(lambda: self._file.would_rotate(size))

    def doRollover(self) -> None:
        """Rotate now (as ``RotatingFileHandler.doRollover``), under the lock.

        When several processes each call this at start-up (a "fresh file per start" idiom), one
        rotation happens and no history is pushed out: a file that another process rotated
        since this handler opened its file is already fresh, and an empty file is not rotated.
        """
        with self._handler_lock():
            self._engine(self._file.do_rollover)


class SafeTimedRotatingFileHandler(_Facade, logging.handlers.TimedRotatingFileHandler):
    """Rotate ``filename`` at times, and optionally at ``maxBytes``, from many processes.

    Arguments are those of :class:`logging.handlers.TimedRotatingFileHandler` (``when``,
    ``interval``, ``backupCount``, ``utc``, ``atTime``...) with the same meaning and file names,
    plus keyword-only ``maxBytes`` (also rotate a file that grows past it; the files of one period
    are ``app.log.<stamp>``, ``app.log.<stamp>.1``, ``app.log.<stamp>.2``…, oldest first) and the
    keyword-only arguments of :class:`SafeRotatingFileHandler`.

    Every process writing the file follows one schedule, kept in the sidecar lock file: exactly
    one of them rotates at each boundary, and each record goes to the file of the period of its
    ``created`` time.
    """

    @checked_keywords
    def __init__(
        self,
        filename: str | os.PathLike[str],
        when: str = "h",
        interval: int = 1,
        backupCount: int = 0,
        encoding: str | None = None,
        delay: bool = False,
        utc: bool = False,
        atTime: datetime.time | None = None,
        errors: str | None = None,
        *,
        maxBytes: int = 0,
        lock_timeout: float = 0.25,
        lock_file_directory: str | os.PathLike[str] | None = None,
        chmod: int | None = None,
        owner: tuple[str | int, str | int] | None = None,
        compress: str | None = None,
        use_gzip: bool = False,
        max_age: str | float | None = None,
        max_total_bytes: str | int | None = None,
        enqueue: bool = False,
        queue_size: int | str = DEFAULT_QUEUE_SIZE,
        on_full: str = "block",
        block_timeout: float = 1.0,
    ) -> None:
        path = _options.check_filename(filename)
        schedule = Schedule.parse(when, interval, utc, atTime)
        max_bytes = _options.check_count("maxBytes", maxBytes)
        backup_count = _options.check_count("backupCount", backupCount)
        self.when = schedule.when
        self.interval = schedule.interval
        self.utc = schedule.utc
        self.atTime = schedule.at_time
        self.suffix = schedule.suffix
        self.extMatch = schedule.ext_match
        if self.when.startswith("W"):
            self.dayOfWeek = int(self.when[1])
        self._schedule = schedule
        self._start(
            path,
            "a",
            delay,
            lock_timeout=lock_timeout,
            lock_file_directory=lock_file_directory,
            chmod=chmod,
            owner=owner,
            encoding=encoding,
            errors=errors,
            compress=compress,
            use_gzip=use_gzip,
            max_age=max_age,
            max_total_bytes=max_total_bytes,
            max_bytes=max_bytes,
            backup_count=backup_count,
            enqueue=enqueue,
            queue_size=queue_size,
            on_full=on_full,
            block_timeout=block_timeout,
            schedule=schedule,
        )

    @property  # type: ignore[override]
    def rolloverAt(self) -> float:
        """The shared next rollover time, as this process last read it."""
        return self._engine(lambda: self._file.rollover_at)

    @rolloverAt.setter
    def rolloverAt(self, value: float) -> None:
        pass  # the schedule is shared: set by whichever process rotates

    def computeRollover(self, currentTime: float) -> float:  # type: ignore[override]
        return self._schedule.compute_rollover(currentTime)

    def shouldRollover(self, record: logging.LogRecord) -> int:
        """Is ``record`` due for a new period, or would it push the file past ``maxBytes``?

        A record dated after the clock counts as written now, as when it is written: only the
        clock moves the schedule."""
        with self._handler_lock():
            if min(record.created, time.time()) >= self.rolloverAt:
                return True
            if not self.maxBytes:
                return False
            text = self.format(record) + self.terminator
            size = len(text.encode(self._codec, self._errors_policy))
            return self._engine(lambda: self._file.would_rotate(size))

    def doRollover(self) -> None:
        """Rotate now, into the name of the current period (under the lock, once for every
        process that calls it at the same time, as ``SafeRotatingFileHandler.doRollover``)."""
        with self._handler_lock():
            self._engine(self._file.do_rollover)

    def getFilesToDelete(self) -> list[str]:
        """The backups that retention would delete now (the janitor deletes them itself)."""
        return self._engine(self._file.files_to_delete)
