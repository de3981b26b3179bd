"""Record lines a verifier can check, and the verifier itself.

A stress record is one line: ``WWWW SSSSSSSSS xxx...x CCCCCCCC`` — writer id, that writer's
sequence number, padding up to the requested line length, and a CRC-32 of everything before it.
Any interleaving or truncation breaks the pattern or the checksum, so a torn line is never
mistaken for a good one.

:func:`verify` reads a rotated set from the oldest backup to the current file and checks every
promise of the handler: each record exactly once (or, when old backups were deleted, each writer
missing only its oldest records), no torn line, each writer's sequence rising across files,
backup numbering contiguous, file count within ``backupCount + 1`` and sizes within the limit.
It reads every naming the handlers make: ``app.log.1`` (newest) … ``app.log.N``, backups still
waiting to be numbered (``app.log.pending.<seq>``, newer than every numbered one, higher ``seq``
newer), time-named backups (``app.log.<stamp>``, ``app.log.<stamp>.1``…, oldest first), and any of
them compressed (``.gz``, ``.zst``). With ``timed=``, lines start with the record's creation time
(``%(created).6f``) and each record must be in the file of its period (:class:`TimedCheck`).

Records logged by a web application have a second shape, made by :func:`make_request_line` and
checked by :func:`verify_requests`: ``req PPPPPPP SSSSSSSSS RRRRRRRR KKKK xxx...x CCCCCCCC`` —
the pid of the worker process that logged it, that process's own sequence number (counted from 0
in every process), the id of the request (or task) and the record's index within it, padding and
a CRC-32. A formatter may put a prefix before it (time, level, logger name); the verifier is told
the prefix's pattern so that a line with anything else in it still counts as torn.
"""

from __future__ import annotations

import calendar
import os
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from safe_rotating._verify_files import (
    COMPRESSED,
    backup_gaps,
    file_lines,
    file_set_problems,
    ordered_files,
    read_file,
    rotated_files,
    time_stamp,
)

__all__ = [
    "PREEXISTING",
    "RequestRecord",
    "RequestVerdict",
    "TimedCheck",
    "Verdict",
    "make_line",
    "make_request_line",
    "ordered_files",
    "parse_line",
    "parse_request_line",
    "request_line_pattern",
    "rotated_files",
    "verify",
    "verify_requests",
]

_HEAD = "{:04d} {:09d} "
_MIN_LINE = len(_HEAD.format(0, 0)) + 1 + 8 + 1  # head, one pad char, space, crc, newline
_LINE = re.compile(rb"^(\d{4}) (\d{9}) x+ ([0-9a-f]{8})$")


def make_line(writer: int, seq: int, length: int = 120) -> str:
    """The message whose formatted line (plus ``\\n``) is exactly ``length`` bytes."""
    if length < _MIN_LINE:
        raise ValueError(f"length must be >= {_MIN_LINE}, got {length}")
    head = _HEAD.format(writer, seq)
    body = head + "x" * (length - len(head) - 10) + " "
    return f"{body}{zlib.crc32(body.encode()):08x}"


def parse_line(line: bytes) -> tuple[int, int] | None:
    """``(writer, seq)`` of a whole, intact line (without its newline), else ``None``."""
    match = _LINE.match(line)
    if match is None or zlib.crc32(line[:-8]) != int(match.group(3), 16):
        return None
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class TimedCheck:
    """How :func:`verify` judges a time-rotated set.

    Lines start with ``%(created).6f`` and a space. A record created at ``t`` must be in the file
    of the period holding ``t`` — periods start at the stamps in the names, parsed in UTC or
    local time, and end where the next stamp starts — or, when it was written after its period
    ended, in a later file, created at most ``window`` seconds before that file's period began.
    """

    utc: bool = False
    window: float = 0.5
    interval: float | None = None  # when every period lasts this long (S, M, H, D)

    def start(self, stamp: str) -> float:
        fmt = {
            10: "%Y-%m-%d",
            13: "%Y-%m-%d_%H",
            16: "%Y-%m-%d_%H-%M",
            19: "%Y-%m-%d_%H-%M-%S",
        }[len(stamp)]
        parsed = time.strptime(stamp, fmt)
        return float(calendar.timegm(parsed) if self.utc else time.mktime(parsed))


