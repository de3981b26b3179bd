"""Numbers from the network are checked: a record's time can neither stop the writer nor time
rotation.

A ``created`` that is not finite, before 2000 or more than an hour ahead of the server's clock is
replaced by the time the record was received; a past time after 2000 is kept. Records go to the
file of the server's clock's period, and the schedule shared through the lock file moves only
by the clock, in server mode and in file mode alike. A schedule that no clock could have set
(left by an older release, or ``inf``/``NaN``) is computed again, not believed forever.
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import SafeTimedRotatingFileHandler
from safe_rotating._net.syslog import format_rfc5424, octet_frame
from safe_rotating.exceptions import SafeRotatingWarning
from safe_rotating.server.writer import EARLIEST, FUTURE, sane_created
from safe_rotating.server.writer import _Formatter as LineFormatter

from .logserver import LogServer, NativeClient, eventually, run_server
from .servers import free_port

YEAR_9999 = 253_402_300_799.0  # 9999-12-31 23:59:59 UTC
_SCHEDULE = struct.Struct("<dQ")  # the lock table at offset 64: next rollover, signature
# The server as it runs where orjson is not installed (it is optional): the standard library's
# json reads 1e400 as inf and NaN as nan, which orjson refuses before the writer sees them.
STDLIB_JSON_SERVER = (
    "import sys, safe_rotating._net.wire as w; w._orjson = None; "
    "from safe_rotating.server.cli import main; sys.exit(main(sys.argv[1:]))"
)
LINE_FORMAT = "%(created).6f %(message)s"


def shared_schedule(log: Path) -> float:
    """The next rollover time the lock table beside ``log`` holds."""
    data = (log.parent / f".{log.name}.lock").read_bytes()
    at: float = _SCHEDULE.unpack_from(data, 64)[0]
    return at


def poison_schedule(log: Path, at: float) -> None:
    """Write ``at`` into the table's schedule, keeping its signature (as an older release did)."""
    lock = log.parent / f".{log.name}.lock"
    with open(lock, "r+b") as f:
        f.seek(64)
        _, signature = _SCHEDULE.unpack(f.read(_SCHEDULE.size))
        f.seek(64)
        f.write(_SCHEDULE.pack(at, signature))


def backups(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("app.log.*") if p.is_file())


# -- the rule itself -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "created",
    [math.inf, -math.inf, math.nan, 10**400, YEAR_9999, 1e308, 0.0, -5.0, EARLIEST - 1, True, "x"],
)
def test_an_unusable_time_becomes_the_time_received(created: Any) -> None:
    received = time.time()
    assert sane_created(created, received) == received
    assert sane_created(None, received) == received


def test_a_plausible_time_is_kept() -> None:
    received = time.time()
    for created in (EARLIEST, received - 3 * 86400, received, received + FUTURE, int(received)):
        assert sane_created(created, received) == float(created)
    assert sane_created(received + FUTURE + 1, received) == received


@pytest.mark.parametrize("created", [1e300, math.inf, math.nan, -1e300])
def test_the_servers_formatter_never_raises_on_a_time(created: float) -> None:
    """Behind ``sane_created``, and should a time ever get past it: ``asctime`` of a time that
    ``time.localtime`` cannot take is written as the number."""
    formatter = LineFormatter("%(asctime)s %(message)s")
    record = logging.makeLogRecord({"msg": "m", "created": created, "msecs": 0.0})
    assert formatter.format(record) == f"{created!r} m"


