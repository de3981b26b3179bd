"""The sending half of :class:`safe_rotating.client.LogServerHandler`: one per process.

``emit`` (on the application's threads) only appends a flattened record to :attr:`Sender.queue`
— no lock, no system call, except a one-byte write on a pipe to wake the sender thread when the
queue turns non-empty. The sender thread does everything else:

* **Batching.** Records are encoded and cut into batches of at most ``batch_size`` records (and
  about :data:`BATCH_BYTES`; one record alone may be longer), at the latest ``flush_interval``
  after the first of them was seen. Every batch gets the next sequence number of this process's
  client id. Many batches go out in one ``send``: every system call gives up the GIL, which a
  busy application thread may then keep for a whole switch interval.
* **The ledger.** Every batch is kept until the server acknowledges it, in one ordered ledger:
  a prefix of batches on disk (:attr:`Sender.disk`, in the spool) followed by batches in memory
  (:attr:`Sender.mem`). A batch moves to disk only after every older batch has, so a spool never
  has a gap that a crash could leave unfilled.
* **Connection.** ``hello`` → ``welcome`` (blocking, bounded by ``ack_timeout``), then a
  non-blocking socket driven by ``poll``: frames go out in sequence order, acks come back and
  release batches (an ack of ``n`` releases every batch up to ``n``). A lost connection is
  retried with exponential backoff and jitter; ``welcome.last_seq`` says which batches the
  server already wrote, and the rest are sent again in order.
* **Spool.** While no connection is up, or no ack came for ``ack_timeout``, or memory holds
  more than half of ``queue_size``, batches go to the spool (see :mod:`._spool`) instead of
  memory; they are sent from there when the server takes them again. Spools left by dead
  processes are replayed by a second, short-lived thread over its own connection.

Fork: a ``Sender`` belongs to the process that made it (:attr:`Sender.pid`). The handler
compares the pid on every use; in a child it calls :meth:`Sender.abandon` on the parent's object
(closing inherited descriptors only: the parent owns the records, the socket and the spool) and
starts a new ``Sender`` with a new client id. ``os.register_at_fork`` is only the fast path.
In a uWSGI master, which forks its workers from C, no thread is started at all
(:meth:`Sender.write_direct`).
"""

from __future__ import annotations

import bisect
import contextlib
import encodings.idna  # noqa: F401 - imported now: a lazy import of it fails in threads after fork
import errno
import itertools
import json
import math
import os
import random
import select
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from safe_rotating._client import spool as _spool
from safe_rotating._net import rendered as _rendered
from safe_rotating._net import wire as _wire
from safe_rotating.exceptions import ServerUnavailable

__all__ = ["BATCH_BYTES", "RECORD_BYTES", "ClientStats", "Config", "Item", "Leftover", "Sender"]

# A queued record: flat (a dict, for the server to format: protocol 1) or rendered by the
# handler's formatter (``(line as UTF-8, levelno, created, logger name)``: protocol 2).
Item = dict[str, Any] | tuple[bytes, int, float, str]
BATCH_BYTES: Final = 64 * 1024  # a batch takes no more records once it is this long ...
RECORD_BYTES: Final = 512 * 1024 - 256  # ... but one record may be up to this (then it is cut)
_NO_LIMIT: Final = 1 << 62
_BACKOFF_FIRST: Final = 0.05  # seconds before the first reconnect ...
# ... doubling up to this; each wait is drawn from [half, full]. Small, so that a client is back
# within half a second of a server's restart: a refused connect to a server that is down costs
# microseconds, and a server that is back must not find its clients asleep for seconds.
_BACKOFF_MAX: Final = 0.4
_LASTED: Final = 5.0  # a connection that lasted this long ends an outage: backoff starts afresh
_BUG_PAUSE: Final = 5.0  # after an unforeseen error in the sender thread
_RESCAN_EVERY: Final = 30.0  # seconds between looks for spools left by dead processes
_REPORT_OUTAGE_AFTER: Final = 10.0  # an outage is reported once it lasts this long
_SPOOL_RETRY: Final = 5.0  # after a spool write failed, seconds before trying the disk again
_STALL_RECONNECT: Final = 4  # reconnect after this many ack_timeouts without any ack ...
_STALL_RECONNECT_MIN: Final = 30.0  # ... but never sooner than this (a slow disk is not a fault)
_SEND_CHUNK: Final = 1024 * 1024  # bytes of frames joined for one send
_REPLAY_WINDOW: Final = 32  # batches of a dead spool in flight before waiting for acks
_IDLE_WAIT: Final = 5.0  # longest sleep of the sender thread
_INF: Final = math.inf
_LENGTH = struct.Struct(">I")
_monotonic = time.monotonic


@dataclass(frozen=True)
class Config:
    """Validated settings (see ``LogServerHandler`` for their meaning)."""

    address: str  # as the user wrote it, for messages
    family: int
    target: Any  # (host, port) or a path
    tls: ssl.SSLContext | None
    server_hostname: str | None
    token: str | None
    app: str
    batch_size: int
    flush_interval: float
    queue_size: int
    spool_root: str | None  # None: no spool
    spool_root_is_default: bool
    spool_max_bytes: int
    ack_timeout: float
    flush_timeout: float
    block_timeout: float
    block: bool  # on_full == "block"
    fallback: bool


@dataclass
class ClientStats:
    """Counters of one process's handler (a forked child starts from zero).

    ``queued``: records accepted by ``emit``; ``sent``: records written to a server connection
    (a batch sent again after a reconnect counts again); ``acked``: records the server
    acknowledged; ``spooled``: records written to the spool; ``replayed``: acknowledged records
    that were sent from a spool (this process's own, or one left by a dead process);
    ``dropped``: records lost on purpose (``on_full``, or cut from a batch too large for the
    server); ``reconnects``: connections made after the first; ``fallback``: records written
    to ``fallback_file``; ``pending``: records accepted and not yet acknowledged, dropped or
    written to the fallback file (in memory or in the spool).
    """

    queued: int = 0
    sent: int = 0
    acked: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    reconnects: int = 0
    fallback: int = 0
    pending: int = 0


@dataclass
class Leftover:
    """What :meth:`Sender.close` could not deliver: ``spooled`` records wait in the spool of
    ``client`` in ``spool_dir``; ``lost`` had nowhere to go (no spool, no fallback file);
    ``reason`` why the server did not take them (the last connection error, or no ack)."""

    spooled: int = 0
    lost: int = 0
    spool_dir: str | None = None
    client: str = ""
    reason: str = ""


