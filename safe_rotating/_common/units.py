"""Sizes and ages as people write them in settings: ``"10MiB"``, ``"14d"``.

Parsed the same way for the handlers' arguments, the server's flags and TOML file, and the
stress command's options.
"""

from __future__ import annotations

import re

__all__ = ["parse_age", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Parse ``"16384"``, ``"16KiB"``, ``"10MB"``, ``"1g"`` into bytes.

    ``KiB``/``MiB``/... are powers of 1024; ``KB``/``MB``/... are powers of 1000 (SI); a bare
    ``K``/``M``/``G`` means the binary unit, as most logging configurations intend.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 16384, 16KiB, 10MB, 1GiB)")
    number, prefix, suffix = match.groups()
    power = _POWERS[prefix.lower()]
    base = 1000 if suffix.lower() == "b" and prefix else 1024
    return int(number) * int(base**power)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str | int | float) -> float:
    """Parse ``"14d"``, ``"12h"``, ``"90m"``, ``"30s"``, ``"2w"`` or a number of seconds."""
    if isinstance(value, bool):
        raise TypeError(f"not an age: {value!r} (examples: 3600, '12h', '14d')")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _AGE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"not an age: {value!r} (examples: 3600, '90m', '12h', '14d', '2w')")
        seconds = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"an age must be a positive, finite number of seconds, got {value!r}")
    return seconds
