"""Listener hygiene: no peer can hold the server's connections, memory or log to ransom.

Real servers on 127.0.0.1 (and a Unix socket reached by a neighbour at uid 65534), real sockets:

* connections that never say hello are closed after ``--hello-timeout``, so a handful of silent
  sockets cannot lock every client out of ``--max-connections``;
* idle means sending no records: empty batches, or batches written before, do not keep a
  connection from its ``--idle-timeout``;
* at ``--max-connections``, a new connection takes the place of the one idle the longest (a native
  client is told ``bye``; a stock or syslog sender only once idle for ``--idle-timeout``), and is
  refused only while every connection has work under way or sent records within a second;
* a peer's text in a refusal (a global's name in a pickle) cannot start a line of the server's own
  log nor put an escape sequence in it;
* a Unix socket caps connections per uid (``SO_PEERCRED``), one user's cap never another's;
* unfinished frames of all connections together stay within ``--frame-memory``, and so do
  complete frames waiting for room in a full queue (decoded only when it is their turn);
* an idle connection is closed after ``--idle-timeout`` with a ``bye``; LogServerHandler comes back
  when it next has a record, without a report, a spool or a backoff;
* frames that used to raise inside the server (a lone surrogate in a token, JSON nested past the
  parser's recursion limit, a megabyte integer in a pickle) are counted refusals, and a flood of
  them is a few log lines, never a traceback per connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_rotating._net.wire import encode, frame
from safe_rotating.server.app import Server
from safe_rotating.server.config import ConfigError
from safe_rotating.server.listeners import bind_unix
from safe_rotating.server.settings import build

from .logserver import (
    LogServer,
    NativeClient,
    closed_by_server,
    connect,
    eventually,
    rss_bytes,
    run_server,
    start_server,
    stock_frame,
)
from .neighbour import SharedDir
from .support import tmpfs
from .wire_peer import RecordingClient

pytestmark = pytest.mark.multiprocess

MiB = 1024 * 1024


def closed_now(sock: socket.socket) -> bool:
    """Has the server closed ``sock`` already (without waiting)?"""
    sock.settimeout(0)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def lands_eventually(server: LogServer, tag: str, timeout: float) -> None:
    """Send stock records until one lands: a connection refused while the server is full loses
    its record silently, as the standard SocketHandler always does."""
    message = f"good record {tag} {time.monotonic_ns()}"

    def attempt() -> bool:
        server.send_stock(message)
        time.sleep(0.1)
        return message in server.text()

    eventually(attempt, timeout, f"{message!r} written")


def warnings_in(server: LogServer) -> list[str]:
    return [line for line in server.stderr.splitlines() if " INFO: " not in line]


# -- connections -------------------------------------------------------------------------------
def test_half_sent_hellos_do_not_lock_clients_out_past_the_hello_timeout(tmp_path: Path) -> None:
    # Part of a first frame is work under way: such a connection is not evicted for a new one,
    # so the 21st meets the limit; the hello timeout then closes all twenty.
    args = ["--format", "%(message)s", "--max-connections", "20", "--hello-timeout", "1"]
    with run_server(tmp_path, *args) as server:
        stalled = [connect(server) for _ in range(20)]
        for sock in stalled:
            sock.sendall(struct.pack(">I", 100) + b"{")
        eventually(lambda: server.metrics()["connections_open"] == 20, what="20 connections")
        shut_out = connect(server)
        assert closed_by_server(shut_out), "the 21st connection should meet the limit"
        server.wait_refused("too_many_connections")
        lands_eventually(server, "after the hello timeout", timeout=5.0)
        for sock in stalled:
            assert closed_by_server(sock, timeout=2.0)
            sock.close()
        assert server.refused("hello_timeout") == 20
        assert "no complete first frame within 1s of connecting" in server.stderr


def test_silent_sockets_make_room_for_a_client(tmp_path: Path) -> None:
    # Sockets that sent nothing lose nothing when closed: past a second, a new connection takes
    # the place of one of them at once, without waiting for the hello timeout.
    args = ["--format", "%(message)s", "--max-connections", "20", "--hello-timeout", "60"]
    with run_server(tmp_path, *args) as server:
        silent = [connect(server) for _ in range(20)]
        eventually(lambda: server.metrics()["connections_open"] == 20, what="20 connections")
        time.sleep(1.1)
        server.send_stock("served beside twenty silent sockets")
        server.assert_lands("served beside twenty silent sockets")
        time.sleep(0.2)
        assert sum(closed_now(sock) for sock in silent) == 1
        metrics = server.metrics()
        assert metrics['connections_closed_total{reason="evicted"}'] == 1
        assert metrics.get('refused_frames_total{reason="too_many_connections"}', 0) == 0
        for sock in silent:
            sock.close()


class Squatter(threading.Thread):
    """A native client that holds a connection without sending a record: a hello, then an
    empty batch every ``every`` seconds. Keeps the ``bye`` it is told; ends when closed."""

    def __init__(self, server: LogServer, client: str, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.client = NativeClient(("127.0.0.1", server.port))
        self.client.hello(client)
        self.every = every
        self.stop = threading.Event()
        self.bye: dict[str, object] | None = None

    def run(self) -> None:
        sock = self.client.sock
        seq = 0
        with contextlib.suppress(OSError):
            while not self.stop.is_set():
                seq += 1
                self.client.send({"type": "batch", "seq": seq, "records": []})
                deadline = time.monotonic() + self.every
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    try:
                        message = self.client.receive()
                    except TimeoutError:
                        break
                    if message is None:
                        return
                    if message["type"] == "bye":
                        self.bye = message

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.client.close()


def test_empty_batches_do_not_hold_connections(tmp_path: Path) -> None:
    # Five connections at --max-connections 5, each sending an empty batch a second: they never
    # send a record, so a real client takes the place of the one idle the longest at once, and
    # the idle timeout closes the others although they keep sending.
    args = ["--format", "%(message)s", "--max-connections", "5", "--idle-timeout", "3"]
    with run_server(tmp_path, *args) as server:
        squatters = [Squatter(server, f"squat{n}") for n in range(5)]
        for squatter in squatters:
            squatter.start()
        eventually(lambda: server.metrics()["connections_open"] == 5, what="5 connections")
        time.sleep(1.2)
        clients = []
        for n in range(3):  # each stays open: the next one needs a place of its own
            client = NativeClient(("127.0.0.1", server.port))
            client.hello(f"real{n}")
            client.batch(1, [f"real client {n} served"])
            client.acked(1)
            server.assert_lands(f"real client {n} served", timeout=2.0)
            clients.append(client)
        metrics = server.metrics()
        assert metrics['connections_closed_total{reason="evicted"}'] == 3
        assert metrics.get('refused_frames_total{reason="too_many_connections"}', 0) == 0
        # The evicted were told bye, like an idle close; so, after --idle-timeout, are the two
        # left, empty batches and all.
        for squatter in squatters:
            squatter.join(5)
            assert not squatter.is_alive(), "a squatter's connection is still open"
            assert squatter.bye is not None, "closed without a bye"
            assert squatter.bye["type"] == "bye"
        reasons = sorted(str(squatter.bye and squatter.bye["reason"]) for squatter in squatters)
        assert sum("make room" in reason for reason in reasons) == 3, reasons
        assert sum("--idle-timeout" in reason for reason in reasons) == 2, reasons
        assert server.metrics()['connections_closed_total{reason="idle"}'] >= 2
        for squatter in squatters:
            squatter.close()
        for client in clients:
            client.close()


def test_a_batch_written_before_is_not_activity(tmp_path: Path) -> None:
    # Sending the same batch again and again (acknowledged, never written twice) does not keep
    # a connection from its idle timeout either.
    with run_server(tmp_path, "--format", "%(message)s", "--idle-timeout", "1") as server:
        first = NativeClient(("127.0.0.1", server.port))
        first.hello("again")
        first.batch(1, ["written once"])
        first.acked(1)
        first.close()
        again = NativeClient(("127.0.0.1", server.port))
        assert again.hello("again")["last_seq"] == 1
        started = time.monotonic()
        told = None
        while told is None and time.monotonic() - started < 5:
            again.batch(1, ["written once"])
            message = again.receive()
            if message is not None and message["type"] == "bye":
                told = message
            time.sleep(0.2)
        assert told is not None, "the resends kept the connection open"
        assert "--idle-timeout" in str(told["reason"])
        assert server.lines().count("written once") == 1
        again.close()


def test_a_stock_connection_is_evicted_only_once_idle_for_the_idle_timeout(
    tmp_path: Path,
) -> None:
    # A stock SocketHandler would lose its next record into a closed socket: at the limit, a
    # native connection idle for a second goes first, and then a newcomer is refused rather
    # than close the stock one before its --idle-timeout.
    args = ["--format", "%(message)s", "--max-connections", "2", "--idle-timeout", "60"]
    with run_server(tmp_path, *args) as server:
        stock = connect(server)
        stock.sendall(stock_frame("one stock record"))
        server.assert_lands("one stock record")
        native = NativeClient(("127.0.0.1", server.port))
        native.hello("idle1")
        time.sleep(1.1)
        newcomer = NativeClient(("127.0.0.1", server.port))
        newcomer.hello("newcomer")
        newcomer.batch(1, ["the newcomer is served"])
        newcomer.acked(1)
        server.assert_lands("the newcomer is served")
        bye = native.receive()
        assert bye is not None
        assert bye["type"] == "bye"
        late = connect(server)  # the stock connection is protected, the newcomer is active
        assert closed_by_server(late)
        server.wait_refused("too_many_connections")
        assert not closed_by_server(stock, timeout=0.5)
        for sock in (stock, late, newcomer.sock, native.sock):
            sock.close()


def _hold_connections(path: str, count: int) -> list[bool]:
    """As the neighbour: open ``count`` connections; for each, did the server close it at once?"""
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        held.append(sock)
    closed = []
    for sock in held:
        sock.settimeout(1.0)
        try:
            closed.append(sock.recv(1) == b"")
        except TimeoutError:
            closed.append(False)
    for sock in held:
        sock.close()
    return closed


def test_connections_per_uid_on_a_unix_socket(tmp_path: Path, shared_dir: SharedDir) -> None:
    path = shared_dir.join("log.sock")
    args = ["--format", "%(message)s", "--listen", f"unix:{path}", "--unix-mode", "0666"]
    args += ["--max-connections-per-peer", "3"]
    with run_server(tmp_path, *args, listen=False) as server:
        mine = []
        for _ in range(3):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            mine.append(sock)
        eventually(
            lambda: server.metrics()["connections_open"] == 3, what="root's three connections"
        )
        # Root's three do not count against uid 65534: it gets three of its own, not a fourth.
        assert shared_dir.run(_hold_connections, path, 4) == [False, False, False, True]
        server.wait_refused("too_many_connections_from_one_peer")
        assert "uid 65534 has 3 open" in server.stderr
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.connect(path)
        assert closed_by_server(extra), "root's fourth connection should meet its own cap"
        server.wait_refused("too_many_connections_from_one_peer", 2)
        mine.pop().close()
        eventually(lambda: server.metrics()["connections_open"] == 2, what="one of root's closed")
        client = NativeClient(path)
        client.hello("r" * 32)
        client.batch(1, ["root is served again"])
        client.acked(1)
        server.assert_lands("root is served again")
        for sock in mine:
            sock.close()


# -- memory --------------------------------------------------------------------------------------
def test_unfinished_frames_share_one_memory_budget(tmp_path: Path) -> None:
    budget = 16 * MiB
    size = MiB  # the largest frame (the default --max-frame)
    with run_server(tmp_path, "--format", "%(message)s", "--frame-memory", "16MiB") as server:
        lands_eventually(server, "before", timeout=2.0)
        baseline = rss_bytes(server.pid)
        peak = baseline
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes(server.pid))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        hoarders: list[socket.socket] = []
        try:
            payload = b"{" + b" " * (size - 2)  # all but the last byte of a native frame
            for _ in range(150):
                sock = connect(server)
                hoarders.append(sock)
                with contextlib.suppress(OSError):  # closed while sending: the budget at work
                    sock.sendall(struct.pack(">I", size) + payload)
            eventually(
                lambda: server.refused("frame_memory") >= 150 - budget // size,
                10,
                "the connections over the budget closed",
            )
            time.sleep(0.3)
        finally:
            done.set()
            watcher.join()
        grown = peak - baseline
        print(f"RSS grew by {grown / MiB:.0f} MiB for 150 frames of 1 MiB minus one byte")
        assert grown < budget + 40 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
        assert server.metrics()["frame_memory_bytes"] <= budget
        assert "over --frame-memory" in server.stderr
        lands_eventually(server, "after", timeout=2.0)
        for sock in hoarders:
            sock.close()
        eventually(lambda: server.metrics()["frame_memory_bytes"] == 0, what="budget released")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, mounted for this test (the tests run as root)."""
    with tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


