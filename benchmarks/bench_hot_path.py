"""Where the time of one ``logger.info`` through ``SafeRotatingFileHandler`` goes.

One process logs ``--records`` lines (default 200000) of 120 bytes, first through
``SafeRotatingFileHandler`` (maxBytes 1 MiB, so it rotates along the way) and through a plain
``logging.FileHandler``, then times the pieces of the fast path in isolation, each over the same
number of iterations: the logging machinery up to the handler (with a handler that does nothing),
``format``, ``encode``, the generation check (one ``pread`` of the sidecar's table, once per
record under load), the idle check (``time.monotonic``), ``os.write`` on an
``O_APPEND`` descriptor and ``os.lseek``. Every figure is the best of ``--repeat`` loops, in
nanoseconds per record. What the pieces do not add up to is the handler's own Python code
(method calls, branches, the size comparison).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_hot_path.py
    .venv/bin/python benchmarks/bench_hot_path.py --records 200000 --repeat 5 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from safe_rotating import SafeRotatingFileHandler
from safe_rotating.verify import make_line

MIB = 1024 * 1024


class _Nothing(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def _best(repeat: int, records: int, loop: Callable[[], None]) -> float:
    """Nanoseconds per record of the fastest of ``repeat`` runs of ``loop``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        loop()
        best = min(best, (time.perf_counter_ns() - start) / records)
    return best


def measure(directory: str, records: int, repeat: int) -> list[tuple[str, float]]:
    messages = [make_line(0, seq, 120) for seq in range(records)]
    results: list[tuple[str, float]] = []

    def through(handler_for: Callable[[str], logging.Handler], name: str) -> Callable[[], None]:
        def loop() -> None:
            path = os.path.join(directory, name, "app.log")
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            os.makedirs(os.path.dirname(path))
            handler = handler_for(path)
            info = _logger(f"bench_hot_path.{name}", handler).info
            for message in messages:
                info(message)
            handler.close()

        return loop

    def safe(path: str) -> logging.Handler:
        return SafeRotatingFileHandler(path, maxBytes=MIB, backupCount=1000)

    results.append(
        ("logger.info, SafeRotatingFileHandler", _best(repeat, records, through(safe, "safe")))
    )
    results.append(
        ("logger.info, FileHandler", _best(repeat, records, through(logging.FileHandler, "file")))
    )

    nothing = _logger("bench_hot_path.nothing", _Nothing()).info

    def machinery() -> None:
        for message in messages:
            nothing(message)

    results.append(
        ("logging machinery (handler that does nothing)", _best(repeat, records, machinery))
    )

    formatter = logging.Formatter("%(message)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, messages[0], None, None)

    def fmt() -> None:
        for _ in messages:
            formatter.format(record)

    results.append(("Formatter.format", _best(repeat, records, fmt)))

    def encode() -> None:
        for message in messages:
            (message + "\n").encode("utf-8", "strict")

    results.append(("str + '\\n', encode", _best(repeat, records, encode)))

    handler = SafeRotatingFileHandler(os.path.join(directory, "gen.log"))
    lock = handler._lock
    lock.open()

    def generation() -> None:
        read = lock.read_generation
        for _ in messages:
            _ = read()

    results.append(("generation check (pread)", _best(repeat, records, generation)))

    def clock() -> None:
        for _ in messages:
            _ = time.monotonic()

    results.append(("idle check (time.monotonic)", _best(repeat, records, clock)))
    handler.close()

    data = [(message + "\n").encode() for message in messages]
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT

    def write() -> None:
        path = os.path.join(directory, "write.log")
        fd = os.open(path, flags | os.O_TRUNC, 0o644)
        for chunk in data:
            os.write(fd, chunk)
        os.close(fd)

    results.append(("os.write, O_APPEND", _best(repeat, records, write)))

    fd = os.open(os.path.join(directory, "seek.log"), flags, 0o644)
    os.write(fd, b"x" * 1000)

    def lseek() -> None:
        for _ in messages:
            os.lseek(fd, 0, os.SEEK_CUR)

    results.append(("os.lseek", _best(repeat, records, lseek)))
    os.close(fd)

    def empty() -> None:
        for _ in messages:
            pass

    results.append(("(empty loop, included in every figure above)", _best(repeat, records, empty)))
    return results


def profile(directory: str, records: int, top: int) -> None:
    messages = [make_line(0, seq, 120) for seq in range(records)]
    path = os.path.join(directory, "profile", "app.log")
    os.makedirs(os.path.dirname(path))
    handler = SafeRotatingFileHandler(path, maxBytes=MIB, backupCount=1000)
    info = _logger("bench_hot_path.profile", handler).info
    profiler = cProfile.Profile()
    profiler.enable()
    for message in messages:
        info(message)
    profiler.disable()
    handler.close()
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000, help="(default 200000)")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many (default 5)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile listing")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown here")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="bench-hot-path-")
    try:
        results = measure(directory, args.records, max(1, args.repeat))
        if args.profile:
            profile(directory, args.records, 15)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    head = (
        f"{args.records} records of 120 B, one process, best of {args.repeat}; "
        f"Python {platform.python_version()}"
    )
    print(head)
    width = max(len(name) for name, _ in results)
    for name, ns in results:
        print(f"{name.ljust(width)}  {ns:8.0f} ns/record")
    if args.markdown:
        rows = "\n".join(f"| {name} | {ns:,.0f} |" for name, ns in results)
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(f"{head}\n\n| piece | ns per record |\n| --- | ---: |\n{rows}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
