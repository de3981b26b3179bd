"""Records from the standard library's ``SocketHandler`` and ``DatagramHandler``, read safely.

Those handlers send ``pickle.dumps(record.__dict__)``. Unpickling network data normally runs
code: a pickle can name any importable callable (``os.system``) and call it. Here the unpickler's
``find_class`` refuses every global, so only the opcodes that build plain data succeed — dicts,
lists, tuples, strings, bytes, numbers, booleans and ``None`` — and nothing can be called.
Persistent ids go through the same refusal; extension codes (``copyreg``) are refused before,
since one already resolved in this process would skip ``find_class``.

Plain data is still dangerous to *build*: the unpickler hashes every dict key and set item, and
hashing a tuple recurses into it without any depth check or memory of shared parts. A 900 000-deep
tuple used as a key overflows the C stack (the server dies of SIGSEGV); 60 levels of ``(x, x)``
pairs, each level a memo reference to the one below, make a 559-byte key whose hash takes 2⁶⁰
steps. So :func:`~safe_rotating._net.pickle_scan.scan` reads the opcodes first, without building
anything, and refuses a frame unless every limit of that module holds (its docstrings give the
rules and why they are enough); only then does the real unpickler run.

The result is then reduced to the flat record of docs/protocol.md: known fields with the right
types, the message rendered, anything else under ``extra`` as JSON types. That walk is bounded
too (values visited, characters kept), because a value can be shared many times over.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import re
from typing import Any, Final, NoReturn

from safe_rotating._net.pickle_scan import (
    MAX_ITEMS,
    MAX_NESTING,
    MAX_NUMBER_KEYS,
    MAX_OPCODES,
    PickleRefused,
    scan,
)

__all__ = [
    "MAX_EXTRA_KEYS",
    "MAX_ITEMS",
    "MAX_NESTING",
    "MAX_NUMBER_KEYS",
    "MAX_OPCODES",
    "MAX_TEXT",
    "PickleRefused",
    "decode_pickle",
    "record_from_dict",
]

MAX_TEXT: Final = 1024 * 1024  # characters of msg, exc_text, stack_info once rendered
MAX_SHORT: Final = 1024  # characters of name, pathname, funcName and the other short fields
MAX_EXTRA_KEYS: Final = 64
MAX_EXTRA_TEXT: Final = 4096  # characters of one string inside an extra value once reduced
_MAX_VALUES: Final = 10_000  # values visited while reducing one record
_MAX_DEPTH: Final = 6  # of a reduced extra value
_MAX_INT_BITS: Final = 8192  # integers shown as digits (Python refuses more than 4300 digits)


class _NoGlobals(pickle.Unpickler):
    """An unpickler that can build data and nothing else."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise PickleRefused(
            # repr: the names are the peer's text, and end up in the server's log
            "pickle global",
            f"a pickle that references {module + '.' + name!r} (globals are refused)",
        )

    def persistent_load(self, pid: Any) -> NoReturn:
        raise PickleRefused("pickle persistent id", "a pickle with a persistent id")


def decode_pickle(payload: bytes) -> dict[str, Any]:
    """The flat record of one ``SocketHandler`` frame payload; raises :class:`PickleRefused`.

    Nothing else escapes: a pickle the scan lets through can still be invalid in ways only the
    unpickler sees (bad escapes, a float text that overflows), and those errors become the
    counted ``invalid pickle`` refusal rather than an internal error.
    """
    complete = scan(payload)
    try:
        # The buffered reader lets the unpickler prefetch instead of calling read() per opcode
        # (5 µs instead of 10 for a stock record); scan checked every length against the
        # payload, so no read asks the buffer for more than it holds.
        value = _NoGlobals(io.BufferedReader(io.BytesIO(payload))).load()
    except PickleRefused:
        raise
    except RecursionError:
        raise PickleRefused("invalid pickle", "a pickle nested too deeply") from None
    except MemoryError:
        raise PickleRefused("invalid pickle", "a pickle too large to build") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, struct errors ...
        raise PickleRefused(
            "invalid pickle", f"a frame that is not a valid pickle: {exc}"
        ) from None
    if not complete:  # scan stopped at a global: find_class must have refused it
        raise PickleRefused("pickle global", "a pickle that references a global")
    if not isinstance(value, dict):
        raise PickleRefused("not a record", f"a pickle of {type(value).__name__}, not of a dict")
    try:
        return record_from_dict(value)
    except (ValueError, OverflowError, RecursionError, MemoryError) as exc:
        raise PickleRefused(
            "invalid record", f"a record that cannot be read: {type(exc).__name__}"
        ) from None


# -- coercion --------------------------------------------------------------------------------
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_SHORT_TEXT: Final = ("name", "levelname", "pathname", "filename", "module")
_OPTIONAL_TEXT: Final = ("funcName", "processName", "threadName")
_LONG_TEXT: Final = ("exc_text", "stack_info")
_INTS: Final = ("levelno", "lineno")
_OPTIONAL_INTS: Final = ("process", "thread")
# A %-conversion: key, flags, width, precision, length modifier, type.
_SPEC: Final = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?[hlL]?(?P<type>.)",
    re.DOTALL,
)
_MAX_WIDTH: Final = 1000


