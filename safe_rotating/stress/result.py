"""The outcome of one ``safe-rotating-stress`` run: the verdict, its report and its exit status,
its figures for ``--json`` and its chart for ``--plot`` (as ``--django`` writes them)."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safe_rotating._engine.stats import HandlerStats, summarize
from safe_rotating.stress.config import StressConfig
from safe_rotating.verify import Verdict

__all__ = ["Killed", "StressResult", "write_plot"]


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

    def as_dict(self) -> dict[str, Any]:
        """The run's settings, verdict and figures as JSON-ready values (``--json``)."""
        return {
            "ok": self.ok,
            "settings": dataclasses.asdict(self.config),
            "backup_count": self.config.backups(),
            "records": self.config.total,
            "seconds": self.seconds,
            "records_per_second": self.config.total / self.seconds if self.seconds else 0.0,
            "verdict": dataclasses.asdict(self.verdict) | {"ok": self.verdict.ok},
            "logging_errors": self.logging_errors,
            "retention_problems": list(self.retention_problems),
            "killed": [dataclasses.asdict(k) for k in self.killed],
            "exit_codes": self.exit_codes,
            "stats": [dataclasses.asdict(s) for s in self.stats],
        }


def write_plot(
    path: str,
    result: StressResult,
    timeline: Sequence[tuple[float, int]],
    sizes: Sequence[int],
) -> str | None:
    """A PNG of the records written over time (``timeline``: seconds, records so far) and the
    size of each file, oldest first, against ``maxBytes``; a message instead when matplotlib
    is missing, as ``--django --plot`` says it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "--plot needs matplotlib: pip install matplotlib"
    label = f"{result.config.handler} ({result.config.mode} mode)"
    fig, (done_ax, size_ax) = plt.subplots(2, 1, figsize=(10, 8))
    done_ax.plot([t for t, _ in timeline], [n for _, n in timeline], label=label)
    done_ax.set(title="Records logged", xlabel="seconds into the run", ylabel="records")
    size_ax.plot(range(1, len(sizes) + 1), sizes, "o-", label=label)
    size_ax.axhline(result.config.max_bytes, linestyle=":", color="grey", label="maxBytes")
    size_ax.set(
        title="Size of each file, oldest first", xlabel="file in rotation order", ylabel="bytes"
    )
    for ax in (done_ax, size_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
