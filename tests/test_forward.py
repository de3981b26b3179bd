"""``--forward``: the forwarder against local TCP acceptors standing in for a syslog relay.

In one process (asyncio): the bytes on the wire, a relay that is down and comes up, a relay that
restarts, the bound, shutdown, TLS. Then the real server as a subprocess: the local file and the
acknowledgements unaffected by a relay that is down or that stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from safe_rotating._net.syslog import SyslogFramer, format_rfc5424, octet_frame, parse
from safe_rotating.server.config import ConfigError, ServerConfig
from safe_rotating.server.forward import Forwarding
from safe_rotating.server.settings import build, load_toml

from .logserver import NativeClient, eventually, run_server
from .servers import free_port

PKI = Path(__file__).parent / "pki"
LOG = "tests.forward"


def record(i: int, **fields: Any) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "created": 1_800_000_000.0 + i,
        "name": "app.web",
        "levelno": logging.INFO,
        "levelname": "INFO",
        "msg": f"record {i}",
        "process": 4242,
        "exc_text": None,
        "stack_info": None,
        "host": "web-3",
        "app": "mysite",
    }
    flat.update(fields)
    return flat


class Relay:
    """An asyncio TCP (or TLS) acceptor that keeps every byte and the messages framed in them."""

    def __init__(self, port: int = 0, context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.context = context
        self.raw = bytearray()
        self.messages: list[bytes] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        framer = SyslogFramer(1 << 20)
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                self.raw += data
                framer.feed(data)
                self.messages.extend(framer.messages())
        writer.close()

    async def stop(self) -> None:
        """Stop listening and close every connection, as a relay that shuts down does."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()


async def until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.01)


def config_for(tmp_path: Path, *ports: int, **settings: Any) -> ServerConfig:
    return build(
        {"file": str(tmp_path / "app.log"), "forward": [f"127.0.0.1:{p}" for p in ports]} | settings
    )


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


# -- in one process ----------------------------------------------------------------------------
def test_records_arrive_as_octet_counted_rfc5424(tmp_path: Path) -> None:
    records = [record(i) for i in range(200)]
    records[7] = record(
        7,
        levelno=logging.ERROR,
        levelname="ERROR",
        msg="naïve café: 日本語 ✓",
        exc_text="Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'k'",
    )

    async def test() -> None:
        relay = await Relay().start()
        config = config_for(tmp_path, relay.port, forward_facility="local3")
        forwarding = Forwarding(config, logging.getLogger(LOG))
        forwarding.start()
        forwarding.offer(records[:150])
        forwarding.offer(records[150:])
        await until(lambda: len(relay.messages) == 200, what="200 messages")
        await forwarding.close(time.monotonic() + 2)
        await relay.stop()
        expected = b"".join(octet_frame(format_rfc5424(r, facility=19)) for r in records)
        assert bytes(relay.raw) == expected
        error = parse(relay.messages[7])
        assert (error.facility, error.severity) == (19, 3)
        assert (error.hostname, error.app, error.procid) == ("web-3", "app.web", "4242")
        assert error.message == "naïve café: 日本語 ✓\n" + records[7]["exc_text"]
        assert [parse(m).message for m in relay.messages[8:11]] == [
            "record 8",
            "record 9",
            "record 10",
        ]
        target = forwarding.targets[0]
        assert (target.forwarded, target.connected, len(target.queue)) == (200, False, 0)
        assert (
            f'forward_records_sent_total{{target="127.0.0.1:{relay.port}"}} 200'
            in forwarding.metrics()
        )

    run(test)


def test_relay_down_then_up_gets_everything_queued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    port = free_port()

    async def test() -> None:
        forwarding = Forwarding(config_for(tmp_path, port), logging.getLogger(LOG))
        forwarding.start()
        target = forwarding.targets[0]
        for start in range(0, 300, 100):
            forwarding.offer([record(i) for i in range(start, start + 100)])
        await until(lambda: len(target.queue) == 300, what="300 records queued")
        await asyncio.sleep(0.7)  # several failed attempts: reported once
        assert not target.connected
        relay = await Relay(port).start()
        await until(lambda: len(relay.messages) == 300, what="the queued records delivered")
        assert target.connected
        assert [parse(m).message for m in relay.messages] == [f"record {i}" for i in range(300)]
        assert relay.connections == 1
        await forwarding.close(time.monotonic() + 2)
        await relay.stop()

    run(test)
    lines = [r.getMessage() for r in caplog.records if r.name == LOG]
    assert sum(f"{port}: cannot connect" in line for line in lines) == 1, lines
    assert any("connected again after" in line and "sending 300" in line for line in lines), lines
    assert "300 record(s) forwarded, 0 dropped" in lines[-1]


