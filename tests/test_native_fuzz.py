"""Fuzzing the native decoder and the server's line writer: hostile until bounded.

Whatever bytes arrive, the frame reader yields payloads or raises :class:`FrameError`, and
``decode`` returns a message or raises :class:`ProtocolError` — never anything else, and
quickly. Whatever a batch's records hold (huge or non-finite numbers, nested values, control
characters, lone surrogates, wrong types), the writer turns each into exactly one record in the
file: one line, whose continuation lines (if any) start with a TAB, without raising.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safe_rotating._net.escape import CONTINUATION
from safe_rotating._net.wire import FrameError, FrameReader, ProtocolError, decode, encode
from safe_rotating.server.metrics import Stats
from safe_rotating.server.settings import build
from safe_rotating.server.state import Journal
from safe_rotating.server.writer import Writer, sane_created

BUDGET = 1.0  # seconds: a liveness bound against exponential work, not a speed target
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

hostile_text = st.text(
    st.characters(codec="utf-8")
    | st.sampled_from(["\n", "\r", "\x1b", "\u2028", "\x85", "\t", "\x00", "\udcff"]),
    max_size=80,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | hostile_text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=20,
)
FIELDS = [
    "created",
    "name",
    "levelno",
    "levelname",
    "msg",
    "pathname",
    "filename",
    "module",
    "funcName",
    "lineno",
    "process",
    "processName",
    "thread",
    "threadName",
    "exc_text",
    "stack_info",
    "host",
    "app",
    "extra",
]
records = st.dictionaries(st.sampled_from(FIELDS) | hostile_text, values, max_size=12)


@FUZZ
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_any_byte_stream_is_framed_or_refused(stream: bytes, cuts: list[int]) -> None:
    reader = FrameReader(max_frame=256)
    start = time.perf_counter()
    offset = 0
    try:
        for cut in [*cuts, len(stream)]:
            reader.feed(stream[offset : offset + cut])
            offset += cut
            for payload in reader.frames():
                assert 0 < len(payload) <= 256
                with contextlib.suppress(ProtocolError):
                    assert isinstance(decode(payload), dict)
    except FrameError:
        pass
    assert reader.pending <= 256 + 4 + 64 + len(stream)
    assert time.perf_counter() - start < BUDGET


@FUZZ
@given(st.binary(max_size=300))
def test_any_payload_decodes_to_a_message_or_a_refusal(payload: bytes) -> None:
    start = time.perf_counter()
    reason = ""
    try:
        message = decode(payload)
    except ProtocolError as exc:
        reason = exc.reason
        assert reason  # a counted label, never an empty one
    if not reason:
        assert message["v"] == 1
        assert isinstance(message["type"], str)
    assert time.perf_counter() - start < BUDGET


@FUZZ
@given(st.integers(min_value=0, max_value=100_000), st.sampled_from(["[", '{"a":']))
def test_deep_json_is_a_refusal_not_a_crash(depth: int, opener: str) -> None:
    payload = ('{"v":1,"type":"batch","records":' + opener * depth).encode()
    reason = "invalid json"
    try:
        decode(payload)
    except ProtocolError as exc:
        reason = exc.reason
    assert reason in {"invalid json", "invalid utf-8"}


def a_writer(directory: Path) -> Writer:
    config = build({"file": str(directory / "app.log")})
    journal = Journal(str(directory / "journal"))
    return Writer(config, Stats(), journal, logging.getLogger("tests.fuzz.writer"))


def assert_one_record(line: bytes) -> None:
    assert line.endswith(b"\n")
    text = line[:-1].decode("utf-8")
    first, *rest = text.split("\n")
    assert not first.startswith("\t")
    assert all(part.startswith(CONTINUATION) for part in rest), text
    for char in "\r\x1b\x00\x85\u2028\u2029":
        assert char not in text


@FUZZ
@given(records)
def test_any_record_a_batch_can_carry_becomes_exactly_one_record(
    tmp_path_factory: Any, record: dict[str, Any]
) -> None:
    writer = a_writer(tmp_path_factory.mktemp("w"))
    received = time.time()
    try:  # as a native batch brings it: through JSON where JSON can carry it
        flat = json.loads(encode({"type": "batch", "records": [record]}))["records"][0]
    except (TypeError, ValueError, OverflowError):
        flat = dict(record)
    if not isinstance(flat, dict):
        return
    flat["created"] = sane_created(flat.get("created"), received)
    assert math.isfinite(flat["created"])
    assert flat["created"] <= received + 3600
    assert_one_record(writer.format(flat))
