"""A hostile member of the log directory's group, in docs' "Several users" setting.

The directory is ``root:4242`` mode 2775, the handlers run as root with ``chmod=0o660``, and the
neighbour is a real process at uid 65534 in group 4242 (see ``tests/neighbour.py``): it may
create, rename and delete any name in the directory (no sticky bit) and read what the group may
read. Whatever it plants — a symlink, a FIFO, a hard link — root must neither write through it
nor read through it, and the application must keep logging and be told.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import (
    RecordsLost,
    SafeRotatingFileHandler,
    SafeRotatingWarning,
    UnsafeFileError,
)
from safe_rotating._engine.janitor import runner as _runner
from safe_rotating._engine.janitor import steps as _steps
from safe_rotating._engine.lock import pid_alive
from safe_rotating.verify import make_line, parse_line
from tests.neighbour import SHARED_GID, SharedDir, secret_file
from tests.support import Recording, TimedRecording

SECRET = "TOPSECRET root only"


@dataclass(frozen=True)
class Snapshot:
    """Everything about a file that a write, a chmod or a chown through a link would change."""

    data: bytes
    mode: int
    uid: int
    gid: int

    @classmethod
    def of(cls, path: str) -> Snapshot:
        st = os.lstat(path)
        with open(path, "rb") as source:
            return cls(source.read(), st.st_mode, st.st_uid, st.st_gid)


def outside(shared_dir: SharedDir) -> str:
    """A root-owned directory beside the shared one (the neighbour may look, not write)."""
    return os.path.dirname(shared_dir.path)


def victim(shared_dir: SharedDir, size: int = 105) -> str:
    """A root-owned 0644 file outside the shared directory that the neighbour may not write."""
    path = os.path.join(outside(shared_dir), "victim")
    with open(path, "wb") as out:
        out.write(b"v" * (size - 1) + b"\n")
    os.chmod(path, 0o644)
    return path


def records(handler: logging.Handler, first: int, count: int) -> None:
    for seq in range(first, first + count):
        handler.handle(logging.makeLogRecord({"msg": make_line(0, seq, 100)}))


def logged(directory: str) -> set[int]:
    """The sequence numbers of every whole record in the regular files of ``directory``."""
    found: set[int] = set()
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if not name.startswith("app.log") or not stat.S_ISREG(os.lstat(path).st_mode):
            continue
        opener: Any = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as source:
            for line in source.read().splitlines():
                parsed = parse_line(line)
                if parsed is not None:
                    found.add(parsed[1])
    return found


def settle(janitor: Any) -> None:
    """Let a background pass at work finish (``run`` is ``None`` while it holds the janitor
    lock), then run one here, to completion."""
    deadline = time.monotonic() + 10
    while janitor.run() is None:
        assert time.monotonic() < deadline, "the janitor never became free"
        time.sleep(0.01)


def handler(shared_dir: SharedDir, **kwargs: Any) -> Recording:
    """``SafeRotatingFileHandler(app.log, chmod=0o660, ...)`` as "Several users" says,
    keeping what goes to ``handleError``."""
    kwargs.setdefault("maxBytes", 1000)
    kwargs.setdefault("backupCount", 5)
    made = Recording(shared_dir.join("app.log"), chmod=0o660, **kwargs)
    made.setFormatter(logging.Formatter("%(message)s"))
    return made


# -- case 11: the rotation lock file -----------------------------------------------------------
def _plant_lock(kind: str, target: str, lock: str, shared_dir: SharedDir) -> None:
    """What a neighbour leaves at a lock path: a symlink, a FIFO or a hard link to a root file.
    The hard link is made by root: the kernel's ``fs.protected_hardlinks`` (on here) stops
    uid 65534 from linking a file it does not own, so root plays the neighbour of a system
    where that protection is off."""
    if kind == "symlink":
        shared_dir.run(os.symlink, target, lock)
    elif kind == "fifo":
        shared_dir.run(os.mkfifo, lock)
    else:
        os.link(target, lock)


def _lock_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, SafeRotatingWarning) and ".app.log.lock" in str(w.message)
    ]


@pytest.mark.parametrize(
    ("kind", "found"),
    [
        ("symlink", "a symbolic link to '{target}' (owner nobody (uid 65534)"),
        ("fifo", "a named pipe (owner nobody (uid 65534)"),
        ("hard link", "a regular file with 2 hard links (owner root (uid 0)"),
    ],
)
def test_a_lock_file_planted_before_start_is_replaced_and_its_target_untouched(
    shared_dir: SharedDir, kind: str, found: str
) -> None:
    """Before: the symlink was followed and root wrote its 4096-byte table over the target;
    then (a first fix) every process started while it was there failed in its constructor, so
    one planted link stopped the application from starting. Now the entry is removed — only its
    name: the target, the hard-linked file keep their contents — a new lock file is created in
    its place and the removal is reported once, naming what was there and whose it was."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    lock = shared_dir.join(".app.log.lock")
    _plant_lock(kind, target, lock, shared_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = handler(shared_dir, maxBytes=1000, backupCount=5)
        records(started, 0, 30)  # three rotations, under the new lock
        started.close()
    assert Snapshot.of(target) == before
    here = os.lstat(lock)
    assert stat.S_ISREG(here.st_mode)
    assert here.st_nlink == 1
    assert os.lstat(target).st_nlink == 1
    (report,) = _lock_warnings(caught)
    assert found.format(target=target) in report, report
    assert "removed it" in report
    assert not started.failures
    assert logged(shared_dir.path) == set(range(30))
    assert os.path.exists(shared_dir.join("app.log.2")), "rotation went on"


def test_a_directory_planted_as_the_lock_file_is_refused_and_reported_once(
    shared_dir: SharedDir,
) -> None:
    """A directory cannot be removed in passing: the constructor says what to do, and with
    ``delay=True`` emit never raises — one report, then the records lost are counted."""
    lock = shared_dir.join(".app.log.lock")
    shared_dir.run(os.mkdir, lock)
    with pytest.raises(IsADirectoryError, match=r"\.app\.log\.lock.*is a directory"):
        SafeRotatingFileHandler(shared_dir.join("app.log"), maxBytes=1000, chmod=0o660)
    late = handler(shared_dir, delay=True)
    records(late, 0, 20)
    assert len(late.failures) == 1, late.failures
    assert ".app.log.lock" in str(late.failures[0])
    os.rmdir(lock)  # what the message says to do: logging resumes, the loss is counted
    records(late, 20, 1)
    late.close()
    (lost,) = [f for f in late.failures if isinstance(f, RecordsLost)]
    assert lost.count == 20
    assert logged(shared_dir.path) == {20}


def _replace_with_link(target: str, path: str) -> None:
    os.remove(path)
    os.symlink(target, path)


def _lock_inode(made: SafeRotatingFileHandler) -> int:
    return os.fstat(made._lock._fd).st_ino


def test_a_lock_file_replaced_by_a_symlink_under_running_handlers(
    shared_dir: SharedDir,
) -> None:
    """Before: the next rotation found the lock "replaced", moved to the file at the path and
    overwrote the link's target with a fresh table. Now the first process to look removes the
    link and makes a new lock file; every running process moves to it (at its next lock, or its
    audit within a second), and so does one started later: one lock again, rotation goes on,
    nothing is lost, the target is untouched, one report. Only a refused entry is ever removed,
    so the processes do not take turns removing each other's new file: it stays."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    lock = shared_dir.join(".app.log.lock")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = handler(shared_dir, maxBytes=1000, backupCount=50)
        quiet = handler(shared_dir, maxBytes=1000, backupCount=50)  # writes, never rotates
        records(ours, 0, 30)
        records(quiet, 1000, 1)
        shared_dir.run(_replace_with_link, target, lock)
        records(ours, 30, 70)  # seven rotations
        made = os.lstat(lock)
        assert stat.S_ISREG(made.st_mode)
        later = handler(shared_dir, maxBytes=1000, backupCount=50)
        time.sleep(1.05)  # AUDIT_EVERY: the quiet one looks at the path again
        records(quiet, 1001, 1)
        records(later, 100, 20)
        records(ours, 120, 20)
        inodes = {_lock_inode(h) for h in (ours, quiet, later)}
        for each in (ours, quiet, later):
            each.close()
    assert inodes == {made.st_ino}, "every process uses the lock file at the path"
    assert os.lstat(lock).st_ino == made.st_ino, "nobody removed the new lock file"
    assert Snapshot.of(target) == before
    assert logged(shared_dir.path) == set(range(140)) | {1000, 1001}
    assert os.path.exists(shared_dir.join("app.log.9")), "rotation went on"
    (report,) = _lock_warnings(caught)
    assert "a symbolic link" in report
    assert "nobody" in report
    assert [h.failures for h in (ours, quiet, later)] == [[], [], []]


def _write_keeper(lock: str, pid: int) -> None:
    fd = os.open(lock, os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack("<QQQ", pid, 1000, 99), 32)  # keeper pid, maxBytes, count
        os.pwrite(fd, struct.pack("<Q", pid), 8)  # and the holder
    finally:
        os.close(fd)


@pytest.mark.parametrize("pid", [2**31, 2**63 - 1, 2**64 - 1])
def test_any_pid_in_the_lock_table_is_survived(shared_dir: SharedDir, pid: int) -> None:
    """Before: ``os.kill`` of a pid beyond C's int raised ``OverflowError`` out of the
    constructor of every handler on that file."""
    assert pid_alive(pid) is False
    SafeRotatingFileHandler(shared_dir.join("app.log"), maxBytes=1000, chmod=0o660).close()
    shared_dir.run(_write_keeper, shared_dir.join(".app.log.lock"), pid)
    after = handler(shared_dir)
    records(after, 0, 30)
    after.close()
    assert not after.failures
    assert logged(shared_dir.path) == set(range(30))


def _forge_backup_set(lock: str, counters: tuple[int, int, int, int, int]) -> None:
    fd = os.open(lock, os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack("<6Q", 4, *counters), 80)  # STAGED, then a, b, c, lo, hi
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("counters", "oldest"),
    [
        ((0, 1, 0, 1, 2**63), "app.log.pending.1"),
        ((0, 1, 0, 1, 2**64 - 1), "app.log.pending.1"),
        ((0, 1, 2**63, 1, 1), f"app.log.{2**63}"),
        ((0, 1, 0, 1, 2**20), "app.log.pending.1"),
    ],
    ids=["pending", "overflow", "upper", "a million"],
)
def test_forged_backup_counters_in_the_lock_table_cost_no_more_than_a_rescan(
    shared_dir: SharedDir, counters: tuple[int, int, int, int, int], oldest: str
) -> None:
    """The table says the set holds 2**63 backups, and the neighbour plants the oldest name
    that implies. Before: the next rotation removed them one by one, under the lock, forever."""
    running = handler(shared_dir, maxBytes=1000, backupCount=5)
    records(running, 0, 5)  # no rotation yet
    shared_dir.run(_forge_backup_set, shared_dir.join(".app.log.lock"), counters)
    shared_dir.run(Path.touch, Path(shared_dir.join(oldest)))
    done: list[float] = []

    def more() -> None:
        started = time.monotonic()
        records(running, 5, 60)
        done.append(time.monotonic() - started)

    writer = threading.Thread(target=more, daemon=True)
    writer.start()
    writer.join(20)
    assert done, "the rotations never finished"
    assert done[0] < 5
    running.close()
    assert not running.failures
    assert set(range(15, 65)) <= logged(shared_dir.path)
    backups = [n for n in os.listdir(shared_dir.path) if n.startswith("app.log.")]
    assert len(backups) <= 5, backups


def _forge_period_count(lock: str, stamp: str, count: int) -> None:
    fd = os.open(lock, os.O_WRONLY)
    try:  # KNOWN, then the period's key and the number of its files so far
        os.pwrite(fd, struct.pack("<6Q", 1, zlib.crc32(stamp.encode()) + 1, count, 0, 0, 0), 80)
    finally:
        os.close(fd)


def test_a_forged_count_of_a_periods_files_does_not_stop_time_rotation(
    shared_dir: SharedDir,
) -> None:
    """The table says this second's period already has 2**64 - 1 files. Before: the rotation
    named the file after that count and failed to record the next one, at every boundary."""
    path = shared_dir.join("app.log")
    running = TimedRecording(path, when="S", backupCount=0, chmod=0o660)
    running.setFormatter(logging.Formatter("%(message)s"))
    rotated: list[str] = []
    for attempt in range(3):
        time.sleep(1.05 - time.time() % 1)  # just after a whole second: 0.9 s ahead
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(int(time.time())))
        records(running, attempt * 10, 5)
        shared_dir.run(_forge_period_count, shared_dir.join(".app.log.lock"), stamp, 2**64 - 1)
        time.sleep(1.05 - time.time() % 1)
        records(running, attempt * 10 + 5, 5)  # the first one rotates the period of ``stamp``
        rotated += [n for n in os.listdir(shared_dir.path) if n.startswith(f"app.log.{stamp}")]
    running.close()
    assert not running.failures, running.failures
    assert len(rotated) == 3, rotated
    assert logged(shared_dir.path) == {a * 10 + n for a in range(3) for n in range(10)}


# -- case 12 and the backup set: nothing is read through a link ----------------------------------
def _read_everything(directory: str) -> str:
    """What the neighbour can read in ``directory``, compressed files decompressed."""
    seen = []
    for name in os.listdir(directory):
        try:
            with open(os.path.join(directory, name), "rb") as source:
                data = source.read()
        except OSError:
            continue
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):  # being written: what is there so far
                data = gzip.GzipFile(fileobj=__import__("io").BytesIO(data)).read1(1 << 20)
        seen.append(data.decode("utf-8", "replace"))
    return "\n".join(seen)


def _swap_for_link(target: str, path: str) -> None:
    os.rename(path, path + ".saved")
    os.symlink(target, path)
    os.utime(path, (0, 0), follow_symlinks=False)  # looks long settled: compressed at once


@pytest.fixture
def janitor_steps() -> Iterator[list[str]]:
    steps: list[str] = []
    yield steps
    _steps.STEP_HOOK = None


@pytest.mark.parametrize(
    "owner", [None, (0, SHARED_GID)], ids=["setgid directory", "owner=(root, group)"]
)
@pytest.mark.parametrize("swapped", ["app.log.1", "pending"])
def test_compression_never_reads_a_backup_through_a_link(
    shared_dir: SharedDir, janitor_steps: list[str], owner: Any, swapped: str
) -> None:
    """Before: the janitor opened ``app.log.1 -> secret`` (root 0640), and wrote
    ``.app.log.compressing.<ino>.gz`` with the secret's mode and the directory's group, which
    the neighbour read. ``pending``: the newest backup of a set too large to renumber inline,
    still under its staging name."""
    secret = secret_file(outside(shared_dir))
    os.utime(secret, (0, 0))
    before = Snapshot.of(secret)
    count = 20 if swapped == "pending" else 3
    running = handler(shared_dir, maxBytes=1000, backupCount=50, compress="gzip", owner=owner)
    janitor = running._file._janitor
    paused = _runner._mutex(janitor._janitor_path)
    paused.acquire()  # no background pass renumbers the set before the neighbour swaps
    records(running, 0, count * 10 + 5)
    names = sorted(n for n in os.listdir(shared_dir.path) if n.startswith("app.log."))
    if swapped == "pending":
        swapped = max((n for n in names if ".pending." in n), key=lambda n: int(n.split(".")[-1]))
    for name in names:  # every backup long settled: the janitor compresses them all now
        os.utime(shared_dir.join(name), (0, 0))
    read: list[str] = []

    def neighbour_looks(step: str) -> None:
        janitor_steps.append(step)
        if step.startswith("compress:"):
            read.append(str(shared_dir.run(_read_everything, shared_dir.path)))

    _steps.STEP_HOOK = neighbour_looks
    shared_dir.run(_swap_for_link, secret, shared_dir.join(swapped))
    paused.release()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settle(janitor)
        janitor.run()
        running.close()
    _steps.STEP_HOOK = None
    assert "compress:written" in janitor_steps, "the genuine backups were compressed"
    assert read
    assert not [r for r in read if SECRET in r]
    assert SECRET not in str(shared_dir.run(_read_everything, shared_dir.path))
    for name in os.listdir(shared_dir.path):  # nor anywhere root could read it
        path = shared_dir.join(name)
        if stat.S_ISREG(os.lstat(path).st_mode):
            opener: Any = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as source:
                assert SECRET.encode() not in source.read(), name
    assert not [n for n in os.listdir(shared_dir.path) if ".compressing." in n]
    assert Snapshot.of(secret) == before
    refusals = [str(w.message) for w in caught if issubclass(w.category, SafeRotatingWarning)]
    assert [r for r in refusals if "could not compress" in r and "symbolic link" in r], refusals
    assert set(range(count * 10 + 5)) <= logged(shared_dir.path) | _saved(shared_dir)


def _saved(shared_dir: SharedDir) -> set[int]:
    """Records in the backup the neighbour moved aside (``*.saved``)."""
    found: set[int] = set()
    for name in os.listdir(shared_dir.path):
        if name.endswith(".saved"):
            with open(shared_dir.join(name), "rb") as source:
                found |= {p[1] for line in source if (p := parse_line(line)) is not None}
    return found


def test_compression_never_reads_a_backup_hard_linked_to_a_secret(shared_dir: SharedDir) -> None:
    """The neighbour removes ``app.log.1`` and hard-links a root-only ``0640`` secret in its
    place. Root makes that link here: the kernel's ``fs.protected_hardlinks`` (on here) stops
    uid 65534 from linking a file it may not read, so this plays a system where that protection
    is off. Before: the janitor compressed the secret into ``app.log.1.gz`` with the handler's
    ``chmod=0o660`` and group, which the neighbour read. Now a file with more than one name is
    never read: its compression is refused and reported."""
    secret = secret_file(outside(shared_dir))
    os.utime(secret, (0, 0))  # looks long settled: compressed at once
    before = Snapshot.of(secret)
    running = handler(shared_dir, maxBytes=1000, backupCount=5, compress="gzip")
    janitor = running._file._janitor
    paused = _runner._mutex(janitor._janitor_path)
    paused.acquire()  # no background pass compresses before the swap
    records(running, 0, 25)
    backup = shared_dir.join("app.log.1")
    shared_dir.run(os.rename, backup, backup + ".saved")
    os.link(secret, backup)
    for name in ("app.log.2", "app.log.1.saved"):
        os.utime(shared_dir.join(name), (0, 0))
    paused.release()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settle(janitor)
        running.close()
    assert SECRET not in str(shared_dir.run(_read_everything, shared_dir.path))
    assert Snapshot.of(secret) == before
    assert os.path.exists(shared_dir.join("app.log.2.gz")), "the genuine backup was compressed"
    reports = [str(w.message) for w in caught if issubclass(w.category, SafeRotatingWarning)]
    assert [r for r in reports if "could not compress" in r and "2 hard links" in r], reports
    assert set(range(25)) <= logged(shared_dir.path) | _saved(shared_dir)


def test_compression_temporaries_are_private_until_complete(
    shared_dir: SharedDir, janitor_steps: list[str]
) -> None:
    """A temporary is created 0600 under a name nobody can guess, and gets the handler's mode
    (here 0660, group 4242) only once complete."""
    running = handler(shared_dir, maxBytes=1000, backupCount=5, compress="gzip")
    records(running, 0, 25)
    for name in os.listdir(shared_dir.path):
        os.utime(shared_dir.join(name), (0, 0))
    temporaries: list[tuple[str, int]] = []

    def look(step: str) -> None:
        if step == "compress:written":
            for name in os.listdir(shared_dir.path):
                if ".compressing." in name:
                    temporaries.append((name, os.lstat(shared_dir.join(name)).st_mode))

    _steps.STEP_HOOK = look
    janitor = running._file._janitor
    settle(janitor)
    janitor.run()
    running.close()
    assert temporaries
    for name, mode in temporaries:
        assert stat.S_IMODE(mode) == 0o600, (name, oct(mode))
        stem = name.split(".compressing.", 1)[1].removesuffix(".gz")
        assert len(stem) >= 16, f"{name}: a predictable name (an inode number) can be planted"
    for name in ("app.log.1.gz", "app.log.2.gz"):
        st = os.stat(shared_dir.join(name))
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, SHARED_GID)


def test_leftover_temporaries_are_removed_without_following_links(
    shared_dir: SharedDir,
) -> None:
    """What a killed janitor left (old ``<inode>`` names and new random ones) is removed; a
    planted link of that name is removed as a name, its target untouched; a planted directory
    does not stop the janitor."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    stale = [".app.log.compressing.1234.gz", ".app.log.compressing.0123456789abcdef.gz"]
    for name in stale:
        Path(shared_dir.join(name)).write_bytes(b"half")
    shared_dir.run(os.symlink, target, shared_dir.join(".app.log.compressing.99.gz"))
    shared_dir.run(os.mkdir, shared_dir.join(".app.log.compressing.98.gz"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        running = handler(shared_dir, maxBytes=1000, backupCount=5, compress="gzip")
        records(running, 0, 25)
        for name in os.listdir(shared_dir.path):
            os.utime(shared_dir.join(name), (0, 0), follow_symlinks=False)
        janitor = running._file._janitor
        settle(janitor)
        janitor._full_scan_at = -_runner._FULL_SCAN_EVERY  # and once more, from scratch
        janitor.run()
        running.close()
    assert not [str(w.message) for w in caught], "the janitor never stopped"
    left = sorted(n for n in os.listdir(shared_dir.path) if ".compressing." in n)
    assert left == [".app.log.compressing.98.gz"], left
    assert Snapshot.of(target) == before
    assert os.path.exists(shared_dir.join("app.log.1.gz")), "the janitor was not stopped"
    assert not running.failures


# -- the janitor lock -----------------------------------------------------------------------------
def _posix_locks_on(path: str) -> bool:
    """Does any process hold a POSIX record lock on ``path`` (from ``/proc/locks``)?"""
    ino = os.stat(path).st_ino
    with open("/proc/locks") as table:
        return any("POSIX" in line and line.split()[5].endswith(f":{ino}") for line in table)


@pytest.mark.parametrize(("kind", "found"), [("symlink", "symbolic link"), ("hard link", "2 hard")])
def test_a_janitor_lock_planted_as_a_link_is_refused(
    shared_dir: SharedDir, janitor_steps: list[str], kind: str, found: str
) -> None:
    """Before: the janitor followed ``.app.log.janitor -> target`` and took its ``lockf`` on
    the target (a root file another program may lock: dpkg, xtables); a hard link to it (made
    by root here, as on a system without ``fs.protected_hardlinks``) did the same."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    _plant_lock(kind, target, shared_dir.join(".app.log.janitor"), shared_dir)
    locked: list[bool] = []

    def look(step: str) -> None:
        janitor_steps.append(step)
        locked.append(_posix_locks_on(target))

    _steps.STEP_HOOK = look
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        running = handler(shared_dir, maxBytes=1000, backupCount=5, compress="gzip")
        records(running, 0, 25)
        for name in os.listdir(shared_dir.path):
            os.utime(shared_dir.join(name), (0, 0), follow_symlinks=False)
        assert running._file._janitor.run() is None, "no pass without the janitor lock"
        running.close()
    assert not any(locked), "the link's target was locked"
    assert Snapshot.of(target) == before
    reports = [str(w.message) for w in caught if issubclass(w.category, SafeRotatingWarning)]
    assert [r for r in reports if ".app.log.janitor" in r and found in r], reports
    assert logged(shared_dir.path) == set(range(25)), "the writers never needed the janitor"
    assert not running.failures


def test_a_fifo_planted_as_the_janitor_lock_hangs_nothing(shared_dir: SharedDir) -> None:
    shared_dir.run(os.mkfifo, shared_dir.join(".app.log.janitor"))
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        running = handler(shared_dir, maxBytes=1000, backupCount=5, compress="gzip")
        records(running, 0, 25)
        assert running._file._janitor.run() is None, "no pass without the janitor lock"
        running.close()
    assert time.monotonic() - started < 5
    reports = [str(w.message) for w in caught if issubclass(w.category, SafeRotatingWarning)]
    assert [r for r in reports if "janitor lock file" in r and "named pipe" in r], reports
    assert logged(shared_dir.path) == set(range(25))


# -- the log file itself ------------------------------------------------------------------------
def plant_at_first_rotation(running: Recording, plant: Callable[[str], object]) -> list[str]:
    """Make ``running``'s first rotation call ``plant(path)`` right after it renamed the log
    away and before it opens a new one; the list it returns names the backup once it did."""
    planted: list[str] = []

    def rotate_then_plant(source: str, dest: str) -> None:
        os.rename(source, dest)
        if not planted:
            planted.append(dest)
            plant(source)

    running.rotator = rotate_then_plant
    return planted


def test_a_symlink_planted_at_the_log_path_during_a_rotation_is_refused(
    shared_dir: SharedDir,
) -> None:
    """Between this handler's rename of ``app.log`` and its open of the new one, the neighbour
    plants ``app.log -> target``. Before: root wrote the next records into the target."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    path = shared_dir.join("app.log")
    running = handler(shared_dir, maxBytes=1000, backupCount=5)
    planted = plant_at_first_rotation(running, lambda at: shared_dir.run(os.symlink, target, at))
    records(running, 0, 30)
    assert planted
    assert Snapshot.of(target) == before
    assert os.path.islink(path), "left for a person to look at"
    assert len(running.failures) == 1, running.failures
    (report,) = running.failures
    assert isinstance(report, UnsafeFileError)
    message = str(report)
    assert repr(path) in message
    assert "symbolic link" in message
    assert "remove it" in message
    assert "records" in message  # and where they go meanwhile
    os.remove(path)  # what the message says: logging moves to a new file at the path
    time.sleep(0.01)
    records(running, 30, 5)
    running.close()
    assert not os.path.islink(path)
    assert logged(shared_dir.path) == set(range(35)), "nothing lost"
    assert len(running.failures) == 1


def test_a_hard_link_planted_at_the_log_path_during_a_rotation_is_refused(
    shared_dir: SharedDir,
) -> None:
    """Between the rename of ``app.log`` and the open of the new one, a root-only file is
    hard-linked at the path (by root, playing a neighbour on a system without
    ``fs.protected_hardlinks``). Before: root appended the next records to that file. Now a
    log file with more than one name is refused after the first open, like a link: records
    keep going to the file just rotated, one report, and a new file once the path is clear."""
    target = victim(shared_dir)
    os.chmod(target, 0o600)
    before = Snapshot.of(target)
    path = shared_dir.join("app.log")
    running = handler(shared_dir, maxBytes=1000, backupCount=5)
    planted = plant_at_first_rotation(running, lambda at: os.link(target, at))
    records(running, 0, 30)
    assert planted
    assert Snapshot.of(target) == before
    assert len(running.failures) == 1, running.failures
    (report,) = running.failures
    assert isinstance(report, UnsafeFileError)
    assert repr(path) in str(report)
    assert "2 hard links" in str(report)
    os.remove(path)  # the name only: the target keeps its contents
    time.sleep(0.01)
    records(running, 30, 5)
    running.close()
    assert Snapshot.of(target) == before
    assert logged(shared_dir.path) == set(range(35)), "nothing lost"
    assert len(running.failures) == 1


def test_the_log_file_this_process_writes_may_have_a_second_name(shared_dir: SharedDir) -> None:
    """A file with more names is refused only when it is not the one already open: here a
    backup tool hard-linked the current ``app.log`` elsewhere, then the lock file was deleted,
    so every process opens the log path again with the new lock table — and finds its own
    file, which gives nothing new. Rotation goes on; nothing is reported."""
    path = shared_dir.join("app.log")
    running = handler(shared_dir, maxBytes=2000, backupCount=5)
    records(running, 0, 5)
    os.link(path, os.path.join(outside(shared_dir), "backup-of-app.log"))
    os.remove(shared_dir.join(".app.log.lock"))
    time.sleep(1.05)  # AUDIT_EVERY: the new lock file, then the log path again
    records(running, 5, 60)
    running.close()
    assert not running.failures, running.failures
    assert logged(shared_dir.path) == set(range(65))
    assert os.path.exists(shared_dir.join("app.log.2")), "rotation went on"


def test_a_symlink_at_the_log_path_after_another_process_rotated_is_refused(
    shared_dir: SharedDir,
) -> None:
    """Another process rotates; the neighbour replaces the new ``app.log`` by a link before
    this handler follows. Before: this handler followed the link and wrote into the target."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    path = shared_dir.join("app.log")
    ours = handler(shared_dir, maxBytes=10_000, backupCount=5)
    other = handler(shared_dir, maxBytes=10_000, backupCount=5)
    records(ours, 0, 5)
    other.doRollover()
    shared_dir.run(_replace_with_link, target, path)
    time.sleep(0.01)  # past CHECK_EVERY: the next record looks at the shared generation
    records(ours, 5, 20)
    assert Snapshot.of(target) == before
    assert len(ours.failures) == 1
    assert isinstance(ours.failures[0], UnsafeFileError)
    assert repr(path) in str(ours.failures[0])
    ours.close()
    other.close()
    assert logged(shared_dir.path) == set(range(25))


def _rename_then_plant(target: str, path: str) -> None:
    os.rename(path, path + ".moved")
    os.symlink(target, path)


def _link_to_fifo(path: str) -> None:
    os.remove(path)
    os.mkfifo(path)


def test_a_log_file_replaced_by_a_link_or_a_fifo_is_not_followed(shared_dir: SharedDir) -> None:
    """The audit that follows a moved or replaced log file (within a second) neither follows a
    link nor opens a FIFO planted in its place: records keep going to the file this handler
    had open (here renamed ``app.log.moved``), one report per thing found."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    path = shared_dir.join("app.log")
    running = handler(shared_dir, maxBytes=100_000, backupCount=5)
    records(running, 0, 5)
    shared_dir.run(_rename_then_plant, target, path)
    time.sleep(1.05)  # AUDIT_EVERY
    records(running, 5, 5)
    assert Snapshot.of(target) == before
    shared_dir.run(_link_to_fifo, path)
    time.sleep(1.05)
    records(running, 10, 5)
    shared_dir.run(os.remove, path)
    time.sleep(1.05)
    records(running, 15, 5)  # a new app.log
    running.close()
    assert Snapshot.of(target) == before
    reports = [str(f) for f in running.failures]
    assert len(reports) == 2, reports
    assert "symbolic link" in reports[0]
    assert "named pipe" in reports[1]
    assert logged(shared_dir.path) == set(range(20))
    with open(path, "rb") as current:
        lines = current.read().splitlines()
    assert {p[1] for line in lines if (p := parse_line(line))} == set(range(15, 20))


def test_records_for_a_deleted_log_whose_path_holds_a_link_are_reported_lost(
    shared_dir: SharedDir,
) -> None:
    """The log file deleted and a link planted: there is no file to write to. The records are
    not written through the link; they are counted and reported as lost."""
    target = victim(shared_dir)
    before = Snapshot.of(target)
    path = shared_dir.join("app.log")
    running = handler(shared_dir, maxBytes=100_000, backupCount=5)
    records(running, 0, 5)
    shared_dir.run(_replace_with_link, target, path)
    time.sleep(1.05)
    records(running, 5, 5)
    shared_dir.run(os.remove, path)
    time.sleep(1.05)
    records(running, 10, 1)
    running.close()
    assert Snapshot.of(target) == before
    first, *rest = running.failures
    assert isinstance(first, UnsafeFileError)
    assert "symbolic link" in str(first)
    (lost,) = [f for f in rest if isinstance(f, RecordsLost)]
    assert lost.count == 5
    # Records written into the deleted file since the last look are written again, as for any
    # log file deleted by hand; the five refused ones are the ones reported lost.
    assert {10} <= logged(shared_dir.path) <= {0, 1, 2, 3, 4, 10}


def _move_and_link(target: str, path: str) -> None:
    os.rename(path, path + ".x")
    os.symlink(target, path)


def _link_then_plant(target: str, hop: str) -> None:
    os.symlink(target, hop)


@pytest.mark.parametrize("planted", ["existing", "missing", "chain"])
def test_a_symlink_planted_at_the_log_path_before_a_process_starts_is_refused(
    shared_dir: SharedDir, planted: str
) -> None:
    """An earlier run left ``app.log``; the neighbour moves it away and links the path to a
    root-only file (``existing``: root appended its records to it), to a file root would create
    with ``chmod=0o660`` in a root-only directory (``missing``: a new ``/etc/cron.d/x``), or
    puts its link one hop further (``chain``: root's own ``app.log -> current`` link, and the
    neighbour's ``current -> target``). Before: the first open of a new process took any link as
    configured and followed it. Now a link is followed only if root, this process's user or the
    directory's owner made it — every link on the way — as the kernel's protected_symlinks rule
    says: the constructor refuses and says what to do; with ``delay=True`` emit reports once
    and counts the records lost until the path is cleared."""
    path = shared_dir.join("app.log")
    SafeRotatingFileHandler(path, maxBytes=1000, chmod=0o660).close()  # the earlier run
    root_only = os.path.join(outside(shared_dir), "root-only")
    os.mkdir(root_only, 0o700)
    target = os.path.join(root_only, "x")
    if planted != "missing":
        with open(target, "wb") as out:
            out.write(b"root's own\n")
        os.chmod(target, 0o600)
        before: Snapshot | None = Snapshot.of(target)
    else:
        before = None
    if planted == "chain":
        hop = shared_dir.join("current")
        os.remove(path)
        os.symlink("current", path)  # root's link: trusted
        shared_dir.run(_link_then_plant, target, hop)
    else:
        shared_dir.run(_move_and_link, target, path)
    message = r"symbolic link to .* owned by nobody \(uid 65534\).*remove it"
    with pytest.raises(UnsafeFileError, match=message):
        SafeRotatingFileHandler(path, maxBytes=1000, chmod=0o660)
    late = handler(shared_dir, delay=True)
    records(late, 0, 20)
    if before is None:
        assert not os.path.lexists(target), "root created the file the link named"
    else:
        assert Snapshot.of(target) == before
    assert len(late.failures) == 1, late.failures
    assert "symbolic link" in str(late.failures[0])
    os.remove(shared_dir.join("current") if planted == "chain" else path)
    records(late, 20, 1)
    late.close()
    (lost,) = [f for f in late.failures if isinstance(f, RecordsLost)]
    assert lost.count == 20
    if before is None:
        assert not os.path.lexists(target)
    else:
        assert Snapshot.of(target) == before


def test_a_fifo_planted_at_the_log_path_before_a_process_starts_is_refused(
    shared_dir: SharedDir,
) -> None:
    """Before: root opened the neighbour's FIFO as its log (``O_RDWR`` does not wait for a
    reader), and the first 64 KiB of records later blocked the application forever. A pipe or
    device at a log path is used only if root, this process's user or the directory's owner
    made it, like a link."""
    path = shared_dir.join("app.log")
    shared_dir.run(os.mkfifo, path)
    with pytest.raises(UnsafeFileError, match=r"named pipe owned by nobody.*remove it"):
        SafeRotatingFileHandler(path, maxBytes=1000, chmod=0o660)


def _service_user_logs_through_its_link(directory: str, target: str) -> bool:
    """As the service user (uid 65534): link the log path to a file, log, and tell whether
    the record went through the link."""
    path = os.path.join(directory, "app.log")
    os.symlink(target, path)
    made = SafeRotatingFileHandler(path, maxBytes=0, chmod=0o660)
    made.setFormatter(logging.Formatter("%(message)s"))
    made.handle(logging.makeLogRecord({"msg": "through my own link"}))
    made.close()
    with open(target, encoding="utf-8") as written:
        return "through my own link" in written.read()


def test_a_log_path_link_made_by_the_service_user_or_the_directory_owner_is_followed(
    shared_dir: SharedDir,
) -> None:
    """A link the process's own user made is followed (here the service user is uid 65534
    and logs into the shared directory), and so is a link made by the owner of the
    directory that holds it (root follows uid 65534's link in uid 65534's own directory)."""
    assert shared_dir.run(
        _service_user_logs_through_its_link, shared_dir.path, shared_dir.join("mine.log")
    )
    owned = os.path.join(outside(shared_dir), "owned")
    os.mkdir(owned)
    os.chown(owned, 65534, 65534)
    real = shared_dir.join("app.log-real")
    shared_dir.run(os.symlink, real, os.path.join(owned, "app.log"))
    running = Recording(os.path.join(owned, "app.log"), maxBytes=0, chmod=0o660)
    running.setFormatter(logging.Formatter("%(message)s"))
    records(running, 0, 3)
    running.close()
    assert not running.failures
    assert logged(shared_dir.path) == {0, 1, 2}
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o660


def test_a_log_path_that_is_a_symlink_from_the_start_keeps_working(
    shared_dir: SharedDir,
) -> None:
    """As with the stdlib: a link configured before the handler starts is followed (and
    rotation renames the link, as ``RotatingFileHandler`` does)."""
    real = os.path.join(outside(shared_dir), "real.log")
    Path(real).touch()
    os.symlink(real, shared_dir.join("app.log"))
    running = handler(shared_dir, maxBytes=1000, backupCount=5)
    records(running, 0, 5)
    assert os.path.getsize(real) > 0
    records(running, 5, 20)
    running.close()
    assert not running.failures
    assert os.path.islink(shared_dir.join("app.log.2")) or os.path.islink(
        shared_dir.join("app.log.1")
    )


def test_a_configured_symlink_whose_target_is_moved_away_is_followed_to_a_new_target(
    shared_dir: SharedDir,
) -> None:
    """The link configured at start stays trusted while the path holds that very link: when
    its target is moved away (an external rotation), a new target is created where it points.
    A different link put in its place is refused."""
    real = os.path.join(outside(shared_dir), "real.log")
    path = shared_dir.join("app.log")
    os.symlink(real, path)
    running = handler(shared_dir, maxBytes=0)
    records(running, 0, 5)
    os.rename(real, real + ".old")
    time.sleep(1.05)  # AUDIT_EVERY
    records(running, 5, 5)
    with open(real, "rb") as current:  # a new file where the link points
        lines = current.read().splitlines()
    assert {p[1] for line in lines if (p := parse_line(line))} == set(range(5, 10))
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o660, "created with the handler's chmod"
    assert os.path.islink(path)
    target = victim(shared_dir)
    before = Snapshot.of(target)
    shared_dir.run(_replace_with_link, target, path)
    os.rename(real, real + ".older")
    time.sleep(1.05)
    records(running, 10, 5)
    running.close()
    assert Snapshot.of(target) == before
    assert len(running.failures) == 1
    assert "symbolic link" in str(running.failures[0])
    found: set[int] = set()
    for name in ("real.log.old", "real.log.older"):
        with open(os.path.join(outside(shared_dir), name), "rb") as moved:
            found |= {p[1] for line in moved.read().splitlines() if (p := parse_line(line))}
    assert found == set(range(15))  # the last five went to the file it had: "real.log.older"
