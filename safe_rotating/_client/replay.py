"""Delivering spools left by processes that ended: found every :data:`_RESCAN_EVERY` seconds
while the server is up, claimed one by one (:func:`_spool.claim_dead`) and sent, each over its
own blocking connection, by a short-lived thread beside the sender's. Also used without any
thread by ``safe-rotating-spools send`` (:meth:`Replayer.replay_one`).

Its counters are apart from the sender's (:class:`ClientStats` adds them up): the replay thread
never takes the ledger's lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from safe_rotating._client import spool as _spool
from safe_rotating._client.config import Config, ServerRefused
from safe_rotating._client.frames import fit_frame, for_server
from safe_rotating._client.ledger import Ledger
from safe_rotating._client.link import STALL_RECONNECT, frame_limit, open_connection, protocol_of
from safe_rotating._net import wire as _wire

__all__ = ["Replayer"]

_RESCAN_EVERY: Final = 30.0  # seconds between looks for spools left by dead processes
_REPLAY_WINDOW: Final = 32  # batches of a dead spool in flight before waiting for acks


class Replayer:
    """The replay of dead spools for one sender (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        host: str,
        report: Callable[[BaseException], None],
        dropped: Callable[[int, str], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.pid = os.getpid()
        self.config = config
        self.ledger = ledger  # for the spool directory and the client id to leave alone
        self.host = host
        self._report = report
        self._dropped = dropped
        self._stopping = stopping  # is the sender stopping? (a replay under way gives up)
        self.thread: threading.Thread | None = None
        self.fds: set[int] = set()  # lock descriptors of the spools being replayed
        self.sent = 0
        self.acked = 0
        self.next_scan = 0.0

    def scan(self, now: float) -> None:
        """Start a replay thread unless one runs (or there is no spool); the sender thread
        calls this while it is connected, at :attr:`next_scan`.

        At interpreter exit Python 3.12+ refuses new threads (``RuntimeError``): then none
        starts, and the spools of ended processes wait for the next process on the directory
        or ``safe-rotating-spools send``. That is no error: the sender goes on delivering this
        process's own records."""
        self.next_scan = now + _RESCAN_EVERY
        if self.config.spool_root is None or (self.thread is not None and self.thread.is_alive()):
            return
        try:
            self.ledger.spooler.directory()
        except OSError:
            return  # reported when (if) this process needs its own spool
        replayer = threading.Thread(target=self._run, name="safe_rotating-replay", daemon=True)
        try:
            replayer.start()
        except RuntimeError:  # no thread to be had (interpreter shutdown, a thread limit)
            return
        self.thread = replayer  # only once started: close() may join it at any moment

    def close_fds(self) -> None:
        for fd in list(self.fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def _run(self) -> None:
        directory = self.ledger.spooler.spool_dir
        assert directory is not None
        config = self.config
        assert config.spool_root is not None
        # Our own directory first, then any other of this address's (beside a squatted root).
        others = _spool.spool_directories(
            config.spool_root, _spool.address_key(config.address), config.spool_root_is_default
        )
        directories = [directory, *(d for d in others if d != directory)]
        ledger = self.ledger
        try:
            for dead in (
                d for path in directories for d in _spool.claim_dead(path, {ledger.client})
            ):
                self.fds.add(dead.lock_fd)
                done = False
                try:
                    if not self._stopping() and self.pid == os.getpid():
                        done = not dead.segments or self.replay_one(dead)
                finally:
                    self.fds.discard(dead.lock_fd)
                    if done:
                        dead.remove()
                    else:
                        dead.release()
                if not done:
                    return
        except Exception as exc:
            if not self._stopping():
                self._report(exc)

    def replay_one(self, dead: _spool.DeadSpool) -> bool:
        """Send every batch of ``dead`` the server has not written; True once all are acked."""
        try:
            identity = dead.identity()
            sock, reader, welcome = open_connection(self.config, dead.client, self.host, identity)
        except Exception:
            return False
        try:
            last = int(welcome.get("last_seq", 0))
            limit = frame_limit(welcome)
            protocol = protocol_of(welcome)
            inflight: deque[tuple[int, int]] = deque()
            sock.settimeout(self.config.ack_timeout * STALL_RECONNECT)
            for seq, count, frame in dead.frames():
                if seq <= last:
                    continue
                if self._stopping():
                    return False
                frame = for_server(frame, protocol)
                if len(frame) > limit:
                    frame, cut = fit_frame(frame, limit)
                    if cut:
                        self._dropped(cut, "a spooled batch was larger than the server's max_frame")
                sock.sendall(frame)
                inflight.append((seq, count))
                self.sent += count
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
                    self.acked += inflight.popleft()[1]
        return last
