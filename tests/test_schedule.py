"""The time schedule, without processes: the same boundaries and names as the stdlib class."""

from __future__ import annotations

import datetime
import logging.handlers
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safe_rotating._common.units import parse_age
from safe_rotating._engine.plan import Backup, Retention
from safe_rotating._engine.schedule import Schedule, TimedName, order_key, parse_timed_name

# Python 3.13 changed the stdlib's midnight and weekly rollovers (interval now counts, a record at
# exactly atTime waits a day, the daylight-saving hour moved into computeRollover); Schedule keeps
# the meaning of 3.10-3.12 on every version, so that processes on different versions sharing one
# file agree. There the stdlib is a reference for S, M, H and D only, which did not change.
WHENS = ["S", "M", "H", "D"]
if sys.version_info < (3, 13):
    WHENS += ["MIDNIGHT", "W0", "W3", "W6"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
# 2026 and 2027, including both daylight-saving changes of each zone.
TIMES = st.integers(1_767_225_600, 1_830_297_600)


@pytest.fixture
def zone() -> Iterator[None]:
    saved = os.environ.get("TZ")
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def use_zone(name: str) -> None:
    os.environ["TZ"] = name
    time.tzset()


def stdlib(tmp: Path, when: str, interval: int, utc: bool, at: datetime.time | None) -> Any:
    return logging.handlers.TimedRotatingFileHandler(
        tmp / "ref.log", when=when, interval=interval, utc=utc, atTime=at, delay=True
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    when=st.sampled_from(WHENS),
    interval=st.integers(1, 3),
    utc=st.booleans(),
    at=st.one_of(st.none(), st.times().map(lambda t: t.replace(microsecond=0))),
    zone_name=st.sampled_from(ZONES),
    t=TIMES,
)
def test_boundaries_and_names_are_the_stdlibs(
    tmp_path: Path,
    zone: None,
    when: str,
    interval: int,
    utc: bool,
    at: datetime.time | None,
    zone_name: str,
    t: int,
) -> None:
    use_zone(zone_name)
    ours = Schedule.parse(when, interval, utc, at)
    ref = stdlib(tmp_path, when, interval, utc, at)
    assert ours.suffix == ref.suffix
    assert ours.compute_rollover(t) == ref.computeRollover(t)
    # What the stdlib's doRollover names the file and schedules next, for a rollover at t.
    ref.rolloverAt = ref.computeRollover(t - ours.interval)
    boundary = ref.rolloverAt
    (tmp_path / "ref.log").write_text("x\n")
    with mock.patch("time.time", return_value=float(t)):
        ref.doRollover()
    rotated = [p.name for p in tmp_path.iterdir() if p.name.startswith("ref.log.")]
    assert rotated == [f"ref.log.{ours.stamp(boundary, t)}"]
    assert ours.next_rollover(t) == ref.rolloverAt
    for p in tmp_path.iterdir():
        p.unlink()
    ref.close()


def test_daylight_saving_midnight_rollover_in_berlin(zone: None) -> None:
    """The night the clocks go forward (29 March 2026 in Berlin) is an hour short; the
    boundaries stay at local midnight and the files are named for their own day."""
    use_zone("Europe/Berlin")
    schedule = Schedule.parse("midnight")
    before = time.mktime((2026, 3, 28, 12, 0, 0, 0, 0, -1))
    first = schedule.compute_rollover(before)
    assert time.localtime(first)[:6] == (2026, 3, 29, 0, 0, 0)
    second = schedule.next_rollover(first + 1)
    assert time.localtime(second)[:6] == (2026, 3, 30, 0, 0, 0)
    assert second - first == 23 * 3600
    assert schedule.stamp(second, second + 1) == "2026-03-29"


def test_invalid_schedules_are_named() -> None:
    with pytest.raises(ValueError, match="W0 \\(Monday\\) to W6"):
        Schedule.parse("W7")
    with pytest.raises(ValueError, match="not one of S, M, H, D, midnight"):
        Schedule.parse("fortnight")
    with pytest.raises(ValueError, match="interval must be >= 1"):
        Schedule.parse("H", 0)
    with pytest.raises(TypeError, match="atTime"):
        Schedule.parse("midnight", at_time="03:00")  # type: ignore[arg-type]


def test_names_of_one_period_sort_oldest_first() -> None:
    pattern = Schedule.parse("D").stamp_pattern
    names = [
        "app.log.2026-11-27.10.gz",
        "app.log.2026-11-28",
        "app.log.2026-11-27",
        "app.log.2026-11-27.2",
        "app.log.2026-11-27.1.gz",
    ]
    parsed = [parse_timed_name(n, "app.log", pattern) for n in names]
    assert all(p is not None for p in parsed)
    ordered = sorted((p for p in parsed if p), key=order_key)
    assert [(p.stamp, p.n) for p in ordered] == [
        ("2026-11-27", 0),
        ("2026-11-27", 1),
        ("2026-11-27", 2),
        ("2026-11-27", 10),
        ("2026-11-28", 0),
    ]
    assert parse_timed_name("app.log.2026-11-27.1.gz", "app.log", pattern) == TimedName(
        "2026-11-27", 1, ".gz"
    )
    for other in ["app.log", "app.log.1", "app.log.2026-11-27.0", "app.log.2026-11-27.x"]:
        assert parse_timed_name(other, "app.log", pattern) is None


# -- retention plans -------------------------------------------------------------------------------
def backups(*spec: tuple[int, float]) -> list[Backup]:
    return [Backup(f"b{i}", size, mtime) for i, (size, mtime) in enumerate(spec)]


def test_retention_by_count_deletes_the_oldest() -> None:
    doomed = Retention(count=2).to_delete(backups((1, 0), (1, 0), (1, 0), (1, 0)), 0, 100)
    assert [b.name for b in doomed] == ["b0", "b1"]


def test_retention_by_age_stops_at_the_first_young_enough_backup() -> None:
    plan = Retention(max_age=10).to_delete(backups((1, 0), (1, 95), (1, 5), (1, 99)), 0, 100)
    assert [b.name for b in plan] == ["b0"]  # b2 is old, but younger b1 comes before it


def test_retention_by_total_size_counts_the_current_file_and_never_deletes_it() -> None:
    plan = Retention(max_total_bytes=100).to_delete(backups((40, 0), (40, 0), (40, 0)), 30, 0)
    assert [b.name for b in plan] == ["b0", "b1"]
    assert Retention(max_total_bytes=10).to_delete([], 500, 0) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("14d", 14 * 86400), ("12h", 43200), ("90m", 5400), ("30s", 30), ("2w", 1209600), (5, 5)],
)
def test_parse_age(text: str | int, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "0", "1y"])
def test_parse_age_names_the_bad_value(text: str) -> None:
    with pytest.raises(ValueError, match="age"):
        parse_age(text)
