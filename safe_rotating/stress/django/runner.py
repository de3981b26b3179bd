"""One Django scenario run: start the site under its server, load it, stop it, verify."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from safe_rotating import _django_site as site
from safe_rotating._django_site.logsetup import LINE_PREFIX
from safe_rotating.stress.django.load import Load, celery_load, http_load, wait_for_http
from safe_rotating.stress.django.process import stop_process, tail
from safe_rotating.stress.django.result import ScenarioResult
from safe_rotating.stress.django.scenarios import (
    BASENAME,
    DjangoStressConfig,
    Scenario,
    package_root,
    server_command,
    stop_signal,
)
from safe_rotating.stress.django.sinks import make_sink
from safe_rotating.stress.logserver import free_port
from safe_rotating.verify import verify_requests

__all__ = ["run_scenario"]


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
            p for p in (package_root(), os.environ.get("PYTHONPATH", "")) if p
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
        result.server_exit = stop_process(server, stop_signal(scenario))
        sink.stop(result)
    if result.server_exit != 0 and not result.error:
        result.error = f"server output: {tail(output, 1500)}"
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
