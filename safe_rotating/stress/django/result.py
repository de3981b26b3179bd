"""The outcome of one Django scenario run: its figures, verdict and problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safe_rotating.verify import RequestVerdict

__all__ = ["STDLIB_EXPECTED", "ScenarioResult"]

STDLIB_EXPECTED = "FAIL (expected: not process-safe)"


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
