"""Work on the backups that writers never wait for: compression and retention.

A rotation only moves the current file into the backup set, under the rotation lock, in a few
system calls. Everything slower happens afterwards, in a short-lived background thread of the
process that rotated (:meth:`Janitor.kick`), outside the rotation lock:

* **compression** of each plain backup nobody has written to for :data:`_compress.GRACE`
  seconds: open it without following a link and check that it is the regular file its name
  holds (``fstat`` against ``lstat``) before reading a byte, write
  ``.<base>.compressing.<random><suffix>`` beside it (created ``O_EXCL``, mode 0600), ``fsync``,
  then — under the rotation lock, after checking that the backup is still there, unchanged —
  give the temporary file its final mode and owner, rename it to ``<backup><suffix>`` and remove
  the plain file. A compressed name therefore always holds a whole file; a crash leaves either
  the plain backup (and a temporary file that the next janitor removes) or both (and the next
  janitor removes the plain one);
* **retention**: ``max_age``, ``max_total_bytes``, and ``backupCount`` for time-named sets, the
  oldest backup first, never the current file.

Only one process works at a time: the janitor lock is a POSIX record lock (``lockf``) on
``.<base>.janitor`` — owned by the process, so a child forked while the parent's janitor runs
never inherits it — plus a mutex for the threads of one process. A process that finds it busy
leaves the work to the holder, which looks again for new rotations before it stops.

The directory may be shared with users we do not trust (README's "Several users"): every file
the janitor opens or creates goes through :mod:`._safefs`. A backup name holding a link is
never read through (its compression is refused and reported once); renames and removals act
on names and never follow links.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from safe_rotating._common import osfiles as _safefs
from safe_rotating._engine.compress import Compression, compress_fd
from safe_rotating._engine.lock import SidecarLock
from safe_rotating._engine.locktable import DIRTY, STAGED
from safe_rotating._engine.plan import Backup, Retention
from safe_rotating._engine.schedule import (
    COMPRESSED_SUFFIXES,
    Schedule,
    order_key,
    parse_timed_name,
)
from safe_rotating._engine.staging import IndexState, Slot, from_names, next_move, normal
from safe_rotating.exceptions import UnsafeFileError

__all__ = ["Janitor", "StagedSet", "janitor_path", "move_any", "remove_any", "taken"]

_MUTEXES: dict[str, threading.Lock] = {}
_MUTEXES_GUARD = threading.Lock()
_LOCK_WAIT = 2.0  # seconds a janitor waits for the rotation lock for one short step
# Renumbering waits until no rotation happened for this long: while writers rotate busily the
# new backups keep their pending names (one rename each), and the set is brought back to the
# stdlib's names in one pass once they pause, or at close.
QUIET = 1.0
# A pass looks only at backups newer than those it found settled (compressed, or failed); a
# full look, which also clears temporary files a crashed janitor left, runs this often.
_FULL_SCAN_EVERY = 60.0
# Rotations that never pause for QUIET do not keep pending names longer than this.
_LONGEST_DEFERRAL = 60.0
_TEMP_MARK = ".compressing."
# Test hook: called with the name of each step of the janitor's work (see tests/test_janitor.py).
STEP_HOOK: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


def _reset_after_fork() -> None:
    global _MUTEXES_GUARD
    _MUTEXES.clear()  # a parent's thread may have held one: the child starts afresh
    _MUTEXES_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _mutex(path: str) -> threading.Lock:
    with _MUTEXES_GUARD:
        return _MUTEXES.setdefault(path, threading.Lock())


def taken(name: str) -> bool:
    """Is ``name`` used, plain or compressed?"""
    return os.path.lexists(name) or any(os.path.lexists(name + s) for s in COMPRESSED_SUFFIXES)


def remove_any(name: str) -> None:
    """Remove a backup, plain or compressed."""
    for suffix in ("", *COMPRESSED_SUFFIXES):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name + suffix)


def move_any(source: str, dest: str) -> None:
    """Rename a backup, plain or compressed, keeping its suffix."""
    for suffix in ("", *COMPRESSED_SUFFIXES):
        try:
            os.rename(source + suffix, dest + suffix)
            return
        except FileNotFoundError:
            continue
    raise FileNotFoundError(errno.ENOENT, "no such backup", source)


class StagedSet:
    """The file operations of :mod:`._staging`, each recorded in the table under the lock.

    Every method expects the rotation lock held by ``lock``.
    """

    def __init__(self, path: str, name_for: Callable[[str], str]) -> None:
        self.path = path
        self.directory, self.base = os.path.split(path)
        self._name_for = name_for

    def name(self, slot: Slot) -> str:
        if slot.kind == "n":
            return self._name_for(f"{self.path}.{slot.number}")
        return f"{self.path}.pending.{slot.number}"

    def load(self, lock: SidecarLock) -> IndexState:
        flags, counters = lock.state()
        if flags & STAGED and not flags & DIRTY and _plausible(counters):
            state = normal(IndexState(*counters))
            # Two lookups catch files added or removed by hand (or by an older release) at
            # the old end of the set, where they would change what "oldest" means.
            top = Slot("n", state.c if state.upper else state.a)
            beyond = Slot("n", top.number + 1)
            if (top.number == 0 or taken(self.name(top))) and not taken(self.name(beyond)):
                return state
        return self.rescan(lock)

    def rescan(self, lock: SidecarLock) -> IndexState:
        """Rebuild the counters from the names (after a crash, a repair, or files moved by
        hand), compacting an unusual set first."""
        numbers: list[int] = []
        pending: list[int] = []
        plain = self._name_for("x") == "x"
        prefix = self.base + "."
        for entry in os.listdir(self.directory or "."):
            if not entry.startswith(prefix):
                continue
            rest = entry[len(prefix) :]
            for suffix in COMPRESSED_SUFFIXES:
                if rest.endswith(suffix):
                    rest = rest[: -len(suffix)]
            if rest.isdigit() and plain:
                numbers.append(int(rest))
            elif rest.startswith("pending.") and rest[8:].isdigit():
                pending.append(int(rest[8:]))
        if not plain:  # a namer we cannot read back: the run from 1 that its names make
            n = 1
            while taken(self.name(Slot("n", n))):
                numbers.append(n)
                n += 1
        _, counters = lock.state()
        hi = counters[4] if 1 <= counters[4] < _LARGEST_COUNTER else 1
        renames, state = from_names(numbers, pending, hi)
        lock.set_flags(STAGED | DIRTY)
        for source, dest in renames:
            move_any(self.name(source), self.name(dest))
        lock.set_state(STAGED, state.counters())
        return state

    def _apply(
        self, lock: SidecarLock, state: IndexState, source: Slot, dest: Slot, after: IndexState
    ) -> IndexState:
        if taken(self.name(dest)) or not taken(self.name(source)):
            return self.rescan(lock)  # the names are not what the table says
        lock.set_flags(STAGED | DIRTY)
        _step("staged:move")
        move_any(self.name(source), self.name(dest))
        lock.set_state(STAGED, after.counters())
        return after

    def rotate(
        self, lock: SidecarLock, state: IndexState, rotate: Callable[[str, str], None]
    ) -> IndexState:
        """The current file becomes the newest pending backup: one rename."""
        after, slot = state.rotated()
        dest = self.name(slot)
        if taken(dest):
            state = self.rescan(lock)
            after, slot = state.rotated()
            dest = self.name(slot)
        lock.set_flags(STAGED | DIRTY)
        _step("staged:rotate")
        rotate(self.path, dest)
        lock.set_state(STAGED, after.counters())
        return after

    def shift_in(
        self, lock: SidecarLock, state: IndexState, rotate: Callable[[str, str], None], keep: int
    ) -> IndexState | None:
        """The stdlib's rotation, for a small set at rest: shift ``.1 … .a`` up by one (after
        removing the oldest beyond ``keep``) and hand the current file to ``rotate`` as ``.1``.
        ``None`` if the names were not what the table says (the caller stages instead)."""
        state = self.trim(lock, state, max(keep - 1, 0))
        top = state.a
        for n in range(top, 0, -1):
            after = replace(state, a=n - 1, b=n + 1, c=top + 1)
            moved = self._apply(lock, state, Slot("n", n), Slot("n", n + 1), after)
            if moved != after:
                return None
            state = moved
        lock.set_flags(STAGED | DIRTY)
        _step("staged:rotate")
        rotate(self.path, self.name(Slot("n", 1)))
        # lo and hi move on together (no pending file): ``hi`` counts every rotation, which
        # keeps :attr:`_Found.ident` and :meth:`Janitor._find` right for inline rotations too.
        state = normal(
            replace(state, a=top + 1, b=top + 2, c=top + 1, lo=state.lo + 1, hi=state.hi + 1)
        )
        lock.set_state(STAGED, state.counters())
        return state

    def trim(self, lock: SidecarLock, state: IndexState, keep: int) -> IndexState:
        """Remove the oldest backups while more than ``keep`` exist."""
        while state.total > keep:
            oldest = state.oldest()
            assert oldest is not None
            if not taken(self.name(oldest)):  # the table is not what the names say
                state = self.rescan(lock)
                if state.total <= keep:
                    break
                oldest = state.oldest()
                assert oldest is not None
            lock.set_flags(STAGED | DIRTY)
            _step("staged:remove")
            remove_any(self.name(oldest))
            state = state.without_oldest()
            lock.set_state(STAGED, state.counters())
        return state

    def renumber(
        self, lock: SidecarLock, state: IndexState, budget: int, deadline: float = 0.0
    ) -> IndexState:
        """Up to ``budget`` renumbering steps (stopping early at ``deadline`` on the monotonic
        clock, or as soon as a writer waits for the lock)."""
        for done in range(budget):
            move = next_move(state)
            if move is None:
                after = normal(state)
                if after != state:
                    lock.set_state(STAGED, after.counters())
                return after
            state = self._apply(lock, state, move.source, move.dest, move.after)
            if deadline and done % 8 == 7 and (time.monotonic() > deadline or lock.wanted_since()):
                break
        return state


# The table is writable by everyone who may log, so its counters are checked before they drive
# a loop: a set larger than this, or a counter this large, was not written by a rotation (a
# billion rotations a day would take three thousand years to reach the counter bound).
_LARGEST_SET = 1 << 20
_LARGEST_COUNTER = 1 << 60


def _plausible(counters: tuple[int, int, int, int, int]) -> bool:
    """Could a rotation have left these counters (see :class:`IndexState`)? Else rescan."""
    if not all(0 <= n < _LARGEST_COUNTER for n in counters):
        return False
    state = IndexState(*counters)
    return state.b >= 1 and state.lo <= state.hi and state.total <= _LARGEST_SET


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _is_temporary(rest: str) -> bool:
    """Is ``rest`` (what follows ``.<base>.compressing.``) a temporary file's ``<hex><suffix>``?"""
    for suffix in COMPRESSED_SUFFIXES:
        if rest.endswith(suffix):
            stem = rest[: -len(suffix)]
            return bool(stem) and all(c in "0123456789abcdef" for c in stem)
    return False