def test_frames_waiting_for_a_full_queue_share_the_memory_budget(small_disk: Path) -> None:
    # The disk is full: the writer holds its records and retries, the queue fills, and every
    # connection waits with a complete frame. Those frames count against --frame-memory, and
    # wait as bytes: decoded, 2 000 small records take about ten times their frame.
    budget = 2 * MiB
    args = ["--format", "%(message)s", "--queue-size", "1", "--frame-memory", "2MiB"]
    server = start_server(small_disk, *args, err_dir=small_disk.parent)
    try:
        writer = NativeClient(("127.0.0.1", server.port))
        writer.hello("w" * 32)
        filler = small_disk / "filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        writer.batch(1, ["held by the writer"])
        writer.batch(2, ["fills the queue"])
        eventually(lambda: server.metrics()["write_errors_total"] >= 1, 5, "a failed write")
        time.sleep(0.3)
        baseline = rss_bytes(server.pid)
        records = [{"msg": f"r{n}", "levelno": 20} for n in range(2000)]
        hello = encode({"type": "hello", "client": "h" * 32})
        waiting = []
        for n in range(100):
            sock = connect(server)
            with contextlib.suppress(OSError):
                sock.sendall(hello + encode({"type": "batch", "seq": 1 + n, "records": records}))
            waiting.append(sock)
            time.sleep(0.02)  # each frame complete before the next: none is unfinished
        time.sleep(0.5)
        grown = rss_bytes(server.pid) - baseline
        frame = len(encode({"type": "batch", "seq": 1, "records": records}))
        print(f"RSS grew by {grown / MiB:.0f} MiB for 100 frames of {frame // 1024} KiB waiting")
        assert grown < budget + 24 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
        assert server.metrics()["frame_memory_bytes"] <= budget
        assert server.refused("frame_memory") >= 100 - budget // frame
        filler.unlink()  # room again: what waited is written, and clients are served
        writer.acked(1)
        writer.acked(2)
        server.assert_lands("fills the queue", timeout=5.0)
        for sock in waiting:
            sock.close()
        lands_eventually(server, "after the full queue", timeout=5.0)
    finally:
        server.process.kill()
        server.process.wait()


