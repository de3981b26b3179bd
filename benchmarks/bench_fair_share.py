"""Fair share: what clients logging flat out keep of their throughput beside a flooder.

One ``safe-rotating-server`` (started by this script), and ``--clients`` spawned processes each
logging as fast as ``LogServerHandler`` lets it for ``--seconds``. A client's throughput is the
records the server acknowledged to it (so: written) in that time. Each repeat runs twice, in
turns: the clients alone, then the same clients beside one more connection, a flooder sending
native batches as fast as the server reads them. Reported per client: the median throughput
alone and beside the flooder and the median of the per-repeat ratios; the issue's target is a
ratio of at least 0.5 for every client (issue 14, item 7). The flooder's own rate is shown too.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_fair_share.py
    .venv/bin/python benchmarks/bench_fair_share.py --clients 8 --seconds 5 --repeat 3

Progress goes to stderr; the table goes to stdout. Compare only numbers of one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.synchronize import Barrier, Event
from typing import Any

from safe_rotating._client.frames import batch_frame
from safe_rotating._net.wire import encode
from safe_rotating.client import LogServerHandler

MESSAGE = "x" * 200


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _client(port: int, n: int, seconds: float, barrier: Barrier, out: Any) -> None:
    """Log flat out for ``seconds``; report the records acknowledged in that time."""
    handler = LogServerHandler(f"127.0.0.1:{port}", spool_dir=False, block_timeout=60.0)
    handler.setFormatter(logging.Formatter("%(message)s"))  # rendered here: protocol 2
    logger = logging.getLogger(f"client{n}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    barrier.wait()
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        for _ in range(100):
            logger.info(MESSAGE)
    acked = handler.stats().acked
    elapsed = time.monotonic() - start
    handler.close()
    out.put((n, acked / elapsed))


def _flooder(port: int, stop: Event, out: Any) -> None:
    """Send 64 KiB native batches as fast as the server reads them, until ``stop``."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(encode({"type": "hello", "client": "flooder", "host": "bench"}))
    sock.recv(65536)  # the welcome

    def drain() -> None:  # acknowledgements; a client that does not read them is closed
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    record = json.dumps({"created": time.time(), "name": "flood", "msg": MESSAGE}).encode()
    records = [record] * (64 * 1024 // len(record))
    seq = sent = 0
    start = time.monotonic()
    while not stop.is_set():
        seq += 1
        sock.sendall(batch_frame("flooder", seq, records))
        sent += len(records)
    out.put(sent / (time.monotonic() - start))
    sock.close()


def _run(port: int, clients: int, seconds: float, flood: bool) -> tuple[list[float], float]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    barrier = context.Barrier(clients)
    stop = context.Event()
    flooder = None
    if flood:
        flooder = context.Process(target=_flooder, args=(port, stop, results))
        flooder.start()
        time.sleep(0.5)  # under way before the clients start
    workers = [
        context.Process(target=_client, args=(port, n, seconds, barrier, results))
        for n in range(clients)
    ]
    for worker in workers:
        worker.start()
    rates = dict(results.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join()
    flood_rate = 0.0
    if flooder is not None:
        stop.set()
        flood_rate = results.get(timeout=60)
        flooder.join()
    return [rates[n] for n in range(clients)], flood_rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="bench-fair-")
    port = _free_port()
    command = [sys.executable, "-m", "safe_rotating.server", "--file"]
    command += [os.path.join(directory, "app.log"), "--format", "%(message)s"]
    command += ["--max-bytes", "64MiB", "--backup-count", "1", "--listen", f"127.0.0.1:{port}"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if b"listening on" in line:
                break
        threading.Thread(target=server.stderr.read, daemon=True).start()
        alone: list[list[float]] = []
        beside: list[list[float]] = []
        floods: list[float] = []
        for repeat in range(args.repeat):
            rates, _ = _run(port, args.clients, args.seconds, flood=False)
            alone.append(rates)
            rates, flood_rate = _run(port, args.clients, args.seconds, flood=True)
            beside.append(rates)
            floods.append(flood_rate)
            print(f"repeat {repeat + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        shutil.rmtree(directory, ignore_errors=True)
    print("| client | alone (records/s) | beside the flooder (records/s) | ratio |")
    print("|---|---:|---:|---:|")
    worst = float("inf")
    for n in range(args.clients):
        ratio = statistics.median(b[n] / a[n] for a, b in zip(alone, beside, strict=True))
        worst = min(worst, ratio)
        a_median = statistics.median(a[n] for a in alone)
        b_median = statistics.median(b[n] for b in beside)
        print(f"| {n} | {a_median:,.0f} | {b_median:,.0f} | {ratio:.2f} |")
    print(f"\nflooder: {statistics.median(floods):,.0f} records/s (median)")
    verdict = "kept at least half" if worst >= 0.5 else "kept LESS than half"
    print(f"lowest ratio {worst:.2f}: every client {verdict} of its throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
