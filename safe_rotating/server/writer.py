"""The one writer task: formats records and hands them to the rotation engine.

Its input is the :class:`~.workqueue.WorkQueue`.

One :class:`Writer` task owns every output file. It takes what is queued (up to a round's
worth), formats each record, and hands each file its lines through the rotation engine
(``LogFile.append_batch``: one ``write`` per file per round, rotation under the shared lock, so
file-mode handlers in other processes may write the same file). The engine runs directly in this
task, on the event loop's thread: a write to the page cache takes microseconds, and while it runs
no reader could make progress anyway. Then the round's batch sequence numbers go to the journal
(one write), and only then is each batch acknowledged.

Records are checked here, once, whatever listener they came from: a ``created`` time that is not
a plausible number becomes the time the record was received (:func:`sane_created`), and each
rendered line has its control characters escaped (:mod:`safe_rotating._net.escape`), so that no
sender can crash the writer, stop time rotation or forge a line. With ``--when``, a record goes to
the file of the period the server's clock is in when it is written.

A write that fails (a full disk) is reported once, then retried every :data:`RETRY_EVERY`
seconds with the same lines; nothing new is taken meanwhile, so the queue fills and clients are
held back. When it works again, the recovery is reported with how long it failed. Nothing is
acknowledged that was not written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from safe_rotating._common.episode import Episode
from safe_rotating._engine.compress import parse_compression
from safe_rotating._engine.logfile import LogFile, Records
from safe_rotating._engine.plan import Retention
from safe_rotating._engine.stats import HandlerStats
from safe_rotating._net.escape import encode_record
from safe_rotating._net.rendered import Batch, file_bytes, to_v1_records
from safe_rotating._net.wire import to_log_record
from safe_rotating.server.config import ServerConfig
from safe_rotating.server.metrics import Stats
from safe_rotating.server.state import Journal
from safe_rotating.server.workqueue import Work, WorkQueue

__all__ = [
    "EARLIEST",
    "FALLBACK_FORMAT",
    "FUTURE",
    "RETRY_EVERY",
    "ROUND_RECORDS",
    "Rendered",
    "Writer",
    "sane_created",
]

RETRY_EVERY: Final = 0.5
ROUND_RECORDS: Final = 4096  # records formatted and written per round at most
FALLBACK_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
# A record's ``created`` is kept only between these: not before 2000-01-01 00:00 UTC, and at most
# this many seconds after the server received it. Anything else (inf, NaN, a huge integer, the
# year 9999, the epoch) is the time the server received it.
EARLIEST: Final = 946_684_800.0
FUTURE: Final = 3600.0
_monotonic = time.monotonic


def sane_created(created: Any, received: float) -> float:
    """A record's ``created`` as the server keeps it: the sender's time if it is a number from
    :data:`EARLIEST` to :data:`FUTURE` seconds after ``received``, else ``received``.

    Every input (native batches, stock pickles over TCP or UDP, syslog) reaches the writer, which
    applies this once per record before anything reads the time: so no sender's number can
    overflow the formatter (``inf``, a 400-digit integer), and a record dated years ahead is
    written with the time it arrived. Past times after 2000 are kept: a client that replays its
    spool after an outage sends records hours or days old, and their own times are the truth.
    """
    if isinstance(created, int | float) and not isinstance(created, bool):
        try:
            value = float(created)
        except OverflowError:  # an integer too large for a float
            return received
        if EARLIEST <= value <= received + FUTURE:  # False for NaN
            return value
    return received


class _Formatter(logging.Formatter):
    """``logging.Formatter`` whose ``asctime`` never raises (``time.localtime`` of a huge or
    non-finite time does): such a time is written as the number it is."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        try:
            return super().formatTime(record, datefmt)
        except (OverflowError, OSError, ValueError):
            return repr(record.created)


@dataclass(frozen=True)
class Rendered:
    """A protocol-2 batch on its way to the writer, with who sent it (for ``--forward``)."""

    batch: Batch
    host: str
    app: str
    pid: int | None

    @property
    def count(self) -> int:
        return self.batch.count

    def flats(self) -> list[dict[str, Any]]:
        """Its records as flat records (``msg``: the rendered line) for ``--forward`` and
        ``--route``."""
        flats = to_v1_records(self.batch)
        for flat in flats:
            flat["host"], flat["app"] = self.host, self.app
            if self.pid is not None:
                flat["process"] = self.pid
        return flats


