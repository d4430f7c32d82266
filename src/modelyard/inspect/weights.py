"""Read the header of every weights file in a tree, and scan every pickle in it.

Files are picked by extension (`.safetensors`, `.gguf`, `.onnx`, `.pt`, `.pkl`, ...) and, for names
that say nothing (`.bin`, `.dat`, no extension), by their first bytes: a zip is a PyTorch archive,
a pickle's PROTO opcode a pickle. Other files (`.json`, `.txt`, ...) are data, not weights. Every pickle-based file is
scanned by walking its opcodes; nothing is ever unpickled.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidModelFileError
from modelyard.inspect.tree import ModelTree
from modelyard.modelconfig.base import PickleFindingEntry, PickleScanSummary, TensorIO, WeightsFile

if TYPE_CHECKING:
    from modelyard.inspect.gguf import GgufInfo
    from modelyard.inspect.onnx import OnnxInfo
    from modelyard.inspect.pytorch import TorchCheckpoint
    from modelyard.inspect.safetensors import SafetensorsHeader

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
# Names that do not say what a file holds: sniffed by content.
AMBIGUOUS_SUFFIXES = ("", ".bin", ".dat", ".data", ".model", ".weights")
ZIP_MAGIC = b"PK\x03\x04"
_KINDS_BY_SUFFIX = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".onnx": "onnx",
    **{suffix: "torch" for suffix in TORCH_SUFFIXES},
    **{suffix: "pickle" for suffix in PICKLE_SUFFIXES},
}
SHARD_INDEX_SUFFIX = ".safetensors.index.json"

# Header dtype spellings -> one lowercase vocabulary (safetensors F32, ONNX float32, torch F32).
_DTYPE_ALIASES = {
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "float64": "f64",
    "double": "f64",
    "int8": "i8",
    "uint8": "u8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "bool": "bool",
    "all_f32": "f32",
}


def normalise_dtype(name: str) -> str:
    lowered = name.lower()
    return _DTYPE_ALIASES.get(lowered, lowered)


@dataclass
class WeightReading:
    """One weights file: its summary for the catalog, its tensor shapes, and the raw header."""

    summary: WeightsFile
    shapes: dict[str, tuple[int, ...]]
    header: Any  # SafetensorsHeader | GgufInfo | TorchCheckpoint | OnnxInfo

    @property
    def path(self) -> str:
        return self.summary.path

    @property
    def format(self) -> str:
        return self.summary.format


@dataclass
class WeightsReport:
    readings: list[WeightReading] = field(default_factory=list)
    pickle_scan: PickleScanSummary = field(default_factory=PickleScanSummary)
    warnings: list[str] = field(default_factory=list)

    def by_format(self, *formats: str) -> list[WeightReading]:
        return [r for r in self.readings if r.format in formats]


def is_pickle_head(head: bytes) -> bool:
    """A pickle of protocol 2 or later starts with PROTO (0x80) and its protocol number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def suffix_of(path: str) -> str:
    """The lowercase extension of a path's last part ('' without one); cheap for 20,000 paths."""
    dot = path.rfind(".")
    return path[dot:].lower() if dot > path.rfind("/") else ""


def weights_kind(path: str, head: bytes | None) -> str | None:
    """What reader a file needs ("safetensors", "gguf", "onnx", "torch", "pickle"), or None for
    data. `head` is the file's first bytes (None when not known yet: then ambiguous names need
    sniffing, and this answers "sniff")."""
    suffix = suffix_of(path)
    known = _KINDS_BY_SUFFIX.get(suffix)
    if known is not None:
        return known
    if suffix not in AMBIGUOUS_SUFFIXES:
        return None  # by name, not by content: the answer must not depend on what was cached
    if head is None:
        return "sniff"
    if head.startswith(ZIP_MAGIC) or is_pickle_head(head):
        return "torch"
    return None


