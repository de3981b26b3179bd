"""A ``--listen`` connection: the native protocol (hello, batches, acks) or a stock
``SocketHandler``'s pickles, chosen by the first byte of the first frame.

The native dialect is described in docs/protocol.md: a hello answered by a welcome, batches of
records (protocol 1) or of lines the client rendered (protocol 2), acknowledged once written,
at most one ack per :data:`ACK_EVERY`. What every connection shares (timeouts, the frame budget,
refusing and closing) is :class:`safe_rotating.server.stream.StreamConnection`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from typing import Any, Final

from safe_rotating import _version
from safe_rotating._net.pickles import decode_pickle
from safe_rotating._net.rendered import MAGIC, parse_batch
from safe_rotating._net.wire import LENGTH, decode, encode
from safe_rotating.server.context import Refused, ServerContext
from safe_rotating.server.peers import shown_host
from safe_rotating.server.state import CLIENT_ID, journal_key, peer_origin
from safe_rotating.server.stream import StreamConnection
from safe_rotating.server.workqueue import Work
from safe_rotating.server.writer import Rendered

__all__ = ["ACK_EVERY", "SERVER_NAME", "LogConnection"]

_NATIVE: Final = 0x7B  # "{"
# A pickle: PROTO (protocol 2+) or EMPTY_DICT, the first opcode of the protocol 1 pickles the
# standard library's SocketHandler sends.
_PICKLE: Final = (0x80, 0x7D)
_MAX_NAME: Final = 255
_ACK_BACKLOG: Final = 1024 * 1024  # bytes of unread acks before a client is dropped
SERVER_NAME: Final = f"safe-rotating-server {_version.__version__}"


def _text(value: Any, default: str = "-") -> str:
    if isinstance(value, str) and value:
        return value[:_MAX_NAME]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return default


# Acks of one connection are at least this far apart (seconds); one covers every batch before.
ACK_EVERY: Final = 0.02


def _ack_frame(seq: int) -> bytes:
    """``{"v":1,"type":"ack","seq":N}`` as a frame, without going through JSON."""
    payload = b'{"v":1,"type":"ack","seq":%d}' % seq
    return LENGTH.pack(len(payload)) + payload


class LogConnection(StreamConnection):
    """A ``--listen`` connection: native frames, or a stock ``SocketHandler``'s pickles."""

    kind = "log connection"

    def __init__(
        self, server: ServerContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
