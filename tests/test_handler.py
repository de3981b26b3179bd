"""SafeRotatingFileHandler in one process: stdlib semantics, size rule, hooks, errors."""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import RecordsLost, SafeRotatingFileHandler
from safe_rotating.verify import make_line, verify
from tests.support import Recording

ROOT = str(Path(__file__).resolve().parent.parent)


def attach(logger: logging.Logger, handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return handler


def files(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir() if not p.name.startswith(".")}


def test_stdlib_naming_and_every_file_within_max_bytes(tmp_path: Path, logger: Any) -> None:
    """More than 16 backups: rotations stage the file and renumbering runs in the background
    (reading the set meanwhile races with it); at close the names are the stdlib's."""
    handler = attach(
        logger, SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=1000, backupCount=50)
    )
    for seq in range(300):
        logger.info(make_line(0, seq, 60 + seq % 40))
    handler.close()
    sizes = files(tmp_path)
    assert set(sizes) == {"app.log"} | {f"app.log.{n}" for n in range(1, len(sizes))}
    assert max(sizes.values()) <= 1000, "one writer never pushes a file past maxBytes"
    assert min(size for name, size in sizes.items() if name != "app.log") > 1000 - 100
    assert verify(str(tmp_path), "app.log", 1, 300).ok


def test_backup_count_limits_files_and_drops_only_the_oldest(tmp_path: Path, logger: Any) -> None:
    attach(logger, SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=500, backupCount=3))
    for seq in range(205):
        logger.info(make_line(0, seq, 50))
    assert sorted(files(tmp_path)) == ["app.log", "app.log.1", "app.log.2", "app.log.3"]
    verdict = verify(
        str(tmp_path), "app.log", 1, 205, max_bytes=500, backup_count=3, complete=False
    )
    assert verdict.ok, verdict.summary()
    assert verdict.found == 35  # 3 full backups of 10 lines and 5 in the current file


def test_a_record_larger_than_max_bytes_lives_alone_in_its_own_file(
    tmp_path: Path, logger: Any
) -> None:
    attach(logger, SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=200, backupCount=5))
    logger.info(make_line(0, 0, 50))
    logger.info(make_line(0, 1, 1000))
    logger.info(make_line(0, 2, 50))
    assert files(tmp_path) == {"app.log.2": 50, "app.log.1": 1000, "app.log": 50}


@pytest.mark.parametrize(("max_bytes", "backup_count"), [(0, 5), (100, 0)])
def test_zero_means_never_rotate(
    tmp_path: Path, logger: Any, max_bytes: int, backup_count: int
) -> None:
    attach(
        logger,
        SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=max_bytes, backupCount=backup_count),
    )
    for seq in range(100):
        logger.info(make_line(0, seq, 50))
    assert files(tmp_path) == {"app.log": 5000}


def test_appends_to_an_existing_file_and_counts_its_size(tmp_path: Path, logger: Any) -> None:
    (tmp_path / "app.log").write_bytes(b"old line\n" * 100)  # 900 bytes
    attach(logger, SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=1000, backupCount=2))
    logger.info(make_line(0, 0, 150))
    assert files(tmp_path) == {"app.log.1": 900, "app.log": 150}


def test_namer_and_rotator_are_honoured(tmp_path: Path, logger: Any) -> None:
    handler = SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=100, backupCount=3)
    rotated: list[tuple[str, str]] = []

    def rotator(source: str, dest: str) -> None:
        rotated.append((os.path.basename(source), os.path.basename(dest)))
        os.rename(source, dest)

    handler.namer = lambda name: name.replace("app.log.", "app-") + ".log"
    handler.rotator = rotator
    attach(logger, handler)
    for seq in range(6):
        logger.info(make_line(0, seq, 60))
    assert sorted(files(tmp_path)) == ["app-1.log", "app-2.log", "app-3.log", "app.log"]
    assert rotated == [("app.log", "app-1.log")] * 5


def test_do_rollover_rotates_now_and_should_rollover_reads_the_real_file(
    tmp_path: Path, logger: Any
) -> None:
    handler = attach(
        logger, SafeRotatingFileHandler(tmp_path / "a.log", maxBytes=100, backupCount=2)
    )
    assert isinstance(handler, SafeRotatingFileHandler)
    logger.info("x" * 40)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "y" * 70, None, None)
    assert handler.shouldRollover(record)
    handler.doRollover()
    assert files(tmp_path) == {"a.log.1": 41, "a.log": 0}
    assert not handler.shouldRollover(record)