def test_a_relay_restart_while_idle_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)

    async def test() -> None:
        relay = await Relay().start()
        forwarding = Forwarding(config_for(tmp_path, relay.port), logging.getLogger(LOG))
        forwarding.start()
        target = forwarding.targets[0]
        forwarding.offer([record(i) for i in range(10)])
        await until(lambda: len(relay.messages) == 10)
        await relay.stop()  # the relay restarts: its side of the idle connection closes
        await until(lambda: not target.connected, what="the closed connection noticed")
        forwarding.offer([record(i) for i in range(10, 20)])  # queued while it is away
        again = await Relay(relay.port).start()
        forwarding.offer([record(i) for i in range(20, 30)])
        await until(lambda: len(again.messages) == 20, what="the rest delivered")
        assert [parse(m).message for m in again.messages] == [f"record {i}" for i in range(10, 30)]
        await forwarding.close(time.monotonic() + 2)
        await again.stop()

    run(test)
    lines = [r.getMessage() for r in caplog.records if r.name == LOG]
    assert any("connection lost (closed by the relay)" in line for line in lines), lines
    assert any("connected again" in line for line in lines), lines


def test_full_queue_drops_the_newest_counts_and_reports_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    port = free_port()

    async def test() -> None:
        config = config_for(tmp_path, port, forward_queue=50)
        forwarding = Forwarding(config, logging.getLogger(LOG))
        forwarding.start()
        target = forwarding.targets[0]
        for start in range(0, 200, 20):
            forwarding.offer([record(i) for i in range(start, start + 20)])
        await until(lambda: target.dropped["queue full"] == 150, what="150 dropped")
        assert len(target.queue) == 50
        metrics = forwarding.metrics()
        name = f'target="127.0.0.1:{port}"'
        assert f'forward_records_dropped_total{{{name},reason="queue_full"}} 150' in metrics
        assert f"forward_queue_depth{{{name}}} 50" in metrics
        assert f"forward_connected{{{name}}} 0" in metrics
        relay = await Relay(port).start()
        await until(lambda: len(relay.messages) == 50, what="the kept records delivered")
        # The oldest were kept: an unbroken run from the start of the outage.
        assert [parse(m).message for m in relay.messages] == [f"record {i}" for i in range(50)]
        forwarding.offer([record(200)])  # room again: new records are queued and sent
        await until(lambda: len(relay.messages) == 51)
        assert f"forward_connected{{{name}}} 1" in forwarding.metrics()
        await forwarding.close(time.monotonic() + 2)
        await relay.stop()

    run(test)
    lines = [r.getMessage() for r in caplog.records if r.name == LOG]
    full = [line for line in lines if "queue is full" in line]
    assert len(full) == 1, lines
    assert "(50 records" in full[0]
    assert "not connected" in full[0]
    assert any("emptied; 150 record(s) were dropped" in line for line in lines), lines


def test_the_byte_bound(tmp_path: Path) -> None:
    async def test() -> None:
        forwarding = Forwarding(config_for(tmp_path, free_port()), logging.getLogger(LOG))
        target = forwarding.targets[0]
        target.max_bytes = 10_000
        forwarding.start()
        forwarding.offer([record(i, msg="x" * 1000) for i in range(30)])
        await until(lambda: sum(target.dropped.values()) > 0)
        assert target.bytes <= 10_000
        assert len(target.queue) + target.dropped["queue full"] == 30
        assert len(target.queue) == 10_000 // len(target.queue[0])
        await forwarding.close(time.monotonic() + 0.1)

    run(test)


