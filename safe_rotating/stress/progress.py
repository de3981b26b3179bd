"""A progress bar for the stress runs, on standard error."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """A one-line progress bar on a terminal; a line every few seconds elsewhere."""

    def __init__(self, total: int, stream: Any = None, width: int = 30) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1.0

    def __call__(self, done: int, seconds: float) -> None:
        final = done >= self.total
        if not self.tty and not final and seconds - self._last < 5:
            return
        self._last = seconds
        share = done / self.total if self.total else 1.0
        filled = int(self.width * share)
        rate = done / seconds / 1000 if seconds > 0 else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {100 * share:5.1f}% {done}/{self.total} records {rate:.0f}k/s"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + text + end)
        self.stream.flush()