def test_another_handlers_rotation_is_followed(tmp_path: Path, logger: Any) -> None:
    """Two handler objects on one file in one process: the second notices the first's rotation
    (through the shared generation) and writes into the new file, not the renamed one."""
    first = attach(
        logger, SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=10**6, backupCount=3)
    )
    other = logging.getLogger(f"{logger.name}.other")
    other.propagate = False
    second = attach(
        other, SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=10**6, backupCount=3)
    )
    try:
        logger.info("one")
        other.info("two")
        assert isinstance(second, SafeRotatingFileHandler)
        second.doRollover()
        time.sleep(0.01)  # a writer idle for more than a millisecond checks before writing
        logger.info("three")
        assert (tmp_path / "app.log.1").read_text() == "one\ntwo\n"
        assert (tmp_path / "app.log").read_text() == "three\n"
        second.doRollover()
        logger.info("four")  # at once: may still land in the just-rotated file ...
        time.sleep(0.01)
        logger.info("five")  # ... but not after a millisecond
        assert (tmp_path / "app.log.1").read_text() in ("three\nfour\n", "three\n")
        assert (tmp_path / "app.log").read_text() in ("five\n", "four\nfive\n")
    finally:
        other.removeHandler(second)
        second.close()
    assert first is not second


def test_a_record_in_flight_into_a_removed_file_is_written_again(
    tmp_path: Path, logger: Any
) -> None:
    """A writer stalled between its generation check and its write while other writers rotate
    the file away and delete it (backupCount exceeded) must not lose that record."""
    path = tmp_path / "app.log"
    rotator = SafeRotatingFileHandler(path, maxBytes=10**6, backupCount=1)

    stalled = SafeRotatingFileHandler(path, maxBytes=10**6, backupCount=1)
    engine = stalled._file._current
    write_all = engine._write_all
    stall = [True]

    def stalling_write(fd: int, data: bytes) -> None:
        if stall.pop() if stall else False:  # the file this fd points to is rotated twice
            rotator.emit(logging.makeLogRecord({"msg": "first"}))
            rotator.doRollover()
            rotator.emit(logging.makeLogRecord({"msg": "between"}))
            rotator.doRollover()  # ... and so removed (backupCount=1)
        write_all(fd, data)

    engine._write_all = stalling_write  # type: ignore[method-assign]
    attach(logger, stalled)
    try:
        logger.info("early")
        logger.info("next")  # within a millisecond: into the removed file as well ...
        stalled.flush()  # ... until the next check (at most 1 ms later, or flush/close)
    finally:
        rotator.close()
    assert path.read_text() == "early\nnext\n"
    assert (tmp_path / "app.log.1").read_text() == "between\n"


def test_records_that_expired_with_their_file_are_not_written_again(
    tmp_path: Path, logger: Any
) -> None:
    """A record written *before* other writers rotated its file out of the set went with that
    file, as retention means: it is not written again. (Writing such records again is what let
    eight overloaded processes push a file far past maxBytes at once.)"""
    path = tmp_path / "app.log"
    rotator = SafeRotatingFileHandler(path, maxBytes=10**6, backupCount=1)
    writer = SafeRotatingFileHandler(path, maxBytes=10**6, backupCount=1)
    attach(logger, writer)
    try:
        logger.info("early")
        rotator.emit(logging.makeLogRecord({"msg": "first"}))
        rotator.doRollover()
        time.sleep(0.02)  # the file's last write is clearly older than its removal
        rotator.emit(logging.makeLogRecord({"msg": "between"}))
        rotator.doRollover()  # the file of "early" and "first" is removed (backupCount=1)
        logger.info("later")
    finally:
        rotator.close()
    assert path.read_text() == "later\n"
    assert (tmp_path / "app.log.1").read_text() == "between\n"


def test_an_interrupted_rotation_is_completed(tmp_path: Path, logger: Any) -> None:
    """State left by a process killed after renaming .1 to .2 but before moving the current
    file: the next rotation fills the gap instead of overwriting or skipping."""
    (tmp_path / "app.log.3").write_text("oldest\n")
    (tmp_path / "app.log.2").write_text("older\n")  # .1 was just moved here
    (tmp_path / "app.log").write_text("x" * 97 + "\n")
    attach(logger, SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=100, backupCount=5))
    logger.info("new")
    assert {n: (tmp_path / n).read_text() for n in files(tmp_path)} == {
        "app.log.3": "oldest\n",
        "app.log.2": "older\n",
        "app.log.1": "x" * 97 + "\n",
        "app.log": "new\n",
    }


def test_dict_config_builds_the_handler_by_class_path(tmp_path: Path) -> None:
    """A Django-style LOGGING dict, as settings.py would hold it."""
    logging_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "safe_rotating.SafeRotatingFileHandler",
                "filename": str(tmp_path / "site.log"),
                "maxBytes": 10 * 1024 * 1024,
                "backupCount": 20,
                "encoding": "utf-8",
                "lock_timeout": 5,
                "formatter": "plain",
            }
        },
        "loggers": {"mysite": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }
    logging.config.dictConfig(logging_dict)
    log = logging.getLogger("mysite")
    try:
        (handler,) = log.handlers
        assert isinstance(handler, SafeRotatingFileHandler)
        assert (handler.maxBytes, handler.backupCount, handler.lock_timeout) == (10485760, 20, 5)
        log.info("héllo")
        assert (tmp_path / "site.log").read_text(encoding="utf-8") == "INFO mysite héllo\n"
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()