def test_frame_memory_is_at_least_one_frame(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"frame_memory \(1048576 bytes\) must be at least"):
        build({"file": str(tmp_path / "app.log"), "max_frame": "4MiB", "frame_memory": "1MiB"})
    assert build({"file": str(tmp_path / "app.log")}).frame_memory == 64 * MiB
    assert build({"file": str(tmp_path / "app.log"), "max_frame": "32MiB"}).frame_memory == (
        128 * MiB
    )
    for key in ("hello_timeout", "idle_timeout"):
        with pytest.raises(ConfigError, match=f"{key}: must be more than 0"):
            build({"file": str(tmp_path / "app.log"), key: 0})


# -- idle connections ----------------------------------------------------------------------------
def test_an_idle_native_connection_is_told_bye(tmp_path: Path) -> None:
    with run_server(tmp_path, "--format", "%(message)s", "--idle-timeout", "0.5") as server:
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("i" * 32)
        client.batch(1, ["before the idle close"])
        client.acked(1)
        started = time.monotonic()
        bye = client.receive()
        assert bye is not None
        assert bye["type"] == "bye"
        assert "idle" in bye["reason"]
        assert client.receive() is None  # then closed
        assert time.monotonic() - started >= 0.4
        metrics = server.metrics()
        assert metrics['connections_closed_total{reason="idle"}'] == 1
        refused = {k: v for k, v in metrics.items() if k.startswith("refused_frames_total")}
        assert not any(refused.values()), refused  # not a refusal: not counted as one ...
        assert warnings_in(server) == []  # ... nor logged


