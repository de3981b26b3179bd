"""Listener hygiene: no peer can hold the server's connections, memory or log to ransom.

Real servers on 127.0.0.1 (and a Unix socket reached by a neighbour at uid 65534), real sockets:

* connections that never say hello are closed after ``--hello-timeout``, so a handful of silent
  sockets cannot lock every client out of ``--max-connections``;
* a Unix socket caps connections per uid (``SO_PEERCRED``), one user's cap never another's;
* unfinished frames of all connections together stay within ``--frame-memory``;
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
from pathlib import Path

import pytest

from safe_rotating.server.app import Server
from safe_rotating.server.config import ConfigError, build

from .logserver import LogServer, NativeClient, eventually, rss_bytes, run_server
from .neighbour import SharedDir
from .wire_peer import RecordingClient

pytestmark = pytest.mark.multiprocess

MiB = 1024 * 1024


def connect(server: LogServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Did the server close ``sock`` within ``timeout`` (rather than keep it open)?"""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return False
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
def test_silent_sockets_do_not_lock_clients_out_past_the_hello_timeout(tmp_path: Path) -> None:
    args = ["--format", "%(message)s", "--max-connections", "20", "--hello-timeout", "1"]
    with run_server(tmp_path, *args) as server:
        silent = [connect(server) for _ in range(20)]
        eventually(lambda: server.metrics()["connections"] == 20, what="20 connections")
        shut_out = connect(server)
        assert closed_by_server(shut_out), "the 21st connection should meet the limit"
        server.wait_refused("too many connections")
        lands_eventually(server, "after the hello timeout", timeout=5.0)
        for sock in silent:
            assert closed_by_server(sock, timeout=2.0)
            sock.close()
        assert server.refused("hello timeout") == 20
        assert "no complete first frame within 1s of connecting" in server.stderr


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
        eventually(lambda: server.metrics()["connections"] == 3, what="root's three connections")
        # Root's three do not count against uid 65534: it gets three of its own, not a fourth.
        assert shared_dir.run(_hold_connections, path, 4) == [False, False, False, True]
        server.wait_refused("too many connections from one peer")
        assert "uid 65534 has 3 open" in server.stderr
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.connect(path)
        assert closed_by_server(extra), "root's fourth connection should meet its own cap"
        server.wait_refused("too many connections from one peer", 2)
        mine.pop().close()
        eventually(lambda: server.metrics()["connections"] == 2, what="one of root's closed")
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
                lambda: server.refused("frame memory") >= 150 - budget // size,
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
        assert server.metrics()["connections"] == 0
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
        payload = pickle.dumps({"name": "stock", "msg": "one stock record", "levelno": 20}, 1)
        stock.sendall(struct.pack(">I", len(payload)) + payload)
        server.assert_lands("one stock record")
        assert not closed_by_server(stock, timeout=1.5), "closed while connections were plenty"
        others = [connect(server), connect(server)]  # three of four in use: scarce
        assert closed_by_server(stock, timeout=3.0)
        assert server.metrics()['connections_closed_total{reason="idle"}'] == 1
        for sock in (stock, *others):
            sock.close()


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


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


DEEP = b'{"v":1,"type":"hello","client":"deep","nested":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
SURROGATE = b'{"v":1,"type":"hello","client":"abc","token":"\\ud800"}'


@pytest.mark.parametrize(
    ("data", "token"),
    [
        pytest.param(_frame(SURROGATE), True, id="lone-surrogate-token"),
        pytest.param(_frame(DEEP), False, id="deep-json"),
        pytest.param(
            _frame(pickle.dumps({"name": "n", "msg": "m", "big": 1 << 7_000_000}, 2)),
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
        assert metrics.get('refused_frames_total{reason="internal error"}', 0) == 0, log


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
    from safe_rotating import _wire

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
