"""The verifier catches every kind of damage it claims to (so a PASS means something)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_rotating.verify import make_line, parse_line, verify


def write(directory: Path, name: str, records: list[tuple[int, int]], length: int = 60) -> None:
    lines = "".join(make_line(w, s, length) + "\n" for w, s in records)
    (directory / name).write_text(lines)


def test_make_line_has_the_requested_length_and_parses_back() -> None:
    line = make_line(7, 123, 120)
    assert len(line) + 1 == 120
    assert parse_line(line.encode()) == (7, 123)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b.replace(b"x", b"y", 1),  # corrupted padding
        lambda b: b[:20] + make_line(1, 1).encode(),  # interleaved with another record
    ],
)
def test_a_damaged_line_does_not_parse(damage: object) -> None:
    line = make_line(0, 5).encode()
    assert callable(damage)
    assert parse_line(damage(line)) is None


def test_a_clean_set_passes(tmp_path: Path) -> None:
    write(tmp_path, "app.log.2", [(0, 0), (1, 0)])
    write(tmp_path, "app.log.1", [(1, 1), (0, 1)])
    write(tmp_path, "app.log", [(0, 2), (1, 2)])
    verdict = verify(str(tmp_path), "app.log", 2, 3, max_bytes=120, backup_count=2)
    assert verdict.ok, verdict.summary()
    assert verdict.summary().startswith("PASS: 6/6 records in 3 files")


def test_lost_duplicated_reordered_and_torn_are_counted(tmp_path: Path) -> None:
    write(tmp_path, "app.log.1", [(0, 0), (0, 2), (0, 2)])
    write(tmp_path, "app.log", [(0, 1)])
    with (tmp_path / "app.log").open("a") as f:
        f.write(make_line(0, 3)[:30])  # a torn, unterminated tail
    verdict = verify(str(tmp_path), "app.log", 1, 5)
    assert (verdict.lost, verdict.duplicated, verdict.order_breaks, verdict.torn) == (2, 1, 1, 1)
    assert not verdict.ok
    summary = verdict.summary()
    assert "2 records missing" in summary
    assert "1 records duplicated" in summary
    assert "1 torn" in summary
    assert "out of per-writer order" in summary


def test_numbering_gaps_extra_files_and_oversized_files(tmp_path: Path) -> None:
    write(tmp_path, "app.log.3", [(0, 0)])
    write(tmp_path, "app.log.1", [(0, 1), (0, 2), (0, 3)])
    write(tmp_path, "app.log", [(0, 4)])
    verdict = verify(str(tmp_path), "app.log", 1, 5, max_bytes=100, backup_count=1)
    assert verdict.numbering_gaps == [2]
    assert verdict.too_many_files == 1
    assert verdict.oversized == [("app.log.1", 180)]
    assert verdict.size_limit == 100
    assert "1 files over the size limit of 100 B: app.log.1 (180 B)" in verdict.summary()
    allowed = verify(
        str(tmp_path), "app.log", 1, 5, max_bytes=100, backup_count=3, size_allowance=80
    )
    assert allowed.oversized == []
    assert allowed.size_limit == 180


def test_the_size_limit_is_max_bytes_plus_the_allowance_exactly(tmp_path: Path) -> None:
    """Three 60-byte records: 180 B. The limit is inclusive, and one byte less fails."""
    write(tmp_path, "app.log", [(0, 0), (0, 1), (0, 2)])
    at_limit = verify(str(tmp_path), "app.log", 1, 3, max_bytes=120, size_allowance=60)
    assert at_limit.ok, at_limit.summary()
    below = verify(str(tmp_path), "app.log", 1, 3, max_bytes=120, size_allowance=59)
    assert below.oversized == [("app.log", 180)]
    assert "over the size limit of 179 B" in below.summary()


def test_without_max_bytes_no_size_is_checked(tmp_path: Path) -> None:
    write(tmp_path, "app.log", [(0, 0), (0, 1), (0, 2)])
    verdict = verify(str(tmp_path), "app.log", 1, 3, size_allowance=10)
    assert verdict.ok
    assert verdict.size_limit == 0


def test_deleted_backups_may_cost_only_the_oldest_records(tmp_path: Path) -> None:
    write(tmp_path, "app.log.1", [(0, 3), (0, 4)])
    write(tmp_path, "app.log", [(0, 6)])
    verdict = verify(str(tmp_path), "app.log", 1, 7, complete=False)
    assert verdict.lost == 1  # seq 5: newer than a record that was found


def test_killed_writers_owe_only_what_they_logged(tmp_path: Path) -> None:
    write(tmp_path, "app.log", [(0, 0), (0, 1), (1, 0)])
    assert verify(str(tmp_path), "app.log", 2, 10, written=[2, 1]).ok
    assert verify(str(tmp_path), "app.log", 2, 10, written=[3, 1]).lost == 1