def test_the_client_comes_back_quietly_after_an_idle_close(
    tmp_path: Path, logger: logging.Logger
) -> None:
    with run_server(tmp_path, "--format", "%(message)s", "--idle-timeout", "0.5") as server:
        handler = RecordingClient(f"127.0.0.1:{server.port}", spool_dir=tmp_path / "spool")
        logger.addHandler(handler)
        logger.info("first record")
        server.assert_lands("first record")
        closed = 'connections_closed_total{reason="idle"}'
        eventually(lambda: server.metrics().get(closed) == 1, 3, "the idle close")
        # Nothing to send: the client does not open a connection just to have it closed again.
        time.sleep(1.0)
        assert server.metrics()["connections_open"] == 0
        logger.info("second record")
        server.assert_lands("second record")
        stats = handler.stats()
        assert handler.failures == []  # no report
        assert stats.spooled == 0  # no spool
        assert stats.reconnects == 1
        assert stats.acked == 2


def test_idle_stock_connections_are_closed_only_when_connections_are_scarce(
    tmp_path: Path,
) -> None:
    # A stock SocketHandler cannot be told "bye": it would lose the next record into the closed
    # socket. So its idle connection stays open until connections run short (3 of 4 here).
    args = ["--format", "%(message)s", "--idle-timeout", "0.3", "--max-connections", "4"]
    with run_server(tmp_path, *args) as server:
        stock = connect(server)
        stock.sendall(stock_frame("one stock record"))
        server.assert_lands("one stock record")
        assert not closed_by_server(stock, timeout=1.5), "closed while connections were plenty"
        others = [connect(server), connect(server)]  # three of four in use: scarce
        assert closed_by_server(stock, timeout=3.0)
        assert server.metrics()['connections_closed_total{reason="idle"}'] == 1
        for sock in (stock, *others):
            sock.close()


