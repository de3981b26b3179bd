"""What operators and hosts do to a running handler: nothing on the disk may kill the application,
nothing may be lost silently.

Each test does one hostile thing for real — truncate or delete the lock file under running
processes, fill a (small, real) disk, run two releases' settings side by side, restart a fleet
that rotates at start-up — and then counts every record.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import logging
import multiprocessing
import os
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import RecordsLost, SafeRotatingFileHandler, SafeRotatingWarning
from safe_rotating._engine.locktable import LAYOUT
from safe_rotating.verify import make_line, parse_line, verify
from tests.support import Recording, tmpfs

pytestmark = pytest.mark.multiprocess

SPAWN = multiprocessing.get_context("spawn")


# -- helpers run in child processes ------------------------------------------------------------
def _writer(
    path: str,
    writer: int,
    count: int,
    max_bytes: int,
    backup_count: int,
    go: Any,
    pause_every: int = 0,
) -> None:
    """Build a handler, wait for ``go``, log ``count`` numbered records; exit 3 on any report."""
    handler = Recording(path, maxBytes=max_bytes, backupCount=backup_count)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(f"writer{writer}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    go.wait()
    for seq in range(count):
        log.info(make_line(writer, seq))
        if pause_every and seq % pause_every == 0:
            time.sleep(0.001)
    handler.close()
    if handler.failures:
        sys.stderr.write(f"writer {writer}: {handler.failures!r}\n")
        sys.exit(3)


def _start(path: Path, writers: range, count: int, max_bytes: int, backup_count: int, go: Any,
           pause_every: int = 0) -> list[Any]:  # fmt: skip
    procs = [
        SPAWN.Process(
            target=_writer,
            args=(str(path), w, count, max_bytes, backup_count, go, pause_every),
        )
        for w in writers
    ]
    for proc in procs:
        proc.start()
    return procs


def _join(procs: list[Any]) -> None:
    for proc in procs:
        proc.join(120)
    codes = [proc.exitcode for proc in procs]
    assert codes == [0] * len(procs), f"writer exit codes (-7 is SIGBUS): {codes}"


# -- 1. the lock file truncated or deleted under running writers --------------------------------
def test_truncating_the_lock_file_under_running_writers_kills_nobody(tmp_path: Path) -> None:
    """``truncate -s 0`` on every file in the log directory ("free space") while 8 processes
    write: before, each writer died of SIGBUS at its next record."""
    path, lock = tmp_path / "app.log", tmp_path / ".app.log.lock"
    go = SPAWN.Event()
    procs = _start(path, range(8), 3000, 8192, 100_000, go, pause_every=100)
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    go.set()
    truncations = 0
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
        os.truncate(lock, 0)
        truncations += 1
    _join(procs)
    assert truncations > 3
    verdict = verify(
        str(tmp_path), "app.log", 8, 3000, max_bytes=8192, backup_count=100_000,
        size_allowance=8 * 120,
    )  # fmt: skip
    assert verdict.ok, verdict.summary()


def test_a_lock_file_deleted_under_running_writers_is_followed(tmp_path: Path) -> None:
    """The lock file deleted while 8 processes write, then 8 new processes start: before, the
    two groups locked two different files and 48 % of the records were lost, silently."""
    path, lock = tmp_path / "app.log", tmp_path / ".app.log.lock"
    first_go, second_go = SPAWN.Event(), SPAWN.Event()
    first = _start(path, range(8), 3000, 8192, 100_000, first_go, pause_every=50)
    second = _start(path, range(8, 16), 3000, 8192, 100_000, second_go, pause_every=50)
    first_go.set()
    deadline = time.monotonic() + 60
    while not (tmp_path / "app.log.3").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.remove(lock)
    second_go.set()  # they create a new lock file; the first group must move to it
    _join(first + second)
    verdict = verify(
        str(tmp_path), "app.log", 16, 3000, max_bytes=8192, backup_count=100_000,
        size_allowance=16 * 120,
    )  # fmt: skip
    assert verdict.ok, verdict.summary()
    assert os.stat(lock).st_size >= 64, "everybody ended on the lock file at the path"


def test_a_deleted_log_file_is_recreated_within_a_second(tmp_path: Path, logger: Any) -> None:
    handler = Recording(tmp_path / "app.log", maxBytes=10**6, backupCount=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.info("before")
    os.remove(tmp_path / "app.log")  # an operator "cleaning up"
    time.sleep(1.1)
    logger.info("after")
    # (A record written within the last millisecond before the deletion is written again.)
    assert (tmp_path / "app.log").read_text() in ("after\n", "before\nafter\n")
    assert handler.failures == []


# -- 2. a full disk: real blocks, one report per episode, no torn or glued lines ---------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount tiny tmpfs file systems (root only), each a real file system that fills up."""
    with contextlib.ExitStack() as mounted:
        numbers = itertools.count()

        def mount(size: str) -> Path:
            return mounted.enter_context(tmpfs(tmp_path / f"disk{next(numbers)}", size))

        yield mount


