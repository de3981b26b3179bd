"""LogServerHandler and safe-rotating-server together: every record once, through restarts."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line, verify

from .logserver import LogServer, eventually, run_server, start_server

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.end_to_end")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def written(server: LogServer) -> float:
    return server.metrics().get("records_written_total", 0.0)


def test_every_record_once_over_a_unix_socket_with_a_token(
    tmp_path: Path, logger: logging.Logger
) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    sock = tmp_path / "log.sock"
    args = ["--listen", f"unix:{sock}", "--token-file", str(token), "--format", "%(message)s"]
    with run_server(tmp_path, *args, listen=False) as server:
        handler = LogServerHandler(f"unix:{sock}", token="t0ken", spool_dir=tmp_path / "spool")
        logger.addHandler(handler)
        for n in range(5000):
            logger.info(make_line(0, n, 100))
        logger.removeHandler(handler)
        handler.close()
        eventually(lambda: written(server) == 5000, 5, "5000 records written")
        assert server.metrics()["duplicate_batches_suppressed_total"] == 0
    verdict = verify(str(tmp_path), "app.log", 1, 5000)
    assert verdict.ok, verdict.summary()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_server_restarts_while_the_client_logs(
    tmp_path: Path, logger: logging.Logger, stop: signal.Signals
) -> None:
    """The client keeps logging while the server stops and starts again on the same port.

    After SIGTERM nothing may be lost or written twice. After SIGKILL nothing may be lost, and
    at most the batch that was written but not yet in the journal may be written twice.
    """
    args = ["--format", "%(message)s", "--max-bytes", "64KiB", "--backup-count", "1000"]
    server = start_server(tmp_path, *args)
    port = server.port
    handler = LogServerHandler(
        f"127.0.0.1:{port}", spool_dir=tmp_path / "spool", flush_timeout=30, batch_size=64
    )
    logger.addHandler(handler)
    total = 6000
    halfway = threading.Event()

    def emit() -> None:
        for n in range(total):
            logger.info(make_line(0, n, 100))
            if n == total // 3:
                halfway.set()
            if n % 20 == 0:
                time.sleep(0.005)  # about 1.5 s of logging, across the restart

    sender = threading.Thread(target=emit)
    sender.start()
    try:
        assert halfway.wait(30)
        server.signal(stop)
        server.process.wait(15)
        server = start_server(tmp_path, *args, port=port)
        sender.join(60)
        logger.removeHandler(handler)
        handler.close()
        # Anything close() could not deliver in time is in the spool: the next handler on the
        # same spool directory replays it.
        replay = LogServerHandler(f"127.0.0.1:{port}", spool_dir=tmp_path / "spool")
        replay.close()
        eventually(lambda: written(server) > 0, 10, "records after the restart")
        assert server.stop() == 0
    finally:
        sender.join(60)
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    verdict = verify(str(tmp_path), "app.log", 1, total, max_bytes=64 * 1024, size_allowance=20000)
    assert verdict.lost == 0, verdict.summary()
    # SIGKILL during a write that spans pages can leave that write cut short: one partial line.
    assert verdict.torn <= (1 if stop == signal.SIGKILL else 0), verdict.summary()
    assert verdict.order_breaks == 0, verdict.summary()
    if stop == signal.SIGTERM:
        assert verdict.duplicated == 0, verdict.summary()
    else:
        assert verdict.duplicated <= 64, verdict.summary()
