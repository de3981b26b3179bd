"""What one rotation costs, as a function of the backups that already exist.

A single process writes through each handler into a file with a small ``maxBytes`` after
``N`` backups ``app.log.1 .. app.log.N`` have been created, and times every ``logger.info``
call until the one that rotates. Reported per (handler, N): the median, over ``--repeat`` fresh
runs, of that rotating call, next to the median of the ordinary calls before it.

Table 1 uses ``backupCount = N + 1``, so every existing backup is shifted and none is deleted.
Table 2 keeps only a few backups (``--few``, default 5) but sets ``backupCount`` very high
(``--huge``, default 100000): the stdlib looks for every possible backup name on each rotation,
while safe_rotating (and concurrent-log-handler) stop at the first name that does not exist.

Table 3 (``--stall``) is the stall under load: P processes write through each handler into a set
that starts with N existing backups (0, 100, 1000), gzip off and on, concurrent-log-handler next
to safe_rotating in the same run. Reported: records/s from the start to the last record logged,
the longest single ``logger.info`` call of any process (the stall a rotation can cause), and the
longest ``close()`` (where work left for it is done: renumbering, the last compression).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_rotation_cost.py
    .venv/bin/python benchmarks/bench_rotation_cost.py --backups 0,10,100,1000 --repeat 7 \\
        --markdown bench-out/rotation.md
    .venv/bin/python benchmarks/bench_rotation_cost.py --markdown results.md --append
    .venv/bin/python benchmarks/bench_rotation_cost.py --stall --processes 2,64
"""

from __future__ import annotations

import argparse
import gzip
import logging
import logging.handlers
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from peers import HANDLERS, build

from safe_rotating.stress.factories import HANDLERS as FACTORIES
from safe_rotating.verify import PREEXISTING, make_line

BASENAME = "app.log"
KINDS = ("safe", "stdlib", "clh")  # rotating handlers only


@dataclass(frozen=True)
class Sample:
    rotation_ns: int  # the call that rotated
    ordinary_ns: float  # median of the calls before it


def measure_once(
    kind: str,
    existing: int,
    backup_count: int,
    record_size: int,
    records_per_file: int,
    directory: str,
) -> Sample:
    """Create ``existing`` backups, then log until the handler rotates; time each call."""
    path = os.path.join(directory, BASENAME)
    line = (make_line(0, 0, record_size) + "\n").encode()
    for n in range(1, existing + 1):
        with open(f"{path}.{n}", "wb") as f:
            f.write(line)
    rotated_marker = f"{path}.{existing + 1}"  # appears once the current file became .1

    handler = build(kind, path, record_size * records_per_file, backup_count)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"bench_rotation_cost.{kind}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    messages = [make_line(0, seq, record_size) for seq in range(3 * records_per_file + 3)]
    # Leave no writeback or journal work from earlier runs (removing 1000 backups, say) to be
    # paid for by whichever handler happens to run next.
    os.sync()
    clock = time.perf_counter_ns
    ordinary: list[int] = []
    try:
        for message in messages:
            before = clock()
            logger.info(message)
            elapsed = clock() - before
            if os.path.lexists(rotated_marker):
                if not ordinary:
                    raise RuntimeError(f"{kind}: rotated on the first record")
                return Sample(elapsed, statistics.median(ordinary))
            ordinary.append(elapsed)
    finally:
        logger.handlers = []
        handler.close()
    raise RuntimeError(f"{kind}: no rotation after {len(messages)} records")


@dataclass
class Row:
    kind: str
    existing: int
    backup_count: int
    samples: list[Sample]

    @property
    def rotation_us(self) -> float:
        return statistics.median(s.rotation_ns for s in self.samples) / 1000

    @property
    def ordinary_us(self) -> float:
        return statistics.median(s.ordinary_ns for s in self.samples) / 1000


def run(
    cases: Sequence[tuple[int, int]],
    kinds: Sequence[str],
    repeat: int,
    record_size: int,
    records_per_file: int,
    scratch: str,
) -> list[Row]:
    """Each (existing, backupCount) case for each handler, ``repeat`` times, interleaved."""
    rows = {(k, e, b): Row(k, e, b, []) for e, b in cases for k in kinds}
    for r in range(repeat):
        for existing, backup_count in cases:
            shift = r % len(kinds)
            for kind in [*kinds[shift:], *kinds[:shift]]:
                directory = tempfile.mkdtemp(prefix=f"{kind}-{existing}-", dir=scratch)
                try:
                    sample = measure_once(
                        kind, existing, backup_count, record_size, records_per_file, directory
                    )
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
                rows[(kind, existing, backup_count)].samples.append(sample)
            print(
                f"repeat {r + 1}/{repeat}: {existing} backups, backupCount {backup_count} done",
                file=sys.stderr,
                flush=True,
            )
    return list(rows.values())


COLUMNS = ("handler", "existing backups", "backupCount", "rotating emit us", "ordinary emit us")


