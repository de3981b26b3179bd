"""Real uWSGI workers log through the handler while requests arrive concurrently.

In uWSGI's default mode the app (and so the handler) is loaded in the master and the workers are
forked from C: Python's at-fork hooks do not run in them. ``--lazy-apps`` loads the app in each
worker instead. Both must lose nothing.

uWSGI is not in the ``dev`` extra (it compiles from source); ``python3 dev.py test`` installs it
when it can: ``.venv/bin/pip install 'uwsgi>=2.0.22'`` (needs a C compiler and Python headers).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from safe_rotating.verify import verify
from tests.servers import free_port, wait_until_serving

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 8192


def find_uwsgi() -> str | None:
    """The ``uwsgi`` beside this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / "uwsgi"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uwsgi")


UWSGI = find_uwsgi()


@pytest.mark.parametrize("lazy", [False, True], ids=["default-mode", "lazy-apps"])
def test_uwsgi_workers_lose_nothing(tmp_path: Path, lazy: bool) -> None:
    if UWSGI is None:  # skipped in the test, not by a mark: under CI=true this is a failure
        pytest.skip(
            "uWSGI is not installed (no uwsgi beside sys.executable nor on PATH): install it "
            "with .venv/bin/pip install 'uwsgi>=2.0.22' (needs gcc and the Python headers)"
        )
    workers, requests, per_request = 8, 64, 300
    port = free_port()
    env = {
        **os.environ,
        "SAFE_ROTATING_TEST_LOG": str(tmp_path / "app.log"),
        "SAFE_ROTATING_TEST_MAX_BYTES": str(MAX_BYTES),
    }
    command = [
        UWSGI,
        "--strict",
        "--master",
        "--processes", str(workers),
        "--http-socket", f"127.0.0.1:{port}",
        "--home", sys.prefix,  # the venv: safe_rotating, portalocker
        "--pythonpath", str(ROOT),  # the tests package
        "--module", "tests.apps.wsgi_logger:app",
        "--need-app",
        "--disable-logging",
        *(["--lazy-apps"] if lazy else []),
    ]  # fmt: skip
    output = tmp_path / "uwsgi.out"
    with output.open("wb") as out:
        server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=out)
    try:
        wait_until_serving(port, server, "uwsgi")

        def get(writer: int) -> str:
            url = f"http://127.0.0.1:{port}/log?writer={writer}&n={per_request}"
            with urllib.request.urlopen(url, timeout=60) as response:
                return str(response.read().decode().strip())

        with ThreadPoolExecutor(max_workers=16) as pool:
            pids = set(pool.map(get, range(requests)))
    except BaseException:
        print(output.read_text(errors="replace")[-4000:])  # shown with the failure
        raise
    finally:
        # uWSGI 2.0 takes SIGTERM as "reload"; SIGINT shuts the master and workers down.
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise
    assert code == 0, f"uwsgi exited with {code}:\n{output.read_text(errors='replace')[-4000:]}"
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
