"""The bounded queue between the readers and the one writer, shared fairly between sources.

Readers put :class:`Work` (the records of one batch, frame or syslog read) on the
:class:`WorkQueue`. Each source (a connection; all datagrams together are one more) has its own
first-in, first-out line, and the writer's ``take`` serves the lines in turn, one item from each
before a second from any. A source that holds more than its share of the queue waits in ``put``:
its reader stops reading its socket, the kernel's receive buffer fills, and TCP stops that client
alone, while a client with nothing queued still gets in. That is the whole backpressure path;
nothing is dropped on TCP. (A reader that waits in ``put`` holding the server's ``admission``
lock holds the other readers up with it until the writer's next round; ``wait_share`` is the
wait to do before taking that lock.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["QUEUE_BYTES", "Work", "WorkQueue"]

QUEUE_BYTES: Final = 32 * 1024 * 1024  # payload bytes queued at most, whatever queue_size says


@dataclass(eq=False)
class Work:
    """Records for the writer, and what to do once they are written."""

    records: list[dict[str, Any]]
    size: int = 0  # bytes they arrived as: the queue's memory budget
    client: str | None = None  # a native batch: its client id and sequence number
    seq: int = 0
    done: Callable[[], None] | None = None  # called once written (or found a duplicate)
    received: float = field(default_factory=time.time)  # the server's clock when it arrived
    # Protocol 2: lines the client rendered (``records`` is then empty); see _rendered.py.
    rendered: Any = None
    # Who queued it (a connection, or None for datagrams): what a fair share is counted by.
    source: object | None = None

    @property
    def count(self) -> int:
        """How many records this is (what the queue and a round count)."""
        if self.rendered is not None:
            return int(self.rendered.count)
        return len(self.records)


@dataclass(eq=False)
class _Line:
    """One source's queued work, oldest first, and what it adds up to."""

    source: object | None
    items: deque[Work] = field(default_factory=deque)
    records: int = 0
    bytes: int = 0


class WorkQueue:
    """Work of many sources, bounded by records and bytes, taken in turns.

    Who may put (``put`` waits until it may; ``put_nowait`` says ``False`` instead):

    * a source with nothing queued: while the whole queue stays within twice its bounds, so a
      quiet client is never held back by a flood, and an empty queue takes any one item;
    * a source with work queued: while the whole queue stays within its bounds and the source
      within its share of them, the bounds divided by the number of sources with work queued.
      A flooder therefore waits once it holds its share, and the room the writer makes is left
      to the others.

    So the queue holds at most ``2 * max_records`` records and ``2 * max_bytes`` bytes (past
    ``max_records`` and ``max_bytes`` only by first items of sources that had nothing queued),
    or one larger item alone. Work of one source is taken in the order it was put.

    Only the event loop's thread uses it, so two events are all the synchronisation it needs.
    """

    def __init__(self, max_records: int, max_bytes: int = QUEUE_BYTES) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._lines: dict[object | None, _Line] = {}  # sources with work queued
        self._turns: deque[_Line] = deque()  # the same lines, the next one to serve first
        self.records = 0
        self.bytes = 0
        self.closed = False
        self._has_items = asyncio.Event()
        self._has_space = asyncio.Event()

    def held_by(self, source: object | None) -> tuple[int, int]:
        """Records and bytes ``source`` has queued."""
        line = self._lines.get(source)
        return (0, 0) if line is None else (line.records, line.bytes)

    def over_share(self, source: object | None) -> bool:
        """Does ``source`` hold its share of the queue or more (so its next ``put`` waits)?"""
        line = self._lines.get(source)
        if line is None:
            return False
        sources = len(self._lines)
        return line.records * sources >= self.max_records or line.bytes * sources >= self.max_bytes

    async def wait_share(self, source: object | None) -> None:
        """Wait until ``source`` holds less than its share.

        For a reader to call before it takes anything other readers wait for (the server's
        ``admission``): a flooder then waits alone, and the others' ``put`` goes on.
        """
        while self.over_share(source):
            self._has_space.clear()
            await self._has_space.wait()

    def _admits(self, work: Work) -> bool:
        records = self.records + work.count
        size = self.bytes + work.size
        line = self._lines.get(work.source)
        if line is None:  # nothing queued by this source: its first item goes in
            if not self._lines:
                return True
            return records <= 2 * self.max_records and size <= 2 * self.max_bytes
        if records > self.max_records or size > self.max_bytes:
            return False
        sources = len(self._lines)
        return (line.records + work.count) * sources <= self.max_records and (
            line.bytes + work.size
        ) * sources <= self.max_bytes

    def _push(self, work: Work) -> None:
        line = self._lines.get(work.source)
        if line is None:
            line = self._lines[work.source] = _Line(work.source)
            self._turns.append(line)
        line.items.append(work)
        line.records += work.count
        line.bytes += work.size
        self.records += work.count
        self.bytes += work.size
        self._has_items.set()

    async def put(self, work: Work) -> None:
        """Queue ``work``, waiting while its source may not: this is the backpressure."""
        while not self._admits(work):
            self._has_space.clear()
            await self._has_space.wait()
        self._push(work)

    def put_nowait(self, work: Work) -> bool:
        """Queue ``work`` if its source may now (datagrams cannot wait); ``False`` if not."""
        if not self._admits(work):
            return False
        self._push(work)
        return True

    async def take(self, max_records: int) -> list[Work]:
        """Up to ``max_records`` records (at least one item), the sources served in turns;
        ``[]`` once closed and empty.

        At most one batch of each native client a round: the journal is written once a round,
        so a crash between the write and the journal repeats at most one batch per client.
        """
        while not self._turns and not self.closed:
            self._has_items.clear()
            await self._has_items.wait()
        turns = self._turns
        taken: list[Work] = []
        count = 0
        clients: set[str] = set()
        passed = 0  # lines in a row whose next item has to wait for the next round
        while turns and passed < len(turns):
            line = turns[0]
            work = line.items[0]
            if taken and count + work.count > max_records:
                break  # the round is full; this line is served first next round
            if work.client is not None and work.client in clients:
                turns.rotate(-1)
                passed += 1
                continue
            passed = 0
            line.items.popleft()
            line.records -= work.count
            line.bytes -= work.size
            self.records -= work.count
            self.bytes -= work.size
            if work.client is not None:
                clients.add(work.client)
            taken.append(work)
            count += work.count
            if line.items:
                turns.rotate(-1)
            else:
                turns.popleft()
                del self._lines[line.source]
        self._has_space.set()
        return taken

    async def close(self) -> None:
        """No more work will come: ``take`` returns what is left, then ``[]``."""
        self.closed = True
        self._has_items.set()
