"""A symbolic pickle machine: walks a pickle's opcodes and builds inert values, never unpickling.

`simulate_pickle` reads one pickle through a `ByteSource` and replays every opcode of protocols
0-5 on a stack and memo of plain Python values (ints, floats, str, bytes, lists, tuples, dicts)
and of the inert records below: `Global` for what GLOBAL/STACK_GLOBAL/INST/OBJ would import,
`Call` for what REDUCE/NEWOBJ/NEWOBJ_EX/INST/OBJ would call, `Build` for BUILD, `PersistentId`
for PERSID/BINPERSID and `Unknown` where a value cannot be known without running code. Nothing
is imported or called. The result is the top-level value plus every global the pickle names.

Opcodes are decoded here rather than with `pickletools.genops` so that arguments are read
exactly as CPython's unpickler reads them (GLOBAL names are raw UTF-8, not escape-decoded) and so
that every length is checked against the bytes that remain before anything is read.

Bounds: one pickle may span at most `MAX_PICKLE_BYTES`; long str/bytes arguments are skipped and
kept as their length (`Omitted`); at most `MAX_OPCODES` opcodes are replayed. Values are shared,
never copied, so memo reuse cannot make the simulation grow faster than the bytes it reads.
Values may still form cycles or deep chains (a pickle can append a list to itself), so code
walking them must bound its depth and visits.
"""

from __future__ import annotations

import pickletools
import struct
from _codecs import escape_decode
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.pickle_reader import MAX_PICKLE_BYTES, MiB, PickleReader

# Each opcode adds at most one value or memo entry, so this bounds memory (a few hundred MB in
# the worst case) and time (seconds). A state dict costs ~25 opcodes per tensor.
MAX_OPCODES = 5_000_000
MAX_NUMBER_TEXT = 4096  # decimal text of INT/LONG/GET/PUT (CPython itself refuses > 4300 digits)
KEEP_BYTES = 256  # longer bytes values are kept as their length only
KEEP_TEXT = MiB  # longer str values likewise
MAX_INT_BITS = 4096  # larger integers become Unknown (nothing in a checkpoint needs them)
HIGHEST_PROTOCOL = 5


@dataclass(frozen=True)
class Global:
    """A module attribute the pickle would import (`module.name`)."""

    module: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True, eq=False)
class Call:
    """`func(*args, **kwargs)`, which an unpickler would execute. SETITEM(S) and APPEND(S) applied
    to the result (dict and list subclasses such as OrderedDict) are collected in `items` and
    `appended`."""

    func: Value
    args: Value
    kwargs: Value = None
    items: dict[Key, Value] = field(default_factory=dict)
    appended: list[Value] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class Build:
    """BUILD: `obj.__setstate__(state)` (or an update of its `__dict__`)."""

    obj: Value
    state: Value


@dataclass(frozen=True, eq=False)
class PersistentId:
    """PERSID/BINPERSID: a reference the loader resolves itself (torch: a tensor storage)."""

    value: Value


@dataclass(frozen=True)
class Unknown:
    """A value that cannot be known statically (an unresolvable global, an out-of-band buffer)."""

    reason: str


@dataclass(frozen=True)
class Omitted:
    """A str or bytes value too long to keep: its kind ("str" or "bytes") and length in bytes."""

    kind: str
    length: int


@dataclass(frozen=True, eq=False)
class PickleSet:
    """EMPTY_SET/ADDITEMS or FROZENSET: elements kept in order (they need not be hashable here)."""

    items: list[Value]
    frozen: bool


@dataclass(frozen=True, eq=False)
class OpaqueKey:
    """A dict key that is not a plain scalar, held by identity (hashing it could recurse)."""

    value: Value


Key: TypeAlias = "str | int | float | bytes | OpaqueKey | None"
Value: TypeAlias = (
    "bool | int | float | str | bytes | Omitted | list[Value] | tuple[Value, ...] | dict[Key, Value]"
    " | PickleSet | Global | Call | Build | PersistentId | Unknown | None"
)


@dataclass(frozen=True)
class GlobalRef:
    """One import the pickle asks for. `resolved` is False when it cannot be named statically
    (STACK_GLOBAL operands that are not plain strings, an EXT code); `note` then says why."""

    module: str
    name: str
    position: int
    opcode: str
    resolved: bool = True
    note: str = ""


