"""Real processes write through rotation; every record is counted from the files.

Each run: >= 8 writers x thousands of records, maxBytes 16 KiB (hundreds of rotations), then the
verifier checks: every record exactly once, no torn line, each writer's sequence rising from the
oldest backup to the current file, contiguous numbering, file count within backupCount + 1, and
every file within maxBytes plus the documented allowance (one record per other writing process).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from safe_rotating import SafeRotatingFileHandler
from safe_rotating.stress.config import StressConfig
from safe_rotating.stress.runner import run_stress
from safe_rotating.verify import make_line, verify

pytestmark = pytest.mark.multiprocess

KIB16 = 16 * 1024


@pytest.mark.parametrize(
    ("start_method", "processes", "threads"),
    [
        ("spawn", 8, 1),  # independent workers, each builds its handler
        ("fork", 8, 1),  # gunicorn --preload: the handler exists before the fork
        ("forkserver", 8, 1),
        ("spawn", 4, 3),  # threads inside processes
        ("fork", 4, 3),
    ],
)
def test_every_record_once_and_in_order(
    tmp_path: Path, start_method: str, processes: int, threads: int
) -> None:
    config = StressConfig(
        directory=str(tmp_path),
        processes=processes,
        threads=threads,
        records=3000 if threads == 1 else 2000,
        max_bytes=KIB16,
        start_method=start_method,
    )
    result = run_stress(config)
    assert result.ok, result.report()
    assert result.verdict.files > 150, "the run must rotate hundreds of times"
    assert result.verdict.found == config.total


def test_old_backups_are_deleted_without_gaps_or_extra_files(tmp_path: Path) -> None:
    config = StressConfig(
        directory=str(tmp_path), processes=8, records=2000, max_bytes=KIB16, backup_count=5
    )
    result = run_stress(config)
    assert result.ok, result.report()
    assert result.verdict.files == 6
    # Only the oldest records are gone: each writer keeps an unbroken run up to its last record.
    assert 0 < result.verdict.found < config.total


def test_the_stdlib_handler_fails_the_same_check(tmp_path: Path) -> None:
    """Evidence that the verifier can fail: the stdlib class loses records under the same load.

    Loss is racy, so a few attempts are summed; one lost record in any of them is enough."""
    problems = 0
    for attempt in range(3):
        directory = tmp_path / str(attempt)
        directory.mkdir()
        config = StressConfig(
            directory=str(directory), processes=8, records=2000, max_bytes=KIB16, handler="stdlib"
        )
        verdict = run_stress(config).verdict
        problems += verdict.lost + verdict.duplicated + verdict.order_breaks
        if problems:
            break
    assert problems > 0


def test_two_handlers_on_one_file_in_one_process_with_threads(tmp_path: Path) -> None:
    """Each handler object has its own lock description, so they exclude each other."""
    path = tmp_path / "app.log"
    handlers = [SafeRotatingFileHandler(path, maxBytes=KIB16, backupCount=1000) for _ in range(2)]
    loggers = []
    for n, handler in enumerate(handlers):
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger(f"two-handlers-{n}")
        log.propagate = False
        log.handlers = [handler]
        log.setLevel(logging.INFO)
        loggers.append(log)
    writers, per_writer = 8, 2000

    def write(writer: int) -> None:
        log = loggers[writer % 2]
        for seq in range(per_writer):
            log.info(make_line(writer, seq))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for handler in handlers:
        handler.close()
    verdict = verify(
        str(tmp_path),
        "app.log",
        writers,
        per_writer,
        max_bytes=KIB16,
        backup_count=1000,
        size_allowance=2 * 120,
    )
    assert verdict.ok, verdict.summary()
    assert verdict.files > 50
    assert os.path.exists(tmp_path / ".app.log.lock")
