"""The command line of ``safe-rotating-stress``: its options, and the run they ask for.

``--django`` hands the rest of the command line to :mod:`safe_rotating.stress.django.cli`, which
has options of its own. Both exit 0 when every check passed, 1 when one failed, and 2 for a
usage error (argparse's status), which includes a combination of options the handler refuses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from safe_rotating._common.argtypes import age_arg, positive_arg, size_arg
from safe_rotating._version import __version__
from safe_rotating.handlers import DEFAULT_QUEUE_SIZE
from safe_rotating.stress.config import BASENAME, START_METHODS, StressConfig
from safe_rotating.stress.django.cli import main as django_main
from safe_rotating.stress.factories import HANDLERS
from safe_rotating.stress.progress import ProgressBar
from safe_rotating.stress.result import StressResult, write_plot
from safe_rotating.stress.runner import run_stress

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safe-rotating-stress",
        allow_abbrev=False,
        description=(
            "Log numbered records from many processes through a rotating handler, then read "
            "every file back and check that no record was lost, duplicated, torn or reordered, "
            "and that file sizes and counts stay within limits."
        ),
        epilog=(
            "examples:\n"
            "  safe-rotating-stress                         8 processes, defaults\n"
            "  safe-rotating-stress --start-method fork     handler built before fork (preload)\n"
            "  safe-rotating-stress --handler stdlib        the same run through the stdlib class\n"
            "  safe-rotating-stress --enqueue               queued mode (a writer thread each)\n"
            "  safe-rotating-stress --enqueue --kill 3      ... and kill -9 three workers mid-run\n"
            "  safe-rotating-stress --django                Django under gunicorn, uWSGI, Celery\n"
            "  safe-rotating-stress --when S --max-bytes 16KiB --compress gzip --precreate 100\n"
            "  safe-rotating-stress --dir /var/log/test -p 16 -n 50000 --max-bytes 1MiB\n"
            "  safe-rotating-stress --mode server --json out.json --plot out.png\n"
            "exit status: 0 when every check passed, 1 when the handler tested failed one,\n"
            "2 for a usage error (a bad option, options the handler cannot honour together,\n"
            "a --dir that already holds app.log files)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("-p", "--processes", type=positive_arg, default=8, help="worker processes (default 8)")
    add(
        "-t",
        "--threads",
        type=positive_arg,
        default=1,
        help="writer threads per process (default 1)",
    )
    add(
        "-n",
        "--records",
        type=positive_arg,
        default=10_000,
        help="records per writer (default 10000)",
    )
    add("--record-size", type=positive_arg, default=120, help="bytes per line (default 120)")
    add("--max-bytes", type=size_arg, default=64 * 1024, help="rotate at this size (default 64KiB)")
    add(
        "--backup-count",
        type=int,
        default=0,
        help="backups to keep; default: enough to keep every record, so any loss is a bug",
    )
    add("--start-method", choices=START_METHODS, default="spawn", help="(default spawn)")
    add(
        "--handler", choices=sorted(HANDLERS), default="safe", help="handler to test (default safe)"
    )
    add(
        "--mode",
        choices=("file", "server"),
        default="file",
        help="server: start safe-rotating-server here and send through LogServerHandler",
    )
    add(
        "--enqueue",
        action="store_true",
        help="--handler safe with enqueue=True: emit queues, a writer thread per process writes",
    )
    add(
        "--queue-size",
        type=size_arg,
        default=DEFAULT_QUEUE_SIZE,
        help="with --enqueue: the queue's bound in bytes (default 1MiB)",
    )
    add(
        "--kill",
        type=int,
        default=0,
        metavar="N",
        help="SIGKILL N random workers mid-run; judge what each lost against the mode's "
        "guarantee (none in sync mode; with --enqueue at most what fits in --queue-size)",
    )
    add(
        "--lock-timeout",
        type=float,
        default=0.25,
        help="longest wait for the rotation lock, seconds (default 0.25, the handler's)",
    )
    add("--when", type=str.upper, help="also rotate by time: S, M, H, D, MIDNIGHT, W0-W6")
    add("--interval", type=positive_arg, default=1, help="periods of --when per file (default 1)")
    add(
        "--duration",
        type=float,
        default=None,
        help="spread each writer's records over this many seconds (default: as fast as "
        "possible; 5 with --when, so that several boundaries pass)",
    )
    add("--compress", choices=("gzip", "zstd"), help="compress backups in the background")
    add("--precreate", type=int, default=0, metavar="N", help="start with N existing backups")
    add("--max-age", type=age_arg, help="also delete backups older than this (e.g. 30s, 12h, 14d)")
    add("--max-total-bytes", type=size_arg, help="also keep the whole set under this size (5GiB)")
    add("--dir", help="directory for the log files (default: a temporary one, removed after)")
    add("--keep", action="store_true", help="keep the temporary directory for inspection")
    add("--json", metavar="PATH", help="write the run's settings, verdict and figures to PATH")
    add("--plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    add("--version", action="version", version=f"safe-rotating-stress {__version__}")
    add(
        "--django",
        action="store_true",
        help="run a Django site under real gunicorn/uWSGI/Celery workers instead "
        "(its own options: safe-rotating-stress --django --help)",
    )
    return parser


def refusal(config: StressConfig) -> str | None:
    """Why the handler would refuse these settings (its factory's ``SystemExit``), found by
    building one in a scratch directory before any worker starts; ``None`` if it would not."""
    if config.mode == "server":
        return None  # the server run checks its own options before it starts anything
    scratch = tempfile.mkdtemp(prefix="safe-rotating-stress-check-")
    try:
        config.handler_for(os.path.join(scratch, BASENAME)).close()
    except SystemExit as exc:
        return str(exc.code)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def file_sizes(directory: str) -> list[int]:
    """The size of each of the run's files, oldest first (for ``--plot``)."""
    paths = [os.path.join(directory, n) for n in os.listdir(directory) if n.startswith(BASENAME)]
    return [os.path.getsize(p) for p in sorted(paths, key=os.path.getmtime)]


def write_outputs(
    args: argparse.Namespace, result: StressResult, timeline: list[tuple[float, int]]
) -> None:
    """``--json`` and ``--plot``, as ``--django`` writes them."""
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result.as_dict(), f, indent=2)
        print(f"figures written to {args.json}")
    if args.plot:
        problem = write_plot(args.plot, result, timeline, file_sizes(result.config.directory))
        print(problem or f"chart written to {args.plot}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--django" in argv:
        return django_main([a for a in argv if a != "--django"])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kill and (
        args.kill >= args.processes or args.backup_count or args.max_age or args.max_total_bytes
    ):
        parser.error(
            f"--kill {args.kill}: kill fewer than --processes, and keep every backup (no "
            "--backup-count, --max-age or --max-total-bytes), so that every record is counted"
        )
    if args.kill and args.mode == "server":
        parser.error("--kill is for file mode (server mode's client spools; see the tests)")
    own_dir = args.dir is None
    directory = tempfile.mkdtemp(prefix="safe-rotating-stress-") if own_dir else args.dir
    os.makedirs(directory, exist_ok=True)
    if any(name.startswith(BASENAME) for name in os.listdir(directory)):
        print(f"error: {directory!r} already holds {BASENAME} files; use an empty directory")
        return 2
    config = StressConfig(
        directory=directory,
        processes=args.processes,
        threads=args.threads,
        records=args.records,
        record_size=args.record_size,
        max_bytes=args.max_bytes,
        backup_count=args.backup_count,
        start_method=args.start_method,
        handler=args.handler,
        lock_timeout=args.lock_timeout,
        when=args.when,
        interval=args.interval,
        duration=args.duration if args.duration is not None else (5.0 if args.when else 0.0),
        compress=args.compress,
        precreate=args.precreate,
        max_age=args.max_age,
        max_total_bytes=args.max_total_bytes,
        enqueue=args.enqueue,
        queue_size=args.queue_size,
        kill=args.kill,
        mode=args.mode,
    )
    problem = refusal(config)
    if problem is not None:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
        parser.error(problem)
    print(
        f"{config.processes} processes x {config.threads} threads x {config.records} records "
        f"through {config.handler!r} into {directory}",
        flush=True,
    )
    bar = ProgressBar(config.total)
    timeline: list[tuple[float, int]] = []

    def progress(done: int, seconds: float) -> None:
        timeline.append((seconds, done))
        bar(done, seconds)

    try:
        result = run_stress(config, on_progress=progress)
    except SystemExit as exc:  # server mode refuses options it cannot honour, before starting
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc.code, str):
            parser.error(exc.code)
        raise
    print(result.report())
    write_outputs(args, result, timeline)
    if own_dir and not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    elif own_dir:
        print(f"files kept in {directory}")
    return 0 if result.ok else 1
