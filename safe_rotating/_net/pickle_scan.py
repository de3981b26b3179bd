"""The opcode scan that every ``SocketHandler`` pickle passes before anything is built.

The standard unpickler hashes every dict key and set item as it builds them, and hashing a tuple
recurses without any depth check or memory of shared parts: a deep tuple used as a key overflows
the C stack, and a few hundred bytes of shared pairs make a key whose hash never ends. So
:func:`scan` reads the opcodes without building anything and refuses a frame unless every limit
below holds; :mod:`safe_rotating._net.pickles` runs the real unpickler only after it.
"""

from __future__ import annotations

import pickle
import pickletools
import struct
from typing import Final

from safe_rotating._net.wire import ProtocolError

__all__ = [
    "MAX_ITEMS",
    "MAX_LONG_BYTES",
    "MAX_NESTING",
    "MAX_NUMBER_KEYS",
    "MAX_NUMBER_TEXT",
    "MAX_OPCODES",
    "PickleRefused",
    "scan",
]

# Limits of one pickle, checked by scan before anything is built. A stock record is ~80 opcodes,
# nesting 2-3 and one container of ~25 pairs; the reduction keeps at most _MAX_VALUES values of a
# record anyway, so these leave room for several times that and no more.
# Opcodes (a BINUNICODE and the BINPUT after it count once): bounds the scan's time (< 0.1 s),
# the GETs, the memo and the objects built (< 5 MB).
MAX_OPCODES: Final = 50_000
MAX_NESTING: Final = 100  # containers inside containers, and MARKs open at once
MAX_ITEMS: Final = 20_000  # items added to one list, dict, set or tuple
MAX_NUMBER_KEYS: Final = 1024  # dict keys and set items that are numbers, None or booleans
MAX_LONG_BYTES: Final = 256  # LONG1/LONG4: 2048 bits
MAX_NUMBER_TEXT: Final = 640  # INT/LONG/FLOAT written as text (protocol 0 and 1)
_MAX_INDEX_TEXT: Final = 20  # PUT/GET indices written as text


class PickleRefused(ProtocolError):
    """A frame that is not a plain pickled record; ``reason`` is the counted label.

    Labels: ``pickle global``, ``pickle persistent id``, ``invalid pickle`` (malformed, or an
    opcode that calls), ``not a record``, ``pickle key`` (a key that is not a scalar, a record
    key that is not a str, too many number keys), ``pickle too deep``, ``pickle too large``
    (opcodes, items, memo index), ``pickle number`` (an integer too long), ``pickle reuse`` (a
    container changed after being placed in another) and ``invalid record``.
    """


class _Node:
    """What the scan knows of one value the unpickler would build: its kind and its shape."""

    __slots__ = ("depth", "kind", "nested", "size", "strkeys")

    def __init__(self, kind: int, depth: int = 0) -> None:
        self.kind = kind
        self.depth = depth  # containers on the longest path down from here (0 for a scalar)
        self.size = 0  # items added so far
        self.nested = False  # placed inside another container: no longer changed
        self.strkeys = True  # a dict whose keys are all str


# Kinds. The first three hash cheaply and are the only ones allowed as keys and set items.
_STR, _BYTES, _NUMBER, _BYTEARRAY, _TUPLE, _FROZENSET, _LIST, _DICT, _SET = range(9)
_KIND_NAMES: Final = (
    "str",
    "bytes",
    "number",
    "bytearray",
    "tuple",
    "frozenset",
    "list",
    "dict",
    "set",
)
_SCALARS: Final = tuple(_Node(kind) for kind in (_STR, _BYTES, _NUMBER, _BYTEARRAY))
_SCALAR_SET: Final = frozenset(_SCALARS)

