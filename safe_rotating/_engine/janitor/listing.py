"""The backups of one log file, oldest first, as the janitor's jobs look at them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from safe_rotating._engine.janitor.context import JobContext
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.schedule import (
    COMPRESSED_SUFFIXES,
    Schedule,
    order_key,
    parse_timed_name,
)

__all__ = ["Found", "Listing"]


@dataclass
class Found:
    """A backup on disk: ``name`` without a compression suffix, and the suffix it has."""

    name: str
    suffix: str
    rank: int = -1  # size-rotated sets: places from the newest backup, when listed ...
    hi: int = 0  # ... and the pending counter then: rank + (hi now - hi) is its place now

    @property
    def ident(self) -> int:
        """Size-rotated sets: a number that stays with the backup through renumbering (every
        rotation adds one to ``hi`` and one to every backup's rank); -1 otherwise."""
        return self.hi - 1 - self.rank if self.rank >= 0 else -1

    @property
    def path(self) -> str:
        return self.name + self.suffix


class Listing:
    """Lists the backups: time-named ones from the directory, a size-rotated set from the lock
    table's counters (``staged``); remembers how far they are known to be done."""

    def __init__(
        self, context: JobContext, schedule: Schedule | None, staged: StagedSet | None
    ) -> None:
        self._context = context
        self._schedule = schedule
        self._staged = staged
        self.settled = -1  # every backup with an ident up to this one is done (compressed)

    def variant(self, name: str) -> Found | None:
        """The backup ``name`` as it is on disk (plain, else compressed), if it is."""
        if os.path.lexists(name):
            return Found(name, "")
        for suffix in COMPRESSED_SUFFIXES:
            if os.path.lexists(name + suffix):
                return Found(name, suffix)
        return None

    def backups(self, newer_than: int | None = None) -> list[Found]:
        """The backups, oldest first; of a size-rotated set, only those whose
        :attr:`Found.ident` is above ``newer_than``."""
        context = self._context
        if self._schedule is not None:
            pattern = self._schedule.stamp_pattern
            parsed = []
            for entry in os.listdir(context.directory or "."):
                name = parse_timed_name(entry, context.base, pattern)
                if name is not None:
                    parsed.append((order_key(name), entry, name.compressed))
            parsed.sort()
            out: list[Found] = []
            for _, entry, suffix in parsed:
                plain = os.path.join(context.directory, entry[: len(entry) - len(suffix)])
                if out and out[-1].name == plain:
                    continue  # a plain and a compressed copy: one backup
                out.append(Found(plain, suffix))
            return out
        staged = self._staged
        assert staged is not None
        with context.locked() as held:
            if not held or not context.lock.extended:
                return []
            state = staged.load(context.lock)
        # Looked up after the lock is released, so that writers never wait for a thousand
        # lookups: a backup renumbered meanwhile is missed now and found next time.
        out = []
        top = state.total if newer_than is None else min(state.total, state.hi - 1 - newer_than)
        for rank in range(top - 1, -1, -1):
            slot = state.slot(rank)
            assert slot is not None
            variant = self.variant(staged.name(slot))
            if variant is not None:
                variant.rank, variant.hi = rank, state.hi
                out.append(variant)
        return out
