"""Process-safe rotating log files for Python's logging."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._file import SafeRotatingFileHandler, SafeTimedRotatingFileHandler
from ._version import __version__
from .exceptions import (
    LockError,
    LockTimeout,
    RecordsLost,
    RotationError,
    SafeRotatingError,
    SafeRotatingWarning,
)

if TYPE_CHECKING:
    from .client import LogServerHandler

__all__ = [
    "LockError",
    "LockTimeout",
    "LogServerHandler",
    "RecordsLost",
    "RotationError",
    "SafeRotatingError",
    "SafeRotatingFileHandler",
    "SafeRotatingWarning",
    "SafeTimedRotatingFileHandler",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The client (sockets, TLS, a sender thread) is imported only when it is asked for, so
    # file-mode users do not pay for it; "safe_rotating.LogServerHandler" works in dictConfig.
    if name == "LogServerHandler":
        from .client import LogServerHandler

        return LogServerHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