PREEXISTING = 9999  # writer id of the records in backups made before a run
_TIME_PREFIX = re.compile(rb"^(\d+\.\d{6}) ")


@dataclass
class Verdict:
    """What :func:`verify` found. ``ok`` is true only if every check passed."""

    writers: int
    per_writer: int
    files: int = 0
    bytes: int = 0
    found: int = 0
    lost: int = 0
    duplicated: int = 0
    torn: int = 0
    order_breaks: int = 0
    oversized: list[tuple[str, int]] = field(default_factory=list)
    numbering_gaps: list[int] = field(default_factory=list)
    too_many_files: int = 0
    largest_file: int = 0
    size_limit: int = 0  # maxBytes + allowance that every file was held to; 0: not checked
    complete: bool = True
    compressed: int = 0  # backups found compressed
    pending: int = 0  # backups not yet numbered
    misplaced: int = 0  # records in the file of another period, beyond the window
    late: int = 0  # records in a later period's file, within the window
    latest: float = 0.0  # the largest such lateness, seconds
    misplaced_sample: str = ""
    preexisting: int = 0  # lines of writer 9999 (backups made before the run) still present
    newest: list[int] = field(default_factory=list)  # per writer: newest seq found, -1: none
    # Blank lines: no record is in them, so they fail nothing. One appears where a batch started
    # on a new line after a cut tail that turned out to be another process's write under way.
    blank: int = 0

    @property
    def expected(self) -> int:
        return self.writers * self.per_writer

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.torn
            or self.order_breaks
            or self.oversized
            or self.numbering_gaps
            or self.too_many_files
            or self.misplaced
        )

    def problems(self) -> list[str]:
        out = []
        if self.misplaced:
            out.append(
                f"{self.misplaced} records in the file of another period ({self.misplaced_sample})"
            )
        if self.lost:
            what = "missing" if self.complete else "missing in the middle of a writer's run"
            out.append(f"{self.lost} records {what} ({100 * self.lost / self.expected:.2f} %)")
        if self.duplicated:
            out.append(f"{self.duplicated} records duplicated")
        if self.torn:
            out.append(f"{self.torn} torn or corrupt lines")
        if self.order_breaks:
            out.append(f"{self.order_breaks} records out of per-writer order")
        out += file_set_problems(
            self.oversized, self.size_limit, self.numbering_gaps, self.too_many_files
        )
        return out

    def summary(self) -> str:
        head = (
            f"{self.found}/{self.expected} records in {self.files} files "
            f"({self.bytes / 1e6:.1f} MB, largest {self.largest_file} B)"
        )
        extra = []
        if self.compressed:
            extra.append(f"{self.compressed} backups compressed")
        if self.pending:
            extra.append(f"{self.pending} not yet numbered")
        if self.late:
            extra.append(
                f"{self.late} records written just after their period ended, in the next "
                f"period's file (at most {self.latest * 1000:.1f} ms late)"
            )
        if self.preexisting:
            extra.append(f"{self.preexisting} records of earlier backups kept")
        if self.blank:
            extra.append(f"{self.blank} blank lines")
        if extra:
            head += " [" + "; ".join(extra) + "]"
        problems = self.problems()
        if not problems:
            return f"PASS: {head}; none lost, duplicated, torn or out of order"
        return f"FAIL: {head}; " + "; ".join(problems)