def test_shutdown_flushes_or_gives_up_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    down = free_port()

    async def test() -> None:
        relay = await Relay().start()
        forwarding = Forwarding(config_for(tmp_path, relay.port, down), logging.getLogger(LOG))
        forwarding.start()
        forwarding.offer([record(i) for i in range(1000)])
        began = time.monotonic()
        await forwarding.close(began + 1.0)  # handed over just now: still sent in full
        took = time.monotonic() - began
        assert 0.9 < took < 2.0
        assert len(relay.messages) == 1000
        up, gone = forwarding.targets
        assert (up.forwarded, sum(up.dropped.values())) == (1000, 0)
        assert (gone.forwarded, gone.dropped["not sent at shutdown"]) == (0, 1000)
        assert f'127.0.0.1:{down}",reason="not_sent_at_shutdown"}} 1000' in forwarding.metrics()
        await relay.stop()

    run(test)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "gave up 1000 queued record(s) at shutdown: the relay is unreachable" in errors[0]


def test_tls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(str(PKI / "server.pem"), str(PKI / "server.key"))

    async def test() -> None:
        relay = await Relay(context=server_side).start()
        trusted = config_for(tmp_path, relay.port, forward_tls=True, forward_ca=str(PKI / "ca.pem"))
        forwarding = Forwarding(trusted, logging.getLogger(LOG))
        forwarding.start()
        forwarding.offer([record(i) for i in range(5)])
        await until(lambda: len(relay.messages) == 5)
        await forwarding.close(time.monotonic() + 2)
        # Without the test CA the relay's certificate is not trusted: nothing is sent.
        untrusted = Forwarding(
            config_for(tmp_path, relay.port, forward_tls=True), logging.getLogger(LOG)
        )
        untrusted.start()
        untrusted.offer([record(9)])
        await asyncio.sleep(0.5)
        assert not untrusted.targets[0].connected
        await untrusted.close(time.monotonic() + 0.1)
        await relay.stop()
        assert [parse(m).message for m in relay.messages] == [f"record {i}" for i in range(5)]

    run(test)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.endswith("(TLS)") and line.startswith("forwarding to") for line in lines)
    assert any("cannot connect" in line and "CERTIFICATE_VERIFY_FAILED" in line for line in lines)


def test_a_timestamp_out_of_range_is_sent_without_one(tmp_path: Path) -> None:
    forwarding = Forwarding(config_for(tmp_path, 1), logging.getLogger(LOG))
    framed = forwarding.frame(record(0, created=math.nan))
    assert framed is not None
    assert b" <14>1 - web-3 app.web 4242 - - record 0" in framed


def test_forward_settings(tmp_path: Path) -> None:
    config = config_for(
        tmp_path,
        6514,
        forward_tls=True,
        forward_ca=str(PKI / "ca.pem"),
        forward_facility="LOCAL7",
        forward_queue="5000",
    )
    assert [str(a) for a in config.forward] == ["127.0.0.1:6514"]
    assert (config.forward_facility, config.forward_queue) == (23, 5000)
    saved = tmp_path / "saved.toml"
    saved.write_text(config.describe())
    assert 'forward_facility = "local7"' in saved.read_text()
    assert build(load_toml(str(saved))) == config
    assert build({"file": str(tmp_path / "a.log")}).forward_facility == 1
    assert config_for(tmp_path, 1, forward_facility=3).forward_facility == 3
    cases: list[tuple[dict[str, Any], str]] = [
        ({"forward": "unix:/run/x.sock"}, "not possible"),
        ({"forward": "relay"}, "has no port"),
        ({"forward_tls": True}, "needs at least one forward"),
        ({"forward": "a:1", "forward_ca": str(PKI / "ca.pem")}, "needs forward_tls"),
        ({"forward": "a:1", "forward_facility": "bogus"}, "syslog facility"),
        ({"forward": "a:1", "forward_facility": 24}, "syslog facility"),
        ({"forward": "a:1", "forward_queue": 0}, "whole number"),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigError, match=message):
            build({"file": str(tmp_path / "a.log"), **settings})


