"""The client's settings and the small types its parts share: counters, what a close left
behind, a server's refusal, and how an error reads in a message."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

__all__ = ["ClientStats", "Config", "Leftover", "ServerRefused", "describe"]


@dataclass(frozen=True)
class Config:
    """Validated settings (see ``LogServerHandler`` for their meaning)."""

    address: str  # as the user wrote it, for messages
    family: int
    target: Any  # (host, port) or a path
    tls: ssl.SSLContext | None
    server_hostname: str | None
    token: str | None
    app: str
    batch_size: int
    flush_interval: float
    queue_size: int
    spool_root: str | None  # None: no spool
    spool_root_is_default: bool
    spool_max_bytes: int
    ack_timeout: float
    flush_timeout: float
    block_timeout: float
    block: bool  # on_full == "block"
    fallback: bool

    # Why records were dropped, as the handler reports it.
    def direct_reason(self, full: bool) -> str:
        """In a uWSGI master (no sender thread); ``full``: the spool refused for want of room."""
        if self.spool_root is None:
            return (
                "this is a uWSGI master, where no sender thread may run (its workers are forked "
                "from C), and spool_dir=False leaves records nowhere to wait for a worker to "
                "deliver them; allow a spool or run uWSGI with --lazy-apps"
            )
        if full:
            return (
                f"the spool of this uWSGI master is full (spool_max_bytes="
                f"{self.spool_max_bytes}); its workers deliver it once the server takes "
                "records again"
            )
        return "the spool cannot be written in this uWSGI master (see the error reported before)"

    def full_reason(self, block_timeout: float) -> str:
        """Memory and spool are full; ``block_timeout``: the handler's, as it is now."""
        memory = f"the memory queue (queue_size={self.queue_size}) is full"
        if self.spool_root is None:
            where = f"{memory} and no spool is allowed (spool_dir=False)"
        else:
            where = (
                f"{memory} and so is the spool (spool_max_bytes={self.spool_max_bytes}) "
                "or it cannot be written"
            )
        waited = f" after waiting block_timeout={block_timeout:g}s" if self.block else ""
        return f"{where}{waited}; the server is unavailable or slower than the application"


@dataclass
class ClientStats:
    """Counters of one process's handler (a forked child starts from zero).

    ``queued``: records accepted by ``emit``; ``sent``: records written to a server connection
    (a batch sent again after a reconnect counts again); ``acked``: records the server
    acknowledged; ``spooled``: records written to the spool; ``replayed``: acknowledged records
    that were sent from a spool (this process's own, or one left by a dead process);
    ``dropped``: records lost on purpose (``on_full``, or cut from a batch too large for the
    server); ``reconnects``: connections made after the first; ``fallback``: records written
    to ``fallback_file``; ``pending``: records accepted and not yet acknowledged, dropped or
    written to the fallback file (in memory or in the spool).
    """

    queued: int = 0
    sent: int = 0
    acked: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    reconnects: int = 0
    fallback: int = 0
    pending: int = 0


@dataclass
class Leftover:
    """What :meth:`Sender.close` could not deliver: ``spooled`` records wait in the spool of
    ``client`` in ``spool_dir``; ``lost`` had nowhere to go (no spool, no fallback file);
    ``reason`` why the server did not take them (the last connection error, or no ack)."""

    spooled: int = 0
    lost: int = 0
    spool_dir: str | None = None
    client: str = ""
    reason: str = ""


class ServerRefused(ConnectionError):
    """The server answered with an ``error`` message (wrong token, protocol, ...)."""


def describe(exc: BaseException) -> str:
    """``exc`` as a message says it: its text, without a redundant errno prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.errno is None or exc.strerror[:1].isupper() else str(exc)
    return str(exc) or type(exc).__name__
