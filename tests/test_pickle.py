"""The stock SocketHandler payload: decoded without ever resolving a global."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import pickle
import struct
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safe_rotating._net.pickles import (
    MAX_EXTRA_KEYS,
    MAX_ITEMS,
    MAX_NESTING,
    MAX_NUMBER_KEYS,
    MAX_OPCODES,
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


def test_a_cached_extension_code_is_refused_too() -> None:
    # Once any unpickler in the process has resolved an extension code, copyreg's cache hands
    # the callable to the next one without asking find_class: EXT1, (), REDUCE would call it.
    import copyreg

    copyreg.add_extension(os.getpid.__module__, "getpid", 0xF0)
    try:
        assert pickle.loads(pickle.dumps(os.getpid, 2)) is os.getpid  # fills the cache
        with pytest.raises(PickleRefused) as caught:
            decode_pickle(b"\x80\x02}X\x01\x00\x00\x00a\x82\xf0)Rs.")
        assert caught.value.reason == "pickle global"
    finally:
        copyreg.remove_extension(os.getpid.__module__, "getpid", 0xF0)
        copyreg.clear_extension_cache()


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


# -- hostile pickles: bounded before anything is built (issue 13) ---------------------------
_CHILD = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from safe_rotating._net.pickles import PickleRefused, decode_pickle
payload = sys.stdin.buffer.read()
start = time.perf_counter()
try:
    decode_pickle(payload)
    outcome = "decoded"
except PickleRefused as exc:
    outcome = exc.reason
took = time.perf_counter() - start
# VmHWM: this process's own peak (ru_maxrss is inherited from the parent across fork and exec,
# so it would report the pytest worker's peak instead).
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(outcome, took, peak, sep="|")
"""


