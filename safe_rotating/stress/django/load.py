"""The load of a Django run: concurrent clients send requests (or Celery tasks), each logging
numbered records, and count what was answered."""

from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safe_rotating.stress.django.process import START_TIMEOUT, STOP_TIMEOUT, http_get, tail
from safe_rotating.stress.django.scenarios import DjangoStressConfig

__all__ = ["Load", "celery_load", "http_load", "wait_for_http"]


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


def wait_for_http(port: int, server: subprocess.Popen[bytes], output: Path) -> None:
    """Until the app answers a request that logs nothing; raises with the server's output."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited during start-up with status {server.returncode}: "
                + tail(output)
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                status, _ = http_get(conn, "/stress?request=0&n=0")
            finally:
                conn.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer within {START_TIMEOUT:g}s: " + tail(output))


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
                status, body = http_get(conn, f"/stress?request={request}&n={k}")
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
    probe.get(timeout=START_TIMEOUT, interval=0.05)  # the worker is up and takes tasks
    started = time.monotonic()
    deadline = started + config.time_limit
    window = 4 * config.clients

    def client() -> None:
        pending: dict[int, Any] = {}
        give_up = deadline + STOP_TIMEOUT
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
            load.fail(f"task {request}: no result within {STOP_TIMEOUT:g}s after the load")

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
