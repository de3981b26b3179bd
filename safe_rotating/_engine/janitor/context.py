"""What the jobs of one janitor share: the log file's names, the rotation lock, the reports."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from safe_rotating._engine.lock import SidecarLock

__all__ = ["LOCK_WAIT", "JobContext"]

LOCK_WAIT = 2.0  # seconds a janitor waits for the rotation lock for one short step


class JobContext:
    """The log file a janitor works for, its rotation lock, and the reports made once."""

    def __init__(self, path: str, lock: SidecarLock, warn: Callable[[str], None] | None) -> None:
        self.path = path
        self.directory, self.base = os.path.split(path)
        self.lock = lock
        self._warn = warn
        self._warned: set[str] = set()

    @contextlib.contextmanager
    def locked(self, doing: str = "background work on") -> Iterator[bool]:
        """The rotation lock for one short step: ``True`` once held; ``False`` when it could
        not be had (reported once as ``<doing> <path> postponed``), and the step waits."""
        try:
            held = self.lock.acquire(LOCK_WAIT)
        except Exception as exc:
            self.warn_once("lock", f"{doing} {self.path!r} postponed: {exc}")
            held = False
        try:
            yield held
        finally:
            if held:
                self.lock.release()

    def warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        if self._warn is not None:
            with contextlib.suppress(Exception):
                self._warn(message)
