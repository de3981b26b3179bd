"""Process-safe rotating log files for Python's logging."""

from ._file import SafeRotatingFileHandler
from ._version import __version__
from .exceptions import LockError, LockTimeout, RotationError, SafeRotatingError

__all__ = [
    "LockError",
    "LockTimeout",
    "RotationError",
    "SafeRotatingError",
    "SafeRotatingFileHandler",
    "__version__",
]
