"""``dev.py``, the two commands of the README: ``test`` covers every CPython the package claims,
and stops before installing anything when one of them cannot be found."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402

tomllib = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")


def run_dev(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``dev.py`` with no pyenv and nothing on ``PATH``: only the running interpreter exists."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(empty), "PYENV_ROOT": str(empty)}
    return subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_classifiers_claim_exactly_the_versions_the_test_command_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    claimed = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert tuple(claimed) == dev.SUPPORTED
    assert project["requires-python"] == f">={dev.SUPPORTED[0]}"


def test_a_missing_interpreter_stops_the_run_by_name_before_anything_is_installed(
    tmp_path: Path,
) -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    others = [version for version in dev.SUPPORTED if version != here]
    done = run_dev("test", tmp_path=tmp_path)
    assert done.returncode != 0
    assert f"CPython {', '.join(others)} not found" in done.stderr, done.stderr
    assert f"pyenv install {' '.join(others)}" in done.stderr, done.stderr
    assert "+ " not in done.stdout, done.stdout  # no venv made, no pip run


def test_an_unsupported_version_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    done = run_dev("test", "3.9", tmp_path=tmp_path)
    assert done.returncode != 0
    assert "3.9: not a supported version (3.10, 3.11, 3.12, 3.13)" in done.stderr, done.stderr


def test_an_unknown_task_prints_the_usage(tmp_path: Path) -> None:
    done = run_dev("tests", tmp_path=tmp_path)
    assert done.returncode != 0
    assert "usage: python3 dev.py demo | python3 dev.py test [3.X ...]" in done.stderr
