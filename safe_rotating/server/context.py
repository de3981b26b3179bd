"""What the server shares with every connection: its settings, counters, queue, journal and
log, and the limits all connections live under together.

::

    ServerContext ── config, stats, log, hostname, journal, queue, admission
                  ── connections open, per peer           (--max-connections[-per-peer])
                  ── bytes of frames not queued yet       (--frame-memory)
                  ── the refusal log, cut to a few lines per reason and window
                  ── the sweep: read, hello and idle timeouts, about once a second

A connection (:mod:`safe_rotating.server.stream`) is given this and nothing more: it never
imports the server that starts and stops everything (:mod:`safe_rotating.server.app`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
from collections import Counter
from typing import Final, Protocol

from safe_rotating._net.escape import escape
from safe_rotating.server.config import ServerConfig
from safe_rotating.server.metrics import Stats
from safe_rotating.server.state import Journal
from safe_rotating.server.workqueue import WorkQueue

__all__ = ["Refused", "ServerContext", "Tracked", "one_line"]

_NOTE_EVERY: Final = 10.0  # seconds of one window of the refusal log
_NOTE_MOST: Final = 5  # refusals logged per reason and window; the rest are counted
_ERROR_EVERY: Final = 60.0  # an internal error is logged once per kind and place a minute
_SWEEP_MOST: Final = 1.0  # seconds between sweeps at most (hello and idle timeouts, note counts)


def one_line(text: str) -> str:
    """``text`` as one line of the server's own log: control characters escaped by the rule
    records follow (:mod:`safe_rotating._net.escape`), and a line feed written ``\\n`` as well,
    since a refusal's detail is one line."""
    return escape(text.replace("\n", "\\n"))


