"""The sender's connection to the server: connecting (``hello`` → ``welcome``), sending the
ledger's frames in sequence order, reading acks, noticing a stall, and the outage between
connections (reconnect backoff, one report).

:class:`Link` belongs to the sender thread: only that thread touches its socket and buffers.
It takes the ledger's lock to read frames or release acknowledged batches, never across a
system call. :func:`open_connection` is also used, blocking, by the replay of dead spools.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from safe_rotating._client import spool as _spool
from safe_rotating._client.config import Config, ServerRefused, describe
from safe_rotating._client.frames import fit_frame, for_server
from safe_rotating._client.ledger import NO_LIMIT, Ledger
from safe_rotating._common.backoff import Backoff, Outage
from safe_rotating._net import wire as _wire
from safe_rotating.exceptions import ServerUnavailable

__all__ = [
    "BACKOFF_MAX",
    "STALL_RECONNECT",
    "Link",
    "close_socket_in_child",
    "frame_limit",
    "open_connection",
    "protocol_of",
]

_BACKOFF_FIRST: Final = 0.05  # seconds before the first reconnect ...
# ... doubling up to this; each wait is drawn from [half, full]. Small, so that a client is back
# within half a second of a server's restart: a refused connect to a server that is down costs
# microseconds, and a server that is back must not find its clients asleep for seconds.
BACKOFF_MAX: Final = 0.4
_LASTED: Final = 5.0  # a connection that lasted this long ends an outage: backoff starts afresh
STALL_RECONNECT: Final = 4  # reconnect after this many ack_timeouts without any ack ...
_STALL_RECONNECT_MIN: Final = 30.0  # ... but never sooner than this (a slow disk is not a fault)
_SEND_CHUNK: Final = 1024 * 1024  # bytes of frames joined for one send
_monotonic = time.monotonic


def close_socket_in_child(sock: socket.socket) -> None:
    """Close a socket inherited through fork without touching the connection (no shutdown, no
    TLS close_notify): the parent still uses it."""
    try:
        fd = sock.detach()
    except Exception:
        return
    with contextlib.suppress(OSError):
        os.close(fd)


def open_connection(
    config: Config, client: str, host: str, identity: _spool.Identity | None = None
) -> tuple[socket.socket, _wire.FrameReader, dict[str, Any]]:
    """Connect, send ``hello`` and wait for ``welcome``; every step bounded by ``ack_timeout``.

    ``identity``: the process that logged the records, when it is not this one (a spool left
    by a process that ended): the server shows its host and app, not the replaying program's.

    Returns the socket (still blocking), its reader, and the welcome message. Raises ``OSError``
    (``ServerRefused`` when the server answered with an error).
    """
    timeout = config.ack_timeout
    deadline = _monotonic() + timeout
    sock: socket.socket
    if config.family == socket.AF_UNIX:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(config.target)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(config.target, timeout=timeout)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    try:
        if config.tls is not None:
            sock = config.tls.wrap_socket(sock, server_hostname=config.server_hostname)
        hello: dict[str, Any] = {
            "type": "hello",
            "client": client,
            "host": host,
            "pid": os.getpid(),
            "app": config.app,
            "protocols": [1, 2],
        }
        if identity is not None:
            hello.update(host=identity.host, pid=identity.pid, app=identity.app)
        if config.token is not None:
            hello["token"] = config.token
        sock.sendall(_wire.encode(hello))
        reader = _wire.FrameReader()
        while True:
            left = deadline - _monotonic()
            if left <= 0:
                raise TimeoutError(errno.ETIMEDOUT, f"no welcome within {timeout:g}s")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError(
                    errno.ECONNRESET, "the server closed the connection before its welcome"
                )
            reader.feed(data)
            for payload in reader.frames():
                message = _wire.decode(payload)
                if message["type"] == "error":
                    raise ServerRefused(
                        errno.ECONNREFUSED, f"the server refused: {message.get('reason')}"
                    )
                if message["type"] == "welcome":
                    last = message.get("last_seq", 0)
                    if isinstance(last, bool) or not isinstance(last, int) or last < 0:
                        raise _wire.ProtocolError(
                            "bad welcome", f"a welcome with last_seq={last!r}"
                        )
                    return sock, reader, message
    except _wire.ProtocolError as exc:
        sock.close()
        raise ConnectionError(errno.EPROTO, f"the server broke the protocol: {exc}") from None
    except BaseException:
        sock.close()
        raise


def frame_limit(welcome: dict[str, Any]) -> int:
    """The longest frame the server takes (its ``max_frame`` counts the payload only)."""
    announced = welcome.get("max_frame")
    if isinstance(announced, int) and not isinstance(announced, bool) and announced > 256:
        return announced + 4
    return NO_LIMIT


def protocol_of(welcome: dict[str, Any]) -> int:
    """The protocol a server's welcome offers: 2 takes rendered batches."""
    return 2 if welcome.get("protocol") == 2 else 1


