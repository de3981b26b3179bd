"""Encoding for the client: records as JSON, the queue cut into batches, batches as frames,
frames as a server takes them.

Functions of their arguments only (the ``take_*`` ones consume the head of the queue they are
given): used by the sender's ledger, its connection and its replay of spools, and by tests that
build frames by hand.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import struct
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from safe_rotating._net import rendered as _rendered
from safe_rotating._net import wire as _wire

__all__ = [
    "BATCH_BYTES",
    "RECORD_BYTES",
    "Batch",
    "Item",
    "batch_frame",
    "encode_record",
    "fit_frame",
    "flats_of",
    "for_server",
    "rendered_item",
    "take_flat",
    "take_rendered",
]

# A queued record: flat (a dict, for the server to format: protocol 1) or rendered by the
# handler's formatter (``(line as UTF-8, levelno, created, logger name)``: protocol 2).
Item = dict[str, Any] | tuple[bytes, int, float, str]
BATCH_BYTES: Final = 64 * 1024  # a batch takes no more records once it is this long ...
RECORD_BYTES: Final = 512 * 1024 - 256  # ... but one record may be up to this (then it is cut)
_LENGTH = struct.Struct(">I")


def _dumps(obj: Any) -> bytes:
    """Compact JSON that a strict parser accepts: no NaN/Infinity, valid UTF-8 only."""
    fast = _wire._orjson  # type: ignore[attr-defined]  # read each time: tests switch it off
    if fast is not None:
        return bytes(fast.dumps(obj))
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _clean(value: Any, depth: int = 0) -> Any:
    """``value`` reduced to what every JSON encoder takes (the slow path, after a failure)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int):
        return int(value) if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(value)
    if depth < 6:
        if isinstance(value, list | tuple):
            return [_clean(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {_clean(_safe_repr(k) if not isinstance(k, str) else k): _clean(v, depth + 1)
                    for k, v in value.items()}  # fmt: skip
    return _clean(_safe_repr(value))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" ...[{len(text) - limit} characters cut: record too large]"


def encode_record(flat: dict[str, Any]) -> bytes:
    """One record as JSON bytes, whatever it holds, never longer than :data:`RECORD_BYTES`."""
    try:
        data = _dumps(flat)
    except Exception:  # an int over 64 bits, a lone surrogate, NaN, a dict key orjson refuses
        try:
            data = _dumps(_clean(flat))
        except Exception as exc:
            data = _dumps({"msg": f"<record that could not be encoded: {exc!r}>"})
    if len(data) <= RECORD_BYTES:
        return data
    smaller = dict(flat)
    if "extra" in smaller:
        smaller["extra"] = {"cut": _cut(_safe_repr(smaller["extra"]), 1000)}
    for key, share in (("msg", 2), ("exc_text", 4), ("stack_info", 8)):
        value = smaller.get(key)
        if isinstance(value, str):
            smaller[key] = _cut(value, RECORD_BYTES // (3 * share))
    try:
        data = _dumps(_clean(smaller))
    except Exception as exc:  # pragma: no cover - _clean output always encodes
        data = _dumps({"msg": f"<record that could not be encoded: {exc!r}>"})
    if len(data) > RECORD_BYTES:  # absurdly long names: keep the message head only
        data = _dumps({"msg": _cut(str(smaller.get("msg")), 1000), "created": flat.get("created")})
    return data


def batch_frame(client: str, seq: int, records: Iterable[bytes]) -> bytes:
    """A native ``batch`` frame (with the client id, so the spool can store it as it is)."""
    head = b'{"v":1,"type":"batch","seq":%d,"client":"%s","records":[' % (seq, client.encode())
    body = head + b",".join(records) + b"]}"
    return _LENGTH.pack(len(body)) + body


def fit_frame(frame: bytes, limit: int) -> tuple[bytes, int]:
    """``frame`` cut to at most ``limit`` bytes by leaving out its last records; returns the
    frame and how many records were left out. Only for a server announcing a tiny max_frame."""
    if len(frame) <= limit:
        return frame, 0
    if _rendered.is_batch(frame[4:5]):
        return _rendered.cut_frame(frame, limit)
    message = _wire.loads(frame[4:])
    records = message["records"]
    encoded = [_dumps(record) for record in records]
    keep = len(encoded)
    frame = batch_frame(message["client"], message["seq"], encoded)
    while len(frame) > limit and keep > 0:
        keep -= 1
        frame = batch_frame(message["client"], message["seq"], encoded[:keep])
    return frame, len(encoded) - keep


def rendered_item(record: Item) -> dict[str, Any]:
    """A queued record as a flat record: a rendered one (a tuple) becomes ``msg`` = its line,
    marked ``rendered`` (the fallback file writes it as it is)."""
    if isinstance(record, dict):
        return record
    text, levelno, created, name = record
    return {
        "created": created,
        "name": name,
        "levelno": levelno,
        "msg": text.decode("utf-8", "backslashreplace"),
        "rendered": True,
    }


def flats_of(frame: bytes) -> list[dict[str, Any]]:
    """The records of a batch frame (either protocol) as flat records."""
    if _rendered.is_batch(frame[4:5]):
        flats = _rendered.to_v1_records(_rendered.parse_batch(frame[4:]))
        for flat in flats:
            flat["rendered"] = True
        return flats
    records: list[dict[str, Any]] = _wire.loads(frame[4:])["records"]
    return records


def for_server(frame: bytes, protocol: int) -> bytes:
    """``frame`` as a server speaking ``protocol`` takes it: a protocol-2 batch (from the
    memory queue or a spool) becomes a v1 batch for a server that speaks only protocol 1; that
    server then formats each line with its ``--format`` (``%(message)s`` writes it as is)."""
    if protocol >= 2 or not _rendered.is_batch(frame[4:5]):
        return frame
    batch = _rendered.parse_batch(frame[4:])
    records = [encode_record(flat) for flat in _rendered.to_v1_records(batch)]
    return batch_frame(batch.client, batch.seq, records)


# -- the queue cut into batches ------------------------------------------------------------------
def take_flat(queue: deque[Item], most: int, frame_limit: int) -> list[bytes]:
    """Flat records from the head of ``queue``, encoded, up to ``most`` and :data:`BATCH_BYTES`
    (and ``frame_limit``); stops at a rendered record, which starts the next batch. The first
    record is always taken, however long."""
    limit = min(BATCH_BYTES, frame_limit) - 120  # room for the batch head
    records: list[bytes] = []
    size = 0
    while queue and len(records) < most:
        flat = queue[0]
        if not isinstance(flat, dict):
            break  # a rendered record: it starts the next batch
        data = encode_record(flat)
        if records and size + len(data) + 1 > limit:
            break
        queue.popleft()
        records.append(data)
        size += len(data) + 1
    return records


def take_rendered(
    queue: deque[Item], most: int, frame_limit: int
) -> tuple[tuple[bytes, ...], tuple[int, ...], tuple[float, ...], tuple[str, ...]]:
    """Rendered records from the head of ``queue`` (which must start with one), up to ``most``
    and :data:`BATCH_BYTES` (and ``frame_limit``), as columns: lines, levels, times, names.

    Done mostly in C (slices, ``zip``, ``accumulate``, ``bisect``): the application's threads
    wait for the GIL while this runs, and their ``emit`` latency shows it."""
    items: list[Any] = list(itertools.islice(queue, most))
    if dict in set(map(type, items)):  # records for the server to format follow
        items = items[: next(i for i, item in enumerate(items) if type(item) is dict)]
    texts, levels, created, names = zip(*items, strict=True)
    limit = min(BATCH_BYTES, frame_limit) - 256 - _rendered.PER_RECORD * len(items)
    # How many fit in ``limit`` bytes (the first always does, however long).
    count = max(1, bisect.bisect_right(list(itertools.accumulate(map(len, texts))), limit))
    if count < len(items):
        texts, levels, created, names = (
            texts[:count], levels[:count], created[:count], names[:count]
        )  # fmt: skip
    for _ in range(count):
        queue.popleft()
    return texts, levels, created, names


class Batch:
    """One numbered batch of the ledger: its first record's index, its frame while memory holds
    it, and where the spool keeps it once it is there."""

    __slots__ = ("count", "first", "frame", "from_disk", "length", "offset", "segment", "seq")

    def __init__(self, seq: int, count: int, first: int, frame: bytes) -> None:
        self.seq = seq
        self.count = count
        self.first = first  # index (in emit order) of its first record
        self.frame: bytes | None = frame  # None once only the spool has it
        self.segment = 0
        self.offset = 0
        self.length = len(frame)
        self.from_disk = False  # sent from the spool at least once
