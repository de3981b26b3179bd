"""A small log server for the client tests: it speaks the native protocol (docs/protocol.md).

``hello`` → ``welcome`` (``last_seq`` from its journal, or a value the test sets), ``batch`` →
records kept in memory and ``ack``. A test can make it stop reading (a stopped or stuck server:
TCP pushes back), stop acknowledging, drop every connection, lose one ack after writing a batch
(a connection that broke between write and ack), or stop and start again on the same port,
keeping its journal like a real server's state directory.

Run as a program (``python -m tests.wire_peer --port N``) it serves until SIGTERM and prints the
number of records it received, for timing runs where the acceptor must not share the GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from safe_rotating._net import rendered as _rendered
from safe_rotating._net import wire as _wire
from safe_rotating.client import LogServerHandler

__all__ = ["Received", "RecordingClient", "WirePeer"]


class RecordingClient(LogServerHandler):
    """Keeps what went to ``handleError`` (the exception active at that moment)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[BaseException] = []

    def handleError(self, record: Any) -> None:
        failure = sys.exc_info()[1]
        assert failure is not None
        self.failures.append(failure)


@dataclass
class Received:
    """One record as the peer wrote it."""

    client: str
    seq: int
    record: dict[str, Any]

    @property
    def msg(self) -> str:
        return str(self.record.get("msg"))


@dataclass
class _Conn:
    sock: socket.socket
    reader: _wire.FrameReader = field(default_factory=_wire.FrameReader)
    client: str | None = None


