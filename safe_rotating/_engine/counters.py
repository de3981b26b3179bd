"""The rotation engine's counters behind ``stats()``: plain numbers, changed under the caller's
lock (a handler's lock, the server's one task) by the parts of the engine that count them."""

from __future__ import annotations

from safe_rotating._engine.stats import HandlerStats, WaitHistogram

__all__ = ["Counters"]


class Counters:
    """What one process did to one file since it started (or forked)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start from zero, with new objects: in a forked child a thread of the parent may have
        been changing the old ones at the fork."""
        self.rotations = 0  # rotations done by this process
        self.rotations_seen = 0  # rotations by other processes that this one followed
        self.lock_waits = WaitHistogram()  # how long each rotation waited for the lock
        self.largest_overshoot = 0  # the most bytes past max_bytes seen in the current file

    def overshoot(self, size: int, max_bytes: int) -> None:
        """The current file was seen at ``size`` bytes: keep the most it went past the limit."""
        if size - max_bytes > self.largest_overshoot:
            self.largest_overshoot = size - max_bytes

    def stats(self) -> HandlerStats:
        """The engine's counters (``records``, ``bytes`` and the queue are the callers')."""
        return HandlerStats(
            rotations=self.rotations,
            rotations_seen=self.rotations_seen,
            lock_waits=self.lock_waits.summary(),
            largest_overshoot=self.largest_overshoot,
        )
