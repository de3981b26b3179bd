"""The backup set of a size-rotated file, renumbered off the writers' path (pure logic).

With the stdlib's names (``app.log.1`` newest) every rotation would rename every backup. Instead
a rotation moves the current file to ``app.log.pending.<seq>`` — one rename, whatever the number
of backups — and the backups are renumbered into stdlib names later, in small steps, by whoever
has time: the rotating process itself when the set is small (:data:`INLINE`), otherwise a
background janitor, and at ``close``.

The set is always, oldest first::

    U = app.log.c … app.log.b     (an upper run of numbers, being moved up or merged)
    L = app.log.a … app.log.1     (the lower run, starting at 1)
    P = app.log.pending.lo … app.log.pending.(hi-1)
    app.log                        (the current file)

so a reader orders any moment's files the same way: **a higher number is older; every
numbered backup is older than every pending one; a higher pending sequence is newer; the current
file is the newest.** Numbers may have a gap between ``L`` and ``U`` while a renumbering is under
way; at rest (no pending file) the set is exactly the stdlib's ``app.log.1 … app.log.N``.

Each step renames one file onto a free name, keeps this order, and is recorded in the sidecar
table (:class:`IndexState`: five counters) under the rotation lock, flagged *dirty* while the
rename is in flight. A process killed mid-step leaves the flag set; the next holder rebuilds the
counters from the names on disk (:func:`from_names`), which the order above makes unambiguous.
The oldest backup is always ``c`` (else ``a``, else ``lo``), so retention by count is one
``unlink`` at rotation time, and ``backupCount`` counts pending files too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["INLINE", "IndexState", "Move", "Slot", "from_names", "next_move", "normal"]

# A set of at most this many backups is renumbered by the rotating process itself, under the
# lock (at most this many renames): small sets keep stdlib names at every moment.
INLINE = 16


@dataclass(frozen=True)
class Slot:
    """A backup's name: ``("n", k)`` for ``app.log.k``, ``("p", seq)`` for a pending one."""

    kind: str
    number: int


@dataclass(frozen=True)
class IndexState:
    a: int = 0  # L = 1..a
    b: int = 1  # U = b..c, empty when c < b
    c: int = 0
    lo: int = 1  # P = lo..hi-1
    hi: int = 1

    @property
    def upper(self) -> int:
        return max(0, self.c - self.b + 1)

    @property
    def pending(self) -> int:
        return max(0, self.hi - self.lo)

    @property
    def total(self) -> int:
        return self.a + self.upper + self.pending

    @property
    def at_rest(self) -> bool:
        return self.upper == 0 and self.pending == 0

    def counters(self) -> tuple[int, int, int, int, int]:
        return self.a, self.b, self.c, self.lo, self.hi

    def tidy(self) -> IndexState:
        """One spelling for an empty upper run."""
        if self.upper == 0 and (self.b, self.c) != (self.a + 1, self.a):
            return replace(self, b=self.a + 1, c=self.a)
        return self

    def oldest(self) -> Slot | None:
        if self.upper:
            return Slot("n", self.c)
        if self.a:
            return Slot("n", self.a)
        if self.pending:
            return Slot("p", self.lo)
        return None

    def without_oldest(self) -> IndexState:
        if self.upper:
            return replace(self, c=self.c - 1).tidy()
        if self.a:
            return replace(self, a=self.a - 1).tidy()
        if self.pending:
            return replace(self, lo=self.lo + 1)
        return self

    def rotated(self) -> tuple[IndexState, Slot]:
        """The current file becomes the newest pending backup."""
        return replace(self, hi=self.hi + 1), Slot("p", self.hi)

    def slot(self, rank: int) -> Slot | None:
        """The backup ``rank`` places from the newest (0 = the newest backup)."""
        if rank < 0:
            return None
        if rank < self.pending:
            return Slot("p", self.hi - 1 - rank)
        rank -= self.pending
        if rank < self.a:
            return Slot("n", rank + 1)
        rank -= self.a
        if rank < self.upper:
            return Slot("n", self.b + rank)
        return None

    def oldest_first(self) -> list[Slot]:
        return [s for r in range(self.total - 1, -1, -1) if (s := self.slot(r)) is not None]


