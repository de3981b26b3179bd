#!/usr/bin/env python3
"""Set up and run the project with nothing but python3 (3.10+).

    python3 dev.py demo   # a Django site under real gunicorn/uWSGI workers, file and server
                          # mode, then the verdict
    python3 dev.py test   # lint, type-check and the full test suite

Both create ``.venv`` beside this file on first use; later runs reuse it. ``test`` installs the
project with its ``dev`` extra; ``demo`` installs only what it runs: the ``django`` extra and
gunicorn. uWSGI is installed by both, after the rest and kept out of the extras: it compiles from
source, and a machine without a C compiler must still be able to install them. Without it the
uWSGI tests and the demo's uWSGI scenario skip; with ``CI=true`` its failure is fatal.
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
GUNICORN = "gunicorn>=21"


def run(*command: str | Path) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    done = subprocess.run([str(c) for c in command], cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(done.returncode)


def setup(*requirements: str) -> None:
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", *requirements)
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
    """``safe-rotating-stress --django``: gunicorn (with and without ``--preload``) and uWSGI
    workers running a Django site log through rotation, each writing the files itself (file
    mode), then sending to a ``safe-rotating-server`` that writes them (server mode); then the
    same through the stdlib class. Its exit status is the demo's: 1 only if safe_rotating failed
    a check."""
    setup("-e", ".[django]", GUNICORN)
    print(
        "\n== A Django site under real gunicorn and uWSGI workers, in file and server mode: "
        "every record checked ==",
        flush=True,
    )
    run(BIN / "safe-rotating-stress", "--django")


def test() -> None:
    setup("-e", ".[dev]")
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "mypy")
    run(BIN / "python", "-m", "pytest", "-n", "auto")


def main() -> None:
    tasks = {"demo": demo, "test": test}
    if len(sys.argv) != 2 or sys.argv[1] not in tasks:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(tasks)}}}")
    tasks[sys.argv[1]]()


if __name__ == "__main__":
    main()
