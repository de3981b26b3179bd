#!/usr/bin/env python3
"""Set up and run the project with nothing but python3 (3.10+).

    python3 dev.py demo   # many worker processes log through rotation, then the verdict
    python3 dev.py test   # lint, type-check and the full test suite

Both create ``.venv`` beside this file on first use and install the project into it with its
``dev`` extra; later runs reuse it. uWSGI, which the uWSGI tests need, is installed after the
extra and kept out of it: it compiles from source, and a machine without a C compiler must still
be able to install ``dev``. Without it those tests skip; with ``CI=true`` its failure is fatal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
UWSGI = "uwsgi>=2.0.22"


def run(*command: str | Path) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    done = subprocess.run([str(c) for c in command], cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(done.returncode)


def setup() -> None:
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    install_uwsgi()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def install_uwsgi() -> None:
    if (BIN / "uwsgi").exists():
        return
    command = [str(BIN / "python"), "-m", "pip", "install", "--quiet", UWSGI]
    print("+", " ".join(command), "(compiles uWSGI from source, about a minute)", flush=True)
    done = subprocess.run(command, cwd=ROOT, check=False)
    if done.returncode == 0:
        return
    print(
        f"note: could not install {UWSGI!r} (it compiles from source: it needs a C compiler and "
        "the Python headers, e.g. apt-get install gcc python3-dev). The uWSGI tests will skip.",
        file=sys.stderr,
        flush=True,
    )
    if in_ci():
        sys.exit(done.returncode or 1)


def demo() -> None:
    stress = BIN / "safe-rotating-stress"
    print("\n== safe_rotating: 8 processes, each building its own handler ==", flush=True)
    run(stress, "--processes", "8", "--records", "20000", "--max-bytes", "64KiB")
    print("\n== safe_rotating: handler built before fork (gunicorn --preload) ==", flush=True)
    run(stress, "--processes", "8", "--threads", "2", "--start-method", "fork")
    print("\n== the same load through logging.handlers.RotatingFileHandler ==", flush=True)
    stdlib = subprocess.run(
        [
            str(stress),
            "--processes",
            "8",
            "--records",
            "20000",
            "--max-bytes",
            "64KiB",
            "--handler",
            "stdlib",
        ],
        cwd=ROOT,
        check=False,
    )
    print(f"(stdlib run exit status {stdlib.returncode}: 1 means the checks caught a failure)")


def test() -> None:
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "mypy")
    run(BIN / "python", "-m", "pytest", "-n", "auto")


def main() -> None:
    tasks = {"demo": demo, "test": test}
    if len(sys.argv) != 2 or sys.argv[1] not in tasks:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(tasks)}}}")
    setup()
    tasks[sys.argv[1]]()


if __name__ == "__main__":
    main()