@dataclass(frozen=True)
class SimulatedPickle:
    """The top-level value, every global referenced (in order), the protocol its PROTO opcode
    declares (0 without one: protocols 0 and 1) and the offset just past the STOP opcode (where a
    following pickle would start)."""

    value: Value
    globals: tuple[GlobalRef, ...]
    protocol: int
    end: int


def simulate_pickle(source: ByteSource, offset: int, length: int, member: str | None = None) -> SimulatedPickle:
    """Replay the pickle starting at `offset` (at most `length` bytes) without unpickling it.

    Malformed streams raise `InvalidModelFileError` naming the file, the member (when given) and
    the opcode position: within the member when there is one, within the file otherwise.
    """
    reader = PickleReader(source, offset, length, member)
    machine = _Machine(reader)
    try:
        value = machine.run()
    except InvalidModelFileError as exc:
        # Unpickling runs opcodes as it reads them: what a broken pickle imported before its
        # flaw would still run. The caller may scan these even though the stream is malformed.
        exc.details["globals_seen"] = tuple(machine.globals)
        raise
    return SimulatedPickle(value, tuple(machine.globals), machine.protocol, reader.pos)


def describe(value: Value) -> str:
    """A short, safe description of a simulated value for messages (never its repr)."""
    if isinstance(value, Global):
        return f"the global {value.qualified}"
    if value is None:
        return "None"
    return f"a {type(value).__name__}"


_OPCODE_NAMES: dict[int, str] = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}
_STOP = b"."[0]


