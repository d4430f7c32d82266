"""PyTorch checkpoints written by the real `torch.save` / `torch.jit.save` (zip, legacy, TorchScript),
malicious ones written with crafted `__reduce__`, and broken archives. Nothing is ever loaded."""

from __future__ import annotations

import io
import os
import pickle
import struct
import time
import warnings
import zipfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.pickles import simulate_pickle
from modelyard.inspect.pytorch import TorchCheckpoint, read_torch_checkpoint
from modelyard.inspect.torch_tensors import MAX_VISITS, TensorSpec

# -- helpers --------------------------------------------------------------------------------


class Reduce:
    """Pickles as `func(*args)`. Never called, never loaded."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self) -> None:
        raise AssertionError("never called")


def torch_module() -> Any:
    return pytest.importorskip("torch")


def saved(obj: Any, *, legacy: bool = False) -> bytes:
    torch = torch_module()
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def read(tmp_path: Path, data: bytes, name: str = "model.pt") -> TorchCheckpoint:
    path = tmp_path / name
    path.write_bytes(data)
    with ByteSource.open(path) as source:
        return read_torch_checkpoint(source)


def read_bytes(data: bytes) -> TorchCheckpoint:
    return read_torch_checkpoint(ByteSource(io.BytesIO(data), len(data), "fuzz.pt"))


def expect_error(tmp_path: Path, data: bytes, *causes: str, name: str = "bad.pt") -> str:
    with pytest.raises(InvalidModelFileError) as caught:
        read(tmp_path, data, name)
    message = str(caught.value)
    assert name in message, message
    for cause in causes:
        assert cause in message, message
    return message


def members(data: bytes) -> list[tuple[str, bytes]]:
    """The members of a zip we wrote ourselves (reading raw bytes; nothing is unpickled)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def rezip(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names some tests write
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, content in entries:
                archive.writestr(name, content)
    return buffer.getvalue()


def tensor_net() -> Any:
    torch = torch_module()

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.norm = torch.nn.BatchNorm1d(3)

        def forward(self, x: Any) -> Any:
            return self.norm(self.fc(x))

    return Net


Net = None  # replaced on first use by a module-level class, so a whole-model pickle can name it


def module_level_net() -> Any:
    global Net
    if Net is None:
        cls = tensor_net()
        cls.__qualname__ = cls.__name__ = "Net"
        cls.__module__ = __name__
        Net = cls
    return Net


@cache
def state_dict_bytes(legacy: bool = False) -> bytes:
    torch = torch_module()
    torch.manual_seed(0)
    return saved(module_level_net()().state_dict(), legacy=legacy)


def training_checkpoint() -> dict[str, Any]:
    torch = torch_module()
    torch.manual_seed(0)
    net = module_level_net()()
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)
    return {
        "epoch": 70,
        "global_step": 7000,
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_val_loss": 0.38,
        "metrics": {"val_acc": np.float64(0.91), "val_f1": np.float32(0.5), "seen": np.int64(12)},
        "config": {"lr": "1e-3"},
        "run": "v5",
        "history": [0.9, 0.5],
    }


NET_TENSORS = {
    "fc.weight": TensorSpec("F32", (3, 4)),
    "fc.bias": TensorSpec("F32", (3,)),
    "norm.weight": TensorSpec("F32", (3,)),
    "norm.bias": TensorSpec("F32", (3,)),
    "norm.running_mean": TensorSpec("F32", (3,)),
    "norm.running_var": TensorSpec("F32", (3,)),
    "norm.num_batches_tracked": TensorSpec("I64", ()),
}


# -- real checkpoints -----------------------------------------------------------------------


def test_state_dict_zip(tmp_path: Path) -> None:
    checkpoint = read(tmp_path, state_dict_bytes())
    assert checkpoint.format == "zip"
    assert checkpoint.scan.verdict == "safe" and checkpoint.scan.findings == ()
    assert checkpoint.scan.pickles_scanned == 1
    assert checkpoint.tensors == NET_TENSORS
    assert checkpoint.weights_key == ""
    assert checkpoint.parameter_count == 12 + 3 * 5 + 1
    assert checkpoint.dtype_parameters == {"F32": 27, "I64": 1}
    assert checkpoint.top_level_keys == ()
    assert checkpoint.full_model_class is None
    assert not checkpoint.has_optimizer_state and checkpoint.epoch is None and checkpoint.metrics == {}


