"""Helpers shared by the tests."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import SafeRotatingFileHandler, SafeTimedRotatingFileHandler
from safe_rotating.verify import rotated_files


class _Records(logging.Handler):
    """Keeps what went to ``handleError`` (the exception active at that moment)."""

    failures: list[BaseException]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = []

    def handleError(self, record: logging.LogRecord) -> None:
        failure = sys.exc_info()[1]
        assert failure is not None
        self.failures.append(failure)


class Recording(_Records, SafeRotatingFileHandler):
    """``SafeRotatingFileHandler`` keeping what went to ``handleError``."""


class TimedRecording(_Records, SafeTimedRotatingFileHandler):
    """``SafeTimedRotatingFileHandler`` keeping what went to ``handleError``."""


def duplicate_runs(
    directory: Path, parse: Callable[[bytes], tuple[int, int] | None]
) -> dict[int, list[int]]:
    """For each writer, the lengths of its runs of records seen before, in file order from the
    oldest backup of ``app.log`` to the current file. ``parse`` gives a line's
    ``(writer, seq)``, or ``None`` for a line that is not a record. A run is a stretch of one
    writer's records that were all written earlier too: what a resend after a kill looks like."""
    numbers, current = rotated_files(str(directory), "app.log")
    names = [f"app.log.{n}" for n in reversed(numbers)] + (["app.log"] if current else [])
    seen: set[tuple[int, int]] = set()
    runs: dict[int, list[int]] = {}
    in_run: dict[int, bool] = {}
    for name in names:
        for line in (directory / name).read_bytes().splitlines():
            parsed = parse(line)
            if parsed is None:
                continue
            writer = parsed[0]
            if parsed in seen:
                if in_run.get(writer):
                    runs[writer][-1] += 1
                else:
                    runs.setdefault(writer, []).append(1)
                    in_run[writer] = True
            else:
                seen.add(parsed)
                in_run[writer] = False
    return runs


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"256k"``, ``"4m"``) mounted at ``where`` (created) while the block
    runs: a real file system that really fills up. Needs root; skips without it (and a skip
    fails under CI, see tests/ci_skips.py)."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
