"""The Prometheus text exposition format (version 0.0.4): a family's lines and label escaping.

Written once for every part of ``/metrics`` (the server's counters, each output file's, each
``--forward`` relay's), so all of them escape label values and name samples the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["PREFIX", "family", "label"]

PREFIX: Final = "safe_rotating_server_"


def label(value: str) -> str:
    """``value`` escaped for a label's double quotes: backslash, quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def family(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> list[str]:
    """The ``# HELP`` and ``# TYPE`` lines of metric ``name``, then one line per sample:
    ``(suffix, value)``, the suffix being what follows the name (``""``, ``{reason="x"}``,
    ``_sum{file="a"}``)."""
    lines = [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
    lines.extend(f"{PREFIX}{name}{suffix} {value}" for suffix, value in samples)
    return lines
