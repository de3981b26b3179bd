"""The sending half of :class:`safe_rotating.client.LogServerHandler`: one per process.

``emit`` (on the application's threads) only appends a flattened record to :attr:`Sender.queue`
— no lock, no system call, except a one-byte write on a pipe to wake the sender thread when the
queue turns non-empty. The sender thread does everything else, with these parts:

* **Batching and the ledger** (:mod:`.ledger`). Records are encoded and cut into batches of at
  most ``batch_size`` records (and about :data:`~.frames.BATCH_BYTES`; one record alone may be
  longer), at the latest ``flush_interval`` after the first of them was seen. Every batch gets
  the next sequence number of this process's client id, and is kept until the server
  acknowledges it: on disk (the spool, :mod:`.spooler`) or in memory.
* **Connection** (:mod:`.link`). ``hello`` → ``welcome`` (blocking, bounded by
  ``ack_timeout``), then a non-blocking socket driven by ``poll``: frames go out in sequence
  order, many in one ``send`` (every system call gives up the GIL, which a busy application
  thread may then keep for a whole switch interval), acks come back and release batches. A lost
  connection is retried with exponential backoff and jitter (:mod:`safe_rotating._common.backoff`);
  ``welcome.last_seq`` says which batches the server already wrote, and the rest are sent again.
* **Spool.** While no connection is up, or no ack came for ``ack_timeout``, or memory holds
  more than half of ``queue_size``, batches go to the spool (see :mod:`.spool`) instead of
  memory; they are sent from there when the server takes them again. Spools left by dead
  processes are replayed by a second, short-lived thread over its own connection
  (:mod:`.replay`).

This module is the coordinator: the thread's loop, and what the caller's threads wait for
(room, flush, hand-over, delivery at close), all on the ledger's one lock and condition.

Fork: a ``Sender`` belongs to the process that made it (:attr:`Sender.pid`). The handler
compares the pid on every use; in a child it calls :meth:`Sender.abandon` on the parent's object
(closing inherited descriptors only: the parent owns the records, the socket and the spool) and
starts a new ``Sender`` with a new client id. ``os.register_at_fork`` is only the fast path.
In a uWSGI master, which forks its workers from C, no thread is started at all
(:meth:`Sender.write_direct`).
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401 - imported now: a lazy import of it fails in threads after fork
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from safe_rotating._client import spool as _spool
from safe_rotating._client.config import ClientStats, Config, Leftover
from safe_rotating._client.frames import Item
from safe_rotating._client.hooks import in_uwsgi_master
from safe_rotating._client.ledger import Ledger
from safe_rotating._client.link import Link
from safe_rotating._client.loop import SenderLoop
from safe_rotating._client.replay import Replayer

__all__ = ["Sender"]

_REPORT_OUTAGE_AFTER: Final = 10.0  # an outage is reported once it lasts this long
_INF: Final = math.inf
_monotonic = time.monotonic


class Sender:
    """Queue, ledger, spool, connection and thread of one process (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        report: Callable[[BaseException], None],
        dropped: Callable[[int, str], None],
        fallback: Callable[[list[dict[str, Any]]], None] | None,
    ) -> None:
        self.pid = os.getpid()
        self.config = config
        self.report = report
        self._fallback = fallback
        self.host = socket.gethostname()
        self.stats = ClientStats()
        identity = _spool.Identity(self.pid, self.host, config.app, config.address)
        self.ledger = ledger = Ledger(config, identity, self.stats, report, dropped)
        self.lock = ledger.lock  # the ledger, the queue's consumers and the spool
        self.queue = ledger.queue  # emit appends here, without the lock
        self.queue_size = config.queue_size
        self.wake_at = _INF  # emit wakes the thread when len(queue) reaches this
        self.enqueued = 0  # records appended by emit (their index is their position)
        self.flush_target = 0
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.finished = False
        self._start_lock = threading.Lock()
        self.wake_r = -1
        self._wake_w = -1
        self.loop = loop = SenderLoop(self, fallback)
        self.link = Link(
            config,
            ledger,
            self.host,
            report,
            loop.server_away,
            lambda: self.finished,
            fallback is not None,
            _REPORT_OUTAGE_AFTER,
        )
        self.replay = Replayer(config, ledger, self.host, report, dropped, lambda: self.stopping)
        # No thread in a uWSGI master: its records go straight to the spool (write_direct).
        self.direct = in_uwsgi_master()
        self.direct_ids: set[str] = set()  # ids write_direct left records under
        self.direct_full = False  # write_direct's last refusal: spool_max_bytes was reached

    @property
    def client(self) -> str:
        """The id of this process's sequence space."""
        return self.ledger.client

    @property
    def spool_dir(self) -> str | None:
        return self.ledger.spooler.spool_dir

    # -- caller side -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._start_lock:
            if self.thread is not None:
                return
            self.wake_r, self._wake_w = os.pipe()
            os.set_blocking(self.wake_r, False)
            os.set_blocking(self._wake_w, False)
            thread = threading.Thread(
                target=self.loop.run, name="safe_rotating-sender", daemon=True
            )
            thread.start()
            self.thread = thread

    def write_direct(self, flat: Item) -> bool:
        """Without a sender thread: append one record to the spool right away, leaving the
        spool unlocked so that any other client on the directory (a worker) delivers it.
        A local append, never network I/O. False if there is no spool to write to, or no room
        in it (:attr:`direct_full`): the master's records stay within ``spool_max_bytes``."""
        ledger = self.ledger
        with self.lock:
            written = False
            if not (self.config.spool_root is None or self.finished or not ledger.spooler.usable()):
                outcome = ledger.append_direct(flat, self.direct_ids)
                self.direct_full = outcome == _spool.FULL
                if outcome == _spool.APPENDED:
                    self.enqueued += 1
                    written = True
        ledger.tell_problems()
        return written

    def wake(self) -> None:
        self.wake_at = _INF
        try:  # noqa: SIM105 - on emit's path: cheaper than contextlib.suppress
            os.write(self._wake_w, b"!")
        except OSError:  # the pipe is full (the thread will wake anyway) or closed
            pass

    def full(self) -> bool:
        return len(self.queue) + self.ledger.mem_records >= self.queue_size

    def make_room(self) -> bool:
        """Memory is full: move what it holds to the spool, on this (the caller's) thread.

        Local file appends only, never network I/O: first the batches in memory (already
        encoded: one write), and only if that is not enough, the queue. False if there is no
        usable room in the spool."""
        ledger = self.ledger
        with self.lock:
            if self.finished or not ledger.spooler.usable():
                return False
            if ledger.spool_memory() and self.full():
                ledger.spool_everything()
            room = not self.full()
        ledger.tell_problems()
        return room

    def wait_for_room(self, timeout: float) -> bool:
        deadline = _monotonic() + timeout
        self.wake()
        with self.lock:
            if not self.ledger.wait_while(lambda: self.full() and not self.finished, deadline):
                return False
        return not self.full()

    def flush(self, timeout: float) -> bool:
        """Wait until every record emitted so far is acknowledged or spooled (or dropped or in
        the fallback file); at the deadline, spool what is still only in memory. True if
        everything was settled without needing that."""
        if self.thread is None:
            return True
        target = self.enqueued
        deadline = _monotonic() + timeout
        ledger = self.ledger
        with self.lock:
            self.flush_target = max(self.flush_target, target)
        self.wake()
        thread = self.thread
        with self.lock:
            ledger.wait_while(lambda: ledger.settled() < target and thread.is_alive(), deadline)
            done = ledger.settled() >= target
            if not done and not self.finished and ledger.spooler.usable():
                ledger.spool_everything()
        ledger.tell_problems()
        return done

    def _handed_over(self) -> int:
        """Index below which every record is settled or in a batch this connection has written
        whole to its socket: out of this process's memory, for the kernel to deliver even if
        the process ends now. Call under the lock."""
        return self.ledger.handed_over(self.link.handed_over_seq())

    def hand_over(self, timeout: float) -> None:
        """Get every record emitted so far out of this process's memory: sent to the server's
        socket or spooled, without waiting for its ack — for a host that may end this process
        without running any exit hook (a uWSGI worker: see ``hooks.after_uwsgi_request``).
        Does nothing while the server is away (see below); spools at ``timeout`` what is still
        not sent."""
        if self.thread is None or self.finished:
            return
        target = self.enqueued
        outage = self.link.outage
        with self.lock:
            # While the server is away, records wait as they always do (in memory, then the
            # spool when memory fills): spooling after every request then kept a worker's
            # sender from reconnecting for seconds (seen in the restart tests under load).
            if self._handed_over() >= target or outage.since is not None:
                return
            self.flush_target = max(self.flush_target, target)
        self.wake()
        deadline = _monotonic() + timeout
        thread = self.thread
        ledger = self.ledger
        with self.lock:
            # A connection being made is waited for; a server found away is not.
            ledger.wait_while(
                lambda: self._handed_over() < target and outage.since is None and thread.is_alive(),
                deadline,
            )
            if self._handed_over() < target and not self.finished and ledger.spooler.usable():
                ledger.spool_everything()
        ledger.tell_problems()

    def close(self, timeout: float) -> Leftover:
        """Deliver (bounded by ``timeout``), stop the thread, spool whatever is left.

        Delivered means acknowledged by the server: what is queued, in memory *and in this
        process's spool* is sent while the deadline allows, the server being retried every
        :data:`~.link.BACKOFF_MAX` at most, so a server that restarts meanwhile still gets it
        all. Returns what was not delivered (see :class:`Leftover`); the caller reports it."""
        left = Leftover()
        if self.thread is not None:
            deadline = _monotonic() + timeout
            self.flush(timeout)
            self._deliver(deadline)
            self.stopping = True
            self.wake()
            self.thread.join(min(timeout, 1.0) if timeout > 0 else 0.5)
        ledger = self.ledger
        with self.lock:
            if self.finished:
                return left
            lost = ledger.close()
            left.spooled = sum(batch.count for batch in ledger.disk)
            left.spool_dir = ledger.spooler.spool_dir
            left.client = ledger.client
            link = self.link
            left.reason = link.outage.reason if link.sock is None else "not acknowledged in time"
            self.finished = True
            self.replay.close_fds()
            if self.thread is None or not self.thread.is_alive():
                self.close_pipe()
            ledger.changed.notify_all()
        ledger.tell_problems()
        if lost and self._fallback is not None:
            try:
                self._fallback(lost)
            except Exception as exc:
                self.report(exc)
            else:
                self.stats.fallback += len(lost)
                return left
        left.lost = len(lost)
        return left

    def _deliver(self, deadline: float) -> None:
        """Before closing: wait until the server has acknowledged everything queued, in memory
        or spooled, or until ``deadline``. An unreachable server is retried meanwhile (the
        thread's backoff is at most :data:`~.link.BACKOFF_MAX`): it may be restarting. A replay
        of dead spools under way may finish too."""
        thread = self.thread
        assert thread is not None
        ledger = self.ledger
        with self.lock:
            ledger.wait_while(
                lambda: bool(ledger.disk or ledger.mem or self.queue) and thread.is_alive(),
                deadline,
            )
        replayer = self.replay.thread
        if replayer is not None:  # and let a replay of dead spools that is under way finish
            replayer.join(max(0.0, deadline - _monotonic()))

    def abandon(self) -> None:
        """In a forked child: drop this (the parent's) state, closing inherited descriptors only.

        Never takes a lock: a thread of the parent may have held one at the fork."""
        self.finished = True
        self.stopping = True
        self.queue = deque()
        self.ledger.abandon()
        self.link.abandon()
        self.replay.close_fds()
        self.close_pipe()

    def snapshot(self) -> ClientStats:
        stats = ClientStats(**vars(self.stats))
        stats.queued = self.enqueued
        stats.sent += self.replay.sent
        stats.replayed += self.replay.acked
        with self.lock:
            stats.pending = self.ledger.pending()
        return stats

    def close_pipe(self) -> None:
        for fd in (self.wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.wake_r = self._wake_w = -1
