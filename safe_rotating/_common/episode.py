"""A run of one kind of failure, as every part of the package reports it: once when it starts,
counted while it lasts, and once more when it ends (or as a reminder while it goes on).

The handlers' failed writes, the engine's failed rotations, the server writer's failed writes
and the forwarder's outages each keep one :class:`Episode` while the trouble lasts and drop it
when the next attempt works; what they say at the start and the end is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Episode"]


@dataclass
class Episode:
    """``started``: monotonic time of the first failure; ``first_error``: what it said;
    ``count``: failures (or records lost) so far; ``reported``: monotonic time of the last
    report, 0.0 before the first."""

    started: float
    first_error: str = ""
    count: int = 1
    reported: float = 0.0
