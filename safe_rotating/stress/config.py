"""The settings of one ``safe-rotating-stress`` run, and the limits they imply.

:class:`StressConfig` also states the rules the verdict applies (the size allowance, the records
a killed process may lose) and builds each worker's handler.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from safe_rotating.handlers import DEFAULT_QUEUE_SIZE
from safe_rotating.stress.factories import HANDLERS

__all__ = ["BASENAME", "START_METHODS", "StressConfig"]

BASENAME = "app.log"
START_METHODS = ("spawn", "fork", "forkserver")


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
