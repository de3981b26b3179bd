"""Process-safe rotating log files for Python's logging."""

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

__all__ = [
    "LockError",
    "LockTimeout",
    "RecordsLost",
    "RotationError",
    "SafeRotatingError",
    "SafeRotatingFileHandler",
    "SafeRotatingWarning",
    "SafeTimedRotatingFileHandler",
    "__version__",
]
