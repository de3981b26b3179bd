"""One task per TCP or Unix connection: read frames or syslog messages, queue their records.

An idle connection is a task waiting on its socket: no timer per connection. Once the first byte
of a frame (or of a syslog message) has arrived, the rest must arrive within ``--read-timeout``, so
a peer that stops mid-frame — slowly trickling bytes or dead — is closed, not waited for. One
sweep of the server (:meth:`_Connection.check`, about once a second) closes a connection whose
first frame is not complete ``--hello-timeout`` after it connected, and one that has been idle,
owed no ack, for ``--idle-timeout`` (a native client is told ``bye`` first: that is not an error;
stock-pickle and syslog senders cannot be told, so theirs only while connections are scarce).
Idle means sending no records: a frame that carries none (an empty batch, a batch the journal
shows was written already) does not keep a connection open. And when ``--max-connections`` are
open, a new connection takes the place of the one idle the longest (:meth:`_Connection.quiet_for`).

Every connection also counts the bytes of the frame it is receiving, until that frame's records
are in the queue, against one budget shared by all (``--frame-memory``): past it, the connection
holding the most is closed. So memory is bounded however many connections there are, whether
their frames are half-sent or complete and waiting for room in a full queue, and a peer hoarding
half-sent frames loses them first. A frame is decoded only once it is its turn to be queued
(``Server.admission``): decoded records take several times the bytes of their frame, so while
the queue is full one frame waits decoded and the others wait as the bytes the budget counts.

Anything a peer does wrong closes that connection only, with the reason logged and counted under
``refused_frames_total{reason}``; a native client is told why in an ``error`` frame first.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from safe_rotating import _version
from safe_rotating._net.pickles import decode_pickle
from safe_rotating._net.rendered import MAGIC, parse_batch
from safe_rotating._net.syslog import SyslogFramer
from safe_rotating._net.syslog import parse as parse_syslog
from safe_rotating._net.wire import LENGTH, ProtocolError, decode, encode
from safe_rotating.server.config import peer_address
from safe_rotating.server.state import CLIENT_ID, journal_key, peer_origin
from safe_rotating.server.workqueue import Work
from safe_rotating.server.writer import Rendered

if TYPE_CHECKING:
    from safe_rotating.server.app import Server

__all__ = [
    "LogConnection",
    "Refused",
    "SyslogConnection",
    "is_loopback",
    "peer_host",
    "peer_key",
    "peer_uid",
    "shown_host",
]

_T = TypeVar("_T")

_NATIVE: Final = 0x7B  # "{"
# A pickle: PROTO (protocol 2+) or EMPTY_DICT, the first opcode of the protocol 1 pickles the
# standard library's SocketHandler sends.
_PICKLE: Final = (0x80, 0x7D)
_CHUNK: Final = 64 * 1024
_MAX_NAME: Final = 255
_ACK_BACKLOG: Final = 1024 * 1024  # bytes of unread acks before a client is dropped
_CRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid
# A connection that queued records less than this long ago (or connected less than this long
# ago) is never evicted to make room for a new one: a client gets time to say hello and send.
EVICT_QUIET: Final = 1.0
SERVER_NAME: Final = f"safe-rotating-server {_version.__version__}"


def is_loopback(peer: Any) -> bool:
    """Is ``peer`` (a ``getpeername()`` result) this machine? Unix sockets are."""
    if not isinstance(peer, tuple) or not peer:
        return True  # AF_UNIX: a path or an empty name
    address = peer_address(peer)
    return address is not None and address.is_loopback


def peer_host(peer: Any, hostname: str) -> str:
    """What a record from ``peer`` shows as its host: this host's name for local peers."""
    if is_loopback(peer):
        return hostname
    return str(peer[0])