def table(rows: Sequence[Row]) -> list[list[str]]:
    return [
        [
            HANDLERS[row.kind][0],
            str(row.existing),
            str(row.backup_count),
            f"{row.rotation_us:,.1f}",
            f"{row.ordinary_us:,.1f}",
        ]
        for row in sorted(rows, key=lambda r: (r.backup_count, r.existing))
    ]


def text_table(rows: list[list[str]]) -> str:
    everything = [list(COLUMNS), *rows]
    widths = [max(len(row[i]) for row in everything) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(everything):
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("  ".join([row[0].ljust(widths[0]), *rest]))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join([" --- "] + [" ---: "] * (len(COLUMNS) - 1)) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(row) + " |" for row in rows)])


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,10,100, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected numbers >= 0 like 0,10,100, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--backups", type=_counts, default=(0, 10, 100, 1000), help="(default 0,10,100,1000)")
    add("--few", type=int, default=5, help="backups existing in table 2 (default 5)")
    add("--huge", type=int, default=100_000, help="backupCount in table 2 (default 100000)")
    add("--repeat", type=int, default=7, help="fresh runs per cell; median (default 7)")
    add("--record-size", type=int, default=120, help="bytes per line (default 120)")
    add("--records-per-file", type=int, default=20, help="maxBytes in records (default 20)")
    add("--out", help="scratch directory (default: a temporary one, removed afterwards)")
    add("--markdown", metavar="PATH", help="write both tables as Markdown here")
    add("--append", action="store_true", help="append to --markdown instead of replacing it")
    add("--stall", action="store_true", help="measure table 3 (the stall under load) instead")
    add("--processes", type=_counts, default=(2, 64), help="table 3 writers (default 2,64)")
    add("--stall-backups", type=_counts, default=(0, 100, 1000), help="(default 0,100,1000)")
    add(
        "--stall-seconds",
        type=float,
        default=4.0,
        help="each process logs for this long (default 4: long enough for the background "
        "compression of a 1 s grace to run during the run, not after it)",
    )
    add("--stall-max-bytes", type=int, default=16 * 1024, help="maxBytes (default 16384)")
    add("--repeat-stall", type=int, default=3, help="runs per cell (default 3)")
    return parser


# -- table 3: the stall under load -----------------------------------------------------------
def _stall_worker(
    kind: str,
    path: str,
    max_bytes: int,
    backup_count: int,
    compress: str | None,
    seconds: float,
    record_size: int,
    go: Any,
    out: Any,
    ends: Any,
    counts: Any,
    closes: Any,
    index: int,
) -> None:
    handler = FACTORIES[kind](path, max_bytes, backup_count, 10.0, compress=compress)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"stall.{index}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    messages = [make_line(index, seq, record_size) for seq in range(1000)]
    clock = time.monotonic_ns  # one clock for every process
    worst = 0
    count = 0
    go.wait()
    deadline = clock() + int(seconds * 1e9)
    before = clock()
    while before < deadline:
        for message in messages:
            logger.info(message)
            after = clock()
            worst = max(worst, after - before)
            before = after
        count += len(messages)
    ends[index] = before
    counts[index] = count
    out[index] = worst
    before = clock()
    handler.close()  # renumbering left for close, compression under way: timed apart
    closes[index] = clock() - before


def _precreate(directory: str, count: int, compress: str | None, record_size: int) -> None:
    for n in range(1, count + 1):
        line = (make_line(PREEXISTING, count - n, record_size) + "\n").encode()
        path = os.path.join(directory, f"{BASENAME}.{n}")
        if compress:
            with gzip.open(path + ".gz", "wb") as f:
                f.write(line)
        else:
            with open(path, "wb") as f:
                f.write(line)


@dataclass
class StallRow:
    kind: str
    processes: int
    existing: int
    compress: str | None
    rates: list[float]
    worst_ms: list[float]
    close_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def worst(self) -> float:
        return max(self.worst_ms)

    @property
    def close(self) -> float:
        return max(self.close_ms)


