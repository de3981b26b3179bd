"""Compression and retention, done after the rotation and outside the writers' path."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import SafeRotatingFileHandler, SafeTimedRotatingFileHandler
from safe_rotating._engine.compress import Compression, parse_compression
from safe_rotating._engine.janitor import compression as _compression
from safe_rotating._engine.janitor import runner as _runner
from safe_rotating._engine.janitor import steps as _steps
from safe_rotating._engine.logfile import LogFile
from safe_rotating.verify import make_line, ordered_files, verify

RECORD = 100


def engine(tmp_path: Path, kind: str = "gzip", grace: float = 0.05, **kwargs: Any) -> LogFile:
    return LogFile(
        str(tmp_path / "app.log"),
        max_bytes=kwargs.pop("max_bytes", 1000),
        backup_count=kwargs.pop("backup_count", 100),
        compression=Compression(kind, 1, grace=grace),
        **kwargs,
    )


def write(log: LogFile, writer: int, count: int) -> None:
    for seq in range(count):
        log.append((make_line(writer, seq, RECORD) + "\n").encode())


def settle(log: LogFile) -> None:
    """Wait out the grace period, then run the janitor's pass here, to completion."""
    time.sleep(0.1)
    janitor = log._janitor
    assert janitor is not None
    while janitor.run() is None:  # the background thread is at work: let it finish
        time.sleep(0.01)
    janitor.run()


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_backups_are_compressed_and_read_back(tmp_path: Path, kind: str) -> None:
    log = engine(tmp_path, kind)
    write(log, 0, 95)
    settle(log)
    log.close()
    files = ordered_files(str(tmp_path), "app.log")
    suffix = ".gz" if kind == "gzip" else ".zst"
    assert files[:-1]
    assert all(name.endswith(suffix) for name in files[:-1]), files
    assert not [p for p in os.listdir(tmp_path) if ".compressing." in p]
    verdict = verify(str(tmp_path), "app.log", 1, 95, max_bytes=1000, backup_count=100)
    assert verdict.ok, verdict.summary()
    assert verdict.compressed == len(files) - 1


def test_use_gzip_is_an_alias_and_bad_values_are_named(tmp_path: Path) -> None:
    handler = SafeRotatingFileHandler(tmp_path / "a.log", maxBytes=10, backupCount=2, use_gzip=True)
    assert handler.compress == "gzip"
    handler.close()
    assert parse_compression("zstd") == Compression("zstd", 3)
    with pytest.raises(ValueError, match="'gzip' or 'zstd'"):
        parse_compression("lzma")
    with pytest.raises(ValueError, match="use_gzip=True asks for gzip"):
        parse_compression("zstd", use_gzip=True)


def test_a_failed_compression_keeps_the_plain_file_and_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(source: int, dest: int, compression: Compression) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_compression, "compress_fd", full_disk)
    warnings: list[str] = []
    log = engine(tmp_path, warn=warnings.append)
    write(log, 0, 50)
    settle(log)
    log.close()
    files = ordered_files(str(tmp_path), "app.log")
    assert len(files) > 3
    assert not any(name.endswith(".gz") for name in files)
    assert not [p for p in os.listdir(tmp_path) if ".compressing." in p]
    reports = [w for w in warnings if "could not compress" in w]
    assert len(reports) == 1, warnings
    assert "No space left on device" in reports[0]
    assert "kept uncompressed" in reports[0]