class Refused(Exception):
    """Close the connection: ``reason`` is counted, ``detail`` logged (and told a native peer)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class Tracked(Protocol):
    """What the shared limits ask of an open connection (see ``StreamConnection``)."""

    key: str | None
    held: int
    idle: bool
    task: asyncio.Task[None] | None

    def describe(self) -> str: ...
    def check(self, now: float) -> None: ...
    def quiet_for(self, now: float) -> float | None: ...
    def rest(self, label: str, reason: str) -> None: ...
    def end(self, reason: str, detail: str) -> None: ...
    def close(self) -> None: ...


class ServerContext:
    """The state and limits every connection shares; the server is one (it adds start-up,
    listeners and shutdown in :class:`safe_rotating.server.app.Server`)."""

    def __init__(self, config: ServerConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger("safe_rotating.server")
        self.stats = Stats()
        self.hostname = socket.gethostname()
        self.journal = Journal(config.journal_path)
        self.queue = WorkQueue(config.queue_size)
        self.connections: set[Tracked] = set()
        self.per_peer: Counter[str] = Counter()  # open connections per peer_key
        self.stopping = False
        # reason -> [window start, shown, unshown, window length]
        self._noted: dict[str, list[float]] = {}
        self.frame_bytes = 0  # bytes of unfinished frames, all connections: --frame-memory
        # Held from decoding a frame to queuing its records. Never waited for while the queue
        # has room (nothing awaits inside); while it is full, the connections wait here in
        # turn, holding their frames as bytes counted by --frame-memory, not as decoded
        # records (several times larger, and not counted).
        self.admission = asyncio.Lock()

    # -- what goes wrong ---------------------------------------------------------------------
    def note(
        self, reason: str, detail: str, *, every: float = _NOTE_EVERY, most: int = _NOTE_MOST
    ) -> None:
        """Log a refusal; floods are cut to ``most`` lines per reason every ``every`` seconds
        (all are counted in the metrics; the sweep logs how many were not shown).

        ``detail`` may hold a peer's text (a global a pickle names, an exception's message):
        it is written on one line with control characters escaped (:func:`one_line`), so no
        peer can start a line of the server's own log, nor send its terminal escape codes."""
        now = time.monotonic()
        window = self._noted.get(reason)
        if window is None or now - window[0] >= window[3]:
            if window is not None:
                self._untold(reason, window)
            window = self._noted[reason] = [now, 0, 0, every]
        if window[1] < most:
            window[1] += 1
            self.log.warning("%s", one_line(detail))
        else:
            window[2] += 1

    def _untold(self, reason: str, window: list[float]) -> None:
        if window[2]:
            self.log.warning(
                "%d more refusal(s) for %r were not logged (see the metrics)", window[2], reason
            )

    def _flush_notes(self, now: float) -> None:
        """Windows that ended: say how many refusals they did not show, and forget them."""
        for reason, window in list(self._noted.items()):
            if now - window[0] >= window[3]:
                self._untold(reason, window)
                del self._noted[reason]

    def internal_error(self, where: str, exc: Exception) -> None:
        """An unexpected exception (a bug) while serving one peer: it costs that connection or
        datagram, never the server. Counted as refused ("internal error") and logged in one
        line naming the exception and where it was raised, once a minute per kind and place
        with the count of the others: a peer that can trigger it on every connection must not
        fill the log with tracebacks. The traceback itself is logged at DEBUG level."""
        self.stats.refused["internal error"] += 1
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
        kind = f"{type(exc).__name__}{at}"
        text = repr(str(exc)[:200])  # repr: a peer's bytes may be in it
        self.note(
            f"internal error: {kind}",
            f"{where}: unexpected {kind}: {text}; closed it (a bug: please report it)",
            every=_ERROR_EVERY,
            most=1,
        )
        # The traceback at DEBUG level, escaped as a record is: its lines continue with a TAB.
        formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.log.debug("%s", escape(f"{where}: unexpected error\n{formatted.rstrip()}"))

    # -- limits shared by all connections ------------------------------------------------------
    def crowded(self, key: str | None) -> bool:
        """Are connections scarce: three quarters of ``--max-connections`` open, or ``key``'s
        peer at its ``--max-connections-per-peer``? Then idle stock-pickle and syslog
        connections are closed too (see ``StreamConnection.check``)."""
        config = self.config
        if 4 * len(self.connections) >= 3 * config.max_connections:
            return True
        return key is not None and self.per_peer[key] >= config.max_connections_per_peer

    def hold_frame_bytes(self, connection: Tracked, size: int) -> None:
        """``connection`` received ``size`` more bytes of a frame it has not queued yet: still
        arriving, or complete and waiting for room in a full queue. When such frames together
        pass ``--frame-memory``, the connection holding the most is closed (refused, "frame
        memory") until they fit — a peer hoarding half-sent frames loses them, and so does one
        of many connections each holding a frame while the queue is full; a client sending an
        ordinary batch does not. That may be the caller: Refused."""
        self.frame_bytes += size
        connection.held += size
        limit = self.config.frame_memory
        while self.frame_bytes > limit:
            victim = max(self.connections, key=lambda c: c.held, default=connection)
            if victim.held <= 0:
                break
            detail = (
                f"frames not queued yet held {self.frame_bytes} bytes, over --frame-memory "
                f"({limit}); this connection held the most ({victim.held})"
            )
            if victim is connection:
                raise Refused("frame memory", detail)
            victim.end("frame memory", detail)
            if victim.held:  # not ended (the server is stopping): the caller gives way
                raise Refused(
                    "frame memory",
                    f"frames not queued yet held {self.frame_bytes} bytes, over --frame-memory "
                    f"({limit}), while stopping",
                )

    def release_frame_bytes(self, connection: Tracked) -> None:
        """``connection`` queued its frame's records (or the frame had none), or ended: its
        bytes leave the budget."""
        self.frame_bytes -= connection.held
        connection.held = 0

    def make_room(self) -> bool:
        """``--max-connections`` are open and one more came: close the connection that has
        been quiet the longest among those that may be (``StreamConnection.quiet_for``: a native
        client is told ``bye`` and comes back when it has records), so that connections nobody
        uses cannot lock real clients out. False if every connection has work under way or
        sent records within ``EVICT_QUIET``: then the new one is refused. Counted under
        ``connections_closed_total{reason="evicted"}``."""
        now = time.monotonic()
        victim: Tracked | None = None
        longest = 0.0
        for connection in self.connections:
            quiet = connection.quiet_for(now)
            if quiet is not None and (victim is None or quiet > longest):
                victim, longest = connection, quiet
        if victim is None:
            return False
        victim.rest(
            "evicted",
            f"idle for {longest:.0f}s while --max-connections ({self.config.max_connections}) "
            "were open: closed to make room for a new connection",
        )
        self.connections.discard(victim)  # its task ends soon; its place is taken now
        self.note(
            "evicted",
            f"closed {victim.describe()}, idle for {longest:.1f}s, to make room for a new "
            f"connection: --max-connections ({self.config.max_connections}) were open",
        )
        return True

    async def sweep(self) -> None:
        """About once a second: close connections past their read, hello or idle timeout (see
        ``StreamConnection.check``), and log the counts of refusals whose log window ended. One
        pass over the connections instead of a timer each: an idle connection costs nothing."""
        config = self.config
        period = max(
            0.05,
            min(
                _SWEEP_MOST,
                config.hello_timeout / 4,
                config.idle_timeout / 4,
                config.read_timeout / 4,
            ),
        )
        while not self.stopping:
            await asyncio.sleep(period)
            now = time.monotonic()
            for connection in list(self.connections):
                try:
                    connection.check(now)
                except Exception as exc:
                    self.internal_error(f"sweep of {connection.describe()}", exc)
            self._flush_notes(now)
