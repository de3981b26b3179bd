"""The server's sockets: TCP, Unix and UDP listeners (or those systemd hands over), and the
door every new connection passes: refused while stopping or over the connection limits.

::

    open         ──> TCP/Unix: bound, listening, not accepting yet
                 ──> UDP:      a datagram endpoint   ──────────────────> receive(data, addr)
    open_metrics ──> GET /metrics, GET /healthz
    serve        ──> TCP/Unix: accept ──> admit ──> connection.run()   (once the writer runs)
    close        ──> stop accepting                          (shutdown, step 1)
    wait_closed, unlink ──> the sockets gone, Unix files removed   (shutdown, step 4)

A socket that cannot be bound (an address already in use) fails with the flag and address that
asked for it, ``--listen 127.0.0.1:9020: address already in use``, before the server has created
any file: binding comes first in the start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import Callable
from typing import Any, Final

from safe_rotating._net.address import Address
from safe_rotating.server.config import untokened_gap
from safe_rotating.server.connections import LogConnection
from safe_rotating.server.context import ServerContext
from safe_rotating.server.metrics import serve_metrics
from safe_rotating.server.stream import EVICT_QUIET, StreamConnection
from safe_rotating.server.syslog_tcp import SyslogConnection

__all__ = ["STREAM_LIMIT", "Listeners", "activated_sockets", "bind_error", "bind_unix"]

# What a connection buffers beyond what its task has taken, which --frame-memory does not count:
# bytes a peer sends while its task waits for room in the full queue. Its StreamReader pauses
# reading once more than twice this ``limit`` is buffered (asyncio's default is 64 KiB), and
# one read of CPython's socket transport adds at most its ``max_size`` (256 KiB by default, set
# to this too): at most 3 x 16 KiB a connection, plus its objects (about 5 KiB).
STREAM_LIMIT: Final = 16 * 1024
_BACKLOG: Final = 1024

ConnectionFactory = Callable[
    [ServerContext, asyncio.StreamReader, asyncio.StreamWriter], StreamConnection
]
Receive = Callable[[bytes, Any], None]


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


def bind_error(flag: str, address: object, exc: OSError) -> OSError:
    """``exc`` (from binding ``address``, given by ``flag``) as one line that names them: which
    of several listeners is in the way is the first thing a person needs to know."""
    if exc.errno == errno.EADDRINUSE:
        why = "address already in use (another process listens there)"
    elif exc.errno is not None:
        why = os.strerror(exc.errno).lower()
    else:
        why = str(exc)
    return OSError(f"{flag} {address}: {why}")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receive: Receive, failed: Callable[[str, Exception], None]) -> None:
        self.receive = receive
        self.failed = failed

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.receive(data, addr)
        except Exception as exc:  # escaping, it would close the listener for everyone
            self.failed(f"a datagram from {addr}", exc)


class Listeners:
    """Every socket the server accepts on, and what is said about them (``addresses``).

    ``pickles`` and ``syslog`` take a ``--udp`` and a ``--syslog-udp`` datagram."""

    def __init__(self, context: ServerContext, pickles: Receive, syslog: Receive) -> None:
        self.context = context
        self.tls: ssl.SSLContext | None = None  # --tls-cert: for TCP stream listeners
        self.pickles = pickles
        self.syslog = syslog
        self.addresses: list[str] = []
        self.servers: list[asyncio.AbstractServer] = []
        self._datagrams: list[asyncio.BaseTransport] = []
        self._unix_paths: list[str] = []

    async def open(self, tls: ssl.SSLContext | None) -> None:
        """Bind the sockets systemd passed, or else every configured address; stream sockets
        accept nothing until :meth:`serve`, datagrams wait in the queue for the writer."""
        self.tls = tls
        activated = activated_sockets()
        if activated:
            for sock, name in activated:
                await self._adopt(sock, name)
            return
        config = self.context.config
        for address in config.listen:
            await self._listen(address, LogConnection)
        for address in config.syslog_tcp:
            await self._listen(address, SyslogConnection)
        for address in config.udp:
            await self._datagram(address, self.pickles, "udp")
        for address in config.syslog_udp:
            await self._datagram(address, self.syslog, "syslog-udp")

    async def open_metrics(self, page: Callable[[], str]) -> None:
        """``--metrics``: ``GET /metrics`` answers ``page()``, ``GET /healthz`` answers ok."""
        address = self.context.config.metrics
        if address is None:
            return
        try:
            endpoint = await serve_metrics(address.host, address.port, page, self.context.log)
        except OSError as exc:
            raise bind_error("--metrics", address, exc) from exc
        self.servers.append(endpoint)
        self.addresses.append(f"metrics {address}")

    async def serve(self) -> None:
        """Start accepting on every stream listener (the writer runs by now)."""
        for listener in self.servers:
            await listener.start_serving()  # a no-op for the metrics endpoint, which serves

    def close(self) -> None:
        """Stop accepting: no new connections, no new datagrams."""
        for listener in self.servers:
            listener.close()
        for transport in self._datagrams:
            transport.close()

    async def wait_closed(self) -> None:
        """Once connections are closed: wait (1 s each at most) for the listeners to close."""
        for listener in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), 1.0)

    def unlink(self) -> None:
        """Remove the Unix socket files this server made."""
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def admit(
        self, factory: ConnectionFactory
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        """The task of each accepted connection: refused while stopping, over
        ``--max-connections-per-peer``, or over ``--max-connections`` with no idle connection
        to make room; else served, and counted while open."""
        context = self.context

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if context.stopping:
                context.stats.refused["stopping"] += 1
                context.note("stopping", "closed a new connection: stopping")
                writer.close()
                return
            connection = factory(context, reader, writer)
            key = connection.key
            config = context.config
            most = config.max_connections_per_peer
            if key is not None and context.per_peer[key] >= most:
                reason = "too many connections from one peer"
                context.stats.refused[reason] += 1
                context.note(
                    reason,
                    f"closed a new {connection.describe()}: {key} has {most} open "
                    "(--max-connections-per-peer)",
                )
                writer.close()
                return
            if len(context.connections) >= config.max_connections and not context.make_room():
                reason = "too many connections"
                context.stats.refused[reason] += 1
                context.note(
                    reason,
                    f"closed a new {connection.describe()}: {reason} (--max-connections "
                    f"{config.max_connections}), and each has work under way or sent "
                    f"records within {EVICT_QUIET:g}s",
                )
                writer.close()
                return
            connection.task = asyncio.current_task()
            if hasattr(writer.transport, "max_size"):  # see STREAM_LIMIT
                writer.transport.max_size = STREAM_LIMIT
            context.connections.add(connection)
            if key is not None:
                context.per_peer[key] += 1
            context.stats.connections_total += 1
            try:
                await connection.run()
            finally:
                if key is not None:
                    context.per_peer[key] -= 1
                    if not context.per_peer[key]:
                        del context.per_peer[key]
                if not context.stopping:  # when stopping, shutdown closes it after the last ack
                    context.connections.discard(connection)

        return handle

    async def _listen(self, address: Address, factory: ConnectionFactory) -> None:
        handle = self.admit(factory)
        tls = self.tls
        kind = "syslog-tcp" if factory is SyslogConnection else "listen"
        try:
            if address.path is not None:
                sock = bind_unix(address.path, self.context.config.unix_mode)
                self._unix_paths.append(address.path)
                # Listening at once, a socket file in use is never taken for one left by a
                # server that died (bind_unix's probe) while the start-up opens the journal;
                # connections wait in the backlog until serve().
                sock.listen(_BACKLOG)
                listener = await asyncio.start_server(
                    handle, sock=sock, backlog=_BACKLOG, limit=STREAM_LIMIT, start_serving=False
                )
            else:
                listener = await asyncio.start_server(
                    handle,
                    address.host,
                    address.port,
                    ssl=tls,
                    ssl_handshake_timeout=self.context.config.read_timeout if tls else None,
                    reuse_address=True,
                    backlog=_BACKLOG,
                    limit=STREAM_LIMIT,
                    start_serving=False,
                )
        except OSError as exc:
            raise bind_error(f"--{kind}", address, exc) from exc
        self.servers.append(listener)
        self.addresses.append(f"{kind} {address}{' (TLS)' if tls and not address.path else ''}")

    async def _datagram(self, address: Address, receive: Receive, kind: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(receive, self.context.internal_error),
                local_addr=(address.host, address.port),
            )
        except OSError as exc:
            raise bind_error(f"--{kind}", address, exc) from exc
        self._datagrams.append(transport)
        self.addresses.append(f"{kind} {address}")

    async def _adopt(self, sock: socket.socket, name: str) -> None:
        """Serve a socket passed by systemd; ``FileDescriptorName=syslog...`` makes it syslog."""
        syslog = name.startswith("syslog")
        where = f"systemd fd {sock.fileno()} {name or ''}".rstrip()
        config = self.context.config
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
            secure = self.tls if sock.family != socket.AF_UNIX else None
            listener = await asyncio.start_server(
                self.admit(factory),
                sock=sock,
                ssl=secure,
                backlog=_BACKLOG,
                limit=STREAM_LIMIT,
                start_serving=False,
            )
            self.servers.append(listener)
            self.addresses.append(f"{'syslog-tcp' if syslog else 'listen'} {where}")
        else:
            receive = self.syslog if syslog else self.pickles
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(receive, self.context.internal_error), sock=sock
            )
            self._datagrams.append(transport)
            self.addresses.append(f"{'syslog-udp' if syslog else 'udp'} {where}")
