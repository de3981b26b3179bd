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

**Hostile neighbours.** The default root, ``/tmp/safe_rotating-<uid>``, has a predictable name in
a directory anyone may write: another user can create it first. A root that is not a directory
of ours closed to others is never used; the spool goes to a private directory beside it instead,
``<root>.<16 hex digits>`` (mode 0700, owner checked), with one warning naming it. The next
process finds that directory again by its name pattern (:func:`fallback_roots`), and dead spools
are looked for in every such directory, so nothing is lost to the squatter. Every file in a spool
directory is opened through :mod:`._safefs`: never through a link, regular files only, new ones
created ``O_EXCL`` mode 0600 (temporaries with unpredictable names).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import struct
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from safe_rotating._common import osfiles as _safefs
from safe_rotating._net import rendered as _rendered
from safe_rotating._net import wire as _wire
from safe_rotating.exceptions import SafeRotatingWarning

__all__ = [
    "DeadSpool",
    "Identity",
    "claim_dead",
    "close_quietly",
    "create_locked",
    "default_spool_root",
    "fallback_roots",
    "prepare_directory",
    "segment_name",
    "spool_directories",
]

_LENGTH = struct.Struct(">I")
_SEGMENT = re.compile(r"^([0-9a-f]{32})\.(\d{6,})\.spool$")
_LOCK = re.compile(r"^([0-9a-f]{32})\.lock$")
_TEMP = re.compile(r"^[0-9a-f]{32}\.lock\.\d+\.[0-9a-f]+\.tmp$")
OPEN_FLAGS = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_FALLBACK = re.compile(r"\.[0-9a-f]{16}")  # <root>.<this>: a private root beside a squatted one
_warned: set[str] = set()  # fallback roots this process has warned about
APPENDED: Final = "appended"  # outcomes of append_unlocked
BUSY: Final = "busy"
FULL: Final = "full"
_STALE_TEMP = 60.0  # seconds after which a temporary lock file left by a crash is removed
_IDENTITY_BYTES = 4096  # the most of a lock file read for its identity


@dataclass(frozen=True)
class Identity:
    """The process that logged a spool's records, written into its lock file: whoever delivers
    the spool later (the next process, ``safe-rotating-spools send``) sends it under this host
    and app, so the records show who logged them, not who delivered them."""

    pid: int
    host: str
    app: str
    address: str  # the server address the records were meant for, as configured

    def text(self) -> bytes:
        """The lock file's content: ``pid N`` (what older releases wrote) and a JSON line."""
        fields = {"host": self.host, "app": self.app, "address": self.address}
        line = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
        return f"pid {self.pid}\n{line}\n".encode()

    @classmethod
    def parse(cls, data: bytes) -> Identity | None:
        """The identity in a lock file's ``data``; None if it has none (written by an older
        release, or by a claimant that found the lock file removed)."""
        lines = data.decode("utf-8", "replace").splitlines()
        if len(lines) < 2 or not lines[0].startswith("pid "):
            return None
        try:
            pid = int(lines[0][4:])
            fields = json.loads(lines[1])
        except ValueError:
            return None
        if not isinstance(fields, dict):
            return None
        host, app, address = (fields.get(k) for k in ("host", "app", "address"))
        if not all(isinstance(v, str) and v for v in (host, app, address)):
            return None
        return cls(pid, str(host), str(app), str(address))


