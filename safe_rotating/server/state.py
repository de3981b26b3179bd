"""The journal: the last batch sequence number written for each client id.

A text file of lines ``CLIENT SEQ UNIXTIME``, appended with one ``O_APPEND`` write per round of
batches (after their records are written, before they are acknowledged). The newest line of a
client wins. At start-up, and whenever the file has grown well past what it describes, it is
rewritten with one line per client — to a temporary file, flushed to disk, then renamed over the
journal, so a crash leaves either the old or the new journal, never half of one. A line torn by
a crash or a full disk is skipped when read. Clients not seen for :data:`KEEP_SECONDS` are
forgotten at compaction.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable
from typing import Final

__all__ = ["CLIENT_ID", "KEEP_SECONDS", "Journal"]

CLIENT_ID: Final = re.compile(r"[0-9A-Za-z_.\-]{1,64}")
KEEP_SECONDS: Final = 30 * 86400
_COMPACT_AT: Final = 1024 * 1024  # bytes of journal before a compaction is considered
_LINE: Final = re.compile(rb"([0-9A-Za-z_.\-]{1,64}) (\d{1,19}) (\d{1,12})")


class Journal:
    """``last_seq`` per client id, kept in memory and on disk at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._last: dict[str, tuple[int, int]] = {}  # client -> (seq, unix time of the entry)
        self._fd = -1
        self._size = 0
        self._torn = False

    def __len__(self) -> int:
        return len(self._last)

    def last_seq(self, client: str) -> int:
        entry = self._last.get(client)
        return entry[0] if entry is not None else 0

    def open(self) -> None:
        """Read the journal, compact it and open it for appending."""
        self._last = {}
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        for line in data.split(b"\n"):
            match = _LINE.fullmatch(line)
            if match is None:
                continue  # torn by a crash or a full disk
            client = match.group(1).decode("ascii")
            seq, stamp = int(match.group(2)), int(match.group(3))
            if seq >= self.last_seq(client):
                self._last[client] = (seq, stamp)
        self.compact()

    def compact(self) -> None:
        """Rewrite the journal with one line per client, atomically."""
        cutoff = int(time.time()) - KEEP_SECONDS
        self._last = {c: e for c, e in self._last.items() if e[1] >= cutoff}
        data = "".join(f"{c} {seq} {stamp}\n" for c, (seq, stamp) in self._last.items()).encode()
        temporary = f"{self.path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        self._reopen()
        self._size = len(data)
        self._torn = False

    def _reopen(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def record(self, entries: Iterable[tuple[str, int]]) -> None:
        """Append ``(client, seq)`` entries with one write; raises ``OSError`` if not written.

        The in-memory table changes only once the entries are on their way to the file.
        """
        stamp = int(time.time())
        pairs = list(entries)
        if not pairs:
            return
        data = "".join(f"{client} {seq} {stamp}\n" for client, seq in pairs).encode()
        if self._torn:
            data = b"\n" + data
        if self._fd < 0:
            self._reopen()
        written = os.write(self._fd, data)
        if written != len(data):
            self._torn = True
            raise OSError(28, f"the journal {self.path!r} is full: {written} of {len(data)} bytes")
        self._torn = False
        self._size += written
        for client, seq in pairs:
            self._last[client] = (seq, stamp)
        if self._size > _COMPACT_AT and self._size > 4 * 40 * len(self._last):
            with contextlib.suppress(OSError):  # no room to compact: keep appending
                self.compact()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