# -- the server's own log --------------------------------------------------------------------------
FORGED = "2024-01-01 CRITICAL FORGED"


def _global_pickle(module: str, name: str) -> bytes:
    """A protocol 4 pickle whose record names the global ``module.name`` (STACK_GLOBAL)."""

    def text(value: str) -> bytes:
        data = value.encode()
        return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE

    return b"\x80\x04}" + text("msg") + text(module) + text(name) + b"\x93s."


def test_a_peer_cannot_write_a_line_of_the_servers_log(tmp_path: Path) -> None:
    evil = f"os\n{FORGED}\x1b[31m"
    with run_server(tmp_path, "--format", "%(message)s") as server:
        for module, name in ((evil, "system"), ("os", evil)):
            sock = connect(server)
            sock.sendall(frame(_global_pickle(module, name)))
            assert closed_by_server(sock)
            sock.close()
        server.wait_refused("pickle_global", 2)
        lands_eventually(server, "after the forged globals", timeout=2.0)
        log = server.stderr
        assert "a pickle that references" in log
        assert not any(line.startswith(FORGED) for line in log.splitlines()), log
        assert "\x1b" not in log
        assert "\r" not in log


def test_refusal_details_are_one_escaped_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(build({"file": str(tmp_path / "app.log")}), logging.getLogger("tests.note"))
    with caplog.at_level(logging.WARNING, logger="tests.note"):
        server.note("test", f"refused it: \r\n{FORGED} \x1b[2J\u2028\x85 tab\tkept")
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (f"refused it: \\r\\n{FORGED} \\x1b[2J\\u2028\\x85 tab\tkept"), message


