"""The small shared table at the head of the rotation lock file: its fields and its layouts.

The lock file's first bytes are read and written with ``pread``/``pwrite`` (never
memory-mapped: touching a mapped page of a file that someone truncated, or whose blocks a full
disk never allocated, kills the process with ``SIGBUS``; a short read is just a value we
notice). :class:`Field` is the one map of the table:

======  ====  =============================================================================
offset  size  meaning
======  ====  =============================================================================
0       8     *generation*, bumped by the rotating process right after it moved the current
              file away; writers compare it with the value they opened at and reopen the path
8       8     *holder*: pid of the process holding the lock, so a waiter can name it
16      8     magic ``b"safe_rot"``
24      4     layout version (:data:`LAYOUT`)
28      4     reserved (zero)
32      8     *keeper* pid: a live process whose settings are recorded below
40      8     the keeper's ``maxBytes``
48      8     the keeper's ``backupCount`` (the largest among processes that registered)
56      8     when the holder took the lock (``time.time()``, a double)
64      8     *schedule*: the next time-based rollover (``time.time()`` scale, a double; 0: none
              set yet), shared by every process writing the file (layout 2)
72      8     schedule signature: which ``when``/``interval``/``utc``/``atTime`` set it (layout 2)
80      8     *state*: bit 0 = the fields below describe the files on disk; bit 1 = a step of a
              rotation or renumbering was in progress (its holder may have died) (layout 2)
88      40    the backup set of a size-rotated file (see
              ``safe_rotating._engine.staging.IndexState``), or for a time-rotated one the name
              counter of the current period (layout 2)
128     8     when a writer started waiting for the lock (a double; 0: nobody waits), so that a
              janitor doing background work gives the lock up at once (layout 2)
======  ====  =============================================================================

Offsets 0 and 8 and the lock itself are the stable contract every layout keeps (docs/guarantees.md,
guarantee 10): a process that meets a newer layout than it knows keeps rotating through them,
reports the mismatch once, and never writes anything else into the table — every other field
reads as zeros ("nothing known") and is never written. The file is created a whole page long,
written with real zeros (no hole), so a full disk fails at creation with ``ENOSPC`` — an error,
not a crash — and never later. Numbers read from the table are never trusted: anyone who may
write the file may write any pid.
"""

from __future__ import annotations

import enum
import errno
import os
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DIRTY",
    "KNOWN",
    "LAYOUT",
    "STAGED",
    "TABLE_END",
    "Field",
    "Keeper",
    "LockTable",
    "initialise",
]

LAYOUT = 2
KNOWN = 1  # state flag: the counters are a time-named set's (period key, count)
DIRTY = 2  # state flag: a step was in progress
STAGED = 4  # state flag: the counters are a size-rotated set's (see staging.IndexState)
_MAGIC = b"safe_rot"
_PAGE = 4096


class Field(enum.Enum):
    """Every field of the table: its offset, its ``struct`` format, and whether every layout
    keeps it (only those are used in a table of a newer layout)."""

    GENERATION = (0, "<Q", True)
    HOLDER = (8, "<Q", True)
    MARK = (16, "<8sII", False)  # magic, layout, reserved
    KEEPER = (32, "<QQQ", False)  # pid, max_bytes, backup_count
    SINCE = (56, "<d", False)  # when the holder took the lock
    SCHEDULE = (64, "<dQ", False)  # next rollover, signature
    STATE = (80, "<QQQQQQ", False)  # flags, then five counters
    FLAGS = (80, "<Q", False)  # the flags of STATE alone
    WANTED = (128, "<d", False)  # since when a writer waits

    def __init__(self, offset: int, layout: str, every_layout: bool) -> None:
        self.offset = offset
        self.codec = struct.Struct(layout)
        self.every_layout = every_layout


TABLE_END = max(field.offset + field.codec.size for field in Field)  # bytes of the table


@dataclass(frozen=True)
class Keeper:
    """Settings a live process registered in the sidecar (the largest ``backupCount`` wins)."""

    pid: int
    max_bytes: int
    backup_count: int


class LockTable:
    """The layout of one lock file's table, and its fields read and written by :class:`Field`.

    The descriptor is passed to each call: the lock moves to a new one whenever the file is
    replaced or the process forked, and the layout it learnt stays until it looks again."""

    def __init__(self) -> None:
        self.newer_layout: int | None = None  # set when the table has a layout we do not know

    def _in_use(self, field: Field) -> bool:
        return field.every_layout or self.newer_layout is None

    def read(self, fd: int, field: Field) -> tuple[Any, ...]:
        """The values of ``field``: zeros when ``fd`` is closed (-1), the table was cut short,
        or the field is not one every layout keeps and the layout is newer than ours."""
        codec = field.codec
        data = b""
        if fd >= 0 and self._in_use(field):
            data = os.pread(fd, codec.size, field.offset)
        return codec.unpack(data if len(data) == codec.size else bytes(codec.size))

    def write(self, fd: int, field: Field, *values: Any) -> None:
        """Write ``field`` — unless the layout is newer than ours and may use it otherwise."""
        if self._in_use(field):
            os.pwrite(fd, field.codec.pack(*values), field.offset)

    def check_layout(self, fd: int) -> None:
        """Learn the layout of the table on ``fd``, marking an older one as ours."""
        self.newer_layout = None  # until the mark says otherwise
        magic, layout, _ = self.read(fd, Field.MARK)
        if magic == _MAGIC and layout > LAYOUT:
            self.newer_layout = layout
        elif magic != _MAGIC or layout < LAYOUT:
            # A table from release 0.1.0 (only generation and holder) or zeros: mark it ours.
            # Layout 1 kept the same meaning for offsets 0-63 and zeros after them, which
            # layout 2 reads as "nothing known": upgrading in place is safe, and releases that
            # know only layout 1 and open the file later are told to upgrade.
            self.write(fd, Field.MARK, _MAGIC, LAYOUT, 0)


def initialise(fd: int) -> None:
    """Write a whole page of real bytes: a valid table, never a hole.

    Two processes may do this at once on a new file; both write the same layout and a fresh
    random generation, so the result is a valid table either way. Writers compare the
    generation only for a change, so a random start also invalidates what anybody cached from a
    table that was truncated under them.
    """
    page = bytearray(_PAGE)
    start = (int.from_bytes(os.urandom(8), "big") >> 2) + 1  # 62 random bits, never 0
    Field.GENERATION.codec.pack_into(page, Field.GENERATION.offset, start)
    Field.MARK.codec.pack_into(page, Field.MARK.offset, _MAGIC, LAYOUT, 0)
    written = os.pwrite(fd, page, 0)
    if written != len(page):  # a short write of the page
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
