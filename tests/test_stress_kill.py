"""``safe-rotating-stress --kill N``: workers killed with SIGKILL mid-run, and what each mode
promises about them — sync mode loses nothing ``emit`` accepted; queued mode loses at most what
fits in its queue, always the newest records, never one older than a record that was written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safe_rotating.stress import main
from safe_rotating.stress.config import StressConfig
from safe_rotating.stress.result import Killed, StressResult
from safe_rotating.verify import Verdict, make_line, verify

pytestmark = pytest.mark.multiprocess


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_queued_mode_loses_at_most_its_queue_when_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], start_method: str
) -> None:
    argv = ["-p", "8", "-n", "20000", "--dir", str(tmp_path), "--start-method", start_method]
    code = main([*argv, "--enqueue", "--queue-size", "256KiB", "--kill", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok: killed 3 worker processes with SIGKILL" in out
    assert "at most queue_size // line = 262144 // 120 = 2184 records per process" in out


def test_sync_mode_loses_nothing_when_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["-p", "8", "-n", "5000", "--dir", str(tmp_path), "--kill", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "in the files: 0, 0, 0 (allowed: none" in out


def _result(tmp_path: Path, unwritten: int, enqueue: bool) -> StressResult:
    config = StressConfig(
        directory=str(tmp_path), processes=4, records=10, enqueue=enqueue, queue_size=1200
    )
    return StressResult(
        config,
        Verdict(writers=4, per_writer=10),
        1.0,
        [0, -9, 0, 0],
        killed=(Killed(1, (10,), unwritten),),
    )


def test_a_killed_process_losing_more_than_its_queue_fails_the_run(tmp_path: Path) -> None:
    config = StressConfig(directory=str(tmp_path), enqueue=True, queue_size=1200)
    assert config.at_risk == 10
    assert _result(tmp_path, 10, enqueue=True).ok
    beyond = _result(tmp_path, config.at_risk + 1, enqueue=True)
    assert not beyond.ok
    assert "FAIL: killed 1 worker processes" in beyond.report()


def test_in_sync_mode_one_unwritten_record_fails_the_run(tmp_path: Path) -> None:
    failed = _result(tmp_path, 1, enqueue=False)
    assert not failed.ok
    assert "allowed: none: a record is in the file when emit returns" in failed.report()


def test_a_killed_worker_that_exits_normally_is_a_failure(tmp_path: Path) -> None:
    result = _result(tmp_path, 0, enqueue=False)
    assert result.ok
    normal = StressResult(result.config, result.verdict, 1.0, [0, 0, 0, 0], killed=result.killed)
    assert not normal.ok


def test_a_gap_before_a_victims_newest_record_is_a_loss(tmp_path: Path) -> None:
    """Queued mode may lose a suffix only: a missing record older than one found is lost."""
    lines = [make_line(0, seq) for seq in range(10) if seq != 4]
    (tmp_path / "app.log").write_text("".join(f"{line}\n" for line in lines))
    verdict = verify(str(tmp_path), "app.log", 1, 20, written=[0])
    assert verdict.lost == 1
    assert verdict.newest == [9]


def test_kill_is_refused_where_records_cannot_be_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["-p", "2", "--kill", "2", "--dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["-p", "4", "--kill", "1", "--backup-count", "3", "--dir", str(tmp_path)])
    assert "--kill" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
