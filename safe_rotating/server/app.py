"""The server: one asyncio process, many reader tasks, one bounded queue, one writer task.

::

    listeners ──accept──> one task per connection ──await put──> WorkQueue ──take──> Writer
    (TCP, Unix, UDP)      (frames, dialect, hello)   (bounded:       (records)     (format, engine,
                                                      waits when full)              journal, ack)

Start-up and shutdown are in :meth:`Server.start` and :meth:`Server.shutdown`, in the order
they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import stat
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from safe_rotating._net.escape import escape
from safe_rotating._net.pickles import decode_pickle
from safe_rotating._net.syslog import parse as parse_syslog
from safe_rotating._net.wire import LENGTH, ProtocolError
from safe_rotating.server.config import Address, ServerConfig, untokened_gap
from safe_rotating.server.connections import (
    EVICT_QUIET,
    LogConnection,
    Refused,
    SyslogConnection,
    _Connection,
    is_loopback,
    peer_host,
    shown_host,
)
from safe_rotating.server.forward import Forwarding
from safe_rotating.server.metrics import Stats, render, serve_metrics
from safe_rotating.server.state import Journal
from safe_rotating.server.workqueue import Work, WorkQueue
from safe_rotating.server.writer import Writer

__all__ = ["STREAM_LIMIT", "Server", "activated_sockets", "bind_unix", "one_line"]

LINGER: Final = 0.25  # seconds for bytes already sent to be read once stopping starts
_POLL: Final = 0.05  # seconds between looks at the connections while they finish
_NOTE_EVERY: Final = 10.0  # seconds of one window of the refusal log
_NOTE_MOST: Final = 5  # refusals logged per reason and window; the rest are counted
_ERROR_EVERY: Final = 60.0  # an internal error is logged once per kind and place a minute
_SWEEP_MOST: Final = 1.0  # seconds between sweeps at most (hello and idle timeouts, note counts)
# What a connection buffers beyond what its task has taken, which --frame-memory does not count:
# bytes a peer sends while its task waits for room in the full queue. Its StreamReader pauses
# reading once more than twice this ``limit`` is buffered (asyncio's default is 64 KiB), and
# one read of CPython's socket transport adds at most its ``max_size`` (256 KiB by default, set
# to this too): at most 3 x 16 KiB a connection, plus its objects (about 5 KiB).
STREAM_LIMIT: Final = 16 * 1024

ConnectionFactory = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], _Connection]


def activated_sockets() -> list[tuple[socket.socket, str]]:
    """Listening sockets handed over by systemd (``LISTEN_FDS``), with their ``FileDescriptorName``.

    Empty unless ``LISTEN_PID`` is this process. The variables are removed, so a child process
    never takes the sockets for its own.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(variable, None)
    sockets = []
    for i in range(count):
        fd = 3 + i  # SD_LISTEN_FDS_START
        os.set_inheritable(fd, False)
        sockets.append((socket.socket(fileno=fd), names[i] if i < len(names) else ""))
    return sockets


def bind_unix(path: str, mode: int) -> socket.socket:
    """A Unix stream socket bound at ``path`` with permission ``mode`` from the first instant.

    A stale socket file left by a server that died is replaced; a live one (something accepts
    connections on it) or any other kind of file is not. The mode comes from the umask around
    ``bind`` (a socket file is created ``0o777 & ~umask``), never from a ``chmod`` afterwards:
    that follows symbolic links, so in a directory a neighbour may write, swapping the socket for
    a link in between would have root change the mode of any file.
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path!r} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # nobody listens: left by a server that died
        else:
            raise OSError(f"another server is listening on unix:{path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o777 & ~mode)  # no window in which the socket has looser permissions
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    return sock


def one_line(text: str) -> str:
    """``text`` as one line of the server's own log: control characters escaped by the rule
    records follow (:mod:`safe_rotating._net.escape`), and a line feed written ``\\n`` as well,
    since a refusal's detail is one line."""
    return escape(text.replace("\n", "\\n"))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(
        self, receive: Callable[[bytes, Any], None], failed: Callable[[str, Exception], None]
    ) -> None:
        self.receive = receive
        self.failed = failed

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.receive(data, addr)
        except Exception as exc:  # escaping, it would close the listener for everyone
            self.failed(f"a datagram from {addr}", exc)


