"""Real worker processes under load while their log server is SIGKILLed and started again.

The shipped Django site (:mod:`safe_rotating._django_site`, server mode) runs under gunicorn and
under uWSGI, and a Celery prefork worker, whose pool processes are replaced every few tasks,
runs the same records task (:mod:`tests.celery_apps.records_app`). Client threads send requests
(tasks) that each log ``PER_REQUEST`` numbered records through ``LogServerHandler``. Once part
of the load is done, the ``safe-rotating-server`` is killed with SIGKILL and, ``OUTAGE`` seconds
later, started again on the same port and state directory; the load goes on a little after
that, then stops, and the web server (the Celery worker) is stopped at once, gracefully. Its
worker processes must deliver at exit what they still hold in memory and in their spools.

Once every process has ended, the server's files must hold every record of every answered
request, each process's records in its own order, no spool left behind; the only duplicates
allowed are those of the kill (rule 9): per client id, that is per process, at most one run of
at most one batch written twice.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import _django_site as site
from safe_rotating._django_site.celeryconf import celery_config
from safe_rotating._django_site.logsetup import LINE_PREFIX, SERVER_FORMAT
from safe_rotating.verify import (
    RequestVerdict,
    parse_request_line,
    request_line_pattern,
    verify_requests,
)
from tests.logserver import LogServer, eventually, start_server
from tests.servers import free_port, require_uwsgi
from tests.support import duplicate_runs

pytest.importorskip("django")
pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent
PER_REQUEST = 40  # records each request (task) logs
KILL_AT = 4000  # records answered before the server is killed
OUTAGE = 1.0  # seconds between the kill and the new server's start
AFTER = 400  # records answered after the new server started; then the load stops
BATCH = 256  # LogServerHandler's default batch_size: the longest run written twice
MAX_BYTES = 512 * 1024  # the server rotates during the run, the kill included
STOP_TIMEOUT = 60.0
TASKS_PER_CHILD = 40  # a Celery pool process ends (normally) after this many tasks
TASK = "logdemo.log_records"  # the records task of tests/celery_apps/records_app.py


# --- the load -------------------------------------------------------------------------------------


class Load:
    """Requests with rising ids, sent by client threads until :meth:`stop`; ``answered`` maps
    each request the client saw answered (with every record logged) to the pid that did it."""

    def __init__(self, clients: list[Callable[[Load], None]], session: int) -> None:
        self.session = session  # the session the test started: every answer from it
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.answered: dict[int, int | None] = {}
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=c, args=(self,), daemon=True) for c in clients]
        for thread in self.threads:
            thread.start()

    @property
    def records(self) -> int:
        return len(self.answered) * PER_REQUEST

    def next_id(self) -> int | None:
        return None if self.stopping.is_set() else next(self.ids)

    def done(self, request: int, answer: dict[str, Any]) -> None:
        if answer.get("request") != request or answer.get("records") != PER_REQUEST:
            self.fail(f"request {request}: unexpected answer {answer!r}")
            return
        pid = int(answer["pid"])
        try:
            theirs = os.getsid(pid) != self.session
        except ProcessLookupError:  # ended since (a recycled Celery pool process): unknown
            theirs = False
        if theirs:  # the port was free a moment ago; another test's site took it since
            self.fail(f"request {request} was answered by pid {pid}, not one of ours")
            return
        with self.lock:
            self.answered[request] = pid

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what[:300])

    def wait_for(self, records: int, what: str) -> None:
        def reached() -> bool:
            assert not self.failures, self.failures[:3]
            assert any(t.is_alive() for t in self.threads), "the load ended on its own"
            return self.records >= records

        eventually(reached, 60, f"{records} records answered {what}")

    def stop(self) -> None:
        """No new request; return once every request sent has been answered (or failed)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(STOP_TIMEOUT)
            assert not thread.is_alive(), "a client thread did not finish"


