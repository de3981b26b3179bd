#!/usr/bin/env python3
"""Set up and run the project with nothing but python3 (3.10+).

    python3 dev.py demo             # a Django site under real gunicorn/uWSGI workers, file and
                                    # server mode, then the verdict
    python3 dev.py test             # lint, type-check, then the full test suite on each CPython
                                    # of 3.10-3.13 (what CI runs)
    python3 dev.py test 3.11 [...]  # the same on the versions named only (a quicker loop)

``demo`` creates ``.venv`` beside this file with the ``python3`` that runs it; later runs reuse
it. ``test`` runs ruff and mypy in ``.venv`` too, and the suite there for ``python3``'s own version
and in one ``.venv-3.X`` per other version, with the interpreter it finds under pyenv
(``~/.pyenv/versions/3.X.*``) or as ``python3.X`` on ``PATH``; it stops before installing
anything, naming the versions it cannot find. ``test`` installs the project with every extra and
the ``dev`` dependency group; ``demo`` installs only what it runs: the ``stress`` extra. uWSGI is
installed by both, after the rest and kept out of the extras: it compiles from source, and a
machine without a C compiler must still be able to install them. Without it the uWSGI tests and
the demo's uWSGI scenario skip; with ``CI=true`` its failure is fatal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
UWSGI = "uwsgi>=2.0.22"
# The versions CI tests and the classifiers in pyproject.toml claim.
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
# Everything the test suite exercises; the tools come from the `dev` dependency group (PEP 735),
# which needs pip >= 25.1: setup() upgrades pip first.
TEST_INSTALL = ("-e", ".[fast,django,celery,stress,zstd]", "--group", "dev")


def run(*command: str | Path) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    done = subprocess.run([str(c) for c in command], cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(done.returncode)


def bin_dir(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def setup(venv: Path, python: str | Path, *requirements: str) -> Path:
    """Create ``venv`` with ``python`` unless it exists, install ``requirements`` and uWSGI into
    it; return its ``bin`` directory."""
    bindir = bin_dir(venv)
    if not (bindir / "python").exists():
        print(f"creating {venv} with {python}", flush=True)
        run(python, "-m", "venv", venv)
    run(bindir / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(bindir / "python", "-m", "pip", "install", "--quiet", *requirements)
    install_uwsgi(bindir)
    return bindir


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def install_uwsgi(bindir: Path) -> None:
    if (bindir / "uwsgi").exists():
        return
    command = [str(bindir / "python"), "-m", "pip", "install", "--quiet", UWSGI]
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


def find_python(version: str) -> Path | None:
    """The newest pyenv build of ``version`` (e.g. "3.12"), else ``python3.12`` on ``PATH``."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = [
        path / "bin" / f"python{version}"
        for path in pyenv.glob(f"{version}.*")
        if re.fullmatch(rf"{re.escape(version)}\.\d+", path.name)
    ]
    builds = [path for path in builds if os.access(path, os.X_OK)]
    if builds:
        return max(builds, key=lambda path: int(path.parent.parent.name.split(".")[-1]))
    on_path = shutil.which(f"python{version}")
    if on_path is None:
        return None
    # A pyenv shim exists for every installed version but fails for one not selected: ask it.
    probe = subprocess.run([on_path, "-c", "pass"], capture_output=True, check=False)
    return Path(on_path) if probe.returncode == 0 else None


def demo() -> None:
    """``safe-rotating-stress --django``: gunicorn (with and without ``--preload``) and uWSGI
    workers running a Django site log through rotation, each writing the files itself (file
    mode), then sending to a ``safe-rotating-server`` that writes them (server mode); then the
    same through the stdlib class. Its exit status is the demo's: 1 only if safe_rotating failed
    a check."""
    bindir = setup(VENV, sys.executable, "-e", ".[stress]")
    print(
        "\n== A Django site under real gunicorn and uWSGI workers, in file and server mode: "
        "every record checked ==",
        flush=True,
    )
    run(bindir / "safe-rotating-stress", "--django")


def test(*versions: str) -> None:
    """Ruff and mypy (with ``python3``: they do not depend on the interpreter), then the whole
    suite on each of ``versions`` (default: every supported one), each in its own venv."""
    wanted = versions or SUPPORTED
    unknown = [version for version in wanted if version not in SUPPORTED]
    if unknown:
        sys.exit(f"test: {', '.join(unknown)}: not a supported version ({', '.join(SUPPORTED)})")
    main_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = {
        version: Path(sys.executable) if version == main_version else find_python(version)
        for version in wanted
    }
    missing = [version for version, python in found.items() if python is None]
    if missing:
        sys.exit(
            f"test: CPython {', '.join(missing)} not found (looked for "
            "~/.pyenv/versions/3.X.*/bin/python3.X, then python3.X on PATH): install it, e.g. "
            f"pyenv install {' '.join(missing)}"
        )
    started = time.monotonic()
    print(f"\n== lint and type check (CPython {main_version}) ==", flush=True)
    bindir = setup(VENV, sys.executable, *TEST_INSTALL)
    run(bindir / "ruff", "check", ".")
    run(bindir / "ruff", "format", "--check", ".")
    run(bindir / "mypy")
    timings = [("lint", time.monotonic() - started)]
    for version, python in found.items():
        assert python is not None
        started = time.monotonic()
        print(f"\n== CPython {version} ({python}): the test suite ==", flush=True)
        venv = VENV if version == main_version else ROOT / f".venv-{version}"
        bindir = setup(venv, python, *TEST_INSTALL)
        run(bindir / "python", "-m", "pytest", "-n", "auto")
        timings.append((version, time.monotonic() - started))
    print("\ntest passed: " + ", ".join(f"{v} in {s / 60:.1f} min" for v, s in timings))


def main() -> None:
    usage = "usage: python3 dev.py demo | python3 dev.py test [3.X ...]"
    task, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if task == "demo" and not args:
        demo()
    elif task == "test":
        test(*args)
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main()
