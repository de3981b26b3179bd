"""Validation of constructor arguments: one function per argument, messages that name the value."""

from __future__ import annotations

import codecs
import locale
import math
import os
from typing import Any

__all__ = [
    "check_age",
    "check_count",
    "check_directory",
    "check_encoding",
    "check_errors",
    "check_filename",
    "check_mode",
    "check_owner",
    "check_permissions",
    "check_size",
    "check_timeout",
]


def check_filename(filename: Any) -> str:
    if isinstance(filename, bytes) or not isinstance(filename, str | os.PathLike):
        raise TypeError(
            f"filename must be a str or os.PathLike, got {type(filename).__name__}: {filename!r}"
        )
    text = os.fspath(filename)
    if not isinstance(text, str) or not text:
        raise ValueError(f"filename must be a non-empty path, got {filename!r}")
    if text.endswith(os.sep) or os.path.isdir(text):
        raise ValueError(f"filename={filename!r} names a directory; give the path of the log file")
    return os.path.abspath(text)


def check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def check_mode(mode: Any, rotating: bool) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}: {mode!r}")
    if mode not in ("a", "w", "at", "wt"):
        raise ValueError(f"mode must be 'a' or 'w' (text append or truncate), got {mode!r}")
    # As in the stdlib, a rotating file is always appended to.
    return "a" if rotating else mode[0]


def check_encoding(encoding: Any) -> str:
    if encoding is not None and not isinstance(encoding, str):
        raise TypeError(f"encoding must be a str or None, got {type(encoding).__name__}")
    # None means the locale's encoding, as for open() and the stdlib's FileHandler.
    chosen = encoding if encoding is not None else locale.getpreferredencoding(False)
    try:
        return codecs.lookup(chosen).name
    except LookupError:
        raise ValueError(f"encoding={encoding!r} is not a codec Python knows") from None


def check_errors(errors: Any) -> str:
    if errors is None:
        return "strict"
    if not isinstance(errors, str):
        raise TypeError(f"errors must be a str or None, got {type(errors).__name__}")
    try:
        codecs.lookup_error(errors)
    except LookupError:
        raise ValueError(
            f"errors={errors!r} is not a registered error handler "
            "(use 'strict', 'replace', 'backslashreplace', ...)"
        ) from None
    return errors


def check_timeout(name: str, value: Any, *, text: bool = False) -> float:
    """A timeout or period in seconds: a number more than 0 and finite (infinity would mean
    waiting forever for one stuck peer or process). With ``text`` (settings read from a
    command line or a configuration file), also the same number written as a string, such
    as ``"30"`` or ``"0.5"``; never with a unit (``"5s"``), which durations do not take.

    ``TypeError``: not a number of seconds; ``ValueError``: a number, but not more than 0 and
    finite. Both messages name the argument and quote the value."""
    if isinstance(value, str) and text:
        try:
            seconds = float(value)
        except ValueError:
            raise TypeError(
                f"{name} must be a number of seconds such as 30 or 0.5 (without a unit), "
                f"got {value!r}"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds, got {type(value).__name__}: {value!r}"
        )
    else:
        seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(
            f"{name} must be a positive, finite number of seconds, got {value!r} "
            "(more than 0, and finite: waiting forever would let one stuck peer or process "
            "hold everything up)"
        )
    return seconds


def check_directory(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a str, os.PathLike or None, got {type(value).__name__}")
    return os.path.abspath(os.fspath(value))


def check_permissions(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int such as 0o640, got {type(value).__name__}")
    if not 0 <= value <= 0o7777:
        raise ValueError(f"{name} must be a permission mode between 0 and 0o7777, got {value!r}")
    return value


def check_owner(value: Any) -> tuple[int, int] | None:
    """``(user, group)`` as names or numeric ids, resolved once to ``(uid, gid)``."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise TypeError(f"owner must be a (user, group) pair, got {value!r}")
    import grp
    import pwd

    user, group = value
    try:
        uid = user if isinstance(user, int) else pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"owner: no such user {user!r}") from None
    try:
        gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"owner: no such group {group!r}") from None
    return uid, gid


def check_age(name: str, value: Any) -> float | None:
    """``None``, a number of seconds, or ``"90m"``/``"12h"``/``"14d"``/``"2w"``."""
    if value is None:
        return None
    from safe_rotating._common.units import parse_age

    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be seconds or a string such as '14d', got {value!r}")
    try:
        return parse_age(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def check_size(name: str, value: Any) -> int | None:
    """``None``, a number of bytes, or ``"500MB"``/``"5GiB"``."""
    if value is None:
        return None
    from safe_rotating._common.units import parse_size

    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"{name} must be bytes or a string such as '5GiB', got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if size < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}")
    return size
