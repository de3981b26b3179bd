"""Runs of ``safe-rotating-stress``: worker processes log numbered records, then the verdict.

:func:`run_stress` starts the workers (``--start-method``), kills the chosen victims mid-run
(``--kill``), collects their handlers' statistics and verifies every file; in server mode it first
starts a ``safe-rotating-server`` for the workers to send to.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.sharedctypes
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from safe_rotating._engine.stats import HandlerStats
from safe_rotating.stress.config import BASENAME, START_METHODS, StressConfig
from safe_rotating.stress.logserver import (
    accepts_connections,
    free_port,
    server_command,
    start_log_server,
)
from safe_rotating.stress.result import Killed, StressResult
from safe_rotating.verify import PREEXISTING, TimedCheck, make_line, ordered_files, verify

__all__ = ["precreate", "retention_problems", "run_stress"]

_START_TIMEOUT = 120.0  # seconds for every worker to import and build its handler


def _worker(
    config: StressConfig,
    index: int,
    progress: Any,
    errors: Any,
    ready: Any,
    inherited: logging.Handler | None,
    stats_out: Any,
) -> None:
    """One worker process: ``threads`` writers sharing one handler (built here or inherited)."""
    handler = inherited or config.handler_for(os.path.join(config.directory, BASENAME))
    report_error = handler.handleError

    def count_error(record: logging.LogRecord) -> None:
        # Counted for the verdict; printed only for our handler (peers fail by the thousand).
        errors[index] += 1
        if config.handler == "safe" and errors[index] <= 3:
            report_error(record)

    handler.handleError = count_error  # type: ignore[method-assign]
    logger = logging.getLogger(f"safe_rotating.stress.{index}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    ready.wait(timeout=_START_TIMEOUT)

    pace = config.duration / config.records if config.duration else 0.0

    def write(writer: int) -> None:
        started = time.monotonic()
        every = 0 if config.kill else 255  # exact counts when a kill must be judged
        for seq in range(config.records):
            logger.info(make_line(writer, seq, config.record_size))
            if seq & every == every:
                progress[writer] = seq + 1
            if pace:
                ahead = started + (seq + 1) * pace - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        progress[writer] = config.records

    first = index * config.threads
    threads = [threading.Thread(target=write, args=(first + t,)) for t in range(1, config.threads)]
    for thread in threads:
        thread.start()
    write(first)
    for thread in threads:
        thread.join()
    handler.close()
    stats = getattr(handler, "stats", None)
    if config.handler == "safe" and config.mode == "file" and stats is not None:
        stats_out.put(stats())


def _run_through_server(
    config: StressConfig, on_progress: Callable[[int, float], None] | None
) -> StressResult:
    """Server mode: start ``safe-rotating-server`` on 127.0.0.1, run the workers against it,
    stop it with SIGTERM (it drains and exits 0), then verify its files."""
    if config.handler != "safe" or config.when or config.compress or config.enqueue:
        raise SystemExit("--mode server runs LogServerHandler alone: drop --handler, --when, "
                         "--compress and --enqueue")  # fmt: skip
    port = free_port()
    command = server_command(
        "--listen", f"127.0.0.1:{port}",
        "--file", os.path.join(config.directory, BASENAME),
        "--max-bytes", str(config.max_bytes),
        "--backup-count", str(config.backups()),
        "--format", "%(message)s",
    )  # fmt: skip
    server = start_log_server(command, lambda: accepts_connections(port), timeout=_START_TIMEOUT)
    try:
        # Every record a worker logged is written once its handler's close() has returned: it
        # waits for the server's acknowledgements, sent once a batch is in the file. The server
        # is stopped before the files are read: its janitor may still be renaming backups.
        def stop() -> None:
            server.send_signal(signal.SIGTERM)
            status = server.wait(60)
            if status != 0:
                raise RuntimeError(
                    f"safe-rotating-server exited with status {status} after draining"
                )

        return run_stress(
            dataclasses.replace(config, server_address=f"127.0.0.1:{port}"), on_progress, stop
        )
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)


def run_stress(
    config: StressConfig,
    on_progress: Callable[[int, float], None] | None = None,
    before_verify: Callable[[], None] | None = None,
) -> StressResult:
    """Run the workload into ``config.directory`` (must be empty) and verify it;
    ``before_verify`` runs once the workers are done (server mode stops the server there)."""
    if config.start_method not in START_METHODS:
        raise ValueError(
            f"start_method must be one of {START_METHODS}, got {config.start_method!r}"
        )
    if config.mode == "server" and not config.server_address:
        return _run_through_server(config, on_progress)
    if config.kill and (config.kill >= config.processes or not config.complete):
        raise ValueError(
            f"kill={config.kill}: kill fewer than the {config.processes} processes, and keep "
            "every backup (no backup_count, max_age or max_total_bytes), so every record a "
            "survivor logged can be counted"
        )
    if config.precreate:
        precreate(config)
    ctx: Any = multiprocessing.get_context(config.start_method)
    progress = ctx.Array("q", config.writers, lock=False)
    errors = ctx.Array("q", config.processes, lock=False)
    ready = ctx.Barrier(config.processes + 1)
    stats_out = ctx.SimpleQueue()
    inherited = None
    if config.start_method == "fork":
        # "preload": the handler (descriptor, lock file) exists before the workers are forked.
        inherited = config.handler_for(os.path.join(config.directory, BASENAME))
    workers = [
        ctx.Process(
            target=_worker,
            args=(config, i, progress, errors, ready, inherited, stats_out),
            daemon=True,
        )
        for i in range(config.processes)
    ]
    for worker in workers:
        worker.start()
    try:
        ready.wait(timeout=_START_TIMEOUT)  # every worker built its handler: start the clock
    except threading.BrokenBarrierError:
        for worker in workers:
            worker.kill()
        codes = [worker.exitcode for worker in workers]
        raise RuntimeError(
            f"the workers did not all start within {_START_TIMEOUT:g}s (exit codes {codes}); "
            "their error output above says why"
        ) from None
    start = time.perf_counter()
    # Victims, and the record count of their first writer at which each is killed.
    rng = random.Random(config.seed)
    kill_at = {
        i: rng.randint(config.records // 10, max(config.records // 10, config.records * 7 // 10))
        for i in rng.sample(range(config.processes), config.kill)
    }
    killed: dict[int, tuple[int, ...]] = {}
    stats: list[HandlerStats] = []
    while any(worker.is_alive() for worker in workers):
        if on_progress is not None:
            on_progress(sum(progress), time.perf_counter() - start)
        while not stats_out.empty():  # read as they come: a full pipe would block the workers
            stats.append(stats_out.get())
        for i, at in list(kill_at.items()):
            first = i * config.threads
            if at <= progress[first] < config.records and workers[i].is_alive():
                os.kill(workers[i].pid or 0, signal.SIGKILL)
                workers[i].join()
                if workers[i].exitcode == -signal.SIGKILL:  # not if it finished just before
                    killed[i] = tuple(progress[first : first + config.threads])  # after the kill
                del kill_at[i]
        for worker in workers:
            worker.join(timeout=0.005 if kill_at else 0.2)
            if worker.is_alive():
                break
    seconds = time.perf_counter() - start
    while not stats_out.empty():
        stats.append(stats_out.get())
    if on_progress is not None:
        on_progress(sum(progress), seconds)
    if inherited is not None:
        inherited.close()
    timed = None
    if config.when:
        exact = config.when.upper() == "S"
        timed = TimedCheck(window=config.window, interval=config.interval if exact else None)
    if before_verify is not None:
        before_verify()
    written = None
    if killed:
        # A survivor's records must all be there. A victim's too, without enqueue; with it,
        # only the records before its newest one found (a lost suffix is judged below).
        written = [config.records] * config.writers
        for i, accepted in killed.items():
            for t, count in enumerate(accepted):
                written[i * config.threads + t] = 0 if config.enqueue else count
    verdict = verify(
        config.directory,
        BASENAME,
        config.writers,
        config.records,
        max_bytes=config.max_bytes,
        backup_count=config.backups(),
        size_allowance=config.size_allowance,
        complete=config.complete,
        written=written,
        timed=timed,
    )
    victims = tuple(
        Killed(
            i,
            accepted,
            sum(
                max(0, count - (verdict.newest[i * config.threads + t] + 1))
                for t, count in enumerate(accepted)
            ),
        )
        for i, accepted in sorted(killed.items())
    )
    return StressResult(
        config,
        verdict,
        seconds,
        [w.exitcode for w in workers],
        sum(errors),
        tuple(retention_problems(config)),
        victims,
        tuple(stats),
    )


def precreate(config: StressConfig) -> None:
    """``config.precreate`` backups, oldest first, each holding one record of writer 9999."""
    import gzip

    count = config.precreate
    now = time.time()
    for n in range(count, 0, -1):  # n: backups newer than this one, + 1
        line = make_line(PREEXISTING, count - n, config.record_size)
        if config.when:
            created = now - n * config.interval - 1
            from safe_rotating._engine.schedule import Schedule

            stamp = time.strftime(Schedule.parse(config.when).suffix, time.localtime(created))
            name = f"{BASENAME}.{stamp}"
            text = f"{created:.6f} {line}\n"
        else:
            name = f"{BASENAME}.{n}"
            text = line + "\n"
        path = os.path.join(config.directory, name)
        if config.compress == "gzip":
            with gzip.open(path + ".gz", "wb") as f:
                f.write(text.encode())
            path += ".gz"
        else:
            with open(path, "w") as f:
                f.write(text)
        # Written long ago, one minute apart: what max_age judges.
        age = now - 60.0 * n
        os.utime(path, (age, age))


def retention_problems(config: StressConfig) -> list[str]:
    """What ``max_age`` and ``max_total_bytes`` promise, checked on the files left."""
    problems = []
    names = ordered_files(config.directory, BASENAME)
    stats = [os.stat(os.path.join(config.directory, name)) for name in names]
    now = time.time()
    if config.max_age:
        slack = 2.0  # retention runs at each rotation and at close, not continuously
        old = [
            n
            for n, st in zip(names, stats, strict=True)
            if now - st.st_mtime > config.max_age + slack
        ]
        old = [n for n in old if n != BASENAME]
        if old:
            problems.append(f"{len(old)} backups older than max_age remain, e.g. {old[0]}")
    if config.max_total_bytes:
        total = sum(st.st_size for st in stats)
        if total > config.max_total_bytes and len(names) > 1:
            problems.append(
                f"the set holds {total} bytes, more than max_total_bytes={config.max_total_bytes}"
            )
    return problems
