"""``safe-rotating-stress`` keeps the conventions of a command: ``--version``, the exit statuses
its ``--help`` states (0 passed, 1 a check failed, 2 a usage error), and ``--json``/``--plot``
in every mode, not only with ``--django``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safe_rotating._version import __version__
from safe_rotating.stress import main

STRESS = [sys.executable, "-m", "safe_rotating.stress"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STRESS, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("django", [False, True], ids=["plain", "django"])
def test_version_prints_the_version_and_exits_0(django: bool) -> None:
    done = run(*(["--django"] if django else []), "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"safe-rotating-stress {__version__}"


@pytest.mark.parametrize("django", [False, True], ids=["plain", "django"])
def test_help_states_every_exit_status(django: bool) -> None:
    done = run(*(["--django"] if django else []), "--help")
    assert done.returncode == 0
    status = " ".join(done.stdout.split("exit status:")[1].split())
    assert "0 when every" in status
    assert "1 " in status
    assert "2 for a usage error" in status


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "two"], "invalid positive_arg value"),
        (
            ["--handler", "stdlib", "--compress", "gzip", "--start-method", "fork"],
            "error: --handler stdlib has no compression or age/size retention",
        ),
        (["--mode", "server", "--enqueue"], "error: --mode server runs LogServerHandler alone"),
        (["--kill", "9", "-p", "2"], "error: --kill 9: kill fewer than --processes"),
        (["--django", "--records-per-request", "10000"], "at most 9999"),
    ],
    ids=["bad-value", "handler-refuses", "server-refuses", "kill", "django"],
)
def test_a_usage_error_exits_2_with_the_reason_on_stderr(args: list[str], message: str) -> None:
    done = run(*args, "-n", "10") if "--django" not in args else run(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_a_django_dir_in_use_is_refused_before_any_run_starts(tmp_path: Path) -> None:
    (tmp_path / "gunicorn-file").mkdir()
    done = run("--django", "--scenarios", "gunicorn", "--mode", "file", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert "gunicorn-file' exists; use an empty --dir" in done.stderr
    assert "Django under real servers" not in done.stdout  # nothing was started


@pytest.mark.multiprocess
@pytest.mark.parametrize("mode", ["file", "server"])
def test_json_and_plot_are_written_in_every_mode(
    tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    figures, chart = tmp_path / "run.json", tmp_path / "run.png"
    argv = ["-p", "2", "-n", "300", "--max-bytes", "4KiB", "--mode", mode]
    argv += ["--dir", str(tmp_path / "logs"), "--json", str(figures), "--plot", str(chart)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"figures written to {figures}" in out
    assert f"chart written to {chart}" in out
    data = json.loads(figures.read_text())
    assert data["ok"] is True
    assert data["settings"]["mode"] == mode
    assert data["records"] == 600
    assert data["verdict"]["found"] == 600
    assert data["verdict"]["lost"] == 0
    assert chart.read_bytes().startswith(b"\x89PNG")