def _fill(directory: Path, name: str = "filler") -> Path:
    """Write until the file system is full."""
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_at_construction_is_an_error_not_a_crash(
    small_disk: Callable[[str], Path],
) -> None:
    disk = small_disk("64k")
    _fill(disk)
    with pytest.raises(OSError, match=r"rotation lock file .*the disk is full") as caught:
        SafeRotatingFileHandler(disk / "app.log", maxBytes=1000, backupCount=3)
    assert caught.value.errno == errno.ENOSPC
    handler = Recording(disk / "app.log", maxBytes=1000, backupCount=3, delay=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for seq in range(50):
        handler.handle(logging.makeLogRecord({"msg": make_line(0, seq)}))
    assert len(handler.failures) == 1, "one report for the whole episode"
    (disk / "filler").unlink()
    handler.handle(logging.makeLogRecord({"msg": make_line(0, 50)}))
    handler.close()
    (lost,) = [f for f in handler.failures if isinstance(f, RecordsLost)]
    assert lost.count == 50
    assert (disk / "app.log").read_text() == make_line(0, 50) + "\n"


def test_a_full_disk_is_reported_once_per_episode_and_rotation_does_not_crash(
    small_disk: Callable[[str], Path], tmp_path: Path
) -> None:
    """Through rotations on a full disk (where a mapped, never-written page used to raise
    SIGBUS), with the stdlib's own ``handleError`` writing to stderr: a few lines, not a flood."""
    disk = small_disk("256k")
    handler = SafeRotatingFileHandler(disk / "app.log", maxBytes=2000, backupCount=1000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("full-disk")
    log.propagate = False
    log.addHandler(handler)
    for seq in range(100):
        log.error(make_line(0, seq))
    filler = _fill(disk)
    stderr = io.StringIO()
    saved, sys.stderr = sys.stderr, stderr
    try:
        for seq in range(100, 2100):
            log.error(make_line(0, seq))
        filler.unlink()
        for seq in range(2100, 2200):
            log.error(make_line(0, seq))
    finally:
        sys.stderr = saved
        handler.close()
    report = stderr.getvalue()
    assert report.count("--- Logging error ---") == 2, report  # the start and the end
    assert "the disk is full" in report
    assert "record(s) could not be written" in report
    assert len(report) < 20_000
    lines = [
        line
        for name in os.listdir(disk)
        if name.startswith("app.log")
        for line in (disk / name).read_bytes().splitlines()
    ]
    found = {parsed[1] for line in lines if (parsed := parse_line(line)) is not None}
    assert set(range(100)) <= found
    assert set(range(2100, 2200)) <= found  # everything after the episode is whole and there


class _ShortDisk:
    """``os.write`` as on a disk that has ``room`` bytes left, then ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.write

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        chunk = bytes(data[: self.room])
        self.room -= len(chunk)
        return self.real(fd, chunk)


def test_a_record_cut_short_by_a_full_disk_is_reported_and_the_next_starts_a_new_line(
    tmp_path: Path, logger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = Recording(tmp_path / "app.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.info(make_line(0, 0))
    disk = _ShortDisk(50)
    monkeypatch.setattr(os, "write", disk)
    logger.info(make_line(0, 1))  # 50 of 120 bytes fit
    logger.info(make_line(0, 2))  # nothing fits
    disk.room = 10**6  # space is freed
    logger.info(make_line(0, 3))
    monkeypatch.undo()
    torn, lost = handler.failures
    assert "A record was cut short: 50 of 120 bytes were written" in str(torn)
    assert "the next record starts on a new line" in str(torn)
    assert isinstance(lost, RecordsLost)
    assert lost.count == 2
    lines = (tmp_path / "app.log").read_bytes().splitlines()
    assert [parse_line(line) for line in lines] == [(0, 0), None, (0, 3)]
    assert lines[1] == make_line(0, 1).encode()[:50]


# -- 3. options and operator mistakes that silently deleted history -----------------------------
def _log_as(uid: int, path: str, queue: Any) -> None:
    os.setgid(uid)
    os.setuid(uid)
    try:
        handler = Recording(path, maxBytes=1000, backupCount=3)
    except Exception as exc:
        queue.put(f"constructor: {exc}")
        return
    handler.setFormatter(logging.Formatter("%(message)s"))
    for seq in range(30):
        handler.handle(logging.makeLogRecord({"msg": make_line(0, seq, 100)}))
    handler.close()
    queue.put([str(f) for f in handler.failures])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_chmod_applies_to_the_lock_file_so_another_user_can_log() -> None:
    old_umask = os.umask(0o022)
    try:
        with tempfile.TemporaryDirectory(dir="/tmp") as name:
            directory = Path(name)
            directory.chmod(0o777)
            path = directory / "app.log"
            handler = SafeRotatingFileHandler(path, maxBytes=1000, backupCount=3, chmod=0o666)
            handler.close()
            assert (path.stat().st_mode & 0o777, (directory / ".app.log.lock").stat().st_mode
                    & 0o777) == (0o666, 0o666)  # fmt: skip
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            child = ctx.Process(target=_log_as, args=(65534, str(path), queue))
            child.start()
            assert queue.get(timeout=30) == []
            child.join(30)
            assert verify(name, "app.log", 1, 30).ok
    finally:
        os.umask(old_umask)


def _rollover_at_start_up(path: str, writer: int, ready: Any, go: Any) -> None:
    handler = SafeRotatingFileHandler(path, maxBytes=10**6, backupCount=5)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ready.put(writer)
    go.wait()
    handler.doRollover()  # "a fresh file per start"
    for seq in range(10):
        handler.handle(logging.makeLogRecord({"msg": make_line(writer, seq)}))
    handler.close()


def test_every_worker_rolling_over_at_start_up_deletes_no_history(tmp_path: Path) -> None:
    """Eight workers each call doRollover() at start-up, backupCount=5, yesterday's file and
    three backups present: before, eight rotations left .1-.5 empty and deleted every old
    record. An empty current file is not rotated, so one rotation happens."""
    old = {"app.log": 100, "app.log.1": 200, "app.log.2": 300, "app.log.3": 400}
    for name, writer in old.items():
        (tmp_path / name).write_text("".join(make_line(writer, s) + "\n" for s in range(5)))
    ready, go = SPAWN.Queue(), SPAWN.Event()
    procs = [
        SPAWN.Process(target=_rollover_at_start_up, args=(str(tmp_path / "app.log"), w, ready, go))
        for w in range(8)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:  # every worker has started (opened its file) before any rolls over
        ready.get(timeout=60)
    go.set()
    _join(procs)
    contents = {
        name: {
            parsed[0]
            for line in (tmp_path / name).read_bytes().splitlines()
            if (parsed := parse_line(line))
        }
        for name in os.listdir(tmp_path)
        if not name.startswith(".")
    }
    assert contents.pop("app.log.1") == {100}
    assert contents.pop("app.log.2") == {200}
    assert contents.pop("app.log.3") == {300}
    assert contents.pop("app.log.4") == {400}
    assert set(contents) == {"app.log"}
    assert verify(str(tmp_path), "app.log", 8, 10, complete=False).lost == 0


def _hold_settings(path: str, ready: Any, done: Any) -> None:
    handler = SafeRotatingFileHandler(path, maxBytes=64 * 1024, backupCount=100)
    ready.set()
    done.wait(60)
    handler.close()


def test_mismatched_settings_warn_and_the_larger_backup_count_wins(
    tmp_path: Path, logger: Any
) -> None:
    """Two processes on one file, 4 KiB/5 and 64 KiB/100: before, the small one deleted all the
    other's backups without a word."""
    path = tmp_path / "app.log"
    ready, done = SPAWN.Event(), SPAWN.Event()
    other = SPAWN.Process(target=_hold_settings, args=(str(path), ready, done))
    other.start()
    try:
        assert ready.wait(60)
        with pytest.warns(SafeRotatingWarning) as warned:
            handler = SafeRotatingFileHandler(path, maxBytes=4096, backupCount=5)
        (message,) = [str(w.message) for w in warned]
        assert f"also written by pid {other.pid} with maxBytes=65536, backupCount=100" in message
        assert f"pid {os.getpid()} uses maxBytes=4096, backupCount=5" in message
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        for seq in range(400):  # ~12 rotations of 4 KiB
            logger.info(make_line(0, seq))
        verdict = verify(str(tmp_path), "app.log", 1, 400, max_bytes=4096, backup_count=100)
        assert verdict.ok, verdict.summary()  # nothing deleted while the other one runs
        assert verdict.files > 6
    finally:
        done.set()
        other.join(60)
    for seq in range(400, 500):  # it has gone: our own backupCount applies again
        logger.info(make_line(0, seq))
    backups = [n for n in os.listdir(tmp_path) if n.startswith("app.log.")]
    assert len(backups) == 5


def test_a_lock_file_of_a_newer_layout_is_reported_and_never_corrupted(
    tmp_path: Path, logger: Any
) -> None:
    """A rolling deploy: a newer release created the lock file with a layout this one does not
    know. It says so once, rotates through the parts every layout shares, writes nothing else."""
    lock = tmp_path / ".app.log.lock"
    tail = bytes(range(256)) * 16
    header = struct.pack("<QQ8sII", 7, 0, b"safe_rot", LAYOUT + 1, 0)
    lock.write_bytes(header + tail[len(header) :])
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        handler = SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=500, backupCount=50)
    assert [str(w.message) for w in warned if "layout" in str(w.message)] != []
    assert f"has layout {LAYOUT + 1}, written by a newer safe_rotating" in str(warned[0].message)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    for seq in range(50):
        logger.info(make_line(0, seq))
    assert verify(str(tmp_path), "app.log", 1, 50, max_bytes=500, backup_count=50).ok
    data = lock.read_bytes()
    assert struct.unpack("<Q", data[:8])[0] > 7, "rotations were announced"
    assert data[16:] == header[16:] + tail[len(header) :], "nothing else was written"


# -- 4. a stuck lock holder holds every other writer up for well under a second ----------------
def _hold_and_stop(lock_path: str, ready: Any) -> None:
    from safe_rotating._engine.lock import SidecarLock

    lock = SidecarLock(lock_path)
    lock.acquire(5.0)
    ready.set()
    os.kill(os.getpid(), 19)  # SIGSTOP, holding the lock
    lock.release()


def _timed_writer(path: str, writer: int, go: Any, queue: Any) -> None:
    handler = Recording(path, maxBytes=2000, backupCount=50)
    handler.setFormatter(logging.Formatter("%(message)s"))
    go.wait()
    longest = 0.0
    for seq in range(100):
        started = time.monotonic()
        handler.handle(logging.makeLogRecord({"msg": make_line(writer, seq)}))
        longest = max(longest, time.monotonic() - started)
        time.sleep(0.002)
    handler.close()
    queue.put((writer, longest, [str(f) for f in handler.failures]))


def test_a_stopped_lock_holder_holds_writers_up_briefly_and_is_named(tmp_path: Path) -> None:
    """SIGSTOP a process holding the lock: before, every writer blocked 10 s at once and the
    report said "for more than 0s". Now each waits at most the default bound once."""
    path = tmp_path / "app.log"
    ready, go = SPAWN.Event(), SPAWN.Event()
    queue = SPAWN.Queue()
    holder = SPAWN.Process(target=_hold_and_stop, args=(str(tmp_path / ".app.log.lock"), ready))
    holder.start()
    writers = [
        SPAWN.Process(target=_timed_writer, args=(str(path), w, go, queue)) for w in range(4)
    ]
    try:
        assert ready.wait(60)
        for proc in writers:
            proc.start()
        time.sleep(1.0)
        go.set()
        results = [queue.get(timeout=120) for _ in writers]
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, 18)  # SIGCONT
        holder.join(30)
        for proc in writers:
            proc.join(30)
    for _writer_id, longest, failures in results:
        assert longest < 1.0, f"an emit waited {longest:.2f}s"
        (report,) = failures
        assert f"pid {holder.pid} (stopped) has held it for" in report
        assert f"resume it (kill -CONT {holder.pid})" in report
        assert "Records keep going to the current file" in report
    verdict = verify(str(tmp_path), "app.log", 4, 100)
    assert (verdict.found, verdict.lost, verdict.torn) == (400, 0, 0), verdict.summary()
