"""Constant tables of the GGUF format, kept apart from the reader in `gguf.py`.

Sources (model-formats.md section 2): value types from ggml `docs/gguf.md`; tensor types with
their block and type sizes from `GGMLQuantizationType` and `GGML_QUANT_SIZES`, and quantization
labels from `LlamaFileType` (gguf-py `constants.py`, gguf 0.19.0). Retired ids are left out on
purpose, so a file using one is refused as "unknown" instead of being sized wrongly.
"""

from __future__ import annotations

from typing import NamedTuple

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_BYTES = 64  # the spec's limit (ggml itself stops at 63: its 64 includes the terminator)
MAX_KEY_BYTES = 65535


class ValueType(NamedTuple):
    """A metadata value type: its name (as gguf-py spells it, lower-cased), struct code and size.
    Strings and arrays have a variable size (0 here)."""

    name: str
    code: str
    size: int


STRING = 8
ARRAY = 9
BOOL = 7

VALUE_TYPES: dict[int, ValueType] = {
    0: ValueType("uint8", "B", 1),
    1: ValueType("int8", "b", 1),
    2: ValueType("uint16", "H", 2),
    3: ValueType("int16", "h", 2),
    4: ValueType("uint32", "I", 4),
    5: ValueType("int32", "i", 4),
    6: ValueType("float32", "f", 4),
    BOOL: ValueType("bool", "B", 1),  # read as a byte: ggml treats any non-zero byte as true
    STRING: ValueType("string", "", 0),
    ARRAY: ValueType("array", "", 0),
    10: ValueType("uint64", "Q", 8),
    11: ValueType("int64", "q", 8),
    12: ValueType("float64", "d", 8),
}

INTEGER_TYPES = frozenset({0, 1, 2, 3, 4, 5, 10, 11})


class GgmlType(NamedTuple):
    """A tensor type: its name, elements per block and bytes per block."""

    name: str
    block_size: int
    type_size: int


_QK_K = 256  # elements per super-block of the k-quants

GGML_TYPES: dict[int, GgmlType] = {
    0: GgmlType("F32", 1, 4),
    1: GgmlType("F16", 1, 2),
    2: GgmlType("Q4_0", 32, 2 + 16),
    3: GgmlType("Q4_1", 32, 2 + 2 + 16),
    6: GgmlType("Q5_0", 32, 2 + 4 + 16),
    7: GgmlType("Q5_1", 32, 2 + 2 + 4 + 16),
    8: GgmlType("Q8_0", 32, 2 + 32),
    9: GgmlType("Q8_1", 32, 4 + 4 + 32),
    10: GgmlType("Q2_K", _QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    11: GgmlType("Q3_K", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    12: GgmlType("Q4_K", _QK_K, 2 + 2 + _QK_K // 2 + 12),
    13: GgmlType("Q5_K", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    14: GgmlType("Q6_K", _QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    15: GgmlType("Q8_K", _QK_K, 4 + _QK_K + _QK_K // 8),
    16: GgmlType("IQ2_XXS", _QK_K, 2 + _QK_K // 4),
    17: GgmlType("IQ2_XS", _QK_K, 2 + _QK_K // 4 + _QK_K // 32),
    18: GgmlType("IQ3_XXS", _QK_K, 2 + _QK_K // 4 + _QK_K // 8),
    19: GgmlType("IQ1_S", _QK_K, 2 + _QK_K // 8 + _QK_K // 16),
    20: GgmlType("IQ4_NL", 32, 2 + 16),
    21: GgmlType("IQ3_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    22: GgmlType("IQ2_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 16),
    23: GgmlType("IQ4_XS", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    24: GgmlType("I8", 1, 1),
    25: GgmlType("I16", 1, 2),
    26: GgmlType("I32", 1, 4),
    27: GgmlType("I64", 1, 8),
    28: GgmlType("F64", 1, 8),
    29: GgmlType("IQ1_M", _QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    30: GgmlType("BF16", 1, 2),
    34: GgmlType("TQ1_0", _QK_K, 2 + 4 * 13),
    35: GgmlType("TQ2_0", _QK_K, 2 + 64),
    39: GgmlType("MXFP4", 32, 1 + 16),
    40: GgmlType("NVFP4", 64, 4 + 32),
    41: GgmlType("Q1_0", 128, 2 + 16),
}

# `general.file_type` -> quantization label (LlamaFileType without its MOSTLY_ prefix).
FILE_TYPE_LABELS: dict[int, str] = {
    0: "ALL_F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

# The special tokens whose strings are looked up in `tokenizer.ggml.tokens`: id key -> field name.
SPECIAL_TOKEN_KEYS: dict[str, str] = {
    "tokenizer.ggml.bos_token_id": "bos",
    "tokenizer.ggml.eos_token_id": "eos",
    "tokenizer.ggml.unknown_token_id": "unknown",
    "tokenizer.ggml.padding_token_id": "padding",
}

# `{arch}.pooling_type` of embedding models (gguf-py `PoolingType`).
POOLING_TYPES: dict[int, str] = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
