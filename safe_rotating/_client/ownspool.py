"""The spool of one live client id, owned by this process: segments appended to in order,
released batch by batch as the server acknowledges them, the lock held until :meth:`OwnSpool.close`.
The layout of a spool directory, its locks and dead spools are in :mod:`.spool`."""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass

from safe_rotating._client import spool as _spool
from safe_rotating._common import osfiles as _safefs

__all__ = ["OwnSpool"]


@dataclass
class _Segment:
    fd: int
    size: int = 0
    live: int = 0  # batches in this segment not acknowledged yet


class OwnSpool:
    """The spool of one live client id, owned by this process (the lock is held until
    :meth:`close`). Not thread-safe: the sender serialises its callers."""

    def __init__(
        self, directory: str, client: str, max_bytes: int, identity: _spool.Identity | None = None
    ) -> None:
        self.directory = directory
        self.identity = identity
        self.client = client
        self.max_bytes = max_bytes
        # Several segments, so a long outage followed by a slow catch-up frees space as it goes.
        self.segment_bytes = max(64 * 1024, min(32 * 1024 * 1024, max_bytes // 4))
        self.lock_fd = -1
        self.segments: dict[int, _Segment] = {}
        self.current = 0  # number of the segment being appended to; 0 before the first
        self.total = 0  # bytes in live segments

    @property
    def lock_path(self) -> str:
        return os.path.join(self.directory, f"{self.client}.lock")

    def path_of(self, number: int) -> str:
        return os.path.join(self.directory, _spool.segment_name(self.client, number))

    def fits(self, sizes: list[int]) -> int:
        """How many of frames of these ``sizes`` (a prefix) the bound still has room for."""
        room = self.max_bytes - self.total
        for count, size in enumerate(sizes):
            room -= size
            if room < 0:
                return count
        return len(sizes)

    def append(self, frames: list[bytes]) -> list[tuple[int, int]]:
        """Store ``frames`` in order, with one ``write`` per segment they go to; return the
        ``(segment, offset)`` of each. Raises ``OSError`` (then nothing of the failed write is
        kept: a torn tail is cut off so the segment stays readable)."""
        if self.lock_fd < 0:
            self.lock_fd = _spool.create_locked(self.lock_path, self.identity)
        placed: list[tuple[int, int]] = []
        start = 0
        while start < len(frames):
            segment = self.segments.get(self.current)
            if segment is None or (
                segment.size and segment.size + len(frames[start]) > self.segment_bytes
            ):
                self.current += 1
                fd, _ = _safefs.open_or_create(
                    self.path_of(self.current), _spool.OPEN_FLAGS, mode=0o600, role="a spool file"
                )
                segment = self.segments[self.current] = _Segment(fd)
            end = start
            size = segment.size
            while end < len(frames) and (
                end == start or size + len(frames[end]) <= self.segment_bytes
            ):
                size += len(frames[end])
                end += 1
            group = frames[start:end]
            data = group[0] if len(group) == 1 else b"".join(group)
            offset = segment.size
            written = os.write(segment.fd, data)
            if written != len(data):
                # Only on a nearly full disk. Cut the torn frame off so the segment stays readable.
                with contextlib.suppress(OSError):
                    os.ftruncate(segment.fd, offset)
                raise OSError(
                    errno.ENOSPC, f"the spool file {self.path_of(self.current)!r} is full"
                )
            for frame in group:
                placed.append((self.current, offset))
                offset += len(frame)
            segment.size += len(data)
            segment.live += len(group)
            self.total += len(data)
            start = end
        return placed

    def read(self, number: int, offset: int, length: int) -> bytes:
        data = os.pread(self.segments[number].fd, length, offset)
        if len(data) != length:
            raise OSError(errno.EIO, f"the spool file {self.path_of(number)!r} was cut short")
        return data

    def release(self, number: int) -> None:
        """One batch of segment ``number`` was acknowledged; delete segments nobody needs."""
        segment = self.segments.get(number)
        if segment is None:
            return
        segment.live -= 1
        if segment.live <= 0:
            self._delete(number)

    def _delete(self, number: int) -> None:
        segment = self.segments.pop(number)
        self.total -= segment.size
        with contextlib.suppress(OSError):
            os.unlink(self.path_of(number))
        os.close(segment.fd)

    def close(self) -> None:
        """Close everything. Segments still holding batches stay on disk for the next client
        (the lock is released, so they are a dead spool from now on); with none left, the lock
        file is removed too."""
        for number in [n for n, s in self.segments.items() if s.live <= 0]:
            self._delete(number)
        for segment in self.segments.values():
            os.close(segment.fd)
        remaining = bool(self.segments)
        self.segments.clear()
        if self.lock_fd >= 0:
            if not remaining:
                with contextlib.suppress(OSError):
                    os.unlink(self.lock_path)
            os.close(self.lock_fd)
            self.lock_fd = -1

    def abandon(self) -> None:
        """In a forked child: close the inherited descriptions (so the parent's lock is freed
        when the parent dies) without touching the parent's files."""
        for segment in self.segments.values():
            _spool.close_quietly(segment.fd)
        self.segments.clear()
        if self.lock_fd >= 0:
            _spool.close_quietly(self.lock_fd)
            self.lock_fd = -1