def verify(
    directory: str,
    basename: str,
    writers: int,
    per_writer: int,
    *,
    max_bytes: int = 0,
    backup_count: int = 0,
    size_allowance: int = 0,
    complete: bool = True,
    written: Sequence[int] | None = None,
    timed: TimedCheck | None = None,
) -> Verdict:
    """Check the rotated set ``basename``, ``basename.1`` ... in ``directory``.

    ``size_allowance`` is how far past ``max_bytes`` a file may go; the caller chooses the rule
    (the stress command allows one record per concurrently writing handler, whichever handler it
    tests). Every file is held to ``max_bytes + size_allowance``, kept in ``Verdict.size_limit``.

    With ``complete=False`` (old backups were allowed to be deleted) a writer may miss only its
    oldest records: a missing record newer than one found is still counted as lost. ``written``
    is for writers that were killed: how many records each one is known to have logged (its
    ``emit`` returned); only those, and any gap before a record that was found, count as lost.
    ``timed`` checks that each record is in the file of its period (see :class:`TimedCheck`).
    Lines of writer :data:`PREEXISTING` are records of backups made before the run
    (``--precreate``): counted, never judged.
    """
    verdict = Verdict(writers=writers, per_writer=per_writer, complete=complete)
    numbers, _ = rotated_files(directory, basename)
    ordered = ordered_files(directory, basename)
    verdict.numbering_gaps = backup_gaps(numbers, any(".pending." in name for name in ordered))
    verdict.files = len(ordered)
    if max_bytes:
        verdict.size_limit = max_bytes + size_allowance
    if backup_count and (max_bytes or timed):
        verdict.too_many_files = max(0, len(ordered) - (backup_count + 1))
    periods = _periods(ordered, basename, timed) if timed else []

    seen = [bytearray(per_writer) for _ in range(writers)]
    last = [-1] * writers
    for index, name in enumerate(ordered):
        path = os.path.join(directory, name)
        data = read_file(path)
        size = len(data)
        if name.endswith(COMPRESSED):
            verdict.compressed += 1
        if ".pending." in name:
            verdict.pending += 1
        verdict.bytes += size
        verdict.largest_file = max(verdict.largest_file, size)
        if verdict.size_limit and size > verdict.size_limit:
            verdict.oversized.append((name, size))
        for line in file_lines(path, data):
            if not line:  # a blank line holds no record (see Verdict.blank)
                verdict.blank += 1
                continue
            if timed is not None:
                stamped = _TIME_PREFIX.match(line)
                if stamped is None:
                    verdict.torn += 1
                    continue
                _judge_time(verdict, float(stamped.group(1)), periods[index], timed, name)
                line = line[stamped.end() :]
            parsed = parse_line(line)
            if parsed is not None and parsed[0] == PREEXISTING:
                verdict.preexisting += 1
                continue
            if parsed is None or parsed[0] >= writers or parsed[1] >= per_writer:
                verdict.torn += 1
                continue
            writer, seq = parsed
            if seen[writer][seq]:
                verdict.duplicated += 1
                continue
            seen[writer][seq] = 1
            verdict.found += 1
            if seq < last[writer]:
                verdict.order_breaks += 1
            last[writer] = max(last[writer], seq)

    verdict.newest = last
    for writer, marks in enumerate(seen):
        if written is not None:
            limit = max(written[writer], marks.rfind(1) + 1)
            verdict.lost += marks.count(0, 0, limit)
        elif complete:
            verdict.lost += marks.count(0)
        else:
            first = marks.find(1)
            verdict.lost += marks.count(0, first) if first >= 0 else 0
    return verdict


def _periods(ordered: list[str], basename: str, timed: TimedCheck) -> list[tuple[float, float]]:
    """``(start, end)`` of the period of each file, from the stamps in the names.

    A period ends where the next later stamp starts; the newest backup's period ends where the
    current file's begins, which the names do not tell (``inf``); the current file's period
    starts after the newest stamp.
    """
    starts: list[float | None] = []
    for name in ordered:
        stamp = time_stamp(name, basename)
        starts.append(timed.start(stamp) if stamp is not None else None)
    known = [s for s in starts if s is not None]
    step = timed.interval or 0.0
    out: list[tuple[float, float]] = []
    for i, start in enumerate(starts):
        if start is None:
            # After the newest stamp: in its period still, if that backup was rotated for size.
            out.append((known[-1] if known else -float("inf"), float("inf")))
            continue
        later = [s for s in starts[i + 1 :] if s is not None and s > start]
        end = later[0] if later else float("inf")
        out.append((start, min(end, start + step) if step else end))
    return out


def _judge_time(
    verdict: Verdict, created: float, period: tuple[float, float], timed: TimedCheck, name: str
) -> None:
    start, end = period
    if start <= created < end:
        return
    if created < start and start - created <= timed.window:
        verdict.late += 1
        verdict.latest = max(verdict.latest, start - created)
        return
    verdict.misplaced += 1
    if not verdict.misplaced_sample:
        verdict.misplaced_sample = f"first: created {created:.6f} in {name}"


