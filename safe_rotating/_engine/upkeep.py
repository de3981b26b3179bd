"""When to wake the janitor: after this process rotated, and only when there is work for it.

The janitor (:mod:`safe_rotating._engine.janitor`) compresses, deletes by retention and renumbers
a staged backup set in a thread of its own; a rotation only notes that it happened, and the note
is acted on once the rotation lock is released.
"""

from __future__ import annotations

from safe_rotating._engine.janitor.runner import Janitor

__all__ = ["Upkeep"]


class Upkeep:
    """The janitor of one file and what this process's rotations left for it to do."""

    def __init__(self, janitor: Janitor) -> None:
        self.janitor = janitor
        self.rotated = False  # a rotation was done here since the janitor was last woken
        self.staged_busy = False  # our last rotation left backups to renumber

    def wake(self) -> None:
        if self.rotated:
            self.rotated = False
            if self.janitor.needed or self.staged_busy:
                self.janitor.kick()