def janitor_path(lock_path: str) -> str:
    """``.app.log.lock`` -> ``.app.log.janitor``."""
    stem = lock_path[: -len(".lock")] if lock_path.endswith(".lock") else lock_path
    return stem + ".janitor"


@dataclass
class _Found:
    """A backup on disk: ``name`` without a compression suffix, and the suffix it has."""

    name: str
    suffix: str
    rank: int = -1  # size-rotated sets: places from the newest backup, when listed ...
    hi: int = 0  # ... and the pending counter then: rank + (hi now - hi) is its place now

    @property
    def ident(self) -> int:
        """Size-rotated sets: a number that stays with the backup through renumbering (every
        rotation adds one to ``hi`` and one to every backup's rank); -1 otherwise."""
        return self.hi - 1 - self.rank if self.rank >= 0 else -1

    @property
    def path(self) -> str:
        return self.name + self.suffix


class Janitor:
    """Compression and retention for one log file; see the module docstring."""

    def __init__(
        self,
        path: str,
        lock_path: str,
        *,
        schedule: Schedule | None,
        name_for: Callable[[str], str],
        retention: Retention,
        compression: Compression | None,
        chmod: int | None = None,
        owner: tuple[int, int] | None = None,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.directory, self.base = os.path.split(path)
        self._schedule = schedule
        self._name_for = name_for
        self.retention = retention
        self.compression = compression
        self._lock = SidecarLock(lock_path, chmod, owner, log_path=path, warn=warn)
        self._janitor_path = janitor_path(lock_path)
        self._chmod = chmod
        self._owner = owner
        self._warn = warn
        self._clock = clock
        self._staged = None if schedule is not None else StagedSet(path, name_for)
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._state = threading.Lock()
        self._again = False
        self._closing = False
        self._wakeup = threading.Event()  # set by close(): a sleeping thread stops at once
        self._settled = -1  # every backup with an ident up to this one is done (compressed)
        self._full_scan_at = -_FULL_SCAN_EVERY  # monotonic time of the last full pass
        self._seen_hi = 0  # the pending counter when last read, and when it last changed
        self._seen_hi_at = 0.0
        self._deferred_since = 0.0  # 0.0: renumbering is not being put off
        self._failed: set[tuple[int, int]] = set()
        self._doomed_snapshot: list[_Found] = []
        self._doomed_hi = 0
        self._warned: set[str] = set()

    @property
    def needed(self) -> bool:
        """Is there any work for a janitor with these settings (beyond renumbering)?"""
        timed_count = self._schedule is not None and self.retention.count > 0
        return bool(self.compression or self.retention.needs_sizes or timed_count)

    # -- renumbering (size-rotated sets) ---------------------------------------------------------
    def renumber(self) -> bool:
        """Bring the set back to stdlib names, in short lock holds; needs no janitor lock
        (every step is recorded under the rotation lock). ``False`` if it could not finish."""
        staged = self._staged
        if staged is None:
            return True
        lock = self._lock
        while True:
            try:
                if not lock.acquire(_LOCK_WAIT):
                    return False
            except Exception as exc:
                self._warn_once("lock", f"renumbering {self.path!r} postponed: {exc}")
                return False
            try:
                if not lock.extended:
                    return True
                state = staged.load(lock)
                # A writer that wants the lock is seen within 8 steps; a hold lasts ~1 ms.
                state = staged.renumber(lock, state, 256, time.monotonic() + 0.001)
                if state.at_rest:
                    return True
            finally:
                lock.release()
            time.sleep(0.002 if lock.wanted_since() else 0.0002)

    # -- the background thread -------------------------------------------------------------------
    def kick(self) -> None:
        """Make sure a pass runs soon, in a background thread of this process."""
        with self._state:
            if self._closing:
                return
            alive = (
                self._thread is not None
                and self._thread_pid == os.getpid()
                and self._thread.is_alive()
            )
            if alive:
                self._again = True
                return
            self._again = False
            if self._thread_pid != os.getpid():
                self._wakeup = threading.Event()  # never one inherited through a fork
            thread = threading.Thread(
                target=self._loop, name=f"safe_rotating janitor {self.base}", daemon=True
            )
            self._thread, self._thread_pid = thread, os.getpid()
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: the next process does the work
            self._thread = None

    def _loop(self) -> None:
        try:
            while True:
                wait = self.run(compress=True)
                with self._state:
                    if self._closing:
                        return
                    again, self._again = self._again, False
                if wait is None:  # busy: the holder looks for new work before it stops
                    return
                if wait > 0:
                    self._wakeup.wait(min(wait, 1.0))
                elif not again:
                    return
        except Exception as exc:  # never let a background problem pass silently
            self._warn_once("thread", f"background work on {self.path!r} stopped: {exc!r}")

    def close(self, timeout: float = 5.0) -> None:
        """Let a running pass finish its current step, bring the names back to the stdlib's,
        then apply retention once more."""
        with self._state:
            self._closing = True
            thread = self._thread if self._thread_pid == os.getpid() else None
        if thread is None:
            self._wakeup = threading.Event()  # an inherited one may have been held at a fork
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._full_scan_at = -_FULL_SCAN_EVERY  # look at everything once more
        with contextlib.suppress(Exception):
            self.renumber()
        with contextlib.suppress(Exception):
            self.run(compress=False)
        self._lock.close()
        with self._state:
            self._closing = False
            self._wakeup = threading.Event()

    # -- one pass --------------------------------------------------------------------------------
    def run(self, compress: bool = True) -> float | None:
        """One pass, if no other janitor is at work: ``None`` if busy, else seconds until a
        backup becomes old enough to compress (0.0: nothing waits)."""
        mutex = _mutex(self._janitor_path)
        if not mutex.acquire(blocking=False):
            return None
        try:
            fd = self._open_janitor_lock()
            if fd < 0:
                return None
            try:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EAGAIN):
                        return None
                    raise
                return self._work(compress)
            finally:
                os.close(fd)  # also releases the record lock
        finally:
            mutex.release()

    def _open_janitor_lock(self) -> int:
        """The janitor lock file, or -1 (reported once) when it cannot be used: then no
        background work is done here, and writers never notice."""
        try:
            fd, _ = _safefs.open_or_create(
                self._janitor_path,
                os.O_RDWR,
                mode=self._chmod,
                owner=self._owner,
                role="the janitor lock file",
            )
        except OSError as exc:
            self._warn_once(
                "janitor-lock",
                f"cannot open {self._janitor_path!r}: {exc}. Compression and retention of "
                f"{self.path!r} are not done by this process until this is resolved",
            )
            return -1
        return fd

    def _work(self, compress: bool) -> float:
        self._lock.open()
        busy = self._rotating_for() if compress else 0.0  # close() renumbers at once
        if not busy:
            self.renumber()
        now = time.monotonic()
        full = now - self._full_scan_at >= _FULL_SCAN_EVERY
        if full:
            self._full_scan_at = now
            self._settled = -1  # worked out again from everything
            self._remove_temporaries()
        listed = self.backups(None if full else self._settled)
        self._resolve_pairs(listed)
        self._apply_retention()
        wait = self._compress_all(listed) if compress and self.compression else 0.0
        if busy:
            wait = busy if not wait else min(wait, busy)
        return wait

    def _rotating_for(self) -> float:
        """0.0 if the set may be renumbered now, else seconds until rotations have paused for
        :data:`QUIET` (as far as can be told now). Time-named sets are never renumbered."""
        if self._staged is None or not self._lock.extended:
            return 0.0
        # Read without the lock (writers need it more): the counters only serve to tell
        # whether rotations go on; renumber() reads them again under the lock.
        try:
            flags, counters = self._lock.state()
        except (OSError, ValueError):  # a damaged table: renumber() repairs it under the lock
            return 0.0
        if not flags & STAGED:
            return 0.0
        state = IndexState(*counters)
        now = time.monotonic()
        if state.hi < self._seen_hi:  # the table was rebuilt: what was settled is unknown
            self._settled = -1
        if state.hi != self._seen_hi:
            self._seen_hi, self._seen_hi_at = state.hi, now
        left = self._seen_hi_at + QUIET - now
        if state.at_rest or left <= 0:
            self._deferred_since = 0.0
            return 0.0
        if not self._deferred_since:
            self._deferred_since = now
        elif now - self._deferred_since > _LONGEST_DEFERRAL:
            self._deferred_since = 0.0
            return 0.0  # rotations never pause: renumber anyway, in holds writers may cut short
        return left

    # -- listing ---------------------------------------------------------------------------------
    def _variant(self, name: str) -> _Found | None:
        if os.path.lexists(name):
            return _Found(name, "")
        for suffix in COMPRESSED_SUFFIXES:
            if os.path.lexists(name + suffix):
                return _Found(name, suffix)
        return None

    def backups(self, newer_than: int | None = None) -> list[_Found]:
        """The backups, oldest first; of a size-rotated set, only those whose
        :attr:`_Found.ident` is above ``newer_than``."""
        if self._schedule is not None:
            pattern = self._schedule.stamp_pattern
            parsed = []
            for entry in os.listdir(self.directory or "."):
                name = parse_timed_name(entry, self.base, pattern)
                if name is not None:
                    parsed.append((order_key(name), entry, name.compressed))
            parsed.sort()
            out: list[_Found] = []
            for _, entry, suffix in parsed:
                plain = os.path.join(self.directory, entry[: len(entry) - len(suffix)])
                if out and out[-1].name == plain:
                    continue  # a plain and a compressed copy: one backup
                out.append(_Found(plain, suffix))
            return out
        staged = self._staged
        assert staged is not None
        with self._locked() as held:
            if not held or not self._lock.extended:
                return []
            state = staged.load(self._lock)
        # Looked up after the lock is released, so that writers never wait for a thousand
        # lookups: a backup renumbered meanwhile is missed now and found next time.
        out = []
        top = state.total if newer_than is None else min(state.total, state.hi - 1 - newer_than)
        for rank in range(top - 1, -1, -1):
            slot = state.slot(rank)
            assert slot is not None
            variant = self._variant(staged.name(slot))
            if variant is not None:
                variant.rank, variant.hi = rank, state.hi
                out.append(variant)
        return out

    # -- clean-up of what a crash left -----------------------------------------------------------
    def _remove_temporaries(self) -> None:
        """Temporary files of a janitor that died: only the lock holder makes them.

        ``.<base>.compressing.<hex><suffix>`` (older releases used the inode number, digits
        only). Removing a name never follows a link; anything else planted under such a name
        (a directory) is left alone rather than stopping the pass."""
        prefix = "." + self.base + _TEMP_MARK
        for entry in os.listdir(self.directory or "."):
            if entry.startswith(prefix) and _is_temporary(entry[len(prefix) :]):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.directory, entry))

    def _resolve_pairs(self, listed: list[_Found]) -> None:
        """A backup both plain and compressed: the compressed one is whole (it was renamed into
        place complete), so the plain one is removed — under the rotation lock."""
        if self.compression is None:
            return
        pairs = [b.name for b in listed if not b.suffix and self._has_compressed(b)]
        if not pairs:
            return
        with self._locked() as held:
            if not held:
                return
            for name in pairs:
                if self._has_compressed(_Found(name, "")) and os.path.lexists(name):
                    _step("resolve:remove-plain")
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(name)

    def _has_compressed(self, backup: _Found) -> bool:
        return any(os.path.lexists(backup.name + s) for s in COMPRESSED_SUFFIXES)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        try:
            held = self._lock.acquire(_LOCK_WAIT)
        except Exception as exc:
            self._warn_once("lock", f"background work on {self.path!r} postponed: {exc}")
            held = False
        try:
            yield held
        finally:
            if held:
                self._lock.release()

    # -- retention -------------------------------------------------------------------------------
    def doomed(self) -> list[str]:
        """The backups retention would delete now, oldest first."""
        if not self.retention.enabled:
            return []
        return [b.name for b in self._doomed()]

    def _doomed(self) -> list[Backup]:
        entries: list[Backup] = []
        listed = self.backups()
        self._doomed_snapshot = listed
        self._doomed_hi = listed[0].hi if listed else 0
        for found in listed:
            try:
                st = os.stat(found.path)
            except FileNotFoundError:
                continue
            entries.append(Backup(found.path, st.st_size, st.st_mtime))
        try:
            current = os.stat(self.path).st_size
        except FileNotFoundError:
            current = 0
        return self.retention.to_delete(entries, current, self._clock())

    def _apply_retention(self) -> None:
        policy = self.retention
        if self._schedule is None and not policy.needs_sizes:
            return  # a size-rotated set is trimmed to backupCount by the rotation itself
        if not policy.enabled:
            return
        doomed = self._doomed()
        if not doomed:
            return
        with self._locked() as held:
            if not held:
                return
            if self._staged is not None:
                # Oldest first, so: keep the newest ``total - len(doomed)`` backups as they are
                # now (rotations since the listing only added newer ones).
                state = self._staged.load(self._lock)
                keep = min(state.total, len(self._doomed_snapshot) - len(doomed))
                keep += state.hi - self._doomed_hi
                _step("retention:remove")
                self._staged.trim(self._lock, state, max(keep, 0))
                return
            for backup in doomed:
                _step("retention:remove")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(backup.name)

    # -- compression -----------------------------------------------------------------------------
    def _compress_all(self, listed: list[_Found]) -> float:
        """Compress every plain backup of ``listed`` old enough; return seconds until the next
        one is. Moves :attr:`_settled` past the oldest run of backups that are done."""
        compression = self.compression
        assert compression is not None
        wait = 0.0
        settling = True  # every backup looked at so far is done
        for found in listed:
            with self._state:
                if self._closing:
                    return 0.0
            done = bool(found.suffix)
            if not done:
                try:
                    st = os.lstat(found.name)  # a link's own age: it is refused, not followed
                except FileNotFoundError:
                    st = None
                if st is None:
                    done = False  # renumbered or removed meanwhile: looked at again next time
                elif (st.st_dev, st.st_ino) in self._failed:
                    done = True
                else:
                    age = self._clock() - st.st_mtime
                    if age < compression.grace:
                        left = compression.grace - age
                        wait = left if not wait else min(wait, left)
                    else:
                        done = self._compress_one(found, compression)
            settling = settling and done
            if settling and found.ident >= 0:
                self._settled = max(self._settled, found.ident)
        return wait

    def _compress_one(self, found: _Found, compression: Compression) -> bool:
        """Compress one backup; True when it is done (compressed, or failed and reported).

        Nothing is read before the open file is known to be the regular file the name holds,
        and the temporary copy is private (0600, a random name) until it is complete and the
        backup checked again under the lock: only then does it get its final mode and owner —
        the handler's ``chmod``/``owner``, else the backup's own — and its name."""
        name = found.name
        try:
            source, st = _safefs.open_to_read(name, "a backup to compress")
        except FileNotFoundError:
            return False
        except UnsafeFileError as exc:
            if exc.errno == errno.ESTALE:
                return False  # renumbered while we opened it: looked at again next time
            # Not remembered by inode (a link's number is soon reused): refused again, quietly,
            # whenever a full pass meets it.
            return self._compress_failed(name, compression, exc, None)
        except OSError as exc:
            return self._compress_failed(name, compression, exc, _lstat(name))
        temp = ""
        try:
            out, temp = _safefs.create_temporary(
                self.directory or ".", f".{self.base}{_TEMP_MARK}", compression.suffix
            )
            try:
                _step("compress:writing")
                read = compress_fd(source, out, compression)
                os.fsync(out)
                _step("compress:written")
                with self._locked() as held:
                    if not held:
                        return False
                    now = os.fstat(source)
                    if now.st_size != read or now.st_nlink == 0:
                        return False  # written to or removed meanwhile: the next pass tries again
                    current = self._find(found, st)
                    if current is None or self._variant(current) != _Found(current, ""):
                        return False
                    self._finish(out, st)
                    os.rename(temp, current + compression.suffix)
                    temp = ""
                    _step("compress:published")
                    os.remove(current)
                    return True
            finally:
                os.close(out)
        except Exception as exc:
            return self._compress_failed(name, compression, exc, st)
        finally:
            os.close(source)
            if temp:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp)

    def _finish(self, out: int, source: os.stat_result) -> None:
        """The compressed copy's final mode and owner: the handler's ``chmod``/``owner``, else
        those of the backup it replaces (checked to be a regular file of this directory).
        Changing the owner needs privileges: without them the copy keeps ours, as before."""
        owner = self._owner or (source.st_uid, source.st_gid)
        if owner != (os.geteuid(), os.getegid()):
            with contextlib.suppress(OSError):
                os.fchown(out, *owner)
        mode = self._chmod if self._chmod is not None else source.st_mode & 0o777
        os.fchmod(out, mode)

    def _compress_failed(
        self, name: str, compression: Compression, exc: Exception, st: os.stat_result | None
    ) -> bool:
        if st is not None:
            self._failed.add((st.st_dev, st.st_ino))
        self._warn_once(
            f"compress-{type(exc).__name__}",
            f"could not compress {name!r} ({compression.kind}): {exc}. The backup is kept "
            "uncompressed; later failures of this kind are not reported again",
        )
        return True

    def _find(self, found: _Found, st: os.stat_result) -> str | None:
        """Where the backup listed as ``found`` is now (renumbering moves backups): for a
        size-rotated set, as many places further from the newest as rotations since."""

        def same(path: str) -> bool:
            try:
                here = os.lstat(path)
            except FileNotFoundError:
                return False
            return (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)

        if self._staged is None or found.rank < 0:
            return found.name if same(found.name) else None
        state = self._staged.load(self._lock)
        slot = state.slot(found.rank + state.hi - found.hi)
        if slot is None:
            return None
        name = self._staged.name(slot)
        return name if same(name) else None

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        if self._warn is not None:
            with contextlib.suppress(Exception):
                self._warn(message)