# --- records of a web application: (pid, per-process sequence, request id, index) ------------

_REQ_HEAD = "req {:07d} {:09d} {:08d} {:04d} "
_REQ_HEAD_LENGTH = len(_REQ_HEAD.format(0, 0, 0, 0))
_REQ_MIN_LINE = _REQ_HEAD_LENGTH + 1 + 1 + 8  # head, one pad char, space, crc
_REQ_RECORD = rb"(?P<body>req (\d{7}) (\d{9}) (\d{8}) (\d{4}) x+ )(?P<crc>[0-9a-f]{8})"


class RequestRecord(NamedTuple):
    """One parsed request record."""

    pid: int
    seq: int  # the process's own sequence number, from 0
    request: int
    position: int  # within its request, from 0


def make_request_line(pid: int, seq: int, request: int, index: int, length: int = 100) -> str:
    """The message (``length`` characters) of one request record; see the module docstring.

    Fields are zero-padded to fixed widths (pid 7 digits, sequence 9, request 8, index 4), so
    every message of one run has the same length whatever the numbers.
    """
    if length < _REQ_MIN_LINE:
        raise ValueError(f"length must be >= {_REQ_MIN_LINE}, got {length}")
    head = _REQ_HEAD.format(pid, seq, request, index)
    if len(head) != _REQ_HEAD_LENGTH or min(pid, seq, request, index) < 0:
        raise ValueError(f"a field is negative or too wide: {(pid, seq, request, index)}")
    body = head + "x" * (length - len(head) - 9) + " "
    return f"{body}{zlib.crc32(body.encode()):08x}"


def request_line_pattern(prefix: bytes = b"") -> re.Pattern[bytes]:
    """A pattern for whole lines: ``prefix`` (a regular expression) then a request record."""
    return re.compile(b"(?:" + prefix + b")" + _REQ_RECORD) if prefix else re.compile(_REQ_RECORD)


_PLAIN_REQUEST_LINE = request_line_pattern()


def parse_request_line(
    line: bytes, pattern: re.Pattern[bytes] = _PLAIN_REQUEST_LINE
) -> RequestRecord | None:
    """The record in a whole, intact line (without its newline), else ``None``.

    ``pattern`` comes from :func:`request_line_pattern`; the whole line must match it.
    """
    match = pattern.fullmatch(line)
    if match is None or zlib.crc32(match.group("body")) != int(match.group("crc"), 16):
        return None
    pid, seq, request, index = (int(g) for g in match.group(2, 3, 4, 5))
    return RequestRecord(pid, seq, request, index)


@dataclass
class RequestVerdict:
    """What :func:`verify_requests` found. ``ok`` is true only if every check passed."""

    requests: int  # answered requests, each of which must have all its records
    per_request: int
    files: int = 0
    bytes: int = 0
    found: int = 0  # records of answered requests found
    unanswered: int = 0  # records of requests the client saw no answer for (not judged)
    workers: int = 0  # distinct pids that logged
    lost: int = 0  # records of answered requests missing
    sequence_gaps: int = 0  # a worker's sequence numbers missing below its highest one
    duplicated: int = 0
    torn: int = 0
    torn_sample: str = ""
    order_breaks: int = 0
    wrong_worker: int = 0  # records logged by another pid than the one that answered
    oversized: list[tuple[str, int]] = field(default_factory=list)
    numbering_gaps: list[int] = field(default_factory=list)
    too_many_files: int = 0
    largest_file: int = 0
    size_limit: int = 0
    records_per_file: list[int] = field(default_factory=list)  # oldest file first

    @property
    def expected(self) -> int:
        return self.requests * self.per_request

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            share = 100 * self.lost / self.expected if self.expected else 100.0
            out.append(f"{self.lost} records of answered requests missing ({share:.2f} %)")
        if self.sequence_gaps:
            out.append(f"{self.sequence_gaps} gaps in the workers' own record sequences")
        if self.duplicated:
            out.append(f"{self.duplicated} records duplicated")
        if self.torn:
            out.append(f"{self.torn} torn or unrecognised lines (first: {self.torn_sample!r})")
        if self.order_breaks:
            out.append(f"{self.order_breaks} records out of per-worker order")
        if self.wrong_worker:
            out.append(f"{self.wrong_worker} records from another pid than the one that answered")
        out += file_set_problems(
            self.oversized, self.size_limit, self.numbering_gaps, self.too_many_files
        )
        return out

    def summary(self) -> str:
        head = (
            f"{self.found}/{self.expected} records of {self.requests} answered requests from "
            f"{self.workers} worker processes in {self.files} files "
            f"({self.bytes / 1e6:.1f} MB, largest {self.largest_file} B)"
        )
        problems = self.problems()
        if not problems:
            return f"PASS: {head}; none lost, duplicated, torn or out of order"
        return f"FAIL: {head}; " + "; ".join(problems)