def test_state_dict_legacy(tmp_path: Path) -> None:
    data = state_dict_bytes(legacy=True)
    assert not data.startswith(b"PK")
    checkpoint = read(tmp_path, data)
    assert checkpoint.format == "legacy"
    assert checkpoint.scan.verdict == "safe"
    assert checkpoint.scan.pickles_scanned == 5
    assert checkpoint.tensors == NET_TENSORS


@pytest.mark.parametrize("legacy", [False, True])
def test_training_checkpoint(legacy: bool, tmp_path: Path) -> None:
    checkpoint = read(tmp_path, saved(training_checkpoint(), legacy=legacy))
    assert checkpoint.scan.verdict == "safe", checkpoint.scan.findings
    assert checkpoint.weights_key == "model_state_dict"
    assert checkpoint.tensors == NET_TENSORS  # the optimizer's tensors are not weights
    assert checkpoint.has_optimizer_state
    assert checkpoint.epoch == 70 and checkpoint.global_step == 7000
    assert checkpoint.metrics == {
        "best_val_loss": 0.38,
        "metrics.val_acc": 0.91,
        "metrics.val_f1": 0.5,
        "metrics.seen": 12.0,
    }
    assert dict(checkpoint.top_level_keys) == {
        "epoch": "int",
        "global_step": "int",
        "model_state_dict": "weights",
        "optimizer_state_dict": "optimizer_state",
        "scheduler": "scheduler_state",
        "best_val_loss": "float",
        "metrics": "dict",
        "config": "dict",
        "run": "str",
        "history": "list",
    }


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")  # legacy saves try to store the source
@pytest.mark.parametrize("legacy", [False, True])
def test_whole_module_is_suspicious_and_named(legacy: bool, tmp_path: Path) -> None:
    torch_module().manual_seed(0)
    checkpoint = read(tmp_path, saved(module_level_net()(), legacy=legacy))
    assert checkpoint.scan.verdict == "suspicious"
    assert checkpoint.full_model_class == f"{__name__}.Net"
    suspicious = {finding.qualified for finding in checkpoint.scan.findings}
    assert suspicious == {f"{__name__}.Net", "torch.nn.modules.linear.Linear", "torch.nn.modules.batchnorm.BatchNorm1d"}
    assert all(finding.member == (None if legacy else "archive/data.pkl") for finding in checkpoint.scan.findings)
    assert checkpoint.tensors == NET_TENSORS  # read from the module's _parameters and _buffers
    assert checkpoint.weights_key is None


def test_module_under_a_weights_key(tmp_path: Path) -> None:
    torch_module().manual_seed(0)
    checkpoint = read(tmp_path, saved({"model": module_level_net()(), "epoch": 2}))
    assert checkpoint.scan.verdict == "suspicious"
    assert checkpoint.weights_key == "model" and checkpoint.tensors == NET_TENSORS
    assert checkpoint.full_model_class is None  # the top level is a dict
    assert checkpoint.top_level_keys == (("model", "weights"), ("epoch", "int"))


def test_low_precision_and_strided_tensors(tmp_path: Path) -> None:
    torch = torch_module()
    weights = {
        "bf16": torch.zeros(4, 2, dtype=torch.bfloat16),
        "fp16_view": torch.zeros(10, dtype=torch.float16)[3:7],
        "int8_transposed": torch.zeros(3, 5, dtype=torch.int8).t(),
        "fp8": torch.zeros(6, dtype=torch.float8_e4m3fn),
        "u16": torch.zeros(2, 3, dtype=torch.uint16),
        "bool": torch.zeros(1, dtype=torch.bool),
        "f64": torch.zeros((), dtype=torch.float64),
        "empty": torch.zeros(0, 3),
    }
    for legacy in (False, True):
        if legacy:
            del weights["fp8"], weights["u16"]  # the legacy format has no storages for these dtypes
        checkpoint = read(tmp_path, saved(weights, legacy=legacy))
        assert checkpoint.scan.verdict == "safe"
        expected = {
            "bf16": TensorSpec("BF16", (4, 2)),
            "fp16_view": TensorSpec("F16", (4,)),
            "int8_transposed": TensorSpec("I8", (5, 3)),
            "fp8": TensorSpec("F8_E4M3", (6,)),
            "u16": TensorSpec("U16", (2, 3)),
            "bool": TensorSpec("BOOL", (1,)),
            "f64": TensorSpec("F64", ()),
            "empty": TensorSpec("F32", (0, 3)),
        }
        assert checkpoint.tensors == {name: expected[name] for name in weights}
        assert checkpoint.dtype_parameters["I8"] == 15


