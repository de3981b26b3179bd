"""The backup set of a size-rotated file as the lock table records it, and its file operations.

Each operation (a rotation, the stdlib's shift, a removal, a renumbering step) is recorded in
the table (see ``safe_rotating._engine.staging.IndexState``) under the rotation lock, marked
``DIRTY`` while under way, so that whoever comes next can trust the counters or rebuild them
from the names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

from safe_rotating._engine.janitor.names import move_any, remove_any, taken
from safe_rotating._engine.janitor.steps import step
from safe_rotating._engine.lock import SidecarLock
from safe_rotating._engine.locktable import DIRTY, STAGED
from safe_rotating._engine.schedule import COMPRESSED_SUFFIXES
from safe_rotating._engine.staging import IndexState, Slot, from_names, next_move, normal

__all__ = ["StagedSet"]


class StagedSet:
    """The file operations of :mod:`safe_rotating._engine.staging`, each recorded in the
    table under the lock.

    Every method expects the rotation lock held by ``lock``.
    """

    def __init__(self, path: str, name_for: Callable[[str], str]) -> None:
        self.path = path
        self.directory, self.base = os.path.split(path)
        self._name_for = name_for

    def name(self, slot: Slot) -> str:
        if slot.kind == "n":
            return self._name_for(f"{self.path}.{slot.number}")
        return f"{self.path}.pending.{slot.number}"

    def load(self, lock: SidecarLock) -> IndexState:
        flags, counters = lock.state()
        if flags & STAGED and not flags & DIRTY and _plausible(counters):
            state = normal(IndexState(*counters))
            # Two lookups catch files added or removed by hand (or by an older release) at
            # the old end of the set, where they would change what "oldest" means.
            top = Slot("n", state.c if state.upper else state.a)
            beyond = Slot("n", top.number + 1)
            if (top.number == 0 or taken(self.name(top))) and not taken(self.name(beyond)):
                return state
        return self.rescan(lock)

    def rescan(self, lock: SidecarLock) -> IndexState:
        """Rebuild the counters from the names (after a crash, a repair, or files moved by
        hand), compacting an unusual set first."""
        numbers: list[int] = []
        pending: list[int] = []
        plain = self._name_for("x") == "x"
        prefix = self.base + "."
        for entry in os.listdir(self.directory or "."):
            if not entry.startswith(prefix):
                continue
            rest = entry[len(prefix) :]
            for suffix in COMPRESSED_SUFFIXES:
                if rest.endswith(suffix):
                    rest = rest[: -len(suffix)]
            if rest.isdigit() and plain:
                numbers.append(int(rest))
            elif rest.startswith("pending.") and rest[8:].isdigit():
                pending.append(int(rest[8:]))
        if not plain:  # a namer we cannot read back: the run from 1 that its names make
            n = 1
            while taken(self.name(Slot("n", n))):
                numbers.append(n)
                n += 1
        _, counters = lock.state()
        hi = counters[4] if 1 <= counters[4] < _LARGEST_COUNTER else 1
        renames, state = from_names(numbers, pending, hi)
        lock.set_flags(STAGED | DIRTY)
        for source, dest in renames:
            move_any(self.name(source), self.name(dest))
        lock.set_state(STAGED, state.counters())
        return state

    def _apply(
        self, lock: SidecarLock, state: IndexState, source: Slot, dest: Slot, after: IndexState
    ) -> IndexState:
        if taken(self.name(dest)) or not taken(self.name(source)):
            return self.rescan(lock)  # the names are not what the table says
        lock.set_flags(STAGED | DIRTY)
        step("staged:move")
        move_any(self.name(source), self.name(dest))
        lock.set_state(STAGED, after.counters())
        return after

    def rotate(
        self, lock: SidecarLock, state: IndexState, rotate: Callable[[str, str], None]
    ) -> IndexState:
        """The current file becomes the newest pending backup: one rename."""
        after, slot = state.rotated()
        dest = self.name(slot)
        if taken(dest):
            state = self.rescan(lock)
            after, slot = state.rotated()
            dest = self.name(slot)
        lock.set_flags(STAGED | DIRTY)
        step("staged:rotate")
        rotate(self.path, dest)
        lock.set_state(STAGED, after.counters())
        return after

    def shift_in(
        self, lock: SidecarLock, state: IndexState, rotate: Callable[[str, str], None], keep: int
    ) -> IndexState | None:
        """The stdlib's rotation, for a small set at rest: shift ``.1 … .a`` up by one (after
        removing the oldest beyond ``keep``) and hand the current file to ``rotate`` as ``.1``.
        ``None`` if the names were not what the table says (the caller stages instead)."""
        state = self.trim(lock, state, max(keep - 1, 0))
        top = state.a
        for n in range(top, 0, -1):
            after = replace(state, a=n - 1, b=n + 1, c=top + 1)
            moved = self._apply(lock, state, Slot("n", n), Slot("n", n + 1), after)
            if moved != after:
                return None
            state = moved
        lock.set_flags(STAGED | DIRTY)
        step("staged:rotate")
        rotate(self.path, self.name(Slot("n", 1)))
        # lo and hi move on together (no pending file): ``hi`` counts every rotation, which
        # keeps ``Found.ident`` and ``Compressor._find`` right for inline rotations too.
        state = normal(
            replace(state, a=top + 1, b=top + 2, c=top + 1, lo=state.lo + 1, hi=state.hi + 1)
        )
        lock.set_state(STAGED, state.counters())
        return state

    def trim(self, lock: SidecarLock, state: IndexState, keep: int) -> IndexState:
        """Remove the oldest backups while more than ``keep`` exist."""
        while state.total > keep:
            oldest = state.oldest()
            assert oldest is not None
            if not taken(self.name(oldest)):  # the table is not what the names say
                state = self.rescan(lock)
                if state.total <= keep:
                    break
                oldest = state.oldest()
                assert oldest is not None
            lock.set_flags(STAGED | DIRTY)
            step("staged:remove")
            remove_any(self.name(oldest))
            state = state.without_oldest()
            lock.set_state(STAGED, state.counters())
        return state

    def renumber(
        self, lock: SidecarLock, state: IndexState, budget: int, deadline: float = 0.0
    ) -> IndexState:
        """Up to ``budget`` renumbering steps (stopping early at ``deadline`` on the monotonic
        clock, or as soon as a writer waits for the lock)."""
        for done in range(budget):
            move = next_move(state)
            if move is None:
                after = normal(state)
                if after != state:
                    lock.set_state(STAGED, after.counters())
                return after
            state = self._apply(lock, state, move.source, move.dest, move.after)
            if deadline and done % 8 == 7 and (time.monotonic() > deadline or lock.wanted_since()):
                break
        return state


# The table is writable by everyone who may log, so its counters are checked before they drive
# a loop: a set larger than this, or a counter this large, was not written by a rotation (a
# billion rotations a day would take three thousand years to reach the counter bound).
_LARGEST_SET = 1 << 20
_LARGEST_COUNTER = 1 << 60


def _plausible(counters: tuple[int, int, int, int, int]) -> bool:
    """Could a rotation have left these counters (see :class:`IndexState`)? Else rescan."""
    if not all(0 <= n < _LARGEST_COUNTER for n in counters):
        return False
    state = IndexState(*counters)
    return state.b >= 1 and state.lo <= state.hi and state.total <= _LARGEST_SET