class _Batch:
    __slots__ = ("count", "first", "frame", "from_disk", "length", "offset", "segment", "seq")

    def __init__(self, seq: int, count: int, first: int, frame: bytes) -> None:
        self.seq = seq
        self.count = count
        self.first = first  # index (in emit order) of its first record
        self.frame: bytes | None = frame  # None once only the spool has it
        self.segment = 0
        self.offset = 0
        self.length = len(frame)
        self.from_disk = False  # sent from the spool at least once


class ServerRefused(ConnectionError):
    """The server answered with an ``error`` message (wrong token, protocol, ...)."""


# -- encoding ------------------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    """Compact JSON that a strict parser accepts: no NaN/Infinity, valid UTF-8 only."""
    fast = _wire._orjson  # type: ignore[attr-defined]  # read each time: tests switch it off
    if fast is not None:
        return bytes(fast.dumps(obj))
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _clean(value: Any, depth: int = 0) -> Any:
    """``value`` reduced to what every JSON encoder takes (the slow path, after a failure)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int):
        return int(value) if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(value)
    if depth < 6:
        if isinstance(value, list | tuple):
            return [_clean(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {_clean(_safe_repr(k) if not isinstance(k, str) else k): _clean(v, depth + 1)
                    for k, v in value.items()}  # fmt: skip
    return _clean(_safe_repr(value))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" ...[{len(text) - limit} characters cut: record too large]"


def encode_record(flat: dict[str, Any]) -> bytes:
    """One record as JSON bytes, whatever it holds, never longer than :data:`RECORD_BYTES`."""
    try:
        data = _dumps(flat)
    except Exception:  # an int over 64 bits, a lone surrogate, NaN, a dict key orjson refuses
        try:
            data = _dumps(_clean(flat))
        except Exception as exc:
            data = _dumps({"msg": f"<record that could not be encoded: {exc!r}>"})
    if len(data) <= RECORD_BYTES:
        return data
    smaller = dict(flat)
    if "extra" in smaller:
        smaller["extra"] = {"cut": _cut(_safe_repr(smaller["extra"]), 1000)}
    for key, share in (("msg", 2), ("exc_text", 4), ("stack_info", 8)):
        value = smaller.get(key)
        if isinstance(value, str):
            smaller[key] = _cut(value, RECORD_BYTES // (3 * share))
    try:
        data = _dumps(_clean(smaller))
    except Exception as exc:  # pragma: no cover - _clean output always encodes
        data = _dumps({"msg": f"<record that could not be encoded: {exc!r}>"})
    if len(data) > RECORD_BYTES:  # absurdly long names: keep the message head only
        data = _dumps({"msg": _cut(str(smaller.get("msg")), 1000), "created": flat.get("created")})
    return data


def batch_frame(client: str, seq: int, records: Iterable[bytes]) -> bytes:
    """A native ``batch`` frame (with the client id, so the spool can store it as it is)."""
    head = b'{"v":1,"type":"batch","seq":%d,"client":"%s","records":[' % (seq, client.encode())
    body = head + b",".join(records) + b"]}"
    return _LENGTH.pack(len(body)) + body


def fit_frame(frame: bytes, limit: int) -> tuple[bytes, int]:
    """``frame`` cut to at most ``limit`` bytes by leaving out its last records; returns the
    frame and how many records were left out. Only for a server announcing a tiny max_frame."""
    if len(frame) <= limit:
        return frame, 0
    if _rendered.is_batch(frame[4:5]):
        return _rendered.cut_frame(frame, limit)
    message = _wire.loads(frame[4:])
    records = message["records"]
    encoded = [_dumps(record) for record in records]
    keep = len(encoded)
    frame = batch_frame(message["client"], message["seq"], encoded)
    while len(frame) > limit and keep > 0:
        keep -= 1
        frame = batch_frame(message["client"], message["seq"], encoded[:keep])
    return frame, len(encoded) - keep


def rendered_item(record: Item) -> dict[str, Any]:
    """A queued record as a flat record: a rendered one (a tuple) becomes ``msg`` = its line,
    marked ``rendered`` (the fallback file writes it as it is)."""
    if isinstance(record, dict):
        return record
    text, levelno, created, name = record
    return {
        "created": created,
        "name": name,
        "levelno": levelno,
        "msg": text.decode("utf-8", "backslashreplace"),
        "rendered": True,
    }


def flats_of(frame: bytes) -> list[dict[str, Any]]:
    """The records of a batch frame (either protocol) as flat records."""
    if _rendered.is_batch(frame[4:5]):
        flats = _rendered.to_v1_records(_rendered.parse_batch(frame[4:]))
        for flat in flats:
            flat["rendered"] = True
        return flats
    records: list[dict[str, Any]] = _wire.loads(frame[4:])["records"]
    return records


def for_server(frame: bytes, protocol: int) -> bytes:
    """``frame`` as a server speaking ``protocol`` takes it: a protocol-2 batch (from the
    memory queue or a spool) becomes a v1 batch for a server that speaks only protocol 1; that
    server then formats each line with its ``--format`` (``%(message)s`` writes it as is)."""
    if protocol >= 2 or not _rendered.is_batch(frame[4:5]):
        return frame
    batch = _rendered.parse_batch(frame[4:])
    records = [encode_record(flat) for flat in _rendered.to_v1_records(batch)]
    return batch_frame(batch.client, batch.seq, records)


def _protocol(welcome: dict[str, Any]) -> int:
    return 2 if welcome.get("protocol") == 2 else 1


# -- connections ---------------------------------------------------------------------------------
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


def _frame_limit(welcome: dict[str, Any]) -> int:
    """The longest frame the server takes (its ``max_frame`` counts the payload only)."""
    announced = welcome.get("max_frame")
    if isinstance(announced, int) and not isinstance(announced, bool) and announced > 256:
        return announced + 4
    return _NO_LIMIT


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.errno is None or exc.strerror[:1].isupper() else str(exc)
    return str(exc) or type(exc).__name__


def in_uwsgi_master() -> bool:
    """Is this the process where uWSGI loads the app before forking its workers from C?

    A thread running there may hold the GIL at the instant of a fork (at start-up, and whenever
    a worker is respawned): the worker then waits for it forever. So no sender thread runs in
    that process; see :meth:`Sender.write_direct`.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return False
    try:
        return bool(uwsgi.worker_id() == 0 and uwsgi.mule_id() == 0)
    except Exception:
        return False


