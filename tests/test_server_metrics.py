"""``/metrics`` follows the Prometheus conventions, and docs/operations.md lists every series.

The page is read back with a strict parser (tests/exposition.py): units and ``_total`` in the
names, snake_case reasons present from the start, a histogram of lock waits, ``build_info``
and the standard ``process_*`` series.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import platform
import re
import time
from collections import Counter
from pathlib import Path

from safe_rotating._engine.stats import WAIT_BOUNDS, HandlerStats, WaitHistogram
from safe_rotating._version import __version__
from safe_rotating.server import forward
from safe_rotating.server.forward import Forwarding
from safe_rotating.server.metrics import (
    CLOSED_REASONS,
    DROPPED_REASONS,
    REFUSED_REASONS,
    Stats,
    render,
)
from safe_rotating.server.process_metrics import process_families
from safe_rotating.server.prometheus import snake
from safe_rotating.server.settings import build

from .exposition import Family, parse

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "safe_rotating_server_"
IMPORTED = time.time()  # this process started before


def waits(*seconds: float) -> HandlerStats:
    histogram = WaitHistogram()
    for s in seconds:
        histogram.add(s)
    return HandlerStats(rotations_seen=2, lock_waits=histogram.summary(), largest_overshoot=9)


def forwarding_page() -> str:
    async def page() -> str:
        config = build({"file": "/tmp/app.log", "forward": ["127.0.0.1:1", "127.0.0.1:2"]})
        forwarding = Forwarding(config, logging.getLogger("test"))
        forwarding.targets[0].dropped["queue full"] += 3
        return forwarding.metrics()

    return asyncio.run(page())


def full_page() -> str:
    stats = Stats(received=5, written=4, duplicates=1, duplicate_records=3, format_errors=2)
    stats.dropped["queue full"] += 1
    stats.refused['say "hi"\n'] += 2
    files = {"/var/log/a.log": waits(0.00005, 0.0003, 0.3), "/var/log/b.log": waits()}
    return render(stats, queue_depth=7, connections=3, files=files, frame_bytes=11)


def test_the_whole_page_is_valid_text_format_by_the_conventions() -> None:
    families = parse(full_page() + forwarding_page())
    assert families[PREFIX + "records_received_total"].value() == 5
    assert families[PREFIX + "records_written_total"].value() == 4
    assert families[PREFIX + "duplicate_batches_suppressed_total"].value() == 1
    assert families[PREFIX + "duplicate_records_suppressed_total"].value() == 3
    assert families[PREFIX + "records_fallback_format_total"].value() == 2
    assert families[PREFIX + "records_dropped_total"].value(reason="queue_full") == 1
    assert families[PREFIX + "refused_frames_total"].value(reason="say_hi") == 2
    assert families[PREFIX + "connections_open"].kind == "gauge"
    assert families[PREFIX + "connections_open"].value() == 3
    assert families[PREFIX + "connections_accepted_total"].kind == "counter"
    assert families[PREFIX + "queue_depth"].value() == 7
    assert families[PREFIX + "frame_memory_bytes"].value() == 11
    assert families[PREFIX + "written_bytes_total"].kind == "counter"
    assert families[PREFIX + "rotations_seen_total"].value(file="/var/log/a.log") == 2
    assert families[PREFIX + "largest_overshoot_bytes"].value(file="/var/log/b.log") == 9
    dropped = families[PREFIX + "forward_records_dropped_total"]
    assert dropped.value(target="127.0.0.1:1", reason="queue_full") == 3
    assert dropped.value(target="127.0.0.1:2", reason="queue_full") == 0
    assert families[PREFIX + "forward_records_sent_total"].value(target="127.0.0.1:2") == 0


def test_no_old_name_is_left() -> None:
    page = full_page() + forwarding_page()
    for old in (
        "received_total",
        "written_total",
        "duplicates_suppressed_total",
        "dropped_total",
        "bytes_written_total",
        "format_errors_total",
        "connections_total",
        "connections ",
        "forwarded_total",
        "forward_dropped_total",
    ):
        assert f"\n{PREFIX}{old}" not in page, old
    assert "quantile=" not in page
    assert "summary" not in page


def test_every_reason_is_exported_from_the_start_with_zero() -> None:
    families = parse(render(Stats(), 0, 0) + forwarding_page())
    for name, reasons in (
        ("records_dropped_total", DROPPED_REASONS),
        ("refused_frames_total", REFUSED_REASONS),
        ("connections_closed_total", CLOSED_REASONS),
    ):
        family = families[PREFIX + name]
        assert {labels["reason"] for _, labels, _ in family.samples} == {snake(r) for r in reasons}
        assert {v for _, _, v in family.samples} == {0}
    relay = families[PREFIX + "forward_records_dropped_total"]
    assert {(lab["target"], lab["reason"]) for _, lab, _ in relay.samples} == {
        (t, snake(r)) for t in ("127.0.0.1:1", "127.0.0.1:2") for r in forward.DROPPED_REASONS
    }


def test_reason_labels_are_snake_case() -> None:
    assert snake("queue full") == "queue_full"
    assert snake("too many connections from one peer") == "too_many_connections_from_one_peer"
    assert snake("invalid utf-8") == "invalid_utf_8"
    assert 'reason="not_written_at_shutdown"' in render(Stats(), 0, 0)


def _reasons_in_the_source() -> set[str]:
    """Each reason text the server's code counts or refuses with."""
    found: set[object] = set()
    callers = {"ProtocolError", "FrameError", "BatchError", "PickleRefused", "_refused"}
    callers |= {"Refused", "refuse", "end", "rest", "note"}
    for path in [
        *(ROOT / "safe_rotating/server").glob("*.py"),
        *(ROOT / "safe_rotating/_net").glob("*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                first = node.args[0]
                if called in callers and isinstance(first, ast.Constant):
                    found.add(first.value)
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in ("refused", "dropped", "closed")
                and isinstance(node.slice, ast.Constant)
            ):
                found.add(node.slice.value)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "reason" for t in node.targets
            ):
                found |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return {r for r in found if isinstance(r, str)}


