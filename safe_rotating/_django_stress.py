"""``safe-rotating-stress --django``: real Django workers log through rotation, then every record
is checked.

Each scenario starts the site shipped in :mod:`safe_rotating._django_site` under a real server —
gunicorn sync workers (with and without ``--preload``), uWSGI (default mode and
``--lazy-apps``), a Celery prefork worker — on 127.0.0.1, sends it a bounded load (a number of
requests and a time limit, from concurrent client threads), stops it the way an operator does
(gunicorn SIGTERM, uWSGI SIGINT, Celery warm shutdown) and reads the rotated files back with
:func:`safe_rotating.verify.verify_requests`: every request the client saw answered must have
all its records, none duplicated or torn, each worker's records in order from the oldest backup
to the current file, no file over ``maxBytes`` plus one record per worker process, and no more
than ``backupCount + 1`` files.

``--handler both`` (the default) runs every scenario through ``SafeRotatingFileHandler`` and
then through ``logging.handlers.RotatingFileHandler``, whose failure is the expected outcome
and does not change the exit status; ``--handler stdlib`` alone exits 1 when the checks catch
it, like the plain command.

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

from . import _django_site as site
from ._django_site.logsetup import LINE_PREFIX, longest_prefix
from ._rotation import parse_size
from .verify import RequestVerdict, verify_requests

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
HANDLER_MODES = {"safe": "file", "stdlib": "stdlib"}


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
        """One record per concurrently writing process, for every handler alike."""
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
        )

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
            "seconds": round(self.seconds, 3),
            "timeline": [[round(t, 3), n] for t, n in self.timeline],
        }


# --- where the records go: a file the workers write, or (later) a log server ------------------


class FileSink:
    """File mode: the workers' handlers write ``directory/app.log`` themselves."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def env(self) -> dict[str, str]:
        return {"SAFE_ROTATING_LOG_FILE": os.path.join(self.directory, BASENAME)}

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)

    def stop(self) -> None:
        pass


