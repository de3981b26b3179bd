"""``safe-rotating-stress --django``: real Django workers log through rotation, then every record
is checked.

Each scenario starts the site shipped in :mod:`safe_rotating._django_site` under a real server —
gunicorn sync workers (with and without ``--preload``), uWSGI (default mode and
``--lazy-apps``), a Celery prefork worker — on 127.0.0.1, sends it a bounded load (a number of
requests and a time limit, from concurrent client threads), stops it the way an operator does
(SIGTERM: gunicorn's graceful shutdown, uWSGI's through the site's ``uwsgi.ini``, Celery's warm
shutdown) and reads the rotated files back with :func:`safe_rotating.verify.verify_requests`:
every request the client saw answered must have all its records, none duplicated or torn, each
worker's records in order from the oldest backup to the current file, no file over the size
limit, and no more than ``backupCount + 1`` files.

Two modes, both run by default (``--mode both``):

* **file**: each worker's ``SafeRotatingFileHandler`` writes and rotates the files; a file may
  pass ``maxBytes`` by one record per worker process.
* **server**: the command starts ``safe-rotating-server`` on a free port of 127.0.0.1, writing
  the run's files with the same ``maxBytes`` and a line format identical to file mode's; each
  worker's ``LogServerHandler`` sends it its records (spooling in the run directory). Once the
  web server has stopped, its workers having flushed their handlers as they exited, the log
  server is stopped with SIGTERM (it writes what it holds and exits 0) and its files are read
  back with the same verdict. The server is their only writer and never lets a file pass
  ``maxBytes``; each worker process must appear in its journal under a client id of its own.

``--handler both`` (the default) runs every scenario through safe_rotating and then through
``logging.handlers.RotatingFileHandler`` (file mode), whose failure is the expected outcome and
does not change the exit status; ``--handler stdlib`` alone exits 1 when the checks catch it,
like the plain command.

Only the standard library is needed to drive the runs; the servers need Django (the ``django``
extra), gunicorn, uWSGI and Celery installed in the interpreter's environment. A scenario whose
server is missing is reported as skipped with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from safe_rotating import _django_site as site
from safe_rotating._common.argtypes import positive_arg, size_arg
from safe_rotating._django_site.logsetup import LINE_PREFIX, SERVER_FORMAT, longest_prefix
from safe_rotating.verify import RequestVerdict, verify_requests

__all__ = [
    "DEFAULT_SCENARIOS",
    "SCENARIOS",
    "DjangoStressConfig",
    "Scenario",
    "ScenarioResult",
    "main",
    "run_scenario",
]

BASENAME = "app.log"
MESSAGE_LENGTH = 100  # characters of each record's message (the formatter adds a prefix)
STDLIB_EXPECTED = "FAIL (expected: not process-safe)"
_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # "gunicorn", "uwsgi" or "celery"
    title: str
    options: tuple[str, ...] = ()

    def needs(self) -> str | None:
        """Why this scenario cannot run here, or ``None``."""
        modules = ["django"] if self.server == "uwsgi" else ["django", self.server]
        for module in modules:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed: pip install 'safe_rotating[django]' {module}"
        if self.server == "uwsgi" and find_uwsgi() is None:
            return (
                "uWSGI is not installed (no uwsgi beside the interpreter nor on PATH); "
                "pip install 'uwsgi>=2.0.22' needs a C compiler and the Python headers"
            )
        return None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("gunicorn", "gunicorn", "gunicorn sync workers, each builds its handler"),
        Scenario(
            "gunicorn-preload",
            "gunicorn",
            "gunicorn --preload: handler built in the master, inherited by fork",
            ("--preload",),
        ),
        Scenario(
            "uwsgi", "uwsgi", "uWSGI default mode: app loaded in the master, workers forked from C"
        ),
        Scenario(
            "uwsgi-lazy", "uwsgi", "uWSGI --lazy-apps: app loaded in each worker", ("--lazy-apps",)
        ),
        Scenario("celery", "celery", "Celery prefork pool, filesystem broker"),
    )
}
DEFAULT_SCENARIOS = ("gunicorn", "gunicorn-preload", "uwsgi")


def find_uwsgi() -> str | None:
    """The ``uwsgi`` beside this interpreter (a virtual environment's), else one on PATH."""
    beside = Path(sys.executable).parent / "uwsgi"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uwsgi")


@dataclass(frozen=True)
class DjangoStressConfig:
    directory: str
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    handler: str = "safe"  # "safe" or "stdlib" for one run; main() expands "both"
    mode: str = "file"
    workers: int = 8
    celery_concurrency: int = 4
    requests: int = 2000
    records_per_request: int = 50
    max_bytes: int = 64 * 1024
    backup_count: int = 0  # 0: enough to keep every record, as the verification needs
    clients: int = 16
    time_limit: float = 60.0

    def processes(self, scenario: Scenario) -> int:
        """Worker processes writing the log at once in ``scenario``."""
        return self.celery_concurrency if scenario.server == "celery" else self.workers

    @property
    def line_bound(self) -> int:
        """The longest line a stress record can take in the file, newline included."""
        return longest_prefix() + MESSAGE_LENGTH + 1

    def size_allowance(self, scenario: Scenario) -> int:
        """How far past ``maxBytes`` a file may grow.

        File mode: one record per concurrently writing process, for every handler alike (each
        may have checked the size before another's record landed). Server mode: nothing. The
        server is the only writer, and it splits each batch where the next record would take
        the file past ``maxBytes`` (``LogFile.append_batch``), so no file exceeds it.
        """
        if self.mode == "server":
            return 0
        return self.processes(scenario) * self.line_bound

    def backups(self) -> int:
        if self.backup_count:
            return self.backup_count
        total = self.requests * self.records_per_request * self.line_bound
        return 2 * total // max(self.max_bytes, 1) + 16


@dataclass
class ScenarioResult:
    scenario: str
    handler: str
    mode: str
    skipped: str = ""  # the reason, when the scenario could not run
    error: str = ""  # the run itself went wrong (server did not start, ...)
    verdict: RequestVerdict | None = None
    sent: int = 0
    answered: int = 0
    failed_requests: int = 0
    failure_sample: str = ""
    pids_answering: int = 0
    processes: int = 0
    server_exit: int | None = None
    log_server_exit: int | None = None  # server mode: safe-rotating-server's exit status
    log_server: dict[str, int] = field(default_factory=dict)  # its counters, and "clients"
    log_server_problem: str = ""
    spool_left: int = 0  # server mode: bytes of batches left in the workers' spools
    seconds: float = 0.0
    size_limit: int = 0
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds, records)

    @property
    def ok(self) -> bool:
        return (
            not self.skipped
            and not self.error
            and self.verdict is not None
            and self.verdict.ok
            and self.answered > 0
            and not self.failed_requests
            and self.server_exit == 0
            and (self.mode != "server" or self.log_server_ok)
        )

    @property
    def log_server_ok(self) -> bool:
        return (
            self.log_server_exit == 0
            and not self.log_server_problem
            and not self.spool_left
            and not self.shared_client_ids
        )

    @property
    def shared_client_ids(self) -> bool:
        """Server mode: fewer client ids in the server's journal than processes in the files,
        so some processes sent under one id (a forked worker must get its own)."""
        v = self.verdict
        return v is not None and self.log_server.get("clients", v.workers) < v.workers

    @property
    def label(self) -> str:
        if self.skipped:
            return "SKIPPED"
        if self.ok:
            return "PASS" if self.handler != "stdlib" else "PASS (this time; not process-safe)"
        return STDLIB_EXPECTED if self.handler == "stdlib" else "FAIL"

    def problems(self) -> list[str]:
        out = []
        if self.skipped:
            out.append(f"skipped: {self.skipped}")
        if self.error:
            out.append(self.error)
        if self.verdict is not None:
            out.extend(self.verdict.problems())
        if self.failed_requests:
            out.append(f"{self.failed_requests} requests failed (first: {self.failure_sample!r})")
        if not self.skipped and not self.error and self.answered == 0:
            out.append("no request was answered")
        if self.server_exit not in (0, None):
            out.append(f"the server exited with status {self.server_exit}")
        if self.log_server_problem:
            out.append(self.log_server_problem)
        if self.shared_client_ids:
            assert self.verdict is not None
            out.append(
                f"{self.verdict.workers} processes logged but the server's journal has only "
                f"{self.log_server['clients']} client ids: forked workers shared one"
            )
        if self.spool_left:
            out.append(
                f"{self.spool_left} bytes of batches were left in the workers' spools, "
                "never delivered to the server"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "scenario": self.scenario,
            "handler": self.handler,
            "mode": self.mode,
            "ok": self.ok,
            "verdict": self.label,
            "skipped": self.skipped or None,
            "error": self.error or None,
            "problems": self.problems(),
            "requests_sent": self.sent,
            "requests_answered": self.answered,
            "requests_failed": self.failed_requests,
            "worker_processes": self.processes,
            "pids_answering": self.pids_answering,
            "pids_logging": v.workers if v else 0,
            "expected": v.expected if v else 0,
            "found": v.found if v else 0,
            "lost": v.lost if v else 0,
            "sequence_gaps": v.sequence_gaps if v else 0,
            "duplicated": v.duplicated if v else 0,
            "torn": v.torn if v else 0,
            "order_breaks": v.order_breaks if v else 0,
            "wrong_worker": v.wrong_worker if v else 0,
            "oversize_files": len(v.oversized) if v else 0,
            "numbering_gaps": len(v.numbering_gaps) if v else 0,
            "too_many_files": v.too_many_files if v else 0,
            "files": v.files if v else 0,
            "bytes": v.bytes if v else 0,
            "largest_file": v.largest_file if v else 0,
            "size_limit": self.size_limit,
            "records_per_file": v.records_per_file if v else [],
            "server_exit": self.server_exit,
            "log_server_exit": self.log_server_exit,
            "log_server": self.log_server or None,
            "spool_left_bytes": self.spool_left,
            "seconds": round(self.seconds, 3),
            "timeline": [[round(t, 3), n] for t, n in self.timeline],
        }


