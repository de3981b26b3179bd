"""The request-record verifier (pid, per-worker sequence, request id) catches what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_rotating.verify import (
    RequestRecord,
    RequestVerdict,
    make_request_line,
    parse_request_line,
    request_line_pattern,
    verify_requests,
)

PREFIX = rb"\d\d:\d\d [A-Z]+ "
Rec = tuple[int, int, int, int]  # pid, seq, request, position


def write(directory: Path, name: str, records: list[Rec], prefix: str = "12:00 INFO ") -> None:
    text = "".join(prefix + make_request_line(*r, length=60) + "\n" for r in records)
    (directory / name).write_text(text)


def check(
    directory: Path,
    answered: dict[int, int | None],
    per_request: int = 2,
    max_bytes: int = 0,
    backup_count: int = 0,
) -> RequestVerdict:
    return verify_requests(
        str(directory),
        "app.log",
        answered,
        per_request,
        prefix=PREFIX,
        max_bytes=max_bytes,
        backup_count=backup_count,
    )


def test_a_record_parses_back_with_and_without_a_prefix() -> None:
    line = make_request_line(4242, 17, 99, 3, length=80)
    assert len(line) == 80
    assert parse_request_line(line.encode()) == RequestRecord(4242, 17, 99, 3)
    pattern = request_line_pattern(PREFIX)
    assert parse_request_line(b"09:15 WARNING " + line.encode(), pattern) == (4242, 17, 99, 3)
    assert parse_request_line(b"9:15 WARNING " + line.encode(), pattern) is None  # bad prefix
    assert parse_request_line(b"junk " + line.encode()) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],
        lambda b: b.replace(b"x", b"y", 1),
        lambda b: b[:30] + make_request_line(1, 1, 1, 1).encode(),
        lambda b: b.replace(b"0000017", b"0000018"),  # another pid: the checksum catches it
    ],
)
def test_a_damaged_record_does_not_parse(damage: object) -> None:
    assert callable(damage)
    assert parse_request_line(damage(make_request_line(17, 5, 2, 0).encode())) is None


def test_fields_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="negative or too wide"):
        make_request_line(10**7, 0, 0, 0)
    with pytest.raises(ValueError, match="length must be"):
        make_request_line(1, 0, 0, 0, length=30)


def test_a_clean_set_passes_and_counts_records_per_file(tmp_path: Path) -> None:
    # Two workers (pids 7 and 9); request 1 and 2 answered, request 3 sent but not answered.
    write(tmp_path, "app.log.2", [(7, 0, 1, 0), (9, 0, 2, 0)])
    write(tmp_path, "app.log.1", [(7, 1, 1, 1), (9, 1, 2, 1), (9, 2, 3, 0)])
    write(tmp_path, "app.log", [])
    verdict = check(tmp_path, {1: 7, 2: 9}, max_bytes=1000, backup_count=5)
    assert verdict.ok, verdict.summary()
    assert (verdict.found, verdict.expected, verdict.unanswered) == (4, 4, 1)
    assert verdict.workers == 2
    assert verdict.records_per_file == [2, 3, 0]
    assert verdict.summary().startswith("PASS: 4/4 records of 2 answered requests from 2 worker")


def test_every_kind_of_damage_is_counted(tmp_path: Path) -> None:
    write(tmp_path, "app.log.3", [(7, 0, 1, 0), (7, 3, 2, 0)])
    write(tmp_path, "app.log.1", [(7, 2, 1, 1), (7, 2, 1, 1), (7, 4, 2, 1)])
    (tmp_path / "app.log").write_text("12:00 INFO half a reco\n")
    verdict = check(tmp_path, {1: 7, 2: 8, 3: None}, max_bytes=100, backup_count=1)
    assert verdict.duplicated == 1
    assert verdict.order_breaks == 1  # seq 2 after seq 3
    assert verdict.lost == 2  # request 3 never logged
    assert verdict.sequence_gaps == 1  # pid 7 has no seq 1
    assert verdict.wrong_worker == 2  # request 2 was answered by pid 8
    assert verdict.torn == 1
    assert verdict.torn_sample == "12:00 INFO half a reco"
    assert verdict.numbering_gaps == [2]
    assert verdict.too_many_files == 1
    assert len(verdict.oversized) == 2
    assert not verdict.ok
    summary = verdict.summary()
    for words in ("missing", "gaps in the workers", "duplicated", "torn", "order", "another pid"):
        assert words in summary


def test_a_record_without_the_formatter_prefix_is_torn(tmp_path: Path) -> None:
    write(tmp_path, "app.log", [(7, 0, 1, 0), (7, 1, 1, 1)], prefix="")
    verdict = check(tmp_path, {1: 7})
    assert verdict.torn == 2
    assert verdict.lost == 2


def test_a_position_beyond_the_request_size_is_torn(tmp_path: Path) -> None:
    write(tmp_path, "app.log", [(7, 0, 1, 0), (7, 1, 1, 1), (7, 2, 1, 2)])
    verdict = check(tmp_path, {1: 7})
    assert verdict.torn == 1
