"""The sender thread: one loop that forms batches, keeps the connection, sends, reads acks,
notices stalls and outages, starts the replay of dead spools, and sleeps in ``poll`` until
something is due, the socket is ready, or ``emit`` writes on the wake-up pipe.

Busy, it makes no ``poll`` at all: every system call gives up the GIL, which a busy application
thread may then keep for a whole switch interval. The loop shares the :class:`.sender.Sender`'s
flags (``stopping``, ``finished``, ``wake_at``, ``flush_target``) and its one lock; it alone
touches the connection (:class:`.link.Link`).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from safe_rotating._client.config import describe
from safe_rotating._client.frames import rendered_item

if TYPE_CHECKING:
    from safe_rotating._client.sender import Sender

__all__ = ["SenderLoop"]

_BUG_PAUSE: Final = 5.0  # after an unforeseen error in the sender thread
_IDLE_WAIT: Final = 5.0  # longest sleep of the sender thread
_INF: Final = math.inf
_monotonic = time.monotonic


class SenderLoop:
    """What the sender thread of one :class:`Sender` runs (see the module docstring)."""

    def __init__(
        self, sender: Sender, fallback: Callable[[list[dict[str, Any]]], None] | None
    ) -> None:
        self.sender = sender
        self.config = sender.config
        self.ledger = sender.ledger
        self.stats = sender.stats
        self._fallback = fallback
        self._first_seen = 0.0  # when the thread first saw the oldest queued record

    def run(self) -> None:
        """The sender thread: the loop, kept going through bugs (reported once)."""
        sender = self.sender
        reported = False
        try:
            while True:
                try:
                    self._loop()
                    return
                except Exception as exc:  # a bug: say so once, keep going; nothing is lost
                    if sender.finished or sender.stopping or sender.pid != os.getpid():
                        return
                    if not reported:
                        reported = True
                        with contextlib.suppress(Exception):
                            sender.report(exc)
                    sender.link.disconnect(None)
                    time.sleep(_BUG_PAUSE)
        finally:
            sender.link.disconnect(None)
            if sender.finished:
                sender.close_pipe()

    def _loop(self) -> None:
        sender = self.sender
        poller = select.poll()
        poller.register(sender.wake_r, select.POLLIN)
        registered: int | None = None
        link, ledger, replay = sender.link, self.ledger, sender.replay
        while not sender.stopping and sender.pid == os.getpid():
            now = _monotonic()
            with sender.lock:
                if sender.finished:
                    return
                self._form(now, force=False)
            ledger.tell_problems()
            waiting = sender.queue or ledger.mem or ledger.disk
            if link.sock is None and (
                waiting if link.resting else now >= link.backoff.next_attempt
            ):
                if link.connect():  # a server is back: look for spools of dead processes
                    replay.next_scan = link.backoff.connected_at
                now = _monotonic()
            if link.sock is not None and (link.writable or link.out is None):
                link.send()
            if link.sock is not None and link.readable:
                link.receive()
            if link.sock is not None:
                link.check_stall(now)
            ledger.tell_problems()
            link.maybe_report_outage(now)
            if link.sock is not None and now >= replay.next_scan:
                replay.scan(now)

            timeout = self._timeout(now)
            if timeout > 0:
                queue = sender.queue
                sender.wake_at = 1 if not queue else self.config.batch_size
                if len(queue) >= sender.wake_at:  # an emit raced with us: do not sleep
                    timeout = 0.0
            if timeout == 0:
                # Busy: no poll (each system call may cost a switch interval of the GIL); just
                # try the socket both ways on the next round.
                sender.wake_at = _INF
                link.readable = link.writable = True
                continue
            # Sleep until something is due, the socket is ready, or emit wakes us.
            fd = link.sock.fileno() if link.sock is not None else None
            if fd != registered:
                if registered is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        poller.unregister(registered)
                if fd is not None:
                    poller.register(fd, select.POLLIN)
                registered = fd
            if fd is not None:
                mask = select.POLLIN | (select.POLLOUT if link.out is not None else 0)
                poller.modify(fd, mask)
            events = poller.poll(math.ceil(timeout * 1000))
            sender.wake_at = _INF
            for ready, event in events:
                if ready == sender.wake_r:
                    with contextlib.suppress(OSError):
                        while os.read(sender.wake_r, 4096):
                            pass
                elif ready == fd:
                    if event & (select.POLLIN | select.POLLERR | select.POLLHUP):
                        link.readable = True
                    if event & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                        link.writable = True

    def _timeout(self, now: float) -> float:
        sender = self.sender
        due = now + _IDLE_WAIT
        if sender.queue:
            if sender.flush_target > self.ledger.taken:
                return 0.0
            due = min(due, (self._first_seen or now) + self.config.flush_interval)
        link = sender.link
        if link.sock is None:
            if not link.resting:  # resting: the next record wakes the thread
                due = min(due, link.backoff.next_attempt)
        elif link.outstanding():
            due = min(due, link.last_progress + link.stall_after())
        due = min(due, link.outage.report_at())
        return max(0.0, due - now)

    # -- where new batches go (under the lock) ---------------------------------------------------
    def _form(self, now: float, force: bool) -> None:
        """Cut the queue into batches and put each where it belongs."""
        sender = self.sender
        queue = sender.queue
        if not queue:
            return
        if not self._first_seen:
            self._first_seen = now
        config = self.config
        ledger = self.ledger
        if not (
            force
            or len(queue) >= config.batch_size
            or now >= self._first_seen + config.flush_interval
            or sender.flush_target > ledger.taken
        ):
            return
        link = sender.link
        if link.fallback_active and self._fallback is not None:
            records = [rendered_item(queue.popleft()) for _ in range(len(queue))]
            ledger.taken += len(records)
            self._write_fallback(records)
        else:
            # To disk while no healthy connection takes batches, or memory holds too many.
            healthy = (link.sock is not None or link.resting) and not link.stalled
            spool_it = ledger.spooler.usable() and (
                not healthy or ledger.mem_records >= sender.queue_size // 2
            )
            ledger.place(ledger.batches(), spool_it)
        self._first_seen = now if queue else 0.0
        ledger.notify()

    def server_away(self) -> None:
        """A connection attempt failed: memory goes to the spool, or to the fallback file (and
        so do new records until a connection is made), or stays (neither is allowed)."""
        sender, ledger = self.sender, self.ledger
        with sender.lock:
            if self.config.spool_root is not None:
                ledger.spool_memory()
            elif self._fallback is not None:
                sender.link.fallback_active = True
                records = [r for batch in ledger.mem for r in ledger.records_of(batch)]
                first_pending = ledger.mem[0].first if ledger.mem else None
                ledger.mem.clear()
                ledger.mem_records = 0
                if records:
                    self._write_fallback(records)
                if first_pending is not None:
                    ledger.notify()

    def _write_fallback(self, records: list[dict[str, Any]]) -> None:
        assert self._fallback is not None
        try:
            self._fallback(records)
        except Exception as exc:
            self.ledger.problems.append(exc)
            self.ledger.cuts.append((len(records), f"the fallback file failed: {describe(exc)}"))
        else:
            self.stats.fallback += len(records)
