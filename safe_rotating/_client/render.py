"""A log record as ``LogServerHandler.emit`` queues it: rendered by the handler's formatter
(protocol 2), or its fields flattened for the server to render (protocol 1). Never raises for a
record whose objects fight back: what could not be rendered is said in the record itself."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from safe_rotating._client.frames import RECORD_BYTES, Item
from safe_rotating._net import wire as _wire

__all__ = ["flatten", "render"]

_DEFAULT_FORMATTER = logging.Formatter()


def render(record: logging.LogRecord, format_record: Callable[[logging.LogRecord], str]) -> Item:
    """The record as ``format_record`` (the handler's ``format``) renders it, with the fields
    the server may route and forward by (protocol 2)."""
    try:
        text = format_record(record)
    except Exception as exc:  # bad arguments, a format field the record lacks, ...
        # Kept, like a record whose fields the server formats: with what went wrong.
        try:
            message = record.getMessage()
        except Exception:
            message = f"{_safe_text(record.msg)} % {_safe_text(record.args)}"
        text = (
            f"{_safe_text(record.levelname)} {_safe_text(record.name)} {message} "
            f"(could not be formatted: {_safe_text(exc)})"
        )
    data = text.encode("utf-8", "backslashreplace")
    if len(data) > RECORD_BYTES:
        cut = len(data) - RECORD_BYTES
        data = data[:RECORD_BYTES] + b" ...[%d bytes cut: record too large]" % cut
    name = record.name
    return (
        data,
        int(record.levelno),
        float(record.created),
        name if type(name) is str else str(name),
    )


def flatten(record: logging.LogRecord, formatter: logging.Formatter | None) -> Item:
    """The record's fields, for the server to render with its ``--format`` (protocol 1); a
    traceback is formatted here, by ``formatter`` (or the default one)."""
    exc_text = record.exc_text
    if record.exc_info and not exc_text:
        formatter = formatter or _DEFAULT_FORMATTER
        exc_text = record.exc_text = formatter.formatException(record.exc_info)
    try:
        return _wire.flatten(record, exc_text)
    except Exception:  # an object whose __str__ and __repr__ both fail, ...
        return _flatten_carefully(record, exc_text)


def _safe_text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception as exc:
            return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _flatten_carefully(record: logging.LogRecord, exc_text: str | None) -> dict[str, Any]:
    """What :func:`_wire.flatten` would give, for a record whose objects fight back."""
    created = record.created if isinstance(record.created, int | float) else time.time()
    if not math.isfinite(created):
        created = time.time()
    flat: dict[str, Any] = {
        "created": created,
        "name": _safe_text(record.name),
        "levelno": record.levelno if isinstance(record.levelno, int) else logging.ERROR,
        "levelname": _safe_text(record.levelname),
        "msg": f"{_safe_text(record.msg)} % {_safe_text(record.args)} (could not be formatted)",
        "pathname": _safe_text(record.pathname),
        "filename": _safe_text(record.filename),
        "module": _safe_text(record.module),
        "funcName": _safe_text(record.funcName),
        "lineno": record.lineno if isinstance(record.lineno, int) else 0,
        "process": record.process if isinstance(record.process, int) else None,
        "processName": _safe_text(record.processName),
        "thread": record.thread if isinstance(record.thread, int) else None,
        "threadName": _safe_text(record.threadName),
        "exc_text": exc_text if isinstance(exc_text, str) else None,
        "stack_info": record.stack_info if isinstance(record.stack_info, str) else None,
    }
    try:
        standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
        extra = {
            _safe_text(key): _safe_text(value)
            for key, value in list(record.__dict__.items())
            if key not in standard
        }
    except Exception as exc:
        extra = {"unreadable": _safe_text(exc)}
    if extra:
        flat["extra"] = extra
    return flat