# -- a real server -------------------------------------------------------------------------------
@contextmanager
def stdlib_json_server(directory: Path, *args: str) -> Iterator[LogServer]:
    """``run_server``, but reading native frames with the standard library's json."""
    port, metrics = free_port(), free_port()
    err = directory / f"server-{port}.err"
    command = [
        sys.executable,
        "-c",
        STDLIB_JSON_SERVER,
        "--file",
        str(directory / "app.log"),
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--listen",
        f"127.0.0.1:{port}",
        *args,
    ]
    with open(err, "wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr, stdin=subprocess.DEVNULL)
    server = LogServer(process, directory, port, metrics, err)
    try:
        eventually(
            lambda: "listening on" in server.stderr or process.poll() is not None,
            20,
            "the server to start",
        )
        assert process.poll() is None, server.stderr
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(15)


def native_raw(client: NativeClient, seq: int, created_json: str, message: str) -> None:
    """A batch whose ``created`` is this JSON text (1e400, NaN: not what json.dumps makes)."""
    body = (
        f'{{"v":1,"type":"batch","seq":{seq},"records":[{{"created":{created_json},'
        f'"name":"tests.numbers","levelno":20,"levelname":"INFO","msg":"{message}"}}]}}'
    )
    client.send_raw(body.encode())


def native(client: NativeClient, seq: int, created: float, message: str) -> None:
    record = {"created": created, "name": "tests.numbers", "levelno": 20, "msg": message}
    client.send({"type": "batch", "seq": seq, "records": [record]})


def stock_pickle(server: LogServer, created: float, message: str) -> None:
    handler = logging.handlers.SocketHandler("127.0.0.1", server.port)
    try:
        handler.emit(logging.makeLogRecord({"msg": message, "created": created, "levelno": 20}))
    finally:
        handler.close()


def syslog_tcp(port: int, created: float, message: str) -> None:
    record = {"created": created, "name": "numbers", "levelno": 20, "msg": message, "host": "h"}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(octet_frame(format_rfc5424(record)))


def written_created(server: LogServer, message: str) -> float:
    """The ``created`` the server wrote in the line of ``message`` (LINE_FORMAT), in whichever
    file of the set it is by now (the set rotates every second)."""

    def line() -> str | None:
        for path in [server.file, *backups(server.directory)]:
            for text in path.read_text().splitlines() if path.exists() else []:
                if text.endswith(" " + message):
                    return text
        return None

    found: str = eventually(line, 2.0, f"{message!r} written")
    return float(found.split(" ", 1)[0])


def assert_still_rotating(server: LogServer) -> None:
    """A good record lands within 2 s, and once the clock passes a boundary (--when S) the next
    record starts a new file: the schedule was not moved by any record's claim."""
    assert server.process.poll() is None, server.stderr
    server.send_stock("good before")
    server.assert_lands("good before", timeout=2.0)
    assert shared_schedule(server.file) <= time.time() + 2
    time.sleep(1.2)
    server.send_stock("good after")
    server.assert_lands("good after", timeout=2.0)
    eventually(lambda: "good before" not in server.text(), 2.0, "the first record rotated out")
    assert any("good before" in p.read_text() for p in backups(server.directory))
    assert shared_schedule(server.file) <= time.time() + 2


@pytest.mark.multiprocess
def test_infinite_nan_and_huge_times_neither_kill_the_writer_nor_stop_rotation(
    tmp_path: Path,
) -> None:
    syslog = free_port()
    args = ("--when", "S", "--format", LINE_FORMAT, "--syslog-tcp", f"127.0.0.1:{syslog}")
    with stdlib_json_server(tmp_path, *args) as server:
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("n" * 32)
        sent = time.time()
        for seq, created in enumerate(("1e400", "NaN", "-Infinity", "1" + "0" * 400), 1):
            native_raw(client, seq, created, f"poison {seq}")
            client.acked(seq)
        native(client, 5, YEAR_9999, "poison 5")
        client.acked(5)
        two_days_ago = time.time() - 2 * 86400
        native(client, 6, two_days_ago, "from the spool")
        client.acked(6)
        stock_pickle(server, YEAR_9999, "poison pickle")
        syslog_tcp(syslog, YEAR_9999, "poison syslog")
        for message in [f"poison {seq}" for seq in range(1, 6)] + ["poison pickle"]:
            assert sent - 1 <= written_created(server, message) <= time.time() + 1, message
        assert sent - 1 <= written_created(server, "poison syslog") <= time.time() + 1
        # A past time is the record's own: kept in its line, written to the current file.
        assert written_created(server, "from the spool") == pytest.approx(two_days_ago, abs=1e-5)
        assert_still_rotating(server)
        client.close()
    assert server.process.returncode == 0, server.stderr


@pytest.mark.multiprocess
def test_a_record_dated_9999_does_not_move_the_shared_schedule(tmp_path: Path) -> None:
    """With the default decoder (orjson where installed), over each input without a token."""
    syslog = free_port()
    args = ("--when", "S", "--format", LINE_FORMAT, "--syslog-tcp", f"127.0.0.1:{syslog}")
    with run_server(tmp_path, *args) as server:
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("m" * 32)
        native(client, 1, YEAR_9999, "native 9999")
        client.acked(1)
        syslog_tcp(syslog, YEAR_9999, "syslog 9999")
        stock_pickle(server, YEAR_9999, "pickle 9999")
        for message in ("native 9999", "syslog 9999", "pickle 9999"):
            assert written_created(server, message) <= time.time() + 1
        assert_still_rotating(server)
        client.close()
        assert server.stop() == 0


# -- file mode -----------------------------------------------------------------------------------
def timed_handler(path: Path) -> SafeTimedRotatingFileHandler:
    handler = SafeTimedRotatingFileHandler(path, when="S")
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def emit(handler: logging.Handler, message: str, created: float | None = None) -> None:
    fields: dict[str, Any] = {"msg": message, "levelno": 20}
    if created is not None:
        fields["created"] = created
    handler.handle(logging.makeLogRecord(fields))


def start_of_a_second() -> None:
    """Sleep until just after a whole second: --when S boundaries, so a test has 0.9 s ahead."""
    time.sleep(1.02 - time.time() % 1)


def test_a_file_mode_record_dated_9999_does_not_move_the_shared_schedule(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    start_of_a_second()
    handler = timed_handler(log)
    try:
        emit(handler, "first")
        emit(handler, "dated 9999", YEAR_9999)
        assert shared_schedule(log) <= time.time() + 2  # by the clock: within a second
        assert backups(tmp_path) == []  # and it did not rotate before the boundary either
        time.sleep(max(0.0, shared_schedule(log) - time.time()) + 0.05)
        emit(handler, "next period")
    finally:
        handler.close()
    assert log.read_text() == "next period\n"
    assert [p.read_text() for p in backups(tmp_path)] == ["first\ndated 9999\n"]


def test_should_rollover_agrees_that_a_record_dated_9999_is_written_now(tmp_path: Path) -> None:
    """``shouldRollover`` (called by logging tools, and by subclasses) says what ``emit`` does:
    a record dated after the clock belongs to the current period."""
    start_of_a_second()
    handler = SafeTimedRotatingFileHandler(tmp_path / "app.log", when="S")
    try:
        emit(handler, "opens the file and the schedule")
        future = logging.makeLogRecord({"msg": "x", "created": YEAR_9999})
        assert not handler.shouldRollover(future)
        time.sleep(max(0.0, handler.rolloverAt - time.time()) + 0.05)
        assert handler.shouldRollover(logging.makeLogRecord({"msg": "now due"}))
    finally:
        handler.close()


@pytest.mark.parametrize("bogus", [YEAR_9999 + 1, math.inf, math.nan])
def test_a_poisoned_schedule_in_the_lock_table_is_computed_again(
    tmp_path: Path, bogus: float
) -> None:
    """An older release let a record's time set the shared schedule: a table saying 9999 (or
    holding inf, NaN) is recognised when a handler starts, and rotation resumes."""
    log = tmp_path / "app.log"
    handler = timed_handler(log)
    emit(handler, "old period")
    handler.close()
    poison_schedule(log, bogus)
    past = time.time() - 10
    os.utime(log, (past, past))  # the file is from an earlier period
    with pytest.warns(SafeRotatingWarning, match="which no clock reaches"):
        handler = timed_handler(log)
    try:
        emit(handler, "this period")
        assert shared_schedule(log) <= time.time() + 2
    finally:
        handler.close()
    assert log.read_text() == "this period\n"
    assert [p.read_text() for p in backups(tmp_path)] == ["old period\n"]


def keep_writing_until_rotated(handler: logging.Handler, directory: Path, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not backups(directory) and time.monotonic() < deadline:
        emit(handler, "during")
        time.sleep(0.05)
    return bool(backups(directory))


def test_a_schedule_poisoned_under_a_running_handler_is_computed_again(tmp_path: Path) -> None:
    """The table is read again under the lock when a boundary comes: a running handler finds
    the bad value there, computes the schedule again, and rotates from then on."""
    log = tmp_path / "app.log"
    handler = timed_handler(log)
    try:
        emit(handler, "before")
        poison_schedule(log, YEAR_9999)
        with pytest.warns(SafeRotatingWarning, match="which no clock reaches"):
            rotated = keep_writing_until_rotated(handler, tmp_path, 4.0)
        assert rotated, "no rotation after the table was poisoned"
        assert shared_schedule(log) <= time.time() + 2
    finally:
        handler.close()
