"""``safe-rotating-stress``: many processes log through rotation, then every record is checked.

Each writer (a thread inside a worker process) logs ``--records`` numbered lines; afterwards
:func:`safe_rotating.verify.verify` reads every file from the oldest backup to the current one
and prints the verdict. Exit status 0 means every check passed.

``--handler stdlib`` runs the same workload through ``logging.handlers.RotatingFileHandler`` to
show what the checks catch; ``--handler clh`` uses concurrent-log-handler when it is installed.
Every handler is judged by the same rules, including the size rule (see
:attr:`StressConfig.size_allowance`), and the report states the limit it applied.

``--when S --interval 1`` rotates by time as well (``SafeTimedRotatingFileHandler``, the stdlib's
``TimedRotatingFileHandler``, concurrent-log-handler's ``ConcurrentTimedRotatingFileHandler``):
lines then start with the record's creation time and each must be in the file of its period.
``--compress``, ``--max-age`` and ``--max-total-bytes`` turn on compression and retention;
``--precreate N`` starts from ``N`` existing backups.

``--django`` runs a different workload, with options of its own: a Django site under real
gunicorn, uWSGI and Celery workers (:mod:`safe_rotating._django_stress`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import logging.handlers
import multiprocessing
import multiprocessing.sharedctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from safe_rotating._common.argtypes import age_arg, positive_arg, size_arg
from safe_rotating._engine.stats import HandlerStats, summarize
from safe_rotating.handlers import DEFAULT_QUEUE_SIZE
from safe_rotating.verify import PREEXISTING, TimedCheck, Verdict, make_line, ordered_files, verify

__all__ = ["HANDLERS", "StressConfig", "StressResult", "main", "run_stress"]

BASENAME = "app.log"
START_METHODS = ("spawn", "fork", "forkserver")
_START_TIMEOUT = 120.0  # seconds for every worker to import and build its handler


def _safe(
    path: str,
    max_bytes: int,
    backup_count: int,
    lock_timeout: float,
    when: str | None = None,
    interval: int = 1,
    compress: str | None = None,
    max_age: float | None = None,
    max_total_bytes: int | None = None,
    enqueue: bool = False,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> logging.Handler:
    from safe_rotating.handlers import SafeRotatingFileHandler, SafeTimedRotatingFileHandler

    extra: dict[str, Any] = {
        "lock_timeout": lock_timeout,
        "compress": compress,
        "max_age": max_age,
        "max_total_bytes": max_total_bytes,
        "enqueue": enqueue,
    }
    if enqueue:
        extra["queue_size"] = queue_size
    if when:
        return SafeTimedRotatingFileHandler(
            path, when, interval, backupCount=backup_count, maxBytes=max_bytes, **extra
        )
    return SafeRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count, **extra)


def _stdlib(
    path: str,
    max_bytes: int,
    backup_count: int,
    lock_timeout: float,
    when: str | None = None,
    interval: int = 1,
    compress: str | None = None,
    max_age: float | None = None,
    max_total_bytes: int | None = None,
    enqueue: bool = False,
) -> logging.Handler:
    if compress or max_age or max_total_bytes:
        raise SystemExit("--handler stdlib has no compression or age/size retention")
    if enqueue:
        raise SystemExit("--enqueue is an option of --handler safe")
    if when:  # the stdlib class rotates by time only
        return logging.handlers.TimedRotatingFileHandler(path, when, interval, backup_count)
    return logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count)


def _clh(
    path: str,
    max_bytes: int,
    backup_count: int,
    lock_timeout: float,
    when: str | None = None,
    interval: int = 1,
    compress: str | None = None,
    max_age: float | None = None,
    max_total_bytes: int | None = None,
    enqueue: bool = False,
) -> logging.Handler:
    try:
        import concurrent_log_handler as clh
    except ImportError:
        raise SystemExit("--handler clh needs concurrent-log-handler: pip install it") from None
    if enqueue:
        raise SystemExit("--enqueue is an option of --handler safe")
    if compress not in (None, "gzip") or max_age or max_total_bytes:
        raise SystemExit("--handler clh compresses with gzip only and has no age/size retention")
    gzip = compress == "gzip"
    handler: logging.Handler
    if when:
        handler = clh.ConcurrentTimedRotatingFileHandler(
            path, when, interval, backup_count, maxBytes=max_bytes, use_gzip=gzip
        )
    else:
        handler = clh.ConcurrentRotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, use_gzip=gzip
        )
    return handler


HandlerFactory = Callable[..., logging.Handler]
HANDLERS: dict[str, HandlerFactory] = {"safe": _safe, "stdlib": _stdlib, "clh": _clh}


@dataclass(frozen=True)
class StressConfig:
    directory: str
    processes: int = 8
    threads: int = 1
    records: int = 10_000
    record_size: int = 120
    max_bytes: int = 64 * 1024
    backup_count: int = 0  # 0: enough to keep every record
    start_method: str = "spawn"
    handler: str = "safe"
    lock_timeout: float = 0.25
    when: str | None = None  # rotate by time too (S, M, H, D, midnight, W0-W6)
    interval: int = 1
    duration: float = 0.0  # spread each writer's records over this many seconds (0: at once)
    compress: str | None = None
    precreate: int = 0  # backups that exist before the run
    max_age: float | None = None
    max_total_bytes: int | None = None
    window: float = 0.5  # how late a record may be in the next period's file (--when)
    enqueue: bool = False  # --handler safe with enqueue=True: a writer thread per process
    queue_size: int = DEFAULT_QUEUE_SIZE  # bytes, with enqueue
    kill: int = 0  # worker processes killed with SIGKILL at a random moment of their run
    seed: int | None = None  # for the choice of victims and moments (None: random)
    mode: str = "file"  # "server": the workers send to a safe-rotating-server started here
    server_address: str = ""  # set by run_stress in server mode

    @property
    def writers(self) -> int:
        return self.processes * self.threads

    @property
    def total(self) -> int:
        return self.writers * self.records

    @property
    def handlers(self) -> int:
        """Handler objects writing at once: one per worker process, shared by its threads."""
        return self.processes

    @property
    def size_allowance(self) -> int:
        """How far past ``max_bytes`` a file may grow, for every handler alike.

        The rule is "at most one record per concurrently writing handler": a record already on
        its way when the file filled may still land in it. Threads do not add to it, because a
        handler's ``emit`` runs under that handler's own lock (``logging.Handler.handle``), so
        each handler has at most one record in flight however many threads share it.

        With ``enqueue`` a handler writes batches in parts of at most ``max_bytes / 16`` (one
        record if larger), so the rule is one such part per handler.
        """
        if self.mode == "server":
            return 0  # the server is the files' only writer and splits batches at maxBytes
        return self.handlers * self.in_flight

    @property
    def at_risk(self) -> int:
        """Records a process killed with SIGKILL may lose of those its ``emit`` accepted.

        None without ``enqueue``: a record is in the file when ``emit`` returns. With it, what
        was queued and not yet written: the queue holds at most ``queue_size`` bytes (a record
        larger than that only when it is alone), so at most ``queue_size // line`` records,
        the newest, and never a record older than one that was written.
        """
        if not self.enqueue:
            return 0
        return max(1, self.queue_size // self.line_size)

    @property
    def in_flight(self) -> int:
        """Bytes one handler may have on their way at once: a record, or a batch part."""
        if self.enqueue and self.max_bytes:
            return max(self.max_bytes // 16, self.line_size)
        return self.line_size

    @property
    def line_size(self) -> int:
        """Bytes per line: the record, plus its creation time when rotating by time."""
        return self.record_size + (len(f"{time.time():.6f} ") if self.when else 0)

    @property
    def complete(self) -> bool:
        """Must every record still be there? Not when retention may delete backups."""
        return not (self.backup_count or self.max_age or self.max_total_bytes)

    def size_rule(self) -> str:
        """The size limit applied to every file, spelled out for the report."""
        if not self.max_bytes:
            return "size limit: none (maxBytes=0)"
        shared = f"; its {self.threads} threads share it" if self.threads > 1 else ""
        if self.mode == "server":
            return (
                f"size limit (server mode): maxBytes = {self.max_bytes} B; the server is the "
                "files' only writer and splits each batch where the next record would pass it"
            )
        if self.enqueue:
            return (
                f"size limit (enqueue): maxBytes + one write (maxBytes/16 or a record) per "
                f"concurrently writing handler = {self.max_bytes} + {self.handlers} x "
                f"{self.in_flight} = {self.max_bytes + self.size_allowance} B "
                f"(one handler per process{shared})"
            )
        return (
            f"size limit, the same for every handler: maxBytes + one record per concurrently "
            f"writing handler = {self.max_bytes} + {self.handlers} x {self.line_size} = "
            f"{self.max_bytes + self.size_allowance} B (one handler per process{shared})"
        )

    def backups(self) -> int:
        """``backup_count``, or enough backups that nothing is ever deleted."""
        if self.backup_count:
            return self.backup_count
        by_size = 2 * self.total * self.line_size // max(self.max_bytes, 1) if self.max_bytes else 0
        by_time = 2 * int(self.duration / self.interval) + 4 if self.when else 0
        return by_size + by_time + self.precreate + 16

    def handler_for(self, path: str) -> logging.Handler:
        if self.mode == "server":
            from safe_rotating.client import LogServerHandler

            client = LogServerHandler(
                self.server_address, spool_dir=os.path.join(self.directory, "spool")
            )
            client.setFormatter(logging.Formatter("%(message)s"))
            return client
        handler = HANDLERS[self.handler](
            path,
            self.max_bytes,
            self.backups(),
            self.lock_timeout,
            when=self.when,
            interval=self.interval,
            compress=self.compress,
            max_age=self.max_age,
            max_total_bytes=self.max_total_bytes,
            enqueue=self.enqueue,
            **({"queue_size": self.queue_size} if self.enqueue else {}),
        )
        fmt = "%(created).6f %(message)s" if self.when else "%(message)s"
        handler.setFormatter(logging.Formatter(fmt))
        return handler

    def options(self) -> str:
        """The time, compression and retention settings, for the report."""
        parts = []
        if self.when:
            parts.append(f"when={self.when} interval={self.interval}")
        if self.duration:
            parts.append(f"over {self.duration:g}s")
        if self.compress:
            parts.append(f"compress={self.compress}")
        if self.precreate:
            parts.append(f"{self.precreate} backups before the run")
        if self.max_age:
            parts.append(f"max_age={self.max_age:g}s")
        if self.max_total_bytes:
            parts.append(f"max_total_bytes={self.max_total_bytes}")
        if self.enqueue:
            parts.append(f"enqueue queue_size={self.queue_size}")
        if self.kill:
            parts.append(f"kill -9 of {self.kill} workers")
        return " ".join(parts)


@dataclass(frozen=True)
class Killed:
    """A worker process killed with SIGKILL: its writers' counts of records ``emit`` accepted
    (read after the kill) and how many of those are not in the files."""

    process: int
    accepted: tuple[int, ...]
    unwritten: int


@dataclass(frozen=True)
class StressResult:
    config: StressConfig
    verdict: Verdict
    seconds: float
    exit_codes: list[int | None]
    logging_errors: int = 0
    retention_problems: tuple[str, ...] = ()
    killed: tuple[Killed, ...] = ()
    stats: tuple[HandlerStats, ...] = ()  # handler.stats() of each process that finished

    @property
    def ok(self) -> bool:
        victims = {k.process for k in self.killed}
        # A process killed in the middle of a write leaves the part written so far: at most one
        # cut line per kill (the record on its way, never one whose emit had returned).
        verdict = dataclasses.replace(self.verdict, torn=max(0, self.verdict.torn - len(victims)))
        return (
            verdict.ok
            and not self.logging_errors
            and not self.retention_problems
            and all(
                code == (-signal.SIGKILL if i in victims else 0)
                for i, code in enumerate(self.exit_codes)
            )
            and all(k.unwritten <= self.config.at_risk for k in self.killed)
        )

    def report(self) -> str:
        c = self.config
        rate = c.total / self.seconds if self.seconds else 0.0
        lines = [
            f"handler={c.handler} start={c.start_method} processes={c.processes} "
            f"threads={c.threads} records/writer={c.records} maxBytes={c.max_bytes} "
            f"backupCount={c.backups()}" + (f" {c.options()}" if c.options() else ""),
            f"wrote {c.total} records in {self.seconds:.2f}s ({rate / 1000:.1f}k records/s)",
            c.size_rule(),
            self.verdict.summary(),
        ]
        if self.stats:
            lines.append(f"stats(): {summarize(self.stats)}")
        if self.killed:
            bound = self.config.at_risk
            unwritten = [k.unwritten for k in self.killed]
            over = [k for k in self.killed if k.unwritten > bound]
            rule = (
                f"at most queue_size // line = {self.config.queue_size} // "
                f"{self.config.line_size} = {bound} records per process, the newest"
                if self.config.enqueue
                else "none: a record is in the file when emit returns"
            )
            lines.append(
                f"{'FAIL' if over else 'ok'}: killed {len(self.killed)} worker processes with "
                f"SIGKILL mid-run; records their emit had accepted but not in the files: "
                f"{', '.join(map(str, unwritten))} (allowed: {rule}); every older record is "
                "there (checked above)"
            )
            if self.verdict.torn:
                cut = self.verdict.torn
                lines.append(
                    f"{'FAIL' if cut > len(self.killed) else 'ok'}: {cut} lines cut short, "
                    f"allowed one per killed process ({len(self.killed)}): the write on its way "
                    "when the process was killed"
                )
        for problem in self.retention_problems:
            lines.append(f"FAIL: {problem}")
        if self.logging_errors:
            lines.append(f"FAIL: {self.logging_errors} records reported through handleError")
        victims = {k.process for k in self.killed}
        bad = [code for i, code in enumerate(self.exit_codes) if code != 0 and i not in victims]
        if bad:
            lines.append(f"FAIL: {len(bad)} worker processes exited abnormally: {bad}")
        return "\n".join(lines)


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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "safe_rotating.server",
        "--listen", f"127.0.0.1:{port}",
        "--file", os.path.join(config.directory, BASENAME),
        "--max-bytes", str(config.max_bytes),
        "--backup-count", str(config.backups()),
        "--format", "%(message)s",
    ]  # fmt: skip
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"safe-rotating-server exited with status {server.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("safe-rotating-server did not start listening") from None
                time.sleep(0.05)

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


class ProgressBar:
    """A one-line progress bar on a terminal; a line every few seconds elsewhere."""

    def __init__(self, total: int, stream: Any = None, width: int = 30) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1.0

    def __call__(self, done: int, seconds: float) -> None:
        final = done >= self.total
        if not self.tty and not final and seconds - self._last < 5:
            return
        self._last = seconds
        share = done / self.total if self.total else 1.0
        filled = int(self.width * share)
        rate = done / seconds / 1000 if seconds > 0 else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {100 * share:5.1f}% {done}/{self.total} records {rate:.0f}k/s"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + text + end)
        self.stream.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safe-rotating-stress",
        allow_abbrev=False,
        description=(
            "Log numbered records from many processes through a rotating handler, then read "
            "every file back and check that no record was lost, duplicated, torn or reordered, "
            "and that file sizes and counts stay within limits."
        ),
        epilog=(
            "examples:\n"
            "  safe-rotating-stress                         8 processes, defaults\n"
            "  safe-rotating-stress --start-method fork     handler built before fork (preload)\n"
            "  safe-rotating-stress --handler stdlib        the same run through the stdlib class\n"
            "  safe-rotating-stress --enqueue               queued mode (a writer thread each)\n"
            "  safe-rotating-stress --enqueue --kill 3      ... and kill -9 three workers mid-run\n"
            "  safe-rotating-stress --django                Django under gunicorn, uWSGI, Celery\n"
            "  safe-rotating-stress --when S --max-bytes 16KiB --compress gzip --precreate 100\n"
            "  safe-rotating-stress --dir /var/log/test -p 16 -n 50000 --max-bytes 1MiB\n"
            "exit status: 0 when every check passed, 1 otherwise"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("-p", "--processes", type=positive_arg, default=8, help="worker processes (default 8)")
    add(
        "-t",
        "--threads",
        type=positive_arg,
        default=1,
        help="writer threads per process (default 1)",
    )
    add(
        "-n",
        "--records",
        type=positive_arg,
        default=10_000,
        help="records per writer (default 10000)",
    )
    add("--record-size", type=positive_arg, default=120, help="bytes per line (default 120)")
    add("--max-bytes", type=size_arg, default=64 * 1024, help="rotate at this size (default 64KiB)")
    add(
        "--backup-count",
        type=int,
        default=0,
        help="backups to keep; default: enough to keep every record, so any loss is a bug",
    )
    add("--start-method", choices=START_METHODS, default="spawn", help="(default spawn)")
    add(
        "--handler", choices=sorted(HANDLERS), default="safe", help="handler to test (default safe)"
    )
    add(
        "--mode",
        choices=("file", "server"),
        default="file",
        help="server: start safe-rotating-server here and send through LogServerHandler",
    )
    add(
        "--enqueue",
        action="store_true",
        help="--handler safe with enqueue=True: emit queues, a writer thread per process writes",
    )
    add(
        "--queue-size",
        type=size_arg,
        default=DEFAULT_QUEUE_SIZE,
        help="with --enqueue: the queue's bound in bytes (default 1MiB)",
    )
    add(
        "--kill",
        type=int,
        default=0,
        metavar="N",
        help="SIGKILL N random workers mid-run; judge what each lost against the mode's "
        "guarantee (none in sync mode; with --enqueue at most what fits in --queue-size)",
    )
    add(
        "--lock-timeout",
        type=float,
        default=0.25,
        help="longest wait for the rotation lock, seconds (default 0.25, the handler's)",
    )
    add("--when", type=str.upper, help="also rotate by time: S, M, H, D, MIDNIGHT, W0-W6")
    add("--interval", type=positive_arg, default=1, help="periods of --when per file (default 1)")
    add(
        "--duration",
        type=float,
        default=None,
        help="spread each writer's records over this many seconds (default: as fast as "
        "possible; 5 with --when, so that several boundaries pass)",
    )
    add("--compress", choices=("gzip", "zstd"), help="compress backups in the background")
    add("--precreate", type=int, default=0, metavar="N", help="start with N existing backups")
    add("--max-age", type=age_arg, help="also delete backups older than this (e.g. 30s, 12h, 14d)")
    add("--max-total-bytes", type=size_arg, help="also keep the whole set under this size (5GiB)")
    add("--dir", help="directory for the log files (default: a temporary one, removed after)")
    add("--keep", action="store_true", help="keep the temporary directory for inspection")
    add(
        "--django",
        action="store_true",
        help="run a Django site under real gunicorn/uWSGI/Celery workers instead "
        "(its own options: safe-rotating-stress --django --help)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--django" in argv:
        from safe_rotating._django_stress import main as django_main

        return django_main([a for a in argv if a != "--django"])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kill and (
        args.kill >= args.processes or args.backup_count or args.max_age or args.max_total_bytes
    ):
        parser.error(
            f"--kill {args.kill}: kill fewer than --processes, and keep every backup (no "
            "--backup-count, --max-age or --max-total-bytes), so that every record is counted"
        )
    if args.kill and args.mode == "server":
        parser.error("--kill is for file mode (server mode's client spools; see the tests)")
    own_dir = args.dir is None
    directory = tempfile.mkdtemp(prefix="safe-rotating-stress-") if own_dir else args.dir
    os.makedirs(directory, exist_ok=True)
    if any(name.startswith(BASENAME) for name in os.listdir(directory)):
        print(f"error: {directory!r} already holds {BASENAME} files; use an empty directory")
        return 2
    config = StressConfig(
        directory=directory,
        processes=args.processes,
        threads=args.threads,
        records=args.records,
        record_size=args.record_size,
        max_bytes=args.max_bytes,
        backup_count=args.backup_count,
        start_method=args.start_method,
        handler=args.handler,
        lock_timeout=args.lock_timeout,
        when=args.when,
        interval=args.interval,
        duration=args.duration if args.duration is not None else (5.0 if args.when else 0.0),
        compress=args.compress,
        precreate=args.precreate,
        max_age=args.max_age,
        max_total_bytes=args.max_total_bytes,
        enqueue=args.enqueue,
        queue_size=args.queue_size,
        kill=args.kill,
        mode=args.mode,
    )
    print(
        f"{config.processes} processes x {config.threads} threads x {config.records} records "
        f"through {config.handler!r} into {directory}",
        flush=True,
    )
    result = run_stress(config, on_progress=ProgressBar(config.total))
    print(result.report())
    if own_dir and not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    elif own_dir:
        print(f"files kept in {directory}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
