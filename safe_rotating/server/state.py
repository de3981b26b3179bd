"""The journal: the last batch sequence number written for each client, bound to its peer.

**Keys.** A client names its sequence space with an id of its own choosing, so the id alone
proves nothing: a neighbour that sent ``hello`` with somebody else's id and a batch numbered
10¹⁸ would otherwise make the server drop that client's next batches as duplicates. The journal
therefore keys each entry by :func:`journal_key`: ``CLIENT@ORIGIN/TOKEN``, where ``ORIGIN`` is who
the kernel says is at the other end — ``uid<N>`` on a Unix socket (``SO_PEERCRED``), ``lo`` for
loopback TCP (this host), the IP address for any other peer — and ``TOKEN`` is ``-`` without
``--token``, else 8 hex digits of a hash of it (never the token itself). The same id from another
uid, host or token is another entry, and cannot move this one. A spool left by a dead process is
replayed by the next client on the same spool directory: same host, same uid, same token, so the
same key, and the batches the server already wrote are not written twice.

**What enters.** An entry is made only when a batch with records is written (the connection
passes empty batches without a client): a hello, an empty batch or a refused frame leaves no
trace.

**Bound.** At most ``max_entries`` keys (:data:`MAX_ENTRIES`, 100 000 by default: about 8 MB
of journal, a line being 70 to 150 bytes, and 25 MB of memory). When a new key finds the table
full, the keys idle longer than ``keep_seconds`` (their retention, :data:`KEEP_SECONDS`: 30 days)
are evicted, least recently written first. If none is, the new key is *not* journaled — counted
in :attr:`Journal.untracked` and reported by the connection
(``refused_frames_total{reason="journal_full"}``): its batches are still written and
acknowledged, but one sent again after a lost acknowledgement may be written twice. Live entries
are never evicted to make room, so a flood of new ids can cost duplicates to the flood, never to
the clients already known.

**File.** A text file of lines ``KEY SEQ UNIXTIME``, appended with one ``O_APPEND`` write per
round of batches (after their records are written, before they are acknowledged). The newest
line of a key wins. At start-up, and whenever the file has grown well past what it describes, it
is rewritten with one line per key: into a new temporary file with an unpredictable name
(``O_EXCL``, mode 0600, so nothing planted beside the journal is opened or followed), flushed to
disk, then renamed over the journal — a crash leaves the old or the new journal, never half of
one, and the rename replaces whatever a neighbour put at the journal's name (a symbolic link
included) without touching what it points to. The journal is never opened through a link. A line
torn by a crash or a full disk is skipped when read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import socket
import stat
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final

from safe_rotating._common import osfiles as _safefs
from safe_rotating._net.address import peer_ip
from safe_rotating.exceptions import UnsafeFileError

__all__ = [
    "CLIENT_ID",
    "KEEP_SECONDS",
    "MAX_ENTRIES",
    "Journal",
    "journal_key",
    "peer_origin",
]

CLIENT_ID: Final = re.compile(r"[0-9A-Za-z_.\-]{1,64}")
KEEP_SECONDS: Final = 30 * 86400  # retention: an entry idle this long may be evicted
MAX_ENTRIES: Final = 100_000
_COMPACT_AT: Final = 1024 * 1024  # bytes of journal before a compaction is considered
_LINE: Final = re.compile(rb"([0-9A-Za-z_.\-@:/]{1,128}) (\d{1,19}) (\d{1,12})")
_LEFTOVER: Final = re.compile(r"\.[0-9a-f]{16}\.tmp")
_PEERCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_origin(peer: Any, sock: Any) -> str:
    """Who is at the other end of a stream connection, as the kernel says.

    ``peer`` is ``getpeername()``; ``sock`` the connection's socket (asyncio's ``TransportSocket``
    will do), asked for ``SO_PEERCRED`` on a Unix socket: ``uid<N>``. Loopback TCP is ``lo`` —
    every local process shares it, which is why a Unix socket binds ids more tightly. Without
    ``SO_PEERCRED`` (not Linux) a Unix peer is ``unix``.
    """
    if not isinstance(peer, tuple) or not peer:  # AF_UNIX
        option = getattr(socket, "SO_PEERCRED", None)
        if sock is not None and option is not None:
            with contextlib.suppress(OSError, struct.error):
                _, uid, _ = _PEERCRED.unpack(
                    sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size)
                )
                return f"uid{uid}"
        return "unix"
    address = peer_ip(peer)
    if address is None:
        return "unknown"
    if address.is_loopback:
        return "lo"
    return str(address)


def journal_key(client: str, origin: str, token: str | None) -> str:
    """``CLIENT@ORIGIN/TOKEN``: the id, who sent it (:func:`peer_origin`) and which token.

    The token is hashed (8 hex digits of SHA-256 with a fixed prefix): enough to tell one token
    from the next after a change, useless to recover it.
    """
    if token is None:
        tag = "-"
    else:
        tag = hashlib.sha256(b"safe_rotating journal\0" + token.encode("utf-8")).hexdigest()[:8]
    return f"{client}@{origin}/{tag}"


class Journal:
    """``last_seq`` per key, kept in memory (oldest written first) and on disk at ``path``."""

    def __init__(
        self,
        path: str,
        max_entries: int = MAX_ENTRIES,
        keep_seconds: int = KEEP_SECONDS,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.max_entries = max_entries
        self.keep_seconds = keep_seconds
        self.untracked = 0  # writes of a new key the full journal had no room for
        self._warn = warn or logging.getLogger("safe_rotating.server").warning
        # key -> (seq, unix time of its last write), least recently written first
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._fd = -1
        self._size = 0
        self._compacted_size = 0
        self._torn = False

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def last_seq(self, key: str) -> int:
        entry = self._last.get(key)
        return entry[0] if entry is not None else 0

    def admits(self, key: str) -> bool:
        """Would a write under ``key`` be journaled now (known, or room for it once the keys
        past their retention are evicted)?"""
        return key in self._last or self._room(time.time()) > 0

    def open(self) -> None:
        """Read the journal, compact it and open it for appending."""
        loaded: dict[str, tuple[int, int]] = {}
        for line in self._read().split(b"\n"):
            match = _LINE.fullmatch(line)
            if match is None:
                continue  # torn by a crash or a full disk
            key = match.group(1).decode("ascii")
            seq, stamp = int(match.group(2)), int(match.group(3))
            old = loaded.get(key)
            if old is None or seq >= old[0]:
                loaded[key] = (seq, stamp)
        cutoff = int(time.time()) - self.keep_seconds
        fresh = sorted((e[1], k) for k, e in loaded.items() if e[1] >= cutoff)
        self._last = OrderedDict((k, loaded[k]) for _, k in fresh[-self.max_entries :])
        self._remove_leftovers()
        self.compact()

    def _read(self) -> bytes:
        try:
            fd, _ = _safefs.open_to_read(self.path, "the journal")
        except FileNotFoundError:
            return b""
        except UnsafeFileError as exc:
            # Never read through it; the compaction's rename replaces the name itself.
            self._warn(f"{exc}; starting with an empty journal, which replaces it")
            return b""
        chunks: list[bytes] = []
        try:
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks)

    def _remove_leftovers(self) -> None:
        """Temporaries of compactions a crash interrupted (ours: regular files of our uid)."""
        directory, base = os.path.split(self.path)
        try:
            names = os.listdir(directory or ".")
        except OSError:
            return
        for name in names:
            if not (name.startswith(base) and _LEFTOVER.fullmatch(name[len(base) :])):
                continue
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    os.unlink(path)

    def compact(self) -> None:
        """Rewrite the journal with one line per key, atomically (see the module docstring)."""
        cutoff = int(time.time()) - self.keep_seconds
        self._evict(cutoff, len(self._last))
        data = "".join(f"{k} {seq} {stamp}\n" for k, (seq, stamp) in self._last.items()).encode()
        directory, base = os.path.split(self.path)
        fd, temporary = _safefs.create_temporary(directory or ".", f"{base}.", ".tmp")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.replace(temporary, self.path)
            # Keep appending to the file we made: no second open by name, nothing to follow.
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._sync_directory(directory or ".")
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._size = self._compacted_size = len(data)
        self._torn = False

    @staticmethod
    def _sync_directory(directory: str) -> None:
        """Make the rename durable (best effort: not every file system allows it)."""
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _reopen(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._fd, _ = _safefs.open_or_create(
            self.path, os.O_WRONLY | os.O_APPEND, mode=0o600, role="the journal"
        )

    def _evict(self, cutoff: int, most: int) -> int:
        """Drop up to ``most`` keys last written before ``cutoff``, oldest first."""
        evicted = 0
        table = self._last
        while evicted < most and table:
            key, (_, stamp) = next(iter(table.items()))
            if stamp >= cutoff:
                break
            del table[key]
            evicted += 1
        return evicted

    def _room(self, now: float, wanted: int = 1) -> int:
        """Free slots, after evicting keys past their retention (oldest first, only as many as
        ``wanted`` needs: O(1) when nothing is evictable)."""
        free = self.max_entries - len(self._last)
        if free < wanted:
            free += self._evict(int(now) - self.keep_seconds, wanted - free)
        return free

    def record(self, entries: Iterable[tuple[str, int]]) -> None:
        """Append ``(key, seq)`` entries with one write; raises ``OSError`` if not written.

        A new key is journaled only if there is room for it (see the module docstring); the
        others are counted in :attr:`untracked`. The in-memory table changes only once the
        entries are on their way to the file.
        """
        now = time.time()
        stamp = int(now)
        pairs: list[tuple[str, int]] = []
        new: set[str] = set()
        for key, seq in entries:
            if key not in self._last and key not in new:
                if self._room(now, len(new) + 1) <= len(new):
                    self.untracked += 1
                    continue
                new.add(key)
            pairs.append((key, seq))
        if not pairs:
            return
        data = "".join(f"{key} {seq} {stamp}\n" for key, seq in pairs).encode()
        if self._torn:
            data = b"\n" + data
        if self._fd < 0:
            self._reopen()
        written = os.write(self._fd, data)
        if written != len(data):
            self._torn = True
            raise OSError(
                errno.ENOSPC, f"the journal {self.path!r} is full: {written} of {len(data)} bytes"
            )
        self._torn = False
        self._size += written
        table = self._last
        for key, seq in pairs:
            table[key] = (seq, stamp)
            table.move_to_end(key)
        if self._size > max(_COMPACT_AT, 4 * self._compacted_size):
            with contextlib.suppress(OSError):  # no room to compact: keep appending
                self.compact()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