@dataclass
class _Round:
    lines: dict[str, list[bytes]] = field(default_factory=dict)  # path -> formatted records
    counts: dict[str, int] = field(default_factory=dict)  # path -> records in ``lines``
    seqs: dict[str, int] = field(default_factory=dict)  # client -> highest new seq
    records: int = 0
    flats: list[dict[str, Any]] = field(default_factory=list)  # for --forward only

    def add(self, path: str, data: bytes, count: int) -> None:
        self.lines.setdefault(path, []).append(data)
        self.counts[path] = self.counts.get(path, 0) + count
        self.records += count


class Writer:
    """Formats records and writes them; owns the files, the journal and ``last_seq``."""

    def __init__(
        self, config: ServerConfig, stats: Stats, journal: Journal, log: logging.Logger
    ) -> None:
        self.config = config
        self.stats = stats
        self.journal = journal
        self.log = log
        self._formatter = _Formatter(config.format)
        self._fallback = _Formatter(FALLBACK_FORMAT)
        self._escape = config.escape_control_characters
        self._files: dict[str, LogFile] = {}
        self._schedule = config.schedule()
        self._episode: Episode | None = None
        self.give_up_at: float | None = None  # set at shutdown: stop retrying after this
        # --forward: gets the records of each round once written; returns at once, never waits.
        self.forward: Callable[[list[dict[str, Any]]], None] | None = None
        self.rounds = 0

    # -- files -----------------------------------------------------------------------------
    def path_for(self, name: Any) -> str:
        """The file for a logger name: the longest matching ``--route`` prefix, else ``--file``."""
        if isinstance(name, str):
            for prefix, path in self.config.routes:
                if name == prefix or name.startswith(prefix + "."):
                    return path
        return self.config.file

    def _file(self, path: str) -> LogFile:
        log_file = self._files.get(path)
        if log_file is None:
            config = self.config
            retention = Retention(
                count=config.backup_count,
                max_age=config.max_age,
                max_total_bytes=config.max_total_bytes,
            )
            log_file = self._files[path] = LogFile(
                path,
                max_bytes=config.max_bytes,
                backup_count=config.backup_count,
                rotate=self._rotate,
                warn=self.log.warning,
                retention=retention,
                compression=parse_compression(config.compress) if config.compress else None,
                schedule=self._schedule,
            )
        return log_file

    def file_stats(self) -> dict[str, HandlerStats]:
        """The engine's counters of each output file (as ``handler.stats()`` has them)."""
        return {path: log_file.stats() for path, log_file in self._files.items()}

    def _rotate(self, source: str, dest: str) -> None:
        os.rename(source, dest)
        self.stats.rotations += 1

    def open(self) -> None:
        """Open the main file now, so a bad path or permission stops the start-up."""
        self._file(self.config.file).open()

    def reopen(self) -> None:
        """Close every file; the next write opens the path again (after logrotate moved it)."""
        for log_file in self._files.values():
            try:
                log_file.close()
            except OSError as exc:
                self.log.warning("closing %s for a reopen: %s", log_file.path, exc)
        self.log.info("output files will be reopened")

    def close(self) -> None:
        for log_file in self._files.values():
            try:
                log_file.close()
            except OSError as exc:
                self.log.warning("closing %s: %s", log_file.path, exc)
        self.journal.close()

    # -- formatting ------------------------------------------------------------------------
    def format(self, flat: dict[str, Any]) -> bytes:
        """One record's line: formatted, its control characters escaped (see
        :mod:`safe_rotating._net.escape`; unless ``escape_control_characters`` is off), encoded.

        ``flat["created"]`` must have been through :func:`sane_created` (``_prepare`` does it).
        """
        added: dict[str, Any] = {"host": flat.get("host") or "-", "app": flat.get("app") or "-"}
        if not isinstance(flat.get("process"), int):
            added["process"] = "-"
        if not isinstance(flat.get("msg"), str):
            flat["msg"] = str(flat.get("msg", ""))
        try:
            record = to_log_record(flat, **added)
            text = self._formatter.format(record)
        except Exception:  # a field the format needs is missing or of the wrong type
            self.stats.format_errors += 1
            try:
                text = self._fallback.format(to_log_record(flat, **added))
            except Exception:  # cannot happen with to_log_record's types; never lose the record
                text = repr(flat)[:65536]
        return encode_record(text, self._escape)

    # -- the task --------------------------------------------------------------------------
    async def run(self, queue: WorkQueue) -> None:
        """Write until the queue is closed and empty, then close the files."""
        try:
            while True:
                works = await queue.take(ROUND_RECORDS)
                if not works:
                    return
                await self.write_round(works)
        finally:
            self.close()

    def _prepare(self, works: list[Work]) -> _Round:
        round_ = _Round()
        for work in works:
            if work.client is not None:
                last = round_.seqs.get(work.client) or self.journal.last_seq(work.client)
                if work.seq <= last:
                    self.stats.duplicates += 1
                    self.stats.duplicate_records += work.count
                    continue
                round_.seqs[work.client] = work.seq
            received = work.received
            if work.rendered is not None:
                self._add_rendered(round_, work.rendered, received)
                continue
            for flat in work.records:
                # The one place every input's time is checked, before it is formatted or
                # forwarded. Which file a record goes to is the server's clock's business.
                flat["created"] = sane_created(flat.get("created"), received)
                round_.add(self.path_for(flat.get("name")), self.format(flat), 1)
            if self.forward is not None:
                round_.flats.extend(work.records)
        return round_

    def _add_rendered(self, round_: _Round, rendered: Rendered, received: float) -> None:
        """A protocol-2 batch: its lines as the client rendered them (escaped if need be). With
        no ``--route``, the whole batch is one piece of bytes for one ``write``."""
        data, lines = file_bytes(rendered.batch, self._escape)
        flats = rendered.flats() if self.forward is not None or self.config.routes else None
        if flats is not None:
            for flat in flats:
                flat["created"] = sane_created(flat.get("created"), received)
            if self.forward is not None:
                round_.flats.extend(flats)
        if not self.config.routes:
            if lines is None:
                round_.add(self.config.file, Records(data), rendered.count)
            else:
                for line in lines:
                    round_.add(self.config.file, line, 1)
            return
        assert flats is not None
        if lines is None:
            lines = [text + b"\n" for text in data.split(b"\n")[:-1]]
        for flat, line in zip(flats, lines, strict=True):
            round_.add(self.path_for(flat.get("name")), line, 1)

    async def write_round(self, works: list[Work]) -> None:
        round_ = self._prepare(works)
        unwritten = 0
        for path, lines in round_.lines.items():
            action = self._appending(path, lines, round_.counts[path])
            if unwritten or not await self._retry(path, action):
                unwritten += len(lines)
        if unwritten:
            self.stats.dropped["not written at shutdown"] += unwritten
            self.log.error(
                "gave up writing %d record(s) at shutdown: %s",
                unwritten,
                self._episode.first_error if self._episode else "unknown error",
            )
            return  # not acknowledged: a native client keeps them and sends them again
        if self.forward is not None and round_.flats:
            self.forward(round_.flats)
        if round_.seqs:
            seqs = round_.seqs
            if not await self._retry(self.journal.path, lambda: self.journal.record(seqs.items())):
                self.log.error(
                    "the journal could not be written at shutdown: the last batches are written "
                    "but not acknowledged, and may be written again when their clients resend"
                )
                return
        self.rounds += 1
        for work in works:  # written or duplicates: acknowledge, in order
            if work.done is not None:
                work.done()

    def _appending(self, path: str, lines: list[bytes], count: int) -> Callable[[], None]:
        def append() -> None:
            # With --when, the file of the period the server's clock is in (the engine reads
            # the clock when ``when`` is not given): a record's own time, which its sender
            # chose, stays in its line and never moves the schedule shared through the lock.
            problem = self._file(path).append_batch(lines)
            self.stats.written += count
            self.stats.bytes_written += sum(len(line) for line in lines)
            if problem is not None:
                self.log.warning("%s", problem)

        return append

    async def _retry(self, path: str, action: Callable[[], None]) -> bool:
        """Run ``action`` until it works; report a failure episode once, and its end."""
        while True:
            try:
                action()
            except Exception as exc:  # OSError above all; nothing may stop the writer
                self.stats.write_errors += 1
                now = _monotonic()
                if self._episode is None:
                    detail = str(exc) if path in str(exc) else f"cannot write {path}: {exc}"
                    self._episode = Episode(now, detail)
                    self.log.error(
                        "%s. Holding the records and retrying every %gs; clients are held "
                        "back meanwhile (reported again when it works)",
                        detail,
                        RETRY_EVERY,
                    )
                else:
                    self._episode.count += 1
                if self.give_up_at is not None and now >= self.give_up_at:
                    return False
                await asyncio.sleep(RETRY_EVERY)
                continue
            episode, self._episode = self._episode, None
            if episode is not None:
                self.log.warning(
                    "writing works again after %.1fs (%d failed attempts, first: %s); "
                    "the held records are written, none lost",
                    _monotonic() - episode.started,
                    episode.count,
                    episode.first_error,
                )
            return True