def _text(value: Any, limit: int) -> str | None:
    """A plain value as text, cut to ``limit`` characters; ``None`` for anything else."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, bool | int):
        return str(value) if value.bit_length() < 128 else None
    if isinstance(value, float):
        return repr(value)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if value.bit_length() < 64 else None
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


class _Budget:
    """What one reduction may still visit and keep: a value shared 10 000 times in a small
    pickle (one string, then memo references) must not become 10 000 copies."""

    def __init__(self) -> None:
        self.left = _MAX_VALUES
        self.chars = MAX_TEXT


def _number_text(value: int) -> str:
    """``str(value)``, or a description when that would exceed Python's digit limit."""
    bits = value.bit_length()
    return str(value) if bits <= _MAX_INT_BITS else f"<{bits}-bit integer>"


def _reduce(value: Any, budget: _Budget, depth: int = 0) -> Any:
    """``value`` as JSON types, bounded in depth, length and total work."""
    budget.left -= 1
    if budget.left < 0 or budget.chars <= 0:
        return "…"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, int):
        if value.bit_length() < 64:
            return value
        value = _number_text(value)  # as text, counted like any other
    if isinstance(value, str | bytes):
        text = _text(value, min(MAX_EXTRA_TEXT, budget.chars)) or ""
        budget.chars -= len(text)
        return text
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, list | tuple | set | frozenset):
        out: list[Any] = []
        for item in value:
            if budget.left <= 0:
                out.append("…")
                break
            out.append(_reduce(item, budget, depth + 1))
        return out
    if isinstance(value, dict):
        reduced: dict[str, Any] = {}
        for key, item in value.items():
            if budget.left <= 0:
                break
            name = _text(key, MAX_SHORT) if not isinstance(key, tuple) else None
            if name is not None:
                budget.chars -= len(name)
                reduced[name] = _reduce(item, budget, depth + 1)
        return reduced
    return f"<{type(value).__name__}>"  # cannot happen without globals; kept for safety


def _plain_arg(value: Any) -> bool:
    if isinstance(value, int):
        return value.bit_length() <= _MAX_INT_BITS
    return value is None or isinstance(value, str | bytes | float)


def _listed(text: str, values: Any) -> str:
    """The message followed by its arguments, for when they cannot be applied to it."""
    return f"{text} {_reduce(values, _Budget())!r}"[:MAX_TEXT]


def _render(msg: Any, args: Any) -> str:
    """``msg % args`` when that is safe and cheap, else the message and its arguments as text."""
    text = _text(msg, MAX_TEXT)
    if text is None:
        text = str(_reduce(msg, _Budget()))
    if args is None or args == () or args == {}:
        return text
    if isinstance(args, tuple) and all(_plain_arg(a) for a in args):
        values: list[Any] = list(args)
    elif isinstance(args, dict) and all(
        isinstance(k, str) and _plain_arg(v) for k, v in args.items()
    ):
        values = list(args.values())
    else:
        return _listed(text, args)
    specs = list(_SPEC.finditer(text))
    for spec in specs:
        for part in (spec.group("width"), spec.group("prec")):
            if part is not None and (part == "*" or int(part) > _MAX_WIDTH):
                return _listed(text, values)
    # Every conversion produces at most its widest argument (or the width limit): refuse to
    # build a message larger than the cap before building it.
    widest = max((len(_text(v, MAX_TEXT) or "") for v in values), default=0) + _MAX_WIDTH
    if len(text) + len(specs) * widest > 4 * MAX_TEXT:
        return _listed(text, values)
    try:
        rendered: str = text % args
    except Exception:  # wrong arguments for the format: keep both, as the record would
        return _listed(text, values)
    return rendered if len(rendered) <= MAX_TEXT else rendered[:MAX_TEXT] + "…"


def record_from_dict(raw: dict[Any, Any]) -> dict[str, Any]:
    """The flat record (docs/protocol.md) of a ``LogRecord.__dict__`` that came over the wire.

    Fields of the wrong type are converted when that is obvious and dropped otherwise, so one odd
    field never costs the record.
    """
    flat: dict[str, Any] = {}
    created = raw.get("created")
    if (
        isinstance(created, int | float)
        and not isinstance(created, bool)
        and math.isfinite(created)
    ):
        flat["created"] = float(created)
    for key in _SHORT_TEXT:
        value = _text(raw.get(key), MAX_SHORT)
        if value is not None:
            flat[key] = value
    for key in _OPTIONAL_TEXT:
        flat[key] = _text(raw.get(key), MAX_SHORT)
    for key in _LONG_TEXT:
        flat[key] = _text(raw.get(key), MAX_TEXT)
    for key in _INTS:
        number = _int(raw.get(key))
        if number is not None:
            flat[key] = number
    for key in _OPTIONAL_INTS:
        flat[key] = _int(raw.get(key))
    flat["msg"] = _render(raw.get("msg", ""), raw.get("args"))
    if "levelname" not in flat and "levelno" in flat:
        flat["levelname"] = logging.getLevelName(flat["levelno"])
    extra: dict[str, Any] = {}
    budget = _Budget()
    for key, value in raw.items():
        if not isinstance(key, str) or key in _STANDARD or key in flat:
            continue
        if len(extra) >= MAX_EXTRA_KEYS or budget.left <= 0:
            break
        extra[key[:MAX_SHORT]] = _reduce(value, budget)
    if extra:
        flat["extra"] = extra
    return flat
