"""The GGUF header reader (model-formats.md section 2; ggml `docs/gguf.md`).

`read_gguf` parses the magic, version, metadata key/value pairs and tensor infos of a GGUF file,
versions 2 and 3, either byte order, and checks everything ggml's own reader (`src/gguf.cpp`)
refuses: every length and count is checked against the bytes left in the file before anything
is read, so a claimed 10^12-byte string in a 60-byte file fails at once. Tensor data is never
read.

Speed: a Llama-3 vocabulary is ~128k token strings plus ~280k merges. Those arrays are not
decoded: a tight loop hops over their length prefixes in a buffer read in large chunks, keeping
only the count (and, for `tokenizer.ggml.tokens`, the offset of every 1024th token, so the
special tokens named by `tokenizer.ggml.*_token_id` are found afterwards wherever those keys sit).
The elements of skipped arrays are bounds-checked but not UTF-8-checked; every kept string is.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.gguf_tables import (
    ARRAY,
    BOOL,
    DEFAULT_ALIGNMENT,
    FILE_TYPE_LABELS,
    GGML_TYPES,
    GGUF_MAGIC,
    INTEGER_TYPES,
    MAX_DIMS,
    MAX_KEY_BYTES,
    MAX_TENSOR_NAME_BYTES,
    POOLING_TYPES,
    SPECIAL_TOKEN_KEYS,
    STRING,
    SUPPORTED_VERSIONS,
    VALUE_TYPES,
)

CHUNK_BYTES = 1 << 20  # header bytes read per call: big enough that a vocabulary takes a few reads
MAX_KEPT_ARRAY = 64  # longer arrays are summarised, not kept
MAX_STRING_BYTES = 16 << 20  # chat templates are kilobytes; a longer string is not plausible metadata
TOKEN_CHECKPOINT_STRIDE = 1024
_INT64_LIMIT = 2**63  # ggml keeps dims and element counts in int64
# Smallest possible encodings, to refuse counts the remaining bytes cannot hold before looping:
# a metadata pair is a key (8-byte length + at least 1 byte), a type (4) and a value (>= 1); a
# tensor info a name (8 + 0), n_dims (4), a type (4) and an offset (8).
_MIN_PAIR_BYTES = 14
_MIN_TENSOR_INFO_BYTES = 24


@dataclass(frozen=True)
class ArraySummary:
    """An array too long to keep: its element type (e.g. "string", "float32") and length."""

    element_type: str
    count: int


ByteOrder: TypeAlias = Literal["little", "big"]
GgufScalar: TypeAlias = int | float | bool | str
GgufValue: TypeAlias = GgufScalar | tuple[GgufScalar, ...] | ArraySummary


@dataclass(frozen=True)
class GgufTensor:
    """One tensor info. `dims` in file order (innermost first); `offset` is relative to the data section."""

    name: str
    dims: tuple[int, ...]
    ggml_type: str
    offset: int
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GgufBaseModel:
    """One `general.base_model.{i}.*` entry (the model this one derives from)."""

    name: str | None
    repo_url: str | None
    organization: str | None


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF header says. Metadata values are scalars, tuples of up to 64 elements, or
    `ArraySummary`; the properties read the keys the catalog needs."""

    version: int
    byte_order: ByteOrder
    alignment: int
    data_offset: int
    metadata: dict[str, GgufValue]
    tensors: tuple[GgufTensor, ...]
    bos_token: str | None
    eos_token: str | None
    padding_token: str | None
    unknown_token: str | None
    warnings: tuple[str, ...]

    @property
    def architecture(self) -> str | None:
        """Always set, except in the second and later files of a split model (they carry only tensors)."""
        return self._str("general.architecture")

    @property
    def name(self) -> str | None:
        return self._str("general.name")

    @property
    def general_type(self) -> str | None:
        """`model`, `adapter`, `mmproj`, `imatrix`, ... (None when the key is absent)."""
        return self._str("general.type")

    @property
    def file_type(self) -> int | None:
        return self._int("general.file_type")

    @property
    def quantization(self) -> str | None:
        """The `general.file_type` label ("Q4_K_M", "F16", "ALL_F32", ...), or the ggml type
        holding the most bytes when the key is absent or unknown (e.g. 1024, "guessed")."""
        if self.file_type in FILE_TYPE_LABELS:
            return FILE_TYPE_LABELS[self.file_type]
        by_bytes = self._per_type("n_bytes")
        return min(by_bytes, key=lambda name: (-by_bytes[name], name)) if by_bytes else None

    @property
    def context_length(self) -> int | None:
        return self._arch_int("context_length")

    @property
    def embedding_length(self) -> int | None:
        return self._arch_int("embedding_length")

    @property
    def block_count(self) -> int | None:
        return self._arch_int("block_count")

    @property
    def head_count(self) -> int | None:
        """Attention heads; the largest value when the file gives one per layer."""
        return self._arch_int("attention.head_count")

    @property
    def head_count_kv(self) -> int | None:
        return self._arch_int("attention.head_count_kv")

    @property
    def expert_count(self) -> int | None:
        return self._arch_int("expert_count")

    @property
    def vocab_size(self) -> int | None:
        """The length of `tokenizer.ggml.tokens`, else `{arch}.vocab_size`."""
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, ArraySummary):
            return tokens.count
        if isinstance(tokens, tuple):
            return len(tokens)
        return self._arch_int("vocab_size")

    @property
    def tokenizer_model(self) -> str | None:
        return self._str("tokenizer.ggml.model")

    @property
    def chat_template(self) -> str | None:
        return self._str("tokenizer.chat_template")

    @property
    def chat_templates(self) -> dict[str, str]:
        """Named templates, `tokenizer.chat_template.{name}` -> {name: template}."""
        prefix = "tokenizer.chat_template."
        return {
            key[len(prefix) :]: value
            for key, value in self.metadata.items()
            if key.startswith(prefix) and isinstance(value, str)
        }

    @property
    def license(self) -> str | None:
        return self._str("general.license")

    @property
    def author(self) -> str | None:
        return self._str("general.author")

    @property
    def size_label(self) -> str | None:
        return self._str("general.size_label")

    @property
    def base_models(self) -> tuple[GgufBaseModel, ...]:
        """The `general.base_model.{i}.name/.repo_url/.organization` entries, by index."""
        prefix = "general.base_model."
        indices = sorted(
            {int(part) for key in self.metadata if key.startswith(prefix) and (part := key.split(".")[2]).isdigit()}
        )
        return tuple(
            GgufBaseModel(
                name=self._str(f"{prefix}{i}.name"),
                repo_url=self._str(f"{prefix}{i}.repo_url"),
                organization=self._str(f"{prefix}{i}.organization"),
            )
            for i in indices
        )

    @property
    def adapter_type(self) -> str | None:
        return self._str("adapter.type")

    @property
    def lora_alpha(self) -> float | None:
        value = self.metadata.get("adapter.lora.alpha")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def pooling_type(self) -> str | None:
        """The pooling of an embedding model ("mean", "cls", "last", ...)."""
        value = self._arch_int("pooling_type")
        return None if value is None else POOLING_TYPES.get(value, str(value))

    @property
    def split_no(self) -> int | None:
        return self._int("split.no")

    @property
    def split_count(self) -> int | None:
        return self._int("split.count")

    @property
    def parameter_count(self) -> int:
        return sum(tensor.n_elements for tensor in self.tensors)

    @property
    def type_breakdown(self) -> dict[str, int]:
        """Elements per ggml type, e.g. {"Q4_K": 6_000_000_000, "F32": 260_000}."""
        return self._per_type("n_elements")

    def _per_type(self, attribute: Literal["n_bytes", "n_elements"]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for tensor in self.tensors:
            totals[tensor.ggml_type] = totals.get(tensor.ggml_type, 0) + getattr(tensor, attribute)
        return totals

    def _str(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def _int(self, key: str) -> int | None:
        value = self.metadata.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _arch_int(self, suffix: str) -> int | None:
        # Integer arch keys come in any integer type (the spec says u64, converters often write u32),
        # and some models give one value per layer (an array).
        if self.architecture is None:
            return None
        value = self.metadata.get(f"{self.architecture}.{suffix}")
        if isinstance(value, tuple):
            numbers = [item for item in value if isinstance(item, int) and not isinstance(item, bool)]
            return max(numbers) if numbers else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- buffered, bounded reading ----------------------------------------------------------------


class _Cursor:
    """Sequential reads of the header through a ByteSource, buffered CHUNK_BYTES at a time."""

    def __init__(self, source: ByteSource, order: str) -> None:
        self.source = source
        self.order = order
        self.u32_struct = struct.Struct(order + "I")
        self.u64_struct = struct.Struct(order + "Q")
        self.buffer = b""
        self.base = 0  # file offset of buffer[0]
        self.pos = 0  # index into buffer; may point past its end after a skip

    @property
    def offset(self) -> int:
        return self.base + self.pos

    @property
    def left(self) -> int:
        """Bytes of the file after the current offset."""
        return self.source.size - self.offset

    def seek(self, offset: int) -> None:
        if self.base <= offset <= self.base + len(self.buffer):
            self.pos = offset - self.base
        else:
            self.buffer, self.base, self.pos = b"", offset, 0

    def take(self, n: int, what: str) -> int:
        """Make `n` bytes at the current offset available, advance past them and return their
        index in `buffer`. Refuses (naming `what`) when the file has fewer than `n` bytes left."""
        start = self.pos
        if start + n > len(self.buffer):
            offset = self.offset
            self.buffer = self.source.read(offset, max(n, min(CHUNK_BYTES, self.source.remaining(offset))), what)
            self.base, start = offset, 0
        self.pos = start + n
        return start

    # (`take` may replace `buffer`: call it before reading `self.buffer`.)

    def unpack(self, layout: struct.Struct, what: str) -> tuple[Any, ...]:
        start = self.take(layout.size, what)
        return layout.unpack_from(self.buffer, start)

    def u32(self, what: str) -> int:
        start = self.take(4, what)
        value: int = self.u32_struct.unpack_from(self.buffer, start)[0]
        return value

    def u64(self, what: str) -> int:
        start = self.take(8, what)
        value: int = self.u64_struct.unpack_from(self.buffer, start)[0]
        return value

    def raw(self, n: int, what: str) -> bytes:
        start = self.take(n, what)
        return self.buffer[start : start + n]

    def skip_strings(self, count: int, what: str, checkpoints: list[int] | None = None) -> None:
        """Move past `count` length-prefixed strings without decoding them. When `checkpoints` is
        given, append the offset of every TOKEN_CHECKPOINT_STRIDE-th string to it."""
        unpack = self.u64_struct.unpack_from
        stride = TOKEN_CHECKPOINT_STRIDE if checkpoints is not None else count
        index = 0
        while index < count:
            if self.pos + 8 > len(self.buffer):
                if self.left < 8:
                    raise self.source.error(
                        f"the {count} strings run past the end of the file (string {index} would start at byte "
                        f"{self.offset}; the file has {self.source.size})",
                        field=what,
                    )
                self._load(what)
            buffer, pos = self.buffer, self.pos
            if checkpoints is not None and len(checkpoints) * stride == index:
                checkpoints.append(self.base + pos)
            stop = min(count, (index // stride + 1) * stride)
            start = index
            try:
                # The hot loop (~400k iterations for a Llama-3 vocabulary): one unpack per string.
                for index in range(start, stop):  # noqa: B007 - on failure, `index` is the string it failed on
                    pos += 8 + unpack(buffer, pos)[0]
                index = stop
            except (struct.error, OverflowError):
                pass  # string `index` starts beyond this buffer (or beyond 2^63): load from there
            self.pos = pos
        if self.left < 0:
            raise self.source.error(
                f"the last of {count} strings ends at byte {self.offset}, past the end of the file "
                f"({self.source.size} bytes)",
                field=what,
            )

    def _load(self, what: str) -> None:
        offset = self.offset
        self.buffer = self.source.read(offset, min(CHUNK_BYTES, self.source.remaining(offset)), what)
        self.base, self.pos = offset, 0


# -- the header -------------------------------------------------------------------------------

TOKENS_KEY = "tokenizer.ggml.tokens"
ALIGNMENT_KEY = "general.alignment"
ARCHITECTURE_KEY = "general.architecture"
_UINT32 = 4


@dataclass
class _SkippedStrings:
    """A string array walked over but not kept: its length and every TOKEN_CHECKPOINT_STRIDE-th offset."""

    count: int
    checkpoints: list[int]


def read_gguf(source: ByteSource) -> GgufInfo:
    """Read and validate the header of a GGUF file (version 2 or 3, either byte order)."""
    version, byte_order = _read_version(source)
    return _HeaderParser(source, "<" if byte_order == "little" else ">").parse(version, byte_order)


def _read_version(source: ByteSource) -> tuple[int, ByteOrder]:
    magic = source.read(0, min(4, source.size), "the magic")
    if magic != GGUF_MAGIC:
        raise source.error(f"not a GGUF file: it starts with {magic!r}, not b'GGUF'", field="magic")
    raw = source.read(4, 4, "the version")
    little = int.from_bytes(raw, "little")
    # Nothing in the file says which byte order it uses; like ggml, take a version whose low 16
    # bits are zero as a big-endian one (no real version number is a multiple of 65536).
    byte_order: ByteOrder = "big" if little & 0xFFFF == 0 and little != 0 else "little"
    version = int.from_bytes(raw, byte_order)
    if version == 1:
        raise source.error(
            "GGUF version 1 (32-bit lengths, 2023) is not supported: convert the file with a current llama.cpp",
            field="version",
        )
    if version not in SUPPORTED_VERSIONS:
        raise source.error(f"GGUF version {version} is not supported (known: 2 and 3)", field="version")
    return version, byte_order


class _HeaderParser:
    """One pass over the key/value pairs and tensor infos, then the checks that need all of them."""

    def __init__(self, source: ByteSource, order: str) -> None:
        self.source = source
        self.order = order
        self.cursor = _Cursor(source, order)
        self.metadata: dict[str, GgufValue] = {}
        self.value_types: dict[str, int] = {}
        self.tokens: _SkippedStrings | None = None
        self.scalars = {type_id: struct.Struct(order + kind.code) for type_id, kind in VALUE_TYPES.items() if kind.code}
        self.dims_layouts = [struct.Struct(order + "Q" * n) for n in range(MAX_DIMS + 1)]

    def parse(self, version: int, byte_order: ByteOrder) -> GgufInfo:
        cursor = self.cursor
        cursor.seek(8)
        tensor_count = cursor.u64("the tensor count")
        pair_count = cursor.u64("the metadata pair count")
        if pair_count * _MIN_PAIR_BYTES + tensor_count * _MIN_TENSOR_INFO_BYTES > cursor.left:
            raise self.source.error(
                f"the header claims {tensor_count} tensors and {pair_count} metadata pairs, more than the "
                f"{cursor.left} bytes left in the file can hold",
                field="counts",
            )
        for index in range(pair_count):
            self._read_pair(index)
        self._check_architecture()
        alignment = self._alignment()
        tensors = self._read_tensor_infos(tensor_count)
        data_offset = -(-cursor.offset // alignment) * alignment
        self._check_tensor_data(tensors, alignment, data_offset)
        special, warnings = self._special_tokens()
        return GgufInfo(
            version=version,
            byte_order=byte_order,
            alignment=alignment,
            data_offset=data_offset,
            metadata=self.metadata,
            tensors=tuple(tensors),
            bos_token=special["bos"],
            eos_token=special["eos"],
            padding_token=special["padding"],
            unknown_token=special["unknown"],
            warnings=tuple(warnings),
        )

    # -- metadata ---------------------------------------------------------------------------

    def _read_pair(self, index: int) -> None:
        key = self._read_string(MAX_KEY_BYTES, f"the key of metadata pair {index}", field=None)
        if not key:
            raise self.source.error(f"metadata pair {index} has an empty key")
        if key in self.metadata:
            raise self.source.error("duplicate key", field=key)
        type_id = self.cursor.u32(f"the value type of key {_quote(key)}")
        if type_id not in VALUE_TYPES:
            raise self.source.error(f"unknown value type {type_id}", field=key)
        self.value_types[key] = type_id
        self.metadata[key] = self._read_array(key) if type_id == ARRAY else self._read_scalar(key, type_id, "the value")

    def _read_scalar(self, key: str, type_id: int, what: str) -> GgufScalar:
        if type_id == STRING:
            return self._read_string(MAX_STRING_BYTES, what, field=key)
        value: GgufScalar = self.cursor.unpack(self.scalars[type_id], f"{what} of key {_quote(key)}")[0]
        return value != 0 if type_id == BOOL else value

    def _read_array(self, key: str) -> GgufValue:
        cursor = self.cursor
        element_type = cursor.u32(f"the element type of key {_quote(key)}")
        if element_type == ARRAY:
            raise self.source.error("an array of arrays (nested arrays are refused, as ggml does)", field=key)
        if element_type not in VALUE_TYPES:
            raise self.source.error(f"unknown array element type {element_type}", field=key)
        kind = VALUE_TYPES[element_type]
        count = cursor.u64(f"the element count of key {_quote(key)}")
        smallest = 8 if element_type == STRING else kind.size  # a string is at least its length
        if count * smallest > cursor.left:
            raise self.source.error(
                f"an array of {count} {kind.name} needs at least {count * smallest} bytes but only {cursor.left} "
                "are left in the file",
                field=key,
            )
        if element_type == STRING:
            return self._read_string_array(key, count)
        if count > MAX_KEPT_ARRAY:
            cursor.seek(cursor.offset + count * kind.size)
            return ArraySummary(kind.name, count)
        values = cursor.unpack(struct.Struct(f"{self.order}{count}{kind.code}"), f"the elements of key {_quote(key)}")
        return tuple(value != 0 for value in values) if element_type == BOOL else tuple(values)

    def _read_string_array(self, key: str, count: int) -> GgufValue:
        if count <= MAX_KEPT_ARRAY:
            return tuple(self._read_string(MAX_STRING_BYTES, f"element {i}", field=key) for i in range(count))
        checkpoints: list[int] | None = [] if key == TOKENS_KEY else None
        self.cursor.skip_strings(count, key, checkpoints)
        if checkpoints is not None:
            self.tokens = _SkippedStrings(count, checkpoints)
        return ArraySummary("string", count)

    def _read_string(self, limit: int, what: str, field: str | None) -> str:
        cursor = self.cursor
        length = cursor.u64(f"the length of {what}" + (f" of key {_quote(field)}" if field else ""))
        if length > cursor.left:
            raise self.source.error(
                f"{what}: a string of {length} bytes, but only {cursor.left} bytes are left in the file", field=field
            )
        if length > limit:
            raise self.source.error(f"{what}: a string of {length} bytes, over the limit of {limit}", field=field)
        try:
            return cursor.raw(length, what).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.source.error(f"{what} is not UTF-8 (byte {exc.start} of the string)", field=field) from None

    def _check_architecture(self) -> None:
        value = self.metadata.get(ARCHITECTURE_KEY)
        split_no = self.metadata.get("split.no")
        if value is None and isinstance(split_no, int) and not isinstance(split_no, bool) and split_no > 0:
            return  # llama.cpp's gguf-split writes all metadata into the first split only
        if value is None:
            raise self.source.error("missing (every GGUF file must name its architecture)", field=ARCHITECTURE_KEY)
        if not isinstance(value, str):
            found = VALUE_TYPES[self.value_types[ARCHITECTURE_KEY]].name
            raise self.source.error(f"must be a string, found {found}", field=ARCHITECTURE_KEY)

    def _alignment(self) -> int:
        if ALIGNMENT_KEY not in self.metadata:
            return DEFAULT_ALIGNMENT
        value = self.metadata[ALIGNMENT_KEY]
        if self.value_types[ALIGNMENT_KEY] != _UINT32:
            raise self.source.error(
                f"must be a uint32, found {VALUE_TYPES[self.value_types[ALIGNMENT_KEY]].name}", field=ALIGNMENT_KEY
            )
        assert isinstance(value, int)
        if value == 0 or value & (value - 1):
            raise self.source.error(f"must be a power of two, found {value}", field=ALIGNMENT_KEY)
        return value

    # -- tensor infos -----------------------------------------------------------------------

    def _read_tensor_infos(self, count: int) -> list[GgufTensor]:
        tensors: list[GgufTensor] = []
        names: set[str] = set()
        for index in range(count):
            tensor = self._read_tensor_info(index)
            if tensor.name in names:
                raise self.source.error(f"tensor {index}: duplicate tensor name {_quote(tensor.name)}")
            names.add(tensor.name)
            tensors.append(tensor)
        return tensors

    def _read_tensor_info(self, index: int) -> GgufTensor:
        cursor, error = self.cursor, self.source.error
        name = self._read_string(MAX_TENSOR_NAME_BYTES, f"the name of tensor {index}", field=None)
        label = f"tensor {_quote(name)}"
        n_dims = cursor.u32(f"the dimension count of {label}")
        if n_dims > MAX_DIMS:
            raise error(f"{label} has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}")
        dims: tuple[int, ...] = cursor.unpack(self.dims_layouts[n_dims], f"the dimensions of {label}")
        if any(dim >= _INT64_LIMIT for dim in dims):
            raise error(f"{label}: dimensions {list(dims)} do not fit ggml's signed 64-bit sizes")
        type_id = cursor.u32(f"the type of {label}")
        ggml_type = GGML_TYPES.get(type_id)
        if ggml_type is None:
            raise error(f"{label} has unknown ggml type {type_id}")
        offset = cursor.u64(f"the data offset of {label}")
        n_elements = math.prod(dims)
        if n_elements >= _INT64_LIMIT:
            raise error(f"{label}: {n_elements} elements overflow ggml's signed 64-bit sizes")
        inner = dims[0] if dims else 1
        if inner % ggml_type.block_size:
            raise error(
                f"{label}: its first dimension {inner} is not a multiple of the {ggml_type.name} block size "
                f"{ggml_type.block_size}"
            )
        n_bytes = n_elements // ggml_type.block_size * ggml_type.type_size
        return GgufTensor(name, dims, ggml_type.name, offset, n_elements, n_bytes)

    def _check_tensor_data(self, tensors: list[GgufTensor], alignment: int, data_offset: int) -> None:
        """Offsets aligned, data inside the file, no two tensors sharing a byte."""
        error = self.source.error
        for tensor in tensors:
            if tensor.offset % alignment:
                raise error(
                    f"tensor {_quote(tensor.name)}: data offset {tensor.offset} is not a multiple of {alignment}"
                )
        previous: GgufTensor | None = None
        for tensor in sorted(tensors, key=lambda t: (t.offset, t.n_bytes)):
            if previous is not None and tensor.offset < previous.offset + previous.n_bytes:
                raise error(
                    f"tensor {_quote(tensor.name)} (data {tensor.offset}..{tensor.offset + tensor.n_bytes}) overlaps "
                    f"tensor {_quote(previous.name)} ({previous.offset}..{previous.offset + previous.n_bytes})"
                )
            end = data_offset + tensor.offset + tensor.n_bytes
            if end > self.source.size:
                raise error(
                    f"the data of tensor {_quote(tensor.name)} ends at byte {end} but the file has "
                    f"{self.source.size} bytes (truncated?)"
                )
            previous = tensor

    # -- special tokens ---------------------------------------------------------------------

    def _special_tokens(self) -> tuple[dict[str, str | None], list[str]]:
        """The strings of the tokens named by `tokenizer.ggml.{bos,eos,unknown,padding}_token_id`.
        A bad id is a warning, not an error: the weights are still usable."""
        found: dict[str, str | None] = dict.fromkeys(SPECIAL_TOKEN_KEYS.values())
        warnings: list[str] = []
        tokens = self.metadata.get(TOKENS_KEY)
        for key, role in SPECIAL_TOKEN_KEYS.items():
            token_id = self.metadata.get(key)
            if token_id is None:
                continue
            if self.value_types[key] not in INTEGER_TYPES:
                warnings.append(f"{key} is of type {VALUE_TYPES[self.value_types[key]].name}, not an integer token id")
                continue
            assert isinstance(token_id, int)
            if isinstance(tokens, tuple) and all(isinstance(token, str) for token in tokens):
                count = len(tokens)
            elif self.tokens is not None:
                count = self.tokens.count
            else:
                warnings.append(f"{key} is {token_id} but there is no {TOKENS_KEY} string array to look it up in")
                continue
            if not 0 <= token_id < count:
                warnings.append(f"{key} is {token_id}, outside the vocabulary of {count} tokens")
                continue
            found[role] = str(tokens[token_id]) if isinstance(tokens, tuple) else self._token_string(token_id)
        return found, warnings

    def _token_string(self, token_id: int) -> str:
        assert self.tokens is not None
        self.cursor.seek(self.tokens.checkpoints[token_id // TOKEN_CHECKPOINT_STRIDE])
        self.cursor.skip_strings(token_id % TOKEN_CHECKPOINT_STRIDE, TOKENS_KEY)
        return self._read_string(MAX_STRING_BYTES, f"token {token_id}", field=TOKENS_KEY)


def _quote(text: str) -> str:
    """A name from the file, quoted and cut short for a one-line message."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."