# How an opcode's argument is laid out (pickletools' descriptors): a fixed size >= 0, or:
_LINE, _LINE2, _LEN1, _LEN4S, _LEN4, _LEN8 = -1, -2, -3, -4, -5, -6
_ARG_LAYOUT: Final = {
    pickletools.UP_TO_NEWLINE: _LINE,
    pickletools.TAKEN_FROM_ARGUMENT1: _LEN1,
    pickletools.TAKEN_FROM_ARGUMENT4: _LEN4S,
    pickletools.TAKEN_FROM_ARGUMENT4U: _LEN4,
    pickletools.TAKEN_FROM_ARGUMENT8U: _LEN8,
}
# What an opcode does. Pushing a scalar uses the scalar's kind (0-3) as its action.
(
    _PUT, _GET, _MEMOIZE, _MARK, _SETITEMS, _SETITEM, _APPENDS, _APPEND, _EMPTY, _TUPLEN,
    _FROM_MARK, _POP, _POP_MARK, _DUP, _INT_TEXT, _FLOAT_TEXT, _LONG_BIN, _PROTO, _FRAME, _STOP,
    _HOOK, _CALL, _ADDITEMS, _EXT,
) = range(10, 34)  # fmt: skip
_ACTIONS: Final[dict[str, tuple[int, int]]] = {  # name: (action, detail)
    "BINUNICODE": (_STR, 0), "SHORT_BINUNICODE": (_STR, 0), "BINUNICODE8": (_STR, 0),
    "UNICODE": (_STR, 0), "STRING": (_STR, 0), "BINSTRING": (_STR, 0),
    "SHORT_BINSTRING": (_STR, 0),  # str: the unpickler decodes protocol-2 strings as ASCII
    "BINBYTES": (_BYTES, 0), "SHORT_BINBYTES": (_BYTES, 0), "BINBYTES8": (_BYTES, 0),
    "BYTEARRAY8": (_BYTEARRAY, 0),
    "BININT": (_NUMBER, 0), "BININT1": (_NUMBER, 0), "BININT2": (_NUMBER, 0),
    "BINFLOAT": (_NUMBER, 0), "NONE": (_NUMBER, 0), "NEWTRUE": (_NUMBER, 0),
    "NEWFALSE": (_NUMBER, 0), "LONG1": (_LONG_BIN, 0), "LONG4": (_LONG_BIN, 0),
    "INT": (_INT_TEXT, 0), "LONG": (_INT_TEXT, 0), "FLOAT": (_FLOAT_TEXT, 0),
    "BINPUT": (_PUT, 0), "LONG_BINPUT": (_PUT, 0), "PUT": (_PUT, 0), "MEMOIZE": (_MEMOIZE, 0),
    "BINGET": (_GET, 0), "LONG_BINGET": (_GET, 0), "GET": (_GET, 0),
    "MARK": (_MARK, 0), "POP": (_POP, 0), "POP_MARK": (_POP_MARK, 0), "DUP": (_DUP, 0),
    "EMPTY_DICT": (_EMPTY, _DICT), "EMPTY_LIST": (_EMPTY, _LIST), "EMPTY_SET": (_EMPTY, _SET),
    "EMPTY_TUPLE": (_EMPTY, _TUPLE),
    "TUPLE1": (_TUPLEN, 1), "TUPLE2": (_TUPLEN, 2), "TUPLE3": (_TUPLEN, 3),
    "TUPLE": (_FROM_MARK, _TUPLE), "LIST": (_FROM_MARK, _LIST), "DICT": (_FROM_MARK, _DICT),
    "FROZENSET": (_FROM_MARK, _FROZENSET),
    "SETITEM": (_SETITEM, 0), "SETITEMS": (_SETITEMS, 0), "APPEND": (_APPEND, 0),
    "APPENDS": (_APPENDS, 0), "ADDITEMS": (_ADDITEMS, 0),
    "PROTO": (_PROTO, 0), "FRAME": (_FRAME, 0), "STOP": (_STOP, 0),
    # The unpickler always calls find_class or persistent_load for these, which refuse.
    "GLOBAL": (_HOOK, 0), "STACK_GLOBAL": (_HOOK, 0), "INST": (_HOOK, 0), "PERSID": (_HOOK, 0),
    "BINPERSID": (_HOOK, 0),
    # Not these: an extension code already in copyreg's cache is pushed without find_class.
    "EXT1": (_EXT, 0), "EXT2": (_EXT, 0), "EXT4": (_EXT, 0),
    # Calls, and out-of-band buffers: nothing plain data needs.
    "REDUCE": (_CALL, 0), "BUILD": (_CALL, 0), "OBJ": (_CALL, 0), "NEWOBJ": (_CALL, 0),
    "NEWOBJ_EX": (_CALL, 0), "NEXT_BUFFER": (_CALL, 0), "READONLY_BUFFER": (_CALL, 0),
}  # fmt: skip


