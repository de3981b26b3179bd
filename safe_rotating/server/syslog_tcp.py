"""A ``--syslog-tcp`` connection: RFC 6587 framing (octet counting or LF-terminated),
detected per connection; each message becomes a record as a ``--syslog-udp`` datagram does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from safe_rotating._net.syslog import SyslogFramer
from safe_rotating._net.syslog import parse as parse_syslog
from safe_rotating.server.context import Refused
from safe_rotating.server.peers import shown_host
from safe_rotating.server.stream import StreamConnection
from safe_rotating.server.workqueue import Work

__all__ = ["SyslogConnection"]

_CHUNK: Final = 64 * 1024


class SyslogConnection(StreamConnection):
    """A ``--syslog-tcp`` connection: RFC 6587 framing, detected per connection."""

    kind = "syslog connection"

    async def serve(self) -> None:
        server = self.server
        if not self.may_skip_token():
            raise Refused(
                "untokened peer",
                "syslog from a peer that --allow-untokened does not name (the server has a token)",
            )
        framer = SyslogFramer(server.config.max_frame)
        started = 0.0  # when the pending, unfinished message began
        loop = asyncio.get_running_loop()
        while True:
            self.idle = framer.pending == 0
            if self.idle:
                data = await self.reader.read(_CHUNK)  # no timer while nothing is pending
            else:
                # One deadline for the whole message: trickling bytes does not extend it.
                deadline = started + server.config.read_timeout
                data = await self.before(deadline, self.reader.read(_CHUNK))
            if not data:
                rest = framer.rest()
                if rest is not None:
                    self.idle = False
                    await self._queue([rest])
                self.idle = True
                return
            framer.feed(data)
            messages = list(framer.messages())
            # Messages not queued yet and an unfinished one count against --frame-memory.
            server.release_frame_bytes(self)
            waiting = framer.pending + sum(len(m) for m in messages)
            if waiting:
                server.hold_frame_bytes(self, waiting)
            if framer.pending and (self.idle or messages):
                started = loop.time()  # a new message began in this read
            if messages:
                self.greeted = True
                self.idle = False  # records under way: neither idle-closed nor evicted now
                await self._queue(messages)
                server.release_frame_bytes(self)
                if framer.pending:
                    server.hold_frame_bytes(self, framer.pending)

    async def _queue(self, messages: list[bytes]) -> None:
        async with self.server.admission:  # parsed only when the queue can take them
            now = time.time()
            records = [parse_syslog(m, now).to_record(now, self.host) for m in messages]
            if self.server.config.token is not None and not self.local:
                for record in records:
                    record["host"] = shown_host(
                        record["host"], self.peer, self.server.hostname, True
                    )
            self.server.stats.received += len(records)
            await self.server.queue.put(Work(records, sum(len(m) for m in messages), source=self))
        self.active_at = time.monotonic()
