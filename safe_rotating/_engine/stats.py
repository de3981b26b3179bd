"""Counters a handler keeps about itself, cheap enough to leave on.

The engine counts what happens to the file (rotations done and followed, waits for the rotation
lock, the largest size seen past ``maxBytes``); the facades add records, bytes, the queue and
errors. Everything is a plain integer or a fixed list of them, updated by one thread at a time
(the handler's lock, or the queued writer under its own lock), so no counter needs a lock of
its own. Lock waits are kept in power-of-two buckets of microseconds: a quantile read from them
is the upper edge of its bucket, exact within a factor of two, which is what a wait of 3 µs
against one of 40 ms needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Final

__all__ = ["WAIT_BOUNDS", "HandlerStats", "LockWaits", "WaitHistogram", "summarize"]

_BUCKETS: Final = 40  # 2**39 µs is six days: every real wait fits
_FIRST_BOUND: Final = 7  # 2**7 µs = 0.128 ms ...
_LAST_BOUND: Final = 23  # ... 2**23 µs = 8.4 s
# Upper bounds (seconds) of the histogram /metrics exports: bucket edges of the engine's own,
# so a count below each is exact, where a decimal grid would have to guess inside a bucket.
WAIT_BOUNDS: Final = tuple((1 << i) / 1e6 for i in range(_FIRST_BOUND, _LAST_BOUND + 1))


@dataclass(frozen=True)
class LockWaits:
    """Waits for the inter-process rotation lock (only rotations take it), in seconds.

    ``p50``/``p99`` are upper bounds, exact within a factor of two; ``longest`` is exact;
    ``below``: how many waits were shorter than each of :data:`WAIT_BOUNDS` (cumulative)."""

    count: int = 0
    p50: float = 0.0
    p99: float = 0.0
    longest: float = 0.0
    total: float = 0.0
    below: tuple[int, ...] = (0,) * len(WAIT_BOUNDS)


class WaitHistogram:
    """Durations in power-of-two buckets of microseconds; one writer at a time."""

    __slots__ = ("buckets", "count", "longest", "total")

    def __init__(self) -> None:
        self.buckets = [0] * _BUCKETS
        self.count = 0
        self.longest = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        micros = int(seconds * 1e6)
        self.buckets[min(micros.bit_length(), _BUCKETS - 1)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.longest:
            self.longest = seconds

    def quantile(self, q: float) -> float:
        """The upper edge (seconds) of the bucket holding the ``q`` quantile; 0.0 if empty."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank and n:
                return min((1 << index) / 1e6, self.longest)
        return self.longest

    def summary(self) -> LockWaits:
        # Bucket i holds waits of bit_length(µs) == i: the first k + 1 hold those under 2**k µs.
        cumulative = list(accumulate(self.buckets))
        return LockWaits(
            self.count,
            self.quantile(0.5),
            self.quantile(0.99),
            self.longest,
            self.total,
            tuple(cumulative[_FIRST_BOUND : _LAST_BOUND + 1]),
        )


@dataclass(frozen=True)
class HandlerStats:
    """Counters of one handler in this process (a child process starts from zero).

    ``records`` / ``bytes``: records (and their encoded bytes) written to the file by this
    process; ``rotations``: rotations this process did; ``rotations_seen``: rotations done by
    other processes that this one followed to a new file; ``lock_waits``: how long rotations
    waited for the inter-process lock (:class:`LockWaits`); ``largest_overshoot``: the most
    bytes past ``maxBytes`` this process saw the current file hold (other processes' records
    in flight, or a batch part in queued mode; see docs/guarantees.md);
    ``queue_depth`` / ``queue_bytes``: records (bytes) queued and not yet written (always 0
    without ``enqueue``); ``queue_peak_bytes``: the most bytes queued at once; ``dropped``:
    records given up because the queue was full (``on_full``); ``errors``: records that could
    not be formatted or written.
    """

    records: int = 0
    bytes: int = 0
    rotations: int = 0
    queue_depth: int = 0
    queue_bytes: int = 0
    queue_peak_bytes: int = 0
    dropped: int = 0
    errors: int = 0
    rotations_seen: int = 0
    lock_waits: LockWaits = field(default_factory=LockWaits)
    largest_overshoot: int = 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"


def summarize(stats: Sequence[HandlerStats]) -> str:
    """One line for the ``stats()`` of several processes' handlers on one file (sums; the
    worst of the lock waits, overshoots and queue peaks)."""
    if not stats:
        return "no stats (no process reported)"
    waits = [s.lock_waits for s in stats]
    parts = [
        f"{len(stats)} processes: {sum(s.records for s in stats)} records",
        f"{sum(s.rotations for s in stats)} rotations done, "
        f"{sum(s.rotations_seen for s in stats)} followed",
        f"lock waits {sum(w.count for w in waits)} (worst p99 <= "
        f"{_ms(max(w.p99 for w in waits))}, longest {_ms(max(w.longest for w in waits))})",
        f"largest overshoot {max(s.largest_overshoot for s in stats)} B",
    ]
    peak = max(s.queue_peak_bytes for s in stats)
    if peak:
        parts.append(f"queue peak {peak} B")
    parts.append(f"dropped {sum(s.dropped for s in stats)}")
    parts.append(f"errors {sum(s.errors for s in stats)}")
    return "; ".join(parts)
