"""``handler.stats()``: what each counter means, in both modes."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from safe_rotating import HandlerStats, SafeRotatingFileHandler
from safe_rotating._engine.lock import SidecarLock
from safe_rotating._engine.stats import LockWaits, WaitHistogram
from safe_rotating.verify import make_line


def _handler(path: Path, enqueue: bool, **kwargs: object) -> SafeRotatingFileHandler:
    handler = SafeRotatingFileHandler(path, enqueue=enqueue, **kwargs)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _log(handler: logging.Handler, count: int, writer: int = 0) -> None:
    for seq in range(count):
        handler.handle(logging.makeLogRecord({"msg": make_line(writer, seq), "levelno": 20}))
    handler.flush()


def test_wait_histogram_quantiles_are_bucket_edges() -> None:
    waits = WaitHistogram()
    assert waits.summary() == LockWaits()
    for _ in range(98):
        waits.add(0.000_003)  # 3 µs: the bucket [2, 4) µs
    waits.add(0.010)
    waits.add(0.040)
    summary = waits.summary()
    assert summary.count == 100
    assert summary.p50 == 0.000_004
    assert 0.010 <= summary.p99 <= 0.020  # the 99th wait is 10 ms: its bucket ends at 16.4 ms
    assert summary.longest == 0.040


@pytest.mark.parametrize("enqueue", [False, True])
def test_a_fresh_handler_counts_nothing(tmp_path: Path, enqueue: bool) -> None:
    handler = _handler(tmp_path / "app.log", enqueue, maxBytes=1000)
    try:
        assert handler.stats() == HandlerStats()
    finally:
        handler.close()


@pytest.mark.parametrize("enqueue", [False, True])
def test_rotations_done_and_seen(tmp_path: Path, enqueue: bool) -> None:
    """Two handlers on one file (two engines, as two processes would have): each counts its own
    rotations, and follows the other's."""
    first = _handler(tmp_path / "app.log", enqueue, maxBytes=1200, backupCount=100)
    second = _handler(tmp_path / "app.log", enqueue, maxBytes=1200, backupCount=100)
    try:
        for _ in range(6):
            _log(first, 10, writer=0)
            time.sleep(0.002)  # past the 1 ms between looks at the generation
            _log(second, 10, writer=1)
            time.sleep(0.002)
        a, b = first.stats(), second.stats()
        assert a.rotations + b.rotations == len(list(tmp_path.glob("app.log.*")))
        assert a.rotations > 0
        assert b.rotations > 0
        assert a.rotations_seen > 0
        assert b.rotations_seen > 0
        assert a.lock_waits.count >= a.rotations
    finally:
        first.close()
        second.close()


def test_lock_waits_measure_a_held_lock(tmp_path: Path) -> None:
    handler = _handler(tmp_path / "app.log", False, maxBytes=1000, backupCount=3, lock_timeout=5.0)
    holder = SidecarLock(str(tmp_path / ".app.log.lock"), log_path=str(tmp_path / "app.log"))
    holder.open()
    assert holder.acquire(1.0)
    release = threading.Timer(0.2, holder.release)
    release.start()
    try:
        _log(handler, 9)  # 9 x 120 B: the ninth record passes 1000 B and rotates
        waits = handler.stats().lock_waits
        assert waits.count == 1
        assert 0.15 <= waits.longest < 5.0
        assert waits.p50 == waits.p99 == waits.longest
    finally:
        release.join()
        holder.close()
        handler.close()


@pytest.mark.parametrize("enqueue", [False, True])
def test_largest_overshoot_is_what_the_file_held_past_max_bytes(
    tmp_path: Path, enqueue: bool
) -> None:
    path = tmp_path / "app.log"
    handler = _handler(path, enqueue, maxBytes=1000, backupCount=3)
    try:
        _log(handler, 2)  # 240 B
        with open(path, "ab") as other:  # another writer's records, in flight past the limit
            other.write(b"x" * 1199 + b"\n")
        time.sleep(0.002)
        _log(handler, 1)
        assert handler.stats().largest_overshoot >= 240 + 1200 - 1000
    finally:
        handler.close()
