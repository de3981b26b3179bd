"""``safe-rotating-stress --django`` on a small scale: real gunicorn, uWSGI and Celery workers
running the shipped Django site log through rotation, and every record is checked."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from safe_rotating._django_site.logsetup import LINE_PREFIX
from safe_rotating.stress import main as stress_main
from safe_rotating.stress.django import cli, scenarios, sinks
from safe_rotating.stress.django.result import ScenarioResult
from safe_rotating.stress.django.runner import run_scenario
from safe_rotating.stress.django.scenarios import (
    DEFAULT_SCENARIOS,
    SCENARIOS,
    DjangoStressConfig,
    Scenario,
    find_uwsgi,
)
from safe_rotating.verify import RequestVerdict

pytest.importorskip("django")
pytest.importorskip("celery")
pytest.importorskip("gunicorn")
pytestmark = pytest.mark.multiprocess

SMALL = {"workers": 4, "requests": 300, "records_per_request": 10, "max_bytes": 4096}


def small(directory: Path, **changes: object) -> DjangoStressConfig:
    return DjangoStressConfig(directory=str(directory), **{**SMALL, **changes})  # type: ignore[arg-type]


def require_uwsgi() -> None:
    if find_uwsgi() is None:  # a skip in the test: under CI=true it is a failure
        pytest.skip("uWSGI is not installed: .venv/bin/pip install 'uwsgi>=2.0.22'")


@pytest.mark.parametrize("name", ["gunicorn", "gunicorn-preload", "uwsgi", "celery"])
def test_real_workers_lose_nothing(tmp_path: Path, name: str) -> None:
    if name == "uwsgi":
        require_uwsgi()
    config = small(tmp_path, celery_concurrency=3)
    result = run_scenario(SCENARIOS[name], config)
    assert result.ok, result.problems()
    verdict = result.verdict
    assert verdict is not None
    assert verdict.found == verdict.expected == 300 * 10
    assert result.answered == result.sent == 300
    assert verdict.files > 20, "rotation must have happened many times"
    assert verdict.workers >= 2, "the records must come from several worker processes"
    assert result.pids_answering == verdict.workers
    assert result.server_exit == 0
    assert verdict.largest_file <= result.size_limit


@pytest.mark.parametrize("name", ["gunicorn", "gunicorn-preload", "uwsgi", "celery"])
def test_server_mode_loses_nothing(tmp_path: Path, name: str) -> None:
    """The workers' LogServerHandler send to a safe-rotating-server the stress started; its files
    get the same verdict. It is their only writer: no file passes maxBytes at all. With
    --preload (and uWSGI's default mode, Celery's prefork pool) the handler is built before the
    fork: each worker must send under a client id (a sequence space) of its own, or the server
    would take one worker's batches for duplicates of another's and drop them. Each worker must
    also deliver its last records as it stops: uWSGI through a graceful shutdown, Celery pool
    processes through the site's worker_process_shutdown hook."""
    if name == "uwsgi":
        require_uwsgi()
    config = small(tmp_path, mode="server", celery_concurrency=3)
    result = run_scenario(SCENARIOS[name], config)
    assert result.ok, result.problems()
    verdict = result.verdict
    assert verdict is not None
    assert verdict.found == verdict.expected == 300 * 10
    assert (verdict.lost, verdict.duplicated, verdict.torn, verdict.order_breaks) == (0, 0, 0, 0)
    assert result.answered == result.sent == 300
    assert verdict.files > 20, "the server must have rotated many times"
    assert verdict.workers >= 2
    assert result.pids_answering == verdict.workers
    assert result.size_limit == 4096
    assert verdict.largest_file <= 4096
    assert (result.server_exit, result.log_server_exit, result.spool_left) == (0, 0, 0)
    counts = result.log_server
    assert counts["records_received"] == counts["records_written"] == 3000
    assert counts["duplicate_batches_suppressed"] == 0
    assert counts.get("dropped", 0) == counts.get("refused_frames", 0) == 0  # no sample when 0
    assert counts["clients"] == verdict.workers, "one client id per worker process"
    first = (tmp_path / "logs" / "app.log").read_bytes().splitlines()[0]
    assert re.match(LINE_PREFIX + rb"req ", first), first  # the line file mode writes


def test_a_log_server_that_cannot_start_stops_the_run_before_the_web_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail = [sys.executable, "-c", "import sys; sys.exit(3)"]
    monkeypatch.setattr(sinks.ServerSink, "command", lambda self: fail)
    result = run_scenario(SCENARIOS["gunicorn"], small(tmp_path, mode="server"))
    assert not result.ok
    assert "safe-rotating-server exited during start-up with status 3" in result.error
    assert not (tmp_path / "server.out").exists(), "no web server may have been started"


def test_the_stdlib_handler_loses_records_in_the_same_run(tmp_path: Path) -> None:
    """Loss is racy: up to three runs; one that loses records is enough."""
    result = None
    for attempt in range(3):
        config = small(tmp_path / str(attempt), handler="stdlib", max_bytes=2048)
        result = run_scenario(SCENARIOS["gunicorn"], config)
        assert result.error == "", result.error
        assert result.verdict is not None
        if result.verdict.lost:
            break
    assert result is not None
    assert result.verdict is not None
    assert result.verdict.lost > 0, result.verdict.summary()
    assert result.label == "FAIL (expected: not process-safe)"