def read_weights(tree: ModelTree, heads: Mapping[str, bytes] | None = None) -> WeightsReport:
    """Read every weights file of the tree (headers only) and scan every pickle."""
    report = WeightsReport()
    sizes = tree.sizes
    scans = []
    for path in sorted(sizes):
        kind = weights_kind(path, (heads or {}).get(path))
        if kind == "sniff":
            with tree.open(path) as source:
                kind = weights_kind(path, source.read(0, min(16, source.size), "the first bytes"))
        if kind is None:
            continue
        reading: WeightReading | None
        try:
            reading = _read_one(tree, path, kind, sizes)
        except InvalidModelFileError as exc:
            if not _named_ambiguously(path):
                raise  # a .pt, .safetensors, ... that breaks its format: the user must know
            reading = _ambiguous_failure(path, sizes[path], exc, report.warnings)
            if reading is None:
                continue  # data whose first bytes merely look like a pickle or a zip
        report.readings.append(reading)
        if kind in ("torch", "pickle"):
            scans.append((path, reading.header.scan))
    report.pickle_scan = _summarise_scans(scans)
    report.warnings.extend(_check_shard_indexes(tree, report))
    return report


def _named_ambiguously(path: str) -> bool:
    return suffix_of(path) in AMBIGUOUS_SUFFIXES


@dataclass(frozen=True)
class BrokenPickle:
    """A header for a file that starts like a pickle, breaks off, yet names globals on the way."""

    scan: Any


def _ambiguous_failure(path: str, size: int, exc: InvalidModelFileError, warnings: list[str]) -> WeightReading | None:
    """A `.bin` (or unnamed) file that looked like a pickle or a zip by its first bytes but is not
    one. Random data starts with a pickle's two bytes once in 16,000 files, so this is no error;
    but unpickling runs opcodes as it reads, so any global it names before its flaw is scanned."""
    from modelyard.inspect.pickle_scan import scan_globals

    seen = exc.details.get("globals_seen") or ()
    if not seen:
        return None
    warnings.append(f"{path}: starts like a pickle but is not a valid one ({exc.message}); its globals were scanned")
    scan = scan_globals(seen)
    summary = WeightsFile(path=path, format="pickle", size=size)
    return WeightReading(summary, {}, BrokenPickle(scan))


def _read_one(tree: ModelTree, path: str, kind: str, sizes: Mapping[str, int]) -> WeightReading:
    with tree.open(path) as source:
        if kind == "safetensors":
            from modelyard.inspect.safetensors import read_safetensors

            return _from_safetensors(path, read_safetensors(source))
        if kind == "gguf":
            from modelyard.inspect.gguf import read_gguf

            return _from_gguf(path, read_gguf(source))
        if kind == "onnx":
            from modelyard.inspect.onnx import read_onnx

            folder = posixpath.dirname(path)
            siblings = {p[len(folder) + 1 :] if folder else p for p in sizes if posixpath.dirname(p) == folder}
            return _from_onnx(path, source.size, read_onnx(source, folder_files=siblings))
        from modelyard.inspect.pytorch import read_torch_checkpoint

        return _from_torch(path, source.size, read_torch_checkpoint(source))


