"""Fuzzing the stock-pickle decoder: every frame is decoded or refused, quickly.

Two sources of frames: real ``SocketHandler`` payloads damaged the ways a network or an attacker
damages them (flipped bytes, truncation, splices, repeated and deleted chunks), and opcode
programs generated from scratch, with repeated chunks to reach deep and wide shapes. For each:
only :class:`PickleRefused` may escape, and the decode takes < 0.2 s. For the generated programs
an oracle also checks what the scan promises on the object the unpickler actually builds: a dict
with str keys, every key and set item a scalar anywhere inside, nesting within ``MAX_NESTING``.
"""

from __future__ import annotations

import io
import struct
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safe_rotating._net.pickle_scan import MAX_NESTING, PickleRefused, scan
from safe_rotating._net.pickles import _NoGlobals, decode_pickle
from tests.test_pickle import make_record, stock_payload

# Seconds per decode: a liveness bound, not a speed target. The worst frames the limits admit
# take well under 0.1 s on an idle core; the margin is for a loaded 2-core CI machine. What it
# catches is exponential work (the 2**60 hash), which no margin would hide.
BUDGET = 1.0
FUZZ = settings(
    max_examples=150,
    deadline=None,  # timed by each test itself, around the decode only
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def decoded_or_refused(payload: bytes) -> dict[str, Any] | None:
    """The flat record, or None when refused; fails on any other outcome or a slow decode."""
    start = time.perf_counter()
    try:
        flat = decode_pickle(payload)
    except PickleRefused:
        flat = None
    took = time.perf_counter() - start
    assert took < BUDGET, f"{took:.3f} s for a frame of {len(payload)} bytes"
    if flat is not None:
        assert isinstance(flat["msg"], str)
    return flat


# -- damaged stock payloads ------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=12,
)


@st.composite
def stock_payloads(draw: st.DrawFn) -> bytes:
    """What ``SocketHandler`` sends for a record with drawn message, arguments and extras."""
    msg, args = draw(
        st.tuples(st.just("plain"), st.just(()))
        | st.tuples(st.sampled_from(["%s", "%r", "<%s>"]), st.tuples(values))
        | st.tuples(st.just("%s and %r"), st.tuples(scalars, values))
        | st.tuples(st.just("%(a)s"), st.fixed_dictionaries({"a": values}))
    )
    extra = draw(st.dictionaries(st.sampled_from(["user", "ids", "ctx", "n"]), values))
    record = make_record(msg=msg, args=args, **extra)
    if draw(st.booleans()):
        try:
            raise ValueError("boom")
        except ValueError as exc:
            record.exc_info = (type(exc), exc, exc.__traceback__)
    return stock_payload(record)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(stock_payloads()))
    for _ in range(draw(st.integers(1, 4))):
        size = len(data)
        at = draw(st.integers(0, max(size - 1, 0)))
        upto = draw(st.integers(at, min(size, at + 64)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "repeat", "delete", "splice"]))
        if kind == "flip" and size:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "repeat":
            data[at:upto] = data[at:upto] * draw(st.integers(2, 500))
        elif kind == "delete":
            del data[at:upto]
        else:  # the tail of another record in place of this one's
            other = draw(stock_payloads())
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


@FUZZ
@given(stock_payloads())
def test_stock_payloads_decode(payload: bytes) -> None:
    flat = decoded_or_refused(payload)
    assert flat is not None
    assert flat["name"] == "app.db"


@FUZZ
@given(damaged())
def test_damaged_stock_payloads_are_decoded_or_refused(payload: bytes) -> None:
    decoded_or_refused(payload)


# -- generated opcode programs ---------------------------------------------------------------
def counted(prefix: bytes, width: str, data: bytes) -> bytes:
    return prefix + struct.pack(width, len(data)) + data


def joined(parts: list[bytes]) -> bytes:
    return b"".join(parts)


# The opcodes of one value, valid by construction (every protocol's way of writing it); the
# hostile ones come from the repetitions and memo references, and from the splices below.
scalar_ops = st.one_of(
    st.sampled_from([b"N", b"\x88", b"\x89", b"I01\n"]),
    st.integers(0, 255).map(lambda i: b"K" + bytes([i])),
    st.integers(-(2**31), 2**31 - 1).map(lambda i: b"J" + struct.pack("<i", i)),
    st.integers(-(10**40), 10**40).map(lambda i: b"L%d\n" % i),
    st.integers(-(10**9), 10**9).map(lambda i: b"I%d\n" % i),
    st.floats().map(lambda f: b"G" + struct.pack(">d", f)),
    st.binary(max_size=40).map(lambda b: counted(b"\x8a", "<B", b)),  # LONG1
    st.sampled_from(["msg", "args", "x", "é"]).map(lambda k: counted(b"X", "<I", k.encode())),
    st.text(max_size=6).map(lambda s: counted(b"\x8c", "<B", s.encode())),
    st.binary(max_size=6).map(lambda b: counted(b"C", "<B", b)),  # SHORT_BINBYTES
)
memo_index = st.integers(0, 2)


