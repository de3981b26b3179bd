"""Server mode against file mode and a plain ``FileHandler``, in one run.

P spawned processes each log ``--records`` lines of ``--record-size`` bytes, timing every
``logger.info`` call, through one of:

* ``file``: plain ``logging.FileHandler`` (the ceiling: one file, no rotation, no lock);
* ``safe``: ``SafeRotatingFileHandler`` (file mode);
* ``server``: ``LogServerHandler`` sending to a ``safe-rotating-server`` this script starts,
  which writes through the same rotation engine.

Throughput is measured end to end: from the first ``emit`` of any process until the last record
is on disk. For the server that is when every client's ``close()`` has returned, which waits for
the server's acknowledgements, which the server sends once the batch is written. Every line of
every file is then read back by :func:`safe_rotating.verify.verify`; the server's peak resident
memory (``VmHWM``) is read from ``/proc`` before it is stopped.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_server.py
    .venv/bin/python benchmarks/bench_server.py --processes 8 --records 20000 --repeat 3
    .venv/bin/python benchmarks/bench_server.py --repeat 5 --chart docs/benchmarks-server.png

Handlers take turns within each repeat, so noise on the machine hits all of them alike; compare
only ratios taken in one run.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from safe_rotating import SafeRotatingFileHandler
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line, verify

MIB = 1024 * 1024
BASENAME = "app.log"
KINDS = {"file": "FileHandler", "safe": "safe_rotating (file)", "server": "safe_rotating (server)"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _worker(
    kind: str,
    path: str,
    address: str,
    spool: str,
    max_bytes: int,
    writer: int,
    records: int,
    size: int,
    barrier: Any,
    results: Any,
) -> None:
    handler: logging.Handler
    if kind == "file":
        handler = logging.FileHandler(path)
    elif kind == "safe":
        handler = SafeRotatingFileHandler(path, maxBytes=max_bytes, backupCount=100_000)
    else:
        handler = LogServerHandler(address, spool_dir=spool)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(f"bench.{writer}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    lines = [make_line(writer, seq, size) for seq in range(records)]
    latencies = array("q", bytes(8 * records))
    clock = time.perf_counter_ns
    barrier.wait()
    began = clock()
    for seq, line in enumerate(lines):
        start = clock()
        log.info(line)
        latencies[seq] = clock() - start
    handler.close()  # the server's handler waits here until the server has written everything
    ended = clock()
    results.put((writer, began, ended, latencies.tobytes()))


@dataclass
class Run:
    kind: str
    rate: float
    p50_us: float
    p99_us: float
    lost: int
    verified: bool
    server_rss_mb: float | None
    server_cpu_us: float | None = None  # user + system CPU of the server per record


@dataclass
class Cell:
    kind: str
    runs: list[Run] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(float(getattr(run, name) or 0.0) for run in self.runs)


def _rss_peak_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (from ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(directory: str, port: int, max_bytes: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "safe_rotating.server",
        "--listen", f"127.0.0.1:{port}",
        "--file", os.path.join(directory, BASENAME),
        "--max-bytes", str(max_bytes),
        "--backup-count", "100000",
        "--format", "%(message)s",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited: {server.stderr.read().decode() if server.stderr else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("the server did not start listening within 30 s")


def run_once(kind: str, processes: int, records: int, size: int, max_bytes: int) -> Run:
    directory = tempfile.mkdtemp(prefix=f"bench-server-{kind}-")
    server: subprocess.Popen[bytes] | None = None
    try:
        port = _free_port()
        started_cpu = 0.0
        if kind == "server":
            server = _start_server(directory, port, max_bytes)
            time.sleep(0.2)  # let it finish starting (imports, the first open) before counting
            started_cpu = cpu_seconds(server.pid)
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(processes)
        results = ctx.Queue()
        spool = os.path.join(directory, "spool")
        workers = [
            ctx.Process(
                target=_worker,
                args=(
                    kind,
                    os.path.join(directory, BASENAME),
                    f"127.0.0.1:{port}",
                    spool,
                    max_bytes,
                    index,
                    records,
                    size,
                    barrier,
                    results,
                ),
            )
            for index in range(processes)
        ]
        for worker in workers:
            worker.start()
        reports = [results.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join(60)
        rss = cpu = None
        if server is not None:
            rss = _rss_peak_mb(server.pid)
            # Everything is written (each close() waited for its acks): the CPU it took since
            # it was ready, per record.
            cpu = (cpu_seconds(server.pid) - started_cpu) * 1e6 / (processes * records)
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        latencies = array("q")
        for report in reports:
            latencies.frombytes(report[3])
        ordered = sorted(latencies)
        wall = (max(r[2] for r in reports) - min(r[1] for r in reports)) / 1e9
        verdict = verify(
            directory,
            BASENAME,
            processes,
            records,
            max_bytes=0 if kind == "file" else max_bytes,
            backup_count=0 if kind == "file" else 100_000,
            size_allowance=processes * size,
        )

        def pct(q: float) -> float:
            return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1] / 1000

        rate = processes * records / wall
        return Run(kind, rate, pct(0.5), pct(0.99), verdict.lost, verdict.ok, rss, cpu)
    finally:
        if server is not None and server.poll() is None:
            server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def write_chart(path: str, cells: dict[str, Cell], title: str) -> None:
    """Records per second of each handler (median, with every run as a dot) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.2))
    names = [KINDS[kind] for kind in cells]
    medians = [cell.median("rate") / 1000 for cell in cells.values()]
    bars = axes.barh(names, medians, color=["#9e9e9e", "#4c78a8", "#f58518"])
    for row, cell in enumerate(cells.values()):
        axes.plot([run.rate / 1000 for run in cell.runs], [row] * len(cell.runs), "k.", ms=4)
    for bar, cell in zip(bars, cells.values(), strict=True):
        ratio = statistics.median(cell.ratios)
        right = max([bar.get_width(), *(run.rate / 1000 for run in cell.runs)])
        axes.annotate(
            f"  {ratio:.2f}x",
            (right, bar.get_y() + bar.get_height() / 2),
            va="center",
            fontsize=9,
        )
    axes.invert_yaxis()
    axes.set_xlim(0, axes.get_xlim()[1] * 1.12)
    axes.set_xlabel("records/s (thousands), end to end until on disk; dots: each run")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=8, help="writer processes (default 8)")
    parser.add_argument("--records", type=int, default=20_000, help="per process (default 20000)")
    parser.add_argument("--record-size", type=int, default=120, help="bytes a line (default 120)")
    parser.add_argument("--max-bytes", type=int, default=MIB, help="rotate at (default 1 MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per handler (default 3)")
    parser.add_argument("--chart", metavar="PATH", help="write a PNG chart here (matplotlib)")
    args = parser.parse_args(argv)
    cells = {kind: Cell(kind) for kind in KINDS}
    total = args.repeat * len(KINDS)
    done = 0
    for repeat in range(args.repeat):
        base: float | None = None
        for kind in KINDS:
            run = run_once(kind, args.processes, args.records, args.record_size, args.max_bytes)
            cells[kind].runs.append(run)
            if kind == "file":
                base = run.rate
            assert base is not None
            cells[kind].ratios.append(run.rate / base)
            done += 1
            rss = f"  server RSS {run.server_rss_mb:.0f} MB" if run.server_rss_mb else ""
            if run.server_cpu_us is not None:
                rss += f", CPU {run.server_cpu_us:.2f} us/record"
            print(
                f"[{done:2d}/{total}] repeat {repeat + 1} {KINDS[kind]:<24} "
                f"{run.rate / 1000:7.1f}k rec/s  p99 {run.p99_us:7.1f} us  lost {run.lost}"
                f"  {'PASS' if run.verified else 'FAIL'}{rss}",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"P={args.processes}, {args.records} records x {args.record_size} B per process, "
        f"maxBytes {args.max_bytes}, median of {args.repeat}; end to end (until on disk)"
    )
    print(
        "| handler | records/s | x FileHandler | p50 emit | p99 emit | lost | server RSS "
        "| server CPU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, cell in cells.items():
        rss = f"{cell.median('server_rss_mb'):.0f} MB" if kind == "server" else "—"
        cpu = f"{cell.median('server_cpu_us'):.2f} µs/record" if kind == "server" else "—"
        print(
            f"| {KINDS[kind]} | {cell.median('rate') / 1000:.0f} k | "
            f"{statistics.median(cell.ratios):.2f} | {cell.median('p50_us'):.1f} µs | "
            f"{cell.median('p99_us'):.1f} µs | {sum(r.lost for r in cell.runs)} | {rss} | {cpu} |"
        )
    ratios = cells["server"].ratios
    print(f"server / FileHandler per repeat: {', '.join(f'{r:.2f}' for r in ratios)}")
    if args.chart:
        title = (
            f"{args.processes} processes x {args.records} records of {args.record_size} B, "
            f"median of {args.repeat} (x FileHandler)"
        )
        write_chart(args.chart, cells, title)
    return 0 if all(run.verified for cell in cells.values() for run in cell.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
