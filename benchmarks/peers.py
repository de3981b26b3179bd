"""The handlers the benchmarks compare: key -> (label, factory).

The rotating ones are the stress command's own factories, so a benchmark measures exactly what
``safe-rotating-stress --handler KEY`` verifies; plain ``FileHandler`` is added as the ceiling.
"""

from __future__ import annotations

import logging

from safe_rotating.stress import HANDLERS as ROTATING
from safe_rotating.stress import HandlerFactory

__all__ = ["BASELINE", "HANDLERS", "build"]


def _file(path: str, max_bytes: int, backup_count: int, lock_timeout: float) -> logging.Handler:
    return logging.FileHandler(path)


# The first entry is the baseline the others are compared with.
HANDLERS: dict[str, tuple[str, HandlerFactory]] = {
    "file": ("FileHandler", _file),
    "stdlib": ("RotatingFileHandler", ROTATING["stdlib"]),
    "clh": ("CLH", ROTATING["clh"]),
    "safe": ("safe_rotating", ROTATING["safe"]),
}
BASELINE = "file"


def build(kind: str, path: str, max_bytes: int, backup_count: int) -> logging.Handler:
    """A handler of ``kind`` (no formatter set), with the default 10 s lock timeout."""
    return HANDLERS[kind][1](path, max_bytes, backup_count, 10.0)
