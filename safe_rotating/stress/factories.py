"""The handlers ``safe-rotating-stress`` can test: ``--handler safe``, ``stdlib`` or ``clh``.

Each factory builds one handler from the run's settings and refuses (``SystemExit``) what the
class cannot do, so that a run never quietly tests less than it was asked to.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Callable
from typing import Any

from safe_rotating.handlers import DEFAULT_QUEUE_SIZE

__all__ = ["HANDLERS", "HandlerFactory"]


def _safe(
    path: str,
    max_bytes: int,
    backup_count: int,
    lock_timeout: float,
    when: str | None = None,
    interval: int = 1,
    compress: str | None = None,
    max_age: float | None = None,
    max_total_bytes: int | None = None,
    enqueue: bool = False,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> logging.Handler:
    from safe_rotating.handlers import SafeRotatingFileHandler, SafeTimedRotatingFileHandler

    extra: dict[str, Any] = {
        "lock_timeout": lock_timeout,
        "compress": compress,
        "max_age": max_age,
        "max_total_bytes": max_total_bytes,
        "enqueue": enqueue,
    }
    if enqueue:
        extra["queue_size"] = queue_size
    if when:
        return SafeTimedRotatingFileHandler(
            path, when, interval, backupCount=backup_count, maxBytes=max_bytes, **extra
        )
    return SafeRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count, **extra)


def _stdlib(
    path: str,
    max_bytes: int,
    backup_count: int,
    lock_timeout: float,
    when: str | None = None,
    interval: int = 1,
    compress: str | None = None,
    max_age: float | None = None,
    max_total_bytes: int | None = None,
    enqueue: bool = False,
) -> logging.Handler:
    if compress or max_age or max_total_bytes:
        raise SystemExit("--handler stdlib has no compression or age/size retention")
    if enqueue:
        raise SystemExit("--enqueue is an option of --handler safe")
    if when:  # the stdlib class rotates by time only
        return logging.handlers.TimedRotatingFileHandler(path, when, interval, backup_count)
    return logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count)


def _clh(
    path: str,
    max_bytes: int,
    backup_count: int,
    lock_timeout: float,
    when: str | None = None,
    interval: int = 1,
    compress: str | None = None,
    max_age: float | None = None,
    max_total_bytes: int | None = None,
    enqueue: bool = False,
) -> logging.Handler:
    try:
        import concurrent_log_handler as clh
    except ImportError:
        raise SystemExit("--handler clh needs concurrent-log-handler: pip install it") from None
    if enqueue:
        raise SystemExit("--enqueue is an option of --handler safe")
    if compress not in (None, "gzip") or max_age or max_total_bytes:
        raise SystemExit("--handler clh compresses with gzip only and has no age/size retention")
    gzip = compress == "gzip"
    handler: logging.Handler
    if when:
        handler = clh.ConcurrentTimedRotatingFileHandler(
            path, when, interval, backup_count, maxBytes=max_bytes, use_gzip=gzip
        )
    else:
        handler = clh.ConcurrentRotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, use_gzip=gzip
        )
    return handler


HandlerFactory = Callable[..., logging.Handler]
HANDLERS: dict[str, HandlerFactory] = {"safe": _safe, "stdlib": _stdlib, "clh": _clh}
