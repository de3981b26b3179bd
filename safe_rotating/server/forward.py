"""``--forward``: a copy of every written record, as RFC 5424 syslog over TCP, to relays.

::

    Writer ──offer(records)──> Forwarding ──RFC 5424, octet counted──> one Target per relay
    (after the file write;     (its own task: formats each              (a bounded queue, and a
     a call that never waits)   record once for every relay)             task that connects,
                                                                         sends and reconnects)

The writer hands over each round's records after they are in the file, with a call that only
appends to a list: no formatting, no network, no waiting. A task formats them (docs/protocol.md,
"Syslog output") and puts the same bytes on each relay's queue.

Each relay's queue is bounded by ``--forward-queue`` records and :data:`QUEUE_BYTES` bytes.
While its relay is down or slower than the server, records wait there; once it is full, **new
records are dropped** and the ones already queued are kept: when the relay returns it gets an
unbroken run from the start of the outage, followed by the records of after the queue has room
again; the gap lies between them, and the local file has everything. Drops are counted in
``forward_records_dropped_total{reason="queue_full"}`` and reported on stderr once per episode
(when the first record is dropped, and when the queue has emptied again, with the count).

A relay's task connects (TCP, or TLS with ``--forward-tls``), sends batches, and on a failure
reconnects after 0.2 s, doubling up to 10 s (with jitter, so a fleet does not reconnect in
step). A relay that closes the connection is noticed at once, even while nothing is being sent,
so an idle connection broken by a relay's restart costs no record. Records are taken off the
queue only once written to the connection (a batch in flight when the loss is noticed is sent
again, and may arrive twice); what the kernel still held when a connection broke is lost:
syslog over TCP has no acknowledgements.

At shutdown, once the writer is done, the queues are flushed until the drain deadline; whatever
is left then is counted in ``forward_records_dropped_total{reason="not_sent_at_shutdown"}`` and
reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
import time
from collections import Counter, deque
from typing import Any, Final

from safe_rotating._common.backoff import Backoff
from safe_rotating._common.episode import Episode
from safe_rotating._net.address import Address
from safe_rotating._net.syslog import format_rfc5424, octet_frame
from safe_rotating._net.tls import client_context
from safe_rotating.server.config import ServerConfig
from safe_rotating.server.prometheus import family, label, reason_samples

__all__ = ["DROPPED_REASONS", "QUEUE_BYTES", "Forwarding", "Target"]

QUEUE_BYTES: Final = 64 * 1024 * 1024  # formatted bytes queued per relay at most
RETRY_FIRST: Final = 0.2  # seconds before the first reconnect
RETRY_MOST: Final = 10.0  # the longest wait between reconnects
RETRY_AT_SHUTDOWN: Final = 0.5  # the longest wait between reconnects while flushing at shutdown
STABLE: Final = 10.0  # seconds a connection must last for the backoff to start over
CONNECT_TIMEOUT: Final = 10.0
SEND_RECORDS: Final = 1024  # records written to the connection at a time, at most
SEND_BYTES: Final = 256 * 1024  # ... and bytes
FORMAT_RECORDS: Final = 512  # records formatted between two chances for other tasks to run
# Why a record was not forwarded; each relay exports all of them from the start, at 0.
DROPPED_REASONS: Final = ("not formattable", "not sent at shutdown", "queue full")

Records = list[dict[str, Any]]


class _Link(asyncio.Protocol):
    """One connection to a relay. Nothing is read (relays send nothing); loss is noticed."""

    def __init__(self, wake: asyncio.Event) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.closed = False
        self.gone = asyncio.Event()  # set once the connection is closed and its buffer sent
        self.error: BaseException | None = None
        self._wake = wake
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass  # a relay has nothing to say; ignore anything it sends

    def eof_received(self) -> bool:
        return False  # the relay closed its side: close ours

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = exc
        self.gone.set()
        self._writable.set()
        self._wake.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark (always yields once)."""
        await asyncio.sleep(0)
        await self._writable.wait()

    def why(self) -> str:
        return str(self.error) if self.error is not None else "closed by the relay"


