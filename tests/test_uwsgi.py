"""Real uWSGI workers log through the handler while requests arrive concurrently.

In uWSGI's default mode the app (and so the handler) is loaded in the master and the workers are
forked from C: Python's at-fork hooks do not run in them. ``--lazy-apps`` loads the app in each
worker instead. Both must lose nothing.

uWSGI is not in the ``dev`` extra (it compiles from source); ``python3 dev.py test`` installs it
when it can: ``.venv/bin/pip install 'uwsgi>=2.0.22'`` (needs a C compiler and Python headers).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safe_rotating.verify import verify
from tests.servers import free_port, request_all, running_uwsgi, uwsgi_command

pytestmark = pytest.mark.multiprocess

MAX_BYTES = 8192


@pytest.mark.parametrize("lazy", [False, True], ids=["default-mode", "lazy-apps"])
def test_uwsgi_workers_lose_nothing(tmp_path: Path, lazy: bool) -> None:
    workers, requests, per_request = 8, 64, 300
    port = free_port()
    env = {
        **os.environ,
        "SAFE_ROTATING_TEST_LOG": str(tmp_path / "app.log"),
        "SAFE_ROTATING_TEST_MAX_BYTES": str(MAX_BYTES),
    }
    command = uwsgi_command(port, workers, "tests.apps.wsgi_logger:app", lazy)
    with running_uwsgi(command, env, tmp_path, port):
        pids = request_all(port, requests, f"n={per_request}", threads=16, timeout=60)
    assert len(pids) > 1, "the load must be spread over several workers"
    verdict = verify(
        str(tmp_path),
        "app.log",
        requests,
        per_request,
        max_bytes=MAX_BYTES,
        backup_count=10_000,
        size_allowance=workers * 120,
    )
    assert verdict.ok, verdict.summary()
    assert verdict.files > 100