def test_the_command_reports_both_handlers_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stdlib comparison fails (or passes by luck) without changing the exit status."""
    out = tmp_path / "runs.json"
    argv = [
        "--django", "--scenarios", "gunicorn-preload", "--workers", "3", "--requests", "120",
        "--records-per-request", "10", "--max-bytes", "2KiB", "--json", str(out),
        "--plot", str(tmp_path / "runs.png"), "--dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    assert stress_main(argv) == 0
    printed = capsys.readouterr().out
    assert "scenario" in printed
    assert "verdict" in printed
    runs = json.loads(out.read_text())["runs"]
    assert [(r["scenario"], r["handler"], r["mode"]) for r in runs] == [
        ("gunicorn-preload", "safe", "file"),
        ("gunicorn-preload", "safe", "server"),
        ("gunicorn-preload", "stdlib", "file"),
    ]
    for key in ("ok", "expected", "lost", "duplicated", "torn", "order_breaks", "files"):
        assert key in runs[0]
    for run in runs[:2]:
        assert run["ok"] is True, run["problems"]
        assert run["oversize_files"] == 0
        assert run["expected"] == 1200
    assert runs[1]["size_limit"] == 2048  # server mode: maxBytes, no allowance
    assert runs[1]["log_server_exit"] == 0
    assert runs[1]["log_server"]["records_written"] == 1200
    assert "size limit in server mode: maxBytes = 2048 B" in printed
    assert "safe-rotating-server received 1200 records, wrote 1200" in printed
    stdlib = runs[2]["verdict"]
    assert stdlib in ("FAIL (expected: not process-safe)", "PASS (this time; not process-safe)")
    assert stdlib in printed
    assert (tmp_path / "runs.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("handler", "failing", "status"),
    [
        ("both", "stdlib", 0),  # the comparison is expected to fail
        ("both", "safe", 1),
        ("stdlib", "stdlib", 1),  # asked for on its own, its failure is the verdict
        ("safe", "safe", 1),
    ],
)
def test_the_exit_status_counts_the_stdlib_only_when_it_runs_alone(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    handler: str,
    failing: str,
    status: int,
) -> None:
    def fake(
        scenario: Scenario, config: DjangoStressConfig, on_progress: object = None
    ) -> ScenarioResult:
        result = ScenarioResult(
            scenario.name, config.handler, config.mode, server_exit=0, log_server_exit=0
        )
        if config.handler == failing:
            result.error = "records went missing"
        else:
            result.answered = 1
            result.verdict = RequestVerdict(requests=1, per_request=0)
        return result

    monkeypatch.setattr(cli, "run_scenario", fake)
    argv = ["--scenarios", "gunicorn", "--handler", handler, "--dir", str(tmp_path)]
    assert cli.main(argv) == status
    printed = capsys.readouterr().out
    expected = "FAIL (expected: not process-safe)" if failing == "stdlib" else "FAIL"
    assert expected in printed


def test_the_default_runs_file_mode_then_server_mode_then_the_stdlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs: list[tuple[str, str, str]] = []

    def fake(
        scenario: Scenario, config: DjangoStressConfig, on_progress: object = None
    ) -> ScenarioResult:
        runs.append((scenario.name, config.handler, config.mode))
        return ScenarioResult(scenario.name, config.handler, config.mode, skipped="fake")

    monkeypatch.setattr(cli, "run_scenario", fake)
    assert cli.main(["--dir", str(tmp_path)]) == 0
    names = DEFAULT_SCENARIOS
    assert names == ("gunicorn", "gunicorn-preload", "uwsgi")
    assert runs == [
        *[(n, "safe", "file") for n in names],
        *[(n, "safe", "server") for n in names],
        *[(n, "stdlib", "file") for n in names],
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}-{kind}" for n in names for kind in ("file", "server", "stdlib")
    )
    assert "safe_rotating, server mode" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("handler", "mode", "runs"),
    [
        ("both", "both", [("safe", "file"), ("safe", "server"), ("stdlib", "file")]),
        ("both", "server", [("safe", "server"), ("stdlib", "file")]),
        ("safe", "both", [("safe", "file"), ("safe", "server")]),
        ("safe", "file", [("safe", "file")]),
        ("stdlib", "both", [("stdlib", "file")]),
    ],
)
def test_the_plan_of_runs(handler: str, mode: str, runs: list[tuple[str, str]]) -> None:
    assert cli.plan(handler, mode) == runs


def test_a_missing_uwsgi_is_a_skip_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(scenarios, "find_uwsgi", lambda: None)
    assert cli.main(["--scenarios", "uwsgi", "--handler", "safe", "--dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "SKIPPED" in printed
    assert "uWSGI is not installed" in printed


def test_server_mode_needs_the_server_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "safe_rotating.server" else real(name, *a),
    )
    with pytest.raises(SystemExit) as exc:  # refused before anything starts, as a usage error
        cli.main(["--mode", "server", "--handler", "safe"])
    assert exc.value.code == 2
    assert "server mode needs safe_rotating.server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenarios", "apache"], "unknown scenario 'apache'"),
        (["--workers", "0"], "must be at least 1"),
        (["--max-bytes", "lots"], "--max-bytes"),
        (["--handler", "stdlib", "--mode", "server"], "the stdlib comparison (--handler stdlib)"),
        (["--mode", "cluster"], "invalid choice: 'cluster'"),
    ],
)
def test_bad_options_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_console_script_and_python_m_reach_the_django_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "safe_rotating.stress", "--django", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--records-per-request" in done.stdout
    assert "gunicorn-preload" in done.stdout
    plain = subprocess.run(
        [sys.executable, "-m", "safe_rotating.stress", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--django" in plain.stdout
