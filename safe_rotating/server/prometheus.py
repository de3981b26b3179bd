"""The Prometheus text exposition format (version 0.0.4): a family's lines and label values.

Written once for every part of ``/metrics`` (the server's counters, each output file's, each
``--forward`` relay's, the process's), so all of them escape label values and name samples the
same way. Names follow the Prometheus conventions: a unit suffix (``_bytes``, ``_seconds``),
``_total`` on counters, label values in snake_case.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Final

__all__ = ["PREFIX", "family", "label", "reason_samples", "snake"]

PREFIX: Final = "safe_rotating_server_"

_NOT_WORD: Final = re.compile(r"[^a-z0-9]+")


def label(value: str) -> str:
    """``value`` escaped for a label's double quotes: backslash, quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def snake(reason: str) -> str:
    """A counted reason as a label value: lower case, every run of other characters one
    underscore (``"queue full"`` → ``queue_full``, ``"invalid utf-8"`` → ``invalid_utf_8``).
    The reasons stay readable text in the server's log lines; only the label is rewritten."""
    return _NOT_WORD.sub("_", reason.lower()).strip("_")


def reason_samples(counts: Counter[str], labels: str = "") -> list[tuple[str, float]]:
    """One sample per reason, its label value in snake_case, sorted; ``labels``: labels to put
    before ``reason`` (``'target="x",'``)."""
    merged: Counter[str] = Counter()
    for reason, n in counts.items():
        merged[snake(reason)] += n  # two texts with one label value would be one series twice
    return [(f'{{{labels}reason="{label(r)}"}}', n) for r, n in sorted(merged.items())]


def family(
    name: str,
    kind: str,
    help_text: str,
    samples: Sequence[tuple[str, float]],
    *,
    prefix: str = PREFIX,
) -> list[str]:
    """The ``# HELP`` and ``# TYPE`` lines of metric ``name``, then one line per sample:
    ``(suffix, value)``, the suffix being what follows the name (``""``, ``{reason="x"}``,
    ``_sum{file="a"}``). ``prefix``: the server's own, or ``""`` for the standard
    ``process_*`` names every exporter shares."""
    full = prefix + name
    lines = [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"]
    lines.extend(f"{full}{suffix} {value}" for suffix, value in samples)
    return lines