class Link:
    """The sender thread's connection to the server, and the outage while there is none."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        host: str,
        report: Callable[[BaseException], None],
        away: Callable[[], None],
        closed: Callable[[], bool],
        fallback: bool,
        report_outage_after: float,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.host = host
        self._report = report
        self._away = away  # a connection attempt failed: the sender moves memory elsewhere
        self._closed = closed  # has the sender been closed (its ledger emptied)?
        self._fallback = fallback  # where records go meanwhile, for the outage report
        self.sock: socket.socket | None = None
        self._reader: _wire.FrameReader | None = None
        self._protocol = 1  # what the server's welcome offered: 2 takes rendered batches
        self.send_seq = 0  # the first batch not written whole to the socket
        self.out: memoryview | None = None  # frames joined for one send
        self._out_pos = 0  # bytes of out written so far
        self._out_marks: deque[tuple[int, int]] = deque()  # (end offset in out, records)
        self._gather_seq = 0  # next batch to join into out
        self.readable = False
        self.writable = False
        self.last_progress = 0.0
        self.stalled = False
        self.connected_once = False
        self.resting = False  # the server let an idle connection go: not an outage
        self.fallback_active = False
        self.backoff = Backoff(_BACKOFF_FIRST, BACKOFF_MAX, _LASTED)
        self.outage = Outage(report_outage_after)

    # -- connecting ------------------------------------------------------------------------------
    def connect(self) -> bool:
        """Connect and take the server's word for what it already wrote; False if it failed."""
        ledger = self.ledger
        try:
            sock, reader, welcome = open_connection(self.config, ledger.client, self.host)
        except Exception as exc:  # OSError mostly; a broken codec lookup, a bad welcome, ...
            self._connect_failed(exc)
            return False
        try:
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            self._connect_failed(exc)
            return False
        self.sock = sock
        self.resting = False
        self._reader = reader
        ledger.frame_limit = frame_limit(welcome)
        self._protocol = protocol_of(welcome)
        self.out = None
        self._out_marks.clear()
        self.readable = self.writable = True
        now = _monotonic()
        self.last_progress = now
        self.stalled = False
        self.fallback_active = False
        self.backoff.connected(now)
        self.outage.ended()
        if self.connected_once:
            ledger.stats.reconnects += 1
        self.connected_once = True
        with ledger.lock:
            ledger.acked(int(welcome.get("last_seq", 0)))
            self.send_seq = self._gather_seq = ledger.first_unacked()
        return True

    def _connect_failed(self, exc: BaseException) -> None:
        now = _monotonic()
        self.resting = False
        self.backoff.failed(now)
        self._outage(now, exc)
        self._away()

    def _outage(self, now: float, exc: BaseException) -> None:
        self.outage.failed(now, describe(exc))
        if isinstance(exc, ServerRefused) and not self.outage.reported:
            self._report_outage(now)  # a misconfiguration: say so at once

    def maybe_report_outage(self, now: float) -> None:
        if self.outage.report_due(now):
            self._report_outage(now)

    def _report_outage(self, now: float) -> None:
        outage = self.outage
        outage.reported = True
        spool_dir = self.ledger.spooler.spool_dir
        if self.config.spool_root is not None:
            kept = "records wait in the spool"
            if spool_dir is not None:
                kept += f" in {spool_dir}"
        elif self._fallback:
            kept = "records go to the fallback file"
        else:
            kept = f"records wait in memory (up to queue_size={self.config.queue_size})"
        lasted = outage.lasted(now)
        self._report(ServerUnavailable(self.config.address, lasted, outage.reason, kept))

    def disconnect(self, reason: BaseException | None) -> None:
        """Close the connection; ``reason``: why it failed (None: no failure, no outage)."""
        sock, self.sock = self.sock, None
        self._reader = None
        self.out = None
        self._out_marks.clear()
        self.readable = self.writable = False
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if reason is None:
            return
        now = _monotonic()
        self._outage(now, reason)
        self.backoff.lost(now)
        self.stalled = False
        if self.config.spool_root is not None:
            with self.ledger.lock:
                self.ledger.spool_memory()

    def _rest(self) -> None:
        """The server closed a connection it found idle (a ``bye``, or a close with nothing
        owed): not an outage. No backoff, no spool, no report; the next connection is made as
        soon as there is something to send, and a failure then is an outage as usual."""
        self.disconnect(None)
        self.resting = True

    def abandon(self) -> None:
        """In a forked child: close the parent's socket without touching its connection."""
        sock, self.sock = self.sock, None
        if sock is not None:
            close_socket_in_child(sock)

    # -- sending ---------------------------------------------------------------------------------
    def outstanding(self) -> bool:
        """Has this connection sent (part of) a batch not acknowledged yet?"""
        return self.out is not None or self.send_seq > self.ledger.first_unacked()

    def handed_over_seq(self) -> int:
        """The first batch not written whole to a live connection (0: no connection)."""
        return self.send_seq if self.sock is not None else 0

    def _gather(self) -> None:
        """Join the frames not written yet (up to :data:`_SEND_CHUNK` bytes) into one buffer, so
        that one ``send`` writes many batches: every system call gives up the GIL, and a busy
        application thread may keep it for a whole switch interval before we get it back."""
        frames: list[bytes] = []
        marks: deque[tuple[int, int]] = deque()
        size = 0
        ledger = self.ledger
        limit = ledger.frame_limit
        with ledger.lock:
            if self._closed():
                return
            if not self.outstanding():
                self.last_progress = _monotonic()  # nothing outstanding: the clock starts now
            seq = max(self._gather_seq, ledger.first_unacked())
            for batch, frame in ledger.frames_from(seq, _SEND_CHUNK):
                frame = for_server(frame, self._protocol)
                if len(frame) > limit:
                    frame, left_out = fit_frame(frame, limit)
                    if left_out:
                        reason = f"a batch was over the server's max_frame ({limit - 4} bytes)"
                        ledger.cuts.append((left_out, reason))
                frames.append(frame)
                size += len(frame)
                marks.append((size, batch.count))
                seq += 1
            self._gather_seq = seq
        ledger.tell_problems()
        if frames:
            self.out = memoryview(frames[0] if len(frames) == 1 else b"".join(frames))
            self._out_pos = 0
            self._out_marks = marks

    def send(self) -> None:
        sock = self.sock
        assert sock is not None
        ledger = self.ledger
        while True:
            if self.out is None:
                self._gather()
                if self.out is None:
                    return
            out = self.out
            try:
                written = sock.send(out[self._out_pos :])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self.writable = False
                return
            except OSError as exc:
                self.disconnect(exc)
                return
            self._out_pos += written
            marks = self._out_marks
            sent = False
            while marks and marks[0][0] <= self._out_pos:
                ledger.stats.sent += marks.popleft()[1]
                self.send_seq += 1
                sent = True
            if sent and ledger.waiters:  # hand_over() waits for whole batches on the socket
                with ledger.lock:
                    ledger.changed.notify_all()
            if self._out_pos < len(out):
                self.writable = False
                return
            self.out = None

    # -- receiving -------------------------------------------------------------------------------
    def receive(self) -> None:
        sock, reader = self.sock, self._reader
        assert sock is not None
        assert reader is not None
        self.readable = False
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    if self.outstanding():
                        self.disconnect(ConnectionResetError("the server closed the connection"))
                    else:  # nothing owed: the server let an idle connection go
                        self._rest()
                    return
                reader.feed(data)
                if len(data) < 65536 and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:
            self.disconnect(exc)
            return
        acked = 0
        try:
            for payload in reader.frames():
                message = _wire.decode(payload)
                kind = message["type"]
                if kind == "ack":
                    seq = message.get("seq")
                    if isinstance(seq, int) and not isinstance(seq, bool):
                        acked = max(acked, seq)  # acks are in order: the last one says it all
                elif kind == "error":
                    reason = f"the server refused: {message.get('reason')}"
                    self.disconnect(ServerRefused(errno.ECONNABORTED, reason))
                    break
                elif kind == "bye":  # closed as idle (--idle-timeout): batches sent are resent
                    self._rest()
                    break
        except _wire.ProtocolError as exc:
            self.disconnect(ConnectionError(errno.EPROTO, f"the server broke the protocol: {exc}"))
        if acked:
            self.last_progress = _monotonic()
            self.backoff.reset()  # progress: the next outage starts afresh
            self.stalled = False
            with self.ledger.lock:
                self.ledger.acked(min(acked, self.send_seq - 1))

    # -- a server that does not answer -----------------------------------------------------------
    def stall_after(self) -> float:
        """Seconds without an ack until the next step: spool (then) reconnect."""
        timeout = self.config.ack_timeout
        if self.stalled:
            return max(STALL_RECONNECT * timeout, _STALL_RECONNECT_MIN)
        return timeout

    def check_stall(self, now: float) -> None:
        if self.sock is None or not self.outstanding():
            return
        waited = now - self.last_progress
        config = self.config
        if waited >= max(STALL_RECONNECT * config.ack_timeout, _STALL_RECONNECT_MIN):
            self.disconnect(TimeoutError(errno.ETIMEDOUT, f"no ack for {waited:.1f}s"))
        elif waited >= config.ack_timeout and not self.stalled:
            self.stalled = True  # keep the connection, but keep what it owes us on disk
            if config.spool_root is not None:
                with self.ledger.lock:
                    self.ledger.spool_memory()
