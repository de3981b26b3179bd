"""The command line of ``safe-rotating-stress --django``: its options, the plan of runs, the
report and the exit status."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace

from safe_rotating._common.argtypes import positive_arg, size_arg
from safe_rotating._version import __version__
from safe_rotating.stress.django.report import details, table, write_plot
from safe_rotating.stress.django.result import ScenarioResult
from safe_rotating.stress.django.runner import run_scenario
from safe_rotating.stress.django.scenarios import DEFAULT_SCENARIOS, SCENARIOS, DjangoStressConfig
from safe_rotating.stress.django.sinks import check_mode
from safe_rotating.stress.progress import ProgressBar

__all__ = ["build_parser", "main", "plan"]


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(SCENARIOS) if text == "all" else tuple(n.strip() for n in text.split(","))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown)!r}; choose from {', '.join(SCENARIOS)} or all"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safe-rotating-stress --django",
        allow_abbrev=False,
        description=(
            "Start a small Django site under real servers (gunicorn, uWSGI, Celery), send it "
            "requests that each log numbered records through rotation, stop it cleanly, then "
            "read every file back: every answered request must have all its records, none "
            "duplicated or torn, each worker's records in order, sizes and file count within "
            "limits."
        ),
        epilog=(
            "scenarios:\n"
            + "".join(f"  {s.name:<18} {s.title}\n" for s in SCENARIOS.values())
            + f"default: {','.join(DEFAULT_SCENARIOS)}\n\n"
            "modes (safe_rotating only; the stdlib comparison is always file mode):\n"
            "  file     each worker's SafeRotatingFileHandler writes the rotating files\n"
            "  server   each worker's LogServerHandler sends to a safe-rotating-server started\n"
            "           here on 127.0.0.1, the only writer of the files\n"
            "  both     file mode, then server mode (default)\n\n"
            "examples:\n"
            "  safe-rotating-stress --django                     default scenarios, file and\n"
            "                                                    server mode, then stdlib\n"
            "  safe-rotating-stress --django --mode server --handler safe\n"
            "  safe-rotating-stress --django --scenarios all --handler safe\n"
            "  safe-rotating-stress --django --json out.json --plot out.png\n"
            "exit status: 0 when every run of safe_rotating passed (the stdlib comparison of\n"
            "--handler both never changes it), 1 otherwise, 2 for a usage error"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--scenarios", type=_scenarios, default=DEFAULT_SCENARIOS, help="comma-separated, or all")
    add(
        "--handler",
        choices=("both", "safe", "stdlib"),
        default="both",
        help="safe_rotating, the stdlib RotatingFileHandler, or both side by side (default)",
    )
    add(
        "--mode",
        choices=("file", "server", "both"),
        default="both",
        help="where safe_rotating's records go: see modes below (default both)",
    )
    add("--workers", type=positive_arg, default=8, help="gunicorn/uWSGI workers (default 8)")
    add("--celery-concurrency", type=positive_arg, default=4, help="prefork processes (default 4)")
    add("--requests", type=positive_arg, default=2000, help="requests (or tasks) per run (2000)")
    add("--records-per-request", type=positive_arg, default=50, help="records each logs (50)")
    add("--max-bytes", type=size_arg, default=64 * 1024, help="rotate at this size (default 64KiB)")
    add("--clients", type=positive_arg, default=16, help="concurrent client threads (default 16)")
    add("--time-limit", type=float, default=60.0, help="seconds of load per run at most (60)")
    add("--json", metavar="PATH", help="write every run's figures to PATH")
    add("--plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    add("--dir", help="directory for the runs (default: a temporary one, removed after)")
    add("--keep", action="store_true", help="keep the temporary directory for inspection")
    add("--version", action="version", version=f"safe-rotating-stress {__version__}")
    return parser


RUN_TITLES = {
    ("safe", "file"): "safe_rotating, file mode",
    ("safe", "server"): "safe_rotating, server mode",
    ("stdlib", "file"): "stdlib RotatingFileHandler",
}


def plan(handler: str, mode: str) -> list[tuple[str, str]]:
    """``(handler, mode)`` of each round of runs, in order: safe_rotating in the modes asked
    for, then the stdlib comparison, which writes its files itself (file mode)."""
    runs: list[tuple[str, str]] = []
    if handler in ("safe", "both"):
        runs += [("safe", m) for m in (("file", "server") if mode == "both" else (mode,))]
    if handler in ("stdlib", "both"):
        runs.append(("stdlib", "file"))
    return runs


def run_directory(base: str, scenario: str, handler: str, mode: str) -> str:
    """Where one run writes: ``BASE/SCENARIO-MODE``, or ``BASE/SCENARIO-stdlib``."""
    return os.path.join(base, f"{scenario}-{'stdlib' if handler == 'stdlib' else mode}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.records_per_request > 9999:
        parser.error("--records-per-request must be at most 9999")
    if args.handler == "stdlib" and args.mode == "server":
        parser.error("--mode server runs safe_rotating's own handler only; the stdlib "
                     "comparison (--handler stdlib) is file mode")  # fmt: skip
    runs = plan(args.handler, args.mode)
    for handler, mode in runs:
        try:
            check_mode(mode, handler)
        except SystemExit as exc:  # a refusal is a usage error: argparse's status 2, not 1
            parser.error(str(exc.code).removeprefix("error: "))
    if args.dir is not None:
        taken = [
            d for d in (run_directory(args.dir, n, h, m) for h, m in runs for n in args.scenarios)
            if os.path.exists(d)
        ]  # fmt: skip
        if taken:
            parser.error(f"{taken[0]!r} exists; use an empty --dir")
    own_dir = args.dir is None
    base = tempfile.mkdtemp(prefix="safe-rotating-django-") if own_dir else args.dir
    os.makedirs(base, exist_ok=True)
    config = DjangoStressConfig(
        directory=base,
        scenarios=args.scenarios,
        workers=args.workers,
        celery_concurrency=args.celery_concurrency,
        requests=args.requests,
        records_per_request=args.records_per_request,
        max_bytes=args.max_bytes,
        clients=args.clients,
        time_limit=args.time_limit,
    )
    print(
        f"Django under real servers: {len(config.scenarios)} scenarios x "
        f"{', '.join(RUN_TITLES[run] for run in runs)}; {config.requests} requests x "
        f"{config.records_per_request} records, {config.clients} clients, "
        f"maxBytes={config.max_bytes}, into {base}",
        flush=True,
    )
    results: list[ScenarioResult] = []
    for handler, mode in runs:
        for name in config.scenarios:
            scenario = SCENARIOS[name]
            run_dir = run_directory(base, name, handler, mode)
            os.makedirs(run_dir)
            run_config = replace(config, directory=run_dir, handler=handler, mode=mode)
            note = " (comparison: not process-safe)" if handler == "stdlib" else ""
            print(f"\n== {scenario.title} — {RUN_TITLES[handler, mode]}{note}", flush=True)
            bar = ProgressBar(config.requests * config.records_per_request)
            result = run_scenario(scenario, run_config, on_progress=bar)
            results.append(result)
            print(f"   {result.label}" + (f": {result.skipped}" if result.skipped else ""))
    print()
    print(table(results))
    print()
    print(details(results, config))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "max_bytes": config.max_bytes,
                    "backup_count": config.backups(),
                    "records_per_request": config.records_per_request,
                    "runs": [r.as_dict() for r in results],
                },
                f,
                indent=2,
            )
        print(f"figures written to {args.json}")
    if args.plot:
        problem = write_plot(args.plot, results)
        print(problem or f"chart written to {args.plot}")
    if own_dir and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    elif own_dir:
        print(f"files kept in {base}")
    alone = args.handler != "both"
    judged = [r for r in results if not r.skipped and (r.handler == "safe" or alone)]
    return 0 if all(r.ok for r in judged) else 1
