"""The file at the log path as this process holds it, and following the other writers.

:class:`CurrentFile` keeps the descriptor, writes whole records into it (one ``write`` each) and
keeps their bytes until the next check (:meth:`CurrentFile.follow`). At most once a millisecond
(:data:`CHECK_EVERY`), and always after an idle spell, the check reads the shared rotation
generation from the sidecar (one ``pread``) and reopens the path if another process rotated. If
the file the kept records went to has since been rotated away *and removed* (``st_nlink == 0``:
``backupCount`` rotations within a millisecond, or a writer stalled across them), they are kept in
:attr:`CurrentFile.rewrite`, to be written again into the current file.

Once a second (:data:`AUDIT_EVERY`) the check also makes sure the paths still name the files we
hold open, so a log or lock file deleted or replaced under us is followed, not written into
forever. A path that holds something we refuse (:mod:`safe_rotating._engine.opener`) is not
followed: records keep going to the file we had open while it still has a name (it was rotated
or moved away), else they are counted and reported as lost; a new file is opened as soon as the
path is clear.
"""

from __future__ import annotations

import os
import time

from safe_rotating._common.forksafe import ForkRegistry
from safe_rotating._common.oserror import explain as _explain
from safe_rotating._engine.compress import Compression
from safe_rotating._engine.counters import Counters
from safe_rotating._engine.lock import SidecarLock, path_names
from safe_rotating._engine.notices import Refusals, Warnings
from safe_rotating._engine.opener import PathOpener
from safe_rotating._engine.plan import SizePolicy
from safe_rotating._engine.shared import SharedSchedule, register_settings
from safe_rotating._engine.upkeep import Upkeep
from safe_rotating.exceptions import UnsafeFileError

__all__ = ["AUDIT_EVERY", "CHECK_EVERY", "CurrentFile"]

# Seconds between two looks at the shared generation (one pread): a rotation done by another
# process is followed within this long, and a record after an idle spell always looks first.
CHECK_EVERY = 0.001
AUDIT_EVERY = 1.0  # seconds between checks that the paths still name the files we hold open
# A file found ending inside a line is looked at again after this long before it is taken for
# the tail a killed process left (rather than another process's write under way).
_TAIL_SETTLE = 0.002
_monotonic = time.monotonic

# Files open in this process. The at-fork hook is the fast path only: every use of the lock
# compares the pid, because a fork done in C (uWSGI, embedding hosts) never runs the hook.
_LIVE: ForkRegistry[CurrentFile] = ForkRegistry(lambda current: current.after_fork_in_child())


