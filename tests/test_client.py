"""``LogServerHandler`` against a real socket peer: order, outages, spool, overflow, settings.

The peer (:mod:`tests.wire_peer`) speaks the native protocol on 127.0.0.1 and can be stopped,
restarted on the same port with its journal, paused (it stops reading, as a stopped server
would) or told to lose an ack.
"""

from __future__ import annotations

import logging
import logging.config
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from safe_rotating._client import sender as _sender
from safe_rotating._net import rendered as _rendered
from safe_rotating._net import wire as _wire
from safe_rotating.client import LogServerHandler
from safe_rotating.exceptions import RecordsDropped, ServerUnavailable
from safe_rotating.verify import make_line, parse_line
from tests.logserver import eventually
from tests.servers import free_port
from tests.wire_peer import RecordingClient, WirePeer

ROOT = str(Path(__file__).resolve().parent.parent)
FAST: dict[str, Any] = {"ack_timeout": 0.3, "flush_timeout": 5.0}  # quick outage detection


@pytest.fixture
def peer() -> Iterator[WirePeer]:
    with WirePeer().start() as running:
        yield running


@pytest.fixture
def handlers() -> Iterator[list[LogServerHandler]]:
    """Handlers made by a test, closed after it."""
    made: list[LogServerHandler] = []
    yield made
    for handler in made:
        handler.close()


@pytest.fixture
def client(
    handlers: list[LogServerHandler], tmp_path: Path, logger: logging.Logger
) -> Callable[..., RecordingClient]:
    """A RecordingClient on ``logger`` with a spool in tmp_path (unless told otherwise)."""

    def build(address: str, **kwargs: Any) -> RecordingClient:
        options: dict[str, Any] = {"spool_dir": str(tmp_path / "spool"), **FAST, **kwargs}
        handler = RecordingClient(address, **options)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(handler)
        logger.addHandler(handler)
        return handler

    return build


def writers_of(messages: list[str]) -> dict[int, list[int]]:
    """The sequence numbers of every writer, in arrival order."""
    found: dict[int, list[int]] = {}
    for message in messages:
        parsed = parse_line(message.encode())
        assert parsed is not None, f"not a verifier line: {message!r}"
        found.setdefault(parsed[0], []).append(parsed[1])
    return found


def spool_files(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.rglob("*") if p.is_file())


