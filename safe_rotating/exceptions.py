"""Public exceptions and warnings of safe_rotating.

Every exception keeps its constructor arguments in ``args`` so that it survives pickling
(``multiprocessing`` hands exceptions between processes) and carries the facts a person needs
to act on it in its message.
"""

from __future__ import annotations

__all__ = [
    "LockError",
    "LockTimeout",
    "QueueOverflow",
    "RecordsDropped",
    "RecordsLost",
    "RecordsNotDelivered",
    "RotationError",
    "SafeRotatingError",
    "SafeRotatingWarning",
    "ServerUnavailable",
    "UnsafeFileError",
]


class SafeRotatingError(Exception):
    """Base class of every exception raised by safe_rotating."""


class LockError(SafeRotatingError, OSError):
    """The inter-process lock could not be used (not contention: a real failure)."""


class UnsafeFileError(SafeRotatingError, OSError):
    """A file safe_rotating keeps beside a log (lock, temporary, journal, spool, a backup to
    compress, or the log path after a rotation) is a symbolic link, a FIFO or anything else than
    the regular file it created: somebody who may write that directory could have planted it, so
    it is not followed. The message names the file, what is there and what to do."""


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


class RecordsDropped(SafeRotatingError):
    """Records a ``LogServerHandler`` could neither send, keep in memory nor spool.

    Reported twice per episode: when the first record is dropped (``count`` 1, ``ended`` false:
    later drops are only counted) and when records are accepted again (``count`` the total,
    ``ended`` true). ``seconds`` is how long the episode lasted so far; ``reason`` why records
    had nowhere to go.
    """

    def __init__(
        self, address: str, count: int, seconds: float, reason: str, ended: bool = True
    ) -> None:
        super().__init__(address, count, seconds, reason, ended)
        self.address = address
        self.count = count
        self.seconds = seconds
        self.reason = reason
        self.ended = ended

    def __str__(self) -> str:
        if not self.ended:
            return (
                f"records for the log server {self.address} are being dropped: {self.reason}; "
                "later drops are counted and reported once, when records are accepted again"
            )
        return (
            f"records for the log server {self.address} are accepted again; {self.count} "
            f"record(s) were dropped during the previous {self.seconds:.1f}s ({self.reason})"
        )


class ServerUnavailable(SafeRotatingError, ConnectionError):
    """The log server could not be reached, refused this client, or stopped acknowledging.

    Reported once per outage. Nothing is lost by the outage itself: records wait in the spool
    (or in memory) and are delivered when the server accepts them again; a
    :class:`RecordsDropped` follows only if they had nowhere left to wait.
    """

    def __init__(self, address: str, seconds: float, reason: str, kept: str) -> None:
        super().__init__(address, seconds, reason, kept)
        self.address = address
        self.seconds = seconds
        self.reason = reason
        self.kept = kept

    def __str__(self) -> str:
        return (
            f"the log server {self.address} has been unavailable for {self.seconds:.1f}s "
            f"({self.reason}); {self.kept}. Reported once per outage"
        )


class RecordsNotDelivered(SafeRotatingError):
    """At ``close()`` or process exit, records the log server had not acknowledged within
    ``flush_timeout``: ``count`` of them wait in the spool file(s) of client id ``client`` in
    ``spool_dir``. Reported once. Nothing is lost yet: the next process that logs to ``address``
    on this host (same user, same spool directory) delivers them, or
    ``command`` (``safe-rotating-spools send --address ADDRESS``) does."""

    def __init__(
        self,
        address: str,
        count: int,
        seconds: float,
        reason: str,
        spool_dir: str,
        client: str,
        command: str,
    ) -> None:
        super().__init__(address, count, seconds, reason, spool_dir, client, command)
        self.address = address
        self.count = count
        self.seconds = seconds
        self.reason = reason
        self.spool_dir = spool_dir
        self.client = client
        self.command = command

    def __str__(self) -> str:
        return (
            f"{self.count} record(s) for the log server {self.address} were not delivered "
            f"within flush_timeout={self.seconds:g}s ({self.reason}); they wait in the spool "
            f"{self.spool_dir}/{self.client}.*.spool. The next process that logs to "
            f"{self.address} with this spool directory delivers them, or run: {self.command}"
        )


class QueueOverflow(SafeRotatingError):
    """Records dropped because the queue of a handler with ``enqueue=True`` was full.

    Reported twice per episode: at the first dropped record (``ended`` false; later drops are
    only counted) and when records are accepted again (``count`` the total, ``ended`` true).
    """

    def __init__(
        self, path: str, count: int, seconds: float, reason: str, ended: bool = True
    ) -> None:
        super().__init__(path, count, seconds, reason, ended)
        self.path = path
        self.count = count
        self.seconds = seconds
        self.reason = reason
        self.ended = ended

    def __str__(self) -> str:
        if not self.ended:
            return (
                f"records for {self.path!r} are being dropped: {self.reason}; later drops are "
                "counted and reported once, when records are accepted again"
            )
        return (
            f"records for {self.path!r} are accepted again; {self.count} record(s) were dropped "
            f"during the previous {self.seconds:.1f}s ({self.reason})"
        )
