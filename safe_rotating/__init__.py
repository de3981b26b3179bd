"""Process-safe rotating log files for Python's logging."""

from ._file import SafeRotatingFileHandler
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
    "__version__",
]