def verify_requests(
    directory: str,
    basename: str,
    answered: Mapping[int, int | None],
    per_request: int,
    *,
    prefix: bytes = b"",
    max_bytes: int = 0,
    backup_count: int = 0,
    size_allowance: int = 0,
) -> RequestVerdict:
    """Check the rotated set ``basename``, ``basename.1`` ... of request records.

    ``answered`` maps every request id the client saw answered to the pid that answered it (or
    ``None`` when unknown); each such request must have ``per_request`` records, indices
    ``0 .. per_request - 1``, each exactly once. Records of other requests (sent but not seen
    answered, say because the client stopped waiting) are counted, not judged, except that they
    too must be intact, unique and in order. For every pid, its sequence numbers must rise from
    the oldest file to the current one, and none below its highest may be missing: this catches
    a lost record even of a request nobody saw answered.

    ``prefix`` is a regular expression for what the formatter writes before the message; any
    line that is not exactly ``prefix`` + one intact record is torn. Backup numbering, the file
    count and sizes are checked as by :func:`verify`.
    """
    verdict = RequestVerdict(requests=len(answered), per_request=per_request)
    pattern = request_line_pattern(prefix)
    numbers, current = rotated_files(directory, basename)
    present = set(numbers)
    verdict.numbering_gaps = [n for n in range(1, max(numbers, default=0)) if n not in present]
    ordered = [f"{basename}.{n}" for n in reversed(numbers)] + ([basename] if current else [])
    verdict.files = len(ordered)
    if max_bytes:
        verdict.size_limit = max_bytes + size_allowance
    if backup_count and max_bytes:
        verdict.too_many_files = max(0, len(ordered) - (backup_count + 1))

    seen: dict[int, bytearray] = {request: bytearray(per_request) for request in answered}
    other: set[tuple[int, int]] = set()
    last: dict[int, int] = {}
    sequences: dict[int, set[int]] = {}
    for name in ordered:
        path = os.path.join(directory, name)
        size = os.path.getsize(path)
        verdict.bytes += size
        verdict.largest_file = max(verdict.largest_file, size)
        if verdict.size_limit and size > verdict.size_limit:
            verdict.oversized.append((name, size))
        in_file = 0
        for line in file_lines(path):
            record = parse_request_line(line, pattern)
            if record is None or record.position >= per_request:
                if not verdict.torn:
                    verdict.torn_sample = line[:160].decode("utf-8", "replace")
                verdict.torn += 1
                continue
            in_file += 1
            marks = seen.get(record.request)
            if marks is not None:
                if marks[record.position]:
                    verdict.duplicated += 1
                    continue
                marks[record.position] = 1
                verdict.found += 1
                expected_pid = answered[record.request]
                if expected_pid is not None and expected_pid != record.pid:
                    verdict.wrong_worker += 1
            else:
                key = (record.request, record.position)
                if key in other:
                    verdict.duplicated += 1
                    continue
                other.add(key)
                verdict.unanswered += 1
            numbers_of_pid = sequences.setdefault(record.pid, set())
            if record.seq in numbers_of_pid:
                verdict.duplicated += 1
                continue
            numbers_of_pid.add(record.seq)
            if record.seq < last.get(record.pid, -1):
                verdict.order_breaks += 1
            last[record.pid] = max(last.get(record.pid, -1), record.seq)
        verdict.records_per_file.append(in_file)

    verdict.workers = len(sequences)
    verdict.lost = sum(marks.count(0) for marks in seen.values())
    verdict.sequence_gaps = sum(max(s) + 1 - len(s) for s in sequences.values())
    return verdict
