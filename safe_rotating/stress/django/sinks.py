"""Where the records of a Django run go: a file the workers write (file mode), or a
``safe-rotating-server`` started here that writes it (server mode)."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import signal
import subprocess
from pathlib import Path

from safe_rotating._django_site.logsetup import SERVER_FORMAT
from safe_rotating.stress.django.process import START_TIMEOUT, http_get, stop_process, tail
from safe_rotating.stress.django.result import ScenarioResult
from safe_rotating.stress.django.scenarios import BASENAME, DjangoStressConfig
from safe_rotating.stress.logserver import (
    ServerStartError,
    free_port,
    server_command,
    start_log_server,
)

__all__ = ["FileSink", "ServerSink", "check_mode", "journal_clients", "make_sink"]


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
        return server_command(
            "--listen", f"127.0.0.1:{self.port}",
            "--file", str(self.logs / BASENAME),
            "--max-bytes", str(self.config.max_bytes),
            "--backup-count", str(self.config.backups()),
            "--format", SERVER_FORMAT,
            "--state-dir", str(self.state),
            "--metrics", f"127.0.0.1:{self.metrics_port}",
        )  # fmt: skip

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
            try:
                self.process = start_log_server(
                    self.command(),
                    self._healthy,
                    timeout=START_TIMEOUT,
                    output=lambda: tail(self.output),
                    # Django sets TZ=UTC in the workers; the server's times are then in UTC too.
                    env={**os.environ, "TZ": "UTC"},
                    cwd=self.logs.parent,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except ServerStartError as exc:
                self.process = exc.process  # stop() records its exit status
                raise

    def _healthy(self) -> bool:
        # The server opens its metrics listener after the others: once /healthz answers, the
        # workers can connect.
        with contextlib.suppress(OSError, http.client.HTTPException):
            return self._get("/healthz")[0] == 200
        return False

    def _get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            return http_get(conn, path)
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
        result.log_server_exit = stop_process(process, signal.SIGTERM)
        if result.log_server_exit != 0:
            result.log_server_problem = (
                f"safe-rotating-server exited with status {result.log_server_exit}: "
                + tail(self.output, 1000)
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
