"""Files we keep in a directory that somebody else may also write.

A log directory shared by a group (setgid 2775, ``chmod=0o660``), a state directory or ``/tmp``
has a hostile neighbour: any member can plant ``.app.log.lock -> /etc/shadow`` or swap a backup
for a link to a secret between our look and our open. Every file safe_rotating creates or opens
there — other than the log itself, which may be a symlink on purpose — goes through this module:

- opened with ``O_NOFOLLOW`` (a symlink fails with ``ELOOP``) and ``O_NONBLOCK`` (a planted FIFO
  does not hang the open), then checked with ``fstat`` to be a regular file;
- created with ``O_EXCL`` and mode ``0600``, and given its final mode and owner only after that
  check, so nobody else can read or open it while it is not yet ours;
- temporaries get unpredictable names (``secrets``), so a neighbour cannot plant them first;
- a file opened by name is checked to be the file the name still holds (``fstat`` against
  ``lstat``) before a byte of it is read.

Refusals raise :class:`~safe_rotating.exceptions.UnsafeFileError` (an ``OSError``) whose message
names the file, what was found there and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import Final

from ._oserror import _group, _user
from .exceptions import UnsafeFileError

__all__ = [
    "NOFOLLOW",
    "check_regular",
    "create_new",
    "create_temporary",
    "default_mode",
    "describe",
    "finish",
    "open_existing",
    "open_or_create",
    "open_to_read",
    "same_file",
]

NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_GUARD: Final = NOFOLLOW | _CLOEXEC | _NONBLOCK


def _what_is(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def describe(path: str) -> str | None:
    """Owner, group and mode of ``path`` itself (a link is described, not its target)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (
        f"owner {_user(st.st_uid)}, group {_group(st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o}"
    )


def _refusal(path: str, what: str, role: str) -> UnsafeFileError:
    facts = describe(path)
    owned = f" ({facts})" if facts else ""
    return UnsafeFileError(
        errno.ELOOP if what == "a symbolic link" else errno.EINVAL,
        f"refusing to use {role} {path!r}: it is {what}{owned}, and safe_rotating only uses "
        "regular files it can open without following links there, since anyone who may write "
        "that directory could have planted it; remove it, and make sure only trusted users can "
        "write the directory",
    )


def _refuse_symlink(exc: OSError, path: str, role: str) -> OSError:
    """``ELOOP`` from ``O_NOFOLLOW`` becomes a clear refusal; anything else is returned as is."""
    if exc.errno == errno.ELOOP:
        return _refusal(path, "a symbolic link", role)
    return exc


def check_regular(fd: int, path: str, role: str = "the file") -> os.stat_result:
    """``fstat(fd)``, or :class:`UnsafeFileError` (and ``fd`` closed) when it is not a regular
    file."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _refusal(path, _what_is(st), role)
    _blocking(fd)
    return st


def _blocking(fd: int) -> None:
    """Undo ``O_NONBLOCK`` once we know ``fd`` is a regular file (it changes nothing there, but
    a descriptor handed to other code should look ordinary)."""
    if _NONBLOCK:
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)


def open_existing(path: str, flags: int, role: str = "the file") -> int:
    """Open an existing regular file without following a link; raises ``FileNotFoundError``
    when it is missing and :class:`UnsafeFileError` when it is not a plain file."""
    try:
        fd = os.open(path, (flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | _GUARD)
    except OSError as exc:
        raise _refuse_symlink(exc, path, role) from None
    check_regular(fd, path, role)
    if flags & os.O_TRUNC:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            os.close(fd)
            raise
    return fd


def create_new(path: str, flags: int, role: str = "the file") -> int:
    """Create ``path`` with ``O_EXCL`` and mode 0600; ``FileExistsError`` if anything (a link
    included) is there already."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | _GUARD, 0o600)
    except OSError as exc:
        raise _refuse_symlink(exc, path, role) from None
    check_regular(fd, path, role)
    return fd


def finish(fd: int, mode: int | None, owner: tuple[int, int] | None) -> None:
    """Give a file we created and checked its final mode and owner (owner first: ``fchown``
    clears set-id bits, and a mode set before it could be briefly too open)."""
    if owner is not None:
        os.fchown(fd, *owner)
    if mode is not None:
        os.fchmod(fd, mode)


def open_or_create(
    path: str,
    flags: int,
    *,
    mode: int | None = None,
    owner: tuple[int, int] | None = None,
    role: str = "the file",
) -> tuple[int, bool]:
    """Open ``path``, creating it if missing; ``(fd, created)``.

    A file we create starts 0600 and gets ``mode`` (default: 0644 less the umask, as an
    ``open()`` would give) and ``owner`` once checked. Two processes racing to create it both
    end up with the one file.
    """
    for _ in range(8):
        try:
            fd = create_new(path, flags, role)
        except FileExistsError:
            try:
                return open_existing(path, flags, role), False
            except FileNotFoundError:
                continue  # removed between the two opens: try to create it again
        try:
            finish(fd, default_mode() if mode is None else mode, owner)
        except OSError:
            os.close(fd)
            raise
        return fd, True
    raise FileNotFoundError(errno.ENOENT, f"{path!r} keeps disappearing while being opened")


def default_mode(base: int = 0o644) -> int:
    """``base`` less the umask: the mode ``open(path, ..., base)`` would have given.

    Read from ``/proc/self/status`` where it can be: setting the umask to read it back changes
    it for every thread of the process meanwhile."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return base & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def create_temporary(directory: str, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """A new regular file ``<prefix><random><suffix>`` in ``directory``, mode 0600, opened for
    writing; ``(fd, path)``. The name cannot be guessed, so it cannot be planted beforehand."""
    for _ in range(16):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return create_new(path, os.O_WRONLY, "a temporary file"), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary file in {directory!r}")


def same_file(fd_stat: os.stat_result, path: str) -> bool:
    """Does ``path`` (not followed) still name the file behind ``fd_stat``?"""
    try:
        here = os.lstat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (fd_stat.st_dev, fd_stat.st_ino)


def open_to_read(path: str, role: str = "the file") -> tuple[int, os.stat_result]:
    """Open an existing regular file read-only without following links, and check that the name
    still holds it: ``(fd, stat)``. Nothing is read before the check."""
    fd = open_existing(path, os.O_RDONLY, role)
    st = os.fstat(fd)
    if not same_file(st, path):
        os.close(fd)
        raise UnsafeFileError(
            errno.ESTALE, f"refusing to read {role} {path!r}: it was replaced while being opened"
        )
    return fd, st
