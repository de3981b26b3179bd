"""The scenarios of ``safe-rotating-stress --django``, the settings of a run, and the command
that starts each scenario's server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from safe_rotating import _django_site as site
from safe_rotating._django_site.logsetup import longest_prefix

__all__ = [
    "BASENAME",
    "DEFAULT_SCENARIOS",
    "MESSAGE_LENGTH",
    "SCENARIOS",
    "DjangoStressConfig",
    "Scenario",
    "find_uwsgi",
    "package_root",
    "server_command",
    "stop_signal",
]

BASENAME = "app.log"
MESSAGE_LENGTH = 100  # characters of each record's message (the formatter adds a prefix)


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
                return f"{module} is not installed: pip install 'safe_rotating[stress]'"
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


def package_root() -> str:
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
            "--pythonpath", package_root(),
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