class WirePeer:
    """The acceptor; ``address`` is what a ``LogServerHandler`` is given."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        unix_path: str | None = None,
        tls: ssl.SSLContext | None = None,
        token: str | None = None,
        max_frame: int = _wire.DEFAULT_MAX_FRAME,
        keep: bool = True,
        protocol: int = 2,
    ) -> None:
        self.host = host
        self.port = port
        self.unix_path = unix_path
        self.tls = tls
        self.token = token
        self.max_frame = max_frame
        self.keep = keep  # False: count records only (timing runs)
        self.protocol = protocol  # 2: offer batches of rendered lines (a 0.2 server offers 1)
        self.frame_kinds: list[int] = []  # per batch received: its protocol (1 or 2)
        self.counted = 0
        self.journal: dict[str, int] = {}  # client id -> last seq written (kept across restarts)
        self.received: list[Received] = []
        self.hellos: list[dict[str, Any]] = []
        self.duplicates = 0  # batches with seq <= last_seq: acknowledged, not written
        self.gaps = 0  # batches whose seq skipped numbers
        self.acking = True
        self.lose_next_ack = False  # write the next batch, then drop the connection unacked
        self.welcome_last_seq: int | None = None  # claim this instead of the journal's value
        self.lock = threading.Lock()
        self._reading = threading.Event()
        self._reading.set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._conns: dict[int, _Conn] = {}
        self._sel: selectors.BaseSelector | None = None
        self._drop_all = False

    # -- control ---------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return f"{self.host}:{self.port}"

    def start(self) -> WirePeer:
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.unix_path)
        else:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            self.port = listener.getsockname()[1]
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._stop = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="wire-peer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection (like a server that exits)."""
        self._stop = True
        self._reading.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Stop reading and accepting: clients' frames pile up in the socket buffers."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def drop_connections(self) -> None:
        with self.lock:
            self._drop_all = True

    def __enter__(self) -> WirePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading results -------------------------------------------------------------------------
    def messages(self, client: str | None = None) -> list[str]:
        with self.lock:
            return [r.msg for r in self.received if client is None or r.client == client]

    def count(self) -> int:
        with self.lock:
            return self.counted

    def wait_for(self, count: int, timeout: float = 20.0) -> bool:
        """Wait until at least ``count`` records were received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= count:
                return True
            time.sleep(0.01)
        return self.count() >= count

    def clients(self) -> list[str]:
        with self.lock:
            return [str(h.get("client")) for h in self.hellos]

    # -- the server ------------------------------------------------------------------------------
    def _serve(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while not self._stop:
                if not self._reading.is_set():
                    self._reading.wait(0.05)
                    continue
                if self._drop_all:
                    with self.lock:
                        self._drop_all = False
                    for dropped in list(self._conns.values()):
                        self._close(dropped)
                for key, _ in sel.select(0.02):
                    if not self._reading.is_set():
                        break
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        found = self._conns.get(key.fd)
                        if found is not None:
                            self._read(found)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            if self._listener is not None:
                sel.unregister(self._listener)
                self._listener.close()
                self._listener = None
            sel.close()

    def _accept(self) -> None:
        assert self._listener is not None
        assert self._sel is not None
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self.tls is not None:
            sock.settimeout(5)
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        sock.setblocking(False)
        conn = _Conn(sock, _wire.FrameReader(self.max_frame))
        self._conns[sock.fileno()] = conn
        self._sel.register(sock, selectors.EVENT_READ)

    def _close(self, conn: _Conn) -> None:
        assert self._sel is not None
        fd = conn.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            self._conns.pop(fd, None)
        conn.sock.close()

    def _send(self, conn: _Conn, message: dict[str, Any]) -> None:
        conn.sock.settimeout(5)
        try:
            conn.sock.sendall(_wire.encode(message))
        finally:
            conn.sock.setblocking(False)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.reader.feed(data)
        try:
            for payload in conn.reader.frames():
                if _rendered.is_batch(payload) and conn.client is not None:
                    message = _rendered_as_v1(payload)
                else:
                    message = _wire.decode(payload)
                if not self._handle(conn, message):
                    self._close(conn)
                    return
        except (_wire.ProtocolError, _rendered.BatchError, OSError):
            self._close(conn)

    def _handle(self, conn: _Conn, message: dict[str, Any]) -> bool:
        kind = message["type"]
        if conn.client is None:
            if kind != "hello":
                return False
            if self.token is not None and message.get("token") != self.token:
                self._send(conn, {"type": "error", "reason": "wrong token"})
                return False
            conn.client = str(message["client"])
            with self.lock:
                self.hellos.append(message)
                last = self.journal.get(conn.client, 0)
                if self.welcome_last_seq is not None:
                    last = self.welcome_last_seq
            welcome = {"type": "welcome", "server": "wire-peer", "max_frame": self.max_frame,
                       "last_seq": last}  # fmt: skip
            if self.protocol == 2 and 2 in message.get("protocols", []):
                welcome["protocol"] = 2
            self._send(conn, welcome)
            return True
        if kind != "batch":
            return True
        seq = int(message["seq"])
        with self.lock:
            self.frame_kinds.append(int(message.get("v", 1)))
            last = self.journal.get(conn.client, 0)
            if seq <= last:
                self.duplicates += 1
            else:
                if seq != last + 1 and last:
                    self.gaps += 1
                if self.keep:
                    for record in message["records"]:
                        self.received.append(Received(conn.client, seq, record))
                self.counted += len(message["records"])
                self.journal[conn.client] = seq
            lose = self.lose_next_ack
            self.lose_next_ack = False
        if lose:
            return False
        if self.acking:
            self._send(conn, {"type": "ack", "seq": seq})
        return True


def _rendered_as_v1(payload: bytes) -> dict[str, Any]:
    """A protocol-2 batch as the v1 message it stands for (``msg``: the rendered line), marked
    ``"v": 2`` so a test can tell which protocol carried it."""
    batch = _rendered.parse_batch(payload)
    records = _rendered.to_v1_records(batch)
    return {"v": 2, "type": "batch", "seq": batch.seq, "records": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    peer = WirePeer(args.port, keep=False).start()
    print(peer.port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    peer.stop()
    print(peer.count(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
