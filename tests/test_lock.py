"""The rotation lock: bounded waits that name the holder, fork safety, re-entrancy."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import LockError, LockTimeout, RotationError, SafeRotatingFileHandler
from safe_rotating._engine.lock import SidecarLock
from safe_rotating.verify import make_line, verify
from tests.support import Recording


def test_contention_times_out_and_names_the_holder(tmp_path: Path) -> None:
    path = str(tmp_path / ".app.log.lock")
    holder, waiter = SidecarLock(path), SidecarLock(path)
    assert holder.acquire(1.0)
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        waiter.acquire(0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert caught.value.holder_pid == os.getpid()
    assert caught.value.waited >= 0.3
    assert f"is busy: pid {os.getpid()} has held it for 0.3s" in str(caught.value)
    assert "this process gave up after 0.3" in str(caught.value)
    assert "resume" not in str(caught.value)  # the holder is running: no advice to kill it
    holder.release()
    assert waiter.acquire(0.3)
    waiter.release()


def test_a_waiter_can_give_up_early_when_it_no_longer_needs_the_lock(tmp_path: Path) -> None:
    path = str(tmp_path / ".app.log.lock")
    holder, waiter = SidecarLock(path), SidecarLock(path)
    holder.acquire(1.0)
    started = time.monotonic()
    assert waiter.acquire(10.0, abandon=lambda: time.monotonic() - started > 0.05) is False
    assert time.monotonic() - started < 1.0
    holder.release()


def test_the_lock_is_reentrant_for_its_owner(tmp_path: Path) -> None:
    lock, other = SidecarLock(str(tmp_path / "l")), SidecarLock(str(tmp_path / "l"))
    lock.acquire(1.0)
    lock.acquire(1.0)  # a rotator that logs must not unlock its caller
    lock.release()
    with pytest.raises(LockTimeout):
        other.acquire(0.05)
    lock.release()
    assert other.acquire(0.05)
    other.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_closing_while_holding_the_lock_frees_it_and_clears_the_holder(tmp_path: Path) -> None:
    """Old code cleared its descriptor first and then wrote the holder through -1: EBADF out
    of close(), and the descriptor (so the lock) stayed open until the process ended."""
    path = str(tmp_path / "l")
    lock, other = SidecarLock(path), SidecarLock(path)
    assert lock.acquire(1.0)
    lock.close()
    assert other.acquire(0.05)
    other.release()
    assert other.holder_pid() is None


def test_a_release_that_locked_through_portalocker_still_excludes_this_one(
    tmp_path: Path,
) -> None:
    """Release 0.1.0 took the lock through portalocker; during a rolling deploy an old
    and a new process share the lock file. portalocker's default on POSIX is the same
    ``flock``, so each sees the other's lock (portalocker comes with the dev extra's peers)."""
    portalocker = pytest.importorskip("portalocker")
    path = str(tmp_path / "l")
    lock = SidecarLock(path)
    lock.open()
    with open(path, "rb+") as old:
        portalocker.lock(old, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        with pytest.raises(LockTimeout):
            lock.acquire(0.05)
        portalocker.unlock(old)
    assert lock.acquire(0.05)
    with open(path, "rb+") as old, pytest.raises(portalocker.AlreadyLocked):
        portalocker.lock(old, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
    lock.release()


def test_generation_is_shared_between_lock_objects(tmp_path: Path) -> None:
    first, second = SidecarLock(str(tmp_path / "l")), SidecarLock(str(tmp_path / "l"))
    first.open()
    second.open()
    start = first.generation
    assert second.generation == start != 0  # a random start: a re-created table is noticed
    first.acquire(1.0)
    first.bump_generation()
    first.release()
    assert second.generation == start + 1


def test_an_unusable_lock_file_is_an_os_error_not_contention(tmp_path: Path) -> None:
    lock = SidecarLock(str(tmp_path / "missing-dir" / "l"))
    with pytest.raises(FileNotFoundError, match=r"cannot open the rotation lock file.*not exist"):
        lock.acquire(1.0)


def _try_lock_in_child(handler: SafeRotatingFileHandler, queue: Any) -> None:
    try:
        handler._lock.acquire(0.2)
    except LockTimeout as exc:
        queue.put(("timeout", exc.holder_pid))
    else:
        queue.put(("acquired", None))


def test_a_forked_child_does_not_inherit_the_parents_lock(tmp_path: Path) -> None:
    """flock belongs to the open file description, which fork shares; without reopening, the
    child would 'acquire' the lock its parent holds."""
    handler = SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=1000, backupCount=3)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    handler._lock.acquire(1.0)
    try:
        child = ctx.Process(target=_try_lock_in_child, args=(handler, queue))
        child.start()
        assert queue.get(timeout=30) == ("timeout", os.getpid())
        child.join()
    finally:
        handler._lock.release()
        handler.close()


def _hold_and_stop(lock_path: str, ready: Any) -> None:
    lock = SidecarLock(lock_path)
    lock.acquire(5.0)
    ready.set()
    os.kill(os.getpid(), signal.SIGSTOP)  # a stopped process, holding the lock
    lock.release()


def test_a_stopped_lock_holder_delays_rotation_but_loses_nothing(
    tmp_path: Path, logger: logging.Logger
) -> None:
    handler = Recording(tmp_path / "app.log", maxBytes=1000, backupCount=50, lock_timeout=0.5)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_and_stop, args=(handler.lock_path, ready))
    holder.start()
    try:
        assert ready.wait(30)
        waits = []
        for seq in range(30):  # 3000 bytes: needs two rotations
            started = time.monotonic()
            logger.info(make_line(0, seq, 100))
            waits.append(time.monotonic() - started)
        # Only the first record that needed a rotation waited, and only for the bound.
        assert 0.5 <= max(waits) < 2.0
        assert sorted(waits)[-2] < 0.1
        (failure,) = handler.failures
        assert isinstance(failure, RotationError)
        assert isinstance(failure.__cause__, LockTimeout)
        message = str(failure)
        assert f"could not rotate '{handler.baseFilename}'" in message
        assert f"is busy: pid {holder.pid} (stopped) has held it for" in message
        assert f"resume it (kill -CONT {holder.pid}) or end it" in message
        assert "Records keep going to the current file" in message
        assert not (tmp_path / "app.log.1").exists()
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGCONT)
        holder.join(30)
    logger.info(make_line(0, 30, 100))  # the lock is free again: rotation resumes at once
    assert (tmp_path / "app.log.1").exists()
    for seq in range(31, 60):
        logger.info(make_line(0, seq, 100))
    verdict = verify(str(tmp_path), "app.log", 1, 60)
    assert verdict.ok, verdict.summary()
    assert len(handler.failures) == 1


@pytest.mark.parametrize(
    "exc",
    [
        LockTimeout("/var/log/.app.log.lock", 10.0, 4242),
        LockTimeout("/var/log/.app.log.lock", 10.0, None),
        LockError("cannot lock"),
        RotationError("could not rotate"),
    ],
)
def test_exceptions_survive_pickling(exc: Exception) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)


def _hold_while_busy(lock_path: str, ready: Any, seconds: float) -> None:
    lock = SidecarLock(lock_path)
    lock.acquire(5.0)
    ready.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # running, on a CPU: a slow rotation on a loaded machine
        pass
    lock.release()


def test_a_running_holder_is_waited_for_beyond_the_timeout(tmp_path: Path) -> None:
    """A holder that is making progress is not stuck: waiting for it keeps files within their
    size limit; only a stopped or hung holder is given up on after ``timeout``."""
    path = str(tmp_path / ".app.log.lock")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_while_busy, args=(path, ready, 1.0))
    holder.start()
    try:
        assert ready.wait(30)
        waiter = SidecarLock(path)
        started = time.monotonic()
        assert waiter.acquire(0.1)  # no LockTimeout although the holder kept it ~1 s
        assert 0.5 < time.monotonic() - started < 5.0
        waiter.release()
    finally:
        holder.join(30)
