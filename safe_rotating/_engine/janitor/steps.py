"""The names of the janitor's steps, reported to a test hook (see tests/test_janitor.py)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["STEP_HOOK", "step"]

# Test hook: called with the name of each step of the janitor's work.
STEP_HOOK: Callable[[str], None] | None = None


def step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)
