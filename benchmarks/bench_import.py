"""What ``import`` costs: safe_rotating against concurrent-log-handler and ``logging.handlers``.

Every gunicorn worker, Celery child and ``manage.py`` call pays its logging handler's import.
Each sample is a fresh interpreter that times one ``import`` statement with
``time.perf_counter`` (the interpreter's own start-up is not counted); the modules take turns,
so noise hits them alike. Bytecode is compiled first and written (``PYTHONDONTWRITEBYTECODE``
is unset for the runs), as it is in an installed package.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_import.py
    .venv/bin/python benchmarks/bench_import.py --repeat 21 --also safe_rotating.client
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile

import safe_rotating

PEERS = ["safe_rotating", "concurrent_log_handler", "logging.handlers"]
_PROBE = (
    "import sys, time\n"
    "start = time.perf_counter()\n"
    "import {module}\n"
    "took = time.perf_counter() - start\n"
    "print(took * 1000, len(sys.modules))\n"
)


def sample(module: str, env: dict[str, str]) -> tuple[float, int]:
    """Milliseconds one fresh interpreter takes to import ``module``, and the modules loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        env=env,
        cwd=tempfile.gettempdir(),  # not a checkout: the package comes from PYTHONPATH below
        check=True,
        capture_output=True,
        text=True,
    )
    millis, modules = done.stdout.split()
    return float(millis), int(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="samples per module (default 15)")
    parser.add_argument("--also", action="append", default=[], metavar="MODULE",
                        help="another module to time (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    compileall.compile_dir(os.path.dirname(safe_rotating.__file__), quiet=1)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    # The children import the safe_rotating this script imported (a checkout given through
    # PYTHONPATH times that checkout).
    root = os.path.dirname(os.path.dirname(os.path.abspath(safe_rotating.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    print(f"safe_rotating from {root}", file=sys.stderr)
    modules = PEERS + args.also
    for module in modules:
        sample(module, env)  # warm the page cache and write any missing bytecode
    times: dict[str, list[float]] = {module: [] for module in modules}
    loaded: dict[str, int] = {}
    for run in range(args.repeat):
        for module in modules:
            millis, count = sample(module, env)
            times[module].append(millis)
            loaded[module] = count
        print(f"[{run + 1}/{args.repeat}]", file=sys.stderr)
    base = statistics.median(times["concurrent_log_handler"])
    print(f"import cost, median of {args.repeat} fresh interpreters each (Python "
          f"{sys.version.split()[0]})")  # fmt: skip
    print("| module | median | min | max | modules loaded | x concurrent-log-handler |")
    print("|---|---:|---:|---:|---:|---:|")
    for module in modules:
        values = times[module]
        median = statistics.median(values)
        print(
            f"| `{module}` | {median:.1f} ms | {min(values):.1f} ms | {max(values):.1f} ms | "
            f"{loaded[module]} | {median / base:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