def _close_socket_in_child(sock: socket.socket) -> None:
    """Close a socket inherited through fork without touching the connection (no shutdown, no
    TLS close_notify): the parent still uses it."""
    try:
        fd = sock.detach()
    except Exception:
        return
    with contextlib.suppress(OSError):
        os.close(fd)


# -- the sender ----------------------------------------------------------------------------------
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
        self.client = uuid.uuid4().hex
        self._report = report
        self._dropped = dropped
        self._fallback = fallback
        self.host = socket.gethostname()
        self.queue: deque[Item] = deque()
        self.queue_size = config.queue_size
        self.wake_at = _INF  # emit wakes the thread when len(queue) reaches this
        self.enqueued = 0  # records appended by emit (their index is their position)
        self.taken = 0  # records taken off the queue (batched or dropped)
        self.mem_records = 0
        self.mem: deque[_Batch] = deque()
        self.disk: deque[_Batch] = deque()
        self.next_seq = 1
        self.lock = threading.Lock()  # the ledger, the queue's consumers and the spool
        self.changed = threading.Condition(self.lock)  # room or settled records, for waiters
        self.waiters = 0
        self.flush_target = 0
        self.stats = ClientStats()
        self.thread: threading.Thread | None = None
        self.replayer: threading.Thread | None = None
        self.replay_fds: set[int] = set()
        self._replay_sent = 0  # counted apart: the replay thread has its own counters
        self._replay_acked = 0
        self.stopping = False
        self.finished = False
        self._start_lock = threading.Lock()
        self._wake_r = -1
        self._wake_w = -1
        self._carry: tuple[Item, bytes] | None = None
        self._first_seen = 0.0  # when the sender first saw the oldest queued record
        # the spool
        self.spool_dir: str | None = None
        self.spool: _spool.OwnSpool | None = None
        self._spool_retry_at = 0.0 if config.spool_root is not None else _INF
        self._spool_failing = False
        # the connection (sender thread only)
        self.sock: socket.socket | None = None
        self._reader: _wire.FrameReader | None = None
        self._frame_limit = _NO_LIMIT
        self._protocol = 1  # what the server's welcome offered: 2 takes rendered batches
        self._send_seq = 0
        self._out: memoryview | None = None  # frames joined for one send
        self._out_pos = 0  # bytes of _out written so far
        self._out_marks: deque[tuple[int, int]] = deque()  # (end offset in _out, records)
        self._gather_seq = 0  # next batch to join into _out
        self._readable = False
        self._writable = False
        self._problems: list[BaseException] = []  # found under the lock, reported after it
        self._cuts: list[tuple[int, str]] = []
        self._last_progress = 0.0
        self.stalled = False
        self.connected_once = False
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._connected_at = 0.0
        self._outage_since: float | None = None
        self._outage_reason = ""
        self._outage_reported = False
        self._resting = False  # the server let an idle connection go: not an outage
        self.fallback_active = False
        self._next_scan = 0.0
        # No thread in a uWSGI master: its records go straight to the spool (write_direct).
        self.direct = in_uwsgi_master()
        self.direct_ids: set[str] = set()  # ids write_direct left records under
        self.direct_full = False  # write_direct's last refusal: spool_max_bytes was reached

    # -- caller side -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._start_lock:
            if self.thread is not None:
                return
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            thread = threading.Thread(target=self._run, name="safe_rotating-sender", daemon=True)
            thread.start()
            self.thread = thread

    def write_direct(self, flat: Item) -> bool:
        """Without a sender thread: append one record to the spool right away, leaving the
        spool unlocked so that any other client on the directory (a worker) delivers it.
        A local append, never network I/O. False if there is no spool to write to, or no room
        in it (:attr:`direct_full`): the master's records stay within ``spool_max_bytes``."""
        with self.lock:
            written = self._write_direct(flat)
        self._tell_problems()
        return written

    def _write_direct(self, flat: Item) -> bool:
        config = self.config
        if config.spool_root is None or self.finished or not self._spool_usable():
            return False
        data = encode_record(flat) if isinstance(flat, dict) else b""
        segment_bytes = max(64 * 1024, min(32 * 1024 * 1024, config.spool_max_bytes // 4))
        try:
            if self.spool_dir is None:
                self.spool_dir = _spool.prepare_directory(
                    config.spool_root,
                    _spool.address_key(config.address),
                    config.spool_root_is_default,
                )
            for _ in range(2):
                if isinstance(flat, dict):
                    frame = batch_frame(self.client, self.next_seq, [data])
                else:
                    text, levelno, created, name = flat
                    frame = _rendered.encode_batch(
                        self.client, self.next_seq, [text], [levelno], [name], [created]
                    )
                outcome = _spool.append_unlocked(
                    self.spool_dir,
                    self.client,
                    frame,
                    segment_bytes,
                    config.spool_max_bytes,
                    self.direct_ids,
                    self.identity(),
                )
                self.direct_full = outcome == _spool.FULL
                if outcome != _spool.BUSY:
                    break
                # Someone is delivering this spool right now: go on under a new id.
                self.client = uuid.uuid4().hex
                self.next_seq = 1
            if outcome != _spool.APPENDED:
                return False
        except OSError as exc:
            self.direct_full = False
            self._spool_retry_at = _monotonic() + _SPOOL_RETRY
            self.spool_dir = None
            self._problems.append(OSError(exc.errno, f"cannot write the spool: {_describe(exc)}"))
            return False
        self.next_seq += 1
        self.enqueued += 1
        self.taken += 1
        self.stats.spooled += 1
        return True

    def wake(self) -> None:
        self.wake_at = _INF
        try:  # noqa: SIM105 - on emit's path: cheaper than contextlib.suppress
            os.write(self._wake_w, b"!")
        except OSError:  # the pipe is full (the thread will wake anyway) or closed
            pass

    def full(self) -> bool:
        return len(self.queue) + self.mem_records >= self.queue_size

    def make_room(self) -> bool:
        """Memory is full: move what it holds to the spool, on this (the caller's) thread.

        Local file appends only, never network I/O: first the batches in memory (already
        encoded: one write), and only if that is not enough, the queue. False if there is no
        usable room in the spool."""
        with self.lock:
            if self.finished or not self._spool_usable():
                return False
            if self._spool_memory() and self.full():
                self._spool_everything()
            room = not self.full()
        self._tell_problems()
        return room

    def wait_for_room(self, timeout: float) -> bool:
        deadline = _monotonic() + timeout
        self.wake()
        with self.lock:
            if not self._wait_while(lambda: self.full() and not self.finished, deadline):
                return False
        return not self.full()

    def _wait_while(self, pending: Callable[[], bool], deadline: float) -> bool:
        """Under the lock: wait while ``pending()`` (woken through :attr:`changed`, looking
        again every 50 ms at most); False if ``deadline`` came first."""
        self.waiters += 1
        try:
            while pending():
                left = deadline - _monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.05))
            return True
        finally:
            self.waiters -= 1

    def settled(self) -> int:
        """Index below which every record is acknowledged, spooled, dropped or written to the
        fallback file (records are numbered in emit order). Call under the lock."""
        if self.mem:
            return self.mem[0].first
        return self.taken

    def flush(self, timeout: float) -> bool:
        """Wait until every record emitted so far is acknowledged or spooled (or dropped or in
        the fallback file); at the deadline, spool what is still only in memory. True if
        everything was settled without needing that."""
        if self.thread is None:
            return True
        target = self.enqueued
        deadline = _monotonic() + timeout
        with self.lock:
            self.flush_target = max(self.flush_target, target)
        self.wake()
        thread = self.thread
        with self.lock:
            self._wait_while(lambda: self.settled() < target and thread.is_alive(), deadline)
            done = self.settled() >= target
            if not done and not self.finished and self._spool_usable():
                self._spool_everything()
        self._tell_problems()
        return done

    def handed_over(self) -> int:
        """Index below which every record is settled (see :meth:`settled`) or in a batch this
        connection has written whole to its socket: out of this process's memory, for the
        kernel to deliver even if the process ends now. Call under the lock."""
        send_seq = self._send_seq if self.sock is not None else 0
        for batch in self.mem:
            if batch.seq >= send_seq:
                return batch.first
        return self.taken

    def hand_over(self, timeout: float) -> None:
        """Get every record emitted so far out of this process's memory: sent to the server's
        socket or spooled, without waiting for its ack — for a host that may end this process
        without running any exit hook (a uWSGI worker: see ``client._after_uwsgi_request``).
        Does nothing while the server is away (see below); spools at ``timeout`` what is still
        not sent."""
        if self.thread is None or self.finished:
            return
        target = self.enqueued
        with self.lock:
            # While the server is away, records wait as they always do (in memory, then the
            # spool when memory fills): spooling after every request then kept a worker's
            # sender from reconnecting for seconds (seen in the restart tests under load).
            if self.handed_over() >= target or self._outage_since is not None:
                return
            self.flush_target = max(self.flush_target, target)
        self.wake()
        deadline = _monotonic() + timeout
        thread = self.thread
        with self.lock:
            # A connection being made is waited for; a server found away is not.
            self._wait_while(
                lambda: (
                    self.handed_over() < target and self._outage_since is None and thread.is_alive()
                ),
                deadline,
            )
            if self.handed_over() < target and not self.finished and self._spool_usable():
                self._spool_everything()
        self._tell_problems()

    def identity(self) -> _spool.Identity:
        """Who logs through this sender: kept with its spool, so that whoever delivers a spool
        this process leaves behind shows the records as this process's."""
        return _spool.Identity(self.pid, self.host, self.config.app, self.config.address)

    def close(self, timeout: float) -> Leftover:
        """Deliver (bounded by ``timeout``), stop the thread, spool whatever is left.

        Delivered means acknowledged by the server: what is queued, in memory *and in this
        process's spool* is sent while the deadline allows, the server being retried every
        :data:`_BACKOFF_MAX` at most, so a server that restarts meanwhile still gets it all.
        Returns what was not delivered (see :class:`Leftover`); the caller reports it."""
        left = Leftover()
        if self.thread is not None:
            deadline = _monotonic() + timeout
            self.flush(timeout)
            self._deliver(deadline)
            self.stopping = True
            self.wake()
            self.thread.join(min(timeout, 1.0) if timeout > 0 else 0.5)
        with self.lock:
            if self.finished:
                return left
            if self._spool_usable():
                self._spool_everything()
            lost = [record for batch in self.mem for record in self._records_of(batch)]
            lost += map(rendered_item, self.queue)
            left.spooled = sum(batch.count for batch in self.disk)
            left.spool_dir = self.spool_dir
            left.client = self.client
            left.reason = self._outage_reason if self.sock is None else "not acknowledged in time"
            self.queue.clear()
            self.mem.clear()
            self.mem_records = 0
            self.finished = True
            if self.spool is not None:
                self.spool.close()
                self.spool = None
            for fd in list(self.replay_fds):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.replay_fds.clear()
            if self.thread is None or not self.thread.is_alive():
                self._close_pipe()
            self.changed.notify_all()
        self._tell_problems()
        if lost and self._fallback is not None:
            try:
                self._fallback(lost)
            except Exception as exc:
                self._report(exc)
            else:
                self.stats.fallback += len(lost)
                return left
        left.lost = len(lost)
        return left

    def _deliver(self, deadline: float) -> None:
        """Before closing: wait until the server has acknowledged everything queued, in memory
        or spooled, or until ``deadline``. An unreachable server is retried meanwhile (the
        thread's backoff is at most :data:`_BACKOFF_MAX`): it may be restarting. A replay of
        dead spools under way may finish too."""
        thread = self.thread
        assert thread is not None
        with self.lock:
            self._wait_while(
                lambda: bool(self.disk or self.mem or self.queue) and thread.is_alive(), deadline
            )
        replayer = self.replayer
        if replayer is not None:  # and let a replay of dead spools that is under way finish
            replayer.join(max(0.0, deadline - _monotonic()))

    def abandon(self) -> None:
        """In a forked child: drop this (the parent's) state, closing inherited descriptors only.

        Never takes a lock: a thread of the parent may have held one at the fork."""
        self.finished = True
        self.stopping = True
        self.queue = deque()
        self.mem = deque()
        self.disk = deque()
        sock, self.sock = self.sock, None
        if sock is not None:
            _close_socket_in_child(sock)
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.abandon()
        for fd in (*self.replay_fds, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.replay_fds = set()
        self._wake_r = self._wake_w = -1

    def snapshot(self) -> ClientStats:
        stats = ClientStats(**vars(self.stats))
        stats.queued = self.enqueued
        stats.sent += self._replay_sent
        stats.replayed += self._replay_acked
        with self.lock:
            stats.pending = len(self.queue) + self.mem_records + sum(b.count for b in self.disk)
        return stats

    # -- the ledger (under self.lock) ------------------------------------------------------------
    def _spool_usable(self) -> bool:
        return _monotonic() >= self._spool_retry_at

    def _notify(self) -> None:
        if self.waiters:
            self.changed.notify_all()

    def _take_batch(self, most: int) -> _Batch | None:
        """The next batch from the queue: up to ``most`` (at most ``batch_size``) records and
        :data:`BATCH_BYTES`."""
        queue = self.queue
        if not queue:
            return None
        most = min(most, self.config.batch_size)
        if isinstance(queue[0], tuple):
            return self._take_rendered(most)
        limit = min(BATCH_BYTES, self._frame_limit) - 120  # room for the batch head
        records: list[bytes] = []
        size = 0
        while queue and len(records) < most:
            flat = queue[0]
            if not isinstance(flat, dict):
                break  # a rendered record: it starts the next batch
            carry = self._carry
            data = carry[1] if carry is not None and carry[0] is flat else encode_record(flat)
            if records and size + len(data) + 1 > limit:
                self._carry = (flat, data)
                break
            queue.popleft()
            records.append(data)
            size += len(data) + 1
        self._carry = None
        seq = self.next_seq
        self.next_seq += 1
        batch = _Batch(seq, len(records), self.taken, batch_frame(self.client, seq, records))
        self.taken += len(records)
        return batch

    def _take_rendered(self, most: int) -> _Batch:
        """The next protocol-2 batch: rendered records from the head of the queue, up to
        ``most`` records and :data:`BATCH_BYTES`.

        Done mostly in C (slices, ``zip``, ``accumulate``, ``bisect``): the application's
        threads wait for the GIL while this runs, and their ``emit`` latency shows it."""
        queue = self.queue
        items: list[Any] = list(itertools.islice(queue, most))
        if dict in set(map(type, items)):  # records for the server to format follow
            items = items[: next(i for i, item in enumerate(items) if type(item) is dict)]
        texts, levels, created, names = zip(*items, strict=True)
        limit = min(BATCH_BYTES, self._frame_limit) - 256 - _rendered.PER_RECORD * len(items)
        # How many fit in ``limit`` bytes (the first always does, however long).
        count = max(1, bisect.bisect_right(list(itertools.accumulate(map(len, texts))), limit))
        if count < len(items):
            texts, levels, created, names = (
                texts[:count], levels[:count], created[:count], names[:count]
            )  # fmt: skip
        for _ in range(count):
            queue.popleft()
        seq = self.next_seq
        self.next_seq += 1
        frame = _rendered.encode_batch(self.client, seq, texts, levels, names, created)
        batch = _Batch(seq, count, self.taken, frame)
        self.taken += count
        return batch

    def _to_disk(self, batches: list[_Batch]) -> int:
        """Append ``batches`` (in order, all in memory) to the spool with as few writes as
        possible; returns how many were stored — a prefix, the rest did not fit or failed."""
        if not batches or not self._spool_usable():
            return 0
        spool = self.spool
        try:
            if spool is None:
                if self.spool_dir is None:
                    assert self.config.spool_root is not None
                    self.spool_dir = _spool.prepare_directory(
                        self.config.spool_root,
                        _spool.address_key(self.config.address),
                        self.config.spool_root_is_default,
                    )
                spool = self.spool = _spool.OwnSpool(
                    self.spool_dir, self.client, self.config.spool_max_bytes, self.identity()
                )
            count = spool.fits([batch.length for batch in batches])
            if not count:
                return 0
            frames: list[bytes] = []
            for batch in batches[:count]:
                assert batch.frame is not None
                frames.append(batch.frame)
            placed = spool.append(frames)
        except OSError as exc:
            self._spool_retry_at = _monotonic() + _SPOOL_RETRY
            if self.spool is None:
                self.spool_dir = None  # create the directory again next time
            if not self._spool_failing:
                self._spool_failing = True
                note = (
                    "records stay in memory (queue_size) meanwhile; this is reported once, "
                    f"the spool is tried again every {_SPOOL_RETRY:g}s"
                )
                told = OSError(exc.errno, f"cannot write the spool: {_describe(exc)}; {note}")
                told.__cause__ = exc
                self._problems.append(told)
            return 0
        self._spool_failing = False
        for batch, (segment, offset) in zip(batches, placed, strict=False):
            batch.segment, batch.offset = segment, offset
            batch.frame = None
            self.stats.spooled += batch.count
        return count

    def _spool_memory(self) -> bool:
        """Move every in-memory batch to the spool, oldest first; False if not all fit."""
        mem = self.mem
        if not mem:
            return True
        stored = self._to_disk(list(mem))
        for _ in range(stored):
            batch = mem[0]
            self.disk.append(batch)  # first on disk, then off memory: never in neither
            mem.popleft()
            self.mem_records -= batch.count
        if stored:
            self._notify()
        return not mem

    def _place(self, batches: list[_Batch], spool_it: bool) -> None:
        """New batches (newest last) to the spool if ``spool_it`` and all older ones are there,
        else to memory."""
        if spool_it and self._spool_memory():
            stored = self._to_disk(batches)
            self.disk.extend(batches[:stored])
            batches = batches[stored:]
        for batch in batches:
            self.mem.append(batch)
            self.mem_records += batch.count

    def _batches(self) -> list[_Batch]:
        """The records queued now, cut into batches. Records queued meanwhile wait for the next
        call: an application logging as fast as we encode must not keep us here."""
        batches: list[_Batch] = []
        left = len(self.queue)
        while left > 0:
            batch = self._take_batch(left)
            if batch is None:
                break
            batches.append(batch)
            left -= batch.count
        return batches

    def _spool_everything(self) -> None:
        """Memory and queue to the spool, in order, as far as the spool takes them."""
        if self._spool_memory():
            self._place(self._batches(), spool_it=True)
        self._notify()

    def _form(self, now: float, force: bool) -> None:
        """Cut the queue into batches and put each where it belongs."""
        queue = self.queue
        if not queue:
            return
        if not self._first_seen:
            self._first_seen = now
        config = self.config
        if not (
            force
            or len(queue) >= config.batch_size
            or now >= self._first_seen + config.flush_interval
            or self.flush_target > self.taken
        ):
            return
        if self.fallback_active and self._fallback is not None:
            records = [rendered_item(queue.popleft()) for _ in range(len(queue))]
            self.taken += len(records)
            self._write_fallback(records)
        else:
            # To disk while no healthy connection takes batches, or memory holds too many.
            healthy = (self.sock is not None or self._resting) and not self.stalled
            spool_it = self._spool_usable() and (
                not healthy or self.mem_records >= self.queue_size // 2
            )
            self._place(self._batches(), spool_it)
        self._first_seen = now if queue else 0.0
        self._notify()

    def _write_fallback(self, records: list[dict[str, Any]]) -> None:
        assert self._fallback is not None
        try:
            self._fallback(records)
        except Exception as exc:
            self._problems.append(exc)
            self._cuts.append((len(records), f"the fallback file failed: {_describe(exc)}"))
        else:
            self.stats.fallback += len(records)

    def _records_of(self, batch: _Batch) -> list[dict[str, Any]]:
        frame = batch.frame
        if frame is None:
            return []  # on disk: not lost
        return flats_of(frame)

    def _acked(self, seq: int) -> None:
        disk, mem = self.disk, self.mem
        stats = self.stats
        spool = self.spool
        while disk and disk[0].seq <= seq:
            batch = disk.popleft()
            stats.acked += batch.count
            if batch.from_disk:
                stats.replayed += batch.count
            if spool is not None:
                spool.release(batch.segment)
        while mem and mem[0].seq <= seq:
            batch = mem.popleft()
            self.mem_records -= batch.count
            stats.acked += batch.count
        if seq >= self.next_seq:  # a server that knows more of this id than we made
            self.next_seq = seq + 1
        self._notify()

    def _batch_at(self, seq: int) -> _Batch | None:
        disk, mem = self.disk, self.mem
        first = self._first_unacked()
        index = seq - first
        if index < 0:
            return None
        if index < len(disk):
            return disk[index]
        if index - len(disk) < len(mem):
            return mem[index - len(disk)]
        return None

    def _frames_from(self, seq: int, budget: int) -> list[tuple[_Batch, bytes]]:
        """The next batches from ``seq`` with their frames, up to about ``budget`` bytes.

        Spooled batches that lie one after the other in a segment are read with one ``pread``.
        """
        found: list[tuple[_Batch, bytes]] = []
        size = 0
        while size < budget:
            batch = self._batch_at(seq)
            if batch is None:
                break
            if batch.frame is not None:
                found.append((batch, batch.frame))
                size += batch.length
                seq += 1
                continue
            run = [batch]
            end = batch.offset + batch.length
            while size + end - batch.offset < budget:
                after = self._batch_at(seq + len(run))
                if (
                    after is None
                    or after.frame is not None
                    or after.segment != batch.segment
                    or after.offset != end
                ):
                    break
                run.append(after)
                end += after.length
            try:
                assert self.spool is not None
                data = self.spool.read(batch.segment, batch.offset, end - batch.offset)
            except (OSError, KeyError, AssertionError) as exc:
                # The spool file was damaged or removed under us: its records are gone. Send
                # the batches empty, so the sequence stays whole, and say what was lost.
                self._problems.append(OSError(errno.EIO, f"the spool could not be read: {exc}"))
                for lost in run:
                    self._cuts.append((lost.count, "the spool file was damaged or removed"))
                    lost.count = 0
                    lost.frame = batch_frame(self.client, lost.seq, [])
                    lost.length = len(lost.frame)
                continue  # the same batches again, now in memory
            view = memoryview(data)
            at = 0
            for item in run:
                item.from_disk = True
                found.append((item, bytes(view[at : at + item.length])))
                at += item.length
            size += end - batch.offset
            seq += len(run)
        return found

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        reported = False
        try:
            while True:
                try:
                    self._loop()
                    return
                except Exception as exc:  # a bug: say so once, keep going; nothing is lost
                    if self.finished or self.stopping or self.pid != os.getpid():
                        return
                    if not reported:
                        reported = True
                        with contextlib.suppress(Exception):
                            self._report(exc)
                    self._disconnect(None)
                    time.sleep(_BUG_PAUSE)
        finally:
            self._disconnect(None)
            if self.finished:
                self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        registered: int | None = None
        while not self.stopping and self.pid == os.getpid():
            now = _monotonic()
            with self.lock:
                if self.finished:
                    return
                self._form(now, force=False)
            self._tell_problems()
            waiting = self.queue or self.mem or self.disk
            if self.sock is None and (waiting if self._resting else now >= self._next_attempt):
                self._connect()
                now = _monotonic()
            if self.sock is not None and (self._writable or self._out is None):
                self._send()
            if self.sock is not None and self._readable:
                self._receive()
            if self.sock is not None:
                self._check_stall(now)
            self._tell_problems()
            self._maybe_report_outage(now)
            if self.sock is not None and now >= self._next_scan:
                self._scan_dead(now)

            timeout = self._timeout(now)
            if timeout > 0:
                queue = self.queue
                self.wake_at = 1 if not queue else self.config.batch_size
                if len(queue) >= self.wake_at:  # an emit raced with us: do not sleep
                    timeout = 0.0
            if timeout == 0:
                # Busy: no poll (each system call may cost a switch interval of the GIL); just
                # try the socket both ways on the next round.
                self.wake_at = _INF
                self._readable = self._writable = True
                continue
            # Sleep until something is due, the socket is ready, or emit wakes us.
            fd = self.sock.fileno() if self.sock is not None else None
            if fd != registered:
                if registered is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        poller.unregister(registered)
                if fd is not None:
                    poller.register(fd, select.POLLIN)
                registered = fd
            if fd is not None:
                mask = select.POLLIN | (select.POLLOUT if self._out is not None else 0)
                poller.modify(fd, mask)
            events = poller.poll(math.ceil(timeout * 1000))
            self.wake_at = _INF
            for ready, event in events:
                if ready == self._wake_r:
                    with contextlib.suppress(OSError):
                        while os.read(self._wake_r, 4096):
                            pass
                elif ready == fd:
                    if event & (select.POLLIN | select.POLLERR | select.POLLHUP):
                        self._readable = True
                    if event & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                        self._writable = True

    def _timeout(self, now: float) -> float:
        due = now + _IDLE_WAIT
        if self.queue:
            if self.flush_target > self.taken:
                return 0.0
            due = min(due, (self._first_seen or now) + self.config.flush_interval)
        if self.sock is None:
            if not self._resting:  # resting: the next record wakes the thread
                due = min(due, self._next_attempt)
        elif self._outstanding():
            due = min(due, self._last_progress + self._stall_after())
        if self._outage_since is not None and not self._outage_reported:
            due = min(due, self._outage_since + _REPORT_OUTAGE_AFTER)
        return max(0.0, due - now)

    def _first_unacked(self) -> int:
        """Sequence number of the oldest batch not acknowledged (safe without the lock: a
        caller moving batches to disk never leaves one in neither ledger)."""
        for ledger in (self.disk, self.mem):
            try:
                return ledger[0].seq
            except IndexError:
                pass
        return self.next_seq

    def _outstanding(self) -> bool:
        """Has this connection sent (part of) a batch not acknowledged yet?"""
        return self._out is not None or self._send_seq > self._first_unacked()

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> None:
        try:
            sock, reader, welcome = open_connection(self.config, self.client, self.host)
        except Exception as exc:  # OSError mostly; a broken codec lookup, a bad welcome, ...
            self._connect_failed(exc)
            return
        try:
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            self._connect_failed(exc)
            return
        self.sock = sock
        self._resting = False
        self._reader = reader
        self._frame_limit = _frame_limit(welcome)
        self._protocol = _protocol(welcome)
        self._out = None
        self._out_marks.clear()
        self._readable = self._writable = True
        now = _monotonic()
        self._last_progress = now
        self.stalled = False
        self.fallback_active = False
        self._connected_at = now
        self._outage_since = None
        self._outage_reported = False
        if self.connected_once:
            self.stats.reconnects += 1
        self.connected_once = True
        with self.lock:
            self._acked(int(welcome.get("last_seq", 0)))
            self._send_seq = self._gather_seq = self._first_unacked()
        self._next_scan = now  # a server is back: look for spools of dead processes

    def _back_off(self, now: float) -> None:
        """Schedule the next connection attempt: exponential, bounded, with jitter."""
        self._backoff = min(_BACKOFF_MAX, self._backoff * 2 or _BACKOFF_FIRST)
        self._next_attempt = now + self._backoff * random.uniform(0.5, 1.0)

    def _connect_failed(self, exc: BaseException) -> None:
        now = _monotonic()
        self._resting = False
        self._back_off(now)
        self._outage(now, exc)
        with self.lock:
            if self.config.spool_root is not None:
                self._spool_memory()
            elif self._fallback is not None:
                self.fallback_active = True
                records = [r for batch in self.mem for r in self._records_of(batch)]
                first_pending = self.mem[0].first if self.mem else None
                self.mem.clear()
                self.mem_records = 0
                if records:
                    self._write_fallback(records)
                if first_pending is not None:
                    self._notify()

    def _outage(self, now: float, exc: BaseException) -> None:
        self._outage_reason = _describe(exc)
        if self._outage_since is None:
            self._outage_since = now
        if isinstance(exc, ServerRefused) and not self._outage_reported:
            self._report_outage(now)  # a misconfiguration: say so at once

    def _maybe_report_outage(self, now: float) -> None:
        since = self._outage_since
        if since is not None and not self._outage_reported and now - since >= _REPORT_OUTAGE_AFTER:
            self._report_outage(now)

    def _report_outage(self, now: float) -> None:
        self._outage_reported = True
        since = self._outage_since if self._outage_since is not None else now
        if self.config.spool_root is not None:
            kept = "records wait in the spool"
            if self.spool_dir is not None:
                kept += f" in {self.spool_dir}"
        elif self._fallback is not None:
            kept = "records go to the fallback file"
        else:
            kept = f"records wait in memory (up to queue_size={self.queue_size})"
        self._report(ServerUnavailable(self.config.address, now - since, self._outage_reason, kept))

    def _disconnect(self, reason: BaseException | None) -> None:
        sock, self.sock = self.sock, None
        self._reader = None
        self._out = None
        self._out_marks.clear()
        self._readable = self._writable = False
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if reason is None:
            return
        now = _monotonic()
        self._outage(now, reason)
        if now - self._connected_at >= _LASTED:
            self._backoff = 0.0  # a connection that lasted: this is a new outage
        self._back_off(now)
        self.stalled = False
        if self.config.spool_root is not None:
            with self.lock:
                self._spool_memory()

    def _gather(self) -> None:
        """Join the frames not written yet (up to :data:`_SEND_CHUNK` bytes) into one buffer, so
        that one ``send`` writes many batches: every system call gives up the GIL, and a busy
        application thread may keep it for a whole switch interval before we get it back."""
        frames: list[bytes] = []
        marks: deque[tuple[int, int]] = deque()
        size = 0
        limit = self._frame_limit
        with self.lock:
            if self.finished:
                return
            if not self._outstanding():
                self._last_progress = _monotonic()  # nothing outstanding: the clock starts now
            seq = max(self._gather_seq, self._first_unacked())
            for batch, frame in self._frames_from(seq, _SEND_CHUNK):
                frame = for_server(frame, self._protocol)
                if len(frame) > limit:
                    frame, left_out = fit_frame(frame, limit)
                    if left_out:
                        reason = f"a batch was over the server's max_frame ({limit - 4} bytes)"
                        self._cuts.append((left_out, reason))
                frames.append(frame)
                size += len(frame)
                marks.append((size, batch.count))
                seq += 1
            self._gather_seq = seq
        self._tell_problems()
        if frames:
            self._out = memoryview(frames[0] if len(frames) == 1 else b"".join(frames))
            self._out_pos = 0
            self._out_marks = marks

    def _tell_problems(self) -> None:
        """Report what went wrong under the lock, now that it is released."""
        try:
            while self._problems:
                self._report(self._problems.pop(0))
            while self._cuts:
                count, reason = self._cuts.pop(0)
                self._dropped(count, reason)
        except IndexError:  # another thread told them meanwhile
            pass

    def _send(self) -> None:
        sock = self.sock
        assert sock is not None
        while True:
            if self._out is None:
                self._gather()
                if self._out is None:
                    return
            out = self._out
            try:
                written = sock.send(out[self._out_pos :])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self._writable = False
                return
            except OSError as exc:
                self._disconnect(exc)
                return
            self._out_pos += written
            marks = self._out_marks
            sent = False
            while marks and marks[0][0] <= self._out_pos:
                self.stats.sent += marks.popleft()[1]
                self._send_seq += 1
                sent = True
            if sent and self.waiters:  # hand_over() waits for whole batches on the socket
                with self.lock:
                    self.changed.notify_all()
            if self._out_pos < len(out):
                self._writable = False
                return
            self._out = None

    def _receive(self) -> None:
        sock, reader = self.sock, self._reader
        assert sock is not None
        assert reader is not None
        self._readable = False
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    if self._outstanding():
                        self._disconnect(ConnectionResetError("the server closed the connection"))
                    else:  # nothing owed: the server let an idle connection go
                        self._rest()
                    return
                reader.feed(data)
                if len(data) < 65536 and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:
            self._disconnect(exc)
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
                    self._disconnect(ServerRefused(errno.ECONNABORTED, reason))
                    break
                elif kind == "bye":  # closed as idle (--idle-timeout): batches sent are resent
                    self._rest()
                    break
        except _wire.ProtocolError as exc:
            self._disconnect(ConnectionError(errno.EPROTO, f"the server broke the protocol: {exc}"))
        if acked:
            self._last_progress = _monotonic()
            self._backoff = 0.0  # progress: the next outage starts afresh
            self.stalled = False
            with self.lock:
                self._acked(min(acked, self._send_seq - 1))

    def _rest(self) -> None:
        """The server closed a connection it found idle (a ``bye``, or a close with nothing
        owed): not an outage. No backoff, no spool, no report; the next connection is made as
        soon as there is something to send, and a failure then is an outage as usual."""
        self._disconnect(None)
        self._resting = True

    def _stall_after(self) -> float:
        """Seconds without an ack until the next step: spool (then) reconnect."""
        timeout = self.config.ack_timeout
        if self.stalled:
            return max(_STALL_RECONNECT * timeout, _STALL_RECONNECT_MIN)
        return timeout

    def _check_stall(self, now: float) -> None:
        if self.sock is None or not self._outstanding():
            return
        waited = now - self._last_progress
        config = self.config
        if waited >= max(_STALL_RECONNECT * config.ack_timeout, _STALL_RECONNECT_MIN):
            self._disconnect(TimeoutError(errno.ETIMEDOUT, f"no ack for {waited:.1f}s"))
        elif waited >= config.ack_timeout and not self.stalled:
            self.stalled = True  # keep the connection, but keep what it owes us on disk
            if config.spool_root is not None:
                with self.lock:
                    self._spool_memory()

    # -- spools of dead processes ----------------------------------------------------------------
    def _scan_dead(self, now: float) -> None:
        self._next_scan = now + _RESCAN_EVERY
        if self.config.spool_root is None or (
            self.replayer is not None and self.replayer.is_alive()
        ):
            return
        if self.spool_dir is None:
            try:
                self.spool_dir = _spool.prepare_directory(
                    self.config.spool_root,
                    _spool.address_key(self.config.address),
                    self.config.spool_root_is_default,
                )
            except OSError:
                return  # reported when (if) this process needs its own spool
        replayer = threading.Thread(
            target=self._replay_dead, name="safe_rotating-replay", daemon=True
        )
        replayer.start()
        self.replayer = replayer  # only once started: close() may join it at any moment

    def _replay_dead(self) -> None:
        directory = self.spool_dir
        assert directory is not None
        config = self.config
        assert config.spool_root is not None
        # Our own directory first, then any other of this address's (beside a squatted root).
        others = _spool.spool_directories(
            config.spool_root, _spool.address_key(config.address), config.spool_root_is_default
        )
        directories = [directory, *(d for d in others if d != directory)]
        try:
            for dead in (d for path in directories for d in _spool.claim_dead(path, {self.client})):
                self.replay_fds.add(dead.lock_fd)
                done = False
                try:
                    if not self.stopping and self.pid == os.getpid():
                        done = not dead.segments or self._replay_one(dead)
                finally:
                    self.replay_fds.discard(dead.lock_fd)
                    if done:
                        dead.remove()
                    else:
                        dead.release()
                if not done:
                    return
        except Exception as exc:
            if not self.stopping:
                self._report(exc)

    def _replay_one(self, dead: _spool.DeadSpool) -> bool:
        """Send every batch of ``dead`` the server has not written; True once all are acked."""
        try:
            identity = dead.identity()
            sock, reader, welcome = open_connection(self.config, dead.client, self.host, identity)
        except Exception:
            return False
        try:
            last = int(welcome.get("last_seq", 0))
            limit = _frame_limit(welcome)
            protocol = _protocol(welcome)
            inflight: deque[tuple[int, int]] = deque()
            sock.settimeout(self.config.ack_timeout * _STALL_RECONNECT)
            for seq, count, frame in dead.frames():
                if seq <= last:
                    continue
                if self.stopping:
                    return False
                frame = for_server(frame, protocol)
                if len(frame) > limit:
                    frame, cut = fit_frame(frame, limit)
                    if cut:
                        self._dropped(cut, "a spooled batch was larger than the server's max_frame")
                sock.sendall(frame)
                inflight.append((seq, count))
                self._replay_sent += count
                while len(inflight) >= _REPLAY_WINDOW:
                    last = self._read_acks(sock, reader, inflight, last)
            while inflight:
                last = self._read_acks(sock, reader, inflight, last)
            return True
        except (OSError, ValueError):
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _read_acks(
        self,
        sock: socket.socket,
        reader: _wire.FrameReader,
        inflight: deque[tuple[int, int]],
        last: int,
    ) -> int:
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
        reader.feed(data)
        for payload in reader.frames():
            message = _wire.decode(payload)
            if message["type"] == "error":
                raise ServerRefused(errno.ECONNABORTED, str(message.get("reason")))
            if message["type"] == "ack" and isinstance(message.get("seq"), int):
                last = max(last, message["seq"])
                while inflight and inflight[0][0] <= last:
                    self._replay_acked += inflight.popleft()[1]
        return last
