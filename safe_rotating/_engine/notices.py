"""What a writer tells a person: each warning once, each refusal once per episode.

Warnings (:class:`Warnings`) go to the ``warn`` callback and do not stop writing. The log path
may come to hold a neighbour's link, a FIFO or a hard link (see
:mod:`safe_rotating._engine.opener`); the lock path likewise (see
:attr:`~safe_rotating._engine.lock.SidecarLock.refusal`). Records keep going where they safely
can, and each refusal is reported once, through the next record's ``handleError``, until it is
resolved and a new one begins.
"""

from __future__ import annotations

from collections.abc import Callable

from safe_rotating._engine.lock import SidecarLock
from safe_rotating.exceptions import UnsafeFileError

__all__ = ["Refusals", "Warnings"]


class Warnings:
    """Messages a person should read that do not stop writing, each told once a process."""

    def __init__(self, warn: Callable[[str], None] | None) -> None:
        self._warn = warn
        self._warned: set[str] = set()

    def once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            if self._warn is not None:
                self._warn(message)


class Refusals:
    """The refusals of the log path and of the lock path, and whether each was reported."""

    def __init__(self, lock: SidecarLock) -> None:
        self._lock = lock
        # The path holds a link or FIFO we refuse while we write to the file we had (reported
        # once, then None again when a proper file is opened), and the lock's refusal, told.
        self.refusal: UnsafeFileError | None = None
        self._refusal_told = False
        self._refused_as: str | None = None  # what was found, to tell a new episode
        self._lock_refusal_told = False
        self.unsafe = False  # either refusal is set or was: news() has something to look at

    def keep_writing(self, exc: UnsafeFileError) -> None:
        """The path holds ``exc``'s refusal while we keep writing to the file we had open."""
        if self.refusal is None or self._refused_as != exc.strerror:
            told = UnsafeFileError(
                exc.errno,
                f"{exc.strerror}. Until then this process writes its records to the file it "
                "had open, no longer at that path (rotated or moved away: look for them in "
                "the backups), and opens a new file at the path once it is clear",
            )
            told.__cause__ = exc
            self.refusal, self._refusal_told = told, False
            self._refused_as = exc.strerror
            self.unsafe = True

    def news(self) -> Exception | None:
        """A refusal not yet reported (the log path's, else the lock's), once per episode."""
        refusal = self.refusal
        if refusal is not None and not self._refusal_told:
            self._refusal_told = True
            return refusal
        lock_refusal = self._lock.refusal
        if lock_refusal is None:
            self._lock_refusal_told = False
            self.unsafe = refusal is not None
        elif not self._lock_refusal_told:
            self._lock_refusal_told = True
            told = UnsafeFileError(
                lock_refusal.errno,
                f"{lock_refusal.strerror}. Meanwhile this process keeps using the lock file it "
                "had open, as does every process already running, so rotation goes on; a "
                "process started now cannot log until this is resolved",
            )
            told.__cause__ = lock_refusal
            return told
        return None