class Server:
    """Everything the server runs, and the order in which it starts and stops."""

    def __init__(self, config: ServerConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger("safe_rotating.server")
        self.stats = Stats()
        self.hostname = socket.gethostname()
        self.journal = Journal(config.journal_path)
        self.writer = Writer(config, self.stats, self.journal, self.log)
        self.forwarding = Forwarding(config, self.log) if config.forward else None
        if self.forwarding is not None:
            self.writer.forward = self.forwarding.offer
        self.queue = WorkQueue(config.queue_size)
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.addresses: list[str] = []
        self._started = time.monotonic()
        self._stop: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._listeners: list[asyncio.AbstractServer] = []
        self._datagrams: list[asyncio.BaseTransport] = []
        self._unix_paths: list[str] = []
        # reason -> [window start, shown, unshown, window length]
        self._noted: dict[str, list[float]] = {}
        self.frame_bytes = 0  # bytes of unfinished frames, all connections: --frame-memory
        self._per_peer: Counter[str] = Counter()  # open connections per peer_key
        # Held from decoding a frame to queuing its records. Never waited for while the queue
        # has room (nothing awaits inside); while it is full, the connections wait here in
        # turn, holding their frames as bytes counted by --frame-memory, not as decoded
        # records (several times larger, and not counted).
        self.admission = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self.exit_code = 0

    # -- start-up --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the journal and the file, start the writer, then open every listener."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.journal.open()
        self.writer.open()
        self._writer_task = loop.create_task(self.writer.run(self.queue))
        self._writer_task.add_done_callback(self._writer_ended)
        if self.forwarding is not None:
            self.forwarding.start()
        tls = self._tls_context()
        config = self.config
        activated = activated_sockets()
        if activated:
            for sock, name in activated:
                await self._adopt(sock, name, tls)
        else:
            for address in config.listen:
                await self._listen(address, LogConnection, tls)
            for address in config.syslog_tcp:
                await self._listen(address, SyslogConnection, tls)
            for address in config.udp:
                await self._datagram(address, self._pickle_datagram, "udp")
            for address in config.syslog_udp:
                await self._datagram(address, self._syslog_datagram, "syslog-udp")
        if config.metrics is not None:
            metrics = await serve_metrics(
                config.metrics.host, config.metrics.port, self.metrics_page, self.log
            )
            self._listeners.append(metrics)
            self.addresses.append(f"metrics {config.metrics}")
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._signalled_stop)
        for signum in (signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(signum, self.writer.reopen)
        self._sweeper = loop.create_task(self._sweep())
        self.log.info("listening on %s; writing to %s", ", ".join(self.addresses), self.config.file)

    def _tls_context(self) -> ssl.SSLContext | None:
        config = self.config
        if config.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(config.tls_client_ca)
        return context

    def _connected(
        self, factory: ConnectionFactory
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.stopping:
                self.stats.refused["stopping"] += 1
                self.note("stopping", "closed a new connection: stopping")
                writer.close()
                return
            connection = factory(self, reader, writer)
            key = connection.key
            most = self.config.max_connections_per_peer
            if key is not None and self._per_peer[key] >= most:
                reason = "too many connections from one peer"
                self.stats.refused[reason] += 1
                self.note(
                    reason,
                    f"closed a new {connection.describe()}: {key} has {most} open "
                    "(--max-connections-per-peer)",
                )
                writer.close()
                return
            if len(self.connections) >= self.config.max_connections and not self.make_room():
                reason = "too many connections"
                self.stats.refused[reason] += 1
                self.note(
                    reason,
                    f"closed a new {connection.describe()}: {reason} (--max-connections "
                    f"{self.config.max_connections}), and each has work under way or sent "
                    f"records within {EVICT_QUIET:g}s",
                )
                writer.close()
                return
            connection.task = asyncio.current_task()
            if hasattr(writer.transport, "max_size"):  # see STREAM_LIMIT
                writer.transport.max_size = STREAM_LIMIT
            self.connections.add(connection)
            if key is not None:
                self._per_peer[key] += 1
            self.stats.connections_total += 1
            try:
                await connection.run()
            finally:
                if key is not None:
                    self._per_peer[key] -= 1
                    if not self._per_peer[key]:
                        del self._per_peer[key]
                if not self.stopping:  # when stopping, shutdown closes it after the last ack
                    self.connections.discard(connection)

        return handle

    async def _listen(
        self, address: Address, factory: ConnectionFactory, tls: ssl.SSLContext | None
    ) -> None:
        handle = self._connected(factory)
        if address.path is not None:
            sock = bind_unix(address.path, self.config.unix_mode)
            self._unix_paths.append(address.path)
            listener = await asyncio.start_server(
                handle, sock=sock, backlog=1024, limit=STREAM_LIMIT
            )
        else:
            listener = await asyncio.start_server(
                handle,
                address.host,
                address.port,
                ssl=tls,
                ssl_handshake_timeout=self.config.read_timeout if tls else None,
                reuse_address=True,
                backlog=1024,
                limit=STREAM_LIMIT,
            )
        self._listeners.append(listener)
        kind = "syslog-tcp" if factory is SyslogConnection else "listen"
        self.addresses.append(f"{kind} {address}{' (TLS)' if tls and not address.path else ''}")

    async def _datagram(
        self, address: Address, receive: Callable[[bytes, Any], None], kind: str
    ) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(receive, self.internal_error),
            local_addr=(address.host, address.port),
        )
        self._datagrams.append(transport)
        self.addresses.append(f"{kind} {address}")

    async def _adopt(self, sock: socket.socket, name: str, tls: ssl.SSLContext | None) -> None:
        """Serve a socket passed by systemd; ``FileDescriptorName=syslog...`` makes it syslog."""
        syslog = name.startswith("syslog")
        where = f"systemd fd {sock.fileno()} {name or ''}".rstrip()
        config = self.config
        stream = sock.type == socket.SOCK_STREAM
        if config.token is not None and (syslog or not stream):
            gap = untokened_gap(
                config.allow_untokened,
                config.tls_client_ca,
                unix=sock.family == socket.AF_UNIX,
                datagram=not stream,
            )
            if gap is not None:
                raise OSError(f"{where} takes records without the token, but {gap}")
        if stream:
            factory: ConnectionFactory = SyslogConnection if syslog else LogConnection
            secure = tls if sock.family != socket.AF_UNIX else None
            listener = await asyncio.start_server(
                self._connected(factory), sock=sock, ssl=secure, backlog=1024, limit=STREAM_LIMIT
            )
            self._listeners.append(listener)
            self.addresses.append(f"{'syslog-tcp' if syslog else 'listen'} {where}")
        else:
            receive = self._syslog_datagram if syslog else self._pickle_datagram
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(receive, self.internal_error), sock=sock
            )
            self._datagrams.append(transport)
            self.addresses.append(f"{'syslog-udp' if syslog else 'udp'} {where}")

    # -- what goes wrong ---------------------------------------------------------------------
    def note(
        self, reason: str, detail: str, *, every: float = _NOTE_EVERY, most: int = _NOTE_MOST
    ) -> None:
        """Log a refusal; floods are cut to ``most`` lines per reason every ``every`` seconds
        (all are counted in the metrics; the sweep logs how many were not shown).

        ``detail`` may hold a peer's text (a global a pickle names, an exception's message):
        it is written on one line with control characters escaped (:func:`one_line`), so no
        peer can start a line of the server's own log, nor send its terminal escape codes."""
        now = time.monotonic()
        window = self._noted.get(reason)
        if window is None or now - window[0] >= window[3]:
            if window is not None:
                self._untold(reason, window)
            window = self._noted[reason] = [now, 0, 0, every]
        if window[1] < most:
            window[1] += 1
            self.log.warning("%s", one_line(detail))
        else:
            window[2] += 1

    def _untold(self, reason: str, window: list[float]) -> None:
        if window[2]:
            self.log.warning(
                "%d more refusal(s) for %r were not logged (see the metrics)", window[2], reason
            )

    def _flush_notes(self, now: float) -> None:
        """Windows that ended: say how many refusals they did not show, and forget them."""
        for reason, window in list(self._noted.items()):
            if now - window[0] >= window[3]:
                self._untold(reason, window)
                del self._noted[reason]

    def internal_error(self, where: str, exc: Exception) -> None:
        """An unexpected exception (a bug) while serving one peer: it costs that connection or
        datagram, never the server. Counted as refused ("internal error") and logged in one
        line naming the exception and where it was raised, once a minute per kind and place
        with the count of the others: a peer that can trigger it on every connection must not
        fill the log with tracebacks. The traceback itself is logged at DEBUG level."""
        self.stats.refused["internal error"] += 1
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
        kind = f"{type(exc).__name__}{at}"
        text = repr(str(exc)[:200])  # repr: a peer's bytes may be in it
        self.note(
            f"internal error: {kind}",
            f"{where}: unexpected {kind}: {text}; closed it (a bug: please report it)",
            every=_ERROR_EVERY,
            most=1,
        )
        # The traceback at DEBUG level, escaped as a record is: its lines continue with a TAB.
        formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.log.debug("%s", escape(f"{where}: unexpected error\n{formatted.rstrip()}"))

    def crowded(self, key: str | None) -> bool:
        """Are connections scarce: three quarters of ``--max-connections`` open, or ``key``'s
        peer at its ``--max-connections-per-peer``? Then idle stock-pickle and syslog
        connections are closed too (see ``_Connection.check``)."""
        config = self.config
        if 4 * len(self.connections) >= 3 * config.max_connections:
            return True
        return key is not None and self._per_peer[key] >= config.max_connections_per_peer

    def hold_frame_bytes(self, connection: _Connection, size: int) -> None:
        """``connection`` received ``size`` more bytes of a frame it has not queued yet: still
        arriving, or complete and waiting for room in a full queue. When such frames together
        pass ``--frame-memory``, the connection holding the most is closed (refused, "frame
        memory") until they fit — a peer hoarding half-sent frames loses them, and so does one
        of many connections each holding a frame while the queue is full; a client sending an
        ordinary batch does not. That may be the caller: Refused."""
        self.frame_bytes += size
        connection.held += size
        limit = self.config.frame_memory
        while self.frame_bytes > limit:
            victim = max(self.connections, key=lambda c: c.held, default=connection)
            if victim.held <= 0:
                break
            detail = (
                f"frames not queued yet held {self.frame_bytes} bytes, over --frame-memory "
                f"({limit}); this connection held the most ({victim.held})"
            )
            if victim is connection:
                raise Refused("frame memory", detail)
            victim.end("frame memory", detail)
            if victim.held:  # not ended (the server is stopping): the caller gives way
                raise Refused(
                    "frame memory",
                    f"frames not queued yet held {self.frame_bytes} bytes, over --frame-memory "
                    f"({limit}), while stopping",
                )

    def release_frame_bytes(self, connection: _Connection) -> None:
        """``connection`` queued its frame's records (or the frame had none), or ended: its
        bytes leave the budget."""
        self.frame_bytes -= connection.held
        connection.held = 0

    def make_room(self) -> bool:
        """``--max-connections`` are open and one more came: close the connection that has
        been quiet the longest among those that may be (:meth:`_Connection.quiet_for`: a native
        client is told ``bye`` and comes back when it has records), so that connections nobody
        uses cannot lock real clients out. False if every connection has work under way or
        sent records within ``EVICT_QUIET``: then the new one is refused. Counted under
        ``connections_closed_total{reason="evicted"}``."""
        now = time.monotonic()
        victim: _Connection | None = None
        longest = 0.0
        for connection in self.connections:
            quiet = connection.quiet_for(now)
            if quiet is not None and (victim is None or quiet > longest):
                victim, longest = connection, quiet
        if victim is None:
            return False
        victim.rest(
            "evicted",
            f"idle for {longest:.0f}s while --max-connections ({self.config.max_connections}) "
            "were open: closed to make room for a new connection",
        )
        self.connections.discard(victim)  # its task ends soon; its place is taken now
        self.note(
            "evicted",
            f"closed {victim.describe()}, idle for {longest:.1f}s, to make room for a new "
            f"connection: --max-connections ({self.config.max_connections}) were open",
        )
        return True

    async def _sweep(self) -> None:
        """About once a second: close connections past their read, hello or idle timeout (see
        ``_Connection.check``), and log the counts of refusals whose log window ended. One
        pass over the connections instead of a timer each: an idle connection costs nothing."""
        config = self.config
        period = max(
            0.05,
            min(
                _SWEEP_MOST,
                config.hello_timeout / 4,
                config.idle_timeout / 4,
                config.read_timeout / 4,
            ),
        )
        while not self.stopping:
            await asyncio.sleep(period)
            now = time.monotonic()
            for connection in list(self.connections):
                try:
                    connection.check(now)
                except Exception as exc:
                    self.internal_error(f"sweep of {connection.describe()}", exc)
            self._flush_notes(now)

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
        for listener in self._listeners:
            listener.close()
        for transport in self._datagrams:
            transport.close()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
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

        # 1. Stop accepting: no new connections, no new datagrams.
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for listener in self._listeners:
            listener.close()
        for transport in self._datagrams:
            transport.close()

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
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), 1.0)
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
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
