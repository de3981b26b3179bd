"""``argparse`` types shared by the command-line tools: a bad value is named in the usage error."""

from __future__ import annotations

import argparse

from safe_rotating._common.units import parse_age, parse_size

__all__ = ["age_arg", "positive_arg", "size_arg"]


def size_arg(text: str) -> int:
    """A size such as ``64KiB`` or ``1048576``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def age_arg(text: str) -> float:
    """An age such as ``30s``, ``12h`` or ``14d``."""
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_arg(text: str) -> int:
    """A whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
