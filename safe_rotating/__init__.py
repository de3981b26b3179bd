"""Process-safe rotating log files for Python's logging."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from safe_rotating._version import __version__
from safe_rotating.exceptions import (
    LockError,
    LockTimeout,
    QueueOverflow,
    RecordsDropped,
    RecordsLost,
    RecordsNotDelivered,
    RotationError,
    SafeRotatingError,
    SafeRotatingWarning,
    ServerUnavailable,
    UnsafeFileError,
)
from safe_rotating.handlers import (
    HandlerStats,
    SafeRotatingFileHandler,
    SafeTimedRotatingFileHandler,
)

if TYPE_CHECKING:
    from safe_rotating.client import ClientStats, LogServerHandler

__all__ = [
    "ClientStats",
    "HandlerStats",
    "LockError",
    "LockTimeout",
    "LogServerHandler",
    "QueueOverflow",
    "RecordsDropped",
    "RecordsLost",
    "RecordsNotDelivered",
    "RotationError",
    "SafeRotatingError",
    "SafeRotatingFileHandler",
    "SafeRotatingWarning",
    "SafeTimedRotatingFileHandler",
    "ServerUnavailable",
    "UnsafeFileError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The client (sockets, TLS, a sender thread) is imported only when it is asked for, so
    # file-mode users do not pay for it; "safe_rotating.LogServerHandler" works in dictConfig.
    if name in ("LogServerHandler", "ClientStats"):
        from safe_rotating import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
