"""The ``safe-rotating-stress`` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from safe_rotating.stress import main

pytestmark = pytest.mark.multiprocess


def test_a_passing_run_prints_the_verdict_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-p", "3", "-t", "2", "-n", "800", "--max-bytes", "8KiB", "--dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "3 processes x 2 threads x 800 records through 'safe'" in out.out
    assert "PASS: 4800/4800 records in" in out.out
    assert "100.0% 4800/4800 records" in out.err  # the progress bar's last line


def test_the_stdlib_handler_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Loss is racy; several directories are tried and one failing run is enough."""
    codes = []
    for attempt in range(3):
        argv = ["-p", "8", "-n", "2000", "--max-bytes", "16KiB", "--handler", "stdlib"]
        codes.append(main([*argv, "--dir", str(tmp_path / str(attempt))]))
        if codes[-1] == 1:
            break
    assert codes[-1] == 1
    assert "FAIL:" in capsys.readouterr().out


def test_a_directory_with_logs_in_it_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app.log").write_text("an earlier run\n")
    assert main(["--dir", str(tmp_path)]) == 2
    assert "already holds app.log files; use an empty directory" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-bytes", "ten"], "not a size: 'ten'"),
        (["--processes", "0"], "must be at least 1, got 0"),
        (["--start-method", "thread"], "invalid choice: 'thread'"),
    ],
)
def test_bad_arguments_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_help_reads_well() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "safe_rotating", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("usage: safe-rotating-stress")
    assert "check that no record was lost, duplicated, torn or reordered" in done.stdout
    assert "exit status: 0 when every check passed, 1 otherwise" in done.stdout
