"""The ``safe-rotating-stress`` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from safe_rotating.stress import main
from safe_rotating.stress.config import StressConfig
from safe_rotating.stress.factories import HANDLERS
from safe_rotating.stress.runner import run_stress

pytestmark = pytest.mark.multiprocess

RULE = (
    "size limit, the same for every handler: maxBytes + one record per concurrently writing handler"
)


def test_a_passing_run_prints_the_verdict_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-p", "3", "-t", "2", "-n", "800", "--max-bytes", "8KiB", "--dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "3 processes x 2 threads x 800 records through 'safe'" in out.out
    assert "PASS: 4800/4800 records in" in out.out
    assert f"{RULE} = 8192 + 3 x 120 = 8552 B (one handler per process; its 2 threads" in out.out
    assert "100.0% 4800/4800 records" in out.err  # the progress bar's last line


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_every_handler_gets_the_same_size_allowance(tmp_path: Path, handler: str) -> None:
    """One record per concurrently writing handler: per process, since threads share one."""
    config = StressConfig(
        directory=str(tmp_path), processes=5, threads=3, record_size=200, handler=handler
    )
    assert config.size_allowance == 5 * 200
    assert "65536 + 5 x 200 = 66536 B" in config.size_rule()


def test_the_stdlib_handler_exits_1_because_it_loses_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loss is racy; several directories are tried and one run that loses records is enough."""
    codes, out = [], ""
    for attempt in range(3):
        argv = ["-p", "8", "-n", "2000", "--max-bytes", "16KiB", "--handler", "stdlib"]
        codes.append(main([*argv, "--dir", str(tmp_path / str(attempt))]))
        out = capsys.readouterr().out
        if codes[-1] == 1 and "records missing" in out:
            break
    assert codes[-1] == 1
    assert "FAIL:" in out
    assert "records missing" in out
    assert f"{RULE} = 16384 + 8 x 120 = 17344 B" in out  # judged by the same rule as ours


def test_concurrent_log_handler_passes_under_the_same_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("concurrent_log_handler")
    argv = ["-p", "3", "-t", "2", "-n", "300", "--max-bytes", "8KiB", "--handler", "clh"]
    assert main([*argv, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{RULE} = 8192 + 3 x 120 = 8552 B" in out
    assert "PASS: 1800/1800 records in" in out


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
    status = "exit status: 0 when every check passed, 1 when the handler tested failed one,\n"
    assert status + "2 for a usage error" in done.stdout


def test_python_m_safe_rotating_stress_runs_a_workload(tmp_path: Path) -> None:
    """The module form, for when the console script is not on PATH (spawned workers included)."""
    argv = ["-p", "2", "-n", "200", "--max-bytes", "4KiB", "--dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "safe_rotating.stress", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS: 400/400 records in" in done.stdout


def test_server_mode_runs_the_proof_through_a_server_it_starts(tmp_path: Path) -> None:
    config = StressConfig(
        directory=str(tmp_path), processes=4, records=1500, max_bytes=8192, mode="server"
    )
    result = run_stress(config)
    assert result.ok, result.report()
    assert result.verdict.found == 6000
    assert result.verdict.files > 10
    assert "size limit (server mode): maxBytes = 8192 B" in result.report()