def _die_at(path: str, step: str) -> None:
    def hook(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    _steps.STEP_HOOK = hook
    log = LogFile(
        path, max_bytes=1000, backup_count=100, compression=Compression("gzip", 1, grace=0.0)
    )
    log.open()  # wakes a background pass; whichever thread runs it meets the hook
    assert log._janitor is not None
    while log._janitor.run() is None:
        time.sleep(0.01)


@pytest.mark.multiprocess
@pytest.mark.parametrize("step", ["compress:writing", "compress:written", "compress:published"])
def test_a_janitor_killed_at_any_step_leaves_nothing_half_done(tmp_path: Path, step: str) -> None:
    log = engine(tmp_path, grace=3600)
    write(log, 0, 60)  # six backups, none compressed yet (the grace period has not passed)
    log.close()
    child = multiprocessing.get_context("spawn").Process(
        target=_die_at, args=(str(tmp_path / "app.log"), step)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    log = engine(tmp_path)
    log.open()
    settle(log)
    log.close()
    entries = os.listdir(tmp_path)
    assert not [p for p in entries if ".compressing." in p], entries
    files = ordered_files(str(tmp_path), "app.log")
    assert all(name.endswith(".gz") for name in files[:-1]), files
    verdict = verify(str(tmp_path), "app.log", 1, 60, max_bytes=1000, backup_count=100)
    assert verdict.ok, verdict.summary()


def test_max_age_and_max_total_bytes_delete_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    old = time.time() - 3 * 86400
    for n in range(1, 6):
        (tmp_path / f"app.log.{n}").write_text("x" * 100 + "\n")
        os.utime(tmp_path / f"app.log.{n}", (old + n, old - n * 60))  # .5 the oldest
    os.utime(tmp_path / "app.log.1", None)  # .1 written just now
    handler = SafeRotatingFileHandler(path, maxBytes=1000, backupCount=10, max_age="2d")
    handler.close()
    assert sorted(os.listdir(tmp_path)) == [
        ".app.log.janitor",
        ".app.log.lock",
        "app.log",
        "app.log.1",
    ]

    for n in range(2, 6):
        (tmp_path / f"app.log.{n}").write_text("x" * 100 + "\n")
    handler = SafeRotatingFileHandler(path, maxBytes=1000, backupCount=10, max_total_bytes=250)
    handler.close()
    assert sorted(p for p in os.listdir(tmp_path) if not p.startswith(".")) == [
        "app.log",
        "app.log.1",
        "app.log.2",
    ]


def test_retention_never_deletes_the_current_file(tmp_path: Path) -> None:
    handler = SafeTimedRotatingFileHandler(tmp_path / "app.log", when="S", max_total_bytes=1)
    handler.emit(__import__("logging").makeLogRecord({"msg": "x" * 50}))
    handler.close()
    assert (tmp_path / "app.log").stat().st_size == 51


def test_writers_never_wait_for_the_janitor(tmp_path: Path) -> None:
    """A janitor pass holding the janitor lock does not slow a rotation down."""
    log = engine(tmp_path, max_bytes=2000)
    janitor = log._janitor
    assert janitor is not None
    blocker = _runner._mutex(janitor._janitor_path)
    blocker.acquire()  # as if this process's janitor were compressing a huge file
    try:
        worst = 0.0
        for seq in range(200):
            started = time.perf_counter()
            log.append((make_line(0, seq, RECORD) + "\n").encode())
            worst = max(worst, time.perf_counter() - started)
    finally:
        blocker.release()
    log.close()
    # A writer that waited for the janitor would wait as long as the blocker is held (for
    # ever here): any bound far above a rotation's cost tells the two apart.
    assert worst < 1.0, f"a rotation waited {worst:.3f} s"


def test_compression_levels_are_the_fast_ones() -> None:
    """Backups are compressed beside the writers, on their CPUs: gzip level 1, zstd level 3."""
    assert parse_compression("gzip") == Compression("gzip", 1)
    assert parse_compression("zstd") == Compression("zstd", 3)
    assert parse_compression(None, use_gzip=True) == Compression("gzip", 1)


def _die_at_retention(path: str, timed: bool) -> None:
    """Open a handler whose retention has old backups to delete; SIGKILL at the first one."""

    def hook(name: str) -> None:
        if name == "retention:remove":
            os.kill(os.getpid(), signal.SIGKILL)

    _steps.STEP_HOOK = hook
    if timed:
        SafeTimedRotatingFileHandler(path, when="D", max_age="2d").close()
    else:
        SafeRotatingFileHandler(path, maxBytes=1000, backupCount=10, max_age="2d").close()


def _old_backups(directory: Path, timed: bool) -> list[str]:
    """Five backups 3 to 7 days old and one written now, oldest last in stdlib order."""
    now = time.time()
    names = []
    for n in range(1, 7):
        age = 0 if n == 1 else (n + 1) * 86400
        if timed:
            name = "app.log." + time.strftime("%Y-%m-%d", time.localtime(now - n * 86400))
        else:
            name = f"app.log.{n}"
        (directory / name).write_text(make_line(0, 6 - n) + "\n")
        os.utime(directory / name, (now - age, now - age))
        names.append(name)
    return names


@pytest.mark.multiprocess
@pytest.mark.parametrize("timed", [False, True], ids=["size-named", "time-named"])
def test_retention_killed_mid_way_is_finished_by_the_next_process(
    tmp_path: Path, timed: bool
) -> None:
    names = _old_backups(tmp_path, timed)
    path = str(tmp_path / "app.log")
    child = multiprocessing.get_context("spawn").Process(
        target=_die_at_retention, args=(path, timed)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL, "the hook must have fired"
    if timed:
        SafeTimedRotatingFileHandler(path, when="D", max_age="2d").close()
    else:
        SafeRotatingFileHandler(path, maxBytes=1000, backupCount=10, max_age="2d").close()
    left = sorted(p for p in os.listdir(tmp_path) if not p.startswith("."))
    assert left == sorted(["app.log", names[0]])  # the recent backup, nothing half done
    assert (tmp_path / names[0]).read_text() == make_line(0, 5) + "\n"
