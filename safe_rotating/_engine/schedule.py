"""Time-based rotation, parsed once: when the next rollover is due, what a rotated file is called.

Pure functions of their arguments and of the process's time zone (``time.localtime``), with the
meaning of ``logging.handlers.TimedRotatingFileHandler`` (Python 3.11) kept exactly, so that a
file set written by the stdlib class and one written by ``SafeTimedRotatingFileHandler`` look the
same. Python 3.13 changed the stdlib's ``midnight`` and weekly rollovers (``interval`` counts,
a time of exactly ``atTime`` waits a day); this module keeps the 3.11 meaning on every version, so
that processes on different Python versions sharing one file follow one schedule:

* :meth:`Schedule.first_rollover` is the stdlib's ``computeRollover``, applied to the last
  modification time of an existing log file or, for a new one, to the current time;
* :meth:`Schedule.next_rollover` is what the stdlib's ``doRollover`` computes after a rotation
  done at ``now``: the first boundary after ``now``, with the stdlib's one-hour adjustment when a
  daylight-saving change falls before a ``midnight``/weekly rollover;
* :meth:`Schedule.stamp` is the suffix of the file rotated at a boundary: the start of the period
  that ended (``boundary - interval``), shifted by an hour when daylight saving changed since.

Clock jumps are the stdlib's too. A wall clock set back delays the next rollover (the period just
lasts longer); one set forward makes the next record rotate, and the boundary after that is
computed from the new time, skipping the periods jumped over (no empty files are made for them).

The next rollover time is shared through the lock file, where any process (or an older release
that let a record's own time move it) may have left a value no clock could reach.
:meth:`Schedule.plausible` tells one apart: infinite, NaN, or later than the next boundary a
rotation done now would set, plus an hour (a daylight-saving change, a clock stepped back a
little). Such a value is recomputed, never believed: otherwise one record dated 9999 would stop
time rotation for every process.

Several files of one period (time *and* size rotation) are named ``<base>.<stamp>``, then
``<base>.<stamp>.1``, ``<base>.<stamp>.2``…, oldest first; :func:`order_key` sorts them.
"""

from __future__ import annotations

import datetime
import math
import re
import time
import zlib
from dataclasses import dataclass

__all__ = ["COMPRESSED_SUFFIXES", "Schedule", "TimedName", "order_key", "parse_timed_name"]

