"""The sender's ledger: every record from ``emit`` until the server acknowledged it.

Records wait in :attr:`Ledger.queue` (appended by ``emit``, without the lock), are cut into
batches with consecutive sequence numbers, and are kept in one ordered ledger: a prefix of
batches on disk (:attr:`Ledger.disk`, in this process's spool) followed by batches in memory
(:attr:`Ledger.mem`). A batch moves to disk only after every older batch has, so a spool never
has a gap that a crash could leave unfilled; an ack of ``n`` releases every batch up to ``n``.

Everything here runs under :attr:`Ledger.lock` (the queue's consumers, the ledger and the
spool), except where a method says otherwise. Problems found under the lock are kept in
:attr:`Ledger.problems` and :attr:`Ledger.cuts` and told by :meth:`Ledger.tell_problems` once
it is released.
"""

from __future__ import annotations

import errno
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from safe_rotating._client import spool as _spool
from safe_rotating._client.config import ClientStats, Config
from safe_rotating._client.frames import (
    Batch,
    Item,
    batch_frame,
    encode_record,
    flats_of,
    rendered_item,
    take_flat,
    take_rendered,
)
from safe_rotating._client.spooler import Spooler
from safe_rotating._net import rendered as _rendered

__all__ = ["NO_LIMIT", "Batch", "Ledger"]

NO_LIMIT: Final = 1 << 62
_monotonic = time.monotonic


