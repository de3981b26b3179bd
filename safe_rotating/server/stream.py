"""What every TCP or Unix connection does, whichever dialect it speaks: one task, limits, closing.

An idle connection is a task waiting on its socket: no timer per connection. Once the first byte
of a frame (or of a syslog message) has arrived, the rest must arrive within ``--read-timeout``, so
a peer that stops mid-frame — slowly trickling bytes or dead — is closed, not waited for. One
sweep of the server (`StreamConnection.check`, about once a second) closes a connection whose
first frame is not complete ``--hello-timeout`` after it connected, and one that has been idle,
owed no ack, for ``--idle-timeout`` (a native client is told ``bye`` first: that is not an error;
stock-pickle and syslog senders cannot be told, so theirs only while connections are scarce).
Idle means sending no records: a frame that carries none (an empty batch, a batch the journal
shows was written already) does not keep a connection open. And when ``--max-connections`` are
open, a new connection takes the place of the one idle the longest (`StreamConnection.quiet_for`).

Every connection also counts the bytes of the frame it is receiving, until that frame's records
are in the queue, against one budget shared by all (``--frame-memory``): past it, the connection
holding the most is closed. So memory is bounded however many connections there are, whether
their frames are half-sent or complete and waiting for room in a full queue, and a peer hoarding
half-sent frames loses them first. A frame is decoded only once it is its turn to be queued
(``ServerContext.admission``): decoded records take several times the bytes of their frame, so while
the queue is full one frame waits decoded and the others wait as the bytes the budget counts.

Anything a peer does wrong closes that connection only, with the reason logged and counted under
``refused_frames_total{reason}``; a native client is told why in an ``error`` frame first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Final, TypeVar

from safe_rotating._net.address import is_loopback
from safe_rotating._net.wire import ProtocolError
from safe_rotating.server.context import Refused, ServerContext
from safe_rotating.server.peers import peer_host, peer_key, peer_uid

__all__ = ["EVICT_QUIET", "StreamConnection"]

_T = TypeVar("_T")

# A connection that queued records less than this long ago (or connected less than this long
# ago) is never evicted to make room for a new one: a client gets time to say hello and send.
EVICT_QUIET: Final = 1.0


class StreamConnection:
    """What every stream connection shares: its peer, its task, refusing and closing."""

    kind = "connection"

    def __init__(
        self, server: ServerContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
        the server is crowded (`ServerContext.crowded`): then the slot matters more."""
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
        new connection at ``--max-connections`` (`ServerContext.make_room`); else ``None``.

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