class CurrentFile:
    """The descriptor on the file at ``path``, what was written into it since the last check,
    and the generation it was opened at. ``newline`` starts a new line after a record cut short.

    ``shared``: a time-rotated file's shared schedule, read again at every open.
    """

    def __init__(
        self,
        path: str,
        lock: SidecarLock,
        opener: PathOpener,
        *,
        newline: bytes,
        policy: SizePolicy,
        backup_count: int,
        compression: Compression | None,
        shared: SharedSchedule | None,
        upkeep: Upkeep,
        counters: Counters,
        refusals: Refusals,
        warnings: Warnings,
    ) -> None:
        self.path = path
        self.lock = lock
        self._opener = opener
        self._newline = newline
        self._policy = policy
        self._backup_count = backup_count
        self._compression = compression
        self._shared = shared
        self._upkeep = upkeep
        self._counters = counters
        self._refusals = refusals
        self._warnings = warnings
        self.fd = -1
        self.gen = b""
        self.end = 0
        self.next_check = 0.0
        self._next_audit = 0.0
        self.unconfirmed: list[bytes] = []  # written since the last check, see follow()
        self.rewrite = b""  # of those, the ones whose file was removed: to write again
        self.last_write = 0.0  # monotonic time of our last write
        self.registered_pid = 0
        self._torn = False  # the last record was cut short: the next one starts a new line
        self.glue = False  # the open file ends inside a line another process left cut short
        self.own_end = -1  # where our last batch ended the open file (-1: unknown)

    def open(self, own: bool = False) -> None:
        """Open the path as it is now; remember the generation read *before* opening.

        ``own``: after this process's own rotation (else a new generation is another's)."""
        lock = self.lock
        lock.open()  # a no-op unless closed, or inherited through a fork of any kind
        if self.registered_pid != os.getpid():
            self.registered_pid = os.getpid()
            register_settings(
                lock,
                self.path,
                self._policy,
                self._backup_count,
                None if self._shared is None else self._shared.schedule,
                self._warnings,
            )
            self._upkeep.rotated = self._upkeep.janitor.needed  # catch up on work left by others
        generation = lock.read_generation()
        if len(generation) != 8 and lock.validate():
            self._warnings.once(
                "repaired",
                f"the rotation lock file {lock.path!r} was truncated or replaced while in use; "
                "its table was re-created. Exclude '.*.lock' files from clean-up jobs",
            )
            generation = lock.read_generation()
        if self._shared is not None:
            self._shared.load()
        try:
            fd = self._opener.open(self.fd)
        except UnsafeFileError as exc:
            self._refuse(exc)  # raises unless we keep writing to the file we have
            return
        self._refusals.refusal = None
        old, self.fd = self.fd, fd
        self.glue = False
        self.own_end = -1
        if old >= 0 and generation != self.gen and not own:
            self._counters.rotations_seen += 1
        previous, self.gen = self.gen, generation
        try:
            if old >= 0 and self.unconfirmed and self._lost(os.fstat(old), previous, generation):
                # Records written since the last check went into a file that has since been
                # rotated away and removed (or deleted by hand): they are written again, in
                # order, ahead of the next record — through the size check, so that several
                # processes doing this at once cannot push the new file past the limit.
                self.rewrite += b"".join(self.unconfirmed)
        finally:
            self.unconfirmed.clear()
            self.end = os.fstat(fd).st_size
            if old >= 0:
                os.close(old)
        _LIVE.add(self)  # again after a close(): a reopened handler must stay fork-safe
        if self._upkeep.rotated and not lock.held:
            self._upkeep.wake()

    def _lost(self, old: os.stat_result, previous: bytes, generation: bytes) -> bool:
        """Were the records written since the last check into ``old``, a file now removed,
        lost — rather than kept in its compressed copy, or deleted by retention with it?

        * Removed by hand (fewer rotations since our last look than ``backupCount``): written
          again.
        * Removed by retention: records written before that went with their file, oldest first,
          as retention means. Only a record written *after* the removal (a writer held up
          between its look and its write while the set rotated past it) is lost; then the file
          was written after its last rename or unlink, which its times tell (``mtime`` not
          older than ``ctime``; equal counts as after).
        * Compressed: a backup is compressed once nobody wrote to it for ``grace`` seconds, and
          records written less than half of that ago cannot be in the compressed copy.
        """
        if old.st_nlink:
            return False
        if self._compression is not None and (
            _monotonic() - self.last_write >= self._compression.grace / 2
        ):
            return False
        if len(generation) == 8 and len(previous) == 8:
            rotations = int.from_bytes(generation, "little") - int.from_bytes(previous, "little")
            if rotations % (1 << 64) > max(self._backup_count, 1):
                return old.st_mtime_ns >= old.st_ctime_ns
        return True

    def is_current(self) -> bool:
        """Is our descriptor the file at the path? (Only meaningful under the lock.)"""
        if self.gen != self.lock.read_generation():
            return False
        return path_names(self.path, self.fd)

    def follow(self, now: float) -> None:
        """Follow a rotation done by another process; runs at most every :data:`CHECK_EVERY`.

        When nothing changed, the records written since the last check are known to be in the
        current file and are forgotten; otherwise :meth:`open` finds out where they went.
        """
        self.next_check = now + CHECK_EVERY
        if now >= self._next_audit:
            self._audit(now)
        if self.lock.read_generation() != self.gen:
            self.open()
        else:
            self.unconfirmed.clear()

    def _audit(self, now: float) -> None:
        """Do the paths still name the files we hold? Follow a deleted or replaced file."""
        self._next_audit = now + AUDIT_EVERY
        if not self.lock.names_its_file():
            self.lock.reopen()  # keeps ours if the path holds something it refuses
            self.open()
        elif not path_names(self.path, self.fd):
            self.open()
        if self.lock.refusal is not None:
            self._refusals.unsafe = True

    def write(self, data: bytes, now: float | None = None, ask_end: bool = True) -> int:
        """Write ``data`` (whole records) with one ``write``, keep it until the next check, and
        return where the file now ends. ``now``: the monotonic time, if the caller has it.
        ``ask_end`` False: the end is counted, not asked for (``lseek``): a lower bound, enough
        to rotate a file we filled ourselves."""
        fd = self.fd
        self._write_all(fd, data)
        self.unconfirmed.append(data)
        self.last_write = _monotonic() if now is None else now
        if ask_end:
            try:
                end = os.lseek(fd, 0, os.SEEK_CUR)
            except OSError:  # a pipe or a terminal (``/dev/stdout``) has no position
                end = self.end + len(data)
        else:
            end = self.end + len(data)
        self.end = end
        return end

    def _write_all(self, fd: int, data: bytes) -> None:
        if self._torn or self.glue:  # a line was cut short (by us, or by a killed process)
            data = self._newline + data
            self.glue = False
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise _explain(exc, "write to", self.path) from None
        if written == len(data):
            self._torn = False
            return
        # Only on a nearly full disk: the kernel took part of the record.
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as exc:
            self._torn = True
            try:  # end the torn line now if a byte still fits
                if os.write(fd, self._newline) == len(self._newline):
                    self._torn = False
            except OSError:
                pass
            failure = _explain(exc, "write to", self.path)
            raise type(failure)(
                failure.errno,
                f"{failure.strerror}. A record was cut short: {written} of {len(data)} bytes "
                "were written; the rest is lost and the next record starts on a new line",
            ) from None
        self._torn = False

    def ends_a_line(self) -> bool:
        """Does the file end with a newline? A process killed (SIGKILL) in the middle of a
        large write leaves the part written so far, which can end inside a record; the next
        batch then starts on a new line, so no record of ours is glued to that tail. One
        ``pread`` per batch (a single record's ``write`` is not cut this way: see
        docs/guarantees.md)."""
        newline = self._newline
        try:
            tail = os.pread(self.fd, len(newline), self.end - len(newline))
            if not tail or tail == newline:
                return True
            # Or another process's large write is under way (the size grows page by page, and
            # its write ends with a whole record): a cut tail stays as it is. Look again.
            time.sleep(_TAIL_SETTLE)
            if os.fstat(self.fd).st_size != self.end:
                return True
        except OSError:
            return True
        self._warnings.once(
            "partial-line",
            f"{self.path!r} ended in the middle of a line, most likely left by a process killed "
            "while writing a batch: the part it had written is kept, and the next records start "
            "on a new line",
        )
        return False

    def _refuse(self, exc: UnsafeFileError) -> None:
        """The path holds something we refuse. Keep writing to the file we have if it still
        has a name (rotated or moved away: nothing is lost, it is in the backups or beside
        them), reporting the episode once; else there is nothing to write to: raise, and the
        caller counts and reports the records as lost."""
        old = self.fd
        try:
            named = old >= 0 and os.fstat(old).st_nlink > 0
        except OSError:
            named = False
        if not named:
            if old >= 0:
                self.fd = -1  # the next record looks at the path again, and so on
                os.close(old)
            # Written since the last check into the file now removed: again, once we can.
            self.rewrite += b"".join(self.unconfirmed)
            self.unconfirmed.clear()
            raise UnsafeFileError(
                exc.errno, f"{exc.strerror}. Until then records cannot be written"
            ) from exc
        self.unconfirmed.clear()  # they are in the file we keep, which has a name
        self._refusals.keep_writing(exc)

    def close(self) -> bool:
        """Close the file and the lock; was the file open? Idempotent."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        self.lock.close()
        _LIVE.discard(self)
        return fd >= 0

    def after_fork_in_child(self) -> None:
        # The log descriptor may stay shared (O_APPEND writes are atomic); the lock may not.
        self.lock.reopen_after_fork()
        self._counters.reset()
        self.rewrite = b""  # the parent's records: the parent writes them again if need be
        self.glue = False

    def forget_parent(self) -> None:
        """In a forked child: the records written since the last check are the parent's to
        write again if need be, not this process's; counters start from zero. New objects
        only: a thread of the parent may have been changing the old ones at the fork."""
        self.unconfirmed = []
        self.rewrite = b""
        self.glue = False
        self.next_check = 0.0
        self._counters.reset()
