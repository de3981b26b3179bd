"""This process's id without a system call per look: fork detection on the hot paths.

glibc no longer caches ``getpid()``, so every ``os.getpid()`` is a system call (about 0.2 µs
here, a few per cent of a whole ``logger.info``). Queued mode and the server client compare the
process id on every record, because a fork done in C (uWSGI, embedding hosts) runs none of
Python's at-fork hooks (see "Fork: never trust the hooks alone").

So the id is kept in a private anonymous page marked ``MADV_WIPEONFORK``: the kernel gives the
child of *any* fork — ``os.fork``, libc ``fork()`` called from C, ``multiprocessing`` — a page
of zeros, and a zero means "not looked up in this process yet". Reading it is a memory load.
Where the kernel refuses the advice (Linux before 4.14, other systems) the cell always reads
zero and every look is a real ``os.getpid()``: slower, never wrong.

Hot paths read ``PID_CELL[0] or current_pid()``; everything else calls :func:`current_pid`.

:class:`ForkRegistry` is the fast path on top: the live objects of one kind, each told after
Python's own forks to drop what belongs to the parent. The pid check where the object is used
stays the rule.
"""

from __future__ import annotations

import mmap
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Final, Generic, TypeVar

__all__ = ["PID_CELL", "WIPED_ON_FORK", "ForkRegistry", "current_pid"]

_T = TypeVar("_T")

_MADV_WIPEONFORK: Final = 18  # <linux/mman.h>; not exported by the mmap module of Python 3.11
_getpid = os.getpid


def _make_cell() -> tuple[memoryview, bool]:
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    madvise = getattr(mmap.mmap, "madvise", None)
    if flags and madvise is not None and hasattr(os, "fork"):
        try:
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=flags)
            page.madvise(getattr(mmap, "MADV_WIPEONFORK", _MADV_WIPEONFORK))
        except (OSError, ValueError):
            pass
        else:
            return memoryview(page).cast("q"), True
    return memoryview(bytearray(8)).cast("q"), False  # never written: always "look it up"


_CELL = _make_cell()
PID_CELL: Final[memoryview] = _CELL[0]
WIPED_ON_FORK: Final[bool] = _CELL[1]  # True when the kernel clears the cell in every child


def _forget() -> None:
    # Python's own forks: also clear the cell here, in case a signal handler forked between
    # another thread's look-up and its store (the kernel's wipe covers forks done in C).
    if WIPED_ON_FORK:
        PID_CELL[0] = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def current_pid() -> int:
    """``os.getpid()``, remembered until the next fork of any kind."""
    pid = PID_CELL[0]
    if pid:
        return int(pid)
    pid = _getpid()
    if WIPED_ON_FORK:
        PID_CELL[0] = pid
    return pid


class ForkRegistry(Generic[_T]):
    """The live objects of one kind (held weakly). In the child of an ``os.fork`` (and of
    ``multiprocessing``'s fork), ``in_child`` runs for each, in registration order of the
    registries; a fork done in C runs nothing, hence the pid checks where objects are used."""

    def __init__(self, in_child: Callable[[_T], object]) -> None:
        self._live: weakref.WeakSet[_T] = weakref.WeakSet()
        self._in_child = in_child
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def add(self, item: _T) -> None:
        self._live.add(item)

    def discard(self, item: _T) -> None:
        self._live.discard(item)

    def __iter__(self) -> Iterator[_T]:
        return iter(list(self._live))  # a copy: an item may leave while the caller walks it

    def _after_fork(self) -> None:
        for item in list(self._live):
            self._in_child(item)
