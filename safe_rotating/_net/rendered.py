"""Protocol 2: a batch of lines the client already rendered (docs/protocol.md, "Protocol 2").

A client whose handler has a formatter renders each record itself, as a file-mode handler does,
and sends the lines with the few fields the server may need beside them (the level and logger
name for ``--route`` and ``--forward``, the record's time for ``--forward``). The frame is binary
and compact — for a 120-byte line about 1.13 times the line's bytes — and the lines sit one
after the other at its end, each followed by a line feed, exactly as they are written to the
file. The server can therefore check a whole batch with a few passes in C and write it with one
``write``: see :func:`file_bytes`.

Layout of the payload (after the frame's 4-byte length; integers big-endian)::

    u8    0xB2          marks a protocol-2 batch (a JSON message starts with "{")
    u8    flags         0; a receiver refuses other values
    16    client        the client id (32 hex digits) as bytes
    u64   seq           the batch sequence number, as in a v1 batch
    u32   count         records in the batch
    u16   names         logger names in the table that follows
    names x (u16 length, UTF-8 bytes)
    count x u32         length of each record's text (without its line feed)
    count x u8          level (``levelno``, clipped to 0-255)
    count x u16         index of the record's logger name in the table
    count x f64         ``created`` (seconds since the epoch)
    the texts, each followed by one line feed (0x0A)

Pure functions: no sockets, no ``logging`` handlers.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from safe_rotating._net.escape import encode_record
from safe_rotating._net.wire import ProtocolError

__all__ = [
    "MAGIC",
    "PER_RECORD",
    "Batch",
    "BatchError",
    "cut_frame",
    "encode_batch",
    "file_bytes",
    "is_batch",
    "parse_batch",
    "to_v1_records",
]

MAGIC: Final = 0xB2
_HEAD: Final = struct.Struct(">BB16sQIH")  # magic, flags, client, seq, count, names
_NAME: Final = struct.Struct(">H")
PER_RECORD: Final = 4 + 1 + 2 + 8 + 1  # fixed bytes a record costs besides its text
MAX_RECORDS: Final = 1_000_000  # a count above this is refused before anything is allocated
_LINE_FEED: Final = 0x0A
# What the fast path must not see besides the line feeds ending the lines: the bytes that start
# a character the escaping rule (``_escape``) changes. 0xC2 and 0xE2 lead the UTF-8 of C1
# controls and U+2028/U+2029 (and of harmless characters, which then take the slow path).
_SUSPECT: Final = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f\xc2\xe2"
_TEXT_SUSPECT: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


class BatchError(ProtocolError):
    """A protocol-2 frame that cannot be read; ``reason`` is a short label for the counters
    (the server refuses it like any other protocol error)."""


def is_batch(payload: bytes | memoryview) -> bool:
    """Is ``payload`` (a frame's payload) a protocol-2 batch?"""
    return len(payload) > 0 and payload[0] == MAGIC


# -- the client's side ---------------------------------------------------------------------------
def encode_batch(
    client: str,
    seq: int,
    texts: Sequence[bytes],
    levels: Sequence[int],
    names: Sequence[str],
    created: Sequence[float],
) -> bytes:
    """One protocol-2 batch as a frame (its 4-byte length included).

    ``texts``: each record's rendered line as UTF-8, without a line feed at its end (one inside
    is allowed: the server escapes it). The other sequences run parallel to it.
    """
    count = len(texts)
    table: dict[str, int] = {}
    index = [table.setdefault(name, len(table)) for name in names]
    if count and (min(levels) < 0 or max(levels) > 255):
        levels = [min(max(level, 0), 255) for level in levels]
    head = [
        _HEAD.pack(MAGIC, 0, bytes.fromhex(client), seq, count, len(table)),
    ]
    for name in table:
        raw = name.encode("utf-8", "backslashreplace")[:65535]
        head.append(_NAME.pack(len(raw)))
        head.append(raw)
    head.append(struct.pack(f">{count}I", *map(len, texts)))
    head.append(bytes(levels))
    head.append(struct.pack(f">{count}H", *index))
    head.append(struct.pack(f">{count}d", *created))
    if count:
        head.append(b"\n".join(texts))
        head.append(b"\n")
    payload = b"".join(head)
    return struct.pack(">I", len(payload)) + payload


# -- the server's side ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Batch:
    """A parsed protocol-2 batch. The per-record arrays stay packed until asked for, so a
    server that needs only the lines never builds them."""

    client: str
    seq: int
    count: int
    names: tuple[str, ...]
    payload: bytes
    lengths_at: int  # where the arrays start in ``payload``
    body_at: int  # where the texts start

    def lengths(self) -> tuple[int, ...]:
        return struct.unpack_from(f">{self.count}I", self.payload, self.lengths_at)

    def levels(self) -> bytes:
        start = self.lengths_at + 4 * self.count
        return self.payload[start : start + self.count]

    def name_of(self) -> list[str]:
        """Each record's logger name."""
        start = self.lengths_at + 5 * self.count
        indexes = struct.unpack_from(f">{self.count}H", self.payload, start)
        names = self.names
        return [names[i] for i in indexes]

    def created(self) -> tuple[float, ...]:
        start = self.lengths_at + 7 * self.count
        return struct.unpack_from(f">{self.count}d", self.payload, start)

    def body(self) -> bytes:
        return self.payload[self.body_at :]

    def texts(self) -> list[bytes]:
        """Each record's text, as sent (without its line feed)."""
        body = self.payload
        at = self.body_at
        out: list[bytes] = []
        for length in self.lengths():
            out.append(body[at : at + length])
            at += length + 1
        return out


def parse_batch(payload: bytes) -> Batch:
    """Check a protocol-2 payload and return it as a :class:`Batch`; :class:`BatchError`
    (with a reason for the refusal counters) if anything does not add up."""
    size = len(payload)
    if size < _HEAD.size:
        raise BatchError("bad batch", f"a protocol-2 batch of {size} bytes is too short")
    magic, flags, client, seq, count, names = _HEAD.unpack_from(payload)
    if magic != MAGIC or flags != 0:
        raise BatchError("bad batch", f"a protocol-2 batch with flags {flags:#x}")
    if seq < 1:
        raise BatchError("bad batch", "a protocol-2 batch with sequence number 0")
    if count > MAX_RECORDS or count * PER_RECORD > size:
        raise BatchError("bad batch", f"a protocol-2 batch claims {count} records in {size} bytes")
    at = _HEAD.size
    table: list[str] = []
    for _ in range(names):
        if at + 2 > size:
            raise BatchError("bad batch", "a protocol-2 batch whose name table is cut short")
        (length,) = _NAME.unpack_from(payload, at)
        at += 2
        if at + length > size:
            raise BatchError("bad batch", "a protocol-2 batch whose name table is cut short")
        try:
            table.append(payload[at : at + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise BatchError("invalid utf-8", "a logger name that is not UTF-8") from None
        at += length
    lengths_at = at
    body_at = at + 15 * count
    if body_at > size:
        raise BatchError("bad batch", "a protocol-2 batch whose arrays are cut short")
    lengths = struct.unpack_from(f">{count}I", payload, lengths_at)
    if sum(lengths) + count != size - body_at:
        raise BatchError(
            "bad batch", "a protocol-2 batch whose record lengths do not add up to its text"
        )
    if count:
        indexes = struct.unpack_from(f">{count}H", payload, lengths_at + 5 * count)
        if max(indexes) >= len(table):
            raise BatchError("bad batch", "a protocol-2 batch naming a logger it does not list")
    return Batch(client.hex(), seq, count, tuple(table), payload, lengths_at, body_at)


def file_bytes(batch: Batch, escape: bool = True) -> tuple[bytes, list[bytes] | None]:
    """What the server writes for ``batch``: ``(data, None)`` when the texts can be written as
    they came (every text ends where its length says, with nothing to escape: the usual case,
    checked in C over the whole batch), else ``(b"", lines)`` with each record's line escaped
    by the rule of :mod:`safe_rotating._net.escape` (the slow path, record by record).

    Escaping off (``--no-escape-control-characters``) still makes every record one line's
    worth of bytes ending in a line feed; only the characters are left alone.
    """
    if not batch.count:
        return b"", []
    body = batch.body()
    if _as_it_came(body, batch, escape):
        return body, None
    return b"", [_line(text, escape) for text in batch.texts()]


def _as_it_came(body: bytes, batch: Batch, escape: bool) -> bool:
    """Can ``body`` be written unchanged? If its only suspect bytes are ``count`` line feeds, one
    of them last, it is ``count`` lines with nothing to escape (no line may start with a TAB,
    and the bytes must be UTF-8): three passes in C over the whole batch.

    The lengths are not compared with the lines here: lines that do not match them are still
    ``count`` well-formed lines, which the client could as well have sent as its records."""
    suspects = len(body) - len(body.translate(None, _SUSPECT if escape else b"\n"))
    if suspects != batch.count or not body.endswith(b"\n"):
        return False
    # A TAB is rare in a line: look for one at all first (memchr), for "\n\t" only if so.
    if escape and b"\t" in body and (body.startswith(b"\t") or b"\n\t" in body):
        return False
    return body.isascii() or _valid_utf8(body)


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _line(text: bytes, escape: bool) -> bytes:
    """One record's line by the escaping rule (or as it came, with a line feed, unescaped)."""
    if not escape:
        return text + b"\n"
    plain = not _TEXT_SUSPECT.search(text) and not text.startswith(b"\t")
    if plain and (text.isascii() or _valid_utf8(text)):
        return text + b"\n"
    return encode_record(text.decode("utf-8", "backslashreplace"), True)


def to_v1_records(batch: Batch) -> list[dict[str, Any]]:
    """The batch as v1 records (``msg`` the rendered text), for ``--forward`` and ``--route``,
    and for a client that must send it to a server speaking only protocol 1."""
    names = batch.name_of()
    levels = batch.levels()
    created = batch.created()
    records: list[dict[str, Any]] = []
    for i, text in enumerate(batch.texts()):
        records.append(
            {
                "created": created[i],
                "name": names[i],
                "levelno": levels[i],
                "msg": text.decode("utf-8", "backslashreplace"),
            }
        )
    return records


def cut_frame(frame: bytes, limit: int) -> tuple[bytes, int]:
    """A protocol-2 batch ``frame`` cut to at most ``limit`` bytes by leaving out its last
    records; the frame and how many were left out (for a server announcing a tiny max_frame)."""
    batch = parse_batch(frame[4:])
    texts, levels = batch.texts(), list(batch.levels())
    names, created = batch.name_of(), list(batch.created())
    keep = batch.count
    while keep > 0:
        smaller = encode_batch(
            batch.client, batch.seq, texts[:keep], levels[:keep], names[:keep], created[:keep]
        )
        if len(smaller) <= limit:
            return smaller, batch.count - keep
        keep -= 1
    return encode_batch(batch.client, batch.seq, [], [], [], []), batch.count