class _Machine:
    """The stack, the MARK positions and the memo of one pickle being replayed."""

    def __init__(self, reader: PickleReader) -> None:
        self.reader = reader
        self.stack: list[Value] = []
        self.marks: list[int] = []  # stack heights at each MARK: items below are out of reach
        self.memo: dict[int, Value] = {}
        self.globals: list[GlobalRef] = []
        self.protocol = 0
        handlers = self._handlers()
        self.dispatch: dict[int, Callable[[], None]] = {code: handlers[name] for code, name in _OPCODE_NAMES.items()}

    def run(self) -> Value:
        reader = self.reader
        for _ in range(MAX_OPCODES):
            reader.op_pos = reader.pos
            if reader.pos >= reader.end:
                if reader.end < reader.window_end:
                    raise reader.fail_plain(f"runs past {MAX_PICKLE_BYTES // MiB} MiB, the most modelyard reads")
                raise reader.fail_plain(
                    f"ends at byte {reader.pos - reader.base} without a STOP opcode (truncated or not a pickle)"
                )
            code = reader.take(1, "the opcode")[0]
            name = _OPCODE_NAMES.get(code)
            if name is None:
                reader.op_name = f"0x{code:02x}"
                raise reader.fail("unknown opcode (not a pickle, or corrupt)")
            reader.op_name = name
            if code == _STOP:
                return self.pop()
            self.dispatch[code]()
        raise reader.fail(f"more than {MAX_OPCODES:,} opcodes; modelyard replays no more than that")

    # -- stack primitives ---------------------------------------------------------------------

    def _floor(self) -> int:
        return self.marks[-1] if self.marks else 0

    def push(self, value: Value) -> None:
        self.stack.append(value)

    def pop(self) -> Value:
        if len(self.stack) <= self._floor():
            raise self.reader.fail(self._underflow())
        return self.stack.pop()

    def top(self) -> Value:
        if len(self.stack) <= self._floor():
            raise self.reader.fail(self._underflow())
        return self.stack[-1]

    def pop_many(self, count: int) -> list[Value]:
        if len(self.stack) - count < self._floor():
            raise self.reader.fail(self._underflow())
        items = self.stack[len(self.stack) - count :]
        del self.stack[len(self.stack) - count :]
        return items

    def pop_mark(self) -> list[Value]:
        if not self.marks:
            raise self.reader.fail("no MARK on the stack to pop back to")
        mark = self.marks.pop()
        items = self.stack[mark:]
        del self.stack[mark:]
        return items

    def _underflow(self) -> str:
        if self.marks:
            return "stack underflow (no value above the last MARK)"
        return "stack underflow (the stack is empty)"

    # -- argument decoding --------------------------------------------------------------------

    def _number_line(self) -> bytes:
        text = self.reader.line("the number")
        if len(text) > MAX_NUMBER_TEXT:
            raise self.reader.fail(f"a number written with more than {MAX_NUMBER_TEXT} characters")
        return text

    def _parse_int(self, text: bytes, base: int) -> int:
        try:
            return int(text, base)
        except ValueError:
            raise self.reader.fail(f"not an integer: {_show(text)}") from None

    def _decoded_line(self, what: str, encoding: str) -> str:
        raw = self.reader.line(what)
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            raise self.reader.fail(f"{what} is not {encoding} text: {_show(raw)}") from None

    def _text(self, size: int) -> Value:
        if size > KEEP_TEXT:
            self.reader.skip(size, "the string")
            return Omitted("str", size)
        raw = self.reader.take(size, "the string")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        try:  # CPython accepts lone surrogates here; keep the value printable
            return raw.decode("utf-8", "surrogatepass").encode("utf-8", "replace").decode("utf-8")
        except UnicodeDecodeError:
            raise self.reader.fail("the string is not UTF-8") from None

    def _bytes(self, size: int) -> Value:
        if size > KEEP_BYTES:
            self.reader.skip(size, "the bytes")
            return Omitted("bytes", size)
        return self.reader.take(size, "the bytes")

    def _binstring(self, size: int) -> Value:
        """Protocol 1-2 8-bit strings: the default unpickler decodes them as text."""
        value = self._bytes(size)
        if isinstance(value, bytes):
            return value.decode("latin-1")
        return Omitted("str", size)

    def _int_value(self, value: int) -> Value:
        if value.bit_length() > MAX_INT_BITS:
            return Unknown(f"an integer of {value.bit_length()} bits")
        return value

    def _long(self, size: int) -> Value:
        if size * 8 > MAX_INT_BITS:
            self.reader.skip(size, "the integer")
            return Unknown(f"an integer of {size} bytes")
        return int.from_bytes(self.reader.take(size, "the integer"), "little", signed=True)

    # -- opcodes ------------------------------------------------------------------------------

    def _handlers(self) -> dict[str, Callable[[], None]]:
        reader = self.reader
        push = self.push
        return {
            # stack and memo
            "MARK": lambda: self.marks.append(len(self.stack)),
            "POP": self._op_pop,
            "POP_MARK": self._op_pop_mark,
            "DUP": lambda: push(self.top()),
            "PUT": lambda: self._memo_put(self._parse_int(self._number_line(), 10)),
            "BINPUT": lambda: self._memo_put(reader.uint(1)),
            "LONG_BINPUT": lambda: self._memo_put(reader.uint(4)),
            "MEMOIZE": lambda: self._memo_put(len(self.memo)),
            "GET": lambda: push(self._memo_get(self._parse_int(self._number_line(), 10))),
            "BINGET": lambda: push(self._memo_get(reader.uint(1))),
            "LONG_BINGET": lambda: push(self._memo_get(reader.uint(4))),
            "PROTO": self._op_proto,
            "FRAME": self._op_frame,
            "STOP": lambda: None,  # handled in run()
            # scalars
            "NONE": lambda: push(None),
            "NEWTRUE": lambda: push(True),
            "NEWFALSE": lambda: push(False),
            "INT": self._op_int,
            "BININT": lambda: push(reader.int4()),
            "BININT1": lambda: push(reader.uint(1)),
            "BININT2": lambda: push(reader.uint(2)),
            "LONG": self._op_long_text,
            "LONG1": lambda: push(self._long(reader.uint(1))),
            "LONG4": self._op_long4,
            "FLOAT": self._op_float_text,
            "BINFLOAT": lambda: push(struct.unpack(">d", reader.take(8, "the float"))[0]),
            # strings and bytes
            "STRING": self._op_string,
            "BINSTRING": lambda: push(self._binstring(self._length(reader.int4()))),
            "SHORT_BINSTRING": lambda: push(self._binstring(reader.uint(1))),
            "UNICODE": self._op_unicode,
            "SHORT_BINUNICODE": lambda: push(self._text(reader.uint(1))),
            "BINUNICODE": lambda: push(self._text(reader.uint(4))),
            "BINUNICODE8": lambda: push(self._text(reader.uint(8))),
            "SHORT_BINBYTES": lambda: push(self._bytes(reader.uint(1))),
            "BINBYTES": lambda: push(self._bytes(reader.uint(4))),
            "BINBYTES8": lambda: push(self._bytes(reader.uint(8))),
            "BYTEARRAY8": lambda: push(self._bytes(reader.uint(8))),
            "NEXT_BUFFER": lambda: push(Unknown("an out-of-band buffer (NEXT_BUFFER)")),
            "READONLY_BUFFER": self._op_readonly_buffer,
            # containers
            "EMPTY_LIST": lambda: push([]),
            "LIST": lambda: push(self.pop_mark()),
            "APPEND": lambda: self._extend([self.pop()]),
            "APPENDS": lambda: self._extend(self.pop_mark()),
            "EMPTY_TUPLE": lambda: push(()),
            "TUPLE": lambda: push(tuple(self.pop_mark())),
            "TUPLE1": lambda: push(tuple(self.pop_many(1))),
            "TUPLE2": lambda: push(tuple(self.pop_many(2))),
            "TUPLE3": lambda: push(tuple(self.pop_many(3))),
            "EMPTY_DICT": lambda: push({}),
            "DICT": lambda: push(dict(self._pairs(self.pop_mark()))),
            "SETITEM": lambda: self._set_items(self._pairs(self.pop_many(2))),
            "SETITEMS": lambda: self._set_items(self._pairs(self.pop_mark())),
            "EMPTY_SET": lambda: push(PickleSet([], frozen=False)),
            "ADDITEMS": self._op_additems,
            "FROZENSET": lambda: push(PickleSet(self.pop_mark(), frozen=True)),
            # imports, calls and objects
            "GLOBAL": lambda: self._op_global("utf-8"),
            "STACK_GLOBAL": self._op_stack_global,
            "INST": self._op_inst,
            "OBJ": self._op_obj,
            "REDUCE": self._op_reduce,
            "NEWOBJ": self._op_newobj,
            "NEWOBJ_EX": self._op_newobj_ex,
            "BUILD": self._op_build,
            "EXT1": lambda: self._op_ext(reader.uint(1)),
            "EXT2": lambda: self._op_ext(reader.uint(2)),
            "EXT4": lambda: self._op_ext(reader.int4()),
            "PERSID": lambda: push(PersistentId(self._decoded_line("the persistent id", "ascii"))),
            "BINPERSID": lambda: push(PersistentId(self.pop())),
        }

    def _op_pop(self) -> None:
        # CPython: POP with nothing above the last MARK discards the MARK instead.
        if len(self.stack) > self._floor():
            self.stack.pop()
        else:
            self.pop_mark()

    def _op_pop_mark(self) -> None:
        self.pop_mark()

    def _op_readonly_buffer(self) -> None:
        self.top()  # makes the buffer on top read-only: nothing to simulate, but it must exist

    def _memo_put(self, index: int) -> None:
        if index < 0:
            raise self.reader.fail(f"negative memo index {index}")
        self.memo[index] = self.top()

    def _memo_get(self, index: int) -> Value:
        if index not in self.memo:
            raise self.reader.fail(f"memo index {index} was never stored (bad memo reference)")
        return self.memo[index]

    def _op_proto(self) -> None:
        protocol = self.reader.uint(1)
        if protocol > HIGHEST_PROTOCOL:
            raise self.reader.fail(f"unsupported pickle protocol {protocol} (at most {HIGHEST_PROTOCOL})")
        self.protocol = protocol

    def _op_frame(self) -> None:
        size = self.reader.uint(8)
        if size > self.reader.end - self.reader.pos:
            raise self.reader.fail(
                f"a frame of {size} bytes but only {self.reader.end - self.reader.pos} remain (truncated or corrupt)"
            )

    def _op_int(self) -> None:
        text = self._number_line()
        if text in (b"00", b"01"):  # protocol 0 spelling of False and True
            self.push(text == b"01")
            return
        self.push(self._int_value(self._parse_int(text, 0)))

    def _op_long_text(self) -> None:
        text = self._number_line()
        if text.endswith(b"L"):
            text = text[:-1]
        self.push(self._int_value(self._parse_int(text, 0)))

    def _op_long4(self) -> None:
        self.push(self._long(self._length(self.reader.int4())))

    def _length(self, size: int) -> int:
        if size < 0:
            raise self.reader.fail(f"negative length {size}")
        return size

    def _op_float_text(self) -> None:
        text = self._number_line()
        try:
            self.push(float(text))
        except ValueError:
            raise self.reader.fail(f"not a float: {_show(text)}") from None

    def _op_string(self) -> None:
        raw = self.reader.line("the string")
        if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
            raise self.reader.fail("the STRING argument must be quoted")
        try:
            self.push(escape_decode(raw[1:-1])[0].decode("latin-1"))
        except (ValueError, Warning):  # an invalid escape warns, which -W error turns into an exception
            raise self.reader.fail(f"bad escape in the string {_show(raw)}") from None

    def _op_unicode(self) -> None:
        raw = self.reader.line("the string")
        try:
            text = raw.decode("raw-unicode-escape")
        except UnicodeDecodeError:
            raise self.reader.fail(f"bad escape in the string {_show(raw)}") from None
        self.push(text.encode("utf-8", "replace").decode("utf-8"))

    def _extend(self, values: list[Value]) -> None:
        target = self.top()
        if isinstance(target, list):
            target.extend(values)
        elif isinstance(target, Call):
            target.appended.extend(values)
        # Anything else would fail or run code at load time; the values are dropped here (their
        # globals were already recorded when they were read).

    def _pairs(self, items: list[Value]) -> list[tuple[Key, Value]]:
        if len(items) % 2:
            raise self.reader.fail(f"needs key/value pairs but got {len(items)} values")
        return [(_key(items[index]), items[index + 1]) for index in range(0, len(items), 2)]

    def _set_items(self, pairs: list[tuple[Key, Value]]) -> None:
        target = self.top()
        if isinstance(target, dict):
            target.update(pairs)
        elif isinstance(target, Call):
            target.items.update(pairs)

    def _op_additems(self) -> None:
        items = self.pop_mark()
        target = self.top()
        if isinstance(target, PickleSet) and not target.frozen:
            target.items.extend(items)

    def _record(self, module: str, name: str, *, resolved: bool = True, note: str = "") -> None:
        reader = self.reader
        self.globals.append(GlobalRef(module, name, reader.op_pos - reader.base, reader.op_name, resolved, note))

    def _op_global(self, encoding: str) -> None:
        module = self._decoded_line("the module name", encoding)
        name = self._decoded_line("the global name", encoding)
        self._record(module, name)
        self.push(Global(module, name))

    def _op_stack_global(self) -> None:
        name = self.pop()
        module = self.pop()
        if isinstance(module, str) and isinstance(name, str):
            self._record(module, name)
            self.push(Global(module, name))
            return
        note = f"STACK_GLOBAL operands are not plain strings (module: {describe(module)}, name: {describe(name)})"
        self._record("?", "?", resolved=False, note=note)
        self.push(Unknown(note))

    def _op_inst(self) -> None:
        self._op_global("ascii")
        cls = self.pop()
        self.push(Call(cls, tuple(self.pop_mark())))

    def _op_obj(self) -> None:
        items = self.pop_mark()
        if not items:
            raise self.reader.fail("OBJ needs a class after the MARK")
        self.push(Call(items[0], tuple(items[1:])))

    def _op_reduce(self) -> None:
        args = self.pop()
        func = self.pop()
        self.push(Call(func, args))

    def _op_newobj(self) -> None:
        args = self.pop()
        cls = self.pop()
        self.push(Call(cls, args))

    def _op_newobj_ex(self) -> None:
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        self.push(Call(cls, args, kwargs))

    def _op_build(self) -> None:
        state = self.pop()
        obj = self.pop()
        self.push(Build(obj, state))

    def _op_ext(self, code: int) -> None:
        # The extension registry (copyreg) is per process and empty by default: the global an
        # EXT code stands for cannot be known from the file.
        note = f"extension code {code} names a global registered at run time"
        self._record("?", "?", resolved=False, note=note)
        self.push(Unknown(note))


def _key(value: Value) -> Key:
    if value is None or isinstance(value, str | int | float | bytes):
        return value
    return OpaqueKey(value)


def _show(raw: bytes) -> str:
    """Up to 40 bytes of an argument, escaped, for a message."""
    shown = raw[:40].decode("ascii", "backslashreplace")
    return repr(shown + ("..." if len(raw) > 40 else ""))