# -- errors ----------------------------------------------------------------------------------------
@pytest.fixture(params=["orjson", "json"])
def json_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The server's environment with orjson, or with only the standard library's json (the
    ``fast`` extra is optional; a shadowing module makes ``import orjson`` fail)."""
    env = dict(os.environ)
    if request.param == "json":
        shadow = tmp_path / "no-orjson"
        shadow.mkdir()
        (shadow / "orjson.py").write_text("raise ImportError('not for this test')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow), env.get("PYTHONPATH")]))
    return env


def _flood(server: LogServer, data: bytes, count: int = 50) -> None:
    for _ in range(count):
        sock = connect(server)
        with contextlib.suppress(OSError):
            sock.sendall(data)
        assert closed_by_server(sock)
        sock.close()


DEEP = b'{"v":1,"type":"hello","client":"deep","nested":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
SURROGATE = b'{"v":1,"type":"hello","client":"abc","token":"\\ud800"}'


@pytest.mark.parametrize(
    ("data", "token"),
    [
        pytest.param(frame(SURROGATE), True, id="lone-surrogate-token"),
        pytest.param(frame(DEEP), False, id="deep-json"),
        pytest.param(
            frame(pickle.dumps({"name": "n", "msg": "m", "big": 1 << 7_000_000}, 2)),
            False,
            id="megabyte-int-pickle",
        ),
    ],
)
def test_a_flood_of_bad_frames_is_a_few_lines(
    tmp_path: Path, json_env: dict[str, str], data: bytes, token: bool
) -> None:
    args = ["--format", "%(message)s", *(["--token", "right"] if token else [])]
    with run_server(tmp_path, *args, env=json_env) as server:
        _flood(server, data)
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("g" * 32, **({"token": "right"} if token else {}))
        client.batch(1, ["served after the flood"])
        client.acked(1)
        server.assert_lands("served after the flood")
        assert server.process.poll() is None
        log = warnings_in(server)
        assert not any("Traceback" in line for line in server.stderr.splitlines()), server.stderr
        assert len(log) <= 6, "\n".join(log)
        metrics = server.metrics()
        assert metrics.get('refused_frames_total{reason="internal_error"}', 0) == 0, log


def test_a_bug_s_traceback_is_escaped_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = Server(build({"file": str(tmp_path / "app.log")}), logging.getLogger("tests.bug2"))
    with caplog.at_level(logging.DEBUG, logger="tests.bug2"):
        try:
            raise ValueError(f"peer text\n{FORGED}\x1b[31m")
        except ValueError as exc:
            server.internal_error("a connection", exc)
    text = caplog.text  # as a handler writes them, exc_info included
    assert "Traceback" in text  # at DEBUG: the whole traceback, its lines continued by a TAB
    assert not any(line.startswith(FORGED) for line in text.splitlines()), text
    assert "\x1b" not in text


def _fail(depth: int) -> None:
    if depth:
        _fail(depth - 1)
    raise ValueError("an unforeseen case")


def test_internal_errors_are_one_line_a_minute_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(build({"file": str(tmp_path / "app.log")}), logging.getLogger("tests.bug"))
    with caplog.at_level(logging.WARNING, logger="tests.bug"):
        for n in range(100):
            try:
                _fail(3)
            except ValueError as exc:
                server.internal_error(f"connection {n}", exc)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert messages[0].startswith("connection 0: unexpected ValueError at test_server_hygiene.py:")
    assert "'an unforeseen case'" in messages[0]
    assert "Traceback" not in caplog.text
    assert server.stats.refused["internal error"] == 100
    (reason,) = [r for r in server._noted if r.startswith("internal error")]
    server._flush_notes(time.monotonic() + 59)  # the minute is not over
    assert len(caplog.records) == 1
    server._flush_notes(time.monotonic() + 61)
    assert caplog.records[-1].getMessage() == (
        f"99 more refusal(s) for {reason!r} were not logged (see the metrics)"
    )


def test_json_nested_past_the_recursion_limit_is_refused() -> None:
    from safe_rotating._net import wire as _wire

    payload = json.dumps({"v": 1, "type": "hello"}).encode()[:-1] + b',"x":'
    payload += b"[" * 50_000 + b"]" * 50_000 + b"}"
    saved = _wire._orjson  # type: ignore[attr-defined]
    try:
        for backend in (saved, None):
            _wire._orjson = backend  # type: ignore[attr-defined,assignment]
            with pytest.raises(_wire.ProtocolError) as caught:
                _wire.decode(payload)
            assert caught.value.reason == "invalid json"
    finally:
        _wire._orjson = saved  # type: ignore[attr-defined]


# -- the Unix socket's mode ------------------------------------------------------------------------
def test_binding_a_unix_socket_changes_no_other_file_s_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A neighbour who may write the socket's directory swaps the new socket for a link to a
    # file of root's, right after bind (the earliest it can): the file's mode must not change.
    # The swap is done inside bind so that it happens every time, not once in a thousand.
    victim = tmp_path / "root-only"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    path = str(tmp_path / "log.sock")
    bind = socket.socket.bind

    def bind_then_swap(sock: socket.socket, address: str) -> None:
        bind(sock, address)
        os.unlink(path)
        os.symlink(victim, path)

    monkeypatch.setattr(socket.socket, "bind", bind_then_swap)
    sock = bind_unix(path, 0o666)
    sock.close()
    assert victim.stat().st_mode & 0o777 == 0o600
    monkeypatch.undo()
    os.unlink(path)
    sock = bind_unix(path, 0o660)  # the mode still comes from the umask around bind
    try:
        assert os.lstat(path).st_mode & 0o777 == 0o660
    finally:
        sock.close()
