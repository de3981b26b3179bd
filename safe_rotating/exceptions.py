"""Public exceptions of safe_rotating.

Every exception keeps its constructor arguments in ``args`` so that it survives pickling
(``multiprocessing`` hands exceptions between processes) and carries the facts a person needs
to act on it in its message.
"""

from __future__ import annotations

__all__ = ["LockError", "LockTimeout", "RotationError", "SafeRotatingError"]


class SafeRotatingError(Exception):
    """Base class of every exception raised by safe_rotating."""


class LockError(SafeRotatingError, OSError):
    """The inter-process lock could not be used (not contention: a real failure)."""


class LockTimeout(SafeRotatingError, TimeoutError):
    """Another process held the rotation lock for longer than the configured bound.

    ``holder_pid`` is the pid recorded by the process holding the lock, or ``None`` if the holder
    did not record one (for example an older process or a foreign tool locking the same file).
    """

    def __init__(self, lock_path: str, timeout: float, holder_pid: int | None) -> None:
        super().__init__(lock_path, timeout, holder_pid)
        self.lock_path = lock_path
        self.timeout = timeout
        self.holder_pid = holder_pid

    def __str__(self) -> str:
        holder = f"pid {self.holder_pid}" if self.holder_pid else "an unknown process"
        return (
            f"rotation lock {self.lock_path!r} is held by {holder} "
            f"for more than {self.timeout:g}s; if that process is stopped or hung, "
            f"resume or kill it"
        )


class RotationError(SafeRotatingError):
    """A rotation could not be done; the record that triggered it was still written."""
