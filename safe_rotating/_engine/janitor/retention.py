"""Retention: ``max_age``, ``max_total_bytes``, and ``backupCount`` for time-named sets, the
oldest backup first, never the current file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from safe_rotating._engine.janitor.context import JobContext
from safe_rotating._engine.janitor.listing import Found, Listing
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.janitor.steps import step
from safe_rotating._engine.plan import Backup, Retention

__all__ = ["Retainer"]


class Retainer:
    """Applies the retention ``policy`` to the backups ``listing`` finds."""

    def __init__(
        self,
        context: JobContext,
        policy: Retention,
        listing: Listing,
        staged: StagedSet | None,
        clock: Callable[[], float],
    ) -> None:
        self._context = context
        self._policy = policy
        self._listing = listing
        self._staged = staged
        self._clock = clock
        self._snapshot: list[Found] = []  # the backups as listed for the last doomed ones ...
        self._snapshot_hi = 0  # ... and the pending counter then

    def doomed(self) -> list[str]:
        """The backups retention would delete now, oldest first."""
        if not self._policy.enabled:
            return []
        return [b.name for b in self._doomed()]

    def _doomed(self) -> list[Backup]:
        entries: list[Backup] = []
        listed = self._listing.backups()
        self._snapshot = listed
        self._snapshot_hi = listed[0].hi if listed else 0
        for found in listed:
            try:
                st = os.stat(found.path)
            except FileNotFoundError:
                continue
            entries.append(Backup(found.path, st.st_size, st.st_mtime))
        try:
            current = os.stat(self._context.path).st_size
        except FileNotFoundError:
            current = 0
        return self._policy.to_delete(entries, current, self._clock())

    def apply(self) -> None:
        """Delete what the policy dooms, under the rotation lock."""
        policy = self._policy
        if self._staged is not None and not policy.needs_sizes:
            return  # a size-rotated set is trimmed to backupCount by the rotation itself
        if not policy.enabled:
            return
        doomed = self._doomed()
        if not doomed:
            return
        lock = self._context.lock
        with self._context.locked() as held:
            if not held:
                return
            if self._staged is not None:
                # Oldest first, so: keep the newest ``total - len(doomed)`` backups as they are
                # now (rotations since the listing only added newer ones).
                state = self._staged.load(lock)
                keep = min(state.total, len(self._snapshot) - len(doomed))
                keep += state.hi - self._snapshot_hi
                step("retention:remove")
                self._staged.trim(lock, state, max(keep, 0))
                return
            for backup in doomed:
                step("retention:remove")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(backup.name)
