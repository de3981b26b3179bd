"""Rotation cost independent of the number of backups, and crash safety of every step."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import SafeRotatingFileHandler
from safe_rotating._engine.janitor import steps as _steps
from safe_rotating.verify import PREEXISTING, make_line, ordered_files, verify

RECORD = 100


def precreate(directory: Path, count: int) -> None:
    for n in range(1, count + 1):  # .count is the oldest: the lowest sequence number
        (directory / f"app.log.{n}").write_text(make_line(PREEXISTING, count - n, RECORD) + "\n")


def test_a_rotation_with_a_thousand_backups_renames_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    precreate(tmp_path, 1000)
    handler = SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=10 * RECORD, backupCount=2000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("staging-1000")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.INFO)
    # Count the renames the logging thread makes (the janitor renumbers in its own thread).
    renames: list[str] = []
    real_rename = os.rename
    logging_thread = threading.get_ident()

    def counting_rename(source: Any, dest: Any, *args: Any, **kwargs: Any) -> None:
        if threading.get_ident() == logging_thread:
            renames.append(os.fspath(source))
        real_rename(source, dest, *args, **kwargs)

    monkeypatch.setattr(os, "rename", counting_rename)
    for seq in range(200):  # 20 rotations
        log.info(make_line(0, seq, RECORD))
    monkeypatch.undo()
    # Renumbering 1000 backups under the lock would be 1000 renames a rotation; one is enough.
    assert len(renames) == 20, renames[:5]
    handler.close()
    names = ordered_files(str(tmp_path), "app.log")
    assert names[-2:] == ["app.log.1", "app.log"]
    assert len(names) == 1000 + 20 + 1
    verdict = verify(str(tmp_path), "app.log", 1, 200, max_bytes=10 * RECORD, backup_count=2000)
    assert verdict.ok, verdict.summary()
    assert not verdict.numbering_gaps
    assert verdict.preexisting == 1000


def test_staged_files_count_towards_backup_count(tmp_path: Path) -> None:
    precreate(tmp_path, 40)
    handler = SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=10 * RECORD, backupCount=40)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("staging-count")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.INFO)
    for seq in range(100):
        log.info(make_line(0, seq, RECORD))
        assert len(ordered_files(str(tmp_path), "app.log")) <= 41
    handler.close()
    verdict = verify(
        str(tmp_path), "app.log", 1, 100, max_bytes=10 * RECORD, backup_count=40, complete=False
    )
    assert verdict.ok, verdict.summary()
    assert verdict.preexisting == 30  # the ten oldest made room for the ten new backups


def _die_at_step(
    path: str, progress: str, step: str, skip: int, backup_count: int, pause: float
) -> None:
    """Write through rotations; SIGKILL this process at the ``skip``-th ``step``. ``pause``:
    seconds to stay open after writing (the background janitor renumbers once writers pause)."""
    seen = [0]

    def hook(name: str) -> None:
        if name == step:
            seen[0] += 1
            if seen[0] > skip:
                os.kill(os.getpid(), signal.SIGKILL)

    _steps.STEP_HOOK = hook
    handler = SafeRotatingFileHandler(path, maxBytes=10 * RECORD, backupCount=backup_count)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("dies")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.INFO)
    for seq in range(400):
        log.info(make_line(1, seq, RECORD))
        if seq % 10 == 9:
            with open(progress + "-new", "w") as f:
                f.write(str(seq + 1))
            os.replace(progress + "-new", progress)
    time.sleep(pause)
    Path(progress + "-closing").touch()
    handler.close()


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    ("step", "skip", "pause"),
    [
        ("staged:rotate", 3, 0.0),  # a small set: the stdlib's shift, killed in the rotator call
        ("staged:rotate", 25, 0.0),  # past 16 backups: killed while staging
        ("staged:move", 5, 0.0),
        ("staged:move", 20, 0.0),  # in the middle of the renumbering pass of close()
        ("staged:move", 20, 5.0),  # ... of the background pass, once the writer paused
        ("staged:remove", 2, 0.0),
    ],
)
def test_a_process_killed_at_any_step_is_completed_by_the_next(
    tmp_path: Path, step: str, skip: int, pause: float
) -> None:
    (tmp_path / "side").mkdir()
    progress = str(tmp_path / "side" / "progress")
    tmp_path = tmp_path / "logs"
    tmp_path.mkdir()
    path = str(tmp_path / "app.log")
    # Enough backups to keep every record, except where removal is the step under test.
    keep = 30 if step == "staged:remove" else 60
    child = multiprocessing.get_context("spawn").Process(
        target=_die_at_step, args=(path, progress, step, skip, keep, pause)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL, "the hook must have fired"
    if pause:  # killed by the background janitor's pass, while the writer paused
        assert not Path(progress + "-closing").exists()
    written = int(Path(progress).read_text())
    # The next process: writes, rotates, and closes.
    handler = SafeRotatingFileHandler(path, maxBytes=10 * RECORD, backupCount=keep)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for seq in range(100):
        handler.emit(logging.makeLogRecord({"msg": make_line(0, seq, RECORD)}))
    handler.close()
    names = [n for n in os.listdir(tmp_path) if n.startswith("app.log.")]
    assert not [n for n in names if ".pending." in n]
    assert sorted(int(n.rsplit(".", 1)[1]) for n in names) == list(range(1, len(names) + 1))
    assert len(names) <= keep
    verdict = verify(
        str(tmp_path),
        "app.log",
        2,
        400,
        max_bytes=10 * RECORD,
        backup_count=keep,
        size_allowance=RECORD,
        written=[100, written],
    )
    if keep == 30:  # the oldest were removed on purpose: each writer keeps one unbroken run
        assert verdict.duplicated == verdict.torn == verdict.order_breaks == 0
        assert not verdict.oversized
        assert not verdict.too_many_files
        runs = _runs(tmp_path)
        assert all(seqs == list(range(seqs[0], seqs[-1] + 1)) for seqs in runs.values())
        assert runs[0][-1] == 99
        assert runs[1][-1] >= written - 1
    else:
        assert verdict.ok, verdict.summary()


def _runs(directory: Path) -> dict[int, list[int]]:
    from safe_rotating._verify_files import read_file
    from safe_rotating.verify import parse_line

    runs: dict[int, list[int]] = {}
    for name in ordered_files(str(directory), "app.log"):
        for line in read_file(str(directory / name)).splitlines():
            parsed = parse_line(line)
            assert parsed is not None
            runs.setdefault(parsed[0], []).append(parsed[1])
    return runs
