"""Counters, and a small HTTP endpoint serving them in the Prometheus text format.

``GET /metrics`` answers the text exposition format (version 0.0.4) that Prometheus, the
OpenTelemetry collector and VictoriaMetrics scrape; ``GET /healthz`` answers ``ok``. The format is
a few lines of text, so it is written here rather than pulled in through a client library. One
request per connection, a bounded request size and a short timeout: the endpoint cannot be used
to hold memory or connections open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from safe_rotating._engine.stats import HandlerStats
from safe_rotating.server.prometheus import family, label

__all__ = ["Stats", "render", "serve_metrics"]

_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0


@dataclass
class Stats:
    """What the server counted since it started."""

    received: int = 0  # records decoded from any listener
    written: int = 0  # records written to an output file
    duplicates: int = 0  # batches acknowledged without writing (seq <= last_seq)
    duplicate_records: int = 0
    bytes_written: int = 0
    write_errors: int = 0  # failed attempts to write a round (or its journal entries)
    rotations: int = 0  # rotations done by this server
    format_errors: int = 0  # records written with the fallback format
    connections_total: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # records, by reason
    refused: Counter[str] = field(default_factory=Counter)  # frames or connections, by reason
    closed: Counter[str] = field(default_factory=Counter)  # closed by the server, not refused

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def render(
    stats: Stats,
    queue_depth: int,
    connections: int,
    files: Mapping[str, HandlerStats] | None = None,
    frame_bytes: int = 0,
) -> str:
    """The Prometheus text exposition of ``stats``, the gauges, and the engine's counters
    of each output file (``files``: the same :class:`HandlerStats` as ``handler.stats()``);
    ``frame_bytes``: what unfinished frames hold now (bounded by ``--frame-memory``)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> None:
        out.extend(family(name, kind, help_text, samples))

    def counter(name: str, help_text: str, value: int) -> None:
        metric(name, "counter", help_text, [("", value)])

    def by_reason(name: str, help_text: str, counts: Counter[str]) -> None:
        samples = [(f'{{reason="{label(r)}"}}', n) for r, n in sorted(counts.items())]
        metric(name, "counter", help_text, samples)

    counter("received_total", "Records received on any listener.", stats.received)
    counter("written_total", "Records written to an output file.", stats.written)
    counter(
        "duplicates_suppressed_total",
        "Batches acknowledged without writing: already written before a reconnect.",
        stats.duplicates,
    )
    counter(
        "duplicate_records_suppressed_total",
        "Records in batches acknowledged without writing.",
        stats.duplicate_records,
    )
    by_reason("dropped_total", "Records received but not written, by reason.", stats.dropped)
    by_reason(
        "refused_frames_total",
        "Frames, messages and connections refused, by reason.",
        stats.refused,
    )
    counter("write_errors_total", "Failed attempts to write to an output file.", stats.write_errors)
    counter("bytes_written_total", "Bytes written to output files.", stats.bytes_written)
    counter("rotations_total", "Rotations done by this server.", stats.rotations)
    counter(
        "format_errors_total",
        "Records written with the fallback format because --format failed on them.",
        stats.format_errors,
    )
    counter("connections_total", "Connections accepted.", stats.connections_total)
    by_reason(
        "connections_closed_total",
        "Connections the server closed without a fault of the peer (idle, evicted), by reason.",
        stats.closed,
    )
    metric("queue_depth", "gauge", "Records waiting for the writer.", [("", queue_depth)])
    metric("connections", "gauge", "Open connections.", [("", connections)])
    metric(
        "frame_memory_bytes",
        "gauge",
        "Bytes of frames received or being received, not queued yet, all connections together.",
        [("", frame_bytes)],
    )
    if files:
        _render_files(metric, files)
    return "\n".join(out) + "\n"


def _render_files(
    metric: Callable[[str, str, str, Sequence[tuple[str, float]]], None],
    files: Mapping[str, HandlerStats],
) -> None:
    items = sorted(files.items())

    def per_file(
        name: str, kind: str, help_text: str, value: Callable[[HandlerStats], float]
    ) -> None:
        metric(name, kind, help_text, [(f'{{file="{label(p)}"}}', value(s)) for p, s in items])

    per_file(
        "rotations_seen_total",
        "counter",
        "Rotations done by other processes sharing the file, followed by the server.",
        lambda s: s.rotations_seen,
    )
    per_file(
        "largest_overshoot_bytes",
        "gauge",
        "The most bytes past --max-bytes the server saw a current file hold.",
        lambda s: s.largest_overshoot,
    )
    samples: list[tuple[str, float]] = []
    for path, s in items:
        where = f'file="{label(path)}"'
        waits = s.lock_waits
        samples += [
            (f'{{{where},quantile="0.5"}}', waits.p50),
            (f'{{{where},quantile="0.99"}}', waits.p99),
            (f'{{{where},quantile="1"}}', waits.longest),
        ]
        samples += [(f"_sum{{{where}}}", waits.total), (f"_count{{{where}}}", waits.count)]
    metric(
        "lock_wait_seconds",
        "summary",
        "Waits of rotations for the file's rotation lock (quantiles within a factor of two).",
        samples,
    )


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    page: Callable[[], str],
) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            return
        method, _, rest = head.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        if method not in (b"GET", b"HEAD"):
            status, body, kind = "405 Method Not Allowed", "only GET\n", "text/plain"
        elif target == b"/metrics":
            status, body = "200 OK", page()
            kind = "text/plain; version=0.0.4; charset=utf-8"
        elif target == b"/healthz":
            status, body, kind = "200 OK", "ok\n", "text/plain"
        else:
            status, body, kind = "404 Not Found", "try /metrics or /healthz\n", "text/plain"
        data = body.encode()
        header = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(header.encode() + (data if method == b"GET" else b""))
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.drain(), _REQUEST_TIMEOUT)
    finally:
        writer.close()


async def serve_metrics(
    host: str, port: int, page: Callable[[], str], log: logging.Logger
) -> asyncio.AbstractServer:
    """Listen on ``host:port`` and answer every request with ``page()`` or a health check."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _answer(reader, writer, page)
        except Exception as exc:  # a broken scrape must never reach the server
            log.debug("metrics request failed: %s", exc)

    return await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST)
