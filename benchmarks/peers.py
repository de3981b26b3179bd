"""The handlers the benchmarks compare: key -> (label, factory).

The rotating ones are the stress command's own factories, so a benchmark measures exactly what
``safe-rotating-stress --handler KEY`` verifies (``queued``: ``--handler safe --enqueue``); plain
``FileHandler`` is added as the ceiling of a handler that writes, and ``format-only`` (formats and
encodes each record, writes nothing) as the ceiling of Python logging itself.
"""

from __future__ import annotations

import functools
import logging

from safe_rotating.stress.factories import HANDLERS as ROTATING
from safe_rotating.stress.factories import HandlerFactory

__all__ = ["BASELINE", "HANDLERS", "WRITES_NOTHING", "build"]


def _file(path: str, max_bytes: int, backup_count: int, lock_timeout: float) -> logging.Handler:
    return logging.FileHandler(path)


class FormatOnly(logging.Handler):
    """Formats and encodes every record, as a file handler must, and writes nothing: what
    ``logger.info`` costs in Python before any I/O."""

    terminator = "\n"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            (self.format(record) + self.terminator).encode("utf-8")
        except Exception:
            self.handleError(record)


def _format_only(
    path: str, max_bytes: int, backup_count: int, lock_timeout: float
) -> logging.Handler:
    return FormatOnly()


# The first entry is the baseline the others are compared with.
HANDLERS: dict[str, tuple[str, HandlerFactory]] = {
    "file": ("FileHandler", _file),
    "stdlib": ("RotatingFileHandler", ROTATING["stdlib"]),
    "clh": ("CLH", ROTATING["clh"]),
    "safe": ("safe_rotating", ROTATING["safe"]),
    "queued": ("safe_rotating queued", functools.partial(ROTATING["safe"], enqueue=True)),
    "format-only": ("format only", _format_only),
}
BASELINE = "file"
WRITES_NOTHING = frozenset({"format-only"})  # no file to verify


def build(kind: str, path: str, max_bytes: int, backup_count: int) -> logging.Handler:
    """A handler of ``kind`` (no formatter set), with the default 10 s lock timeout."""
    return HANDLERS[kind][1](path, max_bytes, backup_count, 10.0)