def http_client(port: int) -> Callable[[Load], None]:
    """A client thread: one request at a time, one connection per request (the sync workers
    of gunicorn and uWSGI's http-socket close it after each answer)."""

    def client(load: Load) -> None:
        while (request := load.next_id()) is not None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                path = f"/stress?request={request}&n={PER_REQUEST}"
                conn.request("GET", path, headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                load.fail(f"request {request}: {exc!r}")
                continue
            finally:
                conn.close()
            if response.status != 200:
                load.fail(f"request {request}: HTTP {response.status} {body[:200]!r}")
                continue
            load.done(request, json.loads(body))

    return client


def celery_client(app: Any, window: int = 6) -> Callable[[Load], None]:
    """A client thread: keeps ``window`` tasks in flight; once stopping, waits for the rest."""

    def client(load: Load) -> None:
        pending: dict[int, Any] = {}
        give_up = 0.0
        while True:
            while len(pending) < window and (request := load.next_id()) is not None:
                pending[request] = app.send_task(TASK, args=[request, PER_REQUEST])
            if not pending:
                return
            if load.stopping.is_set():
                give_up = give_up or time.monotonic() + STOP_TIMEOUT
                if time.monotonic() > give_up:
                    load.fail(f"no result for tasks {sorted(pending)[:5]} after the load")
                    return
            finished = [r for r, result in pending.items() if result.ready()]
            for request in finished:
                result = pending.pop(request)
                if result.successful():
                    load.done(request, result.result)
                else:
                    load.fail(f"task {request}: {result.state} {result.result!r}")
            if not finished:
                time.sleep(0.02)

    return client


# --- the log server, killed and started again -----------------------------------------------------


class Outage:
    """The log server of one test: started, SIGKILLed mid-load and started again on the same
    port and state directory, then stopped once the workers have ended."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.out = tmp_path / "logs"
        self.state = tmp_path / "server-state"
        self.spool = tmp_path / "spool"
        for directory in (self.out, self.state, self.spool):
            directory.mkdir()
        self.port = free_port()
        self.server: LogServer = self._start()
        self.at_kill = self.at_restart = 0

    def _start(self) -> LogServer:
        args = (
            "--format", SERVER_FORMAT, "--state-dir", str(self.state),
            "--max-bytes", str(MAX_BYTES), "--backup-count", "10000",
        )  # fmt: skip
        env = {**os.environ, "TZ": "UTC"}  # the workers' Django runs in UTC too
        return start_server(self.out, *args, port=self.port, err_dir=self.tmp, env=env)

    def site_env(self) -> dict[str, str]:
        """The environment of the shipped site (and of the Celery app) in server mode."""
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": site.SETTINGS_MODULE,
            "SAFE_ROTATING_LOG_MODE": "server",
            "SAFE_ROTATING_SERVER": f"127.0.0.1:{self.port}",
            "SAFE_ROTATING_SPOOL_DIR": str(self.spool),
            "SAFE_ROTATING_CELERY_DIR": str(self.tmp / "celery"),
            "SAFE_ROTATING_WORKERS": "4",
            "SAFE_ROTATING_GUNICORN_LOGLEVEL": "warning",
            "PYTHONPATH": str(ROOT),
        }

    def kill_and_restart_under(self, load: Load) -> None:
        """Kill the server once ``KILL_AT`` records are answered, start it again after
        ``OUTAGE`` seconds, let ``AFTER`` more records be answered, then stop the load."""
        load.wait_for(KILL_AT, "before the kill")
        self.server.signal(signal.SIGKILL)
        self.server.process.wait()
        self.at_kill = load.records
        time.sleep(OUTAGE)
        self.server = self._start()
        self.at_restart = load.records
        load.wait_for(self.at_restart + AFTER, "after the restart")
        load.stop()
        assert not load.failures, load.failures[:3]

    def close(self) -> None:
        if self.server.process.poll() is None:
            self.server.process.kill()
            self.server.process.wait()


_PATTERN = request_line_pattern(LINE_PREFIX)


def pid_and_seq(line: bytes) -> tuple[int, int] | None:
    """A record line's process and sequence number (its writer is its process)."""
    record = parse_request_line(line, _PATTERN)
    return None if record is None else (record.pid, record.seq)


def incomplete(directory: Path, load: Load) -> list[tuple[int, int | None, int]]:
    """Answered requests with records missing: (request, the pid that answered, how many)."""
    found: dict[int, set[int]] = {}
    for path in directory.iterdir():
        if path.name.startswith("app.log"):
            for line in path.read_bytes().splitlines():
                if (record := parse_request_line(line, _PATTERN)) is not None:
                    found.setdefault(record.request, set()).add(record.position)
    return [
        (request, pid, PER_REQUEST - len(found.get(request, ())))
        for request, pid in sorted(load.answered.items())
        if len(found.get(request, ())) < PER_REQUEST
    ]


def _said(output: str) -> str:
    """The handlers' reports in the workers' output (whole), else its last lines."""
    reports = output.split("--- Logging error ---")[1:]
    return "\n---\n".join(reports)[-6000:] if reports else output[-2000:]


def judge(outage: Outage, load: Load, output: str) -> RequestVerdict:
    """Every answered request complete, each pid's records in order and without gaps, at most
    one torn line (the kill), duplicates within rule 9, nothing reported by the handlers."""
    left = sorted(str(p.relative_to(outage.spool)) for p in outage.spool.rglob("*.spool"))
    code = outage.server.stop()
    assert code == 0, outage.server.stderr
    verdict = verify_requests(str(outage.out), "app.log", load.answered, PER_REQUEST,
                              prefix=LINE_PREFIX)  # fmt: skip
    runs = duplicate_runs(outage.out, pid_and_seq)
    summary = (
        f"{verdict.summary()}; records answered at the kill {outage.at_kill}, at the restart "
        f"{outage.at_restart}, in all {load.records}; duplicate runs {runs}"
    )
    print(summary)
    assert verdict.lost == 0, (
        f"{summary}; (request, pid, missing): {incomplete(outage.out, load)[:5]}; spools left "
        f"{left}\nworkers said: {_said(output)}\nserver said: {outage.server.stderr[-3000:]}"
    )
    assert verdict.found == len(load.answered) * PER_REQUEST, summary
    assert (verdict.sequence_gaps, verdict.order_breaks, verdict.wrong_worker) == (0, 0, 0), summary
    # A kill during a write that spans pages can cut that write short: one cut line at most.
    assert verdict.torn <= 1, summary
    assert verdict.workers >= 2, summary
    for pid, lengths in runs.items():
        assert len(lengths) <= 1, f"pid {pid}: duplicate runs {lengths}; {summary}"
        assert lengths[0] <= BATCH, f"pid {pid}: duplicate runs {lengths}; {summary}"
    assert verdict.duplicated == sum(sum(lengths) for lengths in runs.values()), summary
    assert not left, f"spools left undelivered: {left}; {summary}"
    assert "Logging error" not in output, output[-3000:]
    assert "not delivered" not in output, output[-3000:]
    return verdict


@contextmanager
def started(
    command: list[str], env: dict[str, str], directory: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``command`` in its own session, its output in a file; killed with its process group if
    the test leaves it running."""
    output = directory / "workers.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=directory, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        yield process, output
    except BaseException:
        print(output.read_text(errors="replace")[-4000:])  # shown with the failure
        raise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def stop(process: subprocess.Popen[bytes], signum: int, output: Path) -> str:
    """Send ``signum`` and wait for the exit; it must be 0. The process's output."""
    process.send_signal(signum)
    code = process.wait(STOP_TIMEOUT)
    text = output.read_text(errors="replace")
    assert code == 0, f"exited with {code}:\n{text[-3000:]}"
    return text


def wait_for_site(port: int, process: subprocess.Popen[bytes], output: Path) -> None:
    """Until the site answers a request that logs nothing."""

    def answers() -> bool:
        code = process.poll()
        assert code is None, f"exited with {code}: {output.read_text(errors='replace')[-3000:]}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/stress?request=0&n=0", headers={"Connection": "close"})
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except OSError:
            return False

    eventually(answers, 90, "the site answering")


# --- the tests ------------------------------------------------------------------------------------


def _site_across_a_server_kill(tmp_path: Path, command: list[str]) -> None:
    """The Django site served by ``command`` (bound to ``SAFE_ROTATING_BIND``) under load from
    8 client threads while the log server is killed and restarted; stopped with SIGTERM right
    after the load; then judged."""
    outage = Outage(tmp_path)
    port = free_port()
    env = {**outage.site_env(), "SAFE_ROTATING_BIND": f"127.0.0.1:{port}"}
    try:
        with started(command, env, tmp_path) as (server, output):
            wait_for_site(port, server, output)
            load = Load([http_client(port)] * 8, server.pid)
            outage.kill_and_restart_under(load)
            assert outage.at_restart > outage.at_kill, "no request answered during the outage"
            text = stop(server, signal.SIGTERM, output)
        judge(outage, load, text)
    finally:
        outage.close()


def test_gunicorn_workers_deliver_everything_across_a_server_kill(tmp_path: Path) -> None:
    """gunicorn sync workers (SIGTERM: each finishes its request and exits through atexit)."""
    pytest.importorskip("gunicorn")
    _site_across_a_server_kill(
        tmp_path, [sys.executable, "-m", "gunicorn", "-c", str(site.GUNICORN_CONF)]
    )


def test_uwsgi_workers_deliver_everything_across_a_server_kill(tmp_path: Path) -> None:
    """uWSGI in its default mode (the site loaded in the master, the workers forked from C),
    with the site's uwsgi.ini, whose ``hook-master-start`` makes SIGTERM a graceful stop. That
    hook is still needed: stopped with SIGINT (or SIGTERM and only ``die-on-term``) right after
    the load, a worker sometimes skips Python's atexit and loses its last records. Even with
    it, uWSGI skips atexit in a worker it counts as busy: about 1 run in 15 lost one worker's
    last request, until the handler handed each request's records over after the request
    (``client._after_uwsgi_request``)."""
    uwsgi = require_uwsgi()
    _site_across_a_server_kill(
        tmp_path,
        [uwsgi, "--ini", str(site.UWSGI_INI), "--home", sys.prefix, "--pythonpath", str(ROOT)],
    )


def test_celery_pool_processes_deliver_everything_across_a_server_kill(tmp_path: Path) -> None:
    """A Celery prefork worker whose pool processes are replaced every
    ``TASKS_PER_CHILD`` tasks (so some end during the outage, some just after it), stopped
    with SIGTERM (warm shutdown) right after the last task. A pool process leaves through
    ``os._exit``, and the app connects no ``worker_process_shutdown`` receiver of its own (the
    once recommended, ``logging.shutdown()``): the handler's own exit hook must deliver."""
    pytest.importorskip("celery")
    from celery import Celery

    outage = Outage(tmp_path)
    env = outage.site_env()
    # Without Django: with DJANGO_SETTINGS_MODULE set, Celery's Django fixup would set up the
    # site, whose LOGGING would replace the app's handler (and its flush_timeout).
    del env["DJANGO_SETTINGS_MODULE"]
    command = [
        sys.executable, "-m", "celery", "-A", "tests.celery_apps.records_app", "worker",
        "--pool", "prefork", "--concurrency", "3", "--loglevel", "WARNING",
        "--max-tasks-per-child", str(TASKS_PER_CHILD),
        "--hostname", f"restart-{os.getpid()}@%h",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    app = Celery("restart-client", set_as_current=False)
    app.conf.update(celery_config(str(tmp_path / "celery")))
    try:
        with started(command, env, tmp_path) as (worker, output):
            probe = app.send_task(TASK, args=[0, 0])
            probe.get(timeout=90, interval=0.05)  # the worker is up and takes tasks
            load = Load([celery_client(app)] * 4, worker.pid)
            # No task may finish during the outage: a pool process that reached its task limit
            # waits in its exit hook (up to flush_timeout) for the server to come back.
            outage.kill_and_restart_under(load)
            text = stop(worker, signal.SIGTERM, output)
        judge(outage, load, text)
    finally:
        outage.close()