def _opcode_table() -> tuple[tuple[int, int, int, str] | None, ...]:
    """For each byte: (argument layout, action, detail, name), or None for an unknown opcode."""
    table: list[tuple[int, int, int, str] | None] = [None] * 256
    for info in pickletools.opcodes:
        if info.name not in _ACTIONS:
            continue  # an opcode newer than this table: refused as unknown
        arg = info.arg
        if arg is None:
            layout = 0
        elif arg.name == "stringnl_noescape_pair":
            layout = _LINE2
        else:
            layout = arg.n if arg.n >= 0 else _ARG_LAYOUT[arg.n]
        table[ord(info.code)] = (layout, *_ACTIONS[info.name], info.name)
    return tuple(table)


_TABLE: Final = _opcode_table()
# For each byte: the argument size of an opcode that pushes a number from a fixed-size argument
# (NONE, NEWTRUE, NEWFALSE, BININT1, BININT2, BININT, BINFLOAT), else -1.
_FIXED_NUMBERS: Final = tuple(
    entry[0] if entry is not None and entry[1] == _NUMBER else -1 for entry in _TABLE
)
_U4: Final = struct.Struct("<I")
_I4: Final = struct.Struct("<i")
_U8: Final = struct.Struct("<Q")


def _refused(reason: str, detail: str) -> PickleRefused:
    return PickleRefused(reason, detail)


def _underflow(name: str) -> PickleRefused:
    return PickleRefused("invalid pickle", f"a pickle whose {name} finds too few items")


def scan(data: bytes) -> bool:
    """Check a pickle without building it: True when it ends at STOP with a plain record dict,
    False when it reaches a global (which the unpickler will refuse). Raises PickleRefused.

    It runs the unpickler's stack machine (``Modules/_pickle.c``) on a :class:`_Node` per value:
    same stack, marks, fences and memo, same argument layout, so it sees the same opcode
    sequence the unpickler will execute. What it enforces, and why that suffices:

    - **Keys are scalars.** A dict key or set item must be a str, bytes or number (or ``None``,
      a boolean). Hashing is the only place where the unpickler or this module walks a value
      without a depth check or memory of what it saw (``tuplehash`` recurses); a scalar hashes
      in time linear in its own bytes. So neither depth (the SIGSEGV) nor memo sharing (2⁶⁰ for
      ``(x, x)`` chains) can reach a hash, whatever they do elsewhere. The record dict itself
      must have only str keys, as every ``LogRecord.__dict__`` has.
    - **Few number keys.** Hashes of str and bytes are salted per process, but a number's hash
      is public (``n`` and ``n + 2**61 - 1`` collide), and n colliding keys cost n²/2
      comparisons. At most ``MAX_NUMBER_KEYS`` such keys per frame: < 1M comparisons.
    - **Bounded nesting, exactly.** Every container's depth is known when it is built, and a
      container may not change once it sits inside another one (a mutation through a memo
      reference would deepen its parents behind the scan's back); a stock pickle always fills a
      container before placing it. Nesting and open MARKs are at most ``MAX_NESTING``; nothing
      here walks deeper values, and the bound keeps any later ``repr`` or ``==`` far from
      recursion limits. (A container holding itself is allowed: ``a = [a]``.)
    - **Bounded work and memory.** At most ``MAX_OPCODES`` opcodes (each builds at most one
      object, each GET pushes one reference) and ``MAX_ITEMS`` per container; memo indices below
      ``MAX_OPCODES`` (the unpickler allocates a memo array as large as the index); every length
      within the payload (the unpickler allocates a declared length before reading it).
      Memo reuse needs no further budget: it is free to build, cannot reach a hash (above), and
      :func:`_reduce` stops after a fixed number of values however often one is shared.
    - **Bounded numbers.** Integers of at most ``MAX_LONG_BYTES`` bytes, or ``MAX_NUMBER_TEXT``
      characters of text, so converting one to text stays within Python's digit limit (a 1 MB
      integer otherwise raises ``ValueError`` in the middle of formatting).
    - **No calls.** REDUCE, BUILD, OBJ, NEWOBJ, extension codes and out-of-band buffers are
      refused. Globals and persistent ids end the scan: the unpickler hands each one to
      ``find_class`` or ``persistent_load``, which refuse it, and never goes further.
    """
    try:
        return _run(data)
    except (IndexError, struct.error):  # the end of the payload, found by a fast path below
        raise _refused("invalid pickle", "a pickle cut short (no STOP)") from None


