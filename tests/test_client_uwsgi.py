"""``LogServerHandler`` in real uWSGI workers, in its default mode and with ``--lazy-apps``.

In the default mode the app is imported in the master, which later forks every worker from C
(at start-up and whenever one is respawned). A thread running in the master at that instant may
hold the GIL, and the worker then waits for it forever: so the handler runs no thread in a uWSGI
master. What the master logs goes straight to its spool, left unlocked, and the workers deliver
it. Without that, this test hangs its workers about one run in three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.servers import free_port, wait_until_serving
from tests.test_client import writers_of
from tests.test_uwsgi import ROOT, UWSGI
from tests.wire_peer import WirePeer

pytestmark = pytest.mark.multiprocess

AT_IMPORT = 999  # the writer id of the record tests/apps/wsgi_client.py logs at import


@pytest.mark.parametrize("lazy", [False, True], ids=["default-mode", "lazy-apps"])
def test_uwsgi_workers_deliver_everything_once(tmp_path: Path, lazy: bool) -> None:
    if UWSGI is None:  # skipped in the test, not by a mark: under CI=true this is a failure
        pytest.skip(
            "uWSGI is not installed (no uwsgi beside sys.executable nor on PATH): install it "
            "with .venv/bin/pip install 'uwsgi>=2.0.22' (needs gcc and the Python headers)"
        )
    workers, requests, per_request = 4, 32, 300
    port = free_port()
    with WirePeer().start() as peer:
        env = {
            **os.environ,
            "SAFE_ROTATING_TEST_ADDRESS": peer.address,
            "SAFE_ROTATING_TEST_SPOOL": str(tmp_path / "spool"),
        }
        command = [
            UWSGI,
            "--strict",
            "--master",
            "--processes", str(workers),
            "--http-socket", f"127.0.0.1:{port}",
            "--home", sys.prefix,
            "--pythonpath", str(ROOT),
            "--module", "tests.apps.wsgi_client:app",
            "--need-app",
            "--disable-logging",
            *(["--lazy-apps"] if lazy else []),
        ]  # fmt: skip
        output = tmp_path / "uwsgi.out"
        with output.open("wb") as out:
            server = subprocess.Popen(
                command, env=env, cwd=tmp_path, stdout=out, stderr=out, start_new_session=True
            )
        try:
            wait_until_serving(port, server, "uwsgi")

            def get(writer: int) -> str:
                url = f"http://127.0.0.1:{port}/log?writer={writer}&n={per_request}&sleep=0.05"
                with urllib.request.urlopen(url, timeout=20) as response:
                    return str(response.read().decode().strip())

            with ThreadPoolExecutor(max_workers=8) as pool:
                pids = set(pool.map(get, range(requests)))
            at_import = workers if lazy else 1  # lazy: every worker imports the app
            expected = requests * per_request + at_import
            deadline = time.monotonic() + 20
            while peer.count() < expected and time.monotonic() < deadline:
                time.sleep(0.05)
        except BaseException:
            print(output.read_text(errors="replace")[-4000:])  # shown with the failure
            raise
        finally:
            server.send_signal(signal.SIGINT)  # uWSGI 2.0: SIGINT stops master and workers
            try:
                code = server.wait(30)
            except subprocess.TimeoutExpired:  # a hung worker: end them all, then fail
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
                raise
        assert code == 0, output.read_text(errors="replace")[-4000:]
        assert len(pids) == workers, "every worker serves requests (none hangs after the fork)"
        found = writers_of(peer.messages())
        for writer in range(requests):
            assert found.get(writer) == list(range(per_request)), f"request {writer}"
        assert found[AT_IMPORT] == [0] * at_import
        assert peer.duplicates == 0
        assert not list((tmp_path / "spool").rglob("*.spool")), "a spool was not delivered"
