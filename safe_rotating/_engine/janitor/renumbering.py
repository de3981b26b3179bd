"""Renumbering: a size-rotated set's pending names back to the stdlib's, once rotations pause.

While writers rotate busily the new backups keep their pending names (one rename each), and
the set is brought back to the stdlib's names in one pass once they pause for :data:`QUIET`, or
at close — in short holds of the rotation lock that give way to any waiting writer.
"""

from __future__ import annotations

import time

from safe_rotating._engine.janitor.context import JobContext
from safe_rotating._engine.janitor.listing import Listing
from safe_rotating._engine.janitor.staged import StagedSet
from safe_rotating._engine.locktable import STAGED
from safe_rotating._engine.staging import IndexState

__all__ = ["QUIET", "Renumbering"]

# Renumbering waits until no rotation happened for this long.
QUIET = 1.0
# Rotations that never pause for QUIET do not keep pending names longer than this.
_LONGEST_DEFERRAL = 60.0


class Renumbering:
    """When to renumber a size-rotated set (``staged``; ``None``: a time-named set, never
    renumbered), and the renumbering itself."""

    def __init__(self, context: JobContext, staged: StagedSet | None, listing: Listing) -> None:
        self._context = context
        self._staged = staged
        self._listing = listing
        self._seen_hi = 0  # the pending counter when last read, and when it last changed
        self._seen_hi_at = 0.0
        self._deferred_since = 0.0  # 0.0: renumbering is not being put off

    def renumber(self) -> bool:
        """Bring the set back to stdlib names, in short lock holds; needs no janitor lock
        (every step is recorded under the rotation lock). ``False`` if it could not finish."""
        staged = self._staged
        if staged is None:
            return True
        lock = self._context.lock
        while True:
            with self._context.locked("renumbering") as held:
                if not held:
                    return False
                if not lock.extended:
                    return True
                state = staged.load(lock)
                # A writer that wants the lock is seen within 8 steps; a hold lasts ~1 ms.
                state = staged.renumber(lock, state, 256, time.monotonic() + 0.001)
                if state.at_rest:
                    return True
            time.sleep(0.002 if lock.wanted_since() else 0.0002)

    def rotating_for(self) -> float:
        """0.0 if the set may be renumbered now, else seconds until rotations have paused for
        :data:`QUIET` (as far as can be told now). Time-named sets are never renumbered."""
        lock = self._context.lock
        if self._staged is None or not lock.extended:
            return 0.0
        # Read without the lock (writers need it more): the counters only serve to tell
        # whether rotations go on; renumber() reads them again under the lock.
        try:
            flags, counters = lock.state()
        except (OSError, ValueError):  # a damaged table: renumber() repairs it under the lock
            return 0.0
        if not flags & STAGED:
            return 0.0
        state = IndexState(*counters)
        now = time.monotonic()
        if state.hi < self._seen_hi:  # the table was rebuilt: what was settled is unknown
            self._listing.settled = -1
        if state.hi != self._seen_hi:
            self._seen_hi, self._seen_hi_at = state.hi, now
        left = self._seen_hi_at + QUIET - now
        if state.at_rest or left <= 0:
            self._deferred_since = 0.0
            return 0.0
        if not self._deferred_since:
            self._deferred_since = now
        elif now - self._deferred_since > _LONGEST_DEFERRAL:
            self._deferred_since = 0.0
            return 0.0  # rotations never pause: renumber anyway, in holds writers may cut short
        return left
