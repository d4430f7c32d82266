"""The symbolic pickle machine and the allow-list scan, on pickles written by `pickle.dumps` and on
hand-assembled opcode streams. Nothing here ever unpickles the pickles under test."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import subprocess
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.pickle_globals import SAFE_GLOBALS, classify_global
from modelyard.inspect.pickle_scan import PickleFinding, PickleScan, apply_policy, combine, scan_pickle
from modelyard.inspect.pickles import (
    MAX_OPCODES,
    Build,
    Call,
    Global,
    Omitted,
    OpaqueKey,
    PersistentId,
    PickleSet,
    SimulatedPickle,
    Unknown,
    simulate_pickle,
)

# -- helpers --------------------------------------------------------------------------------


class Reduce:
    """Pickles as `func(*args)`: how malicious pickles are written. Never called, never loaded."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self) -> None:  # pickle insists that a reduce function be callable
        raise AssertionError("never called")


def write(tmp_path: Path, data: bytes, name: str = "model.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def simulate(tmp_path: Path, data: bytes, name: str = "model.pkl") -> SimulatedPickle:
    with ByteSource.open(write(tmp_path, data, name)) as source:
        return simulate_pickle(source, 0, source.size)


def scan(tmp_path: Path, data: bytes, name: str = "model.pkl") -> PickleScan:
    with ByteSource.open(write(tmp_path, data, name)) as source:
        return scan_pickle(source, 0, source.size)


def simulate_bytes(data: bytes) -> SimulatedPickle:
    return simulate_pickle(ByteSource(io.BytesIO(data), len(data), "fuzz.pkl"), 0, len(data))


def unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def expect_error(tmp_path: Path, data: bytes, *causes: str, name: str = "bad.pkl") -> str:
    with pytest.raises(InvalidModelFileError) as caught:
        scan(tmp_path, data, name)
    message = str(caught.value)
    assert name in message
    for cause in causes:
        assert cause in message, message
    return message


def unsafe_names(result: PickleScan) -> set[str]:
    return {finding.qualified for finding in result.findings if finding.severity == "unsafe"}


# -- the machine ----------------------------------------------------------------------------


def test_every_opcode_has_a_handler() -> None:
    # Building the machine maps every opcode pickletools knows (protocols 0-5) to a handler and
    # fails with a KeyError if one is missing.
    assert simulate_bytes(b"N.").value is None


@pytest.mark.parametrize("protocol", range(6))
def test_plain_values_round_trip_in_every_protocol(protocol: int, tmp_path: Path) -> None:
    value = {"ints": [0, -1, 255, 65536, -(2**31), 2**70], "f": 2.5, "s": "héllo", "t": (1, (2,)), "n": None}
    value["flags"] = [True, False]
    result = simulate(tmp_path, pickle.dumps(value, protocol=protocol))
    assert result.value == value
    assert result.protocol == (protocol if protocol >= 2 else 0)  # protocols 0 and 1 have no PROTO opcode
    assert result.globals == ()


@pytest.mark.parametrize("protocol", range(6))
def test_sets_bytes_and_bytearrays_are_inert(protocol: int, tmp_path: Path) -> None:
    result = simulate(tmp_path, pickle.dumps([{1, 2}, frozenset([3]), b"ab", bytearray(b"cd")], protocol=protocol))
    items = result.value
    assert isinstance(items, list)
    if protocol >= 4:
        assert isinstance(items[0], PickleSet) and sorted(items[0].items) == [1, 2] and not items[0].frozen
        assert isinstance(items[1], PickleSet) and items[1].items == [3] and items[1].frozen
    else:  # set(...), frozenset(...) calls
        assert isinstance(items[0], Call) and items[0].func in (Global("builtins", "set"), Global("__builtin__", "set"))
    if protocol >= 3:
        assert items[2] == b"ab"
    else:  # protocol 2 spells bytes as _codecs.encode(text, "latin1")
        assert isinstance(items[2], Call) and items[2].func == Global("_codecs", "encode")
        assert items[2].args == ("ab", "latin1")


def test_long_bytes_and_text_are_kept_as_their_length(tmp_path: Path) -> None:
    result = simulate(tmp_path, pickle.dumps([b"x" * 10_000, "y" * 300], protocol=4))
    assert result.value == [Omitted("bytes", 10_000), "y" * 300]


def test_objects_become_calls_and_builds(tmp_path: Path) -> None:
    data = pickle.dumps(OrderedDict(a=1), protocol=2)
    value = simulate(tmp_path, data).value
    assert isinstance(value, Call)
    assert value.func == Global("collections", "OrderedDict")
    assert value.items == {"a": 1}  # SETITEMS on the result of a call are kept on the call


def test_build_persistent_id_and_newobj_ex(tmp_path: Path) -> None:
    data = b"\x80\x04" + unicode("m") + unicode("C") + b"\x93)}\x92" + b"}" + unicode("k") + b"K\x01sb"
    data += unicode("pid") + b"Q\x86."
    value = simulate(tmp_path, data).value
    assert isinstance(value, tuple)
    built, pid = value
    assert isinstance(built, Build) and built.state == {"k": 1}
    assert isinstance(built.obj, Call) and built.obj.func == Global("m", "C") and built.obj.kwargs == {}
    assert isinstance(pid, PersistentId) and pid.value == "pid"


def test_protocol_0_text_opcodes(tmp_path: Path) -> None:
    data = b"(I01\nI-7\nL123L\nF1.5\nS'a\\x41'\nVb\\u00e9\np0\ng0\nPkey\n" + b"(I2\ni__main__\nThing\nl."
    value = simulate(tmp_path, data).value
    assert isinstance(value, list)
    assert value[:7] == [True, -7, 123, 1.5, "aA", "bé", "bé"]
    assert isinstance(value[7], PersistentId) and value[7].value == "key"
    assert isinstance(value[8], Call) and value[8].func == Global("__main__", "Thing") and value[8].args == (2,)


def test_obj_pop_pop_mark_dup_and_memoize(tmp_path: Path) -> None:
    data = b"\x80\x04(" + glob("m", "K") + b"K\x05o" + b"\x94" + b"K\x09(K\x01K\x021" + b"0" + b"2\x86h\x00\x86."
    value = simulate(tmp_path, data).value
    assert isinstance(value, tuple)
    (first, second), memo = value
    assert isinstance(first, Call) and first.func == Global("m", "K") and first.args == (5,)
    assert first is second and memo is first


def test_cyclic_values_do_not_hang(tmp_path: Path) -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    shared: dict[str, Any] = {"x": 1}
    for _ in range(60):
        shared = {"a": shared, "b": shared}
    value = simulate(tmp_path, pickle.dumps([cyclic, shared], protocol=2)).value
    assert isinstance(value, list) and value[0][0] is value[0]


def test_unhashable_dict_keys_are_opaque(tmp_path: Path) -> None:
    data = b"\x80\x02}(]K\x01K\x02\x85K\x03u."  # {[]: 1, (2,): 3}: a list key would fail at load time
    value = simulate(tmp_path, data).value
    assert isinstance(value, dict)
    assert all(isinstance(key, OpaqueKey) for key in value)
    assert sorted(value.values()) == [1, 3]


def test_out_of_band_buffers_and_extension_codes_are_unknown(tmp_path: Path) -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=buffers.append)
    assert isinstance(simulate(tmp_path, data).value, Unknown)
    result = scan(tmp_path, b"\x80\x02\x82\x07.")
    assert result.verdict == "unsafe"
    assert "extension code 7" in result.findings[0].reason