def test_nested_weights_are_flattened(tmp_path: Path) -> None:
    torch = torch_module()
    checkpoint = read(tmp_path, saved({"state_dict": {"encoder": {"w": torch.zeros(2)}, "head.b": torch.zeros(1)}}))
    assert checkpoint.weights_key == "state_dict"
    assert set(checkpoint.tensors) == {"encoder.w", "head.b"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, its archives are not
def test_torchscript(tmp_path: Path) -> None:
    torch = torch_module()
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(module_level_net()().eval(), torch.randn(2, 4)), buffer)
    checkpoint = read(tmp_path, buffer.getvalue())
    assert checkpoint.format == "torchscript"
    assert checkpoint.scan.verdict == "suspicious"
    assert checkpoint.scan.pickles_scanned >= 2  # data.pkl, constants.pkl and deflated debug pickles
    assert checkpoint.full_model_class is not None and checkpoint.full_model_class.startswith("__torch__.")
    assert checkpoint.tensors == NET_TENSORS


def test_plain_pickle_bin(tmp_path: Path) -> None:
    checkpoint = read(tmp_path, pickle.dumps({"epoch": 3, "loss": np.float16(0.25)}, protocol=2), "model.bin")
    assert checkpoint.format == "pickle"
    assert checkpoint.scan.verdict == "safe"
    assert checkpoint.epoch == 3 and checkpoint.metrics == {"loss": 0.25}
    assert checkpoint.tensors == {} and checkpoint.weights_key is None


def test_storages_are_never_read(tmp_path: Path) -> None:
    torch = torch_module()
    data = saved({"big": torch.zeros(2_000_000)})

    class CountingFile(io.BytesIO):
        consumed = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            CountingFile.consumed += len(chunk)
            return chunk

    checkpoint = read_torch_checkpoint(ByteSource(CountingFile(data), len(data), "big.pt"))
    assert checkpoint.tensors == {"big": TensorSpec("F32", (2_000_000,))}
    assert len(data) > 8_000_000
    assert CountingFile.consumed < 200_000


def test_300_tensors_with_adam_state_is_fast(tmp_path: Path) -> None:
    torch = torch_module()
    layers = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(150)])
    optimizer = torch.optim.Adam(layers.parameters())
    layers(torch.randn(2, 8)).sum().backward()
    optimizer.step()
    data = saved({"epoch": 1, "model": layers.state_dict(), "optimizer": optimizer.state_dict()})
    started = time.perf_counter()
    checkpoint = read(tmp_path, data)
    elapsed = time.perf_counter() - started
    assert len(checkpoint.tensors) == 300 and checkpoint.has_optimizer_state
    assert elapsed < 2.0, elapsed


# -- malicious checkpoints ------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_payload_in_the_main_pickle(legacy: bool, tmp_path: Path) -> None:
    torch = torch_module()
    data = saved({"w": torch.zeros(2), "x": Reduce(os.system, "echo pwned")}, legacy=legacy)
    checkpoint = read(tmp_path, data)
    assert checkpoint.scan.verdict == "unsafe"
    (finding,) = [f for f in checkpoint.scan.findings if f.severity == "unsafe"]
    assert finding.qualified == f"{os.system.__module__}.system"
    assert finding.member == (None if legacy else "archive/data.pkl")


def test_payload_hidden_in_a_second_pkl_member(tmp_path: Path) -> None:
    evil = pickle.dumps(Reduce(eval, "__import__('os').system('id')"), protocol=2)
    data = rezip([*members(state_dict_bytes()), ("archive/extra/hidden.pkl", evil)])
    checkpoint = read(tmp_path, data)
    assert checkpoint.scan.verdict == "unsafe"
    assert checkpoint.scan.pickles_scanned == 2
    (finding,) = checkpoint.scan.findings
    assert (finding.qualified, finding.member) == ("__builtin__.eval", "archive/extra/hidden.pkl")
    assert checkpoint.tensors == NET_TENSORS


