"""Reconnecting to a peer that went away: the backoff between attempts, and the outage episode.

Independent of what is sent and how: the client's sender uses it for its connection to the
server, and a forwarder to another server could use it the same way. Not thread-safe: one
thread (the one that connects) owns each object.
"""

from __future__ import annotations

import math
import random

__all__ = ["Backoff", "Outage"]


class Backoff:
    """Exponential backoff with jitter: the first wait is ``first``, each next one doubles up
    to ``cap``, and each is drawn from [half, full] so that many clients of one server do not
    all come back at the same instant. A connection that lasted ``stable`` seconds ends the
    episode: the next loss starts from ``first`` again."""

    __slots__ = ("cap", "connected_at", "delay", "first", "next_attempt", "stable")

    def __init__(self, first: float, cap: float, stable: float) -> None:
        self.first = first
        self.cap = cap
        self.stable = stable
        self.delay = 0.0  # the last wait's bound; 0: none yet in this episode
        self.next_attempt = 0.0  # monotonic time of the next attempt
        self.connected_at = 0.0

    def failed(self, now: float) -> None:
        """An attempt failed at ``now``: schedule the next one."""
        self.delay = min(self.cap, self.delay * 2 or self.first)
        self.next_attempt = now + self.delay * random.uniform(0.5, 1.0)

    def connected(self, now: float) -> None:
        self.connected_at = now

    def lost(self, now: float) -> None:
        """A connection was lost at ``now``: schedule the next attempt, afresh if it lasted."""
        if now - self.connected_at >= self.stable:
            self.delay = 0.0
        self.failed(now)

    def reset(self) -> None:
        """Progress was made: the next failure starts a new episode."""
        self.delay = 0.0


class Outage:
    """One episode of the peer being unreachable: since when, why (the last error), and
    whether it was reported (once, after ``report_after`` seconds, or at once by choice)."""

    __slots__ = ("reason", "report_after", "reported", "since")

    def __init__(self, report_after: float) -> None:
        self.report_after = report_after
        self.since: float | None = None
        self.reason = ""
        self.reported = False

    def failed(self, now: float, reason: str) -> None:
        """An attempt failed (or the connection was lost) at ``now`` for ``reason``."""
        self.reason = reason
        if self.since is None:
            self.since = now

    def ended(self) -> None:
        """The peer is back."""
        self.since = None
        self.reported = False

    def report_at(self) -> float:
        """When the report of this episode falls due (infinity: none is)."""
        if self.since is None or self.reported:
            return math.inf
        return self.since + self.report_after

    def report_due(self, now: float) -> bool:
        since = self.since
        return since is not None and not self.reported and now - since >= self.report_after

    def lasted(self, now: float) -> float:
        return now - (self.since if self.since is not None else now)
