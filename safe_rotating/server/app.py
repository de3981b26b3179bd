"""The server: one asyncio process, many reader tasks, one bounded queue, one writer task.

::

    listeners ──accept──> one task per connection ──await put──> WorkQueue ──take──> Writer
    (TCP, Unix, UDP)      (frames, dialect, hello)   (bounded:       (records)     (format, engine,
                                                      waits when full)              journal, ack)

Start-up and shutdown are in :meth:`Server.start` and :meth:`Server.shutdown`, in the order
they happen; systemd hears of both (:mod:`safe_rotating.server.notify`). The parts are
elsewhere: the sockets in :mod:`safe_rotating.server.listeners`, what
connections share and the limits they live under in :mod:`safe_rotating.server.context`, the
connections themselves in :mod:`safe_rotating.server.stream` and the modules of each dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from typing import Any, Final

from safe_rotating._net.address import is_loopback
from safe_rotating._net.pickles import decode_pickle
from safe_rotating._net.syslog import parse as parse_syslog
from safe_rotating._net.tls import server_context
from safe_rotating._net.wire import LENGTH, ProtocolError
from safe_rotating.server.config import ServerConfig
from safe_rotating.server.context import ServerContext
from safe_rotating.server.forward import Forwarding
from safe_rotating.server.listeners import Listeners
from safe_rotating.server.metrics import render
from safe_rotating.server.notify import notify
from safe_rotating.server.peers import peer_host, shown_host
from safe_rotating.server.workqueue import Work
from safe_rotating.server.writer import Writer

__all__ = ["LINGER", "Server"]

LINGER: Final = 0.25  # seconds for bytes already sent to be read once stopping starts
_POLL: Final = 0.05  # seconds between looks at the connections while they finish


class Server(ServerContext):
    """Everything the server runs, and the order in which it starts and stops.

    It is the :class:`ServerContext` its connections are given: they see that interface only."""

    def __init__(self, config: ServerConfig, log: logging.Logger | None = None) -> None:
        super().__init__(config, log)
        self.writer = Writer(config, self.stats, self.journal, self.log)
        self.forwarding = Forwarding(config, self.log) if config.forward else None
        if self.forwarding is not None:
            self.writer.forward = self.forwarding.offer
        self.listeners = Listeners(self, self._pickle_datagram, self._syslog_datagram)
        self._started = time.monotonic()
        self._stop: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.exit_code = 0

    # -- start-up --------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener, open the journal and the file, start the writer, then accept.

        Binding comes first: a busy port (or a bad certificate) stops the start-up before it
        has created a lock, journal or janitor file beside the log. Connections wait in the
        backlog until the writer runs."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.listeners.open(self._tls_context())
        await self.listeners.open_metrics(self.metrics_page)
        self.journal.open()
        self.writer.open()
        self._writer_task = loop.create_task(self.writer.run(self.queue))
        self._writer_task.add_done_callback(self._writer_ended)
        if self.forwarding is not None:
            self.forwarding.start()
        await self.listeners.serve()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._signalled_stop)
        for signum in (signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(signum, self.writer.reopen)
        self._sweeper = loop.create_task(self.sweep())
        addresses = ", ".join(self.listeners.addresses)
        self.log.info("listening on %s; writing to %s", addresses, self.config.file)
        notify("READY=1", f"STATUS=listening on {addresses}; writing to {self.config.file}",
               log=self.log)  # fmt: skip

    def _tls_context(self) -> ssl.SSLContext | None:
        config = self.config
        if config.tls_cert is None:
            return None
        return server_context(config.tls_cert, config.tls_key, config.tls_client_ca)

    # -- datagrams -------------------------------------------------------------------------
    def _untokened_datagram(self, addr: Any) -> bool:
        """A datagram from a peer that may not send without the token: refused, counted."""
        if self.config.allows_untokened(addr, None):
            return False
        self.stats.refused["untokened peer"] += 1
        self.note(
            "untokened peer",
            f"refused a datagram from {addr}: --allow-untokened does not name it "
            "(the server has a token)",
        )
        return True

    def _queue_datagram(self, flat: dict[str, Any], size: int) -> None:
        self.stats.received += 1
        if self.stopping or not self.queue.put_nowait(Work([flat], size)):
            reason = "stopping" if self.stopping else "queue full"
            self.stats.dropped[reason] += 1
            self.note(f"dropped: {reason}", f"dropped a datagram: {reason}")

    def _pickle_datagram(self, data: bytes, addr: Any) -> None:
        if len(data) < 5 or LENGTH.unpack_from(data)[0] != len(data) - 4:
            self.stats.refused["bad datagram"] += 1
            self.note("bad datagram", f"refused a datagram from {addr}: not a length and a pickle")
            return
        if not (is_loopback(addr) or self.config.allow_remote_pickle):
            self.stats.refused["remote pickle"] += 1
            self.note("remote pickle", f"refused a pickle datagram from {addr}: not local")
            return
        if self._untokened_datagram(addr):
            return
        try:
            flat = decode_pickle(data[4:])
        except ProtocolError as exc:
            self.stats.refused[exc.reason] += 1
            self.note(exc.reason, f"refused a datagram from {addr}: {exc.detail}")
            return
        flat["host"] = peer_host(addr, self.hostname)
        flat["app"] = "-"
        self._queue_datagram(flat, len(data))

    def _syslog_datagram(self, data: bytes, addr: Any) -> None:
        if self._untokened_datagram(addr):
            return
        now = time.time()
        flat = parse_syslog(data, now).to_record(now, peer_host(addr, self.hostname))
        if self.config.token is not None:
            flat["host"] = shown_host(flat["host"], addr, self.hostname, True)
        self._queue_datagram(flat, len(data))

    # -- running ---------------------------------------------------------------------------
    def metrics_page(self) -> str:
        page = render(
            self.stats,
            self.queue.records,
            len(self.connections),
            self.writer.file_stats(),
            self.frame_bytes,
        )
        return page + (self.forwarding.metrics() if self.forwarding is not None else "")

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _signalled_stop(self) -> None:
        """SIGTERM/SIGINT: a clean stop; a second one while stopping: exit now."""
        if not self.stopping:
            self.request_stop()
            return
        self.log.error(
            "second stop signal: exiting now; %d queued record(s) not written",
            self.queue.records,
        )
        logging.shutdown()
        os._exit(1)

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping:
            return
        failure = None if task.cancelled() else task.exception()
        self.log.critical("the writer stopped unexpectedly: %r; shutting down", failure)
        self.exit_code = 1
        self.request_stop()

    async def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT, shut down; the exit status."""
        try:
            await self.start()
        except BaseException:
            await self._abandon_start()
            raise
        assert self._stop is not None
        await self._stop.wait()
        await self.shutdown()
        return self.exit_code

    async def _abandon_start(self) -> None:
        """Undo a start-up that failed (a busy port, a bad certificate): close what opened."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.listeners.close()
        self.listeners.unlink()
        await self.queue.close()
        if self._writer_task is not None:
            with contextlib.suppress(Exception):
                await self._writer_task
        if self.forwarding is not None:
            await self.forwarding.abort()

    # -- shutdown ----------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop accepting, let readers finish, drain the queue, close the files, summarise."""
        begun = time.monotonic()
        deadline = begun + self.config.drain_timeout
        self.log.info("stopping: reading what clients already sent, then writing it")
        notify("STOPPING=1", "STATUS=stopping: writing what clients sent", log=self.log)

        # 1. Stop accepting: no new connections, no new datagrams.
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.listeners.close()

        # 2. Let readers finish what is buffered (bounded): a connection that stays idle for
        #    LINGER has nothing more on its way; one mid-frame gets until the deadline.
        await asyncio.sleep(LINGER)
        while time.monotonic() < deadline:
            running = [c for c in self.connections if c.task is not None and not c.task.done()]
            if not running:
                break
            for connection in running:
                if connection.idle and connection.task is not None:
                    connection.task.cancel()
            await asyncio.wait([c.task for c in running if c.task is not None], timeout=_POLL)
        tasks = [c.task for c in self.connections if c.task is not None and not c.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

        # 3. Drain the queue: the writer takes what is left, then closes the files and the
        #    journal. A write still failing (full disk) is retried until the deadline.
        self.writer.give_up_at = max(deadline, time.monotonic() + 1.0)
        await self.queue.close()
        if self._writer_task is not None:
            with contextlib.suppress(Exception):
                await self._writer_task

        # 4. Close the connections (their last acks are in their buffers) and the sockets.
        for connection in list(self.connections):
            connection.close()
        self.connections.clear()
        await self.listeners.wait_closed()
        self.listeners.unlink()
        await asyncio.sleep(0)  # let the transports flush and close

        # 4b. --forward: send what the relays have not had yet, within the drain deadline.
        if self.forwarding is not None:
            await self.forwarding.close(max(deadline, time.monotonic() + 1.0))

        # 5. One summary line.
        stats = self.stats
        self.log.info(
            "stopped: received %d, written %d, duplicates %d, refused %d, dropped %d "
            "in %.1f s (shutdown %.2f s)",
            stats.received,
            stats.written,
            stats.duplicates,
            stats.refused_total,
            stats.dropped_total,
            time.monotonic() - self._started,
            time.monotonic() - begun,
        )
