"""The client's spool: batches kept on local disk while the log server does not take them.

Layout of a spool directory (one per server address, inside the configured ``spool_dir``)::

    <client>.lock            held with flock(LOCK_EX) by the process that owns <client>
    <client>.000001.spool    segments: frames, each a whole batch message, appended in order
    <client>.000002.spool

``<client>`` is the 32-hex-digit client id of one sequence space (see docs/protocol.md). Each
segment holds complete frames — a 4-byte big-endian length and a native ``batch`` message that
also carries its ``client`` id — each appended with one ``write``, so a frame can be sent to the
server exactly as it was stored. A segment is deleted once every batch in it is acknowledged;
the lock file goes with the last segment when its owner closes.

The lock file is created already locked (created under a temporary name, locked, then linked
into place), so a lock file that exists is either held by a live owner or free because its owner
died. A free lock marks a *dead* spool: the next client on the directory claims it by taking the
lock, replays its frames under the dead client's id, and removes it.

The spool is in the page cache like any written file: it survives the death of the process
(SIGKILL), not a crash of the machine.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import _wire

__all__ = ["DeadSpool", "OwnSpool", "claim_dead", "default_spool_root", "prepare_directory"]

_LENGTH = struct.Struct(">I")
_SEGMENT = re.compile(r"^([0-9a-f]{32})\.(\d{6,})\.spool$")
_LOCK = re.compile(r"^([0-9a-f]{32})\.lock$")
_TEMP = re.compile(r"^[0-9a-f]{32}\.lock\.\d+\.[0-9a-f]+\.tmp$")
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_STALE_TEMP = 60.0  # seconds after which a temporary lock file left by a crash is removed


def default_spool_root() -> str:
    """A directory private to this user: ``$XDG_RUNTIME_DIR/safe_rotating`` if that runtime
    directory exists and is ours, else ``/tmp/safe_rotating-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            st = os.stat(runtime)
        except OSError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                return os.path.join(runtime, "safe_rotating")
    return os.path.join("/tmp", f"safe_rotating-{os.geteuid()}")


def address_key(address: str) -> str:
    """The name of an address's spool directory: readable, and one per address."""
    if address.startswith("unix:"):
        path = address[5:]
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(path))[:40] or "socket"
        return f"unix-{base}-{digest}"
    return "tcp-" + re.sub(r"[^A-Za-z0-9._-]", "_", address.replace(":", "-"))


def _check_private(path: str, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(
            errno.ENOTDIR, f"the spool directory {path!r} exists and is not a directory"
        )
    if st.st_uid != os.geteuid():
        raise PermissionError(
            errno.EPERM,
            f"the spool directory {path!r} belongs to uid {st.st_uid}, not to this process "
            f"(uid {os.geteuid()}); set spool_dir to a directory of this user",
        )
    if st.st_mode & 0o022:
        raise PermissionError(
            errno.EPERM,
            f"the spool directory {path!r} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); make it 0700 or set spool_dir elsewhere",
        )


def prepare_directory(root: str, key: str, private_root: bool) -> str:
    """Create ``root/key`` (mode 0700) if needed and return it.

    ``private_root``: ``root`` is the shared default under ``/tmp``, so it must be a real
    directory owned by this user and writable by nobody else (not a planted symlink).
    """
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot create the spool directory {root!r}: {exc.strerror}"
        ) from None
    if private_root:
        _check_private(root, os.lstat(root))
    path = os.path.join(root, key)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot create the spool directory {path!r}: {exc.strerror}"
        ) from None
    _check_private(path, os.lstat(path))
    return path


def _create_locked(path: str) -> int:
    """A new lock file at ``path``, already locked by us; ``FileExistsError`` if one exists."""
    temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        os.link(temp, path)
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return fd


def _segment_name(client: str, number: int) -> str:
    return f"{client}.{number:06d}.spool"


@dataclass
class _Segment:
    fd: int
    size: int = 0
    live: int = 0  # batches in this segment not acknowledged yet