# -- the real server ---------------------------------------------------------------------------
class ThreadRelay:
    """A relay in a thread, for the subprocess tests: reads (or, ``reading=False``, never
    reads) every connection and keeps the messages."""

    def __init__(self, port: int, *, reading: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        if not reading:  # the accepted sockets inherit a small receive buffer
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.reading = reading
        self.messages: list[bytes] = []
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self.listener.accept()
                self.sockets.append(sock)
                if self.reading:
                    threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    def _read(self, sock: socket.socket) -> None:
        framer = SyslogFramer(1 << 20)
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                framer.feed(data)
                with self.lock:
                    self.messages.extend(framer.messages())

    def texts(self) -> list[str]:
        with self.lock:
            return [parse(m).message for m in self.messages]

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@contextlib.contextmanager
def relay_thread(port: int, *, reading: bool = True) -> Iterator[ThreadRelay]:
    relay = ThreadRelay(port, reading=reading)
    try:
        yield relay
    finally:
        relay.close()


def send_batches(client: NativeClient, first: int, batches: int, size: int, body: str) -> float:
    """Send numbered records in batches, each acknowledged; the slowest acknowledgement (s)."""
    slowest = 0.0
    for b in range(batches):
        begun = time.monotonic()
        start = first + b * size
        client.batch(b + 1 + first // size, [f"{body} {i}" for i in range(start, start + size)])
        client.acked(b + 1 + first // size)
        slowest = max(slowest, time.monotonic() - begun)
    return slowest


def test_server_relay_down_then_up(tmp_path: Path) -> None:
    relay_port = free_port()
    args = ["--forward", f"127.0.0.1:{relay_port}", "--format", "%(message)s"]
    with run_server(tmp_path, *args) as server:
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("f" * 32, app="mysite")
        send_batches(client, 0, 10, 100, "down")
        assert server.lines() == [f"down {i}" for i in range(1000)]  # written, acknowledged
        metrics = server.metrics()
        name = f'{{target="127.0.0.1:{relay_port}"}}'
        assert metrics[f"forward_connected{name}"] == 0
        assert metrics[f"forward_queue_depth{name}"] == 1000
        client.batch(10, ["a batch sent again after a reconnect"])  # a duplicate: not written
        client.acked(10)
        with relay_thread(relay_port) as relay:
            eventually(lambda: len(relay.texts()) == 1000, 5, "the queued records forwarded")
            send_batches(client, 1000, 2, 100, "up")
            eventually(lambda: len(relay.texts()) == 1200, 5, "the new records forwarded")
            expected = [f"down {i}" for i in range(1000)] + [f"up {i}" for i in range(1000, 1200)]
            assert relay.texts() == expected
            first = parse(relay.messages[0])
            assert (first.hostname, first.app, first.procid, first.facility) == (
                "web-3",
                "tests.native",
                "4242",
                1,
            )
            metrics = server.metrics()
            assert metrics[f"forward_connected{name}"] == 1
            assert metrics[f"forward_records_sent_total{name}"] == 1200
            client.close()
            assert server.stop() == 0
        assert server.stderr.count(f"{relay_port}: cannot connect") == 1
        assert "connected again after" in server.stderr
        assert "1200 record(s) forwarded, 0 dropped" in server.stderr


def test_server_file_unaffected_by_a_relay_that_stops_reading(tmp_path: Path) -> None:
    relay_port = free_port()
    args = ["--forward", f"127.0.0.1:{relay_port}", "--forward-queue", "500"]
    args += ["--format", "%(message)s", "--drain-timeout", "1"]
    with relay_thread(relay_port, reading=False), run_server(tmp_path, *args) as server:
        name = f'{{target="127.0.0.1:{relay_port}"}}'
        eventually(lambda: server.metrics()[f"forward_connected{name}"] == 1, 5, "connected")
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("g" * 32)
        body = "y" * 2000  # 4000 records of 2 kB: far more than the socket buffers hold
        slowest = send_batches(client, 0, 40, 100, body)
        assert len(server.lines()) == 4000
        assert server.lines()[-1] == f"{body} 3999"
        assert slowest < 2.0  # acknowledged as soon as written, relay or not
        metrics = server.metrics()
        forwarded = metrics[f"forward_records_sent_total{name}"]
        queued = metrics[f"forward_queue_depth{name}"]
        dropped = metrics[
            f'forward_records_dropped_total{{target="127.0.0.1:{relay_port}",reason="queue_full"}}'
        ]
        assert queued == 500
        assert dropped > 0
        assert forwarded + queued + dropped == 4000
        assert metrics[f"forward_connected{name}"] == 1
        client.close()
        began = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
        assert time.monotonic() - began < 5
        assert server.stderr.count("the queue is full (500 records") == 1
        assert "connected but not keeping up" in server.stderr
        assert "gave up 500 queued record(s) at shutdown" in server.stderr
        assert "written 4000" in server.stderr
