"""Long runs, opt-in with ``pytest -m slow`` (deselected by default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_rotating.stress.config import StressConfig
from safe_rotating.stress.runner import run_stress

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.mark.parametrize("start_method", ["spawn", "fork", "forkserver"])
def test_soak_many_writers_with_deletion(tmp_path: Path, start_method: str) -> None:
    """16 processes x 4 threads x 20 000 records through thousands of rotations, keeping 20
    backups: every surviving writer's run is unbroken, files and sizes within limits."""
    config = StressConfig(
        directory=str(tmp_path),
        processes=16,
        threads=4,
        records=20_000,
        max_bytes=64 * 1024,
        backup_count=20,
        start_method=start_method,
    )
    result = run_stress(config)
    assert result.ok, result.report()
    assert result.verdict.files == 21


def test_soak_everything_kept(tmp_path: Path) -> None:
    config = StressConfig(
        directory=str(tmp_path), processes=8, threads=2, records=50_000, max_bytes=1024 * 1024
    )
    result = run_stress(config)
    assert result.ok, result.report()
    assert result.verdict.found == config.total
