"""Work on the backups that writers never wait for: compression and retention.

A rotation only moves the current file into the backup set, under the rotation lock, in a few
system calls. Everything slower happens afterwards, in a short-lived background thread of the
process that rotated (:meth:`Janitor.kick`), outside the rotation lock:

* **compression** of each plain backup nobody has written to for :data:`_compress.GRACE`
  seconds: read it, write ``.<base>.compressing.<inode><suffix>`` beside it, ``fsync``, then —
  under the rotation lock, after checking that the backup is still there, unchanged — rename the
  temporary file to ``<backup><suffix>`` and remove the plain file. A compressed name therefore
  always holds a whole file; a crash leaves either the plain backup (and a temporary file that
  the next janitor removes) or both (and the next janitor removes the plain one);
* **retention**: ``max_age``, ``max_total_bytes``, and ``backupCount`` for time-named sets, the
  oldest backup first, never the current file.

Only one process works at a time: the janitor lock is a POSIX record lock (``lockf``) on
``.<base>.janitor`` — owned by the process, so a child forked while the parent's janitor runs
never inherits it — plus a mutex for the threads of one process. A process that finds it busy
leaves the work to the holder, which looks again for new rotations before it stops.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._compress import Compression, compress_fd
from ._lock import SidecarLock
from ._rotation import Backup, Retention
from ._schedule import COMPRESSED_SUFFIXES, Schedule, order_key, parse_timed_name

__all__ = ["Janitor", "janitor_path"]

_MUTEXES: dict[str, threading.Lock] = {}
_MUTEXES_GUARD = threading.Lock()
_LOCK_WAIT = 2.0  # seconds a janitor waits for the rotation lock for one short step
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


def janitor_path(lock_path: str) -> str:
    """``.app.log.lock`` -> ``.app.log.janitor``."""
    stem = lock_path[: -len(".lock")] if lock_path.endswith(".lock") else lock_path
    return stem + ".janitor"


@dataclass
class _Found:
    """A backup on disk: ``name`` without a compression suffix, and the suffix it has."""

    name: str
    suffix: str

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
        self._lock = SidecarLock(lock_path, chmod, owner, log_path=path)
        self._janitor_path = janitor_path(lock_path)
        self._chmod = chmod
        self._owner = owner
        self._warn = warn
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._state = threading.Lock()
        self._again = False
        self._closing = False
        self._failed: set[tuple[int, int]] = set()
        self._warned: set[str] = set()

    @property
    def needed(self) -> bool:
        """Is there any work for a janitor with these settings?"""
        timed_count = self._schedule is not None and self.retention.count > 0
        return bool(self.compression or self.retention.needs_sizes or timed_count)

    # -- the background thread -------------------------------------------------------------------
    def kick(self) -> None:
        """Make sure a pass runs soon, in a background thread of this process."""
        if not self.needed:
            return
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
                    time.sleep(min(wait, 1.0))
                elif not again:
                    return
        except Exception as exc:  # never let a background problem pass silently
            self._warn_once("thread", f"background work on {self.path!r} stopped: {exc!r}")

    def close(self, timeout: float = 5.0) -> None:
        """Let a running pass finish its current step, then apply retention once more."""
        with self._state:
            self._closing = True
            thread = self._thread if self._thread_pid == os.getpid() else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with contextlib.suppress(Exception):
            self.run(compress=False)
        self._lock.close()
        with self._state:
            self._closing = False

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
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self._janitor_path, flags | os.O_EXCL, 0o600 if self._chmod else 0o644)
        except FileExistsError:
            try:
                return os.open(self._janitor_path, flags & ~os.O_CREAT)
            except OSError as exc:
                self._warn_once("janitor-lock", f"cannot open {self._janitor_path!r}: {exc}")
                return -1
        except OSError as exc:
            self._warn_once("janitor-lock", f"cannot create {self._janitor_path!r}: {exc}")
            return -1
        with contextlib.suppress(OSError):
            if self._chmod is not None:
                os.fchmod(fd, self._chmod)
            if self._owner is not None:
                os.fchown(fd, *self._owner)
        return fd

    def _work(self, compress: bool) -> float:
        self._lock.open()
        self._remove_temporaries()
        self._resolve_pairs()
        self._apply_retention()
        if not (compress and self.compression):
            return 0.0
        return self._compress_all()

    # -- listing ---------------------------------------------------------------------------------
    def _variant(self, name: str) -> _Found | None:
        if os.path.lexists(name):
            return _Found(name, "")
        for suffix in COMPRESSED_SUFFIXES:
            if os.path.lexists(name + suffix):
                return _Found(name, suffix)
        return None

    def backups(self) -> list[_Found]:
        """The backups, oldest first."""
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
        found = []
        n = 1
        while (variant := self._variant(self._name_for(f"{self.path}.{n}"))) is not None:
            found.append(variant)
            n += 1
        return found[::-1]

    # -- clean-up of what a crash left -----------------------------------------------------------
    def _remove_temporaries(self) -> None:
        """Temporary files of a janitor that died: only the lock holder makes them."""
        prefix = "." + self.base + _TEMP_MARK
        for entry in os.listdir(self.directory or "."):
            if entry.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, entry))

    def _resolve_pairs(self) -> None:
        """A backup both plain and compressed: the compressed one is whole (it was renamed into
        place complete), so the plain one is removed — under the rotation lock."""
        if self.compression is None:
            return
        pairs = [b.name for b in self.backups() if not b.suffix and self._has_compressed(b)]
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
        for found in self.backups():
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
        with self._locked() as held:
            if not held:
                return
            for doomed in self._doomed():
                _step("retention:remove")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(doomed.name)

    # -- compression -----------------------------------------------------------------------------
    def _compress_all(self) -> float:
        """Compress every plain backup old enough; return seconds until the next one is."""
        compression = self.compression
        assert compression is not None
        wait = 0.0
        for found in self.backups():
            with self._state:
                if self._closing:
                    return 0.0
            if found.suffix:
                continue
            try:
                st = os.stat(found.name)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in self._failed:
                continue
            age = self._clock() - st.st_mtime
            if age < compression.grace:
                left = compression.grace - age
                wait = left if not wait else min(wait, left)
                continue
            self._compress_one(found.name, compression)
        return wait

    def _compress_one(self, name: str, compression: Compression) -> None:
        try:
            source = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return
        temp = ""
        try:
            st = os.fstat(source)
            temp = os.path.join(
                self.directory, f".{self.base}{_TEMP_MARK}{st.st_ino}{compression.suffix}"
            )
            out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, st.st_mode & 0o7777)
            try:
                with contextlib.suppress(OSError):
                    if self._owner is not None:
                        os.fchown(out, *self._owner)
                _step("compress:writing")
                read = compress_fd(source, out, compression)
                os.fsync(out)
            finally:
                os.close(out)
            _step("compress:written")
            with self._locked() as held:
                if not held:
                    return
                now = os.fstat(source)
                if now.st_size != read or now.st_nlink == 0:
                    return  # written to or removed meanwhile: the next pass tries again
                current = self._find(name, st)
                if current is None or self._variant(current) != _Found(current, ""):
                    return
                os.rename(temp, current + compression.suffix)
                temp = ""
                _step("compress:published")
                os.remove(current)
        except Exception as exc:
            self._failed.add((st.st_dev, st.st_ino))
            self._warn_once(
                f"compress-{type(exc).__name__}",
                f"could not compress {name!r} ({compression.kind}): {exc}. The backup is kept "
                "uncompressed; later failures of this kind are not reported again",
            )
        finally:
            os.close(source)
            if temp:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp)

    def _find(self, name: str, st: os.stat_result) -> str | None:
        """Where the backup once called ``name`` is now (a size rotation renumbers backups)."""

        def same(path: str) -> bool:
            try:
                here = os.lstat(path)
            except FileNotFoundError:
                return False
            return (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)

        if same(name):
            return name
        if self._schedule is not None:
            return None
        for found in self.backups():
            if not found.suffix and same(found.name):
                return found.name
        return None

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        if self._warn is not None:
            with contextlib.suppress(Exception):
                self._warn(message)
