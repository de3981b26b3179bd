"""One task per TCP or Unix connection: read frames or syslog messages, queue their records.

An idle connection is a task waiting on its socket: no timer, no polling. Once the first byte of
a frame (or of a syslog message) has arrived, the rest must arrive within ``--read-timeout``, so
a peer that stops mid-frame — slowly trickling bytes or dead — is closed, not waited for.

Anything a peer does wrong closes that connection only, with the reason logged and counted under
``refused_frames_total{reason}``; a native client is told why in an ``error`` frame first.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .. import _version
from .._pickle import decode_pickle
from .._syslog import SyslogFramer
from .._syslog import parse as parse_syslog
from .._wire import LENGTH, ProtocolError, decode, encode
from .state import CLIENT_ID, journal_key, peer_origin
from .writer import Work

if TYPE_CHECKING:
    from .app import Server

__all__ = ["LogConnection", "SyslogConnection", "is_loopback", "peer_host"]

_T = TypeVar("_T")

_NATIVE: Final = 0x7B  # "{"
# A pickle: PROTO (protocol 2+) or EMPTY_DICT, the first opcode of the protocol 1 pickles the
# standard library's SocketHandler sends.
_PICKLE: Final = (0x80, 0x7D)
_CHUNK: Final = 64 * 1024
_MAX_NAME: Final = 255
_ACK_BACKLOG: Final = 1024 * 1024  # bytes of unread acks before a client is dropped
SERVER_NAME: Final = f"safe-rotating-server {_version.__version__}"


def is_loopback(peer: Any) -> bool:
    """Is ``peer`` (a ``getpeername()`` result) this machine? Unix sockets are."""
    if not isinstance(peer, tuple) or not peer:
        return True  # AF_UNIX: a path or an empty name
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def peer_host(peer: Any, hostname: str) -> str:
    """What a record from ``peer`` shows as its host: this host's name for local peers."""
    if is_loopback(peer):
        return hostname
    return str(peer[0])


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
        self.idle = True  # waiting for the first byte of a frame: nothing buffered
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
        return f"{self.kind} on a Unix socket"

    async def run(self) -> None:
        server = self.server
        try:
            await self.serve()
        except Refused as exc:
            self.refuse(exc.reason, exc.detail)
        except ProtocolError as exc:
            self.refuse(exc.reason, exc.detail)
        except asyncio.IncompleteReadError as exc:
            if exc.partial or not self.idle:
                self.refuse("truncated frame", "the connection closed in the middle of a frame")
        except asyncio.TimeoutError:
            self.refuse(
                "read timeout",
                f"no complete frame within {server.config.read_timeout:g}s of its first byte",
            )
        except (ConnectionError, OSError) as exc:
            server.log.debug("%s: %s", self.describe(), exc)
        except asyncio.CancelledError:
            if not server.stopping:
                raise
        except Exception:  # a bug must cost one connection, never the server
            server.stats.refused["internal error"] += 1
            server.log.exception("%s: unexpected error; closing it", self.describe())
        finally:
            if not server.stopping:
                self.close()

    async def serve(self) -> None:
        raise NotImplementedError

    def refuse(self, reason: str, detail: str) -> None:
        self.server.stats.refused[reason] += 1
        self.server.note(reason, f"refused {self.describe()}: {detail}")
        self.tell_error(detail)
        self.close()

    def tell_error(self, detail: str) -> None:
        """Say why before closing (only the native dialect has a way to)."""

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


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
        self.native_host = self.host

    async def serve(self) -> None:
        server = self.server
        max_frame = server.config.max_frame
        while True:
            self.idle = True
            first = await self.reader.readexactly(1)  # no timer: an idle peer costs nothing
            self.idle = False
            deadline = asyncio.get_running_loop().time() + server.config.read_timeout
            rest = await self.before(deadline, self._rest_of_frame(first, max_frame))
            if self.dialect is None:
                self.dialect = self._choose_dialect(rest[0])
            if self.dialect == "native":
                await self._native(rest)
            else:
                await self._pickle(rest)

    async def _rest_of_frame(self, first: bytes, max_frame: int) -> bytes:
        head = first + await self.reader.readexactly(3)
        (size,) = LENGTH.unpack(head)
        if size == 0:
            raise Refused("empty frame", "a frame of length 0")
        if size > max_frame:
            raise Refused(
                "frame too large", f"a frame of {size} bytes is over the limit of {max_frame}"
            )
        return await self.reader.readexactly(size)

    def _choose_dialect(self, first: int) -> str:
        if first == _NATIVE:
            return "native"
        if first not in _PICKLE:
            raise Refused(
                "unknown dialect",
                f"a first frame starting with byte 0x{first:02x} (neither JSON nor a pickle)",
            )
        config = self.server.config
        if config.token is not None:
            raise Refused(
                "pickle without token",
                "a stock SocketHandler cannot send the token this server requires",
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
        await server.queue.put(Work([flat], len(payload)))

    def tell_error(self, detail: str) -> None:
        if self.dialect == "native" and not self.writer.is_closing():
            self.writer.write(encode({"type": "error", "reason": detail}))

    async def _native(self, payload: bytes) -> None:
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
                given.encode("utf-8"), token.encode("utf-8")
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
        self.native_host = _text(message.get("host"), self.host)
        self.app = _text(message.get("app"))
        welcome = {
            "type": "welcome",
            "server": SERVER_NAME,
            "max_frame": server.config.max_frame,
            "last_seq": server.journal.last_seq(key),
        }
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
        writer = self.writer

        def acknowledge() -> None:
            if writer.is_closing():
                return
            if writer.transport.get_write_buffer_size() > _ACK_BACKLOG:
                self.refuse("ack backlog", "a client that does not read its acknowledgements")
                return
            writer.write(encode({"type": "ack", "seq": seq}))

        assert self.client is not None
        # A batch without records has nothing to deduplicate: it never makes a journal entry.
        client = self.client if flats else None
        await server.queue.put(Work(flats, size, client, seq, acknowledge))


class SyslogConnection(_Connection):
    """A ``--syslog-tcp`` connection: RFC 6587 framing, detected per connection."""

    kind = "syslog connection"

    async def serve(self) -> None:
        server = self.server
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
                    await self._queue([rest])
                self.idle = True
                return
            framer.feed(data)
            messages = list(framer.messages())
            if framer.pending and (self.idle or messages):
                started = loop.time()  # a new message began in this read
            if messages:
                await self._queue(messages)

    async def _queue(self, messages: list[bytes]) -> None:
        now = time.time()
        records = [parse_syslog(m, now).to_record(now, self.host) for m in messages]
        self.server.stats.received += len(records)
        await self.server.queue.put(Work(records, sum(len(m) for m in messages)))