def shown_host(claimed: str, peer: Any, hostname: str, marked: bool) -> str:
    """The host a record shows, given the name its sender ``claimed`` (a hello's ``host``, a
    syslog HOSTNAME). A claim is not proof: with a token (``marked``) a server promises that
    records are attributable, so the claim of a peer on another machine is shown with the
    address it really came from, ``web-3@10.0.0.5`` (just the address if it claimed that).
    Local peers keep their claim: they are on this machine either way."""
    actual = peer_host(peer, hostname)
    if not marked or claimed == actual or is_loopback(peer):
        return claimed
    return f"{claimed}@{actual}"


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``, Linux);
    ``None`` over TCP or where the system has no such option."""
    option = getattr(socket, "SO_PEERCRED", None)
    sock = writer.get_extra_info("socket")
    if option is None or sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        _, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _CRED.size))
    except (OSError, struct.error):
        return None
    return int(uid)


def peer_key(peer: Any, uid: int | None) -> str | None:
    """Who a connection counts against for ``--max-connections-per-peer``: its uid on a Unix
    socket, its address over TCP (IPv6: its /64, which one machine usually owns whole), and
    nobody for loopback TCP — every local user shares 127.0.0.1, so a cap there would let one
    lock out the others; the hello and idle timeouts cover it."""
    if not isinstance(peer, tuple) or not peer:
        return None if uid is None else f"uid {uid}"
    address = peer_address(peer)
    if address is None:
        return str(peer[0])
    if address.is_loopback:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _text(value: Any, default: str = "-") -> str:
    if isinstance(value, str) and value:
        return value[:_MAX_NAME]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return default


class Refused(Exception):
    """Close the connection: ``reason`` is counted, ``detail`` logged (and told a native peer)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class _Connection:
    """What every stream connection shares: its peer, its task, refusing and closing."""

    kind = "connection"

    def __init__(
        self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = writer.get_extra_info("peername")
        self.secure = writer.get_extra_info("sslcontext") is not None
        self.local = is_loopback(self.peer)
        self.host = peer_host(self.peer, server.hostname)
        self.uid = peer_uid(writer)
        self.key = peer_key(self.peer, self.uid)  # for --max-connections-per-peer
        self.idle = True  # waiting for the first byte of a frame: nothing buffered
        self.accepted = time.monotonic()
        # When it last queued records or had them acknowledged: frames without records (an
        # empty batch, a batch already written) are not activity, or a peer could hold its
        # connection forever with an empty batch a second (see check and quiet_for).
        self.active_at = self.accepted
        self.greeted = False  # its first frame is complete: the hello timeout is over
        self.frame_since: float | None = None  # a frame's first byte came then (the sweep's clock)
        self.unacked = 0  # batches queued and not acknowledged yet: not idle
        self.held = 0  # bytes of an unfinished frame, counted in server.frame_bytes
        self.ended: str | None = None  # closed from outside its task, for this reason
        self.task: asyncio.Task[None] | None = None

    async def before(self, deadline: float, read: Awaitable[_T]) -> _T:
        """``await read``, or ``asyncio.TimeoutError`` once the loop's clock passes ``deadline``.

        A timer that cancels this task, rather than ``asyncio.wait_for``: no task is created per
        frame, which matters for the stock handler's one record per frame.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_at(deadline, expire)
        try:
            return await read
        except asyncio.CancelledError:
            if not expired:
                raise  # the shutdown, not the deadline
            if hasattr(task, "uncancel"):  # 3.11+: this cancellation is handled here
                task.uncancel()
            raise asyncio.TimeoutError from None
        finally:
            timer.cancel()

    def describe(self) -> str:
        if isinstance(self.peer, tuple) and len(self.peer) >= 2:
            return f"{self.kind} from {self.peer[0]}:{self.peer[1]}"
        if self.uid is not None:
            return f"{self.kind} on a Unix socket (uid {self.uid})"
        return f"{self.kind} on a Unix socket"

    def may_skip_token(self) -> bool:
        """May this peer send records without the token (syslog, a stock pickle)? Yes without
        a token; with one, if ``--allow-untokened`` names it, or its TLS client certificate was
        verified (``--tls-client-ca``)."""
        config = self.server.config
        if config.allows_untokened(self.peer, self.uid):
            return True
        return self.secure and config.tls_client_ca is not None

    async def run(self) -> None:
        server = self.server
        try:
            await self.serve()
        except asyncio.CancelledError:
            if self.ended is None and not server.stopping:
                raise
        except Exception as exc:
            if self.ended is None:  # else already closed and counted by whoever ended it
                self.failed(exc)
        finally:
            server.release_frame_bytes(self)
            if not server.stopping:
                self.close()

    def failed(self, exc: Exception) -> None:
        """Close after ``exc`` ended :meth:`serve`, with the reason counted and logged."""
        server = self.server
        if isinstance(exc, Refused | ProtocolError):
            self.refuse(exc.reason, exc.detail)
        elif isinstance(exc, asyncio.IncompleteReadError):
            if exc.partial or not self.idle:
                self.refuse("truncated frame", "the connection closed in the middle of a frame")
        elif isinstance(exc, asyncio.TimeoutError):  # before OSError: a subclass on 3.11+
            self.refuse(
                "read timeout",
                f"no complete frame within {server.config.read_timeout:g}s of its first byte",
            )
        elif isinstance(exc, ConnectionError | OSError):
            server.log.debug("%s: %s", self.describe(), exc)
        else:  # a bug must cost one connection, never the server, nor a traceback per peer
            server.internal_error(self.describe(), exc)

    def check(self, now: float) -> None:
        """The server's sweep: close this connection if a frame is unfinished ``--read-timeout``
        after its first byte ("read timeout"), if its first frame is overdue (counted as
        refused, "hello timeout"), or if it has been idle for ``--idle-timeout`` with no ack
        owed (counted under ``connections_closed_total{reason="idle"}``, not logged).

        Only a native client is told ``bye`` and comes back without losing a record. A stock
        ``SocketHandler`` or a syslog sender writes its next record into the closed socket and
        loses it (the stdlib's handler even two), so their idle connections are closed only when
        the server is crowded (:meth:`Server.crowded`): then the slot matters more."""
        config = self.server.config
        if self.frame_since is not None and now - self.frame_since >= config.read_timeout:
            self.end(
                "read timeout",
                f"no complete frame within {config.read_timeout:g}s of its first byte",
            )
        elif not self.greeted:
            if now - self.accepted >= config.hello_timeout:
                self.end(
                    "hello timeout",
                    f"no complete first frame within {config.hello_timeout:g}s of connecting "
                    "(--hello-timeout)",
                )
        elif (
            self.idle
            and not self.unacked
            and now - self.active_at >= config.idle_timeout
            and (self.says_bye() or self.server.crowded(self.key))
        ):
            self.rest("idle", f"idle for {config.idle_timeout:g}s (--idle-timeout)")

    def quiet_for(self, now: float) -> float | None:
        """Seconds this connection has sent no records, if it may be closed to make room for a
        new connection at ``--max-connections`` (:meth:`Server.make_room`); else ``None``.

        Never while it has work under way — part of a frame received, an ack owed — nor within
        ``EVICT_QUIET`` of its last records or of connecting. A native client is told ``bye``
        and comes back when it has records, losing none; a connection that has sent nothing
        loses nothing either. A stock ``SocketHandler`` or a syslog sender cannot be told and
        would lose its next record, so it is closed only once idle for ``--idle-timeout``, as
        the sweep closes it anyway when connections are scarce."""
        if self.ended is not None or not self.idle or self.unacked:
            return None
        quiet = now - self.active_at
        if quiet < EVICT_QUIET:
            return None
        if self.says_bye() or not self.greeted or quiet >= self.server.config.idle_timeout:
            return quiet
        return None

    def says_bye(self) -> bool:
        """Can this dialect tell its peer that an idle close is not a failure?"""
        return False

    def rest(self, label: str, reason: str) -> None:
        """Close an idle connection (``label``: "idle", or "evicted" to make room for a new
        one): not a refusal, and a native client is told so (``bye``) and comes back when it
        has records. Counted under connections_closed_total{reason=label}."""
        if self.ended is not None or self.server.stopping:
            return
        self.ended = label
        self.server.stats.closed[label] += 1
        self.say_bye(reason)
        self.close()
        self._cancel()

    def end(self, reason: str, detail: str) -> None:
        """Refuse this connection from outside its own task (the sweep, the frame budget):
        counted and logged under ``reason``, its frame's bytes given back at once."""
        if self.ended is not None or self.server.stopping:
            return
        self.ended = reason
        self.server.release_frame_bytes(self)
        self.refuse(reason, detail)
        self._cancel()

    def _cancel(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def serve(self) -> None:
        raise NotImplementedError

    def refuse(self, reason: str, detail: str) -> None:
        self.server.stats.refused[reason] += 1
        self.server.note(reason, f"refused {self.describe()}: {detail}")
        self.tell_error(detail)
        self.close()

    def tell_error(self, detail: str) -> None:
        """Say why before closing (only the native dialect has a way to)."""

    def say_bye(self, reason: str) -> None:
        """Say that an idle close is not a failure (only the native dialect has a way to)."""

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


# Acks of one connection are at least this far apart (seconds); one covers every batch before.
ACK_EVERY: Final = 0.02


def _ack_frame(seq: int) -> bytes:
    """``{"v":1,"type":"ack","seq":N}`` as a frame, without going through JSON."""
    payload = b'{"v":1,"type":"ack","seq":%d}' % seq
    return LENGTH.pack(len(payload)) + payload


class LogConnection(_Connection):
    """A ``--listen`` connection: native frames, or a stock ``SocketHandler``'s pickles."""

    kind = "log connection"

    def __init__(
        self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(server, reader, writer)
        self.dialect: str | None = None
        self.client: str | None = None
        self.app = "-"
        self.pid: int | None = None
        self.native_host = self.host
        self._ack_due: int | None = None  # the highest batch written and not acknowledged yet
        self._acked_at = -ACK_EVERY  # the loop's time of the last ack sent

    async def serve(self) -> None:
        server = self.server
        max_frame = server.config.max_frame
        while True:
            self.idle = True
            first = await self.reader.readexactly(1)  # no timer: the server's sweep sees idlers
            self.idle = False
            # No timer a frame either: the sweep ends a frame unfinished after --read-timeout.
            self.frame_since = time.monotonic()
            rest = await self._rest_of_frame(first, max_frame)
            self.frame_since = None
            self.greeted = True
            if self.dialect is None:
                self.dialect = self._choose_dialect(rest[0])
            if self.dialect == "native" and self.client is None:
                await self._native(rest)  # the hello: nothing waits for the queue
            else:
                # A connection over its share of the queue waits here, alone, not holding the
                # admission that every reader takes: a flooder does not hold the others back.
                await server.queue.wait_share(self)
                async with server.admission:  # decoded only when the queue can take it
                    if self.dialect == "native":
                        await self._native(rest)
                    else:
                        await self._pickle(rest)
            # Held until here, not just until the frame was complete: a connection waiting for
            # room in a full queue holds its frame, so the budget counts it (--frame-memory).
            server.release_frame_bytes(self)

    async def _rest_of_frame(self, first: bytes, max_frame: int) -> bytes:
        head = first + await self.reader.readexactly(3)
        (size,) = LENGTH.unpack(head)
        if size == 0:
            raise Refused("empty frame", "a frame of length 0")
        if size > max_frame:
            raise Refused(
                "frame too large", f"a frame of {size} bytes is over the limit of {max_frame}"
            )
        # Read as it comes, counting each part against --frame-memory: a frame that does not
        # finish holds only what really arrived, and the budget knows whose it is.
        server = self.server
        chunks: list[bytes] = []
        left = size
        while left:
            chunk = await self.reader.read(left)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", size)
            server.hold_frame_bytes(self, len(chunk))
            chunks.append(chunk)
            left -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _choose_dialect(self, first: int) -> str:
        if first == _NATIVE:
            return "native"
        if first not in _PICKLE:
            raise Refused(
                "unknown dialect",
                f"a first frame starting with byte 0x{first:02x} (neither JSON nor a pickle)",
            )
        config = self.server.config
        if not self.may_skip_token():
            raise Refused(
                "pickle without token",
                "a stock SocketHandler cannot send the token this server requires, and "
                "--allow-untokened does not name this peer",
            )
        if not (self.local or self.secure or config.allow_remote_pickle):
            raise Refused(
                "remote pickle",
                "the stock SocketHandler dialect is accepted only from this machine "
                "(see --allow-remote-pickle and --tls-cert)",
            )
        return "pickle"

    async def _pickle(self, payload: bytes) -> None:
        server = self.server
        flat = decode_pickle(payload)
        flat["host"] = self.host
        flat["app"] = "-"
        server.stats.received += 1
        await server.queue.put(Work([flat], len(payload), source=self))
        self.active_at = time.monotonic()

    def tell_error(self, detail: str) -> None:
        if self.dialect == "native" and not self.writer.is_closing():
            self.writer.write(encode({"type": "error", "reason": detail}))

    def says_bye(self) -> bool:
        return self.dialect == "native"

    def say_bye(self, reason: str) -> None:
        if self.dialect == "native" and not self.writer.is_closing():
            self.writer.write(encode({"type": "bye", "reason": reason}))

    async def _native(self, payload: bytes) -> None:
        if payload[0] == MAGIC and self.client is not None:
            await self._rendered_batch(payload)
            return
        message = decode(payload)
        kind = message["type"]
        if self.client is None:
            if kind != "hello":
                raise Refused("no hello", f"a {kind!r} message before hello")
            self._hello(message)
        elif kind == "batch":
            await self._batch(message, len(payload))
        elif kind == "hello":
            raise Refused("second hello", "a second hello on one connection")
        else:
            raise Refused("unknown type", f"a message of unknown type {kind!r}")

    def _hello(self, message: dict[str, Any]) -> None:
        server = self.server
        client = message.get("client")
        if not isinstance(client, str) or not CLIENT_ID.fullmatch(client):
            raise Refused("bad client id", "a hello whose client id is not 1-64 letters or digits")
        token = server.config.token
        if token is not None:
            given = message.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(
                given.encode("utf-8", "surrogatepass"),  # JSON may carry a lone surrogate
                token.encode("utf-8"),
            ):
                raise Refused("bad token", "a hello without the right token")
        origin = peer_origin(self.peer, self.writer.get_extra_info("socket"))
        key = journal_key(client, origin, token)  # an id is bound to its peer and token
        if not server.journal.admits(key):
            server.stats.refused["journal full"] += 1
            server.note(
                "journal full",
                f"{self.describe()}: its client id is not journaled (the journal holds "
                f"{len(server.journal)} ids, none idle for long): its batches are written, but "
                "one sent again after a reconnect may be written twice",
            )
        self.client = key
        marked = server.config.token is not None
        self.native_host = shown_host(
            _text(message.get("host"), self.host), self.peer, server.hostname, marked
        )
        self.app = _text(message.get("app"))
        pid = message.get("pid")
        self.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
        welcome: dict[str, Any] = {
            "type": "welcome",
            "server": SERVER_NAME,
            "max_frame": server.config.max_frame,
            "last_seq": server.journal.last_seq(key),
        }
        offered = message.get("protocols")
        if isinstance(offered, list) and 2 in offered:
            welcome["protocol"] = 2  # batches of rendered lines welcome (docs/protocol.md)
        self.writer.write(encode(welcome))

    async def _batch(self, message: dict[str, Any], size: int) -> None:
        server = self.server
        seq = message.get("seq")
        records = message.get("records")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise Refused("bad batch", "a batch without a sequence number >= 1")
        if not isinstance(records, list):
            raise Refused("bad batch", "a batch without a list of records")
        flats: list[dict[str, Any]] = []
        for flat in records:
            if not isinstance(flat, dict):
                server.stats.dropped["not an object"] += 1
                continue
            flat["host"] = self.native_host
            flat["app"] = self.app
            flats.append(flat)
        server.stats.received += len(records)
        assert self.client is not None
        # Activity (see active_at): records, unless the journal says this batch was written
        # before (a resend after a reconnect is acknowledged without writing).
        active = bool(flats) and seq > server.journal.last_seq(self.client)
        acknowledge = self._acknowledger(seq, active)
        # A batch without records has nothing to deduplicate: it never makes a journal entry.
        client = self.client if flats else None
        await server.queue.put(Work(flats, size, client, seq, acknowledge, source=self))
        if active:
            self.active_at = time.monotonic()

    def _acknowledger(self, seq: int, active: bool) -> Callable[[], None]:
        """What the writer calls once batch ``seq`` is written (or found a duplicate): the ack.
        ``active``: the batch had new records (the idle sweep counts them as activity).

        Acks are sent once the writer gives the loop back, one per connection and at most one
        per :data:`ACK_EVERY`: an ack of ``seq`` acknowledges every earlier batch
        (docs/protocol.md), and each ``send`` costs as much as writing a whole batch to the
        file."""
        self.unacked += 1

        def acknowledge() -> None:
            self.unacked -= 1
            if active:
                self.active_at = time.monotonic()
            if self._ack_due is None:
                # At most one ack per ACK_EVERY: with many small batches (clients logging a
                # few thousand records a second each), the sends are most of the server's CPU.
                loop = asyncio.get_running_loop()
                wait = self._acked_at + ACK_EVERY - loop.time()
                if wait > 0:
                    loop.call_later(wait, self._send_ack)
                else:
                    loop.call_soon(self._send_ack)
            self._ack_due = seq  # the writer acknowledges in order: the last covers the rest

        return acknowledge

    def close(self) -> None:
        if self._ack_due is not None:  # written: its ack goes out before the connection closes
            self._send_ack()
        super().close()

    def _send_ack(self) -> None:
        seq, self._ack_due = self._ack_due, None
        self._acked_at = asyncio.get_running_loop().time()
        writer = self.writer
        if seq is None or writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > _ACK_BACKLOG:
            self.refuse("ack backlog", "a client that does not read its acknowledgements")
            return
        writer.write(_ack_frame(seq))

    async def _rendered_batch(self, payload: bytes) -> None:
        """A protocol-2 batch: lines the client rendered, written as they are (see
        :func:`safe_rotating._net.rendered.file_bytes`); acknowledged like a v1 batch."""
        server = self.server
        batch = parse_batch(payload)  # a BatchError is a ProtocolError: refused with its reason
        server.stats.received += batch.count
        assert self.client is not None
        seq = batch.seq
        active = batch.count > 0 and seq > server.journal.last_seq(self.client)
        acknowledge = self._acknowledger(seq, active)
        client = self.client if batch.count else None
        work = Work([], len(payload), client, seq, acknowledge, source=self)
        work.rendered = Rendered(batch, self.native_host, self.app, self.pid)
        await server.queue.put(work)
        if active:
            self.active_at = time.monotonic()


class SyslogConnection(_Connection):
    """A ``--syslog-tcp`` connection: RFC 6587 framing, detected per connection."""

    kind = "syslog connection"

    async def serve(self) -> None:
        server = self.server
        if not self.may_skip_token():
            raise Refused(
                "untokened peer",
                "syslog from a peer that --allow-untokened does not name (the server has a token)",
            )
        framer = SyslogFramer(server.config.max_frame)
        started = 0.0  # when the pending, unfinished message began
        loop = asyncio.get_running_loop()
        while True:
            self.idle = framer.pending == 0
            if self.idle:
                data = await self.reader.read(_CHUNK)  # no timer while nothing is pending
            else:
                # One deadline for the whole message: trickling bytes does not extend it.
                deadline = started + server.config.read_timeout
                data = await self.before(deadline, self.reader.read(_CHUNK))
            if not data:
                rest = framer.rest()
                if rest is not None:
                    self.idle = False
                    await self._queue([rest])
                self.idle = True
                return
            framer.feed(data)
            messages = list(framer.messages())
            # Messages not queued yet and an unfinished one count against --frame-memory.
            server.release_frame_bytes(self)
            waiting = framer.pending + sum(len(m) for m in messages)
            if waiting:
                server.hold_frame_bytes(self, waiting)
            if framer.pending and (self.idle or messages):
                started = loop.time()  # a new message began in this read
            if messages:
                self.greeted = True
                self.idle = False  # records under way: neither idle-closed nor evicted now
                await self._queue(messages)
                server.release_frame_bytes(self)
                if framer.pending:
                    server.hold_frame_bytes(self, framer.pending)

    async def _queue(self, messages: list[bytes]) -> None:
        async with self.server.admission:  # parsed only when the queue can take them
            now = time.time()
            records = [parse_syslog(m, now).to_record(now, self.host) for m in messages]
            if self.server.config.token is not None and not self.local:
                for record in records:
                    record["host"] = shown_host(
                        record["host"], self.peer, self.server.hostname, True
                    )
            self.server.stats.received += len(records)
            await self.server.queue.put(Work(records, sum(len(m) for m in messages), source=self))
        self.active_at = time.monotonic()