def _run(data: bytes) -> bool:
    """The loop of :func:`scan`."""
    stack: list[_Node] = []
    marks: list[int] = []
    memo: dict[int, _Node] = {}
    fence = 0  # items below the innermost MARK are out of reach, as in the unpickler
    pos = 0
    end = len(data)
    number_keys = 0
    table = _TABLE
    fixed_numbers = _FIXED_NUMBERS
    unpack_u4 = _U4.unpack_from
    str_node, number_node = _SCALARS[_STR], _SCALARS[_NUMBER]
    push = stack.append
    for _ in range(MAX_OPCODES):
        op = data[pos]  # IndexError past the end: a pickle without STOP
        # Fast paths for what stock records are mostly made of: strings and their memo entries,
        # numbers. A length past the end is caught at the next turn, by the IndexError above.
        if op == 0x58:  # BINUNICODE, and the BINPUT that usually follows: one turn
            pos += 5 + unpack_u4(data, pos + 1)[0]
            push(str_node)
            if data[pos] == 0x71:
                memo[data[pos + 1]] = str_node
                pos += 2
            continue
        size = fixed_numbers[op]
        if size >= 0:
            pos += 1 + size
            push(number_node)
            continue
        entry = table[op]
        if entry is None:
            raise _refused("invalid pickle", f"a pickle with unknown opcode 0x{op:02x}")
        layout, action, detail, name = entry
        start = pos = pos + 1
        length = 0
        if layout > 0:
            pos += layout
        elif layout < 0:
            if layout == _LINE:
                pos = data.find(b"\n", pos) + 1
                if not pos:
                    raise _refused("invalid pickle", f"a pickle whose {name} has no end of line")
            elif layout == _LINE2:
                pos = data.find(b"\n", pos) + 1
                pos = data.find(b"\n", pos) + 1 if pos else 0
                if not pos:
                    raise _refused("invalid pickle", f"a pickle whose {name} has no end of line")
            else:
                if layout == _LEN1:
                    size = 1
                    length = data[pos] if pos < end else 0
                else:
                    size = 8 if layout == _LEN8 else 4
                    if pos + size <= end:
                        unpack = _U8 if layout == _LEN8 else _I4 if layout == _LEN4S else _U4
                        (length,) = unpack.unpack_from(data, pos)
                    if length < 0:
                        raise _refused("invalid pickle", f"a pickle with a negative {name} size")
                pos += size + length
        if pos > end:
            raise _refused("invalid pickle", f"a pickle that ends inside its {name} argument")

        if action <= _BYTEARRAY:  # a scalar
            stack.append(_SCALARS[action])
        elif action in (_PUT, _MEMOIZE):
            if len(stack) <= fence:
                raise _underflow(name)
            if action == _MEMOIZE:
                index = len(memo)  # the unpickler's count of filled slots
            else:
                index = _index(data, start, pos, layout, name)
                if index >= MAX_OPCODES:
                    raise _refused("pickle too large", f"a pickle with memo index {index}")
            memo[index] = stack[-1]
        elif action == _GET:
            node = memo.get(_index(data, start, pos, layout, name))
            if node is None:
                raise _refused("invalid pickle", "a pickle that gets a memo entry never put")
            stack.append(node)
        elif action == _MARK:
            fence = len(stack)
            marks.append(fence)
            if len(marks) > MAX_NESTING:
                raise _too_deep()
        elif action == _EMPTY:
            stack.append(_Node(detail, 1))
        elif action in (_SETITEMS, _APPENDS, _ADDITEMS):
            if not marks:
                raise _refused("invalid pickle", f"a pickle whose {name} has no MARK")
            mark = marks.pop()
            fence = marks[-1] if marks else 0
            if mark <= fence:
                raise _underflow(name)
            items = stack[mark:]
            del stack[mark:]
            if items:
                _fill(stack[mark - 1], items, action, name)
                if action != _APPENDS:
                    number_keys = _check_keys(stack[mark - 1], items, action, number_keys)
        elif action in (_SETITEM, _APPEND):
            count = 2 if action == _SETITEM else 1
            if len(stack) - count <= fence:
                raise _underflow(name)
            items = stack[-count:]
            del stack[-count:]
            _fill(stack[-1], items, action, name)
            if action == _SETITEM:
                number_keys = _check_keys(stack[-1], items, action, number_keys)
        elif action == _TUPLEN:
            if len(stack) - detail < fence:
                raise _underflow(name)
            items = stack[-detail:]
            del stack[-detail:]
            stack.append(_built(_TUPLE, items))
        elif action == _FROM_MARK:
            if not marks:
                raise _refused("invalid pickle", f"a pickle whose {name} has no MARK")
            mark = marks.pop()
            fence = marks[-1] if marks else 0
            items = stack[mark:]
            del stack[mark:]
            node = _built(detail, items)
            if detail == _DICT:
                if len(items) % 2:
                    raise _refused("invalid pickle", "a pickle whose DICT has an odd count")
                number_keys = _check_keys(node, items, _SETITEMS, number_keys)
            elif detail == _FROZENSET:
                number_keys = _check_keys(node, items, _ADDITEMS, number_keys)
            stack.append(node)
        elif action in (_INT_TEXT, _FLOAT_TEXT, _LONG_BIN):
            if action == _LONG_BIN:
                too_long = length > MAX_LONG_BYTES
            else:
                too_long = pos - start > (MAX_NUMBER_TEXT if action == _INT_TEXT else 64)
            if too_long:
                size = length if action == _LONG_BIN else pos - start - 1
                raise _refused("pickle number", f"a pickle with a {name} of {size} bytes")
            stack.append(number_node)
        elif action == _POP:
            if len(stack) > fence:
                stack.pop()
            elif marks:  # the unpickler pops a MARK then (protocol 0 writes that)
                marks.pop()
                fence = marks[-1] if marks else 0
            else:
                raise _underflow(name)
        elif action == _POP_MARK:
            if not marks:
                raise _refused("invalid pickle", "a pickle whose POP_MARK has no MARK")
            del stack[marks.pop() :]
            fence = marks[-1] if marks else 0
        elif action == _DUP:
            if len(stack) <= fence:
                raise _underflow(name)
            stack.append(stack[-1])
        elif action == _PROTO:
            if data[start] > pickle.HIGHEST_PROTOCOL:
                raise _refused("invalid pickle", f"a pickle of protocol {data[start]}")
        elif action == _FRAME:
            if _U8.unpack_from(data, start)[0] > end - pos:
                raise _refused("invalid pickle", "a pickle whose FRAME is longer than the frame")
        elif action == _STOP:
            if len(stack) <= fence:
                raise _underflow(name)
            top = stack[-1]
            if top.kind != _DICT:
                raise _refused("not a record", f"a pickle of {_KIND_NAMES[top.kind]}, not a dict")
            if not top.strkeys:
                raise _refused("pickle key", "a record dict with a key that is not a str")
            return True
        elif action == _HOOK:
            return False
        elif action == _EXT:
            raise _refused(
                "pickle global",
                f"a pickle that references a global by {name} (globals are refused)",
            )
        else:
            raise _refused("invalid pickle", f"a pickle that calls or builds an object ({name})")
    raise _refused("pickle too large", f"a pickle of more than {MAX_OPCODES} opcodes")