def _dtypes(counts: Mapping[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for name, count in counts.items():
        key = normalise_dtype(name)
        merged[key] = merged.get(key, 0) + count
    return merged


def _from_safetensors(path: str, header: SafetensorsHeader) -> WeightReading:
    summary = WeightsFile(
        path=path,
        format="safetensors",
        size=header.file_size,
        tensor_count=header.tensor_count,
        parameter_count=header.parameter_count,
        dtypes=_dtypes(header.dtype_parameters),
        metadata_keys=sorted(header.metadata)[:200],
    )
    shapes = {name: tensor.shape for name, tensor in header.tensors.items()}
    return WeightReading(summary, shapes, header)


def _from_gguf(path: str, info: GgufInfo) -> WeightReading:
    summary = WeightsFile(
        path=path,
        format="gguf",
        size=info.data_offset + sum(t.n_bytes for t in info.tensors),
        tensor_count=len(info.tensors),
        parameter_count=info.parameter_count,
        dtypes=_dtypes(info.type_breakdown),
        quantization=info.quantization,
        metadata_keys=sorted(info.metadata)[:200],
    )
    # GGUF lists dims innermost first; reversed, they read like the other formats' shapes.
    shapes = {tensor.name: tuple(reversed(tensor.dims)) for tensor in info.tensors}
    return WeightReading(summary, shapes, info)


def _from_onnx(path: str, size: int, info: OnnxInfo) -> WeightReading:
    summary = WeightsFile(
        path=path,
        format="onnx",
        size=size,
        tensor_count=info.initializer_count,
        parameter_count=info.parameter_count,
        dtypes=_dtypes(info.dtype_parameters),
        opset=info.opsets.get("ai.onnx"),
        producer=" ".join(part for part in (info.producer_name, info.producer_version) if part) or None,
        inputs=[_tensor_io(value) for value in info.inputs[:64]],
        outputs=[_tensor_io(value) for value in info.outputs[:64]],
    )
    return WeightReading(summary, {}, info)


def _tensor_io(value: Any) -> TensorIO:
    return TensorIO(
        name=value.name, dtype=value.elem_type, shape=list(value.shape) if value.shape is not None else None
    )


def _from_torch(path: str, size: int, checkpoint: TorchCheckpoint) -> WeightReading:
    shapes = {name: tuple(spec.shape) for name, spec in checkpoint.tensors.items()}
    summary = WeightsFile(
        path=path,
        format="torchscript"
        if checkpoint.format == "torchscript"
        else ("pickle" if checkpoint.format == "pickle" and not shapes else "pytorch"),
        size=size,
        tensor_count=len(shapes) if shapes else None,
        parameter_count=checkpoint.parameter_count if shapes else None,
        dtypes=_dtypes(checkpoint.dtype_parameters),
        epoch=checkpoint.epoch,
        global_step=checkpoint.global_step,
        has_optimizer_state=checkpoint.has_optimizer_state,
        metrics=dict(checkpoint.metrics),
        contents=dict(checkpoint.top_level_keys),
    )
    return WeightReading(summary, shapes, checkpoint)


def _summarise_scans(scans: list[tuple[str, Any]]) -> PickleScanSummary:
    if not scans:
        return PickleScanSummary()
    findings = [
        PickleFindingEntry(
            file=path,
            member=finding.member,
            module=finding.module,
            name=finding.name,
            severity=finding.severity,
            reason=finding.reason,
        )
        for path, scan in scans
        for finding in scan.findings
    ]
    severities = {f.severity for f in findings}
    verdict = "unsafe" if "unsafe" in severities else ("suspicious" if "suspicious" in severities else "safe")
    return PickleScanSummary(verdict=verdict, files_scanned=len(scans), findings=findings[:500])


def _check_shard_indexes(tree: ModelTree, report: WeightsReport) -> list[str]:
    """Each `*.safetensors.index.json` must describe the shards beside it. A mismatch is a warning:
    the shards themselves were each checked, and an index is only a map for loaders."""
    from modelyard.inspect.safetensors import check_shards, read_shard_index

    warnings: list[str] = []
    headers = {r.path: r.header for r in report.by_format("safetensors")}
    for path in sorted(tree.sizes):
        if not path.endswith(SHARD_INDEX_SUFFIX):
            continue
        folder = posixpath.dirname(path)
        try:
            with tree.open(path) as source:
                index = read_shard_index(source)
                shards = {
                    name: headers[posixpath.join(folder, name)]
                    for name in index.shard_names
                    if posixpath.join(folder, name) in headers
                }
                check_shards(index, shards, source.name)
        except InvalidModelFileError as exc:
            warnings.append(exc.render())
    return warnings
