"""The safetensors header reader and the checks of sharded checkpoints (model-formats.md section 1).

`read_safetensors` reads the 8-byte length and the JSON header through a `ByteSource` and
enforces every rule of the reference reader (`safetensors/src/tensor.rs`) plus the ones its README
states but the reader leaves out (unique tensor names, exact entry fields): the data buffer is
never read. `read_shard_index` and `check_shards` validate a `model.safetensors.index.json`
against the headers of its shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from modelyard.errors import InvalidInputError, InvalidModelFileError
from modelyard.inspect._bounded import ByteSource, read_json
from modelyard.loaders import parse_json

# The reference reader's MAX_HEADER_SIZE: a longer header is refused before it is read.
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"
SHARD_EXTENSION = ".safetensors"
# Sizes and offsets are u64 in the reference reader; products beyond this are overflows there.
_U64_LIMIT = 2**64

# Bits per element of each dtype string (the `Dtype` enum of tensor.rs). The sub-byte kinds
# (F4, F6_*) are why sizes are computed in bits.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

_ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the header; `begin`/`end` are byte offsets into the data buffer (end exclusive)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """What the header of one safetensors file says. `tensors` is in data-buffer order."""

    header_length: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]

    @property
    def data_size(self) -> int:
        """Bytes of the data buffer (everything after the header)."""
        return self.file_size - 8 - self.header_length

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(tensor.n_elements for tensor in self.tensors.values())

    @property
    def dtype_parameters(self) -> dict[str, int]:
        """Elements per dtype, e.g. {"BF16": 7_000_000_000, "F32": 4096}."""
        totals: dict[str, int] = {}
        for tensor in self.tensors.values():
            totals[tensor.dtype] = totals.get(tensor.dtype, 0) + tensor.n_elements
        return totals

    @property
    def dominant_dtype(self) -> str | None:
        """The dtype holding the most elements (ties: the alphabetically first); None without tensors."""
        totals = self.dtype_parameters
        if not totals:
            return None
        return min(totals, key=lambda dtype: (-totals[dtype], dtype))


@dataclass(frozen=True)
class ShardIndex:
    """A `model.safetensors.index.json`: which shard file holds each tensor."""

    total_size: int | None
    total_parameters: int | None
    weight_map: dict[str, str]

    @property
    def shard_names(self) -> tuple[str, ...]:
        """Every shard the weight map names, sorted."""
        return tuple(sorted(set(self.weight_map.values())))


# -- the header -------------------------------------------------------------------------------


def read_safetensors(source: ByteSource) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file (the data buffer is not read)."""
    header_length = _read_header_length(source)
    header = _parse_header(source, header_length)
    metadata = _read_metadata(source, header.pop(METADATA_KEY, None))
    tensors = [_read_entry(source, name, entry) for name, entry in header.items()]
    ordered = _check_layout(source, tensors, data_size=source.size - 8 - header_length)
    return SafetensorsHeader(
        header_length=header_length,
        file_size=source.size,
        tensors={tensor.name: tensor for tensor in ordered},
        metadata=metadata,
    )


def _read_header_length(source: ByteSource) -> int:
    if source.size < 8:
        raise source.error(f"is {source.size} bytes, too short for the 8-byte header length of a safetensors file")
    header_length = int.from_bytes(source.read(0, 8, "the header length"), "little")
    if header_length > MAX_HEADER_BYTES:
        raise source.error(
            f"the header length is {header_length} bytes, over the {MAX_HEADER_BYTES}-byte limit "
            "(not a safetensors file, or a corrupt one)",
            field="header length",
        )
    if 8 + header_length > source.size:
        raise source.error(
            f"the header length is {header_length} bytes but the file has only {source.size - 8} bytes "
            "after it (truncated, or not a safetensors file)",
            field="header length",
        )
    return header_length