def read_identity(fd: int) -> Identity | None:
    """The identity written in the lock file open at ``fd``."""
    try:
        return Identity.parse(os.pread(fd, _IDENTITY_BYTES, 0))
    except OSError:
        return None


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

    ``private_root``: ``root`` is the default under ``/tmp`` (or ``$XDG_RUNTIME_DIR``), so it must
    be a real directory owned by this user and writable by nobody else; one that is not (a
    squatter's directory, a planted link) is left alone and a private directory beside it is used
    instead (see the module docstring).
    """
    if private_root:
        root = _private_root(root)
    else:
        _make_directories(root)
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


def _make_directories(root: str) -> None:
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot create the spool directory {root!r}: {exc.strerror}"
        ) from None


def _is_private(path: str) -> bool:
    try:
        _check_private(path, os.lstat(path))
    except OSError:
        return False
    return True


def _private_root(root: str) -> str:
    """``root`` if it is (or can be made) ours alone, else a private directory beside it."""
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling link: squatted
    except OSError as exc:
        if not os.path.lexists(root):
            raise type(exc)(
                exc.errno, f"cannot create the spool directory {root!r}: {exc.strerror}"
            ) from None
    try:
        _check_private(root, os.lstat(root))
    except OSError as exc:
        why = exc.strerror or str(exc)
    else:
        return root
    found = fallback_roots(root)
    if found:
        chosen = found[0]
    else:
        created = f"{root}.{secrets.token_hex(8)}"
        os.mkdir(created, 0o700)
        _check_private(created, os.lstat(created))
        # Another process may have made one at the same moment: all take the first by name.
        chosen = fallback_roots(root)[0]
        if chosen != created:
            with contextlib.suppress(OSError):
                os.rmdir(created)
    if chosen not in _warned:
        _warned.add(chosen)
        _warn(
            f"the default spool directory cannot be used: {why}. Another user may have created "
            f"it to stop this user's spool; spooling in {chosen!r} instead (private, mode 0700). "
            "Remove the squatted directory, or set spool_dir to a directory of this user"
        )
    return chosen


def fallback_roots(root: str) -> list[str]:
    """The private directories made beside a squatted default ``root`` (``<root>.<16 hex>``,
    owned by this user, closed to others), sorted by name: the first is the one to use."""
    parent, base = os.path.split(root)
    try:
        names = os.listdir(parent or ".")
    except OSError:
        return []
    return sorted(
        os.path.join(parent, name)
        for name in names
        if name.startswith(base)
        and _FALLBACK.fullmatch(name[len(base) :])
        and _is_private(os.path.join(parent, name))
    )


def spool_directories(root: str, key: str, private_root: bool) -> list[str]:
    """Every spool directory of the address ``key`` under ``root`` and, for the default root,
    under the private directories beside it: where spools of dead processes may be."""
    roots = [root, *fallback_roots(root)] if private_root else [root]
    return [
        os.path.join(r, key)
        for r in roots
        if _is_private(os.path.join(r, key)) and (not private_root or _is_private(r))
    ]


def _warn(message: str) -> None:
    """A warning that can never break logging (``-W error`` would otherwise raise here)."""
    try:
        warnings.warn(message, SafeRotatingWarning, stacklevel=2)
    except Exception:
        sys.stderr.write(f"safe_rotating: {message}\n")


def create_locked(path: str, identity: Identity | None) -> int:
    """A new lock file at ``path``, already locked by us; ``FileExistsError`` if one exists.
    It holds ``identity`` (else only this pid: a claimant does not know who logged)."""
    directory, name = os.path.split(path)
    fd, temp = _safefs.create_temporary(directory, f"{name}.{os.getpid()}.", ".tmp")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, identity.text() if identity else f"pid {os.getpid()}\n".encode())
        os.link(temp, path, follow_symlinks=False)
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return fd


def segment_name(client: str, number: int) -> str:
    return f"{client}.{number:06d}.spool"


def close_quietly(fd: int) -> None:
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

    def identity(self) -> Identity | None:
        """Who logged these records (from the lock file), if it says."""
        return read_identity(self.lock_fd)

    def frames(self) -> Iterator[tuple[int, int, bytes]]:
        """``(seq, records, frame)`` of every readable batch, in order."""
        for name in self.segments:
            try:
                fd, _ = _safefs.open_to_read(os.path.join(self.directory, name), "a spool file")
            except FileNotFoundError:
                continue
            with open(fd, "rb") as f:
                data = f.read()
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
        if _rendered.is_batch(payload):
            try:
                batch = _rendered.parse_batch(bytes(payload))
            except ValueError:
                return None
            if batch.client != self.client:
                return None
            return batch.seq, batch.count
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
            close_quietly(self.lock_fd)
            self.lock_fd = -1


def _clean_temp(directory: str, name: str) -> None:
    """Remove a temporary lock file that a process left when it died while creating it."""
    path = os.path.join(directory, name)
    try:
        if time.time() - os.lstat(path).st_mtime < _STALE_TEMP:
            return
        # links=2: a process that died between its os.link() and the unlink of this name
        fd = _safefs.open_existing(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0), links=2)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_unlocked(
    directory: str,
    client: str,
    frame: bytes,
    segment_bytes: int,
    max_bytes: int,
    mine: set[str],
    identity: Identity | None = None,
) -> str:
    """Append ``frame`` to the spool of ``client`` holding its lock only meanwhile, so that the
    spool is free for any other client to deliver as soon as this returns.

    For a process that must not run a sender thread (a uWSGI master, whose workers are forked
    from C). ``mine``: every client id this process appended under before (it moves to a new id
    whenever a worker is delivering its spool, so its records may be left under several); all
    their segments together stay within ``max_bytes``, like an own spool. Ids whose segments are
    all gone (delivered) are removed from ``mine``, and ``client`` is added once written to.

    Returns :data:`APPENDED`; :data:`BUSY` if another process holds the lock (it is delivering
    this spool right now: the caller continues under a new client id); :data:`FULL` if the
    frame would take the spool past ``max_bytes`` (nothing written). Raises ``OSError``.
    """
    lock_path = os.path.join(directory, f"{client}.lock")
    fd = _lock_existing(lock_path)
    if fd is None:
        try:
            fd = create_locked(lock_path, identity)
        except FileExistsError:
            return BUSY
    try:
        held: dict[str, int] = {}  # bytes of segments, per id of ours
        last = (1, 0)  # (number, size) of the newest segment of client
        for name in os.listdir(directory):
            match = _SEGMENT.match(name)
            if match is None or (match.group(1) != client and match.group(1) not in mine):
                continue
            try:
                size = os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:
                continue  # delivered meanwhile
            owner = match.group(1)
            held[owner] = held.get(owner, 0) + size
            if owner == client:
                last = max(last, (int(match.group(2)), size))
        mine.intersection_update(held)
        if sum(held.values()) + len(frame) > max_bytes:
            return FULL
        number, size = last
        if size and size + len(frame) > segment_bytes:
            number += 1
        path = os.path.join(directory, segment_name(client, number))
        segment, _ = _safefs.open_or_create(path, OPEN_FLAGS, mode=0o600, role="a spool file")
        try:
            if os.write(segment, frame) != len(frame):
                raise OSError(errno.ENOSPC, f"the spool file {path!r} is full")
        finally:
            os.close(segment)
        mine.add(client)
    finally:
        os.close(fd)
    return APPENDED


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
                fd = create_locked(lock_path, None)
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
        fd = _safefs.open_existing(  # links=2: published by os.link, see create_locked
            path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0), "a spool lock", links=2
        )
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        here = os.lstat(path)
        mine = os.fstat(fd)
    except OSError:  # held by a live owner, or removed by the previous claimant
        os.close(fd)
        return None
    if (here.st_dev, here.st_ino) != (mine.st_dev, mine.st_ino):
        os.close(fd)
        return None
    return fd
