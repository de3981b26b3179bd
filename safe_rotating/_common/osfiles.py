"""Files we keep in a directory that somebody else may also write.

A log directory shared by a group (setgid 2775, ``chmod=0o660``), a state directory or ``/tmp``
has a hostile neighbour: any member can plant ``.app.log.lock -> /etc/shadow`` or swap a backup
for a link to a secret between our look and our open. Every file safe_rotating creates or opens
there — other than the log itself, which may be a symlink on purpose — goes through this module:

- opened with ``O_NOFOLLOW`` (a symlink fails with ``ELOOP``) and ``O_NONBLOCK`` (a planted FIFO
  does not hang the open), then checked with ``fstat`` to be a regular file with one name: where
  ``fs.protected_hardlinks`` is off, a member may hard-link a root-only file (a secret, a file
  root writes) into the directory, and no link can tell that name from one of ours;
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
import stat
from typing import Final

from safe_rotating._common.oserror import describe_owner, describe_stat
from safe_rotating.exceptions import UnsafeFileError

__all__ = [
    "NOFOLLOW",
    "check_regular",
    "create_new",
    "create_temporary",
    "default_mode",
    "finish",
    "open_existing",
    "open_or_create",
    "open_or_replace",
    "open_to_read",
    "same_file",
    "what_is",
    "what_is_at",
]

NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_GUARD: Final = NOFOLLOW | _CLOEXEC | _NONBLOCK


def what_is(st: os.stat_result) -> str:
    """``"a symbolic link"``, ``"a named pipe"``…: what ``st`` (an ``lstat``) is, for a person;
    for a regular file, how many names it has."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return f"a regular file with {st.st_nlink} hard links"
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


def _refusal(path: str, what: str, role: str) -> UnsafeFileError:
    facts = describe_owner(path, follow=False)
    owned = f" ({facts})" if facts else ""
    if what.startswith("a regular file with"):
        return UnsafeFileError(
            errno.EMLINK,
            f"refusing to use {role} {path!r}: it is {what}{owned}, so the same file also has "
            "another name, perhaps outside that directory (a file someone hard-linked there); "
            "safe_rotating only uses files there that have a single name; remove it, make sure "
            "only trusted users can write the directory, and set fs.protected_hardlinks=1",
        )
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


