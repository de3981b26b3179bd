"""Real gunicorn workers log through the handler while requests arrive concurrently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from safe_rotating.verify import verify
from tests.servers import free_port, request_all, wait_until_serving

pytest.importorskip("gunicorn")
pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "per-worker"])
def test_gunicorn_workers_lose_nothing(tmp_path: Path, preload: bool) -> None:
    workers, requests, per_request = 8, 64, 300
    port = free_port()
    env = {
        **os.environ,
        "SAFE_ROTATING_TEST_LOG": str(tmp_path / "app.log"),
        "SAFE_ROTATING_TEST_MAX_BYTES": "16384",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--worker-class", "sync",
        "--log-level", "warning",
        *(["--preload"] if preload else []),
        "tests.apps.wsgi_logger:app",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=tmp_path)
    try:
        wait_until_serving(port, server, "gunicorn")

        pids = request_all(port, requests, f"n={per_request}", threads=16, timeout=60)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert len(pids) > 1, "the load must be spread over several workers"
    verdict = verify(
        str(tmp_path),
        "app.log",
        requests,
        per_request,
        max_bytes=16384,
        backup_count=10_000,
        size_allowance=workers * 120,
    )
    assert verdict.ok, verdict.summary()
    assert verdict.files > 50