def test_payload_in_a_legacy_storage_key_pickle(tmp_path: Path) -> None:
    # Rebuild the stream with a malicious fifth pickle in place of the storage-key list.
    pickles = _split_legacy(state_dict_bytes(legacy=True))
    evil = pickle.dumps(Reduce(os.system, "id"), protocol=2)
    checkpoint = read(tmp_path, b"".join(pickles[:4]) + evil)
    assert checkpoint.scan.verdict == "unsafe"


def test_payload_in_a_trailing_plain_pickle(tmp_path: Path) -> None:
    data = pickle.dumps({"a": 1}, protocol=2) + pickle.dumps(Reduce(os.system, "id"), protocol=2)
    checkpoint = read(tmp_path, data, "model.bin")
    assert checkpoint.format == "pickle"
    assert checkpoint.scan.verdict == "unsafe" and checkpoint.scan.pickles_scanned == 2


def _split_legacy(data: bytes) -> list[bytes]:
    """The five pickles of a legacy file, found with our own replay (no unpickling)."""
    source = ByteSource(io.BytesIO(data), len(data), "legacy.pt")
    parts, offset = [], 0
    for _ in range(5):
        end = simulate_pickle(source, offset, len(data) - offset).end
        parts.append(data[offset:end])
        offset = end
    return parts


# -- broken archives and streams ------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    expect_error(tmp_path, b"", "is empty")


def test_truncated_zip(tmp_path: Path) -> None:
    data = state_dict_bytes()
    expect_error(tmp_path, data[: len(data) // 2], "no zip end-of-central-directory record")


def test_truncated_legacy(tmp_path: Path) -> None:
    data = state_dict_bytes(legacy=True)
    pickles = _split_legacy(data)
    cut = len(b"".join(pickles[:3])) + len(pickles[3]) // 2
    expect_error(tmp_path, data[:cut], "truncated")


def test_legacy_with_a_wrong_protocol_version(tmp_path: Path) -> None:
    pickles = _split_legacy(state_dict_bytes(legacy=True))
    data = pickles[0] + pickle.dumps(1000, protocol=2) + b"".join(pickles[2:])
    expect_error(tmp_path, data, "protocol version 1000, expected 1001")


def test_zip_member_escaping_its_folder(tmp_path: Path) -> None:
    data = rezip([*members(state_dict_bytes()), ("archive/../evil.pkl", b"\x80\x02N.")])
    expect_error(tmp_path, data, "'archive/../evil.pkl'", "'..'")


def test_zip_member_with_absolute_path(tmp_path: Path) -> None:
    entries = members(state_dict_bytes())
    data = rezip(entries)
    data = data.replace(b"archive/version", b"/rchive/version")  # both headers: the name stays consistent
    expect_error(tmp_path, data, "'/rchive/version'", "absolute path")


def test_zip_member_outside_the_top_folder(tmp_path: Path) -> None:
    data = rezip([*members(state_dict_bytes()), ("other/data.pkl", b"\x80\x02N.")])
    expect_error(tmp_path, data, "'other/data.pkl'", "single top-level folder 'archive'")


def test_duplicate_zip_members(tmp_path: Path) -> None:
    entries = members(state_dict_bytes())
    data = rezip([*entries, ("archive/data.pkl", pickle.dumps(Reduce(os.system, "id"), protocol=2))])
    expect_error(tmp_path, data, "'archive/data.pkl'", "appears twice")


def test_zip_member_claiming_a_huge_size(tmp_path: Path) -> None:
    data = bytearray(state_dict_bytes())
    entry = data.index(b"PK\x01\x02")  # the first central-directory entry
    data[entry + 20 : entry + 28] = struct.pack("<II", 0xFFFFFFF0, 0xFFFFFFF0)
    expect_error(tmp_path, bytes(data), "claims 4294967280 bytes", "past the central directory")


def test_missing_data_pkl(tmp_path: Path) -> None:
    entries = [(name, content) for name, content in members(state_dict_bytes()) if not name.endswith("data.pkl")]
    expect_error(tmp_path, rezip(entries), "no archive/data.pkl")


def build_zip(entries: list[tuple[str, bytes]], *, zip64: bool, with_extra: bool = True) -> bytes:
    """A stored zip assembled by hand; with `zip64`, every central-directory size and offset is
    saturated and the real values live in a zip64 extra field (as for members past 4 GiB)."""
    out, central = bytearray(), bytearray()
    for name, content in entries:
        raw, crc, offset, size = name.encode(), zlib.crc32(content), len(out), len(content)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 0, 0, 0, crc, size, size, len(raw), 0)
        out += raw + content
        extra = struct.pack("<HHQQQ", 1, 24, size, size, offset) if zip64 and with_extra else b""
        size32, offset32 = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (size, offset)
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            45,
            45,
            0,
            0,
            0,
            0,
            crc,
            size32,
            size32,
            len(raw),
            len(extra),
            0,
            0,
            0,
            0,
            offset32,
        )
        central += raw + extra
    directory_offset = len(out)
    out += central
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), directory_offset, 0)
    return bytes(out)


