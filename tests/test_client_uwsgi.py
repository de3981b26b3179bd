"""``LogServerHandler`` in real uWSGI workers, in its default mode and with ``--lazy-apps``.

In the default mode the app is imported in the master, which later forks every worker from C
(at start-up and whenever one is respawned). A thread running in the master at that instant may
hold the GIL, and the worker then waits for it forever: so the handler runs no thread in a uWSGI
master. What the master logs goes straight to its spool, left unlocked, and the workers deliver
it. Without that, this test hangs its workers about one run in three.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port, request_all, running_uwsgi, uwsgi_command
from tests.test_client import writers_of
from tests.wire_peer import WirePeer

pytestmark = pytest.mark.multiprocess

AT_IMPORT = 999  # the writer id of the record tests/apps/wsgi_client.py logs at import


@pytest.mark.parametrize("lazy", [False, True], ids=["default-mode", "lazy-apps"])
def test_uwsgi_workers_deliver_everything_once(tmp_path: Path, lazy: bool) -> None:
    workers, requests, per_request = 4, 32, 300
    port = free_port()
    with WirePeer().start() as peer:
        env = {
            **os.environ,
            "SAFE_ROTATING_TEST_ADDRESS": peer.address,
            "SAFE_ROTATING_TEST_SPOOL": str(tmp_path / "spool"),
        }
        command = uwsgi_command(port, workers, "tests.apps.wsgi_client:app", lazy)
        with running_uwsgi(command, env, tmp_path, port):
            query = f"n={per_request}&sleep=0.05"
            pids = request_all(port, requests, query, threads=8, timeout=20)
            at_import = workers if lazy else 1  # lazy: every worker imports the app
            expected = requests * per_request + at_import
            deadline = time.monotonic() + 20
            while peer.count() < expected and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(pids) == workers, "every worker serves requests (none hangs after the fork)"
        found = writers_of(peer.messages())
        for writer in range(requests):
            assert found.get(writer) == list(range(per_request)), f"request {writer}"
        assert found[AT_IMPORT] == [0] * at_import
        assert peer.duplicates == 0
        assert not list((tmp_path / "spool").rglob("*.spool")), "a spool was not delivered"


@pytest.mark.parametrize("lazy", [False, True], ids=["default-mode", "lazy-apps"])
def test_a_worker_that_ends_without_atexit_has_handed_its_records_over(
    tmp_path: Path, lazy: bool
) -> None:
    """uWSGI skips Python's atexit in a worker it counts as busy when it ends (and a graceful
    stop ends an idle worker from a signal handler). After each request the handler hands what
    the request logged to the server's socket or its spool, so a worker that then ends without
    any exit hook (here: ``os._exit`` in its next request) has lost nothing. With a flush
    interval longer than the test, nothing would have left on its own."""
    port = free_port()
    with WirePeer().start() as peer:
        env = {
            **os.environ,
            "SAFE_ROTATING_TEST_ADDRESS": peer.address,
            "SAFE_ROTATING_TEST_SPOOL": str(tmp_path / "spool"),
        }
        command = uwsgi_command(port, 1, "tests.apps.wsgi_exit:app", lazy)
        with running_uwsgi(command, env, tmp_path, port):
            for writer in range(3):
                url = f"http://127.0.0.1:{port}/log?writer={writer}&n=500"
                with urllib.request.urlopen(url, timeout=20) as answer:
                    answer.read()
                with contextlib.suppress(OSError):  # the worker ends without an answer
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/die", timeout=10)
            assert peer.wait_for(1500, timeout=10), f"{peer.count()} of 1500 arrived"
        found = writers_of(peer.messages())
        assert {w: len(s) for w, s in found.items()} == {0: 500, 1: 500, 2: 500}
        assert all(seqs == list(range(500)) for seqs in found.values())