def test_the_reason_lists_name_every_reason_the_code_counts() -> None:
    known = {*REFUSED_REASONS, *DROPPED_REASONS, *CLOSED_REASONS, *forward.DROPPED_REASONS}
    in_source = _reasons_in_the_source()
    assert len(in_source) > 40  # the scan found the reasons
    assert in_source - known == set()


def test_lock_waits_are_a_histogram_with_exact_buckets() -> None:
    page = render(Stats(), 0, 0, {"/l/a.log": waits(0.00005, 0.0003, 0.002, 0.3, 6.0, 30.0)})
    family = parse(page)[PREFIX + "lock_wait_seconds"]
    assert family.kind == "histogram"
    buckets = {lab["le"]: v for n, lab, v in family.samples if n.endswith("_bucket")}
    assert list(buckets) == [*(repr(b) for b in WAIT_BOUNDS), "+Inf"]
    assert WAIT_BOUNDS[0] <= 0.0002  # 0.1 ms ...
    assert 5 <= WAIT_BOUNDS[-1] <= 10  # ... 5 s
    assert buckets["0.000128"] == 1
    assert buckets["0.000512"] == 2
    assert buckets["0.004096"] == 3
    assert buckets["0.524288"] == 4
    assert buckets["8.388608"] == 5
    assert buckets["+Inf"] == 6
    sums = {n: v for n, _, v in family.samples if not n.endswith("_bucket")}
    assert sums[PREFIX + "lock_wait_seconds_count"] == 6
    assert abs(sums[PREFIX + "lock_wait_seconds_sum"] - 36.30235) < 1e-6


def test_build_info_names_the_release_and_python() -> None:
    family = parse(render(Stats(), 0, 0))["safe_rotating_build_info"]
    assert family.kind == "gauge"
    [(_, labels, value)] = family.samples
    assert value == 1
    assert labels == {"version": __version__, "python": platform.python_version()}


def test_process_metrics_are_this_process() -> None:
    families = parse("\n".join(process_families()) + "\n")
    cpu = families["process_cpu_seconds_total"].value()
    assert 0 < cpu <= time.process_time() + 1
    assert families["process_resident_memory_bytes"].value() > 1 << 20
    assert families["process_open_fds"].value() == len(os.listdir("/proc/self/fd"))
    started = families["process_start_time_seconds"].value()
    assert IMPORTED - 600 < started <= IMPORTED


def test_without_proc_only_cpu_time_is_exported(tmp_path: Path) -> None:
    families = parse("\n".join(process_families(tmp_path)) + "\n")
    assert set(families) == {"process_cpu_seconds_total"}


def test_operations_md_lists_every_series() -> None:
    families: dict[str, Family] = parse(full_page() + forwarding_page())
    documented = (ROOT / "docs/operations.md").read_text()
    table = documented.partition("## Metrics")[2].partition("\n## ")[0]
    rows = re.findall(r"^\| `([a-z_:]+)(?:\{[^}]*\})?` \|", table, re.MULTILINE)
    assert set(rows) == set(families), set(rows) ^ set(families)
    for name, family in families.items():
        assert re.search(rf"^\| `{name}(\{{[^}}]*\}})?` \| {family.kind} \|", table, re.M), name
    for reason in (*REFUSED_REASONS, *DROPPED_REASONS, *CLOSED_REASONS):
        assert f"`{snake(reason)}`" in table, reason


def test_stats_counters_start_from_zero_per_reason() -> None:
    stats = Stats()
    assert stats.dropped == Counter(dict.fromkeys(DROPPED_REASONS, 0))
    assert stats.refused_total == stats.dropped_total == 0


def test_the_reference_parser_reads_the_same_page() -> None:
    """prometheus_client's own parser (what a Python scraper or a pushgateway script uses)
    reads every sample of the page with the same name, labels and value as the strict reader,
    and every family with the same type."""
    from prometheus_client.parser import text_string_to_metric_families

    page = full_page() + forwarding_page()
    ours = parse(page)
    theirs = list(text_string_to_metric_families(page))
    assert {f.type for f in theirs} == {"counter", "gauge", "histogram"}
    kinds = {(f.name + "_total" if f.type == "counter" else f.name): f.type for f in theirs}
    assert kinds == {name: family.kind for name, family in ours.items()}
    samples = sorted((s.name, sorted(s.labels.items()), s.value) for f in theirs for s in f.samples)
    expected = sorted(
        (name, sorted(labels.items()), value)
        for family in ours.values()
        for name, labels, value in family.samples
    )
    assert samples == expected