def test_zip64_extra_fields(tmp_path: Path) -> None:
    entries = members(state_dict_bytes())
    assert read(tmp_path, build_zip(entries, zip64=False)).tensors == NET_TENSORS
    assert read(tmp_path, build_zip(entries, zip64=True)).tensors == NET_TENSORS
    expect_error(tmp_path, build_zip(entries, zip64=True, with_extra=False), "zip64 extra field, which is missing")


def test_missing_and_short_storages(tmp_path: Path) -> None:
    entries = members(state_dict_bytes())
    without = [(name, content) for name, content in entries if name != "archive/data/0"]
    expect_error(tmp_path, rezip(without), "storage data/0 is not in the archive")
    shortened = [(name, content[:4] if name == "archive/data/0" else content) for name, content in entries]
    expect_error(tmp_path, rezip(shortened), "storage data/0 holds 4 bytes")


def test_corrupt_pickle_member_names_the_member(tmp_path: Path) -> None:
    entries = [
        (name, b"\x80\x02h\x05." if name == "archive/data.pkl" else content)
        for name, content in members(state_dict_bytes())
    ]
    expect_error(tmp_path, rezip(entries), "member 'archive/data.pkl'", "BINGET at byte 2", "memo index 5")


def test_deflated_members_are_read_within_a_cap(tmp_path: Path) -> None:
    data = rezip(members(state_dict_bytes()), zipfile.ZIP_DEFLATED)
    assert read(tmp_path, data).tensors == NET_TENSORS
    corrupt = bytearray(data)
    start = corrupt.index(b"archive/data.pkl") + len("archive/data.pkl") + 5  # inside the deflate stream
    corrupt[start] ^= 0xFF
    expect_error(tmp_path, bytes(corrupt), "'archive/data.pkl'")


def test_shared_nested_dicts_are_bounded(tmp_path: Path) -> None:
    torch = torch_module()
    shared: dict[str, Any] = {"w": torch.zeros(1)}
    for _ in range(30):  # 2^30 leaves if expanded; the pickle itself is small
        shared = {"a": shared, "b": shared}
    started = time.perf_counter()
    expect_error(tmp_path, saved({"state_dict": shared}), f"more than {MAX_VISITS:,} entries")
    assert time.perf_counter() - started < 15


# -- fuzzing --------------------------------------------------------------------------------

_FUZZ = settings(max_examples=120, deadline=3000, suppress_health_check=[HealthCheck.too_slow])


def _outcome(data: bytes) -> None:
    try:
        result = read_bytes(data)
    except InvalidModelFileError as error:
        assert "fuzz.pt" in str(error)
        return
    assert result.scan.verdict in ("safe", "suspicious", "unsafe")


@_FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _outcome(data)


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_zip_prefixed_bytes(data: bytes) -> None:
    _outcome(b"PK\x03\x04" + data)


@_FUZZ
@given(st.booleans(), st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_mutated_checkpoints(legacy: bool, edits: list[tuple[int, int]]) -> None:
    data = bytearray(state_dict_bytes(legacy=legacy))
    for position, byte in edits:
        data[position % len(data)] = byte
    _outcome(bytes(data))


@_FUZZ
@given(st.booleans(), st.integers(0, 2**20))
def test_fuzz_truncated_checkpoints(legacy: bool, cut: int) -> None:
    data = state_dict_bytes(legacy=legacy)
    _outcome(data[: cut % len(data)])
