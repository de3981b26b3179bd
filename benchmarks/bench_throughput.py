"""Throughput, latency and loss of rotating log handlers written by P processes at once.

The handlers take the same workload: the plain ``logging.FileHandler`` (the ceiling: one file,
no rotation), the stdlib ``logging.handlers.RotatingFileHandler``, concurrent-log-handler's
``ConcurrentRotatingFileHandler``, ``safe_rotating.SafeRotatingFileHandler`` and the same with
``enqueue=True`` ("queued"), and "format-only", a handler that formats and encodes each record
and writes nothing (the ceiling of Python logging; it has no file to verify). For each number
of processes P, P spawned workers each build their own handler, meet at a barrier, and log
``--records`` lines of ``--record-size`` bytes, timing every ``logger.info`` call; the clock
stops after ``handler.flush()``, so a queued handler is timed until its records are written.
Afterwards every line of every file is read back by :func:`safe_rotating.verify.verify` to
count lost records.

Each (handler, P) cell runs ``--repeat`` times; within a repeat the handlers take turns, so noise
on the machine hits all of them alike. Reported per cell: the median throughput, the median of
the per-repeat ratios to FileHandler at the same P, the medians of the per-repeat p50, p99 and
maximum emit latency (over every record of every process), and the records lost and the
``handleError`` calls summed over all repeats.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_throughput.py
    .venv/bin/python benchmarks/bench_throughput.py --processes 1,2,4,8 --repeat 3 \\
        --markdown bench-out/throughput.md --chart docs/benchmarks.png
    .venv/bin/python benchmarks/bench_throughput.py --processes 2 --records 2000 --repeat 1

Progress goes to stderr, one line per finished run; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import functools
import logging
import logging.handlers
import math
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from peers import BASELINE, HANDLERS, WRITES_NOTHING, build

from safe_rotating import HandlerStats, SafeRotatingFileHandler
from safe_rotating._engine.stats import summarize
from safe_rotating.verify import Verdict, make_line, verify

BASENAME = "app.log"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    processes: tuple[int, ...]
    records: int
    record_size: int
    max_bytes: int
    backup_count: int
    repeat: int
    handlers: tuple[str, ...]


# What a worker sends back: index, start ns, end ns, latencies (array('q') bytes), errors, and
# the handler's stats() for ours (None for the peers).
WorkerReport = tuple[int, int, int, bytes, int, HandlerStats | None]


def _worker(
    kind: str,
    path: str,
    max_bytes: int,
    backup_count: int,
    index: int,
    records: int,
    record_size: int,
    barrier: Any,
    results: Any,
) -> None:
    """One writer process: build the handler, wait for the others, log and time every record."""
    logging.raiseExceptions = False  # the stdlib peers fail loudly under concurrent rotation
    handler = build(kind, path, max_bytes, backup_count)
    handler.setFormatter(logging.Formatter("%(message)s"))
    errors = 0

    def count_error(record: logging.LogRecord) -> None:
        nonlocal errors
        errors += 1

    handler.handleError = count_error  # type: ignore[method-assign]
    logger = logging.getLogger(f"bench_throughput.{index}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)

    messages = [make_line(index, seq, record_size) for seq in range(records)]
    latencies = array("q", bytes(8 * records))
    clock = time.perf_counter_ns
    info = logger.info
    barrier.wait(timeout=300)
    start = clock()
    for seq, message in enumerate(messages):
        before = clock()
        info(message)
        latencies[seq] = clock() - before
    handler.flush()  # a queued handler's records are written only now: part of its time
    end = clock()
    handler.close()
    stats = handler.stats() if isinstance(handler, SafeRotatingFileHandler) else None
    report: WorkerReport = (index, start, end, latencies.tobytes(), errors, stats)
    results.put(report)


@dataclass
class Run:
    """One run of one cell: P processes through one handler."""

    kind: str
    processes: int
    repeat: int
    records_per_second: float
    p50_us: float
    p99_us: float
    max_us: float
    lost: int
    errors: int
    verified: bool
    problems: tuple[str, ...]
    summary: str
    seconds: float
    stats: tuple[HandlerStats, ...] = ()


# How far past maxBytes each handler's files may grow, by its own documentation: ours by one record
# per other concurrently writing process (queued: one write of at most maxBytes/16, or a record);
# CLH rotates once the file has reached maxBytes, so by up to one record; the stdlib rotates
# before a record would cross the limit. Arguments: processes, record size, maxBytes.
SIZE_ALLOWANCE: dict[str, Callable[[int, int, int], int]] = {
    "file": lambda processes, size, limit: 0,
    "stdlib": lambda processes, size, limit: 0,
    "clh": lambda processes, size, limit: size,
    "safe": lambda processes, size, limit: processes * size,
    "queued": lambda processes, size, limit: processes * max(size, limit // 16),
    "format-only": lambda processes, size, limit: 0,
}


def _problem_kinds(verdict: Verdict) -> tuple[str, ...]:
    """Short names of the checks a verdict failed."""
    kinds = {
        "lost": verdict.lost,
        "dup": verdict.duplicated,
        "torn": verdict.torn,
        "order": verdict.order_breaks,
        "size": len(verdict.oversized),
        "gaps": len(verdict.numbering_gaps),
        "files": verdict.too_many_files,
    }
    return tuple(name for name, count in kinds.items() if count)


def _percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted sequence."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def run_once(kind: str, processes: int, repeat: int, config: Config, scratch: str) -> Run:
    """Run one cell once in its own scratch directory, verify the files, remove the directory."""
    directory = tempfile.mkdtemp(prefix=f"{kind}-p{processes}-r{repeat}-", dir=scratch)
    try:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(processes)
        results = ctx.Queue()
        path = os.path.join(directory, BASENAME)
        workers = [
            ctx.Process(
                target=_worker,
                args=(
                    kind,
                    path,
                    config.max_bytes,
                    config.backup_count,
                    index,
                    config.records,
                    config.record_size,
                    barrier,
                    results,
                ),
                daemon=True,
            )
            for index in range(processes)
        ]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        reports: list[WorkerReport] = []
        while len(reports) < processes:
            try:
                reports.append(results.get(timeout=1.0))
            except queue.Empty:
                if not any(worker.is_alive() for worker in workers):
                    codes = [worker.exitcode for worker in workers]
                    message = f"{kind} P={processes}: workers died, exit codes {codes}"
                    raise RuntimeError(message) from None
        for worker in workers:
            worker.join()

        latencies = array("q")
        for report in reports:
            latencies.frombytes(report[3])
        ordered = sorted(latencies)
        wall_ns = max(r[2] for r in reports) - min(r[1] for r in reports)
        total = processes * config.records
        rotating = kind != BASELINE
        measured = functools.partial(
            Run,
            kind=kind,
            processes=processes,
            repeat=repeat,
            records_per_second=total / (wall_ns / 1e9),
            p50_us=_percentile(ordered, 0.50) / 1000,
            p99_us=_percentile(ordered, 0.99) / 1000,
            max_us=ordered[-1] / 1000,
            errors=sum(r[4] for r in reports),
        )
        if kind in WRITES_NOTHING:
            return measured(
                lost=0,
                verified=True,
                problems=(),
                summary="writes nothing: not verified",
                seconds=time.perf_counter() - began,
            )
        verdict = verify(
            directory,
            BASENAME,
            processes,
            config.records,
            max_bytes=config.max_bytes if rotating else 0,
            backup_count=config.backup_count if rotating else 0,
            size_allowance=SIZE_ALLOWANCE[kind](processes, config.record_size, config.max_bytes),
            complete=True,
        )
        return measured(
            lost=verdict.lost,
            verified=verdict.ok,
            problems=_problem_kinds(verdict),
            summary=verdict.summary(),
            seconds=time.perf_counter() - began,
            stats=tuple(r[5] for r in reports if r[5] is not None),
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Cell:
    """All repeats of one (handler, P)."""

    kind: str
    processes: int
    runs: list[Run] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return HANDLERS[self.kind][0]

    def median(self, attribute: str) -> float:
        return statistics.median(float(getattr(run, attribute)) for run in self.runs)

    @property
    def rate(self) -> float:
        return self.median("records_per_second")

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")

    @property
    def lost(self) -> int:
        return sum(run.lost for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def verdict(self) -> str:
        if self.kind in WRITES_NOTHING:
            return "n/a (writes nothing)"
        failed = [run for run in self.runs if not run.verified]
        if not failed:
            return "PASS"
        kinds = sorted({kind for run in failed for kind in run.problems})
        return f"FAIL {len(failed)}/{len(self.runs)} ({' '.join(kinds)})"


def run_all(config: Config, scratch: str) -> dict[tuple[str, int], Cell]:
    cells = {(k, p): Cell(k, p) for p in config.processes for k in config.handlers}
    total = config.repeat * len(cells)
    done = 0
    for repeat in range(config.repeat):
        for processes in config.processes:
            # Rotate the order each repeat so no handler always runs first or last.
            shift = repeat % len(config.handlers)
            order = config.handlers[shift:] + config.handlers[:shift]
            rates: dict[str, float] = {}
            for kind in order:
                run = run_once(kind, processes, repeat, config, scratch)
                cells[(kind, processes)].runs.append(run)
                rates[kind] = run.records_per_second
                done += 1
                print(
                    f"[{done:>3}/{total}] repeat {repeat + 1}/{config.repeat} P={processes} "
                    f"{HANDLERS[kind][0]:<19} {run.records_per_second / 1000:8.1f}k rec/s  "
                    f"p99 {run.p99_us:8.1f} us  lost {run.lost:>6}  errors {run.errors:>6}  "
                    f"{'PASS' if run.verified else 'FAIL ' + ' '.join(run.problems)}  "
                    f"({run.seconds:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if not run.verified and kind in ("safe", "queued"):
                    print(f"      {run.summary}", file=sys.stderr, flush=True)
            if BASELINE in rates:
                for kind, rate in rates.items():
                    cells[(kind, processes)].ratios.append(rate / rates[BASELINE])
    return cells


COLUMNS = (
    "handler",
    "P",
    "records/s",
    "x FileHandler",
    "p50 us",
    "p99 us",
    "max us",
    "lost",
    "errors",
    "verify",
)


def table_rows(config: Config, cells: dict[tuple[str, int], Cell]) -> list[list[str]]:
    rows = []
    for processes in config.processes:
        for kind in config.handlers:
            cell = cells[(kind, processes)]
            rows.append(
                [
                    cell.label,
                    str(processes),
                    f"{cell.rate:,.0f}",
                    f"{cell.ratio:.2f}",
                    f"{cell.median('p50_us'):.1f}",
                    f"{cell.median('p99_us'):.1f}",
                    f"{cell.median('max_us'):,.0f}",
                    str(cell.lost),
                    str(cell.errors),
                    cell.verdict,
                ]
            )
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate([list(COLUMNS), *rows]):
        middle = [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *middle, row[-1]]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join([" --- "] + [" ---: "] * (len(COLUMNS) - 2) + [" --- "]) + "|"
    body = ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def describe(config: Config) -> str:
    return (
        f"{config.records} records x {config.record_size} B per process, "
        f"maxBytes {config.max_bytes}, backupCount {config.backup_count}, start method spawn, "
        f"median of {config.repeat} repeats; lost and errors summed over all repeats; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )


def ratio_line(config: Config, cells: dict[tuple[str, int], Cell]) -> str:
    processes = 8 if 8 in config.processes else max(config.processes)
    parts = [
        f"{cells[(kind, processes)].label} {cells[(kind, processes)].ratio:.2f}x"
        for kind in config.handlers
        if kind != BASELINE
    ]
    return f"P={processes}, throughput relative to FileHandler: " + ", ".join(parts)


def targets_line(config: Config, cells: dict[tuple[str, int], Cell]) -> str | None:
    if "safe" not in config.handlers or 8 not in config.processes:
        return None
    cell = cells[("safe", 8)]
    checks = [
        (f"throughput {cell.ratio:.2f}x FileHandler (target >= 0.8x)", cell.ratio >= 0.8),
        (f"p99 {cell.median('p99_us'):.1f} us (target <= 100 us)", cell.median("p99_us") <= 100),
        (f"{cell.lost} records lost (target 0)", cell.lost == 0 and cell.verdict == "PASS"),
    ]
    return "safe_rotating at P=8: " + "; ".join(
        f"{text} {'met' if ok else 'NOT met'}" for text, ok in checks
    )


def write_chart(path: str, config: Config, cells: dict[tuple[str, int], Cell]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = list(config.processes)
    for kind in config.handlers:
        label = HANDLERS[kind][0]
        ratios = [cells[(kind, p)].ratio for p in xs]
        p99 = [cells[(kind, p)].median("p99_us") for p in xs]
        style = "--" if kind == BASELINE else "-"
        left.plot(xs, ratios, style, marker="o", label=label)
        right.plot(xs, p99, style, marker="o", label=label)
    left.set_title("Throughput relative to FileHandler")
    left.set_xlabel("writer processes (P)")
    left.set_ylabel("records/s ÷ FileHandler records/s")
    highest = max(cells[(k, p)].ratio for k in config.handlers for p in xs)
    left.set_ylim(0, max(1.1, 1.05 * highest))
    left.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    left.annotate("0.8 target", (xs[0], 0.81), fontsize=8, color="grey")
    right.set_title("p99 emit latency")
    right.set_xlabel("writer processes (P)")
    right.set_ylabel("µs (log scale)")
    right.set_yscale("log")
    right.axhline(100, color="grey", linestyle=":", linewidth=1)
    right.annotate("100 µs target", (xs[0], 104), fontsize=8, color="grey")
    right.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    right.yaxis.set_minor_formatter(ticker.NullFormatter())
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    fig.suptitle(
        f"{config.records} x {config.record_size} B records per process, "
        f"maxBytes {config.max_bytes // 1024} KiB, {os.cpu_count()} CPUs",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _size(text: str) -> int:
    from safe_rotating._common.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers like 1,2,4,8, got {text!r}")
    return values


def _handlers(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [v for v in values if v not in HANDLERS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"handlers are {','.join(HANDLERS)}; got {text!r}")
    return tuple(k for k in HANDLERS if k in values)  # baseline first, fixed order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--processes", type=_counts, default=(1, 2, 4, 8), help="comma list (default 1,2,4,8)")
    add("--records", type=int, default=20_000, help="records per process (default 20000)")
    add("--record-size", type=int, default=120, help="bytes per line (default 120)")
    add("--max-bytes", type=_size, default=MIB, help="rotate at this size (default 1MiB)")
    add("--backup-count", type=int, default=1000, help="(default 1000: nothing is deleted)")
    add("--repeat", type=int, default=3, help="runs per cell; the median is reported (default 3)")
    add(
        "--handlers",
        type=_handlers,
        default=tuple(HANDLERS),
        help=f"comma list of {','.join(HANDLERS)} (default all)",
    )
    add("--out", help="scratch directory (default: a temporary one, removed afterwards)")
    add("--markdown", metavar="PATH", help="write the results table as Markdown here")
    add("--chart", metavar="PATH", help="write a PNG chart here (needs matplotlib)")
    return parser


def stats_lines(config: Config, cells: dict[tuple[str, int], Cell]) -> list[str]:
    """``handler.stats()`` of our handlers at the largest P, from the last repeat."""
    top = max(config.processes)
    out = []
    for kind in ("safe", "queued"):
        cell = cells.get((kind, top))
        if cell is not None and cell.runs and cell.runs[-1].stats:
            out.append(f"stats() of {cell.label} at P={top}: {summarize(cell.runs[-1].stats)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM: exit through the cleanup below, and let multiprocessing stop the workers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    needed = 2 * max(args.processes) * args.records * args.record_size // args.max_bytes + 16
    if args.backup_count < needed:
        print(
            f"note: raising backupCount to {needed} so that no backup is deleted", file=sys.stderr
        )
    config = Config(
        processes=args.processes,
        records=args.records,
        record_size=args.record_size,
        max_bytes=args.max_bytes,
        backup_count=max(args.backup_count, needed),
        repeat=max(1, args.repeat),
        handlers=args.handlers,
    )
    own = args.out is None
    scratch = tempfile.mkdtemp(prefix="bench-throughput-") if own else args.out
    os.makedirs(scratch, exist_ok=True)
    print(f"scratch directory {scratch}; {describe(config)}", file=sys.stderr, flush=True)
    try:
        cells = run_all(config, scratch)
    finally:
        if own:
            shutil.rmtree(scratch, ignore_errors=True)

    rows = table_rows(config, cells)
    print(describe(config))
    print(text_table(rows))
    print()
    if BASELINE in config.handlers and len(config.handlers) > 1:
        print(ratio_line(config, cells))
    targets = targets_line(config, cells)
    if targets:
        print(targets)
    stats = stats_lines(config, cells)
    for line in stats:
        print(line)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(f"{describe(config)}\n\n{markdown_table(rows)}\n")
            if stats:
                f.write("\n" + "\n".join(f"- {line}" for line in stats) + "\n")
    if args.chart:
        write_chart(args.chart, config, cells)
    failed = [c for c in cells.values() if c.kind in ("safe", "queued") and c.verdict != "PASS"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