def _parse_header(source: ByteSource, header_length: int) -> dict[str, Any]:
    raw = source.read(8, header_length, "the header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise source.error(f"the header is not UTF-8 (byte {8 + exc.start} of the file)") from None
    try:
        header = parse_json(text, source.name)
    except InvalidInputError as exc:
        raise source.error(f"the header: {exc.message}") from None
    if not isinstance(header, dict):
        raise source.error(f"the header must be a JSON object, found {_json_kind(header)}")
    return header


def _read_metadata(source: ByteSource, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise source.error(f"must be an object of strings, found {_json_kind(value)}", field=METADATA_KEY)
    for key, item in value.items():
        if not isinstance(item, str):
            raise source.error(
                f"the value of {_quote(key)} is {_json_kind(item)}; metadata values must be strings", field=METADATA_KEY
            )
    return dict(value)


def _read_entry(source: ByteSource, name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise source.error(f"tensor {_quote(name)} must map to an object, found {_json_kind(entry)}")
    missing = sorted(_ENTRY_FIELDS - entry.keys())
    extra = sorted(entry.keys() - _ENTRY_FIELDS)
    if missing:
        raise source.error(f"tensor {_quote(name)} lacks {', '.join(missing)}", field=missing[0])
    if extra:
        raise source.error(
            f"tensor {_quote(name)} has unexpected field(s) {', '.join(map(_quote, extra))} "
            "(an entry holds exactly dtype, shape and data_offsets)",
            field=extra[0],
        )
    dtype = _read_dtype(source, name, entry["dtype"])
    shape = _read_shape(source, name, entry["shape"])
    begin, end = _read_offsets(source, name, entry["data_offsets"])
    _check_byte_length(source, name, dtype, shape, end - begin)
    return TensorInfo(name=name, dtype=dtype, shape=shape, begin=begin, end=end)


def _read_dtype(source: ByteSource, name: str, dtype: Any) -> str:
    if not isinstance(dtype, str):
        raise source.error(f"tensor {_quote(name)}: expected a string, found {_json_kind(dtype)}", field="dtype")
    if dtype not in DTYPE_BITS:
        raise source.error(f"tensor {_quote(name)} has unknown dtype {_quote(dtype)}", field="dtype")
    return dtype


def _read_shape(source: ByteSource, name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list):
        raise source.error(
            f"tensor {_quote(name)}: expected a list of integers, found {_json_kind(shape)}", field="shape"
        )
    for dim in shape:
        if not _is_u64(dim):
            raise source.error(
                f"tensor {_quote(name)}: dimension {_short(dim)} is not a non-negative integer below 2^64",
                field="shape",
            )
    return tuple(shape)


def _read_offsets(source: ByteSource, name: str, offsets: Any) -> tuple[int, int]:
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_u64(value) for value in offsets):
        raise source.error(
            f"tensor {_quote(name)}: expected [begin, end], two non-negative integers, found {_short(offsets)}",
            field="data_offsets",
        )
    begin, end = offsets
    if end < begin:
        raise source.error(f"tensor {_quote(name)} ends at {end}, before it begins at {begin}", field="data_offsets")
    return begin, end


def _check_byte_length(source: ByteSource, name: str, dtype: str, shape: tuple[int, ...], n_bytes: int) -> None:
    # Checked arithmetic like the reference reader: a claimed shape of [10^18, 10^18] must fail as an
    # overflow at once instead of building an enormous product.
    n_bits = DTYPE_BITS[dtype]
    for dim in shape:
        n_bits *= dim
        if n_bits >= _U64_LIMIT:
            raise source.error(
                f"tensor {_quote(name)}: the size of shape {list(shape)} overflows 64 bits", field="shape"
            )
    if n_bits % 8:
        raise source.error(
            f"tensor {_quote(name)}: {math.prod(shape)} elements of {dtype} make {n_bits} bits, "
            "not a whole number of bytes",
            field="shape",
        )
    if n_bits // 8 != n_bytes:
        raise source.error(
            f"tensor {_quote(name)}: shape {list(shape)} of {dtype} needs {n_bits // 8} bytes but data_offsets span "
            f"{n_bytes}",
            field="data_offsets",
        )


def _check_layout(source: ByteSource, tensors: list[TensorInfo], data_size: int) -> list[TensorInfo]:
    """Tensors sorted by offset must tile the data buffer exactly: from 0, no gaps, no overlaps,
    no trailing bytes (the README forbids holes so a file cannot double as another format)."""
    ordered = sorted(tensors, key=lambda tensor: (tensor.begin, tensor.end))
    position = 0
    previous: TensorInfo | None = None
    for tensor in ordered:
        if tensor.begin > position:
            after = (
                f"the previous tensor {_quote(previous.name)} ends at {position}"
                if previous
                else "the data starts at 0"
            )
            raise source.error(
                f"tensor {_quote(tensor.name)} begins at {tensor.begin} but {after} "
                f"(a gap of {tensor.begin - position} bytes; the format forbids holes)",
                field="data_offsets",
            )
        if tensor.begin < position:
            assert previous is not None  # position is 0 before the first tensor
            raise source.error(
                f"tensor {_quote(tensor.name)} ({tensor.begin}..{tensor.end}) overlaps tensor {_quote(previous.name)} "
                f"({previous.begin}..{previous.end})",
                field="data_offsets",
            )
        if tensor.end > data_size:
            raise source.error(
                f"tensor {_quote(tensor.name)} ends at {tensor.end} but the data buffer has {data_size} bytes",
                field="data_offsets",
            )
        position = tensor.end
        previous = tensor
    if position != data_size:
        raise source.error(
            f"the tensors end at byte {position} of the data buffer but it has {data_size} bytes "
            f"({data_size - position} bytes no tensor accounts for)",
            field="data_offsets",
        )
    return ordered


# -- sharded checkpoints ----------------------------------------------------------------------


def read_shard_index(source: ByteSource) -> ShardIndex:
    """Read a `model.safetensors.index.json`: `metadata.total_size`, `metadata.total_parameters`, `weight_map`."""
    try:
        document = read_json(source)
    except InvalidModelFileError:
        raise
    except InvalidInputError as exc:
        raise source.error(exc.message) from None
    if not isinstance(document, dict):
        raise source.error(f"must hold a JSON object at the top level, found {_json_kind(document)}")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise source.error(f"expected an object, found {_json_kind(metadata)}", field="metadata")
    return ShardIndex(
        total_size=_optional_count(source, metadata, "total_size"),
        total_parameters=_optional_count(source, metadata, "total_parameters"),
        weight_map=_read_weight_map(source, document.get("weight_map")),
    )


def _optional_count(source: ByteSource, metadata: dict[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise source.error(f"expected a non-negative integer, found {_short(value)}", field=f"metadata.{key}")
    return value


def _read_weight_map(source: ByteSource, weight_map: Any) -> dict[str, str]:
    if weight_map is None:
        raise source.error("missing: the index must map tensor names to shard files", field="weight_map")
    if not isinstance(weight_map, dict):
        raise source.error(f"expected an object, found {_json_kind(weight_map)}", field="weight_map")
    checked: set[str] = set()
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise source.error(
                f"tensor {_quote(tensor)} maps to {_json_kind(shard)}, not a file name", field="weight_map"
            )
        if shard not in checked:
            problem = shard_name_problem(shard)
            if problem:
                raise source.error(f"tensor {_quote(tensor)} maps to {_quote(shard)}: {problem}", field="weight_map")
            checked.add(shard)
    return dict(weight_map)


def shard_name_problem(name: str) -> str | None:
    """Why `name` is not an acceptable shard file name (None when it is): shards are plain file names
    next to the index, never paths (huggingface_hub refuses the same)."""
    if not name:
        return "an empty file name"
    if "/" in name or "\\" in name:
        return "a path, not a plain file name"
    if name in (".", "..") or "\x00" in name:
        return "not a file name"
    if len(name) >= 2 and name[1] == ":":
        return "a drive-qualified name, not a plain file name"
    if not name.endswith(SHARD_EXTENSION) or name == SHARD_EXTENSION:
        return f"a shard must be a {SHARD_EXTENSION} file"
    return None


def check_shards(index: ShardIndex, shards: dict[str, SafetensorsHeader], index_name: str) -> None:
    """Check the index against its shards' headers (keyed by shard file name): every shard exists,
    every mapped tensor is in its shard, no shard holds a tensor mapped elsewhere or not at all,
    and `total_size` (when given) is the sum of the shards' data sizes."""
    for shard in index.shard_names:
        if shard not in shards:
            raise InvalidModelFileError(
                f"shard {_quote(shard)} is named but missing", path=index_name, field="weight_map"
            )
    for tensor, shard in index.weight_map.items():
        if tensor not in shards[shard].tensors:
            raise InvalidModelFileError(
                f"tensor {_quote(tensor)} is mapped to {_quote(shard)}, which does not hold it",
                path=index_name,
                field="weight_map",
            )
    for shard, header in shards.items():
        for tensor in header.tensors:
            mapped = index.weight_map.get(tensor)
            if mapped != shard:
                where = f"the index maps it to {_quote(mapped)}" if mapped else "the index does not map it"
                raise InvalidModelFileError(
                    f"shard {_quote(shard)} holds tensor {_quote(tensor)} but {where}",
                    path=index_name,
                    field="weight_map",
                )
    if index.total_size is not None:
        data_size = sum(shards[shard].data_size for shard in index.shard_names)
        if data_size != index.total_size:
            raise InvalidModelFileError(
                f"is {index.total_size} bytes but the data of the {len(index.shard_names)} shard(s) adds up to "
                f"{data_size} bytes",
                path=index_name,
                field="metadata.total_size",
            )


# -- helpers ----------------------------------------------------------------------------------


def _is_u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64_LIMIT


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _short(value: Any) -> str:
    """A value for a message, cut short: it comes from an untrusted file."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _quote(text: str) -> str:
    """A name from the file, quoted and cut short for a one-line message."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."
