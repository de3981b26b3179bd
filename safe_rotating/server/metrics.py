"""Counters, and a small HTTP endpoint serving them in the Prometheus text format.

``GET /metrics`` answers the text exposition format (version 0.0.4) that Prometheus, the
OpenTelemetry collector and VictoriaMetrics scrape; ``GET /healthz`` answers ``ok``. The format is
a few lines of text, so it is written here rather than pulled in through a client library (whose
registry and exporter threads the server would not use). One request per connection, a bounded
request size and a short timeout: the endpoint cannot be used to hold memory or connections open.

Every series is listed in docs/operations.md ("Metrics"). Each reason the server can count is
exported from the start with the value 0, so a rate over it never begins with a missing series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from safe_rotating._engine.stats import WAIT_BOUNDS, HandlerStats
from safe_rotating.server.process_metrics import build_info, process_families
from safe_rotating.server.prometheus import family, label, reason_samples

__all__ = [
    "CLOSED_REASONS",
    "DROPPED_REASONS",
    "REFUSED_REASONS",
    "Stats",
    "render",
    "serve_metrics",
]

_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0

# Every reason the server counts, as the text its log lines show (the label is its snake_case).
REFUSED_REASONS: Final = (
    "ack backlog",
    "bad batch",
    "bad client id",
    "bad datagram",
    "bad octet count",
    "bad token",
    "empty frame",
    "frame memory",
    "frame too large",
    "hello timeout",
    "internal error",
    "invalid json",
    "invalid pickle",
    "invalid record",
    "invalid utf-8",
    "journal full",
    "message too large",
    "no hello",
    "no type",
    "not a record",
    "not an object",
    "pickle global",
    "pickle key",
    "pickle number",
    "pickle persistent id",
    "pickle reuse",
    "pickle too deep",
    "pickle too large",
    "pickle without token",
    "read timeout",
    "remote pickle",
    "second hello",
    "stopping",
    "too many connections",
    "too many connections from one peer",
    "truncated frame",
    "unknown dialect",
    "unknown type",
    "unknown version",
    "untokened peer",
)
DROPPED_REASONS: Final = ("not an object", "not written at shutdown", "queue full", "stopping")
CLOSED_REASONS: Final = ("evicted", "idle")


def _zeros(reasons: Iterable[str]) -> Callable[[], Counter[str]]:
    return lambda: Counter(dict.fromkeys(reasons, 0))


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
    connections_total: int = 0  # connections accepted
    # by reason, every known reason present from the start
    dropped: Counter[str] = field(default_factory=_zeros(DROPPED_REASONS))  # records
    refused: Counter[str] = field(default_factory=_zeros(REFUSED_REASONS))  # frames, connections
    closed: Counter[str] = field(default_factory=_zeros(CLOSED_REASONS))  # not refused: idle...

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
    """The Prometheus text exposition of ``stats``, the gauges, the engine's counters
    of each output file (``files``: the same :class:`HandlerStats` as ``handler.stats()``),
    the build and the process; ``frame_bytes``: what unfinished frames hold now (bounded by
    ``--frame-memory``)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> None:
        out.extend(family(name, kind, help_text, samples))

    def counter(name: str, help_text: str, value: int) -> None:
        metric(name, "counter", help_text, [("", value)])

    counter("records_received_total", "Records received on any listener.", stats.received)
    counter("records_written_total", "Records written to an output file.", stats.written)
    counter(
        "duplicate_batches_suppressed_total",
        "Batches acknowledged without writing: already written before a reconnect.",
        stats.duplicates,
    )
    counter(
        "duplicate_records_suppressed_total",
        "Records in batches acknowledged without writing.",
        stats.duplicate_records,
    )
    metric(
        "records_dropped_total",
        "counter",
        "Records received but not written, by reason.",
        reason_samples(stats.dropped),
    )
    metric(
        "refused_frames_total",
        "counter",
        "Frames, messages and connections refused, by reason.",
        reason_samples(stats.refused),
    )
    counter("write_errors_total", "Failed attempts to write to an output file.", stats.write_errors)
    counter("written_bytes_total", "Bytes written to output files.", stats.bytes_written)
    counter("rotations_total", "Rotations done by this server.", stats.rotations)
    counter(
        "records_fallback_format_total",
        "Records written with the fallback format because --format failed on them.",
        stats.format_errors,
    )
    counter("connections_accepted_total", "Connections accepted.", stats.connections_total)
    metric(
        "connections_closed_total",
        "counter",
        "Connections the server closed without a fault of the peer (idle, evicted), by reason.",
        reason_samples(stats.closed),
    )
    metric("queue_depth", "gauge", "Records waiting for the writer.", [("", queue_depth)])
    metric("connections_open", "gauge", "Open connections.", [("", connections)])
    metric(
        "frame_memory_bytes",
        "gauge",
        "Bytes of frames received or being received, not queued yet, all connections together.",
        [("", frame_bytes)],
    )
    if files:
        _render_files(metric, files)
    out += build_info()
    out += process_families()
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
            (f'_bucket{{{where},le="{bound!r}"}}', n)
            for bound, n in zip(WAIT_BOUNDS, waits.below, strict=True)
        ]
        samples.append((f'_bucket{{{where},le="+Inf"}}', waits.count))
        samples += [(f"_sum{{{where}}}", waits.total), (f"_count{{{where}}}", waits.count)]
    metric(
        "lock_wait_seconds",
        "histogram",
        "Waits of this server's rotations for the file's rotation lock, in seconds.",
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
