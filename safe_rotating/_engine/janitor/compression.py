"""Compression of the backups nobody writes to any more, and the clean-up of what a crash left.

Each plain backup older than ``Compression.grace`` is opened without following a link and
checked to be the regular file its name holds before a byte is read; the compressed copy is
written to a private temporary file (0600, a random name) and published — its final mode and
owner, its name, the plain file removed — only under the rotation lock, once the backup is
checked again.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from safe_rotating._common import osfiles as _safefs
from safe_rotating._engine.compress import Compression, compress_fd
from safe_rotating._engine.janitor.context import JobContext
from safe_rotating._engine.janitor.listing import Found, Listing
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.janitor.steps import step
from safe_rotating._engine.schedule import COMPRESSED_SUFFIXES
from safe_rotating.exceptions import UnsafeFileError

__all__ = ["Compressor"]

_TEMP_MARK = ".compressing."


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


class Compressor:
    """Compresses the backups ``listing`` finds (``compression``: ``None`` for none)."""

    def __init__(
        self,
        context: JobContext,
        compression: Compression | None,
        listing: Listing,
        staged: StagedSet | None,
        *,
        chmod: int | None,
        owner: tuple[int, int] | None,
        clock: Callable[[], float],
        closing: Callable[[], bool],
    ) -> None:
        self._context = context
        self._compression = compression
        self._listing = listing
        self._staged = staged
        self._chmod = chmod
        self._owner = owner
        self._clock = clock
        self._closing = closing  # True once the janitor closes: stop between two backups
        self._failed: set[tuple[int, int]] = set()

    # -- clean-up of what a crash left -----------------------------------------------------------
    def remove_temporaries(self) -> None:
        """Temporary files of a janitor that died: only the lock holder makes them.

        ``.<base>.compressing.<hex><suffix>`` (older releases used the inode number, digits
        only). Removing a name never follows a link; anything else planted under such a name
        (a directory) is left alone rather than stopping the pass."""
        directory = self._context.directory
        prefix = "." + self._context.base + _TEMP_MARK
        for entry in os.listdir(directory or "."):
            if entry.startswith(prefix) and _is_temporary(entry[len(prefix) :]):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, entry))

    def resolve_pairs(self, listed: list[Found]) -> None:
        """A backup both plain and compressed: the compressed one is whole (it was renamed into
        place complete), so the plain one is removed — under the rotation lock."""
        if self._compression is None:
            return
        pairs = [b.name for b in listed if not b.suffix and self._has_compressed(b)]
        if not pairs:
            return
        with self._context.locked() as held:
            if not held:
                return
            for name in pairs:
                if self._has_compressed(Found(name, "")) and os.path.lexists(name):
                    step("resolve:remove-plain")
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(name)

    def _has_compressed(self, backup: Found) -> bool:
        return any(os.path.lexists(backup.name + s) for s in COMPRESSED_SUFFIXES)

    # -- compression -----------------------------------------------------------------------------
    def compress_all(self, listed: list[Found]) -> float:
        """Compress every plain backup of ``listed`` old enough; return seconds until the next
        one is. Moves the listing's ``settled`` past the oldest run of backups that are done."""
        compression = self._compression
        assert compression is not None
        wait = 0.0
        settling = True  # every backup looked at so far is done
        for found in listed:
            if self._closing():
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
                self._listing.settled = max(self._listing.settled, found.ident)
        return wait

    def _compress_one(self, found: Found, compression: Compression) -> bool:
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
                self._context.directory or ".",
                f".{self._context.base}{_TEMP_MARK}",
                compression.suffix,
            )
            try:
                step("compress:writing")
                read = compress_fd(source, out, compression)
                os.fsync(out)
                step("compress:written")
                with self._context.locked() as held:
                    if not held:
                        return False
                    now = os.fstat(source)
                    if now.st_size != read or now.st_nlink == 0:
                        return False  # written to or removed meanwhile: the next pass tries again
                    current = self._find(found, st)
                    if current is None or self._listing.variant(current) != Found(current, ""):
                        return False
                    self._finish(out, st)
                    os.rename(temp, current + compression.suffix)
                    temp = ""
                    step("compress:published")
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
        self._context.warn_once(
            f"compress-{type(exc).__name__}",
            f"could not compress {name!r} ({compression.kind}): {exc}. The backup is kept "
            "uncompressed; later failures of this kind are not reported again",
        )
        return True

    def _find(self, found: Found, st: os.stat_result) -> str | None:
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
        state = self._staged.load(self._context.lock)
        slot = state.slot(found.rank + state.hi - found.hi)
        if slot is None:
            return None
        name = self._staged.name(slot)
        return name if same(name) else None
