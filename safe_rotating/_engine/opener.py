"""Opening the log path, in a directory users we do not trust may write.

The first open takes the path as configured, as ``FileHandler`` does: a symbolic link there is
followed — if it belongs to root, to this process's user or to the directory's owner (the
kernel's ``protected_symlinks`` rule, applied whatever the system's setting; a neighbour's link is
refused like one planted later), and a pipe or device (``/dev/stdout``) is opened as it is. Every
later open creates the file ``O_EXCL`` 0600 (then gives it its mode and owner) or opens it without
following a link, a regular file with one name only (:mod:`safe_rotating._common.osfiles`).
:class:`UnsafeFileError` says what was refused; :class:`~safe_rotating._engine.current.CurrentFile`
decides what to do about it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat

from safe_rotating._common import osfiles as _safefs
from safe_rotating._common.oserror import _user
from safe_rotating._common.oserror import explain as _explain
from safe_rotating.exceptions import UnsafeFileError

__all__ = ["PathOpener"]

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_MOST_LINKS = 40  # links followed one after the other, as the kernel's MAXSYMLINKS
_PROC_FD = re.compile(r"/proc/[0-9]+(?:/task/[0-9]+)?/fd")  # a process's open files

# Read access too, for one look at a file's last byte per batch (see CurrentFile.ends_a_line); a
# file we may only write is opened write-only.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_WRITE_ONLY = ~(os.O_RDWR | os.O_WRONLY)


def _trusted_end(path: str) -> tuple[str, os.stat_result | None]:
    """Follow the links at ``path`` one by one to the name the last one gives: ``(name, its
    lstat)``, ``None`` when nothing is there (a file to create).

    Each link on the way, and a FIFO or socket at the end, must belong to root, to this
    process's effective user or to the owner of the directory holding it — the rule of the
    kernel's ``protected_symlinks`` and ``protected_fifos``, which a neighbour cannot meet —
    else :class:`UnsafeFileError`. Not checked: a regular file (it may belong to anyone, as in
    the stdlib), a device (only root makes device nodes: a neighbour can only link to one, and
    that link is checked — a terminal belongs to whoever logged in, say the user who ran
    ``sudo``), and what a link in ``/proc/<pid>/fd`` leads to (``/dev/stdout``: a file the
    process already has open, whoever owns it). Directories on the way are not checked either:
    keeping the parents of a log directory unwritable to others is the administrator's part.
    """
    me = os.geteuid()
    held = False  # reached through /proc/<pid>/fd
    for _ in range(_MOST_LINKS + 1):
        try:
            here = os.lstat(path)
        except FileNotFoundError:
            return path, None
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        mode = here.st_mode
        link = stat.S_ISLNK(mode)
        directory = os.path.dirname(path) or "."
        if link or (not held and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))):
            try:
                directory_owner = os.stat(directory).st_uid
            except OSError:
                directory_owner = 0  # unknown: root and ourselves only
            if here.st_uid not in (0, me, directory_owner):
                raise _untrusted(path, here, directory_owner)
        if not link:
            return path, here
        held = held or _PROC_FD.fullmatch(os.path.realpath(directory)) is not None
        try:
            path = os.path.join(directory, os.readlink(path))
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
    raise UnsafeFileError(
        errno.ELOOP, f"cannot open the log file {path!r}: more than {_MOST_LINKS} links in a row"
    )


def _untrusted(path: str, here: os.stat_result, directory_owner: int) -> UnsafeFileError:
    what = _safefs.what_is_at(path, here)
    owner = _user(here.st_uid)
    return UnsafeFileError(
        errno.ELOOP if stat.S_ISLNK(here.st_mode) else errno.EACCES,
        f"refusing to open the log file through {path!r}: it is {what} owned by {owner}, and a "
        "link (or a named pipe) at a log path is used only when it belongs to root, to "
        f"the user this process runs as ({_user(os.geteuid())}) or to the owner of its directory "
        f"({_user(directory_owner)}), as the kernel's protected_symlinks rule says: anyone else "
        "who may write the directory could have planted it to make this process write, or "
        "create, a file elsewhere; remove it (or have one of those users make it), and make sure "
        "only trusted users can write the directory",
    )


class PathOpener:
    """Opens ``path`` for appending: as configured the first time, safely every later time.

    ``truncate``: the next open truncates the file (a handler's mode ``"w"``), once.
    """

    def __init__(
        self, path: str, chmod: int | None, owner: tuple[int, int] | None, truncate: bool
    ) -> None:
        self.path = path
        self._chmod = chmod
        self._owner = owner
        self._truncate_next_open = truncate
        self._opened = False  # the path was opened once: from now on it must be a plain file
        # A link at the path at the first open: its text, and the file it led to then.
        self._configured: tuple[str, str] | None = None
        # What the first open opened through the path's links (``/dev/stdout``: a pipe, a
        # terminal, a file the process has open): its (st_dev, st_ino).
        self._special: tuple[int, int] | None = None

    def _create_flags(self) -> int:
        flags = _OPEN_FLAGS | os.O_CREAT
        if self._truncate_next_open:
            flags |= os.O_TRUNC
        return flags

    @staticmethod
    def _os_open(path: str, flags: int, mode: int) -> int:
        """Read-write if allowed (for ``CurrentFile.ends_a_line``), else write-only (0o220)."""
        try:
            return os.open(path, flags, mode)
        except PermissionError:
            return os.open(path, flags & _WRITE_ONLY | os.O_WRONLY, mode)

    def open(self, held: int) -> int:
        """Open the log file at the path, creating it if missing.

        The first open takes the path as configured (:meth:`_open_configured`). Later, a link
        found there stays trusted while the path holds a link with the same text: then the file
        it led to at the first open is opened again (never through the link itself, so swapping
        links in between gains nothing); and a pipe or device opened at the first open
        (``/dev/stdout``) is opened again while the path still leads to that very one.
        Everything else goes through :mod:`._safefs`: a regular file with one name only.
        Raises :class:`UnsafeFileError` for a link or anything but such a file at the path.
        ``held``: the descriptor this process has open on the file (-1: none).
        """
        fd = self._open(held)
        self._truncate_next_open = False
        return fd

    def _open(self, held: int) -> int:
        path = self.path
        flags = self._create_flags()
        try:
            here = os.lstat(path)
        except FileNotFoundError:
            here = None
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        if not self._opened:
            if here is not None and not stat.S_ISREG(here.st_mode):
                fd = self._open_configured(path, flags, held)
            else:  # as configured: a file with other names too is the stdlib's to open
                fd = self._open_plain(path, flags, held, links=None)
            self._opened = True
            return fd
        if here is not None and not stat.S_ISREG(here.st_mode):
            if self._special is not None:
                with contextlib.suppress(OSError):
                    now = os.stat(path)
                    if (now.st_dev, now.st_ino) == self._special:
                        return self._open_configured(path, flags, held)
            configured = self._configured
            if configured is not None and stat.S_ISLNK(here.st_mode):
                with contextlib.suppress(OSError):
                    if os.readlink(path) == configured[0]:
                        path = configured[1]
        return self._open_plain(path, flags, held)

    def _open_configured(self, path: str, flags: int, held: int) -> int:
        """The first open of a path that holds a link, or anything but a regular file.

        The rule of the kernel's ``protected_symlinks`` (and ``protected_fifos``), whatever the
        system's settings: every link on the way, and a FIFO at its end, must belong to root,
        to this process's user or to the owner of its directory (:func:`_trusted_end`) — else
        anyone who may write the directory could plant ``app.log -> /etc/…`` before a process
        starts and have it write there, or create a file there with ``chmod``. Then:

        * a pipe, terminal or other device (``/dev/stdout``, ``/dev/null``) is opened through
          the path, as ``FileHandler`` would — never created nor truncated — and must be the one
          looked at; later opens do the same while the path leads to that very one;
        * a regular or missing file at the end of the links is opened, or created with
          ``chmod``/``owner``, right there without following a link; later opens go back to it
          while the path holds the same link (see :meth:`open`).
        """
        try:
            target: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            target = None  # a dangling link: its target is created, once trusted
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        end, last = _trusted_end(path)
        if target is not None and (
            not stat.S_ISREG(target.st_mode)
            or last is None
            or (last.st_dev, last.st_ino) != (target.st_dev, target.st_ino)
        ):
            # A pipe or a device; or a file the links do not name as a path (``/dev/stdout``
            # into a file since deleted): the stdlib's open, through the trusted links.
            fd = self._open_through(path, flags, target)
            self._special = (target.st_dev, target.st_ino)
            return fd
        fd = self._open_plain(end, flags, held, links=None)
        if end != path:
            with contextlib.suppress(OSError):
                self._configured = (os.readlink(path), end)
        return fd

    def _open_through(self, path: str, flags: int, expected: os.stat_result) -> int:
        """Open what ``path`` leads to, following links, as ``FileHandler`` does — but never
        creating nor truncating it, nor waiting on a FIFO nobody reads (``O_NONBLOCK``, undone
        once open) — and check it is ``expected``: else the path was changed meanwhile."""
        flags = (flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | _NONBLOCK
        try:
            fd = self._os_open(path, flags, 0)
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
                raise UnsafeFileError(
                    errno.ESTALE,
                    f"refusing to open the log file {path!r}: what it leads to was replaced "
                    "while it was being opened",
                )
            if _NONBLOCK:
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_plain(self, path: str, flags: int, held: int, links: int | None = 1) -> int:
        """A regular file at ``path``, never through a link: created ``O_EXCL`` 0600 and then
        given its mode (``chmod``, else 0666 less the umask, as ``open()``) and owner. An
        existing one must have at most ``links`` names (``None``: the first open, as
        configured): a file hard-linked there could be any file of its owner's — unless it is
        the file we have open (a reopen after a new lock table), which gives nothing new."""
        mode = self._chmod if self._chmod is not None else _safefs.default_mode(0o666)
        known = None
        if held >= 0:
            with contextlib.suppress(OSError):
                known = os.fstat(held)
        try:
            try:
                fd, _ = _safefs.open_or_create(
                    path, flags, mode=mode, owner=self._owner, role="the log file",
                    links=links, known=known,
                )  # fmt: skip
            except PermissionError:  # may write but not read it: write-only (mode 0o220)
                fd, _ = _safefs.open_or_create(
                    path, flags & _WRITE_ONLY | os.O_WRONLY, mode=mode, owner=self._owner,
                    role="the log file", links=links, known=known,
                )  # fmt: skip
        except UnsafeFileError:
            raise
        except OSError as exc:
            raise _explain(exc, "open the log file", path) from None
        return fd
