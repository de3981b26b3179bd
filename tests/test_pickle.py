"""The stock SocketHandler payload: decoded without ever resolving a global."""

from __future__ import annotations

import logging
import logging.handlers
import os
import pickle
import struct
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safe_rotating._pickle import (
    MAX_EXTRA_KEYS,
    MAX_TEXT,
    PickleRefused,
    decode_pickle,
    record_from_dict,
)


def stock_payload(record: logging.LogRecord) -> bytes:
    """What ``SocketHandler`` sends for ``record``, without its length prefix."""
    handler = logging.handlers.SocketHandler("127.0.0.1", 9)
    try:
        data = handler.makePickle(record)
    finally:
        handler.close()
    (size,) = struct.unpack(">L", data[:4])
    assert size == len(data) - 4
    return data[4:]


def make_record(**kwargs: Any) -> logging.LogRecord:
    fields: dict[str, Any] = {
        "name": "app.db",
        "levelno": logging.WARNING,
        "levelname": "WARNING",
        "msg": "%d rows in %s",
        "args": (3, "users"),
        "lineno": 42,
    }
    fields.update(kwargs)
    return logging.makeLogRecord(fields)


def test_stock_socket_handler_record() -> None:
    record = make_record(request_id="r-1", user={"id": 7, "tags": ["a", "b"]})
    flat = decode_pickle(stock_payload(record))
    assert flat["msg"] == "3 rows in users"
    assert flat["name"] == "app.db"
    assert flat["levelno"] == logging.WARNING
    assert flat["levelname"] == "WARNING"
    assert flat["lineno"] == 42
    assert flat["process"] == os.getpid()
    assert flat["created"] == pytest.approx(record.created)
    assert flat["extra"] == {"request_id": "r-1", "user": {"id": 7, "tags": ["a", "b"]}}


def test_traceback_arrives_as_exc_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = make_record(exc_info=sys.exc_info())
    flat = decode_pickle(stock_payload(record))
    assert "ValueError: boom" in flat["exc_text"]


class Evil:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (pickle.dumps({"msg": Evil(os.system, "touch /tmp/pwned")}), "system"),
        (pickle.dumps(Evil(eval, "1+1")), "builtins.eval"),
        (pickle.dumps({"msg": Evil(print, "x")}, protocol=0), "print"),
        # Hand-written protocol 0: GLOBAL 'os system', a tuple argument, REDUCE.
        (b"cos\nsystem\n(S'echo pwned'\ntR.", "os.system"),
        # Protocol 4: STACK_GLOBAL from two strings, then REDUCE.
        (
            b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x031+1\x94\x85\x94R\x94.",
            "builtins.eval",
        ),
        # INST names a class too.
        (b"(ios\nsystem\nS'id'\np0\n.", "os.system"),
    ],
)
def test_every_global_is_refused(payload: bytes, named: str) -> None:
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(payload)
    assert caught.value.reason == "pickle global"
    assert named in str(caught.value)


def test_extension_codes_are_refused() -> None:
    import copyreg

    copyreg.add_extension("os", "system", 0x7FFFF0)
    try:
        # EXT4 0x7ffff0, then a call: the registry names os.system, find_class refuses it.
        with pytest.raises(PickleRefused) as caught:
            decode_pickle(b"\x80\x02\x84\xf0\xff\x7f\x00(S'id'\ntR.")
        assert caught.value.reason == "pickle global"
    finally:
        copyreg.remove_extension("os", "system", 0x7FFFF0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x80\x04garbage", "invalid pickle"),
        (b"\x80\x04\x95", "invalid pickle"),
        (pickle.dumps([1, 2, 3]), "not a record"),
        (b"\x80\x02P0\n.", "pickle persistent id"),
    ],
)
def test_broken_pickles_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(payload)
    assert caught.value.reason == reason


def test_odd_types_are_coerced_or_dropped() -> None:
    flat = record_from_dict(
        {
            "name": b"bytes-name",
            "levelno": 40.0,
            "lineno": "not a number",
            "process": True,
            "created": float("nan"),
            "msg": ["a", "list"],
            "args": None,
            "funcName": 12,
            (1, 2): "tuple key",
        }
    )
    assert flat["name"] == "bytes-name"
    assert flat["levelno"] == 40
    assert flat["levelname"] == "ERROR"
    assert "lineno" not in flat
    assert flat["process"] == 1
    assert "created" not in flat
    assert flat["msg"] == "['a', 'list']"
    assert flat["funcName"] == "12"
    assert "extra" not in flat


def test_args_are_applied_only_when_plain() -> None:
    assert record_from_dict({"msg": "%(a)s-%(b)d", "args": {"a": "x", "b": 2}})["msg"] == "x-2"
    unsafe = record_from_dict({"msg": "%s", "args": ([1, 2],)})["msg"]
    assert unsafe.startswith("%s ")
    wrong = record_from_dict({"msg": "%d", "args": ("x",)})["msg"]
    assert wrong == "%d ['x']"


def test_sizes_are_capped() -> None:
    # A tiny pickle that would expand to gigabytes through width or repetition.
    assert len(record_from_dict({"msg": "%999999999s", "args": ("x",)})["msg"]) < 100
    big = "y" * 100_000
    flat = record_from_dict({"msg": "%s" * 1000, "args": (big,) * 1000})
    assert len(flat["msg"]) <= MAX_TEXT + 1
    many = {f"k{i}": i for i in range(1000)}
    assert len(record_from_dict({"msg": "m", **many})["extra"]) == MAX_EXTRA_KEYS


def test_shared_references_do_not_explode() -> None:
    # 2**60 paths through 60 levels of shared lists: the walk must stop early.
    node: Any = ["leaf"]
    for _ in range(60):
        node = [node, node]
    payload = pickle.dumps({"msg": "m", "deep": node})
    assert len(payload) < 2000
    flat = decode_pickle(payload)
    assert flat["msg"] == "m"
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert decode_pickle(pickle.dumps({"msg": "c", "loop": cyclic}))["msg"] == "c"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_either_decode_or_are_refused(data: bytes) -> None:
    try:
        flat = decode_pickle(b"\x80\x02" + data)
    except PickleRefused:
        return
    assert isinstance(flat["msg"], str)


json_like = st.recursive(
    # No bytes: protocol 1 (the stock handler's) pickles bytes through a global, refused.
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["msg", "args", "name", "levelno", "lineno", "created",
                                        "process", "exc_text", "x", "y"]), json_like))  # fmt: skip
def test_any_plain_record_dict_becomes_a_record(raw: dict[str, Any]) -> None:
    flat = decode_pickle(pickle.dumps(raw, 1))
    assert isinstance(flat["msg"], str)
    assert len(flat["msg"]) <= MAX_TEXT + 1


def test_protocol_1_bytes_need_a_global_and_are_refused() -> None:
    # The stock handler pickles with protocol 1, which has no opcode for bytes: they are built
    # by calling a global, and the whole record is refused rather than one attribute dropped.
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(pickle.dumps({"msg": "m", "payload": b"raw"}, 1))
    assert caught.value.reason == "pickle global"
    assert decode_pickle(pickle.dumps({"msg": "m", "payload": b"raw"}, 4))["extra"] == {
        "payload": "raw"
    }
