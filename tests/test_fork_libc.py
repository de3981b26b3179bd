"""Children forked by C code, the way uWSGI forks its workers, lose no record.

uWSGI's default mode loads the app (and builds the handler) in the master, then forks the
workers with libc's ``fork()``: Python's ``os.register_at_fork`` hooks never run, so every worker
starts on the master's open file description of the sidecar lock. The test reproduces that with
``fork()`` called through ctypes, and runs the same load through ``os.fork()`` as the control.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safe_rotating.verify import make_line, verify
from tests.support import Recording

pytestmark = [
    pytest.mark.multiprocess,
    # Python >= 3.12 warns when os.fork() runs in a multi-threaded process (a pytest-xdist
    # worker is one); the children below only write through os.write and leave with os._exit.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

WRITERS = 8
PER_WRITER = 3000
MAX_BYTES = 8192
PRE_FORK_WRITER = WRITERS  # the record logged before the fork has a writer id of its own
WAIT = 60.0  # seconds for all children; a hung child is killed and the test fails


def libc_fork() -> int:
    """libc's ``fork()``, bypassing ``os.fork``'s at-fork hooks as C code does.

    Through ``PyDLL``, not ``CDLL``: a ``CDLL`` call releases the GIL, and if another thread of
    this process (pytest-xdist has some) took it before the fork, the child would inherit a GIL
    owned by a thread that does not exist there and hang. Holding the GIL changes nothing else.
    """
    fork = ctypes.PyDLL(None).fork
    fork.argtypes = []
    fork.restype = ctypes.c_int
    pid: int = fork()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork() failed")
    return pid


FORKS: dict[str, Callable[[], int]] = {"libc-fork": libc_fork, "os-fork": os.fork}


@pytest.fixture
def handler(tmp_path: Path, logger: logging.Logger) -> Recording:
    built = Recording(str(tmp_path / "app.log"), maxBytes=MAX_BYTES, backupCount=100_000)
    built.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(built)
    return built  # the logger fixture closes it


def child(log: logging.Logger, handler: Recording, writer: int) -> None:
    """Runs in the forked child; never returns. Exit 0 only if every record was emitted."""
    code = 1
    try:
        log.handlers = [handler]  # not pytest's capture handlers: the load goes to the file only
        for seq in range(PER_WRITER):
            log.info(make_line(writer, seq))
        if handler.failures:
            os.write(2, f"writer {writer}: {handler.failures[0]!r}\n".encode())
            code = 2
        else:
            code = 0
    except BaseException as exc:
        os.write(2, f"writer {writer}: {exc!r}\n".encode())
    finally:
        os._exit(code)


def wait_all(pids: list[int]) -> dict[int, int]:
    """Exit codes of ``pids`` (by pid); children still running after ``WAIT`` are killed."""
    codes: dict[int, int] = {}
    deadline = time.monotonic() + WAIT
    while len(codes) < len(pids):
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            for pid in set(pids) - set(codes):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                codes[pid] = -signal.SIGKILL
        time.sleep(0.01)
    return codes


@pytest.mark.parametrize("fork", FORKS.values(), ids=FORKS.keys())
def test_forked_children_lose_nothing(
    tmp_path: Path, logger: logging.Logger, handler: Recording, fork: Callable[[], int]
) -> None:
    # The handler has its log and its lock open before the fork, as in a uWSGI master.
    logger.info(make_line(PRE_FORK_WRITER, 0))
    assert os.path.exists(handler.lock_path)  # emit opened (and mapped) the sidecar lock

    pids: list[int] = []
    try:
        for writer in range(WRITERS):
            pid = fork()
            if pid == 0:
                child(logger, handler, writer)
            pids.append(pid)
    finally:
        codes = wait_all(pids)

    assert list(codes.values()) == [0] * WRITERS, f"child exit codes: {codes}"
    assert not handler.failures
    verdict = verify(
        str(tmp_path),
        "app.log",
        WRITERS + 1,
        PER_WRITER,
        max_bytes=MAX_BYTES,
        backup_count=100_000,
        size_allowance=WRITERS * 120,
        written=[PER_WRITER] * WRITERS + [1],
    )
    assert verdict.ok, verdict.summary()
    assert verdict.found == WRITERS * PER_WRITER + 1, verdict.summary()
    assert verdict.files > 100, "the run must rotate hundreds of times"
