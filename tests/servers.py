"""Helpers for the tests that start a real WSGI server (gunicorn, uWSGI) as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_serving(
    port: int, server: subprocess.Popen[bytes], name: str, timeout: float = 60
) -> None:
    """Return once ``port`` accepts connections; fail if ``server`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.poll()
        assert code is None, f"{name} exited during start-up with status {code}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{name} did not start listening within {timeout:g} s")


ROOT = Path(__file__).resolve().parent.parent


def find_uwsgi() -> str | None:
    """The ``uwsgi`` beside this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / "uwsgi"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uwsgi")


UWSGI = find_uwsgi()


def require_uwsgi() -> str:
    """The uwsgi binary, or a skip (in the test, not a mark: under CI=true a skip fails)."""
    if UWSGI is None:
        pytest.skip(
            "uWSGI is not installed (no uwsgi beside sys.executable nor on PATH): install it "
            "with .venv/bin/pip install 'uwsgi>=2.0.22' (needs gcc and the Python headers)"
        )
    return UWSGI


def uwsgi_command(port: int, workers: int, module: str, lazy: bool) -> list[str]:
    """uWSGI with a master and ``workers`` processes serving ``module`` over HTTP; its default
    mode (the app loaded in the master, workers forked from C) unless ``lazy``."""
    return [
        require_uwsgi(),
        "--strict",
        "--master",
        "--processes", str(workers),
        "--http-socket", f"127.0.0.1:{port}",
        "--home", sys.prefix,  # the venv: safe_rotating, portalocker
        "--pythonpath", str(ROOT),  # the tests package
        "--module", module,
        "--need-app",
        "--disable-logging",
        *(["--lazy-apps"] if lazy else []),
    ]  # fmt: skip


@contextlib.contextmanager
def running_uwsgi(
    command: list[str], env: dict[str, str], directory: Path, port: int
) -> Iterator[None]:
    """Run uWSGI until the block ends, then stop it with SIGINT (uWSGI 2.0 takes SIGTERM as
    "reload"), and fail unless it exits 0. Its output is shown when anything fails; a hung
    worker is killed with the whole process group, and the test fails."""
    output = directory / "uwsgi.out"
    with output.open("wb") as out:
        server = subprocess.Popen(
            command, env=env, cwd=directory, stdout=out, stderr=out, start_new_session=True
        )
    try:
        wait_until_serving(port, server, "uwsgi")
        yield
    except BaseException:
        print(output.read_text(errors="replace")[-4000:])  # shown with the failure
        raise
    finally:
        try:
            code = _interrupt(server, 60)
        except subprocess.TimeoutExpired:
            subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:20,args", "-g", str(server.pid)])
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            print(output.read_text(errors="replace")[-4000:])  # shown with the failure
            raise
    assert code == 0, f"uwsgi exited with {code}:\n{output.read_text(errors='replace')[-4000:]}"


def _interrupt(server: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGINT ``server`` until it exits; its exit status. A SIGINT that arrives after a process
    loaded the app but before uWSGI set its own handlers is taken by Python's handler and lost
    (seen under load: master and worker idle in epoll for the whole minute). The master passes
    one SIGINT on to its workers and then waits for them, so a worker that lost it (a worker
    spawned just before the stop) never ends: after the first 5 s every process of the group
    gets SIGINT again, as an operator's ``kill -INT -<pgid>`` would."""
    deadline = time.monotonic() + timeout
    first = True
    while True:
        if first:
            server.send_signal(signal.SIGINT)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGINT)
        first = False
        try:
            return server.wait(min(5.0, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise


def request_all(port: int, requests: int, query: str, threads: int, timeout: float) -> set[str]:
    """GET ``/log?writer=N&<query>`` for N in ``range(requests)``, ``threads`` at a time; the
    set of answers (the pids of the workers that served them)."""

    def get(writer: int) -> str:
        url = f"http://127.0.0.1:{port}/log?writer={writer}&{query}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode().strip())

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return set(pool.map(get, range(requests)))