class OwnSpool:
    """The spool of one live client id, owned by this process (the lock is held until
    :meth:`close`). Not thread-safe: the sender serialises its callers."""

    def __init__(self, directory: str, client: str, max_bytes: int) -> None:
        self.directory = directory
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
        return os.path.join(self.directory, _segment_name(self.client, number))

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
            self.lock_fd = _create_locked(self.lock_path)
        placed: list[tuple[int, int]] = []
        start = 0
        while start < len(frames):
            segment = self.segments.get(self.current)
            if segment is None or (
                segment.size and segment.size + len(frames[start]) > self.segment_bytes
            ):
                self.current += 1
                fd = os.open(self.path_of(self.current), _OPEN_FLAGS, 0o600)
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
            _close_quietly(segment.fd)
        self.segments.clear()
        if self.lock_fd >= 0:
            _close_quietly(self.lock_fd)
            self.lock_fd = -1


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# -- dead spools ---------------------------------------------------------------------------------
@dataclass
class DeadSpool:
    """The spool of a client whose process died, claimed by this process (its lock is held)."""

    directory: str
    client: str
    lock_fd: int
    segments: list[str] = field(default_factory=list)
    bad_frames: int = 0  # frames that could not be read (torn by a crash, foreign, damaged)

    def frames(self) -> Iterator[tuple[int, int, bytes]]:
        """``(seq, records, frame)`` of every readable batch, in order."""
        for name in self.segments:
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            view = memoryview(data)
            offset = 0
            while offset + 4 <= len(data):
                (size,) = _LENGTH.unpack_from(data, offset)
                end = offset + 4 + size
                if size == 0 or end > len(data):
                    self.bad_frames += 1  # a torn tail: the process died inside a write
                    break
                parsed = self._parse(view[offset + 4 : end])
                if parsed is None:
                    self.bad_frames += 1
                else:
                    yield parsed[0], parsed[1], bytes(view[offset:end])
                offset = end

    def _parse(self, payload: memoryview) -> tuple[int, int] | None:
        try:
            message = _wire.decode(bytes(payload))
        except ValueError:
            return None
        seq = message.get("seq")
        records = message.get("records")
        if (
            message.get("type") != "batch"
            or message.get("client") != self.client
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or seq < 1
            or not isinstance(records, list)
        ):
            return None
        return seq, len(records)

    def remove(self) -> None:
        """Every batch was delivered: delete the segments, then the lock file, then unlock."""
        for name in self.segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, name))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, f"{self.client}.lock"))
        self.release()

    def release(self) -> None:
        if self.lock_fd >= 0:
            _close_quietly(self.lock_fd)
            self.lock_fd = -1


def _clean_temp(directory: str, name: str) -> None:
    """Remove a temporary lock file that a process left when it died while creating it."""
    path = os.path.join(directory, name)
    try:
        if time.time() - os.stat(path).st_mtime < _STALE_TEMP:
            return
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_unlocked(directory: str, client: str, frame: bytes, segment_bytes: int) -> bool:
    """Append ``frame`` to the spool of ``client`` holding its lock only meanwhile, so that the
    spool is free for any other client to deliver as soon as this returns.

    For a process that must not run a sender thread (a uWSGI master, whose workers are forked
    from C). False if another process holds the lock (it is delivering this spool right now):
    the caller continues under a new client id. Raises ``OSError``.
    """
    lock_path = os.path.join(directory, f"{client}.lock")
    fd = _lock_existing(lock_path)
    if fd is None:
        try:
            fd = _create_locked(lock_path)
        except FileExistsError:
            return False
    try:
        numbers = [
            int(m.group(2))
            for name in os.listdir(directory)
            if (m := _SEGMENT.match(name)) is not None and m.group(1) == client
        ]
        number = max(numbers, default=1)
        path = os.path.join(directory, _segment_name(client, number))
        try:
            if os.stat(path).st_size + len(frame) > segment_bytes:
                path = os.path.join(directory, _segment_name(client, number + 1))
        except FileNotFoundError:
            pass
        segment = os.open(path, _OPEN_FLAGS, 0o600)
        try:
            if os.write(segment, frame) != len(frame):
                raise OSError(errno.ENOSPC, f"the spool file {path!r} is full")
        finally:
            os.close(segment)
    finally:
        os.close(fd)
    return True


def claim_dead(directory: str, skip: set[str]) -> Iterator[DeadSpool]:
    """Claim, one after the other, the spools in ``directory`` whose owner is gone.

    ``skip`` holds client ids to leave alone (this process's own). A spool is claimed by taking
    its lock without waiting; one held by a live process, or claimed by another client first,
    is passed over. The caller must ``remove()`` or ``release()`` each one.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    segments: dict[str, list[str]] = {}
    locks: set[str] = set()
    for name in names:
        match = _SEGMENT.match(name)
        if match:
            segments.setdefault(match.group(1), []).append(name)
            continue
        match = _LOCK.match(name)
        if match:
            locks.add(match.group(1))
        elif _TEMP.match(name):
            _clean_temp(directory, name)
    for client in sorted((locks | set(segments)) - skip):
        lock_path = os.path.join(directory, f"{client}.lock")
        fd = _lock_existing(lock_path)
        if fd is None and client not in locks:
            try:  # segments whose lock file was removed by hand: take them over
                fd = _create_locked(lock_path)
            except OSError:
                fd = None
        if fd is None:
            continue
        # Read the names again under the lock: the owner may have added segments meanwhile.
        try:
            names = os.listdir(directory)
        except OSError:
            os.close(fd)
            return
        found = sorted(
            (int(m.group(2)), n)
            for n in names
            if (m := _SEGMENT.match(n)) is not None and m.group(1) == client
        )
        yield DeadSpool(directory, client, fd, [n for _, n in found])


def _lock_existing(path: str) -> int | None:
    """Lock the existing lock file ``path`` without waiting; ``None`` if it is held or gone."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        here = os.stat(path)
        mine = os.fstat(fd)
    except OSError:  # held by a live owner, or removed by the previous claimant
        os.close(fd)
        return None
    if (here.st_dev, here.st_ino) != (mine.st_dev, mine.st_ino):
        os.close(fd)
        return None
    return fd
