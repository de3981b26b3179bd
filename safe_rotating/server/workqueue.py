"""The bounded queue between the readers and the one writer.

Readers put :class:`Work` (the records of one batch, frame or syslog read) on the
:class:`WorkQueue`. When it holds ``queue_size`` records (or its byte budget), ``put`` waits: the
reader stops reading its socket, the kernel's receive buffer fills, and TCP stops the client.
That is the whole backpressure path; nothing is dropped on TCP.
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


class WorkQueue:
    """A FIFO bounded by records and bytes; one item larger than the bounds still fits alone.

    Only the event loop's thread uses it, so two events are all the synchronisation it needs.
    """

    def __init__(self, max_records: int, max_bytes: int = QUEUE_BYTES) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._items: deque[Work] = deque()
        self.records = 0
        self.bytes = 0
        self.closed = False
        self._has_items = asyncio.Event()
        self._has_space = asyncio.Event()

    def _fits(self, work: Work) -> bool:
        if not self._items:
            return True
        return (
            self.records + work.count <= self.max_records
            and self.bytes + work.size <= self.max_bytes
        )

    def _push(self, work: Work) -> None:
        self._items.append(work)
        self.records += work.count
        self.bytes += work.size
        self._has_items.set()

    async def put(self, work: Work) -> None:
        """Queue ``work``, waiting while the queue is full: this is the backpressure."""
        while not self._fits(work):
            self._has_space.clear()
            await self._has_space.wait()
        self._push(work)

    def put_nowait(self, work: Work) -> bool:
        """Queue ``work`` if it fits now (datagrams cannot wait); ``False`` if it does not."""
        if not self._fits(work):
            return False
        self._push(work)
        return True

    async def take(self, max_records: int) -> list[Work]:
        """Everything queued up to ``max_records`` (at least one item); ``[]`` once closed."""
        while not self._items and not self.closed:
            self._has_items.clear()
            await self._has_items.wait()
        taken: list[Work] = []
        count = 0
        clients: set[str] = set()
        while self._items and (not taken or count + self._items[0].count <= max_records):
            if self._items[0].client in clients:
                # At most one batch per client a round: the journal is written once a round,
                # so a crash between the write and the journal repeats one batch per client.
                break
            work = self._items.popleft()
            if work.client is not None:
                clients.add(work.client)
            taken.append(work)
            count += work.count
            self.records -= work.count
            self.bytes -= work.size
        self._has_space.set()
        return taken

    async def close(self) -> None:
        """No more work will come: ``take`` returns what is left, then ``[]``."""
        self.closed = True
        self._has_items.set()
