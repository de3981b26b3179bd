"""A backup by its name, plain or compressed: is it there, remove it, rename it."""

from __future__ import annotations

import contextlib
import errno
import os

from safe_rotating._engine.schedule import COMPRESSED_SUFFIXES

__all__ = ["move_any", "remove_any", "taken"]


def taken(name: str) -> bool:
    """Is ``name`` used, plain or compressed?"""
    return os.path.lexists(name) or any(os.path.lexists(name + s) for s in COMPRESSED_SUFFIXES)


def remove_any(name: str) -> None:
    """Remove a backup, plain or compressed."""
    for suffix in ("", *COMPRESSED_SUFFIXES):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name + suffix)


def move_any(source: str, dest: str) -> None:
    """Rename a backup, plain or compressed, keeping its suffix."""
    for suffix in ("", *COMPRESSED_SUFFIXES):
        try:
            os.rename(source + suffix, dest + suffix)
            return
        except FileNotFoundError:
            continue
    raise FileNotFoundError(errno.ENOENT, "no such backup", source)
