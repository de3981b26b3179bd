"""Exceptions reported by :class:`safe_rotating.client.LogServerHandler` through ``handleError``.

Like every exception of the package they keep their constructor arguments in ``args`` (so they
survive pickling) and say in their message what happened and what to do.
"""

from __future__ import annotations

from .exceptions import SafeRotatingError

__all__ = ["RecordsDropped", "ServerUnavailable"]


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