class Target:
    """One relay: its bounded queue of framed messages, its connection and its counters."""

    def __init__(
        self,
        address: Address,
        max_records: int,
        log: logging.Logger,
        *,
        tls: bool = False,
        max_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.address = address
        self.name = str(address)
        self.tls = tls
        self.context: ssl.SSLContext | None = None  # set by Forwarding.start when tls
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.log = log
        self.queue: deque[bytes] = deque()
        self.bytes = 0
        self.forwarded = 0
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROPPED_REASONS, 0))
        self.connected = False
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # records queued, or the connection lost
        self._stopping = asyncio.Event()  # shutdown began: cut a backoff short
        self._link: _Link | None = None
        self._outage: Episode | None = None
        self._ever_connected = False
        self._drops: Episode | None = None  # records dropped while the queue is full

    # -- the queue -------------------------------------------------------------------------
    def push(self, messages: list[bytes], size: int) -> None:
        """Queue framed messages (``size`` bytes in all); once full, the newest are dropped."""
        queue = self.queue
        if len(queue) + len(messages) <= self.max_records and self.bytes + size <= self.max_bytes:
            queue.extend(messages)
            self.bytes += size
        else:
            kept = 0
            for message in messages:
                if len(queue) < self.max_records and self.bytes + len(message) <= self.max_bytes:
                    queue.append(message)
                    self.bytes += len(message)
                    kept += 1
            self._dropped(len(messages) - kept)
        self._wake.set()

    def _dropped(self, count: int) -> None:
        if not count:
            return
        self.dropped["queue full"] += count
        if self._drops is not None:
            self._drops.count += count
        else:
            self._drops = Episode(time.monotonic(), count=count)
            state = "connected but not keeping up" if self.connected else "not connected"
            self.log.warning(
                "forward to %s: the queue is full (%d records, %d bytes; the relay is %s): "
                "new records that do not fit are dropped; they are still in the log file "
                "(counted in forward_records_dropped_total; reported again once the queue has "
                "emptied)",
                self.name,
                len(self.queue),
                self.bytes,
                state,
            )

    def _emptied(self) -> None:
        drops, self._drops = self._drops, None
        if drops is not None:
            self.log.warning(
                "forward to %s: the queue has emptied; %d record(s) were dropped over %.1f s "
                "while it was full",
                self.name,
                drops.count,
                time.monotonic() - drops.started,
            )

    # -- the connection ----------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, send, reconnect with backoff; return once closing with nothing left."""
        backoff = Backoff(RETRY_FIRST, RETRY_MOST, STABLE)
        while not (self.closing and not self.queue):
            link = await self._connect()
            if link is None:
                backoff.failed(time.monotonic())
            else:
                backoff.connected(time.monotonic())
                if await self._serve(link):
                    return
                backoff.lost(time.monotonic())
            wait = max(0.0, backoff.next_attempt - time.monotonic())
            if self.closing:
                if not self.queue:
                    return
                wait = min(wait, RETRY_AT_SHUTDOWN)
            await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``; the start of a shutdown cuts the first such sleep short."""
        if self._stopping.is_set():
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _connect(self) -> _Link | None:
        loop = asyncio.get_running_loop()
        host, port = self.address.host, self.address.port
        try:
            _, link = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Link(self._wake),
                    host,
                    port,
                    ssl=self.context,
                    server_hostname=host if self.context is not None else None,
                ),
                CONNECT_TIMEOUT,
            )
        except asyncio.TimeoutError:
            self._failed(f"no answer within {CONNECT_TIMEOUT:g} s")
            return None
        except Exception as exc:  # OSError, ssl.SSLError (certificates), a bad host name
            self._failed(str(exc) or type(exc).__name__)
            return None
        sock = link.transport.get_extra_info("socket") if link.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.connected = True
        self._link = link
        outage, self._outage = self._outage, None
        if outage is not None:
            self.log.warning(
                "forward to %s: connected again after %.1f s (%s; then %d failed attempt(s) to "
                "connect); sending %d queued record(s)",
                self.name,
                time.monotonic() - outage.started,
                outage.first_error,
                outage.count,
                len(self.queue),
            )
        elif not self._ever_connected:
            self.log.info("forwarding to %s%s", self.name, " (TLS)" if self.context else "")
        self._ever_connected = True
        return link

    def _failed(self, error: str) -> None:
        if self._outage is None:
            self._outage = Episode(time.monotonic(), f"cannot connect: {error}", count=0)
            self.log.warning(
                "forward to %s: cannot connect: %s; keeping up to %d records for it and retrying "
                "(reported again once connected)",
                self.name,
                error,
                self.max_records,
            )
        else:
            self._outage.count += 1

    async def _serve(self, link: _Link) -> bool:
        """Send until the link is lost (``False``) or, when closing, all is sent (``True``)."""
        transport = link.transport
        assert transport is not None
        queue = self.queue
        clean = False
        try:
            while not link.closed:
                if not queue:
                    self._emptied()
                    if self.closing:
                        transport.close()  # sends what is still buffered, then closes
                        await link.gone.wait()
                        clean = True
                        return True
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                count, size = 0, 0
                for message in itertools.islice(queue, SEND_RECORDS):
                    count += 1
                    size += len(message)
                    if size >= SEND_BYTES:
                        break
                transport.write(b"".join(itertools.islice(queue, count)))
                await link.drain()
                if link.closed:
                    break  # sent or not, unknown: these are sent again on the next connection
                for _ in range(count):
                    queue.popleft()
                self.bytes -= size
                self.forwarded += count
            self._lost(link.why())
            return False
        except Exception as exc:  # nothing may stop forwarding: count it as a lost connection
            self._lost(f"{type(exc).__name__}: {exc}")
            return False
        finally:
            self.connected = False
            self._link = None
            if not clean:
                transport.abort()

    def _lost(self, why: str) -> None:
        self._outage = Episode(time.monotonic(), f"connection lost: {why}", count=0)
        if not self.closing:
            self.log.warning(
                "forward to %s: connection lost (%s); queuing up to %d records and reconnecting",
                self.name,
                why,
                self.max_records,
            )

    # -- shutdown --------------------------------------------------------------------------
    def begin_closing(self) -> None:
        self.closing = True
        self._stopping.set()
        self._wake.set()

    def abandon(self) -> int:
        """After the deadline: drop what is still queued, count it and say so."""
        left = len(self.queue)
        if self._link is not None and self._link.transport is not None:
            self._link.transport.abort()
        self.queue.clear()
        self.bytes = 0
        if left:
            self.dropped["not sent at shutdown"] += left
            why = (
                f"the relay is unreachable ({self._outage.first_error})"
                if self._outage is not None
                else "the relay did not take them in time"
            )
            self.log.error(
                "forward to %s: gave up %d queued record(s) at shutdown: %s",
                self.name,
                left,
                why,
            )
        return left


class Forwarding:
    """Every ``--forward`` relay, fed by :meth:`offer` from the writer."""

    def __init__(self, config: ServerConfig, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self.facility = config.forward_facility
        self.targets = [
            Target(address, config.forward_queue, log, tls=config.forward_tls)
            for address in config.forward
        ]
        self._intake: deque[Records] = deque()
        self._has_intake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def offer(self, records: Records) -> None:
        """Records just written to the file; returns at once (the writer calls it)."""
        if records and not self._closing:
            self._intake.append(records)
            self._has_intake.set()

    def start(self) -> None:
        """Start the formatting task and one task per relay (raises ``OSError`` for a bad CA)."""
        if self.config.forward_tls:
            context = client_context(self.config.forward_ca)
            for target in self.targets:
                target.context = context
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._format())
        for target in self.targets:
            target.task = loop.create_task(target.run())

    def frame(self, record: dict[str, Any]) -> bytes | None:
        """One record as an octet-counted RFC 5424 message; ``None`` if it cannot be."""
        try:
            return octet_frame(format_rfc5424(record, facility=self.facility))
        except Exception:  # a timestamp out of range: send it without one
            try:
                bare = {**record, "created": None}
                return octet_frame(format_rfc5424(bare, facility=self.facility))
            except Exception:
                return None

    async def _format(self) -> None:
        while True:
            if not self._intake:
                if self._closing:
                    return
                self._has_intake.clear()
                await self._has_intake.wait()
                continue
            records = self._intake.popleft()
            for start in range(0, len(records), FORMAT_RECORDS):
                framed = [self.frame(r) for r in records[start : start + FORMAT_RECORDS]]
                messages = [m for m in framed if m is not None]
                if len(messages) < len(framed):
                    for target in self.targets:
                        target.dropped["not formattable"] += len(framed) - len(messages)
                size = sum(map(len, messages))
                for target in self.targets:
                    target.push(messages, size)
                await asyncio.sleep(0)  # a slice at a time: readers and the writer come first

    async def close(self, deadline: float) -> None:
        """Flush every relay's queue until ``deadline`` (monotonic), then give up what is left."""
        self._closing = True
        self._has_intake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task  # what the writer handed over last goes on the queues
        tasks = [t.task for t in self.targets if t.task is not None]
        for target in self.targets:
            target.begin_closing()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for target in self.targets:
            target.abandon()
            self.log.info(
                "forward to %s: %d record(s) forwarded, %d dropped",
                target.name,
                target.forwarded,
                sum(target.dropped.values()),
            )

    async def abort(self) -> None:
        """Stop at once (a start-up that failed)."""
        self._closing = True
        tasks = [t for t in (self._task, *(t.task for t in self.targets)) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- metrics ---------------------------------------------------------------------------
    def metrics(self) -> str:
        """The forwarding samples of ``/metrics``, in the Prometheus text format."""
        out: list[str] = []

        def relays(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
            out.extend(family(name, kind, help_text, [(f"{{{s}}}", n) for s, n in samples]))

        def relay(target: Target) -> str:
            return f'target="{label(target.name)}"'

        targets = self.targets
        relays(
            "forward_records_sent_total",
            "counter",
            "Records written to the connection to a --forward relay.",
            [(relay(t), t.forwarded) for t in targets],
        )
        out.extend(
            family(
                "forward_records_dropped_total",
                "counter",
                "Records not forwarded to a relay, by reason.",
                [s for t in targets for s in reason_samples(t.dropped, relay(t) + ",")],
            )
        )
        relays(
            "forward_connected",
            "gauge",
            "1 while connected to the relay, else 0.",
            [(relay(t), int(t.connected)) for t in targets],
        )
        relays(
            "forward_queue_depth",
            "gauge",
            "Records waiting to be sent to the relay.",
            [(relay(t), len(t.queue)) for t in targets],
        )
        return "\n".join(out) + "\n"