@dataclass(frozen=True)
class Move:
    """Rename ``source`` to ``dest`` (both free/occupied as the state says), giving ``after``."""

    source: Slot
    dest: Slot
    after: IndexState


def next_move(state: IndexState) -> Move | None:
    """The next renumbering step towards stdlib names, or ``None`` at rest.

    Pending files go to the bottom numbers, so the lower run is first moved up past an empty
    upper run (from its oldest end, each file onto the free number just below ``U``), then the
    pending files fill the numbers below ``U`` from the oldest; when the gap closes, ``U`` and
    ``L`` merge. Files that arrive meanwhile wait for the next pass: one pass per batch of
    rotations, however many.
    """
    state = normal(state)
    if state.upper == 0:
        if state.pending == 0:
            return None
        top = state.a + state.pending  # an empty U just above room for every pending file
        if state.a:
            after = replace(state, a=state.a - 1, b=top, c=top)
            return Move(Slot("n", state.a), Slot("n", top), after)
        after = replace(state, lo=state.lo + 1, b=top, c=top)
        return Move(Slot("p", state.lo), Slot("n", top), normal(after))
    if state.pending:
        if state.a:
            after = replace(state, a=state.a - 1, b=state.b - 1)
            return Move(Slot("n", state.a), Slot("n", state.b - 1), after)
        after = replace(state, lo=state.lo + 1, b=state.b - 1)
        return Move(Slot("p", state.lo), Slot("n", state.b - 1), normal(after))
    # Nothing left to place but a gap (files were deleted by hand): close it from below.
    after = replace(state, a=state.a + 1, b=state.b + 1)
    return Move(Slot("n", state.b), Slot("n", state.a + 1), normal(after))


def normal(state: IndexState) -> IndexState:
    """``state`` with an empty upper run spelled one way and a closed gap folded into ``L``."""
    state = state.tidy()
    if state.upper and state.b - 1 - state.a <= 0:
        return replace(state, a=state.c, b=state.c + 1, c=state.c)
    return state


def from_names(
    numbers: list[int], pending: list[int], hi_at_least: int = 1
) -> tuple[list[tuple[Slot, Slot]], IndexState]:
    """The state that the names on disk spell, after the renames (returned first) that make an
    unusual set — files deleted by hand from the middle, several gaps — representable.

    The renames keep the order and only ever move a file to a lower, free name.
    """
    renames: list[tuple[Slot, Slot]] = []
    seqs = sorted(set(pending))
    lo = seqs[0] if seqs else max(hi_at_least, 1)
    for target, seq in enumerate(seqs, start=lo):
        if seq != target:
            renames.append((Slot("p", seq), Slot("p", target)))
    hi = lo + len(seqs)
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    if not runs:
        return renames, IndexState(lo=lo, hi=hi)
    if runs[0][0] == 1 and len(runs) <= 2:
        upper = runs[1] if len(runs) == 2 else []
        a = runs[0][-1]
        b, c = (upper[0], upper[-1]) if upper else (a + 1, a)
        return renames, normal(IndexState(a=a, b=b, c=c, lo=lo, hi=hi))
    if runs[0][0] > 1 and len(runs) == 1:
        return renames, normal(IndexState(a=0, b=runs[0][0], c=runs[0][-1], lo=lo, hi=hi))
    flat = [n for run in runs for n in run]  # ascending: newest first
    for target, n in enumerate(flat, start=1):
        if n != target:
            renames.append((Slot("n", n), Slot("n", target)))
    return renames, IndexState(a=len(flat), b=len(flat) + 1, c=len(flat), lo=lo, hi=hi)