# --- where the records go: a file the workers write, or a log server that writes it ---------


class FileSink:
    """File mode: the workers' handlers write ``logs/app.log`` themselves."""

    mode = "file"

    def __init__(self, run_dir: Path, config: DjangoStressConfig) -> None:
        self.logs = run_dir / "logs"
        self.config = config

    def env(self) -> dict[str, str]:
        return {"SAFE_ROTATING_LOG_FILE": str(self.logs / BASENAME)}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)

    def stop(self, result: ScenarioResult) -> None:
        """After the web server stopped: nothing more to stop or record in file mode."""


class ServerSink(FileSink):
    """Server mode: a ``safe-rotating-server`` started here writes ``logs/app.log``; the
    workers' ``LogServerHandler`` send it their records.

    It listens on a free port of 127.0.0.1, rotates at the run's ``maxBytes`` and keeps as many
    backups as file mode does, and formats each line with :data:`SERVER_FORMAT`, the same line
    the file-mode formatter writes, so the same verification applies. Its journal goes to
    ``server-state/``, the workers' spools to ``spool/``, its own output to ``log-server.out``,
    all in the run directory. It is stopped with SIGTERM once the web server has stopped and its
    workers have flushed their handlers at exit.
    """

    mode = "server"

    def __init__(self, run_dir: Path, config: DjangoStressConfig) -> None:
        super().__init__(run_dir, config)
        check_mode("server", config.handler)
        self.state = run_dir / "server-state"
        self.spool = run_dir / "spool"
        self.output = run_dir / "log-server.out"
        self.port = 0
        self.metrics_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "safe_rotating.server",
            "--listen", f"127.0.0.1:{self.port}",
            "--file", str(self.logs / BASENAME),
            "--max-bytes", str(self.config.max_bytes),
            "--backup-count", str(self.config.backups()),
            "--format", SERVER_FORMAT,
            "--state-dir", str(self.state),
            "--metrics", f"127.0.0.1:{self.metrics_port}",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "SAFE_ROTATING_SERVER": f"127.0.0.1:{self.port}",
            "SAFE_ROTATING_SPOOL_DIR": str(self.spool),
        }

    def start(self) -> None:
        super().start()
        self.state.mkdir(exist_ok=True)
        self.spool.mkdir(exist_ok=True)
        self.port = free_port()
        while (metrics := free_port()) == self.port:
            pass
        self.metrics_port = metrics
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                self.command(),
                # Django sets TZ=UTC in the workers; the server's times are then in UTC too.
                env={**os.environ, "TZ": "UTC"},
                cwd=self.logs.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"safe-rotating-server exited during start-up with status "
                    f"{self.process.returncode}: {_tail(self.output)}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                # The server opens its metrics listener after the others: once /healthz
                # answers, the workers can connect.
                if self._get("/healthz")[0] == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(
            f"safe-rotating-server did not answer within {_START_TIMEOUT:g}s: {_tail(self.output)}"
        )

    def _get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            return _get(conn, path)
        finally:
            conn.close()

    def counters(self) -> dict[str, int]:
        """The server's counters (``/metrics``), summed over their labels, without the
        ``safe_rotating_server_`` prefix and ``_total`` suffix."""
        status, body = self._get("/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics answered HTTP {status}")
        counts: dict[str, int] = {}
        for line in body.decode("utf-8", "replace").splitlines():
            if not line.startswith("safe_rotating_server_"):
                continue
            name, _, value = line.rpartition(" ")
            key = name.partition("{")[0].removeprefix("safe_rotating_server_")
            key = key.removesuffix("_total")
            counts[key] = counts.get(key, 0) + int(float(value))
        return counts

    def stop(self, result: ScenarioResult) -> None:
        """Read the server's counters, stop it with SIGTERM (it writes what it holds, then exits
        0), then record which clients it heard from and what the spools still hold."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                result.log_server = self.counters()
            except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:
                result.log_server_problem = f"could not read the server's metrics: {exc}"
        result.log_server_exit = _stop(process, signal.SIGTERM)
        if result.log_server_exit != 0:
            result.log_server_problem = (
                f"safe-rotating-server exited with status {result.log_server_exit}: "
                + _tail(self.output, 1000)
            )
        result.log_server["clients"] = len(journal_clients(self.state))
        result.spool_left = sum(
            path.stat().st_size for path in self.spool.rglob("*.spool") if path.is_file()
        )


def journal_clients(state_dir: Path) -> set[str]:
    """Client ids in the server's journal (``CLIENT SEQ UNIXTIME`` per line): the sequence
    spaces whose batches it wrote."""
    clients: set[str] = set()
    for journal in state_dir.glob("*.journal"):
        with journal.open(encoding="ascii", errors="replace") as f:
            clients.update(fields[0] for line in f if (fields := line.split()))
    return clients


def make_sink(mode: str, run_dir: Path, config: DjangoStressConfig) -> FileSink:
    if mode == "server":
        return ServerSink(run_dir, config)
    return FileSink(run_dir, config)


def check_mode(mode: str, handler: str) -> None:
    """Refuse combinations that cannot run, before any server starts."""
    if mode == "server" and handler != "safe":
        raise SystemExit(
            "error: --mode server runs safe_rotating's own handler only (the stdlib comparison "
            "is file mode)"
        )
    if mode == "server" and importlib.util.find_spec("safe_rotating.server") is None:
        raise SystemExit(
            "error: server mode needs safe_rotating.server, which this installation of "
            "safe_rotating does not have; use --mode file"
        )


# --- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _package_root() -> str:
    return str(Path(site.__file__).resolve().parent.parent.parent)


def server_command(scenario: Scenario, config: DjangoStressConfig) -> list[str]:
    if scenario.server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-c", str(site.GUNICORN_CONF), *scenario.options]
    if scenario.server == "uwsgi":
        uwsgi = find_uwsgi()
        assert uwsgi is not None
        return [
            uwsgi,
            "--ini", str(site.UWSGI_INI),
            "--home", sys.prefix,
            "--pythonpath", _package_root(),
            *scenario.options,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "celery",
        "-A", site.CELERY_APP.replace(":", "."),
        "worker",
        "--pool", "prefork",
        "--concurrency", str(config.celery_concurrency),
        "--loglevel", "WARNING",
        "--hostname", f"stress-{os.getpid()}@%h",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def stop_signal(scenario: Scenario) -> signal.Signals:
    """SIGTERM: a graceful shutdown for all three (gunicorn; Celery's warm shutdown; uWSGI through
    the site's ``uwsgi.ini``, which maps SIGTERM to ``gracefully_kill_them_all``)."""
    return signal.SIGTERM


class Load:
    """Counts of a load run, shared by the client threads."""

    def __init__(self, total: int) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.total = total
        self.sent = 0
        self.answered: dict[int, int | None] = {}
        self.failed = 0
        self.failure_sample = ""
        self.records = 0
        self.timeline: list[tuple[float, int]] = []

    def next_id(self, deadline: float) -> int | None:
        with self.lock:
            if self.sent >= self.total or time.monotonic() >= deadline:
                return None
            self.sent += 1
            return next(self.ids)

    def done(self, request: int, pid: int | None, records: int, started: float) -> None:
        with self.lock:
            self.answered[request] = pid
            self.records += records
            self.timeline.append((time.monotonic() - started, self.records))

    def fail(self, what: str) -> None:
        with self.lock:
            self.failed += 1
            if not self.failure_sample:
                self.failure_sample = what[:200]


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Connection": "close"})
    response = conn.getresponse()
    return response.status, response.read()


def wait_for_http(port: int, server: subprocess.Popen[bytes], output: Path) -> None:
    """Until the app answers a request that logs nothing; raises with the server's output."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited during start-up with status {server.returncode}: "
                + _tail(output)
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                status, _ = _get(conn, "/stress?request=0&n=0")
            finally:
                conn.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer within {_START_TIMEOUT:g}s: " + _tail(output))


def _tail(output: Path, chars: int = 1500) -> str:
    try:
        return output.read_text(errors="replace")[-chars:].strip() or "(no output)"
    except OSError:
        return "(no output)"


def http_load(
    port: int, config: DjangoStressConfig, on_progress: Callable[[int, float], None] | None
) -> Load:
    load = Load(config.requests)
    started = time.monotonic()
    deadline = started + config.time_limit
    k = config.records_per_request

    def client() -> None:
        # One connection per request, closed by both sides: uWSGI's http-socket and gunicorn's
        # sync workers do not keep connections alive, and a request sent on a connection the
        # server is closing would fail without having reached the application.
        while (request := load.next_id(deadline)) is not None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                status, body = _get(conn, f"/stress?request={request}&n={k}")
            except (OSError, http.client.HTTPException) as exc:
                load.fail(f"request {request}: {exc!r}")
                continue
            finally:
                conn.close()
            if status != 200:
                load.fail(f"request {request}: HTTP {status} {body[:120]!r}")
                continue
            answer = json.loads(body)
            if answer.get("records") != k or answer.get("request") != request:
                load.fail(f"request {request}: unexpected answer {answer!r}")
                continue
            load.done(request, int(answer["pid"]), k, started)

    _drive(load, [client] * config.clients, started, on_progress)
    return load


def celery_load(
    config: DjangoStressConfig,
    broker_dir: str,
    on_progress: Callable[[int, float], None] | None,
) -> Load:
    """Send tasks through the filesystem broker; a task counts as answered once its result,
    read from the filesystem result backend, says it logged every record."""
    from celery import Celery

    from safe_rotating._django_site.celeryconf import celery_config

    app = Celery("stress-client", set_as_current=False)
    app.conf.update(celery_config(broker_dir))
    load = Load(config.requests)
    k = config.records_per_request
    probe = app.send_task("logdemo.log_records", args=[0, 0])
    probe.get(timeout=_START_TIMEOUT, interval=0.05)  # the worker is up and takes tasks
    started = time.monotonic()
    deadline = started + config.time_limit
    window = 4 * config.clients

    def client() -> None:
        pending: dict[int, Any] = {}
        give_up = deadline + _STOP_TIMEOUT
        while time.monotonic() < give_up:
            while len(pending) < window // config.clients + 1:
                request = load.next_id(deadline)
                if request is None:
                    break
                pending[request] = app.send_task("logdemo.log_records", args=[request, k])
            if not pending:
                return
            finished = [r for r, result in pending.items() if result.ready()]
            for request in finished:
                result = pending.pop(request)
                if not result.successful():
                    load.fail(f"task {request}: {result.state} {result.result!r}"[:200])
                    continue
                answer = result.result
                if answer.get("records") != k:
                    load.fail(f"task {request}: unexpected result {answer!r}")
                    continue
                load.done(request, int(answer["pid"]), k, started)
            if not finished:
                time.sleep(0.01)
        for request in pending:
            load.fail(f"task {request}: no result within {_STOP_TIMEOUT:g}s after the load")

    _drive(load, [client] * config.clients, started, on_progress)
    return load


def _drive(
    load: Load,
    clients: list[Callable[[], None]],
    started: float,
    on_progress: Callable[[int, float], None] | None,
) -> None:
    threads = [threading.Thread(target=c, daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    while alive := [t for t in threads if t.is_alive()]:
        if on_progress is not None:
            on_progress(load.records, time.monotonic() - started)
        alive[0].join(0.25)
    if on_progress is not None:
        on_progress(load.records, time.monotonic() - started)


def run_scenario(
    scenario: Scenario,
    config: DjangoStressConfig,
    on_progress: Callable[[int, float], None] | None = None,
) -> ScenarioResult:
    """Start the server, load it, stop it, verify; ``config.directory`` is this run's own."""
    result = ScenarioResult(scenario.name, config.handler, config.mode)
    result.processes = config.processes(scenario)
    reason = scenario.needs()
    if reason is not None:
        result.skipped = reason
        return result
    run_dir = Path(config.directory)
    logs = run_dir / "logs"
    sink = make_sink(config.mode, run_dir, config)
    try:
        sink.start()
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        sink.stop(result)
        result.log_server_problem = ""  # the error says it already
        return result
    port = free_port()
    env = {
        **os.environ,
        **sink.env(),
        "DJANGO_SETTINGS_MODULE": site.SETTINGS_MODULE,
        "SAFE_ROTATING_LOG_MODE": sink.mode if config.handler == "safe" else "stdlib",
        "SAFE_ROTATING_MAX_BYTES": str(config.max_bytes),
        "SAFE_ROTATING_BACKUP_COUNT": str(config.backups()),
        "SAFE_ROTATING_BIND": f"127.0.0.1:{port}",
        "SAFE_ROTATING_WORKERS": str(config.workers),
        "SAFE_ROTATING_GUNICORN_LOGLEVEL": "warning",
        "SAFE_ROTATING_CELERY_DIR": str(run_dir / "celery"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (_package_root(), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    output = run_dir / "server.out"
    with output.open("wb") as out:
        server = subprocess.Popen(
            server_command(scenario, config),
            env=env,
            cwd=run_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for us is not also a signal to the server
        )
    load: Load | None = None
    try:
        if scenario.server == "celery":
            load = celery_load(config, str(run_dir / "celery"), on_progress)
        else:
            wait_for_http(port, server, output)
            load = http_load(port, config, on_progress)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        # The workers flush their handlers as they exit (server mode: up to the handler's
        # flush_timeout), within the servers' graceful timeouts; only then is the sink stopped.
        result.server_exit = _stop(server, stop_signal(scenario))
        sink.stop(result)
    if result.server_exit != 0 and not result.error:
        result.error = f"server output: {_tail(output, 1500)}"
    if load is not None:
        result.sent, result.answered = load.sent, len(load.answered)
        result.failed_requests, result.failure_sample = load.failed, load.failure_sample
        result.pids_answering = len({p for p in load.answered.values() if p is not None})
        result.timeline = load.timeline
        result.seconds = load.timeline[-1][0] if load.timeline else 0.0
        allowance = config.size_allowance(scenario)
        result.size_limit = config.max_bytes + allowance if config.max_bytes else 0
        result.verdict = verify_requests(
            str(logs),
            BASENAME,
            load.answered,
            config.records_per_request,
            prefix=LINE_PREFIX,
            max_bytes=config.max_bytes,
            backup_count=config.backups(),
            size_allowance=allowance,
        )
    return result


def _stop(server: subprocess.Popen[bytes], sig: signal.Signals) -> int | None:
    if server.poll() is None:
        server.send_signal(sig)
    try:
        return server.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        return None


# --- report ---------------------------------------------------------------------------------


def table(results: Sequence[ScenarioResult]) -> str:
    """One line per run, the verdict last: what a person reads at a glance."""
    head = (
        "scenario",
        "handler",
        "mode",
        "pids",
        "requests",
        "records",
        "lost",
        "dup",
        "torn",
        "order",
        "oversize",
        "files",
        "time",
        "verdict",
    )
    rows: list[tuple[str, ...]] = [head]
    for r in results:
        v = r.verdict
        if v is None:
            rows.append((r.scenario, r.handler, r.mode, *[""] * 10, r.label))
            continue
        rows.append(
            (
                r.scenario,
                r.handler,
                r.mode,
                f"{v.workers}/{r.processes}",
                f"{r.answered}/{r.sent}",
                f"{v.found}/{v.expected}",
                str(v.lost),
                str(v.duplicated),
                str(v.torn),
                str(v.order_breaks),
                str(len(v.oversized)),
                str(v.files),
                f"{r.seconds:.1f}s",
                r.label,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    numeric = set(range(3, 13))

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(head))
    return "\n".join([line(head), rule, *(line(row) for row in rows[1:])])


def details(results: Sequence[ScenarioResult], config: DjangoStressConfig) -> str:
    limits = sorted(
        {
            (config.processes(SCENARIOS[r.scenario]), r.size_limit)
            for r in results
            if r.size_limit and r.mode == "file"
        }
    )
    rule = ", ".join(
        f"{config.max_bytes} + {n} x {config.line_bound} = {limit} B" for n, limit in limits
    )
    out = []
    if limits:
        out.append(
            "size limit in file mode, the same for every handler: maxBytes + one record (the "
            f"longest a record line can be) per worker process: {rule}"
        )
    if any(r.mode == "server" and r.size_limit for r in results):
        out.append(
            f"size limit in server mode: maxBytes = {config.max_bytes} B, no allowance (the "
            "server is the only writer and splits each batch where the next record would pass "
            "maxBytes)"
        )
    out += [
        f"backupCount={config.backups()} (enough to keep every record)",
        "pids: processes whose records are in the files / worker processes; requests: answered"
        " / sent; records: found / expected for the answered requests; time: from the first "
        "request to the last answer",
    ]
    for r in results:
        if r.mode == "server" and r.log_server:
            out.append(f"{r.scenario} (server): {log_server_line(r)}")
    for r in results:
        problems = r.problems()
        if problems:
            out.append(f"{r.scenario} ({r.handler}, {r.mode}): " + "; ".join(problems))
    return "\n".join(out)


def log_server_line(r: ScenarioResult) -> str:
    """What safe-rotating-server counted in a server-mode run, in one line."""
    c = r.log_server
    dropped = c.get("dropped", 0)
    return (
        f"safe-rotating-server received {c.get('received', 0)} records, wrote "
        f"{c.get('written', 0)}, suppressed {c.get('duplicates_suppressed', 0)} duplicate "
        f"batches, refused {c.get('refused_frames', 0)} frames, dropped {dropped}; "
        f"{c.get('clients', 0)} client ids in its journal; exit status {r.log_server_exit}"
    )


def write_plot(path: str, results: Sequence[ScenarioResult]) -> str | None:
    """Records per file along the rotation sequence, and throughput over time; ``None`` when
    matplotlib is missing (the message says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "--plot needs matplotlib: pip install matplotlib"
    ran = [r for r in results if r.verdict is not None]
    fig, (files_ax, rate_ax) = plt.subplots(2, 1, figsize=(10, 8))
    for r in ran:
        assert r.verdict is not None
        style = "-" if r.handler == "safe" else ":"
        files_ax.plot(
            range(1, len(r.verdict.records_per_file) + 1),
            r.verdict.records_per_file,
            style,
            label=f"{r.scenario} ({r.handler})",
        )
        times, rates = _rates(r.timeline)
        rate_ax.plot(times, rates, style, label=f"{r.scenario} ({r.handler})")
    files_ax.set(
        title="Records per file, oldest backup first",
        xlabel="file in rotation order",
        ylabel="records",
    )
    rate_ax.set(
        title="Records logged per second (answered requests)",
        xlabel="seconds into the load",
        ylabel="records/s",
    )
    for ax in (files_ax, rate_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _rates(timeline: Sequence[tuple[float, int]], step: float = 0.5) -> tuple[list[float], ...]:
    if not timeline:
        return [], []
    times: list[float] = []
    rates: list[float] = []
    previous, edge, index = 0, step, 0
    end = timeline[-1][0]
    while edge <= end + step:
        count = previous
        while index < len(timeline) and timeline[index][0] <= edge:
            count = timeline[index][1]
            index += 1
        times.append(edge)
        rates.append((count - previous) / step)
        previous, edge = count, edge + step
    return times, rates


# --- command line ----------------------------------------------------------------------------


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(SCENARIOS) if text == "all" else tuple(n.strip() for n in text.split(","))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown)!r}; choose from {', '.join(SCENARIOS)} or all"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safe-rotating-stress --django",
        allow_abbrev=False,
        description=(
            "Start a small Django site under real servers (gunicorn, uWSGI, Celery), send it "
            "requests that each log numbered records through rotation, stop it cleanly, then "
            "read every file back: every answered request must have all its records, none "
            "duplicated or torn, each worker's records in order, sizes and file count within "
            "limits."
        ),
        epilog=(
            "scenarios:\n"
            + "".join(f"  {s.name:<18} {s.title}\n" for s in SCENARIOS.values())
            + f"default: {','.join(DEFAULT_SCENARIOS)}\n\n"
            "modes (safe_rotating only; the stdlib comparison is always file mode):\n"
            "  file     each worker's SafeRotatingFileHandler writes the rotating files\n"
            "  server   each worker's LogServerHandler sends to a safe-rotating-server started\n"
            "           here on 127.0.0.1, the only writer of the files\n"
            "  both     file mode, then server mode (default)\n\n"
            "examples:\n"
            "  safe-rotating-stress --django                     default scenarios, file and\n"
            "                                                    server mode, then stdlib\n"
            "  safe-rotating-stress --django --mode server --handler safe\n"
            "  safe-rotating-stress --django --scenarios all --handler safe\n"
            "  safe-rotating-stress --django --json out.json --plot out.png\n"
            "exit status: 0 when every run of safe_rotating passed (the stdlib comparison of\n"
            "--handler both never changes it), 1 otherwise, 2 for a usage error"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--scenarios", type=_scenarios, default=DEFAULT_SCENARIOS, help="comma-separated, or all")
    add(
        "--handler",
        choices=("both", "safe", "stdlib"),
        default="both",
        help="safe_rotating, the stdlib RotatingFileHandler, or both side by side (default)",
    )
    add(
        "--mode",
        choices=("file", "server", "both"),
        default="both",
        help="where safe_rotating's records go: see modes below (default both)",
    )
    add("--workers", type=positive_arg, default=8, help="gunicorn/uWSGI workers (default 8)")
    add("--celery-concurrency", type=positive_arg, default=4, help="prefork processes (default 4)")
    add("--requests", type=positive_arg, default=2000, help="requests (or tasks) per run (2000)")
    add("--records-per-request", type=positive_arg, default=50, help="records each logs (50)")
    add("--max-bytes", type=size_arg, default=64 * 1024, help="rotate at this size (default 64KiB)")
    add("--clients", type=positive_arg, default=16, help="concurrent client threads (default 16)")
    add("--time-limit", type=float, default=60.0, help="seconds of load per run at most (60)")
    add("--json", metavar="PATH", help="write every run's figures to PATH")
    add("--plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    add("--dir", help="directory for the runs (default: a temporary one, removed after)")
    add("--keep", action="store_true", help="keep the temporary directory for inspection")
    return parser


RUN_TITLES = {
    ("safe", "file"): "safe_rotating, file mode",
    ("safe", "server"): "safe_rotating, server mode",
    ("stdlib", "file"): "stdlib RotatingFileHandler",
}


def plan(handler: str, mode: str) -> list[tuple[str, str]]:
    """``(handler, mode)`` of each round of runs, in order: safe_rotating in the modes asked
    for, then the stdlib comparison, which writes its files itself (file mode)."""
    runs: list[tuple[str, str]] = []
    if handler in ("safe", "both"):
        runs += [("safe", m) for m in (("file", "server") if mode == "both" else (mode,))]
    if handler in ("stdlib", "both"):
        runs.append(("stdlib", "file"))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    from safe_rotating.stress import ProgressBar

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.records_per_request > 9999:
        print("error: --records-per-request must be at most 9999")
        return 2
    if args.handler == "stdlib" and args.mode == "server":
        parser.error("--mode server runs safe_rotating's own handler only; the stdlib "
                     "comparison (--handler stdlib) is file mode")  # fmt: skip
    runs = plan(args.handler, args.mode)
    for handler, mode in runs:
        check_mode(mode, handler)
    own_dir = args.dir is None
    base = tempfile.mkdtemp(prefix="safe-rotating-django-") if own_dir else args.dir
    os.makedirs(base, exist_ok=True)
    config = DjangoStressConfig(
        directory=base,
        scenarios=args.scenarios,
        workers=args.workers,
        celery_concurrency=args.celery_concurrency,
        requests=args.requests,
        records_per_request=args.records_per_request,
        max_bytes=args.max_bytes,
        clients=args.clients,
        time_limit=args.time_limit,
    )
    print(
        f"Django under real servers: {len(config.scenarios)} scenarios x "
        f"{', '.join(RUN_TITLES[run] for run in runs)}; {config.requests} requests x "
        f"{config.records_per_request} records, {config.clients} clients, "
        f"maxBytes={config.max_bytes}, into {base}",
        flush=True,
    )
    results: list[ScenarioResult] = []
    for handler, mode in runs:
        for name in config.scenarios:
            scenario = SCENARIOS[name]
            run_dir = os.path.join(base, f"{name}-{'stdlib' if handler == 'stdlib' else mode}")
            if os.path.exists(run_dir):
                print(f"error: {run_dir!r} exists; use an empty --dir")
                return 2
            os.makedirs(run_dir)
            run_config = replace(config, directory=run_dir, handler=handler, mode=mode)
            note = " (comparison: not process-safe)" if handler == "stdlib" else ""
            print(f"\n== {scenario.title} — {RUN_TITLES[handler, mode]}{note}", flush=True)
            bar = ProgressBar(config.requests * config.records_per_request)
            result = run_scenario(scenario, run_config, on_progress=bar)
            results.append(result)
            print(f"   {result.label}" + (f": {result.skipped}" if result.skipped else ""))
    print()
    print(table(results))
    print()
    print(details(results, config))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "max_bytes": config.max_bytes,
                    "backup_count": config.backups(),
                    "records_per_request": config.records_per_request,
                    "runs": [r.as_dict() for r in results],
                },
                f,
                indent=2,
            )
        print(f"figures written to {args.json}")
    if args.plot:
        problem = write_plot(args.plot, results)
        print(problem or f"chart written to {args.plot}")
    if own_dir and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    elif own_dir:
        print(f"files kept in {base}")
    alone = args.handler != "both"
    judged = [r for r in results if not r.skipped and (r.handler == "safe" or alone)]
    return 0 if all(r.ok for r in judged) else 1