def check_regular(
    fd: int,
    path: str,
    role: str = "the file",
    links: int | None = 1,
    known: os.stat_result | None = None,
) -> os.stat_result:
    """``fstat(fd)``, or :class:`UnsafeFileError` (and ``fd`` closed) when it is not a regular
    file, or has more than ``links`` names (``None``: any number) and is not ``known`` (a file
    the caller already has open: opening it again reaches nothing new)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (
        links is not None
        and st.st_nlink > links
        and (known is None or (known.st_dev, known.st_ino) != (st.st_dev, st.st_ino))
    ):
        os.close(fd)
        raise _refusal(path, what_is(st), role)
    _blocking(fd)
    return st


def _blocking(fd: int) -> None:
    """Undo ``O_NONBLOCK`` once we know ``fd`` is a regular file (it changes nothing there, but
    a descriptor handed to other code should look ordinary)."""
    if _NONBLOCK:
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)


def open_existing(
    path: str,
    flags: int,
    role: str = "the file",
    links: int | None = 1,
    known: os.stat_result | None = None,
) -> int:
    """Open an existing regular file without following a link; raises ``FileNotFoundError``
    when it is missing and :class:`UnsafeFileError` when it is not a plain file or has more
    than ``links`` names (nothing is truncated before that check).

    ``links=2`` is for a file published with ``os.link(temporary, name)`` (the spool's lock),
    which has two names until its temporary one is removed; ``None`` for a log file at its
    first open, which the stdlib opens whatever its link count. ``known``: see
    :func:`check_regular`."""
    try:
        fd = os.open(path, (flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | _GUARD)
    except OSError as exc:
        raise _refuse_symlink(exc, path, role) from None
    check_regular(fd, path, role, links, known)
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
    check_regular(fd, path, role, None)  # just made: the one name is ours
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
    links: int | None = 1,
    known: os.stat_result | None = None,
) -> tuple[int, bool]:
    """Open ``path``, creating it if missing; ``(fd, created)``.

    A file we create starts 0600 and gets ``mode`` (default: 0644 less the umask, as an
    ``open()`` would give) and ``owner`` once checked. Two processes racing to create it both
    end up with the one file. ``links``, ``known``: see :func:`check_regular`.
    """
    for _ in range(8):
        try:
            fd = create_new(path, flags, role)
        except FileExistsError:
            try:
                return open_existing(path, flags, role, links, known), False
            except FileNotFoundError:
                continue  # removed between the two opens: try to create it again
        try:
            finish(fd, default_mode() if mode is None else mode, owner)
        except OSError:
            os.close(fd)
            raise
        return fd, True
    raise FileNotFoundError(errno.ENOENT, f"{path!r} keeps disappearing while being opened")


def open_or_replace(
    path: str,
    flags: int,
    *,
    mode: int | None = None,
    owner: tuple[int, int] | None = None,
    role: str = "the file",
) -> tuple[int, str | None]:
    """:func:`open_or_create`, for a file whose contents anyone may rebuild (a lock): an entry
    at ``path`` that we refuse — a link, a FIFO, a socket, a device, a regular file with more
    than one name — is removed and a new file created in its place. ``(fd, removed)``:
    ``removed`` describes what was removed (its kind, link text and owner), for the caller to
    report, else ``None``.

    Only the name goes: ``unlink`` never follows a link, and a hard-linked file keeps its other
    names and its contents. A directory, or an entry we may not remove (a sticky directory), is
    refused as by :func:`open_or_create`. Only entries we refuse are removed, never a regular
    file with one name, so processes doing this at once cannot keep removing each other's new
    file: once one of them made it, every other one opens it. (Between the last look and the
    ``unlink`` another process may just have replaced the entry by a fresh file; that file is
    then removed too, and whoever opened it moves to the file at the path the next time it
    checks, as after any removal of a lock file.)"""
    removed: str | None = None
    refused: UnsafeFileError | None = None
    for _ in range(8):
        try:
            fd, _ = open_or_create(path, flags, mode=mode, owner=owner, role=role)
        except UnsafeFileError as exc:
            refused = exc
        else:
            return fd, removed
        try:
            here = os.lstat(path)
        except FileNotFoundError:
            continue  # removed meanwhile: create it
        if stat.S_ISDIR(here.st_mode):
            raise refused
        if stat.S_ISREG(here.st_mode) and here.st_nlink <= 1:
            continue  # replaced by a proper file meanwhile: open that one
        found = _found(path, here)
        try:
            again = os.lstat(path)
            if (again.st_dev, again.st_ino) != (here.st_dev, here.st_ino):
                continue  # changed since we looked: look again
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UnsafeFileError(
                refused.errno, f"{refused.strerror}. It could not be removed: {exc.strerror}"
            ) from None
        removed = found
    assert refused is not None
    raise refused


def _found(path: str, st: os.stat_result) -> str:
    """``"a symbolic link to '/etc/shadow' (owner nobody (uid 65534), …)"``: what ``path``
    holds, for a report."""
    return f"{what_is_at(path, st)} ({describe_stat(st)})"


def what_is_at(path: str, st: os.stat_result) -> str:
    """:func:`what_is`, naming a link's text: ``"a symbolic link to '/etc/shadow'"``."""
    what = what_is(st)
    if stat.S_ISLNK(st.st_mode):
        with contextlib.suppress(OSError):
            what += f" to {os.readlink(path)!r}"
    return what


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
        path = os.path.join(directory, f"{prefix}{os.urandom(8).hex()}{suffix}")
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
    """Open an existing regular file with one name read-only without following links, and check
    that the name still holds it: ``(fd, stat)``. Nothing is read before the check."""
    fd = open_existing(path, os.O_RDONLY, role)
    st = os.fstat(fd)
    if not same_file(st, path):
        os.close(fd)
        raise UnsafeFileError(
            errno.ESTALE, f"refusing to read {role} {path!r}: it was replaced while being opened"
        )
    return fd, st