class Ledger:
    """Queue, batches, sequence numbers and the spool of one sender (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        identity: _spool.Identity,
        stats: ClientStats,
        report: Callable[[BaseException], None],
        dropped: Callable[[int, str], None],
    ) -> None:
        self.config = config
        self.stats = stats
        self._report = report
        self._dropped = dropped
        self.client = uuid.uuid4().hex
        self.queue: deque[Item] = deque()
        self.taken = 0  # records taken off the queue (batched or dropped)
        self.mem_records = 0
        self.mem: deque[Batch] = deque()
        self.disk: deque[Batch] = deque()
        self.next_seq = 1
        self.lock = threading.Lock()  # the ledger, the queue's consumers and the spool
        self.changed = threading.Condition(self.lock)  # room or settled records, for waiters
        self.waiters = 0
        self.frame_limit = NO_LIMIT  # the longest frame the last server took
        self.problems: list[BaseException] = []  # found under the lock, reported after it
        self.cuts: list[tuple[int, str]] = []
        self.spooler = Spooler(config, identity, stats, self.problems)

    # -- waiting and telling ---------------------------------------------------------------------
    def notify(self) -> None:
        if self.waiters:
            self.changed.notify_all()

    def wait_while(self, pending: Callable[[], bool], deadline: float) -> bool:
        """Under the lock: wait while ``pending()`` (woken through :attr:`changed`, looking
        again every 50 ms at most); False if ``deadline`` came first."""
        self.waiters += 1
        try:
            while pending():
                left = deadline - _monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.05))
            return True
        finally:
            self.waiters -= 1

    def tell_problems(self) -> None:
        """Report what went wrong under the lock, now that it is released."""
        try:
            while self.problems:
                self._report(self.problems.pop(0))
            while self.cuts:
                count, reason = self.cuts.pop(0)
                self._dropped(count, reason)
        except IndexError:  # another thread told them meanwhile
            pass

    # -- where records are -----------------------------------------------------------------------
    def settled(self) -> int:
        """Index below which every record is acknowledged, spooled, dropped or written to the
        fallback file (records are numbered in emit order)."""
        if self.mem:
            return self.mem[0].first
        return self.taken

    def handed_over(self, send_seq: int) -> int:
        """Index below which every record is settled (see :meth:`settled`) or in a batch
        before ``send_seq``, the first batch the connection has not written whole to its
        socket (0: no connection)."""
        for batch in self.mem:
            if batch.seq >= send_seq:
                return batch.first
        return self.taken

    def first_unacked(self) -> int:
        """Sequence number of the oldest batch not acknowledged (safe without the lock: a
        caller moving batches to disk never leaves one in neither ledger)."""
        for ledger in (self.disk, self.mem):
            try:
                return ledger[0].seq
            except IndexError:
                pass
        return self.next_seq

    def pending(self) -> int:
        """Records accepted and not settled for good: queued, in memory or spooled."""
        return len(self.queue) + self.mem_records + sum(b.count for b in self.disk)

    # -- batching --------------------------------------------------------------------------------
    def batches(self) -> list[Batch]:
        """The records queued now, cut into batches. Records queued meanwhile wait for the next
        call: an application logging as fast as we encode must not keep us here."""
        batches: list[Batch] = []
        left = len(self.queue)
        while left > 0:
            batch = self._take_batch(left)
            if batch is None:
                break
            batches.append(batch)
            left -= batch.count
        return batches

    def _take_batch(self, most: int) -> Batch | None:
        """The next batch from the queue: up to ``most`` (at most ``batch_size``) records and
        :data:`BATCH_BYTES`, all flat or all rendered."""
        queue = self.queue
        if not queue:
            return None
        most = min(most, self.config.batch_size)
        if isinstance(queue[0], tuple):
            texts, levels, created, names = take_rendered(queue, most, self.frame_limit)
            seq = self.next_seq
            self.next_seq += 1
            count = len(texts)
            frame = _rendered.encode_batch(self.client, seq, texts, levels, names, created)
        else:
            records = take_flat(queue, most, self.frame_limit)
            seq = self.next_seq
            self.next_seq += 1
            count = len(records)
            frame = batch_frame(self.client, seq, records)
        batch = Batch(seq, count, self.taken, frame)
        self.taken += count
        return batch

    @staticmethod
    def records_of(batch: Batch) -> list[dict[str, Any]]:
        frame = batch.frame
        if frame is None:
            return []  # on disk: not lost
        return flats_of(frame)

    # -- memory and disk -------------------------------------------------------------------------
    def place(self, batches: list[Batch], spool_it: bool) -> None:
        """New batches (newest last) to the spool if ``spool_it`` and all older ones are there,
        else to memory."""
        if spool_it and self.spool_memory():
            stored = self.spooler.store(batches, self.client)
            self.disk.extend(batches[:stored])
            batches = batches[stored:]
        for batch in batches:
            self.mem.append(batch)
            self.mem_records += batch.count

    def spool_everything(self) -> None:
        """Memory and queue to the spool, in order, as far as the spool takes them."""
        if self.spool_memory():
            self.place(self.batches(), spool_it=True)
        self.notify()

    def spool_memory(self) -> bool:
        """Move every in-memory batch to the spool, oldest first; False if not all fit."""
        mem = self.mem
        if not mem:
            return True
        stored = self.spooler.store(list(mem), self.client)
        for _ in range(stored):
            batch = mem[0]
            self.disk.append(batch)  # first on disk, then off memory: never in neither
            mem.popleft()
            self.mem_records -= batch.count
        if stored:
            self.notify()
        return not mem

    def append_direct(self, flat: Item, ids: set[str]) -> str | None:
        """Append one record to the spool at once, leaving it unlocked (see
        :func:`_spool.append_unlocked`; ``ids``: the client ids used so far). Returns the
        outcome, or None if the spool could not be written (a problem to tell)."""
        data = encode_record(flat) if isinstance(flat, dict) else b""
        try:
            for _ in range(2):
                outcome = self.spooler.append_unlocked(flat, data, self.client, self.next_seq, ids)
                if outcome != _spool.BUSY:
                    break
                # Someone is delivering this spool right now: go on under a new id.
                self.client = uuid.uuid4().hex
                self.next_seq = 1
        except OSError as exc:
            self.spooler.direct_failed(exc)
            return None
        if outcome == _spool.APPENDED:
            self.next_seq += 1
            self.taken += 1
            self.stats.spooled += 1
        return outcome

    # -- acknowledgements and sending ------------------------------------------------------------
    def acked(self, seq: int) -> None:
        """The server wrote every batch up to ``seq``: release them."""
        disk, mem = self.disk, self.mem
        stats = self.stats
        spool = self.spooler.spool
        while disk and disk[0].seq <= seq:
            batch = disk.popleft()
            stats.acked += batch.count
            if batch.from_disk:
                stats.replayed += batch.count
            if spool is not None:
                spool.release(batch.segment)
        while mem and mem[0].seq <= seq:
            batch = mem.popleft()
            self.mem_records -= batch.count
            stats.acked += batch.count
        if seq >= self.next_seq:  # a server that knows more of this id than we made
            self.next_seq = seq + 1
        self.notify()

    def _batch_at(self, seq: int) -> Batch | None:
        disk, mem = self.disk, self.mem
        first = self.first_unacked()
        index = seq - first
        if index < 0:
            return None
        if index < len(disk):
            return disk[index]
        if index - len(disk) < len(mem):
            return mem[index - len(disk)]
        return None

    def frames_from(self, seq: int, budget: int) -> list[tuple[Batch, bytes]]:
        """The next batches from ``seq`` with their frames, up to about ``budget`` bytes.

        Spooled batches that lie one after the other in a segment are read with one ``pread``.
        """
        found: list[tuple[Batch, bytes]] = []
        size = 0
        while size < budget:
            batch = self._batch_at(seq)
            if batch is None:
                break
            if batch.frame is not None:
                found.append((batch, batch.frame))
                size += batch.length
                seq += 1
                continue
            run = [batch]
            end = batch.offset + batch.length
            while size + end - batch.offset < budget:
                after = self._batch_at(seq + len(run))
                if (
                    after is None
                    or after.frame is not None
                    or after.segment != batch.segment
                    or after.offset != end
                ):
                    break
                run.append(after)
                end += after.length
            try:
                spool = self.spooler.spool
                assert spool is not None
                data = spool.read(batch.segment, batch.offset, end - batch.offset)
            except (OSError, KeyError, AssertionError) as exc:
                # The spool file was damaged or removed under us: its records are gone. Send
                # the batches empty, so the sequence stays whole, and say what was lost.
                self.problems.append(OSError(errno.EIO, f"the spool could not be read: {exc}"))
                for lost in run:
                    self.cuts.append((lost.count, "the spool file was damaged or removed"))
                    lost.count = 0
                    lost.frame = batch_frame(self.client, lost.seq, [])
                    lost.length = len(lost.frame)
                continue  # the same batches again, now in memory
            view = memoryview(data)
            at = 0
            for item in run:
                item.from_disk = True
                found.append((item, bytes(view[at : at + item.length])))
                at += item.length
            size += end - batch.offset
            seq += len(run)
        return found

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> list[dict[str, Any]]:
        """Spool what memory and the queue hold, as far as the spool takes it, and close the
        spool; returns the records that had nowhere to go, which the ledger forgets."""
        if self.spooler.usable():
            self.spool_everything()
        lost = [record for batch in self.mem for record in self.records_of(batch)]
        lost += map(rendered_item, self.queue)
        self.queue.clear()
        self.mem.clear()
        self.mem_records = 0
        self.spooler.close()
        return lost

    def abandon(self) -> None:
        """In a forked child: drop the parent's records, closing inherited descriptors only.
        Never takes a lock: a thread of the parent may have held one at the fork."""
        self.queue = deque()
        self.mem = deque()
        self.disk = deque()
        self.spooler.abandon()