class ServerSink(FileSink):
    """Server mode: the workers send to a ``safe_rotating.server`` that writes the files.

    The hook for server-mode scenarios: :meth:`start` must start the server writing
    ``directory/app.log`` with the run's ``maxBytes``/``backupCount`` and :meth:`env` must point
    the workers' ``LogServerHandler`` at it (``SAFE_ROTATING_SERVER``); the verification is the
    same as in file mode.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        if importlib.util.find_spec("safe_rotating.server") is None:
            raise SystemExit(
                "error: server mode needs safe_rotating.server, which this installation of "
                "safe_rotating does not have; use --mode file"
            )

    def start(self) -> None:
        raise SystemExit(
            "error: server mode needs safe_rotating.server started by the stress command, "
            "which is not wired up yet; use --mode file"
        )


def make_sink(mode: str, directory: str) -> FileSink:
    if mode == "server":
        return ServerSink(directory)
    return FileSink(directory)


def check_mode(mode: str, handler: str) -> None:
    """Refuse combinations that cannot run, before any server starts."""
    if mode == "server" and handler != "safe":
        raise SystemExit("error: --mode server runs safe_rotating's own handler only")
    if mode == "server":
        make_sink(mode, tempfile.gettempdir())


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
    # uWSGI 2.0 takes SIGTERM as "reload" unless die-on-term is set; SIGINT always stops it.
    # gunicorn and Celery take SIGTERM as a graceful (warm) shutdown.
    return signal.SIGINT if scenario.server == "uwsgi" else signal.SIGTERM


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

    from ._django_site.celeryconf import celery_config

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
    sink = make_sink(config.mode, str(logs))
    sink.start()
    port = free_port()
    log_mode = HANDLER_MODES[config.handler]
    env = {
        **os.environ,
        **sink.env(),
        "DJANGO_SETTINGS_MODULE": site.SETTINGS_MODULE,
        "SAFE_ROTATING_LOG_MODE": "server" if config.mode == "server" else log_mode,
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
        result.server_exit = _stop(server, stop_signal(scenario))
        sink.stop()
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
    rows = [head]
    for r in results:
        v = r.verdict
        if v is None:
            rows.append((r.scenario, r.handler, "", "", "", "", "", "", "", "", "", "", r.label))
            continue
        rows.append(
            (
                r.scenario,
                r.handler,
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
    numeric = set(range(2, 12))

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
        {(config.processes(SCENARIOS[r.scenario]), r.size_limit) for r in results if r.size_limit}
    )
    rule = ", ".join(
        f"{config.max_bytes} + {n} x {config.line_bound} = {limit} B" for n, limit in limits
    )
    out = [
        "size limit, the same for every handler: maxBytes + one record (the longest a record "
        f"line can be) per worker process: {rule or 'not checked'}; "
        f"backupCount={config.backups()} (enough to keep every record)",
        "pids: processes whose records are in the files / worker processes; requests: answered"
        " / sent; records: found / expected for the answered requests",
    ]
    for r in results:
        problems = r.problems()
        if problems:
            out.append(f"{r.scenario} ({r.handler}): " + "; ".join(problems))
    return "\n".join(out)


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


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
            "examples:\n"
            "  safe-rotating-stress --django                     default scenarios, then stdlib\n"
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
    add("--mode", choices=("file", "server"), default="file", help="(default file)")
    add("--workers", type=_positive, default=8, help="gunicorn/uWSGI workers (default 8)")
    add("--celery-concurrency", type=_positive, default=4, help="prefork processes (default 4)")
    add("--requests", type=_positive, default=2000, help="requests (or tasks) per run (2000)")
    add("--records-per-request", type=_positive, default=50, help="records each logs (50)")
    add("--max-bytes", type=_size, default=64 * 1024, help="rotate at this size (default 64KiB)")
    add("--clients", type=_positive, default=16, help="concurrent client threads (default 16)")
    add("--time-limit", type=float, default=60.0, help="seconds of load per run at most (60)")
    add("--json", metavar="PATH", help="write every run's figures to PATH")
    add("--plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    add("--dir", help="directory for the runs (default: a temporary one, removed after)")
    add("--keep", action="store_true", help="keep the temporary directory for inspection")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .stress import ProgressBar

    args = build_parser().parse_args(argv)
    if args.records_per_request > 9999:
        print("error: --records-per-request must be at most 9999")
        return 2
    handlers = ("safe", "stdlib") if args.handler == "both" else (args.handler,)
    check_mode(args.mode, "safe" if args.handler == "both" else args.handler)
    own_dir = args.dir is None
    base = tempfile.mkdtemp(prefix="safe-rotating-django-") if own_dir else args.dir
    os.makedirs(base, exist_ok=True)
    config = DjangoStressConfig(
        directory=base,
        scenarios=args.scenarios,
        mode=args.mode,
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
        f"{'/'.join(handlers)}; {config.requests} requests x {config.records_per_request} "
        f"records, {config.clients} clients, maxBytes={config.max_bytes}, into {base}",
        flush=True,
    )
    results: list[ScenarioResult] = []
    for handler in handlers:
        for name in config.scenarios:
            scenario = SCENARIOS[name]
            run_dir = os.path.join(base, f"{name}-{handler}")
            if os.path.exists(run_dir):
                print(f"error: {run_dir!r} exists; use an empty --dir")
                return 2
            os.makedirs(run_dir)
            run_config = replace(config, directory=run_dir, handler=handler)
            note = " (comparison: not process-safe)" if handler == "stdlib" else ""
            print(f"\n== {scenario.title} — {handler}{note}", flush=True)
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
    judged = [r for r in results if not r.skipped and (r.handler == "safe" or len(handlers) == 1)]
    return 0 if all(r.ok for r in judged) else 1