_DAY = 24 * 60 * 60
_SLACK = 60 * 60  # how far past the furthest boundary from now a shared time may still be
_UNITS: dict[str, tuple[int, str, str]] = {
    "S": (1, "%Y-%m-%d_%H-%M-%S", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"),
    "M": (60, "%Y-%m-%d_%H-%M", r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}"),
    "H": (60 * 60, "%Y-%m-%d_%H", r"\d{4}-\d{2}-\d{2}_\d{2}"),
    "D": (_DAY, "%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
    "MIDNIGHT": (_DAY, "%Y-%m-%d", r"\d{4}-\d{2}-\d{2}"),
}
COMPRESSED_SUFFIXES = (".gz", ".zst")


@dataclass(frozen=True)
class Schedule:
    """``when``/``interval``/``utc``/``atTime`` of ``TimedRotatingFileHandler``, validated once."""

    when: str  # upper case: S, M, H, D, MIDNIGHT, W0..W6
    interval: int  # seconds between rollovers (unit x requested interval)
    utc: bool = False
    at_time: datetime.time | None = None

    @classmethod
    def parse(
        cls,
        when: str,
        interval: int = 1,
        utc: bool = False,
        at_time: datetime.time | None = None,
    ) -> Schedule:
        if not isinstance(when, str):
            raise TypeError(f"when must be a str such as 'H' or 'midnight', got {when!r}")
        if isinstance(interval, bool) or not isinstance(interval, int):
            raise TypeError(f"interval must be an int, got {type(interval).__name__}: {interval!r}")
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval!r}")
        if at_time is not None and not isinstance(at_time, datetime.time):
            raise TypeError(f"atTime must be a datetime.time or None, got {at_time!r}")
        upper = when.upper()
        if upper in _UNITS:
            unit = _UNITS[upper][0]
        elif upper.startswith("W"):
            if len(upper) != 2 or not "0" <= upper[1] <= "6":
                raise ValueError(f"when={when!r}: a weekly rollover is W0 (Monday) to W6 (Sunday)")
            unit = 7 * _DAY
        else:
            raise ValueError(f"when={when!r} is not one of S, M, H, D, midnight, W0-W6 (any case)")
        return cls(upper, unit * interval, bool(utc), at_time)

    # -- names -----------------------------------------------------------------------------------
    @property
    def suffix(self) -> str:
        """The ``strftime`` format of the stamp (the stdlib's ``suffix``)."""
        return _UNITS[self.when][1] if self.when in _UNITS else "%Y-%m-%d"

    @property
    def stamp_pattern(self) -> str:
        return _UNITS[self.when][2] if self.when in _UNITS else r"\d{4}-\d{2}-\d{2}"

    @property
    def ext_match(self) -> re.Pattern[str]:
        """The stdlib's ``extMatch``: a stamp, optionally followed by ``.something``."""
        return re.compile(rf"^{self.stamp_pattern}(\.\w+)?$", re.ASCII)

    @property
    def signature(self) -> int:
        """A number that differs between schedules, recorded beside the shared time."""
        at = self.at_time.isoformat() if self.at_time else "-"
        text = f"{self.when}/{self.interval}/{int(self.utc)}/{at}"
        return zlib.crc32(text.encode()) | (1 << 32)  # never 0, which means "none"

    def describe(self) -> str:
        at = f", atTime={self.at_time.isoformat()}" if self.at_time else ""
        return f"when={self.when!r}, interval={self.interval}s, utc={self.utc}{at}"

    def _tuple(self, t: float) -> time.struct_time:
        return time.gmtime(t) if self.utc else time.localtime(t)

    def stamp(self, boundary: float, now: float) -> str:
        """The stamp of the file rotated at ``boundary`` by a rotation done at ``now``."""
        t = int(boundary - self.interval)
        if self.utc:
            then = time.gmtime(t)
        else:
            then = time.localtime(t)
            dst_now = time.localtime(int(now)).tm_isdst
            if dst_now != then.tm_isdst:
                then = time.localtime(t + (3600 if dst_now else -3600))
        return time.strftime(self.suffix, then)

    # -- boundaries ------------------------------------------------------------------------------
    def compute_rollover(self, current: float) -> float:
        """The stdlib's ``computeRollover(currentTime)``."""
        result = current + self.interval
        if not (self.when == "MIDNIGHT" or self.when.startswith("W")):
            return result
        t = self._tuple(current)
        hour, minute, second, day = t.tm_hour, t.tm_min, t.tm_sec, t.tm_wday
        if self.at_time is None:
            rotate_ts = _DAY
        else:
            at = self.at_time
            rotate_ts = (at.hour * 60 + at.minute) * 60 + at.second
        r = rotate_ts - ((hour * 60 + minute) * 60 + second)
        if r < 0:
            r += _DAY
            day = (day + 1) % 7
        result = current + r
        if self.when.startswith("W"):
            weekday = int(self.when[1])
            if day != weekday:
                wait = weekday - day if day < weekday else 6 - day + weekday + 1
                new = result + wait * _DAY
                if not self.utc:
                    dst_now = t.tm_isdst
                    dst_then = time.localtime(new).tm_isdst
                    if dst_now != dst_then:
                        new += -3600 if not dst_now else 3600
                result = new
        return result

    def first_rollover(self, file_mtime: float | None, now: float) -> float:
        """The first boundary: from an existing file's modification time, else from now."""
        return self.compute_rollover(int(file_mtime) if file_mtime is not None else int(now))

    def next_rollover(self, now: float) -> float:
        """The boundary after a rotation done at ``now`` (the stdlib's ``doRollover``)."""
        current = int(now)
        new = self.compute_rollover(current)
        while new <= current:
            new += self.interval
        if (self.when == "MIDNIGHT" or self.when.startswith("W")) and not self.utc:
            dst_now = time.localtime(current).tm_isdst
            if dst_now != time.localtime(new).tm_isdst:
                new += -3600 if not dst_now else 3600
        return new

    def plausible(self, at: float, now: float) -> bool:
        """Could a process on this schedule have set ``at`` as the next rollover by ``now``?

        A boundary is computed from the time of the rotation that sets it, so none is later than
        :meth:`next_rollover` of now, give or take a daylight-saving hour; the longest of that
        and one interval, plus :data:`_SLACK`, is the bound. Past times are plausible (they are
        simply due), but not zero or less (zero is the table's "none yet"). ``inf``, ``NaN`` and
        the year 9999 are not.
        """
        if not (math.isfinite(at) and at > 0):
            return False
        if at <= now:
            return True
        try:
            furthest = max(self.next_rollover(now), now + self.interval)
        except (OverflowError, OSError, ValueError):  # a clock no time function takes
            return False
        return at <= furthest + _SLACK


@dataclass(frozen=True)
class TimedName:
    """A parsed backup name ``<base>.<stamp>[.<n>][.gz|.zst]``."""

    stamp: str
    n: int  # 0 for the first file of its period
    compressed: str  # "" or the compression suffix


def parse_timed_name(name: str, base: str, stamp_pattern: str) -> TimedName | None:
    """Parse a directory entry of the set of ``base`` (a basename), else ``None``."""
    prefix = base + "."
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    compressed = ""
    for suffix in COMPRESSED_SUFFIXES:
        if rest.endswith(suffix):
            rest, compressed = rest[: -len(suffix)], suffix
            break
    match = re.fullmatch(rf"({stamp_pattern})(?:\.(\d+))?", rest, re.ASCII)
    if match is None:
        return None
    n = int(match.group(2)) if match.group(2) else 0
    if match.group(2) and (n == 0 or match.group(2)[0] == "0"):
        return None  # ".0", ".01": not a name this package makes
    return TimedName(match.group(1), n, compressed)


def order_key(name: TimedName) -> tuple[str, int]:
    """Oldest first: by stamp (fixed-width, so text order is time order), then by ``n``."""
    return name.stamp, name.n
