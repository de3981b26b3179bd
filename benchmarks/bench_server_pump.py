"""The server alone, fed pre-built protocol-2 batches by raw sockets: how fast it writes.

P spawned processes each build their frames first (``--records`` lines of ``--record-size``
bytes, in batches of ``--batch`` records, as ``LogServerHandler`` cuts them), connect, say
hello, and, once all are connected, send every frame as fast as the socket takes it while
reading the acknowledgements. The clock runs from the first frame sent to the last ack read
by any sender; the server's CPU time (user + system, from ``/proc``) is taken over the same
span. Every line of every file is then read back by :func:`safe_rotating.verify.verify`.

The server runs with its defaults that matter here: escaping on, size rotation at
``--max-bytes`` (1 MiB), the journal, no ``--route``/``--when``/``--forward``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_server_pump.py
    .venv/bin/python benchmarks/bench_server_pump.py --processes 8 --records 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import select
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench_server import BASENAME, MIB, _free_port, _rss_peak_mb, _start_server, cpu_seconds

from safe_rotating._net import rendered as _rendered
from safe_rotating._net import wire as _wire
from safe_rotating.verify import make_line, verify


def _frames(writer: int, records: int, size: int, batch: int) -> tuple[str, list[bytes]]:
    client = uuid.uuid4().hex
    frames = []
    for first in range(0, records, batch):
        seqs = range(first, min(records, first + batch))
        texts = [make_line(writer, seq, size).encode() for seq in seqs]
        count = len(texts)
        frames.append(
            _rendered.encode_batch(
                client,
                first // batch + 1,
                texts,
                [20] * count,
                ["bench.pump"] * count,
                [time.time()] * count,
            )
        )
    return client, frames


def _sender(
    port: int, writer: int, records: int, size: int, batch: int, barrier: Any, results: Any
) -> None:
    client, frames = _frames(writer, records, size, batch)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hello = {"type": "hello", "client": client, "host": "bench", "pid": os.getpid()}
    sock.sendall(_wire.encode({**hello, "app": "pump", "protocols": [1, 2]}))
    reader = _wire.FrameReader()
    welcome: dict[str, Any] = {}
    while not welcome:
        reader.feed(sock.recv(65536))
        for payload in reader.frames():
            welcome = _wire.decode(payload)
    assert welcome.get("protocol") == 2, welcome
    barrier.wait()
    began = time.perf_counter()
    sock.setblocking(False)
    data = memoryview(b"".join(frames))
    sent = 0
    last = 0
    want = len(frames)
    while last < want:  # send while the socket takes it, read acks as they come; no spinning
        readable, writable, _ = select.select([sock], [sock] if sent < len(data) else [], [], 5)
        if writable:
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(data[sent : sent + (1 << 20)])
        if readable:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            reader.feed(chunk)
            for payload in reader.frames():
                message = _wire.decode(payload)
                if message["type"] == "ack":
                    last = max(last, int(message["seq"]))
    ended = time.perf_counter()
    sock.close()
    results.put((writer, began, ended))


@dataclass
class Run:
    rate: float
    cpu_us: float
    rss_mb: float | None
    lost: int
    verified: bool


def run_once(processes: int, records: int, size: int, batch: int) -> Run:
    directory = tempfile.mkdtemp(prefix="bench-pump-")
    port = _free_port()
    server = _start_server(directory, port, MIB)
    try:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(processes + 1)
        results = ctx.Queue()
        senders = [
            ctx.Process(target=_sender, args=(port, index, records, size, batch, barrier, results))
            for index in range(processes)
        ]
        for sender in senders:
            sender.start()
        barrier.wait(300)  # every sender has built its frames and been welcomed
        cpu_before = cpu_seconds(server.pid)
        reports = [results.get(timeout=600) for _ in senders]
        cpu_after = cpu_seconds(server.pid)
        for sender in senders:
            sender.join(60)
        rss = _rss_peak_mb(server.pid)
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        wall = max(r[2] for r in reports) - min(r[1] for r in reports)
        total = processes * records
        verdict = verify(
            directory,
            BASENAME,
            processes,
            records,
            max_bytes=MIB,
            backup_count=100_000,
            size_allowance=processes * size,
        )
        return Run(
            total / wall, (cpu_after - cpu_before) * 1e6 / total, rss, verdict.lost, verdict.ok
        )
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=8, help="sender sockets (default 8)")
    parser.add_argument("--records", type=int, default=50_000, help="per sender (default 50000)")
    parser.add_argument("--record-size", type=int, default=120, help="bytes a line (default 120)")
    parser.add_argument("--batch", type=int, default=256, help="records a batch (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs (default 3)")
    args = parser.parse_args(argv)
    runs = []
    for repeat in range(args.repeat):
        run = run_once(args.processes, args.records, args.record_size, args.batch)
        runs.append(run)
        print(
            f"[{repeat + 1}/{args.repeat}] {run.rate / 1000:7.1f}k rec/s  server CPU "
            f"{run.cpu_us:.2f} us/record  RSS {run.rss_mb or 0:.0f} MB  lost {run.lost}  "
            f"{'PASS' if run.verified else 'FAIL'}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"{args.processes} raw sockets x {args.records} pre-built records of {args.record_size} B "
        f"(protocol 2, {args.batch} a batch), median of {args.repeat}"
    )
    print("| records/s | server CPU | server RSS | lost |")
    print("|---:|---:|---:|---:|")
    print(
        f"| {statistics.median(r.rate for r in runs) / 1000:.0f} k "
        f"| {statistics.median(r.cpu_us for r in runs):.2f} µs/record "
        f"| {statistics.median(r.rss_mb or 0 for r in runs):.0f} MB "
        f"| {sum(r.lost for r in runs)} |"
    )
    return 0 if all(run.verified for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