# -- failures go through handleError, with a message a person can act on; the next record
#    tries again ---------------------------------------------------------------------------------


def test_missing_directory_at_write_time(tmp_path: Path, logger: Any) -> None:
    folder = tmp_path / "later"
    handler = attach(
        logger, Recording(folder / "app.log", delay=True, lock_file_directory=tmp_path)
    )
    assert isinstance(handler, Recording)
    logger.info("lost: the directory is missing")
    (failure,) = handler.failures
    assert isinstance(failure, FileNotFoundError)
    assert f"the directory '{folder}' does not exist" in str(failure)
    logger.info("lost too, and counted instead of reported again")
    assert len(handler.failures) == 1
    folder.mkdir()
    logger.info("written")
    assert (folder / "app.log").read_text() == "written\n"
    recovered = handler.failures[1]
    assert isinstance(recovered, RecordsLost)
    assert recovered.count == 2
    assert f"writing to '{folder / 'app.log'}' works again; 2 record(s)" in str(recovered)
    assert len(handler.failures) == 2


def test_missing_directory_at_construction_raises_like_the_stdlib(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; create it or fix the path"):
        SafeRotatingFileHandler(tmp_path / "nope" / "app.log", lock_file_directory=tmp_path)
    log = tmp_path / "nope" / "app.log"
    with pytest.raises(FileNotFoundError) as caught:  # the lock file is opened first ...
        SafeRotatingFileHandler(log)
    message = str(caught.value)  # ... and the message names the log the user configured
    assert f"cannot open the rotation lock file of '{log}', '{log.parent / '.app.log.lock'}'" in (
        message
    )
    assert f"the directory '{log.parent}' does not exist" in message


def test_disk_full(tmp_path: Path, logger: Any) -> None:
    handler = attach(logger, Recording("/dev/full", lock_file_directory=tmp_path))
    assert isinstance(handler, Recording)
    logger.info("no room")
    (failure,) = handler.failures
    assert isinstance(failure, OSError)
    assert "cannot write to '/dev/full': the disk is full" in str(failure)


_TO_STDOUT = """
import ast, logging, sys
from safe_rotating import SafeRotatingFileHandler
options = ast.literal_eval(sys.argv[2])
made = SafeRotatingFileHandler("/dev/stdout", lock_file_directory=sys.argv[1], **options)
made.setFormatter(logging.Formatter("%(message)s"))
made.handle(logging.makeLogRecord({"msg": "one"}))
made.flush()
made.doRollover()  # backupCount=0: opens the path again, as after a lock file was re-created
made.handle(logging.makeLogRecord({"msg": "two"}))
made.close()
"""


@pytest.mark.parametrize("options", [{}, {"chmod": 0o660}, {"enqueue": True}])
def test_dev_stdout_as_a_pipe_is_written_to_as_with_the_stdlib(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """``/dev/stdout`` is a root-owned link to ``/proc/self/fd/1``, which names the pipe
    ``pipe:[…]``. Before: the first open resolved the link and tried to create that name, so
    the constructor raised where the stdlib (and the previous release) wrote; and every write
    then reported "Illegal seek" (a pipe has no position). Now the pipe is opened through the
    link, written to, and opened again the same way; nothing goes to handleError."""
    done = subprocess.run(
        [sys.executable, "-c", _TO_STDOUT, str(tmp_path), repr(options)],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ROOT},
        check=False,
    )
    assert done.stderr.decode() == ""
    assert done.returncode == 0
    assert done.stdout == b"one\ntwo\n"


def _run_into(stdout: int, directory: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", _TO_STDOUT, str(directory), "{}"],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ROOT},
        check=False,
    )


def _read_until_closed(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # a terminal whose other side is closed: EIO
            break
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_dev_stdout_owned_by_another_user_is_written_to(tmp_path: Path) -> None:
    """Under ``sudo`` the terminal belongs to the user who ran it, and a shell may redirect
    stdout into a named pipe of someone else's: ``/dev/stdout`` leads there through
    ``/proc/self/fd/1``, a file this process already has open, so it is opened whoever owns it
    (the links on the way are still checked)."""
    master, terminal = os.openpty()
    os.chown(os.ttyname(terminal), 65534, 65534)  # nobody's terminal
    done = _run_into(terminal, tmp_path)
    os.close(terminal)
    assert done.stderr.decode() == ""
    assert _read_until_closed(master).replace(b"\r\n", b"\n") == b"one\ntwo\n"
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    os.chown(fifo, 65534, 65534)  # nobody's named pipe, in root's directory
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    done = _run_into(writer, tmp_path)
    os.close(writer)
    os.set_blocking(reader, True)
    assert done.stderr.decode() == ""
    assert _read_until_closed(reader) == b"one\ntwo\n"


def test_dev_stdout_as_a_socket_fails_as_with_the_stdlib(tmp_path: Path) -> None:
    """Linux cannot open a socket through ``/proc/self/fd`` (``ENXIO``), for ``FileHandler``
    neither: the constructor says so about ``/dev/stdout``, the path the user gave."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        done = _run_into(theirs.fileno(), tmp_path)
    assert done.returncode == 1
    assert "OSError: [Errno 6] cannot open the log file '/dev/stdout'" in done.stderr.decode()


def _log_as_nobody(directory: str, queue: Any) -> None:
    os.setgid(65534)
    os.setuid(65534)
    handler = Recording(os.path.join(directory, "app.log"), delay=True)
    log = logging.getLogger("nobody")
    log.addHandler(handler)
    log.error("denied")
    queue.put([str(f) for f in handler.failures])


def _denied_as_nobody(directory: Path) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_log_as_nobody, args=(str(directory), queue))
    child.start()
    messages: list[str] = queue.get(timeout=30)
    child.join()
    assert child.exitcode == 0
    return messages


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_permission_denied_names_the_directory_its_owner_and_mode() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        directory = Path(name)
        directory.chmod(0o755)  # readable, not writable, by others
        (message,) = _denied_as_nobody(directory)
    assert "cannot open the rotation lock file" in message
    assert f"permission denied on '{directory}' (owner root (uid 0)" in message
    assert "mode 0755); this process runs as nobody (uid 65534)" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_permission_denied_names_the_parent_that_cannot_be_entered() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        Path(name).chmod(0o755)
        blocked = Path(name) / "private"
        (blocked / "logs").mkdir(parents=True)
        blocked.chmod(0o700)
        (message,) = _denied_as_nobody(blocked / "logs")
    assert f"this process may not enter '{blocked}' (owner root (uid 0)" in message
    assert "mode 0700); this process runs as nobody" in message


def test_unencodable_text_goes_to_handle_error_and_logging_goes_on(
    tmp_path: Path, logger: Any
) -> None:
    handler = attach(logger, Recording(tmp_path / "app.log", encoding="ascii"))
    assert isinstance(handler, Recording)
    logger.info("café")
    logger.info("cafe")
    assert [type(f) for f in handler.failures] == [UnicodeEncodeError]
    assert (tmp_path / "app.log").read_text() == "cafe\n"


def test_emit_never_raises_into_the_application(
    tmp_path: Path, logger: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    attach(logger, SafeRotatingFileHandler("/dev/full", lock_file_directory=tmp_path))
    logger.info("first")  # the stdlib's handleError prints a report to stderr
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err
    assert "the disk is full" in err


def test_close_is_idempotent_and_logging_after_close_reopens(tmp_path: Path, logger: Any) -> None:
    handler = attach(logger, SafeRotatingFileHandler(tmp_path / "app.log"))
    logger.info("a")
    handler.close()
    handler.close()
    logger.info("b")
    assert (tmp_path / "app.log").read_text() == "a\nb\n"


def test_rotation_work_follows_existing_backups_not_backup_count(
    tmp_path: Path, logger: Any
) -> None:
    """With backupCount=100000 and three backups, a rotation looks at a handful of names (the
    stdlib's looks at all 100000)."""
    handler = SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=100, backupCount=100_000)
    looked_up: list[str] = []

    def namer(name: str) -> str:
        looked_up.append(name)
        return name

    handler.namer = namer
    attach(logger, handler)
    for seq in range(4):
        logger.info(make_line(0, seq, 60))
    looked_up.clear()
    logger.info(make_line(0, 4, 60))  # the fourth rotation: three backups exist
    assert sorted(files(tmp_path)) == ["app.log", *(f"app.log.{n}" for n in (1, 2, 3, 4))]
    assert len(looked_up) <= 20  # a few per existing backup, none per possible one


def test_a_failing_rotator_is_reported_and_the_record_is_still_written(
    tmp_path: Path, logger: Any
) -> None:
    handler = Recording(tmp_path / "app.log", maxBytes=100, backupCount=3)

    def rotator(source: str, dest: str) -> None:
        raise RuntimeError("rotator is broken")

    handler.rotator = rotator
    attach(logger, handler)
    for seq in range(3):
        logger.info(make_line(0, seq, 60))
    assert [type(f.__cause__) for f in handler.failures] == [RuntimeError]
    assert "could not rotate" in str(handler.failures[0])
    assert verify(str(tmp_path), "app.log", 1, 3).ok
