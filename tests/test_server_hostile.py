"""Bad input to the server: each bad peer is refused with a counted reason, the rest are served.

Every test keeps a good client going beside the bad one and checks that its record lands within
two seconds; the bounds are liveness bounds, not speed targets.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safe_rotating._net.wire import encode, frame

from .logserver import (
    LogServer,
    NativeClient,
    closed_by_server,
    connect,
    cpu_seconds,
    eventually,
    rss_bytes,
    run_server,
)

pytestmark = pytest.mark.multiprocess

RSS_LIMIT = 200 * 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LogServer]:
    with run_server(tmp_path, "--format", "%(message)s", "--read-timeout", "1") as running:
        yield running


def good_record_lands(server: LogServer, tag: str, name: str = "app.log") -> None:
    message = f"good record {tag} {time.monotonic_ns()}"
    server.send_stock(message)
    server.assert_lands(message, timeout=2.0, name=name)


def assert_healthy(server: LogServer) -> None:
    assert server.process.poll() is None, server.stderr
    assert rss_bytes(server.pid) < RSS_LIMIT


def test_garbage_bytes(server: LogServer) -> None:
    bad = connect(server)
    bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # "GET " read as a length: too large
    assert closed_by_server(bad)
    random_junk = connect(server)
    random_junk.sendall(frame(os.urandom(64).replace(b"{", b"x").replace(b"}", b"x")[:1] + b"zz"))
    good_record_lands(server, "garbage")
    assert closed_by_server(random_junk)
    server.wait_refused("frame_too_large")
    assert server.refused("unknown_dialect") + server.refused("frame_too_large") >= 2
    assert_healthy(server)


def test_four_gigabyte_length_prefix(server: LogServer) -> None:
    bad = connect(server)
    bad.sendall(b"\xff\xff\xff\xff" + b"{" * 100)
    good_record_lands(server, "4GB")
    assert closed_by_server(bad)
    server.wait_refused("frame_too_large")
    assert "4294967295 bytes is over the limit" in server.stderr
    assert_healthy(server)


def test_native_client_is_told_why(server: LogServer) -> None:
    client = NativeClient(("127.0.0.1", server.port))
    client.hello("n" * 32)
    client.sock.sendall(struct.pack(">I", 1 << 30))
    reply = client.receive()
    assert reply is not None
    assert reply["type"] == "error"
    assert "over the limit" in reply["reason"]
    assert client.closed()
    server.wait_refused("frame_too_large")


def test_truncated_frame_then_close(server: LogServer) -> None:
    bad = connect(server)
    bad.sendall(struct.pack(">I", 100) + b'{"v": 1, "type"')
    good_record_lands(server, "truncated")
    bad.close()
    server.wait_refused("truncated_frame")
    assert_healthy(server)


KILLED_MID_FRAME = """
import socket, struct, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(struct.pack(">I", 5000) + b'{"v": 1, "type": "hello", "client": "')
print("sent", flush=True)
time.sleep(60)
"""


def test_client_killed_mid_frame(tmp_path: Path) -> None:
    # A read timeout longer than the test: the refusal must come from the dead peer's FIN.
    with run_server(tmp_path, "--format", "%(message)s", "--read-timeout", "60") as server:
        client = subprocess.Popen(
            [sys.executable, "-c", KILLED_MID_FRAME, str(server.port)],
            stdout=subprocess.PIPE,
        )
        assert client.stdout is not None
        assert client.stdout.readline() == b"sent\n"
        good_record_lands(server, "before kill")
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        client.stdout.close()
        server.wait_refused("truncated_frame", timeout=2.0)
        good_record_lands(server, "after kill")
        assert_healthy(server)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json at all", "invalid_json"),
        (b'{"v": 1, "type": "hello", "client": "\xff\xfe"}', "invalid_utf_8"),
        (b'{"v": 2, "type": "hello"}', "unknown_version"),
        (b'{"v": 1, "type": "batch", "seq": 1, "records": []}', "no_hello"),
        (b'{"v": 1, "type": "hello", "client": "has spaces"}', "bad_client_id"),
        (b"[1, 2, 3]", "unknown_dialect"),
    ],
)
def test_bad_native_messages(server: LogServer, payload: bytes, reason: str) -> None:
    bad = connect(server)
    bad.sendall(frame(payload))
    assert closed_by_server(bad)
    server.wait_refused(reason)
    good_record_lands(server, reason)


class Evil:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


@pytest.mark.parametrize("protocol", [1, 4])
def test_pickle_with_globals(server: LogServer, tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    evil = [
        {"msg": Evil(os.system, f"touch {marker}"), "name": "x"},
        {"msg": Evil(eval, f"open({str(marker)!r}, 'w')"), "name": "x"},
    ]
    for record in evil:
        bad = connect(server)
        bad.sendall(frame(pickle.dumps(record, protocol)))
        assert closed_by_server(bad)
    server.wait_refused("pickle_global", 2)
    assert not marker.exists()
    assert "os.system" in server.stderr or "posix.system" in server.stderr
    assert "builtins.eval" in server.stderr or "__builtin__.eval" in server.stderr
    good_record_lands(server, "pickle")


def test_slow_loris_connections(server: LogServer) -> None:
    sockets = [connect(server) for _ in range(100)]
    try:
        for sock in sockets:
            sock.sendall(struct.pack(">I", 50) + b"{")
        stop = time.monotonic() + 3
        while time.monotonic() < stop and server.refused("read_timeout") < 100:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")  # one byte at a time: never completes the frame
            good_record_lands(server, "loris")
            time.sleep(0.2)
        server.wait_refused("read_timeout", 100, timeout=3)
        assert_healthy(server)
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("many_files")
def test_thousand_idle_connections_cost_nothing(server: LogServer) -> None:
    sockets = [connect(server) for _ in range(1000)]
    try:
        eventually(lambda: server.metrics()["connections_open"] >= 1000, 5, "1000 connections")
        time.sleep(0.3)
        before = cpu_seconds(server.pid)
        started = time.monotonic()
        time.sleep(1.0)
        used = (cpu_seconds(server.pid) - before) / (time.monotonic() - started)
        assert used < 0.10, f"{used:.0%} CPU while 1000 connections sit idle"
        good_record_lands(server, "idle")
        assert_healthy(server)
    finally:
        for sock in sockets:
            sock.close()
    eventually(lambda: server.metrics()["connections_open"] == 0, 5, "connections closed")


def test_flood_from_one_client_is_held_back_not_buffered(tmp_path: Path) -> None:
    # 200 MB arrive and are parsed, but only 40 bytes of each record are written: the test is
    # about memory and fairness, and must not load the disk that other tests share.
    args = ["--format", "%(message).40s", "--max-bytes", "1MiB", "--backup-count", "2"]
    args += ["--route", "tests.good=good.log"]
    with run_server(tmp_path, *args) as server:
        record = {"name": "flood", "levelno": 20, "msg": "f" * 8000}
        batch_records = [record] * 125  # about 1 MB per frame
        total_frames = 200  # about 200 MB
        flood = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        flood.sendall(encode({"type": "hello", "client": "f" * 32}))
        failure: list[BaseException] = []

        def send() -> None:
            try:
                for seq in range(1, total_frames + 1):
                    flood.sendall(encode({"type": "batch", "seq": seq, "records": batch_records}))
            except BaseException as exc:
                failure.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        peak = 0
        try:
            while sender.is_alive():
                peak = max(peak, rss_bytes(server.pid))
                good_record_lands(server, "flood", "good.log")
                time.sleep(0.1)
        finally:
            sender.join(60)
        assert not failure, failure
        expected = total_frames * len(batch_records)
        eventually(
            lambda: server.metrics()["records_written_total"] >= expected, 30, "the flood written"
        )
        peak = max(peak, rss_bytes(server.pid))
        print(f"peak RSS during the flood: {peak / 1e6:.0f} MB")
        assert peak < RSS_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"
        flood.close()
        assert_healthy(server)


def test_connections_over_the_limit_are_refused(tmp_path: Path) -> None:
    with run_server(tmp_path, "--format", "%(message)s", "--max-connections", "3") as server:
        held = [connect(server) for _ in range(3)]
        eventually(lambda: server.metrics()["connections_open"] == 3, what="three connections")
        extra = connect(server)
        assert closed_by_server(extra)
        server.wait_refused("too_many_connections")
        held.pop().close()
        eventually(lambda: server.metrics()["connections_open"] == 2, what="one closed")
        good_record_lands(server, "after the limit")  # a fourth connection is possible again
        for sock in held:
            sock.close()
