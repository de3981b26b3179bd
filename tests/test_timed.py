"""``SafeTimedRotatingFileHandler``: one shared schedule for every process.

Single-process behaviour is driven by records whose ``created`` time the test chooses and an
injected clock (no sleeping); the multi-process runs use real time with interval = 1 second.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_rotating import SafeTimedRotatingFileHandler
from safe_rotating._engine.logfile import LogFile
from safe_rotating._engine.schedule import Schedule
from safe_rotating.stress.config import StressConfig
from safe_rotating.stress.runner import run_stress
from safe_rotating.verify import ordered_files


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def berlin() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def engine(tmp_path: Path, clock: Clock, when: str = "S", **kwargs: object) -> LogFile:
    return LogFile(
        str(tmp_path / "app.log"),
        schedule=Schedule.parse(when, 1),
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


def names(tmp_path: Path) -> list[str]:
    return ordered_files(str(tmp_path), "app.log")


def test_a_record_goes_to_the_file_of_its_period(tmp_path: Path) -> None:
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    log = engine(tmp_path, clock)
    for i in range(6):  # two records per second, three seconds
        clock.now = start + i / 2
        log.append(f"r{i}\n".encode(), when=clock.now)
    log.close()
    assert names(tmp_path) == [
        "app.log.2026-11-27_10-00-00",
        "app.log.2026-11-27_10-00-01",
        "app.log",
    ]
    assert (tmp_path / "app.log.2026-11-27_10-00-00").read_text() == "r0\nr1\n"
    assert (tmp_path / "app.log").read_text() == "r4\nr5\n"


def test_size_rotations_within_a_period_get_numbered_names_in_order(tmp_path: Path) -> None:
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    log = engine(tmp_path, clock, "M", max_bytes=10)
    for i in range(7):
        log.append(f"r{i}-xxxx\n".encode(), when=start + i)
    clock.now = start + 61
    log.append(b"late-xxxx\n", when=clock.now)
    log.close()
    assert names(tmp_path) == [
        "app.log.2026-11-27_10-00",
        "app.log.2026-11-27_10-00.1",
        "app.log.2026-11-27_10-00.2",
        "app.log.2026-11-27_10-00.3",
        "app.log.2026-11-27_10-00.4",
        "app.log.2026-11-27_10-00.5",
        "app.log.2026-11-27_10-00.6",
        "app.log.2026-11-27_10-01",  # the late record filled its own file
        "app.log",
    ]


def test_a_deleted_first_name_is_never_reused(tmp_path: Path) -> None:
    """Names stay in order: after app.log.<stamp> was deleted, the next file of the period
    is numbered above the existing ones, not given the free first name."""
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    log = engine(tmp_path, Clock(start), "M", max_bytes=10)
    for i in range(3):
        log.append(f"r{i}-xxxx\n".encode(), when=start + i)
    (tmp_path / "app.log.2026-11-27_10-00").unlink()
    for i in range(3, 5):
        log.append(f"r{i}-xxxx\n".encode(), when=start + i)
    log.close()
    assert names(tmp_path)[-3:] == [
        "app.log.2026-11-27_10-00.2",
        "app.log.2026-11-27_10-00.3",
        "app.log",
    ]


def test_a_jump_forward_rotates_once_and_skips_the_periods_jumped_over(tmp_path: Path) -> None:
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    log = engine(tmp_path, clock, "H")
    log.append(b"before\n", when=start)
    clock.now = start + 5 * 3600 + 10  # suspend/resume, or the clock set forward
    log.append(b"after\n", when=clock.now)
    assert log.rollover_at == clock.now + 3600  # the stdlib's rule: an interval from now
    log.close()
    assert names(tmp_path) == ["app.log.2026-11-27_10", "app.log"]


def test_a_jump_backwards_lengthens_the_period(tmp_path: Path) -> None:
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    log = engine(tmp_path, clock, "H")
    log.append(b"a\n", when=start + 10)
    clock.now = start - 2 * 3600  # clock set back two hours
    log.append(b"b\n", when=clock.now)
    log.append(b"c\n", when=start + 3599)
    log.close()
    assert names(tmp_path) == ["app.log"]  # still the 10:00 period until 11:00 comes


def test_midnight_across_the_daylight_saving_change(tmp_path: Path, berlin: None) -> None:
    """29 March 2026: Berlin skips from 02:00 to 03:00. The day's file is named for its own
    day, and the next boundary is local midnight again, 23 hours later."""
    saturday = time.mktime((2026, 3, 28, 12, 0, 0, 0, 0, -1))
    clock = Clock(saturday)
    log = engine(tmp_path, clock, "MIDNIGHT")
    log.append(b"saturday\n", when=saturday)
    sunday = time.mktime((2026, 3, 29, 12, 0, 0, 0, 0, -1))
    clock.now = sunday
    log.append(b"sunday\n", when=sunday)
    monday = time.mktime((2026, 3, 30, 0, 0, 1, 0, 0, -1))
    clock.now = monday
    log.append(b"monday\n", when=monday)
    log.close()
    assert names(tmp_path) == ["app.log.2026-03-28", "app.log.2026-03-29", "app.log"]
    assert (tmp_path / "app.log.2026-03-29").read_text() == "sunday\n"


def test_one_rotation_per_boundary_for_many_handlers(tmp_path: Path) -> None:
    """Two handlers (two lock descriptions, as two processes) share the schedule: the boundary
    is rotated once, and the second handler follows instead of rotating again."""
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    first, second = engine(tmp_path, clock), engine(tmp_path, clock)
    first.append(b"a\n", when=start)
    second.append(b"b\n", when=start + 0.5)
    clock.now = start + 1.2
    first.append(b"c\n", when=clock.now)
    second.append(b"d\n", when=clock.now)
    first.close()
    second.close()
    assert names(tmp_path) == ["app.log.2026-11-27_10-00-00", "app.log"]
    assert (tmp_path / "app.log").read_text() == "c\nd\n"


def test_a_process_started_after_a_missed_boundary_catches_up_once(tmp_path: Path) -> None:
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    log = engine(tmp_path, clock, "H")
    log.append(b"yesterday\n", when=start)
    log.close()
    clock.now = start + 86400  # the next day, nobody ran meanwhile
    late = [engine(tmp_path, clock, "H") for _ in range(3)]
    for n, one in enumerate(late):
        one.append(f"today {n}\n".encode(), when=clock.now)
    for one in late:
        one.close()
    assert names(tmp_path) == ["app.log.2026-11-27_10", "app.log"]
    assert (tmp_path / "app.log").read_text() == "today 0\ntoday 1\ntoday 2\n"


def test_an_empty_file_is_not_rotated(tmp_path: Path) -> None:
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    log = engine(tmp_path, clock, "S")
    log.open()
    clock.now = start + 5
    log.append(b"x\n", when=clock.now)
    log.close()
    assert names(tmp_path) == ["app.log"]


def test_the_handler_keeps_the_stdlib_attributes(tmp_path: Path) -> None:
    handler = SafeTimedRotatingFileHandler(tmp_path / "app.log", when="midnight", backupCount=7)
    try:
        assert handler.when == "MIDNIGHT"
        assert handler.interval == 86400
        assert handler.suffix == "%Y-%m-%d"
        assert handler.extMatch.match("2026-11-27")
        assert handler.rolloverAt > time.time()
        # A record dated after the clock counts as written now: only the clock moves the
        # schedule (tests/test_server_numbers.py has the record that is due).
        record = logging.makeLogRecord({"msg": "x", "created": handler.rolloverAt + 1})
        assert not handler.shouldRollover(record)
    finally:
        handler.close()


def test_backup_count_keeps_the_newest_time_named_files(tmp_path: Path) -> None:
    start = time.mktime((2026, 11, 27, 10, 0, 0, 0, 0, -1))
    clock = Clock(start)
    log = engine(tmp_path, clock, backup_count=3)
    for i in range(8):  # the clock moves the schedule, not a record's time: it moves too
        clock.now = start + i
        log.append(f"r{i}\n".encode(), when=clock.now)
    log.close()
    kept = names(tmp_path)
    assert len(kept) == 4, kept
    assert (tmp_path / "app.log").read_text() == "r7\n"


# -- many processes -------------------------------------------------------------------------------


@pytest.mark.multiprocess
def test_eight_processes_share_one_schedule_over_many_boundaries(tmp_path: Path) -> None:
    config = StressConfig(
        directory=str(tmp_path),
        processes=8,
        records=1500,
        max_bytes=16 * 1024,
        when="S",
        duration=4.0,
    )
    result = run_stress(config)
    assert result.ok, result.report()
    stamps = {name.split(".")[2] for name in ordered_files(str(tmp_path), "app.log")[:-1]}
    assert len(stamps) >= 4, "the run must cross several one-second boundaries"
    assert result.verdict.found == config.total
    assert result.verdict.misplaced == 0


@pytest.mark.multiprocess
def test_the_stdlib_timed_handler_fails_the_same_check(tmp_path: Path) -> None:
    """Each stdlib process rotates on its own at every boundary and removes the file another
    one just rotated into the same name."""
    config = StressConfig(
        directory=str(tmp_path),
        processes=8,
        records=600,
        max_bytes=0,
        when="S",
        duration=3.0,
        handler="stdlib",
    )
    verdict = run_stress(config).verdict
    assert verdict.lost > 0 or verdict.misplaced > 0, verdict.summary()
