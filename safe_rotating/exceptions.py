"""Public exceptions and warnings of safe_rotating.

Every exception keeps its constructor arguments in ``args`` so that it survives pickling
(``multiprocessing`` hands exceptions between processes) and carries the facts a person needs
to act on it in its message.
"""

from __future__ import annotations

__all__ = [
    "LockError",
    "LockTimeout",
    "RecordsLost",
    "RotationError",
    "SafeRotatingError",
    "SafeRotatingWarning",
]


class SafeRotatingError(Exception):
    """Base class of every exception raised by safe_rotating."""


class LockError(SafeRotatingError, OSError):
    """The inter-process lock could not be used (not contention: a real failure)."""


class LockTimeout(SafeRotatingError, TimeoutError):
    """Another process held the rotation lock for longer than this process would wait.

    ``holder_pid`` is the pid recorded by the process holding the lock, or ``None`` if the holder
    did not record one (for example a foreign tool locking the same file). ``waited`` is how long
    this process waited; ``held_for`` how long the holder has held the lock, when it recorded the
    time; ``holder_state`` what the operating system says of the holder ("stopped", ...), when
    it can tell.
    """

    def __init__(
        self,
        lock_path: str,
        waited: float,
        holder_pid: int | None,
        held_for: float | None = None,
        holder_state: str | None = None,
    ) -> None:
        super().__init__(lock_path, waited, holder_pid, held_for, holder_state)
        self.lock_path = lock_path
        self.waited = waited
        self.holder_pid = holder_pid
        self.held_for = held_for
        self.holder_state = holder_state

    @property
    def timeout(self) -> float:
        """How long this process waited (the name of 0.1.0)."""
        return self.waited

    def __str__(self) -> str:
        holder = f"pid {self.holder_pid}" if self.holder_pid else "another process"
        if self.holder_state:
            holder += f" ({self.holder_state})"
        held = (
            f"has held it for {self.held_for:.1f}s"
            if self.held_for is not None
            else "still holds it"
        )
        advice = (
            f"; resume it (kill -CONT {self.holder_pid}) or end it"
            if self.holder_state and self.holder_state.startswith("stopped")
            else ""
        )
        return (
            f"rotation lock {self.lock_path!r} is busy: {holder} {held}, "
            f"this process gave up after {self.waited:.2f}s{advice}"
        )


class RotationError(SafeRotatingError):
    """A rotation could not be done; the record that triggered it was still written."""


class RecordsLost(SafeRotatingError):
    """Records that could not be written during a failure episode that has now ended.

    Reported once, when writing works again, with how many records failed and for how long.
    """

    def __init__(self, path: str, count: int, seconds: float, first_error: str) -> None:
        super().__init__(path, count, seconds, first_error)
        self.path = path
        self.count = count
        self.seconds = seconds
        self.first_error = first_error

    def __str__(self) -> str:
        return (
            f"writing to {self.path!r} works again; {self.count} record(s) could not be written "
            f"during the previous {self.seconds:.1f}s ({self.first_error})"
        )


class SafeRotatingWarning(UserWarning):
    """Something a person should know that does not stop logging (mismatched settings, a
    repaired or newer lock file)."""
