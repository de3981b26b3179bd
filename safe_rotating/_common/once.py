"""Warnings told once per process and situation, whichever handler meets them.

A per-handler record (see ``safe_rotating._engine.notices.Warnings``) would tell each handler of
the same file again; a newcomer's mistake (``maxBytes`` without ``backupCount``, a smaller
``backupCount`` than an earlier run's) is worth one warning per file, not one per handler.
A forked child inherits what its parent was told, as it inherits the parent's stderr.
"""

from __future__ import annotations

import threading

__all__ = ["first_time"]

_told: set[tuple[str, str]] = set()
_guard = threading.Lock()


def first_time(situation: str, subject: str) -> bool:
    """True the first time this process meets ``situation`` for ``subject`` (a file path)."""
    with _guard:
        if (situation, subject) in _told:
            return False
        _told.add((situation, subject))
        return True