def stall_once(
    kind: str,
    processes: int,
    existing: int,
    compress: str | None,
    seconds: float,
    record_size: int,
    max_bytes: int,
    scratch: str,
) -> tuple[float, float, float]:
    """Records/s, the longest emit (ms) and the longest close (ms) of one run."""
    directory = tempfile.mkdtemp(prefix=f"stall-{kind}-", dir=scratch)
    try:
        _precreate(directory, existing, compress, record_size)
        path = os.path.join(directory, BASENAME)
        ctx: Any = multiprocessing.get_context("fork")
        go = ctx.Barrier(processes + 1)
        out = ctx.Array("q", processes, lock=False)
        ends = ctx.Array("q", processes, lock=False)
        counts = ctx.Array("q", processes, lock=False)
        closes = ctx.Array("q", processes, lock=False)
        backup_count = existing + 100_000  # nothing is deleted during the run
        workers = [
            ctx.Process(
                target=_stall_worker,
                args=(
                    kind,
                    path,
                    max_bytes,
                    backup_count,
                    compress,
                    seconds,
                    record_size,
                    go,
                    out,
                    ends,
                    counts,
                    closes,
                    i,
                ),
            )
            for i in range(processes)
        ]
        for worker in workers:
            worker.start()
        go.wait()
        started = time.monotonic_ns()
        for worker in workers:
            worker.join()
        # Throughput: from the start to the last record logged; close() is timed apart.
        took = (max(ends) - started) / 1e9
        return sum(counts) / took, max(out) / 1e6, max(closes) / 1e6
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_stall(args: argparse.Namespace, scratch: str) -> list[StallRow]:
    rows: dict[tuple[str, int, int, str | None], StallRow] = {}
    kinds = ["safe", "clh"]
    for r in range(max(1, args.repeat_stall)):
        for processes in args.processes:
            for existing in args.stall_backups:
                for compress in (None, "gzip"):
                    for kind in kinds if r % 2 == 0 else kinds[::-1]:
                        rate, worst, close = stall_once(
                            kind,
                            processes,
                            existing,
                            compress,
                            args.stall_seconds,
                            args.record_size,
                            args.stall_max_bytes,
                            scratch,
                        )
                        key = (kind, processes, existing, compress)
                        row = rows.setdefault(
                            key, StallRow(kind, processes, existing, compress, [], [])
                        )
                        row.rates.append(rate)
                        row.worst_ms.append(worst)
                        row.close_ms.append(close)
                    print(
                        f"stall repeat {r + 1}: {processes} processes, {existing} backups, "
                        f"gzip {'on' if compress else 'off'} done",
                        file=sys.stderr,
                        flush=True,
                    )
    return list(rows.values())


STALL_COLUMNS = (
    "handler",
    "processes",
    "existing backups",
    "gzip",
    "records/s",
    "longest emit ms",
    "longest close ms",
)


def stall_table(rows: Sequence[StallRow]) -> list[list[str]]:
    return [
        [
            HANDLERS[row.kind][0],
            str(row.processes),
            str(row.existing),
            "on" if row.compress else "off",
            f"{row.rate:,.0f}",
            f"{row.worst:,.2f}",
            f"{row.close:,.1f}",
        ]
        for row in sorted(rows, key=lambda r: (r.processes, r.existing, bool(r.compress), r.kind))
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stall:
        own = args.out is None
        scratch = tempfile.mkdtemp(prefix="bench-stall-") if own else args.out
        try:
            rows = run_stall(args, scratch)
        finally:
            if own:
                shutil.rmtree(scratch, ignore_errors=True)
        title = (
            f"Stall under load: {args.record_size} B records, maxBytes {args.stall_max_bytes}, "
            f"median records/s and the longest emit of {args.repeat_stall} runs; "
            f"Python {platform.python_version()}"
        )
        body = stall_table(rows)
        print(title)
        everything = [list(STALL_COLUMNS), *body]
        widths = [max(len(row[i]) for row in everything) for i in range(len(STALL_COLUMNS))]
        for row in everything:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if args.markdown:
            head = "| " + " | ".join(STALL_COLUMNS) + " |"
            rule = "|" + "|".join([" --- "] + [" ---: "] * (len(STALL_COLUMNS) - 1)) + "|"
            lines = [head, rule, *("| " + " | ".join(row) + " |" for row in body)]
            with open(args.markdown, "a" if args.append else "w", encoding="utf-8") as f:
                f.write(f"{title}\n\n" + "\n".join(lines) + "\n")
        return 0
    own = args.out is None
    scratch = tempfile.mkdtemp(prefix="bench-rotation-") if own else args.out
    os.makedirs(scratch, exist_ok=True)
    kinds = list(KINDS)
    repeat = max(1, args.repeat)
    common = (repeat, args.record_size, args.records_per_file, scratch)
    try:
        shifted = run([(n, n + 1) for n in args.backups], kinds, *common)
        huge = run([(args.few, args.huge)], kinds, *common)
    finally:
        if own:
            shutil.rmtree(scratch, ignore_errors=True)

    max_bytes = args.record_size * args.records_per_file
    setup = (
        f"one process, {args.record_size} B records, maxBytes {max_bytes}, median of {repeat} "
        f"fresh runs; Python {platform.python_version()}"
    )
    first = (
        f"Rotation with N existing backups, backupCount = N + 1 (every backup shifts, none "
        f"is deleted); {setup}"
    )
    second = f"Rotation with {args.few} existing backups and backupCount = {args.huge}; {setup}"
    print(first)
    print(text_table(table(shifted)))
    print()
    print(second)
    print(text_table(table(huge)))
    if args.markdown:
        text = (
            f"{first}\n\n{markdown_table(table(shifted))}\n\n"
            f"{second}\n\n{markdown_table(table(huge))}\n"
        )
        with open(args.markdown, "a" if args.append else "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