def containers(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    many = st.lists(inner, max_size=4)
    keyed = st.lists(
        st.tuples(st.one_of(scalar_ops, scalar_ops, inner), inner).map(joined), max_size=3
    )
    repeat = st.integers(1, 130)
    return st.one_of(
        inner.map(lambda v: v + b"\x85"),  # TUPLE1
        st.tuples(inner, inner).map(lambda t: t[0] + t[1] + b"\x86"),  # TUPLE2
        many.map(lambda xs: b"(" + joined(xs) + b"t"),  # TUPLE
        many.map(lambda xs: b"](" + joined(xs) + b"e"),  # APPENDS
        many.map(lambda xs: b"]" + joined([x + b"a" for x in xs])),  # APPEND
        many.map(lambda xs: b"(" + joined(xs) + b"l"),  # LIST
        keyed.map(lambda ps: b"}(" + joined(ps) + b"u"),  # SETITEMS
        keyed.map(lambda ps: b"}" + joined([p + b"s" for p in ps])),  # SETITEM
        keyed.map(lambda ps: b"(" + joined(ps) + b"d"),  # DICT
        many.map(lambda xs: b"\x8f(" + joined(xs) + b"\x90"),  # ADDITEMS
        many.map(lambda xs: b"(" + joined(xs) + b"\x91"),  # FROZENSET
        st.tuples(inner, memo_index).map(lambda t: t[0] + b"q" + bytes([t[1]])),  # BINPUT
        st.tuples(inner, memo_index).map(lambda t: t[0] + b"0h" + bytes([t[1]])),  # POP, BINGET
        st.tuples(inner, memo_index).map(lambda t: t[0] + b"p%d\n" % t[1]),  # PUT
        st.tuples(inner, memo_index).map(lambda t: t[0] + b"0g%d\n" % t[1]),  # POP, GET
        inner.map(lambda v: v + b"\x94"),  # MEMOIZE
        st.tuples(inner, repeat).map(lambda t: t[0] + b"2\x86" * t[1]),  # 2**n leaves
        st.tuples(inner, repeat).map(lambda t: t[0] + b"\x85" * t[1]),  # n deep
        st.tuples(inner, repeat).map(lambda t: t[0] + b"q\x07h\x07\x86" * t[1]),  # pairs via memo
    )


plain_values = st.recursive(scalar_ops, containers, max_leaves=8)
str_key = st.sampled_from([b"args", b"name", b"x", b"y"]).map(lambda k: counted(b"X", "<I", k))
records = st.tuples(
    st.sampled_from([b"", b"\x80\x01", b"\x80\x02", b"\x80\x04", b"\x80\x05"]),
    st.lists(
        st.tuples(st.one_of(str_key, str_key, str_key, plain_values), plain_values).map(joined),
        max_size=4,
    ),
).map(lambda r: r[0] + b"}(" + counted(b"X", "<I", b"msg") + b"N" + joined(r[1]) + b"u.")


@st.composite
def programs(draw: st.DrawFn) -> bytes:
    """A record program, sometimes with a value or a stray opcode spliced in somewhere."""
    data = draw(records)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        part = draw(plain_values | st.sampled_from([b"(", b"0", b"1", b"2", b"s", b"u", b"a"]))
        data = data[:at] + part + data[at:]
    return data


SCALARS = (str, bytes, int, float, bool, type(None))
CONTAINERS = (list, tuple, dict, set, frozenset)


def shape(value: Any, done: dict[int, int], path: set[int]) -> int:
    """The nesting depth of ``value`` (cycles cut); fails if a key or set item is no scalar."""
    if not isinstance(value, CONTAINERS):
        return 0
    if id(value) in done:
        return done[id(value)]
    if id(value) in path:
        return 0
    path.add(id(value))
    if isinstance(value, dict):
        assert all(isinstance(key, SCALARS) for key in value)
        children: Any = value.values()
    else:
        if isinstance(value, set | frozenset):
            assert all(isinstance(item, SCALARS) for item in value)
        children = value
    depth = 1 + max((shape(child, done, path) for child in children), default=0)
    path.discard(id(value))
    done[id(value)] = depth
    return depth


@settings(FUZZ, max_examples=300)
@given(programs())
def test_generated_programs_are_decoded_or_refused(payload: bytes) -> None:
    decoded_or_refused(payload)


@settings(FUZZ, max_examples=300)
@given(programs())
def test_what_the_scan_accepts_is_what_the_unpickler_builds(payload: bytes) -> None:
    start = time.perf_counter()
    try:
        complete = scan(payload)
    except PickleRefused:
        return
    if not complete:  # a splice cut a string and made a global of its text: refused later
        assert decoded_or_refused(payload) is None
        return
    try:
        value = _NoGlobals(io.BytesIO(payload)).load()
    except Exception:  # invalid in ways only the unpickler sees: decode_pickle refuses those
        assert decoded_or_refused(payload) is None
        return
    assert time.perf_counter() - start < BUDGET
    assert isinstance(value, dict)
    assert all(isinstance(key, str) for key in value)
    assert shape(value, {}, set()) <= MAX_NESTING
    assert decoded_or_refused(payload) is not None  # and the record is read from it