def _too_deep() -> PickleRefused:
    return PickleRefused("pickle too deep", f"a pickle nested more than {MAX_NESTING} deep")


def _too_many(items: int) -> PickleRefused:
    return PickleRefused("pickle too large", f"a pickle with a container of {items} items")


def _index(data: bytes, start: int, end: int, layout: int, name: str) -> int:
    """The memo index argument of a PUT or GET opcode."""
    if layout == 1:
        return data[start]
    if layout == 4:
        index: int = _U4.unpack_from(data, start)[0]
        return index
    try:  # text, as the unpickler reads it: PyLong_FromString in base 10
        index = int(data[start:end], 10) if end - start <= _MAX_INDEX_TEXT else -1
    except ValueError:
        index = -1
    if index < 0:
        raise _refused("invalid pickle", f"a pickle with an invalid {name} index")
    return index


def _place(items: list[_Node], container: _Node | None) -> int:
    """Mark ``items`` as placed inside ``container``; the depth of the deepest one."""
    inner = set(items).difference(_SCALAR_SET)  # scalars are shared nodes of depth 0
    inner.discard(container)  # a container holding itself (a = [a]) stays open
    depth = 0
    for item in inner:
        item.nested = True
        if item.depth > depth:
            depth = item.depth
    return depth


def _built(kind: int, items: list[_Node]) -> _Node:
    """The node of a tuple, list, dict or frozenset made from ``items`` at once."""
    depth = _place(items, None)
    if depth >= MAX_NESTING:
        raise _too_deep()
    node = _Node(kind, depth + 1)
    node.size = len(items) // 2 if kind == _DICT else len(items)
    if node.size > MAX_ITEMS:
        raise _too_many(node.size)
    return node


