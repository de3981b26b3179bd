"""The native wire format (docs/protocol.md): length-prefixed frames of versioned JSON.

Pure functions and one incremental decoder; no sockets, no ``logging`` handlers. The client uses
:func:`flatten` and :func:`encode`; the server uses :class:`FrameReader`, :func:`decode` and
:func:`to_log_record`. JSON goes through ``orjson`` when it is installed (the ``fast`` extra) and
through the standard library otherwise; both produce the same bytes on the wire for our types.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_MAX_FRAME",
    "LENGTH",
    "VERSION",
    "FrameError",
    "FrameReader",
    "ProtocolError",
    "decode",
    "dumps",
    "encode",
    "flatten",
    "frame",
    "loads",
    "to_log_record",
]

VERSION: Final = 1
DEFAULT_MAX_FRAME: Final = 1024 * 1024
LENGTH: Final = struct.Struct(">I")

try:  # optional speed-up; the client stays importable with the standard library alone
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON."""
    if _orjson is not None:
        return bytes(_orjson.dumps(obj))
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(data: bytes | memoryview) -> Any:
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(bytes(data).decode("utf-8"))


class ProtocolError(ValueError):
    """A peer sent something this protocol does not allow; ``reason`` is a short label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class FrameError(ProtocolError):
    """A frame that cannot be read (too long, empty)."""


def frame(payload: bytes) -> bytes:
    """``payload`` behind its 4-byte big-endian length."""
    return LENGTH.pack(len(payload)) + payload


def encode(message: Mapping[str, Any]) -> bytes:
    """One native message as a frame, with the protocol version added."""
    return frame(dumps({"v": VERSION, **message}))


class FrameReader:
    """Split a byte stream into frame payloads, refusing oversized or empty frames.

    ``feed`` the bytes as they arrive; iterate :meth:`frames` for the complete payloads. Memory
    stays bounded by ``max_frame`` plus one read: the length is checked before any payload is
    buffered.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that are not a complete frame yet (non-zero: mid-frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def frames(self) -> Iterator[bytes]:
        buffer = self._buffer
        while len(buffer) >= 4:
            (size,) = LENGTH.unpack_from(buffer)
            if size == 0:
                raise FrameError("empty frame", "a frame of length 0")
            if size > self.max_frame:
                raise FrameError(
                    "frame too large",
                    f"a frame of {size} bytes is over the limit of {self.max_frame}",
                )
            if len(buffer) < 4 + size:
                return
            payload = bytes(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            yield payload


def decode(payload: bytes) -> dict[str, Any]:
    """A native message: a JSON object with ``"v": 1`` and a string ``"type"``."""
    try:
        message = loads(payload)
    except UnicodeDecodeError:
        raise ProtocolError("invalid utf-8", "a frame that is not UTF-8") from None
    except RecursionError:  # the standard library's parser; orjson stops at 1024 levels
        raise ProtocolError("invalid json", "a frame of JSON nested too deeply") from None
    except ValueError as exc:
        try:  # orjson reports bad UTF-8 as a JSON error: tell them apart (error path only)
            bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("invalid utf-8", "a frame that is not UTF-8") from None
        raise ProtocolError("invalid json", f"a frame that is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not an object", "a frame that is not a JSON object")
    if message.get("v") != VERSION:
        raise ProtocolError(
            "unknown version", f"protocol version {message.get('v')!r} (this server speaks 1)"
        )
    if not isinstance(message.get("type"), str):
        raise ProtocolError("no type", "a message without a string 'type'")
    return message


# -- records -------------------------------------------------------------------------------------
# Attributes every LogRecord has; anything else on a record came through ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_SCALARS = (str, int, float, bool, type(None))
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "created": (int, float),
    "name": str,
    "levelno": int,
    "levelname": str,
    "msg": str,
    "pathname": str,
    "filename": str,
    "module": str,
    "funcName": (str, type(None)),
    "lineno": int,
    "process": (int, type(None)),
    "processName": (str, type(None)),
    "thread": (int, type(None)),
    "threadName": (str, type(None)),
    "exc_text": (str, type(None)),
    "stack_info": (str, type(None)),
}


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` reduced to JSON types; anything else becomes its ``repr()``."""
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            return repr(value)
        return value
    if depth < 4:
        if isinstance(value, list | tuple):
            return [_plain(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    try:
        return repr(value)
    except Exception as exc:  # a __repr__ that raises must not lose the record
        return f"<unrepresentable {type(value).__name__}: {exc!r}>"


def flatten(record: logging.LogRecord, exc_text: str | None = None) -> dict[str, Any]:
    """Everything the server needs from ``record``, as JSON types, rendered on this side.

    ``exc_text`` is the formatted traceback (the caller formats it once, with its formatter).
    """
    try:
        message = record.getMessage()
    except Exception as exc:  # bad arguments for the format string: keep what we have
        message = f"{record.msg!r} % {record.args!r} (could not be formatted: {exc!r})"
    flat: dict[str, Any] = {
        "created": record.created,
        "name": record.name,
        "levelno": record.levelno,
        "levelname": record.levelname,
        "msg": message,
        "pathname": record.pathname,
        "filename": record.filename,
        "module": record.module,
        "funcName": record.funcName,
        "lineno": record.lineno,
        "process": record.process,
        "processName": record.processName,
        "thread": record.thread,
        "threadName": record.threadName,
        "exc_text": exc_text if exc_text is not None else record.exc_text,
        "stack_info": record.stack_info,
    }
    extra = {key: _plain(value) for key, value in record.__dict__.items() if key not in _STANDARD}
    if extra:
        flat["extra"] = extra
    return flat


def to_log_record(flat: Mapping[str, Any], **added: Any) -> logging.LogRecord:
    """A ``LogRecord`` for a server-side ``Formatter``: only known, well-typed fields are used.

    Values of the wrong type are replaced by defaults rather than refused, so one odd field never
    costs the record; ``extra`` values become attributes unless they would shadow a standard one.
    """
    attributes: dict[str, Any] = {}
    for key, kinds in _FIELDS.items():
        value = flat.get(key)
        if value is not None and isinstance(value, kinds) and not isinstance(value, bool):
            attributes[key] = value
        elif key in ("exc_text", "stack_info") and value is None:
            attributes[key] = None
    if "levelno" in attributes and "levelname" not in attributes:
        attributes["levelname"] = logging.getLevelName(attributes["levelno"])
    extra = flat.get("extra")
    if isinstance(extra, dict):
        for key, value in extra.items():
            if isinstance(key, str) and key not in _STANDARD:
                attributes.setdefault(key, value)
    for key, value in added.items():
        attributes[key] = value
    created = attributes.get("created")
    if isinstance(created, int | float):
        attributes["msecs"] = (created - int(created)) * 1000
    record = logging.makeLogRecord(attributes)
    record.args = None  # the message arrives rendered
    return record
