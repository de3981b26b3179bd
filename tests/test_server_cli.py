"""The server's command line says what it will do: no guessed flags, no silent non-rotation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .logserver import eventually, run_server, server_command


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    "command",
    [
        server_command("--file", "/tmp/x.log", "--max-byte", "1MiB", "--check-config"),
        [sys.executable, "-m", "safe_rotating.stress", "--process", "2"],
    ],
    ids=["server", "stress"],
)
def test_an_abbreviated_flag_is_refused(command: list[str]) -> None:
    done = run(*command)
    assert done.returncode == 2
    assert "unrecognized arguments" in done.stderr


def test_check_config_warns_that_max_bytes_alone_does_not_rotate(tmp_path: Path) -> None:
    log = str(tmp_path / "app.log")
    done = run(*server_command("--file", log, "--max-bytes", "1MiB", "--check-config"))
    assert done.returncode == 0
    assert "backup_count is 0, so the file is never rotated by size" in done.stderr
    assert "add --backup-count N" in done.stderr
    with_backups = server_command(
        "--file", log, "--max-bytes", "1MiB", "--backup-count", "3", "--check-config"
    )
    assert "warning" not in run(*with_backups).stderr


def test_the_server_warns_when_it_starts_with_max_bytes_alone(tmp_path: Path) -> None:
    with run_server(tmp_path, "--max-bytes", "1MiB") as server:
        eventually(lambda: "never rotated by size" in server.stderr, 5.0, "the warning")
        assert server.process.poll() is None