_TARGETS: Final = {_SETITEM: _DICT, _SETITEMS: _DICT, _APPEND: _LIST, _APPENDS: _LIST}


def _fill(target: _Node, items: list[_Node], action: int, name: str) -> None:
    """Add ``items`` to the container ``target`` (SETITEM(S), APPEND(S), ADDITEMS)."""
    if target.kind != _TARGETS.get(action, _SET):
        # The unpickler would call the target's __setitem__, extend or add: a list's
        # __setitem__ or a bytearray's extend are data changes this scan does not follow.
        raise _refused(
            "invalid pickle", f"a pickle whose {name} targets a {_KIND_NAMES[target.kind]}"
        )
    if target.nested:
        raise _refused(
            "pickle reuse", f"a pickle whose {name} changes a container already inside another"
        )
    depth = _place(items, target) + 1
    if depth > target.depth:
        if depth > MAX_NESTING:
            raise _too_deep()
        target.depth = depth
    if action in (_SETITEMS, _SETITEM):
        if len(items) % 2:
            raise _refused("invalid pickle", f"a pickle whose {name} has an odd count")
        target.size += len(items) // 2
    else:
        target.size += len(items)
    if target.size > MAX_ITEMS:
        raise _too_many(target.size)


def _check_keys(container: _Node, items: list[_Node], action: int, number_keys: int) -> int:
    """Check the keys (dict) or items (set) about to be hashed; the new count of number keys."""
    keys = items if action == _ADDITEMS else items[::2]
    if keys.count(_SCALARS[_STR]) == len(keys):
        return number_keys
    odd = set(keys)
    odd.discard(_SCALARS[_STR])
    if odd:
        for key in odd:
            if key.kind > _NUMBER:
                what = "set item" if action == _ADDITEMS else "dict key"
                raise _refused("pickle key", f"a pickle with a {_KIND_NAMES[key.kind]} as {what}")
        container.strkeys = False
        number_keys += keys.count(_SCALARS[_NUMBER])
        if number_keys > MAX_NUMBER_KEYS:
            raise _refused("pickle key", f"a pickle with more than {MAX_NUMBER_KEYS} number keys")
    return number_keys
