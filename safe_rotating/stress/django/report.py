"""The report of ``safe-rotating-stress --django``: a table of the runs, the rules applied and
every problem, and an optional chart."""

from __future__ import annotations

from collections.abc import Sequence

from safe_rotating.stress.django.result import ScenarioResult
from safe_rotating.stress.django.scenarios import SCENARIOS, DjangoStressConfig

__all__ = ["details", "log_server_line", "table", "write_plot"]


def table(results: Sequence[ScenarioResult]) -> str:
    """One line per run, the verdict last: what a person reads at a glance."""
    head = (
        "scenario",
        "handler",
        "mode",
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
    rows: list[tuple[str, ...]] = [head]
    for r in results:
        v = r.verdict
        if v is None:
            rows.append((r.scenario, r.handler, r.mode, *[""] * 10, r.label))
            continue
        rows.append(
            (
                r.scenario,
                r.handler,
                r.mode,
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
    numeric = set(range(3, 13))

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
        {
            (config.processes(SCENARIOS[r.scenario]), r.size_limit)
            for r in results
            if r.size_limit and r.mode == "file"
        }
    )
    rule = ", ".join(
        f"{config.max_bytes} + {n} x {config.line_bound} = {limit} B" for n, limit in limits
    )
    out = []
    if limits:
        out.append(
            "size limit in file mode, the same for every handler: maxBytes + one record (the "
            f"longest a record line can be) per worker process: {rule}"
        )
    if any(r.mode == "server" and r.size_limit for r in results):
        out.append(
            f"size limit in server mode: maxBytes = {config.max_bytes} B, no allowance (the "
            "server is the only writer and splits each batch where the next record would pass "
            "maxBytes)"
        )
    out += [
        f"backupCount={config.backups()} (enough to keep every record)",
        "pids: processes whose records are in the files / worker processes; requests: answered"
        " / sent; records: found / expected for the answered requests; time: from the first "
        "request to the last answer",
    ]
    for r in results:
        if r.mode == "server" and r.log_server:
            out.append(f"{r.scenario} (server): {log_server_line(r)}")
    for r in results:
        problems = r.problems()
        if problems:
            out.append(f"{r.scenario} ({r.handler}, {r.mode}): " + "; ".join(problems))
    return "\n".join(out)


def log_server_line(r: ScenarioResult) -> str:
    """What safe-rotating-server counted in a server-mode run, in one line."""
    c = r.log_server
    dropped = c.get("records_dropped", 0)
    return (
        f"safe-rotating-server received {c.get('records_received', 0)} records, wrote "
        f"{c.get('records_written', 0)}, suppressed {c.get('duplicate_batches_suppressed', 0)} "
        f"duplicate batches, refused {c.get('refused_frames', 0)} frames, dropped {dropped}; "
        f"{c.get('clients', 0)} client ids in its journal; exit status {r.log_server_exit}"
    )


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