def decode_in_child(payload: bytes) -> tuple[str, float, int]:
    """``decode_pickle(payload)`` in a child limited to 1 GiB: (refusal reason or "decoded",
    seconds, peak RSS in KiB). A crash or a hang fails the test instead of killing pytest."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD], input=payload, capture_output=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        pytest.fail("decode_pickle did not return within 15 s")
    assert done.returncode == 0, (
        f"the decoder died (exit {done.returncode}): {done.stderr.decode()[-1500:]}"
    )
    outcome, took, rss = done.stdout.decode().strip().split("|")
    return outcome, float(took), int(rss)


def test_a_deep_tuple_used_as_a_key_is_refused_without_a_crash() -> None:
    # 900 000 TUPLE1 around None, used as a dict key: hashing it overflowed the C stack.
    payload = b"\x80\x02}N" + b"\x85" * 900_000 + b"Ns."
    outcome, took, _ = decode_in_child(payload)
    assert outcome == "pickle too deep"
    assert took < 1


def _doubling(level: bytes) -> bytes:
    """60 levels of ``(x, x)`` from None, each level written as ``level``."""
    return b"N" + b"".join(level.replace(b"I", bytes([i])) for i in range(60))


@pytest.mark.parametrize(
    "payload",
    [
        # DUP then TUPLE2: each level is a pair of the one below. Hashing: 2**60 steps.
        b"\x80\x02}" + _doubling(b"2\x86") + b"Ns.",
        # The same through the memo: BINPUT i, BINGET i, TUPLE2.
        b"\x80\x02}" + _doubling(b"qIhI\x86") + b"Ns.",
        # MEMOIZE and BINGET (protocol 4), the key of a dict built by DICT.
        b"\x80\x04(" + _doubling(b"\x94hI\x86") + b"Nd.",
        # As a set item (ADDITEMS) and a frozenset item (FROZENSET) inside a record.
        b"\x80\x04}X\x01\x00\x00\x00a\x8f(" + _doubling(b"2\x86") + b"\x90s.",
        b"\x80\x04}X\x01\x00\x00\x00a(" + _doubling(b"2\x86") + b"\x91s.",
    ],
    ids=["dup", "binget", "memoize-dict", "set", "frozenset"],
)
def test_a_shared_tuple_used_as_a_key_is_refused_at_once(payload: bytes) -> None:
    assert len(payload) < 600
    outcome, took, _ = decode_in_child(payload)
    assert outcome == "pickle key"
    assert took < 1


def test_a_huge_memo_index_allocates_nothing() -> None:
    # LONG_BINPUT 2**25: the unpickler sizes its memo array by the index (512 MiB here).
    payload = b"\x80\x02}r" + struct.pack("<I", 1 << 25) + b"."
    outcome, _, rss = decode_in_child(payload)
    assert outcome == "pickle too large"
    assert rss < 200_000


def test_listing_arguments_cannot_multiply_one_shared_string() -> None:
    # One 500 kB string, then 20 000 memo references to it as the arguments of a message with
    # too many conversions to apply: listing them as text meant 10 GB.
    big = "x" * 500_000
    payload = pickle.dumps({"msg": "%s" * 11, "args": (big,) * MAX_ITEMS}, 2)
    assert len(payload) < 600_000
    outcome, took, rss = decode_in_child(payload)
    assert outcome == "decoded"
    assert took < 1
    assert rss < 300_000


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"msg": "m", "big": 1 << 8_000_000}, 2),  # LONG4 of 1 MB
        pickle.dumps({"msg": "%s", "args": (1 << 20_000,)}, 2),  # in the arguments
        # Protocol 0/1 text (LONG and INT), in hex: the unpickler reads them in base 0.
        b"(X\x03\x00\x00\x00msgX\x01\x00\x00\x00mX\x01\x00\x00\x00nL0x" + b"f" * 100_000 + b"L\nd.",
        b"(X\x03\x00\x00\x00msgX\x01\x00\x00\x00mX\x01\x00\x00\x00nI0x" + b"f" * 100_000 + b"\nd.",
    ],
    ids=["long4", "args", "long-text", "int-text"],
)
def test_huge_integers_are_a_counted_refusal(payload: bytes) -> None:
    # They raised ValueError (Python's 4300-digit limit) while the record was formatted.
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(payload)
    assert caught.value.reason == "pickle number"


def test_record_from_dict_survives_huge_integers() -> None:
    flat = record_from_dict({"msg": "%s %d", "args": (1 << 100_000, 1), "n": 1 << 100_000})
    assert flat["msg"].startswith("%s %d [")
    assert flat["extra"] == {"n": "<100001-bit integer>"}
    assert record_from_dict({"msg": "%d", "args": (1 << 200,)})["msg"] == str(1 << 200)


def test_one_string_shared_many_times_in_extra_stays_small() -> None:
    # 9 000 references to one 5 000-character string: 37 MB once each was cut to 4 096.
    flat = decode_pickle(pickle.dumps({"msg": "m", "x": ["y" * 5000] * 9000}, 2))
    assert len(json.dumps(flat["extra"])) < MAX_TEXT + 100_000


@pytest.mark.parametrize(
    "raw",
    [{"msg": "m", 1: "x"}, {"msg": "m", b"k": "x"}, {"msg": "m", None: "x"}],
    ids=["int", "bytes", "none"],
)
def test_record_keys_must_be_str(raw: dict[Any, Any]) -> None:
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(pickle.dumps(raw, 4))
    assert caught.value.reason == "pickle key"


def test_inner_keys_must_be_scalars() -> None:
    inner = {"s": 1, b"b": 2, 3: 3, 4.5: 4, None: 5, True: 6}
    assert decode_pickle(pickle.dumps({"msg": "m", "d": inner}, 4))["extra"] == {
        "d": {"s": 1, "b": 2, "3": 3, "4.5": 4, "True": 6}
    }
    for key in [(1, 2), frozenset({1})]:
        with pytest.raises(PickleRefused) as caught:
            decode_pickle(pickle.dumps({"msg": "m", "d": {key: 1}}, 4))
        assert caught.value.reason == "pickle key"
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(pickle.dumps({"msg": "m", "s": {(1, 2)}}, 4))
    assert caught.value.reason == "pickle key"


def test_number_keys_are_few() -> None:
    # A number's hash is public: n and n + 2**61 - 1 collide, and colliding keys cost n**2.
    colliding = {1 + k * (2**61 - 1): 0 for k in range(MAX_NUMBER_KEYS)}
    start = time.perf_counter()
    decode_pickle(pickle.dumps({"msg": "m", "d": colliding}, 2))
    assert time.perf_counter() - start < 0.5
    colliding[0] = 0
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(pickle.dumps({"msg": "m", "d": colliding}, 2))
    assert caught.value.reason == "pickle key"


def test_nesting_is_bounded() -> None:
    node: Any = "leaf"
    for _ in range(MAX_NESTING - 1):
        node = [node]
    assert decode_pickle(pickle.dumps({"msg": "m", "deep": node}, 1))["msg"] == "m"
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(pickle.dumps({"msg": "m", "deep": [node]}, 1))
    assert caught.value.reason == "pickle too deep"
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(b"\x80\x02}" + b"(" * (MAX_NESTING + 1))
    assert caught.value.reason == "pickle too deep"


def test_a_container_cannot_grow_after_it_was_placed() -> None:
    # Top-down through the memo: L0 goes into the record first, then L1 into L0, L2 into L1...
    # Each step deepens the record behind a depth count taken when L0 was placed.
    payload = b"\x80\x02}X\x01\x00\x00\x00a]q\x00s"  # record["a"] = L0 (memo 0)
    for level in range(3):
        payload += b"h" + bytes([level]) + b"]q" + bytes([level + 1]) + b"a0"  # L(i).append(L(i+1))
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(payload + b".")
    assert caught.value.reason == "pickle reuse"
    # A container holding itself is fine: the stock pickler writes a = [a] that way.
    loop: list[Any] = [1]
    loop.append(loop)
    for protocol in (0, 1, 2):
        assert decode_pickle(pickle.dumps({"msg": "m", "loop": loop}, protocol))["msg"] == "m"


def test_work_is_bounded() -> None:
    many = b"\x80\x02}X\x01\x00\x00\x00a](" + b"N" * MAX_OPCODES + b"es."
    start = time.perf_counter()
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(many)
    assert caught.value.reason == "pickle too large"
    assert time.perf_counter() - start < 1
    with pytest.raises(PickleRefused) as caught:
        decode_pickle(pickle.dumps({"msg": "m", "a": [None] * (MAX_ITEMS + 1)}, 2))
    assert caught.value.reason == "pickle too large"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_of_plain_data_still_decodes(protocol: int) -> None:
    shared = {"k": [1, 2.5, None, True, "text"]}
    raw = {
        "msg": "%s and %(missing)s",
        "args": (("nested", ("tuple", 1)), shared),
        "name": "app",
        "exc_text": "Traceback (most recent call last):\n  boom",
        "thread": 140233494932352,
        "one": shared,
        "two": shared,
        "numbers": {1: "one", 2.5: "two and a half", None: "none"},
        "text": "é" * 300,
    }
    flat = decode_pickle(pickle.dumps(raw, protocol))
    assert flat["exc_text"] == raw["exc_text"]
    assert flat["thread"] == 140233494932352
    assert flat["extra"]["one"] == flat["extra"]["two"] == {"k": [1, 2.5, None, True, "text"]}
    assert flat["extra"]["numbers"] == {"1": "one", "2.5": "two and a half"}
    assert flat["extra"]["text"] == "é" * 300
