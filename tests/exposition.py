"""A strict reader of the Prometheus text exposition format (0.0.4), for checking ``/metrics``.

:func:`parse` raises ``AssertionError`` on anything a scraper could reject or misread, and on
the naming conventions the server promises: one ``# HELP`` and one ``# TYPE`` per family,
before its samples, which stay together; valid metric and label names; counters ending in
``_total``; histograms with ascending ``le`` bounds, cumulative counts, a ``+Inf`` bucket equal
to ``_count``, and a ``_sum``; snake_case ``reason`` values; and no two families whose names
clash once OpenMetrics drops a counter's ``_total`` (a gauge ``x`` beside a counter ``x_total``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["Family", "parse"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\"n])*)"(,|$)')
_SNAKE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


@dataclass
class Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, **labels: str) -> float:
        """The one sample of this family (not a histogram) with exactly ``labels``."""
        found = [v for name, got, v in self.samples if name == self.name and got == labels]
        assert len(found) == 1, (self.name, labels, found)
        return found[0]


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        assert match, f"bad labels: {text!r}"
        name, value = match.group(1), match.group(2)
        assert name not in labels, f"label {name} twice in {text!r}"
        labels[name] = value
        position = match.end()
    return labels


def _check_histogram(family: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    sums: dict[tuple[tuple[str, str], ...], float] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for name, sample_labels, value in family.samples:
        labels = dict(sample_labels)
        if name.endswith("_bucket"):
            le = labels.pop("le")
            key = tuple(sorted(labels.items()))
            series.setdefault(key, []).append((math.inf if le == "+Inf" else float(le), value))
        elif name.endswith("_sum"):
            sums[tuple(sorted(labels.items()))] = value
        else:
            counts[tuple(sorted(labels.items()))] = value
    assert series.keys() == sums.keys() == counts.keys(), family.name
    for key, buckets in series.items():
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(set(bounds)), f"{family.name}{key}: le not ascending"
        assert bounds[-1] == math.inf, f"{family.name}{key}: no +Inf bucket"
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{family.name}{key}: buckets not cumulative"
        assert values[-1] == counts[key], f"{family.name}{key}: +Inf bucket is not _count"


def parse(text: str) -> dict[str, Family]:
    """Every family of ``text``, by name, after checking all of the above."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, f"two HELP lines for {name}"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert _NAME.fullmatch(name), f"bad metric name {name!r}"
            assert name not in families, f"two TYPE lines for {name}"
            assert kind in _SUFFIXES, f"{name}: unexpected type {kind}"
            assert name in helps, f"{name}: TYPE without HELP first"
            if kind == "counter":
                assert name.endswith("_total"), f"counter {name} does not end in _total"
            current = families[name] = Family(name, kind, helps[name])
        else:
            match = _SAMPLE.fullmatch(line)
            assert match, f"bad sample line {line!r}"
            assert current is not None, f"a sample before any TYPE: {line!r}"
            name = match["name"]
            suffix = name.removeprefix(current.name)
            assert name.startswith(current.name), f"{name} outside its family {current.name}"
            assert suffix in _SUFFIXES[current.kind], f"{name} outside its family {current.name}"
            labels = _labels(match["labels"] or "")
            for label_name in labels:
                assert _LABEL_NAME.fullmatch(label_name), label_name
                assert not label_name.startswith("__"), label_name
            if "reason" in labels:
                assert _SNAKE.fullmatch(labels["reason"]), f"reason not snake_case: {line!r}"
            current.samples.append((name, labels, float(match["value"])))
    for family in families.values():
        assert family.samples, f"{family.name} has no sample"
        if family.kind == "histogram":
            _check_histogram(family)
    bases = [
        f.name.removesuffix("_total") if f.kind == "counter" else f.name for f in families.values()
    ]
    assert len(bases) == len(set(bases)), f"names that clash under OpenMetrics: {sorted(bases)}"
    samples = {n for f in families.values() for n, _, _ in f.samples}
    for family in families.values():
        for suffix in ("_bucket", "_sum", "_count", "_created", "_total"):
            assert family.name + suffix not in samples - {s for s, _, _ in family.samples}
    return families