# -- delivery ------------------------------------------------------------------------------------
def test_records_arrive_in_order_exactly_once(
    peer: WirePeer, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(peer.address)
    for seq in range(5000):
        logger.info(make_line(0, seq))
    handler.flush()
    assert peer.messages() == [make_line(0, seq) for seq in range(5000)]
    stats = handler.stats()
    assert (stats.queued, stats.acked, stats.pending, stats.dropped) == (5000, 5000, 0, 0)
    assert stats.spooled == 0
    assert peer.duplicates == 0
    assert not handler.failures
    hello = peer.hellos[0]
    assert hello["client"] == handler.client_id
    assert hello["pid"] == os.getpid()
    assert len(hello["client"]) == 32


def test_record_fields_and_extra_values_that_fight_back(
    peer: WirePeer, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    class OddRepr:  # like a Django WSGIRequest: not JSON, with a repr of its own
        def __repr__(self) -> str:
            return "<WSGIRequest: GET '/caf\u00e9?\nx=1'>"

    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    class BadStr:
        def __str__(self) -> str:
            raise RuntimeError("no str")

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    handler = client(peer.address, format_on="server")  # every field, for the server to format
    logger.info("odd %s", "arg", extra={"request": OddRepr(), "user_id": 7})
    logger.info("bad", extra={"request": BadRepr()})
    logger.info(
        "values",
        extra={"big": 2**80, "inf": math.inf, "nan": math.nan, "surrogate": "a\udcffb"},
    )
    handler.handle(logging.makeLogRecord({"msg": BadStr(), "name": logger.name}))
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    logger.info("x" * 600_000)  # over the record limit: cut, not lost
    handler.flush()
    assert eventually(lambda: peer.count() == 6, timeout=15.0)
    records = [r.record for r in peer.received]
    assert records[0]["msg"] == "odd arg"
    assert records[0]["extra"] == {"request": repr(OddRepr()), "user_id": 7}
    assert records[0]["levelname"] == "INFO"
    assert records[0]["name"] == logger.name
    assert records[0]["funcName"] == "test_record_fields_and_extra_values_that_fight_back"
    assert "unrepresentable BadRepr" in records[1]["extra"]["request"]
    assert records[2]["extra"]["big"] in (2**80, str(2**80))
    assert records[2]["extra"]["surrogate"] in ("a\\udcffb", "a\udcffb")
    assert "could not be formatted" in records[3]["msg"]
    assert "ValueError: boom" in records[4]["exc_text"]
    assert records[4]["msg"] == "failed"
    assert records[5]["msg"].startswith("x" * 1000)
    assert "characters cut" in records[5]["msg"]
    assert not handler.failures


def test_stdlib_json_encoding_gives_the_same_records(
    peer: WirePeer,
    client: Callable[..., RecordingClient],
    logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wire, "_orjson", None)
    handler = client(peer.address)
    for seq in range(500):
        logger.info(make_line(0, seq), extra={"inf": math.inf, "s": "\udcff"})
    handler.flush()
    assert peer.messages() == [make_line(0, seq) for seq in range(500)]
    assert not handler.failures


def test_record_does_not_change_after_emit(
    peer: WirePeer, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(peer.address, format_on="server")
    payload = {"items": [1, 2]}
    logger.info("changing %s", payload["items"], extra={"payload": payload})
    payload["items"].append(3)  # the application keeps using its objects
    handler.flush()
    record = peer.received[0].record
    assert record["msg"] == "changing [1, 2]"
    assert record["extra"]["payload"] == {"items": [1, 2]}


def test_close_flushes(peer: WirePeer, tmp_path: Path, logger: logging.Logger) -> None:
    handler = LogServerHandler(peer.address, spool_dir=str(tmp_path / "spool"))
    logger.addHandler(handler)
    for seq in range(3000):
        logger.info(make_line(0, seq))
    handler.close()
    logger.removeHandler(handler)
    assert peer.messages() == [make_line(0, seq) for seq in range(3000)]
    assert spool_files(tmp_path / "spool") == []


def test_unix_socket_and_token(
    tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    with WirePeer(unix_path=str(tmp_path / "log.sock"), token="s3cret").start() as peer:
        handler = client(peer.address, token="s3cret", app="mysite")
        for seq in range(100):
            logger.info(make_line(0, seq))
        handler.flush()
        assert peer.messages() == [make_line(0, seq) for seq in range(100)]
        assert peer.hellos[0]["token"] == "s3cret"
        assert peer.hellos[0]["app"] == "mysite"


def test_wrong_token_is_reported_at_once_and_nothing_is_lost(
    client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    with WirePeer(token="right").start() as peer:
        handler = client(peer.address, token="wrong")
        for seq in range(50):
            logger.info(make_line(0, seq))
        eventually(lambda: handler.failures, what="a report", timeout=15.0)
        assert isinstance(handler.failures[0], ServerUnavailable)
        assert "wrong token" in str(handler.failures[0])
        handler.flush()
        assert handler.stats().spooled == 50
        assert peer.count() == 0
        peer.token = "wrong"  # the operator fixes the configuration
        assert peer.wait_for(50)
        assert peer.messages() == [make_line(0, seq) for seq in range(50)]
        assert len(handler.failures) == 1


def _certificate(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:  # under CI=true a skip fails (tests/ci_skips.py)
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls(
    tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with WirePeer(tls=context).start() as peer:
        handler = client(f"localhost:{peer.port}", tls=True, tls_ca=str(cert))
        for seq in range(2000):
            logger.info(make_line(0, seq))
        handler.flush()
        assert peer.messages() == [make_line(0, seq) for seq in range(2000)]
        assert not handler.failures


# -- outages -------------------------------------------------------------------------------------
def test_server_down_at_start_then_everything_arrives_once(
    tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    port = free_port()
    handler = client(f"127.0.0.1:{port}")
    for seq in range(3000):
        logger.info(make_line(0, seq))
    handler.flush()  # nothing to talk to: flush returns once everything is in the spool
    stats = handler.stats()
    assert stats.spooled == 3000
    assert stats.acked == 0
    spooled = spool_files(tmp_path / "spool")
    assert any(name.endswith(".spool") for name in spooled)
    assert f"{handler.client_id}.lock" in spooled

    with WirePeer(port).start() as peer:
        assert peer.wait_for(3000)
        assert peer.messages() == [make_line(0, seq) for seq in range(3000)]
        # flush() returned at once (spooled counts as safe); acks come as the spool drains
        eventually(
            lambda: handler.stats().pending == 0, what="every batch acknowledged", timeout=15.0
        )
        assert handler.stats().replayed == 3000
        # every acknowledged segment is deleted; only the owner's lock file stays while it runs
        assert eventually(
            lambda: spool_files(tmp_path / "spool") == [f"{handler.client_id}.lock"],
            what="spool segments removed",
            timeout=15.0,
        )
        assert peer.duplicates == 0
    assert not handler.failures


def test_server_restarts_mid_stream_nothing_lost_nothing_twice(
    peer: WirePeer, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(peer.address)
    total = 30_000
    done = threading.Event()

    def log_all() -> None:
        for seq in range(total):
            logger.info(make_line(0, seq))
            if seq % 500 == 0:
                time.sleep(0.002)
        done.set()

    writer = threading.Thread(target=log_all)
    writer.start()
    for _ in range(3):  # restart on the same port, keeping the journal (the state directory)
        time.sleep(0.15)
        peer.restart()
    peer.lose_next_ack = True  # one batch written, connection lost before its ack
    writer.join()
    handler.flush()
    assert peer.wait_for(total)
    handler.flush()
    seqs = writers_of(peer.messages())[0]
    assert seqs == list(range(total)), "lost, duplicated or reordered records"
    assert handler.stats().reconnects >= 3
    assert not handler.failures


def test_welcome_last_seq_drops_what_the_server_already_wrote(
    peer: WirePeer, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(peer.address, batch_size=10)
    peer.lose_next_ack = True
    for seq in range(10):
        logger.info(make_line(0, seq))
    handler.flush()
    eventually(lambda: handler.stats().pending == 0, what="every batch acknowledged", timeout=15.0)
    assert peer.messages() == [make_line(0, seq) for seq in range(10)]
    # The batch was written but not acknowledged: the client got last_seq=1 in the next
    # welcome and did not send the batch again.
    assert peer.duplicates == 0
    assert len(peer.hellos) == 2
    assert handler.stats().acked == 10


def test_stalled_server_emit_stays_fast_and_the_spool_takes_the_load(
    peer: WirePeer, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(peer.address, ack_timeout=0.2, queue_size=1000)
    logger.info(make_line(0, 0))
    handler.flush()
    peer.pause()  # the server stops reading, like a SIGSTOPped process: no acks, TCP fills
    slowest = 0.0
    for seq in range(1, 2001):
        started = time.perf_counter()
        logger.info(make_line(0, seq))
        slowest = max(slowest, time.perf_counter() - started)
        if seq % 200 == 0:
            time.sleep(0.05)  # 0.5 s in all: well past ack_timeout
    assert slowest < 0.05, f"an emit took {slowest * 1000:.1f} ms while the server was stalled"
    eventually(lambda: handler.stats().spooled > 0, what="spooling", timeout=15.0)
    assert peer.count() == 1
    peer.resume()
    assert peer.wait_for(2001)
    handler.flush()
    assert peer.messages() == [make_line(0, seq) for seq in range(2001)]
    assert peer.duplicates == 0
    assert not handler.failures


def test_full_queue_moves_to_the_spool_on_the_caller_thread(
    client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    """A server that accepts connections but never answers holds the sender thread in its
    handshake (up to ack_timeout): emit then moves the full queue to the spool itself, and no
    emit waits anywhere near ack_timeout for the sender (the bound is a liveness bound, far
    above an emit's real cost, so a busy machine does not fail it)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes connections; nobody ever reads them
    port = silent.getsockname()[1]
    try:
        handler = client(f"127.0.0.1:{port}", queue_size=50, batch_size=10, ack_timeout=5.0)
        slowest = 0.0
        for seq in range(2000):
            started = time.perf_counter()
            logger.info(make_line(0, seq))
            slowest = max(slowest, time.perf_counter() - started)
        stats = handler.stats()
        assert stats.spooled >= 2000 - 50
        assert stats.dropped == 0
        assert slowest < 1.0, f"an emit took {slowest * 1000:.1f} ms (ack_timeout is 5 s)"
    finally:
        silent.close()
    with WirePeer(port).start() as peer:
        assert peer.wait_for(2000)
        assert peer.messages() == [make_line(0, seq) for seq in range(2000)]
        assert peer.duplicates == 0


# -- a process that died -------------------------------------------------------------------------
_DYING_CLIENT = """
import logging, os, sys, time
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
address, spool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
handler = LogServerHandler(address, spool_dir=spool, ack_timeout=0.2)
log = logging.getLogger("dying")
log.addHandler(handler)
log.setLevel(logging.INFO)
for seq in range(count):
    log.info(make_line(0, seq))
deadline = time.monotonic() + 20
while handler.stats().spooled < count and time.monotonic() < deadline:
    time.sleep(0.01)
print(handler.client_id, handler.stats().spooled, flush=True)
time.sleep(60)
"""


def test_spool_of_a_killed_process_is_delivered_by_the_next_client(
    tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    count = 4000
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING_CLIENT, f"127.0.0.1:{port}", str(spool), str(count)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        assert dying.stdout is not None
        dead_id, spooled = dying.stdout.readline().decode().split()
        assert int(spooled) == count
    finally:
        dying.kill()  # SIGKILL: no atexit, no flush, the lock is released by the kernel
        dying.wait()
    assert f"{dead_id}.lock" in spool_files(spool)

    with WirePeer(port).start() as peer:
        handler = client(f"127.0.0.1:{port}")
        logger.info(make_line(1, 0))  # the new client starts, connects, finds the dead spool
        assert peer.wait_for(count + 1)
        handler.flush()
        assert peer.messages(dead_id) == [make_line(0, seq) for seq in range(count)]
        assert peer.messages(handler.client_id) == [make_line(1, 0)]
        assert dead_id in peer.clients()
        assert eventually(
            lambda: not any(name.startswith(dead_id) for name in spool_files(spool)),
            what="the dead spool removed",
            timeout=15.0,
        )
        assert handler.stats().replayed == count
        assert peer.duplicates == 0


def test_spool_frames_are_batches_with_client_and_seq(
    tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(f"127.0.0.1:{free_port()}", batch_size=100)
    for seq in range(250):
        logger.info(make_line(0, seq))
    handler.flush()
    (segment,) = [p for p in (tmp_path / "spool").rglob("*.spool")]
    assert segment.name.startswith(handler.client_id)
    assert segment.stat().st_mode & 0o777 == 0o600
    assert segment.parent.stat().st_mode & 0o777 == 0o700
    reader = _wire.FrameReader()
    reader.feed(segment.read_bytes())
    # The handler has a formatter: it renders the lines, and the spool holds protocol-2 batches.
    batches = [_rendered.parse_batch(payload) for payload in reader.frames()]
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    assert all(b.count <= 100 for b in batches)
    assert {b.client for b in batches} == {handler.client_id}
    assert [text.decode() for b in batches for text in b.texts()] == [
        make_line(0, seq) for seq in range(250)
    ]


def test_spool_frames_without_a_formatter_are_v1_batches(
    tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(f"127.0.0.1:{free_port()}", batch_size=100)
    handler.setFormatter(None)  # the server's --format renders: fields go as JSON
    for seq in range(250):
        logger.info(make_line(0, seq))
    handler.flush()
    (segment,) = [p for p in (tmp_path / "spool").rglob("*.spool")]
    reader = _wire.FrameReader()
    reader.feed(segment.read_bytes())
    messages = [_wire.decode(payload) for payload in reader.frames()]
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert all(len(m["records"]) <= 100 for m in messages)
    assert {m["client"] for m in messages} == {handler.client_id}
    assert {m["type"] for m in messages} == {"batch"}
    assert [r["msg"] for m in messages for r in m["records"]] == [
        make_line(0, seq) for seq in range(250)
    ]


# -- overflow ------------------------------------------------------------------------------------
def test_drops_are_counted_and_reported_once_per_episode(
    client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    port = free_port()
    handler = client(
        f"127.0.0.1:{port}",
        queue_size=100,
        batch_size=10,
        spool_max_bytes=64 * 1024,
        on_full="drop",
    )
    total = 3000
    for seq in range(total):
        logger.info(make_line(0, seq))
    stats = handler.stats()
    assert stats.dropped > 0
    assert len(handler.failures) == 1, handler.failures
    started = handler.failures[0]
    assert isinstance(started, RecordsDropped)
    assert not started.ended
    assert "queue_size=100" in str(started)
    assert "spool_max_bytes=65536" in str(started)

    with WirePeer(port).start() as peer:
        kept = total - stats.dropped
        assert peer.wait_for(kept)
        eventually(
            lambda: handler.stats().pending == 0, what="every batch acknowledged", timeout=15.0
        )
        logger.info(make_line(1, 0))  # accepted again: the episode ends, with its count
        handler.flush()
        assert len(handler.failures) == 2, handler.failures
        ended = handler.failures[1]
        assert isinstance(ended, RecordsDropped)
        assert ended.ended
        assert ended.count == stats.dropped
        assert f"{stats.dropped} record(s) were dropped" in str(ended)
        seqs = writers_of(peer.messages())[0]
        assert len(seqs) == kept
        assert seqs == sorted(set(seqs)), "duplicated or reordered"
        assert seqs == list(range(kept)), "records are dropped only once memory and spool are full"


def test_block_waits_once_then_drops_without_waiting(
    client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    handler = client(
        f"127.0.0.1:{free_port()}",
        spool_dir=False,
        queue_size=20,
        batch_size=10,
        block_timeout=0.3,
        flush_timeout=0.3,
    )
    times = []
    for seq in range(100):
        started = time.perf_counter()
        logger.info(make_line(0, seq))
        times.append(time.perf_counter() - started)
    slow = [t for t in times if t > 0.2]
    assert len(slow) == 1, "one wait of block_timeout, then drops without waiting"
    assert max(t for t in times if t <= 0.2) < 0.05
    assert handler.stats().dropped == 80
    assert len(handler.failures) == 1
    handler.close()
    # No spool and no server: the 20 records held in memory are lost at close, and said so.
    lost = handler.failures[-1]
    assert isinstance(lost, RecordsDropped)
    assert lost.count == 20
    assert "no spool" in str(lost)


def test_fallback_file_without_spool(
    tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    port = free_port()
    fallback = tmp_path / "fallback.log"
    handler = client(f"127.0.0.1:{port}", spool_dir=False, fallback_file=str(fallback))
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for seq in range(300):
        logger.warning(make_line(0, seq))
    handler.flush()
    assert eventually(
        lambda: fallback.exists() and len(fallback.read_text().splitlines()) == 300, timeout=15.0
    )
    assert fallback.read_text().splitlines() == [
        f"WARNING {make_line(0, seq)}" for seq in range(300)
    ]
    assert handler.stats().fallback == 300
    with WirePeer(port).start() as peer:
        eventually(
            lambda: handler.stats().reconnects + len(peer.hellos) > 0,
            what="reconnect",
            timeout=15.0,
        )
        logger.warning(make_line(1, 0))
        handler.flush()
        assert peer.wait_for(1)
        assert peer.messages() == [f"WARNING {make_line(1, 0)}"]  # rendered by its formatter


# -- configuration -------------------------------------------------------------------------------
def test_dictconfig_by_class_path(peer: WirePeer, tmp_path: Path) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "central": {
                    "class": "safe_rotating.client.LogServerHandler",
                    "address": peer.address,
                    "spool_dir": str(tmp_path / "spool"),
                    "queue_size": 5000,
                    "on_full": "drop",
                    "level": "INFO",
                }
            },
            "loggers": {"tests.dictconfig": {"handlers": ["central"], "propagate": False}},
        }
    )
    log = logging.getLogger("tests.dictconfig")
    handler = log.handlers[0]
    try:
        assert isinstance(handler, LogServerHandler)
        assert handler.level == logging.INFO
        log.warning("configured")
        log.debug("filtered out")
        handler.flush()
        assert peer.messages() == ["configured"]
    finally:
        log.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"address": 9020}, TypeError, r"address must be a str .*got int: 9020"),
        ({"address": "localhost"}, ValueError, r"address='localhost' has no port"),
        ({"address": "::1:9020"}, ValueError, r"IPv6 address goes in brackets"),
        ({"address": "[::1]9020"}, ValueError, r"must look like '\[::1\]:9020'"),
        ({"address": "host:0"}, ValueError, r"port must be a number from 1 to 65535"),
        ({"address": "host:http"}, ValueError, r"address='host:http': the port"),
        ({"address": ":9020"}, ValueError, r"has no host"),
        ({"address": "unix:"}, ValueError, r"names no socket path"),
        ({"address": "unix:/" + "x" * 200}, ValueError, r"at most 107 bytes"),
        ({"queue_size": 0}, ValueError, r"queue_size must be >= 1, got 0"),
        ({"queue_size": "10"}, TypeError, r"queue_size must be an int, got str: '10'"),
        ({"batch_size": 0}, ValueError, r"batch_size must be from 1 to 10000, got 0"),
        ({"batch_size": 500, "queue_size": 100}, ValueError, r"queue_size=100 must be at least"),
        ({"flush_interval": 0}, ValueError, r"flush_interval must be a positive, finite"),
        ({"flush_interval": 5}, ValueError, r"flush_interval must be at most 1 seconds, got 5"),
        ({"ack_timeout": -1}, ValueError, r"ack_timeout must be a positive, finite.*got -1"),
        ({"flush_timeout": "5"}, TypeError, r"flush_timeout must be a number of seconds"),
        ({"block_timeout": math.inf}, ValueError, r"block_timeout must be a positive, finite"),
        ({"on_full": "wait"}, ValueError, r"on_full must be 'block' or 'drop', got 'wait'"),
        ({"spool_max_bytes": 1000}, ValueError, r"spool_max_bytes must be >= 65536, got 1000"),
        ({"spool_max_bytes": True}, TypeError, r"spool_max_bytes must be an int, got bool"),
        ({"spool_dir": True}, TypeError, r"spool_dir must be a directory path, None .* or False"),
        ({"spool_dir": 3}, TypeError, r"spool_dir must be a directory path"),
        ({"token": ""}, TypeError, r"token must be a non-empty str or None"),
        ({"tls": "yes"}, TypeError, r"tls must be True or False, got str: 'yes'"),
        ({"tls_ca": "/etc/hosts"}, ValueError, r"tls_ca='/etc/hosts' is set but tls=False"),
        ({"tls": True, "tls_ca": "/no/such/ca.pem"}, ValueError, r"tls_ca='/no/such/ca.pem' is"),
        ({"tls": True, "tls_ca": "/etc/hostname"}, ValueError, r"could not be loaded"),
        ({"tls": True, "tls_key": "/etc/hostname"}, ValueError, r"tls_key is set without"),
        (
            {"tls": True, "address": "unix:/run/x.sock"},
            ValueError,
            r"Unix socket needs tls_server_hostname",
        ),
        ({"fallback_file": "/tmp/x.log"}, ValueError, r"set spool_dir=False too"),
        ({"fallback_file": 5, "spool_dir": False}, TypeError, r"filename must be a str"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    kwargs = dict(kwargs)
    address = kwargs.pop("address", "127.0.0.1:9020")
    with pytest.raises(error, match=message):
        LogServerHandler(address, **kwargs)


def test_valid_addresses() -> None:
    for address, family in [
        ("127.0.0.1:9020", socket.AF_INET),
        ("[::1]:9020", socket.AF_INET),
        ("logs.example.com:514", socket.AF_INET),
        ("unix:/run/mysite/log.sock", socket.AF_UNIX),
    ]:
        handler = LogServerHandler(address, spool_dir=False)
        try:
            assert handler._config.family == family
            assert repr(handler) == f"<LogServerHandler {address} (NOTSET)>"
        finally:
            handler.close()


def test_default_spool_directory_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    handler = LogServerHandler(f"127.0.0.1:{free_port()}", **FAST)
    try:
        assert handler.spool_directory == str(runtime / "safe_rotating" / "tcp-127.0.0.1-") + str(
            handler._config.target[1]
        )
        handler.emit(logging.makeLogRecord({"msg": "spooled"}))
        handler.flush()
        assert handler.stats().spooled == 1
        directory = Path(str(handler.spool_directory))
        assert directory.stat().st_mode & 0o777 == 0o700
        assert directory.parent.stat().st_mode & 0o777 == 0o700
    finally:
        handler.close()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    handler = LogServerHandler("127.0.0.1:9020", **FAST)
    try:
        assert str(handler.spool_directory).startswith(f"/tmp/safe_rotating-{os.geteuid()}/")
    finally:
        handler.close()


def test_sender_thread_starts_on_first_emit_and_is_a_daemon(peer: WirePeer, tmp_path: Path) -> None:
    handler = LogServerHandler(peer.address, spool_dir=str(tmp_path))
    try:
        assert handler._sender.thread is None
        handler.emit(logging.makeLogRecord({"msg": "first"}))
        thread = handler._sender.thread
        assert thread is not None
        assert thread.daemon
        handler.flush()
        assert peer.messages() == ["first"]
    finally:
        handler.close()
    assert not thread.is_alive()


def test_interpreter_exit_delivers_what_was_queued(peer: WirePeer, tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from safe_rotating.client import LogServerHandler\n"
        "from safe_rotating.verify import make_line\n"
        "log = logging.getLogger('exit')\n"
        f"log.addHandler(LogServerHandler({peer.address!r}, spool_dir={str(tmp_path)!r}))\n"
        "log.setLevel(logging.INFO)\n"
        "for seq in range(5000):\n"
        "    log.info(make_line(0, seq))\n"
        "sys.exit(0)  # no flush, no close: logging.shutdown at exit does it\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": ROOT}
    )
    assert peer.wait_for(5000, timeout=5)
    assert peer.messages() == [make_line(0, seq) for seq in range(5000)]


def test_sigkilled_client_loses_only_what_it_had_not_sent(
    peer: WirePeer, tmp_path: Path, client: Callable[..., RecordingClient], logger: logging.Logger
) -> None:
    """A client SIGKILLed right after a burst loses only records still in its memory queue;
    what it had sent arrives, what it had spooled is delivered by the next client, once."""
    script = (
        "import logging, os, sys\n"
        "from safe_rotating.client import LogServerHandler\n"
        "from safe_rotating.verify import make_line\n"
        "log = logging.getLogger('killed')\n"
        f"log.addHandler(LogServerHandler({peer.address!r}, spool_dir={str(tmp_path)!r}))\n"
        "log.setLevel(logging.INFO)\n"
        "for seq in range(20000):\n"
        "    log.info(make_line(0, seq))\n"
        "s = log.handlers[0].stats()\n"
        "print(s.acked, s.reconnects, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert done.returncode == -signal.SIGKILL
    acked, reconnects = map(int, done.stdout.split())
    assert reconnects == 0  # a batch sent again after a reconnect would count twice in acked
    handler = client(peer.address, spool_dir=str(tmp_path))
    logger.info(make_line(1, 0))  # a new client on the same spool directory
    assert peer.wait_for(1)
    eventually(
        lambda: not list(tmp_path.rglob("*.spool")), what="the dead spool delivered", timeout=15.0
    )
    handler.flush()
    seqs = writers_of(peer.messages()).get(0, [])
    assert seqs == list(range(len(seqs))), "what arrived arrived in order, once"
    # Just before the kill the server had acknowledged `acked` records: they arrived. The
    # spool it left is delivered whole (no spool file is left above), and since what arrived
    # is a gapless prefix, every spooled record arrived with all the records before it. What
    # may be lost is only the tail still in memory or on its way unacknowledged. (`acked` and
    # `spooled` overlap: a batch sent from memory may be spooled when memory fills and then
    # acknowledged, so their sum is no bound.)
    assert acked > 0, f"the check below had something to check: {done.stdout!r}"
    assert len(seqs) >= acked, f"{len(seqs)} arrived: {done.stdout!r}"


def test_in_a_uwsgi_master_no_thread_runs_and_workers_deliver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> None:
    """Where uWSGI loads the app before forking its workers from C, records go straight to an
    unlocked spool (no sender thread that could hold the GIL at a fork); a worker delivers it."""

    class FakeUwsgi:
        worker = 0

        def worker_id(self) -> int:
            return self.worker

        def mule_id(self) -> int:
            return 0

    fake = FakeUwsgi()
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    spool = tmp_path / "spool"
    with WirePeer().start() as peer:
        master = LogServerHandler(peer.address, spool_dir=str(spool), **FAST)
        for seq in range(20):
            master.emit(logging.makeLogRecord({"msg": make_line(0, seq)}))
        assert master._sender.thread is None
        assert master.stats().spooled == 20
        master.flush()  # nothing to wait for
        assert peer.count() == 0
        fake.worker = 1  # a worker (in real life: forked, pid changed, new sender)
        worker = LogServerHandler(peer.address, spool_dir=str(spool), **FAST)
        logger.addHandler(worker)
        try:
            logger.info(make_line(1, 0))
            assert peer.wait_for(21)
            eventually(
                lambda: not list(spool.rglob("*.spool")), what="the spool delivered", timeout=15.0
            )
            assert peer.messages(master.client_id) == [make_line(0, seq) for seq in range(20)]
        finally:
            logger.removeHandler(worker)
            worker.close()
            master.close()


def test_an_outage_is_reported_once_and_nothing_is_lost(
    client: Callable[..., RecordingClient],
    logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_sender, "_REPORT_OUTAGE_AFTER", 0.3)
    port = free_port()
    handler = client(f"127.0.0.1:{port}")
    for seq in range(100):
        logger.info(make_line(0, seq))
        time.sleep(0.01)  # a second of outage
    eventually(lambda: handler.failures, what="the outage report", timeout=15.0)
    assert len(handler.failures) == 1
    report = handler.failures[0]
    assert isinstance(report, ServerUnavailable)
    assert f"127.0.0.1:{port}" in str(report)
    assert "records wait in the spool" in str(report)
    with WirePeer(port).start() as peer:
        assert peer.wait_for(100)
        assert peer.messages() == [make_line(0, seq) for seq in range(100)]
    assert len(handler.failures) == 1