def test_global_positions_are_recorded(tmp_path: Path) -> None:
    data = b"\x80\x02" + glob("collections", "OrderedDict") + b")R."
    result = simulate(tmp_path, data)
    assert [(ref.module, ref.name, ref.position, ref.opcode) for ref in result.globals] == [
        ("collections", "OrderedDict", 2, "GLOBAL")
    ]


def test_memo_reuse_stays_linear(tmp_path: Path) -> None:
    # Level i is a list holding level i-1 twice: 2^200 leaves if expanded, instant when shared.
    started = time.perf_counter()
    value = simulate(tmp_path, b"\x80\x04]K\x01a\x94" + _laughs(200)).value
    assert time.perf_counter() - started < 2
    assert isinstance(value, list) and value[0] is value[1]


def _laughs(levels: int) -> bytes:
    """Level i is a list holding level i-1 twice (memo slots i-1 -> i)."""
    body = b""
    for level in range(1, levels + 1):
        get = b"j" + struct.pack("<I", level - 1)
        body += b"(" + get + get + b"l" + b"\x94"
    return body + b"."


# -- malformed streams ----------------------------------------------------------------------


def test_stack_underflow(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x02R.", "REDUCE at byte 2", "stack underflow")


def test_underflow_above_a_mark(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x02K\x01(a.", "APPEND at byte 5", "above the last MARK")


def test_missing_mark(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x02K\x01t.", "TUPLE at byte 4", "no MARK")


def test_bad_memo_index(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x02h\x05.", "BINGET at byte 2", "memo index 5 was never stored")


def test_missing_stop(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x02K\x01", "ends at byte 4 without a STOP opcode")


@pytest.mark.parametrize("cut", [1, 3, 10, 40])
def test_truncated_pickles(cut: int, tmp_path: Path) -> None:
    data = pickle.dumps({"weights": list(range(20)), "name": "abcdef" * 5}, protocol=4)
    message = expect_error(tmp_path, data[:-cut])
    assert "truncated" in message


def test_binunicode_claiming_2_gib_in_a_20_byte_file(tmp_path: Path) -> None:
    data = b"\x80\x02X\x00\x00\x00\x80" + b"abcdefghijkl."
    assert len(data) == 20
    expect_error(tmp_path, data, "BINUNICODE at byte 2", "needs 2147483648 bytes but only 13 remain")


def test_frame_longer_than_the_file(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", "FRAME", "truncated")


def test_unknown_opcode_and_bad_protocol(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x02\xff.", "0xff at byte 2", "unknown opcode")
    expect_error(tmp_path, b"\x80\x09N.", "PROTO", "unsupported pickle protocol 9")


def test_odd_dict_items_and_bad_text_arguments(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x80\x02(K\x01d.", "DICT", "key/value pairs")
    expect_error(tmp_path, b"Ixyz\n.", "INT", "not an integer")
    expect_error(tmp_path, b"S'unterminated\n.", "STRING", "must be quoted")
    expect_error(tmp_path, b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "BINUNICODE", "not UTF-8")
    expect_error(tmp_path, b"c\xff\xfe\nname\n.", "GLOBAL", "not utf-8")


def test_member_names_appear_in_messages(tmp_path: Path) -> None:
    path = write(tmp_path, b"junk" + b"\x80\x02h\x05.")
    with ByteSource.open(path) as source, pytest.raises(InvalidModelFileError) as caught:
        scan_pickle(source, 4, 5, member="archive/data.pkl")
    message = str(caught.value)
    assert "model.pkl" in message and "member 'archive/data.pkl'" in message and "BINGET at byte 2" in message


def test_size_cap_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "huge.pkl"
    with path.open("wb") as handle:  # a sparse 300 MiB file: costs no disk and is never read whole
        handle.write(b"\x80\x04\x8e" + struct.pack("<Q", 290 * 2**20))
        handle.truncate(300 * 2**20)
    with ByteSource.open(path) as source, pytest.raises(InvalidModelFileError) as caught:
        scan_pickle(source, 0, source.size)
    assert "huge.pkl" in str(caught.value) and "BINBYTES8" in str(caught.value)
    assert "runs past 256 MiB" in str(caught.value)


def test_text_line_cap_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "line.pkl"
    with path.open("wb") as handle:
        handle.write(b"S'")
        handle.truncate(17 * 2**20)
    with ByteSource.open(path) as source, pytest.raises(InvalidModelFileError) as caught:
        scan_pickle(source, 0, source.size)
    assert "line.pkl" in str(caught.value) and "longer than 16 MiB" in str(caught.value)


@pytest.mark.slow
def test_opcode_cap_fails_clearly(tmp_path: Path) -> None:
    data = b"\x80\x02" + b"N0" * (MAX_OPCODES // 2 + 1) + b"N."
    expect_error(tmp_path, data, f"more than {MAX_OPCODES:,} opcodes")


# -- the verdict ----------------------------------------------------------------------------


def test_plain_data_is_safe(tmp_path: Path) -> None:
    result = scan(tmp_path, pickle.dumps(OrderedDict(a=[1, 2.0], b={3}), protocol=2))
    assert result.verdict == "safe"
    assert result.findings == ()
    assert ("collections", "OrderedDict") in result.globals
    assert result.pickles_scanned == 1


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_os_system_is_unsafe(protocol: int, tmp_path: Path) -> None:
    result = scan(tmp_path, pickle.dumps(Reduce(os.system, "echo pwned"), protocol=protocol))
    assert result.verdict == "unsafe"
    assert unsafe_names(result) == {f"{os.system.__module__}.system"}  # posix.system on Linux


def test_os_system_spelled_os(tmp_path: Path) -> None:
    data = b"\x80\x02" + glob("os", "system") + b"X\x02\x00\x00\x00id\x85R."
    result = scan(tmp_path, data)
    assert result.verdict == "unsafe"
    (finding,) = result.findings
    assert (finding.module, finding.name, finding.position, finding.member) == ("os", "system", 2, None)
    assert "os" in finding.reason


@pytest.mark.parametrize("func", [eval, exec])
@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_builtin_eval_and_exec_by_global_and_stack_global(func: Any, protocol: int, tmp_path: Path) -> None:
    data = pickle.dumps(Reduce(func, "print(1)"), protocol=protocol)
    opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    assert ("STACK_GLOBAL" if protocol >= 4 else "GLOBAL") in opcodes
    result = scan(tmp_path, data)
    assert result.verdict == "unsafe"
    expected = f"__builtin__.{func.__name__}" if protocol < 3 else f"builtins.{func.__name__}"
    assert unsafe_names(result) == {expected}


def test_python2_builtin_name(tmp_path: Path) -> None:
    data = b"c__builtin__\neval\n(S'1+1'\ntR."
    assert unsafe_names(scan(tmp_path, data)) == {"__builtin__.eval"}


def test_subprocess_popen(tmp_path: Path) -> None:
    result = scan(tmp_path, pickle.dumps(Reduce(subprocess.Popen, ["true"]), protocol=4))
    assert unsafe_names(result) == {"subprocess.Popen"}


def test_getattr_chain(tmp_path: Path) -> None:
    import importlib

    payload = Reduce(Reduce(getattr, Reduce(importlib.import_module, "os"), "system"), "echo pwned")
    result = scan(tmp_path, pickle.dumps(payload, protocol=2))
    assert result.verdict == "unsafe"
    assert {"__builtin__.getattr", "importlib.import_module"} <= unsafe_names(result)


def test_attribute_path_through_an_allowed_module(tmp_path: Path) -> None:
    data = b"\x80\x04" + unicode("torch") + unicode("serialization.os.system") + b"\x93."
    result = scan(tmp_path, data)
    assert result.verdict == "unsafe"
    assert "reaching os" in result.findings[0].reason


def test_stack_global_operands_from_the_memo(tmp_path: Path) -> None:
    data = b"\x80\x04" + unicode("os") + b"\x940" + unicode("system") + b"\x940" + b"h\x00h\x01\x93"
    data += unicode("id") + b"\x85R."
    result = scan(tmp_path, data)
    assert result.verdict == "unsafe"
    assert ("os", "system") in result.globals
    assert unsafe_names(result) == {"os.system"}


def test_stack_global_operands_that_are_not_strings(tmp_path: Path) -> None:
    data = b"\x80\x04" + unicode("os") + b"\x85" + unicode("system") + b"\x93."  # module is a tuple
    result = scan(tmp_path, data)
    assert result.verdict == "unsafe"
    (finding,) = result.findings
    assert (finding.module, finding.name) == ("?", "?")
    assert "not plain strings" in finding.reason and "a tuple" in finding.reason


def test_stack_global_operand_computed_by_a_call(tmp_path: Path) -> None:
    # module = str(...) would be a real str at load time, but only running code could tell which.
    data = b"\x80\x04" + glob("builtins", "str") + unicode("o") + b"\x85R" + unicode("system") + b"\x93."
    result = scan(tmp_path, data)
    assert result.verdict == "unsafe"
    assert {finding.severity for finding in result.findings} == {"suspicious", "unsafe"}


def test_user_class_is_suspicious(tmp_path: Path) -> None:
    data = b"\x80\x02" + glob("mymodel", "Net") + b")\x81}b."
    result = scan(tmp_path, data)
    assert result.verdict == "suspicious"
    assert [finding.qualified for finding in result.findings] == ["mymodel.Net"]


def test_numpy_scalars_are_safe(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    result = scan(tmp_path, pickle.dumps({"loss": np.float64(0.5), "step": np.int64(3)}, protocol=2))
    assert result.verdict == "safe", result.findings


def test_allow_list_covers_torch_weights_only_defaults() -> None:
    torch_unpickler = pytest.importorskip("torch._weights_only_unpickler")
    assert set(torch_unpickler._get_allowed_globals()) <= SAFE_GLOBALS


@pytest.mark.parametrize(
    ("module", "name", "severity"),
    [
        ("posix", "system", "unsafe"),
        ("nt", "system", "unsafe"),
        ("os.path", "join", "unsafe"),  # a whole-module entry covers submodules
        ("cPickle", "loads", "unsafe"),
        ("copy_reg", "_reconstructor", "suspicious"),
        ("functools", "partial", "unsafe"),
        ("operator", "attrgetter", "unsafe"),
        ("types", "CodeType", "unsafe"),
        ("torch", "load", "unsafe"),
        ("numpy", "load", "unsafe"),
        ("torch", "__builtins__", "unsafe"),
        ("__builtin__", "set", "safe"),
        ("torch", "BFloat16Storage", "safe"),
        ("torch._utils", "_rebuild_parameter_with_state", "safe"),
        ("numpy.dtypes", "Float32DType", "safe"),
        ("numpy", "ndarray", "safe"),
        ("torch.nn.modules.linear", "Linear", "suspicious"),
        ("torch._utils", "_rebuild_tensor_v2.__globals__", "unsafe"),
    ],
)
def test_classification(module: str, name: str, severity: str) -> None:
    assert classify_global(module, name)[0] == severity


def test_combine_and_policy(tmp_path: Path) -> None:
    user = scan(tmp_path, b"\x80\x02" + glob("mymodel", "Net") + b")\x81.")
    evil = scan(tmp_path, b"\x80\x02" + glob("os", "system") + b".")
    safe = scan(tmp_path, b"\x80\x02N.")
    merged = combine([safe, user, evil])
    assert merged.verdict == "unsafe"
    assert merged.pickles_scanned == 3
    assert merged.globals == (("mymodel", "Net"), ("os", "system"))
    assert combine([]).verdict == "safe"

    allowed = apply_policy(merged, ["mymodel.Net", "os.system"])
    assert allowed.verdict == "unsafe"  # an unsafe finding is never allowed
    severities = {finding.qualified: finding.severity for finding in allowed.findings}
    assert severities == {"mymodel.Net": "allowed", "os.system": "unsafe"}

    only_user = apply_policy(user, ["mymodel.Net"])
    assert only_user.verdict == "safe"
    assert only_user.findings[0].severity == "allowed" and "allowed by policy" in only_user.findings[0].reason
    assert apply_policy(user, ["mymodel.Other"]).verdict == "suspicious"


def test_findings_are_deduplicated_per_pickle(tmp_path: Path) -> None:
    data = b"\x80\x02(" + glob("mymodel", "Net") + glob("mymodel", "Net") + b"l."
    result = scan(tmp_path, data)
    assert result.findings == (PickleFinding("mymodel", "Net", "suspicious", None, 3, result.findings[0].reason),)


# -- fuzzing --------------------------------------------------------------------------------

_VALID = [
    pickle.dumps({"a": [1, 2.5, "x", b"y", (None, True)], "b": OrderedDict(c={1, 2})}, protocol=protocol)
    for protocol in range(6)
]
_FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _outcome(data: bytes) -> None:
    try:
        result = simulate_bytes(data)
    except InvalidModelFileError as error:
        assert "fuzz.pkl" in str(error)
        return
    assert isinstance(result, SimulatedPickle)


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _outcome(data)


@_FUZZ
@given(st.sampled_from(_VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6))
def test_fuzz_mutated_pickles(valid: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(valid)
    for position, byte in edits:
        data[position % len(data)] = byte
    _outcome(bytes(data))


@_FUZZ
@given(st.sampled_from(_VALID), st.integers(0, 400), st.binary(max_size=12))
def test_fuzz_spliced_pickles(valid: bytes, cut: int, insert: bytes) -> None:
    cut %= len(valid)
    _outcome(valid[:cut] + insert + valid[cut:])
