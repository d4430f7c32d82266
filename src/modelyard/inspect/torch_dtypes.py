"""Tables from torch's pickled names to modelyard's dtype labels (the safetensors spellings where
safetensors has one, e.g. F32, BF16, F8_E4M3) and their element sizes in bytes.

A storage class (`torch.FloatStorage`, legacy and torch < 2.x typed storages) fixes the dtype of
every tensor on it; newer checkpoints store `torch.storage.UntypedStorage` (bytes) and pass the
dtype as `torch.<dtype>` to `_rebuild_tensor_v3` (torch/_utils.py, torch/serialization.py).
"""

from __future__ import annotations

STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
    "ComplexFloatStorage": "C64",
    "ComplexDoubleStorage": "C128",
    "QInt8Storage": "QI8",
    "QUInt8Storage": "QU8",
    "QInt32Storage": "QI32",
    "QUInt4x2Storage": "QU4X2",
    "QUInt2x4Storage": "QU2X4",
    "UntypedStorage": "U8",  # bytes; the tensor's own dtype is passed separately
}

TORCH_DTYPES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "complex32": "C32",
    "complex64": "C64",
    "complex128": "C128",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
    "float4_e2m1fn_x2": "F4_E2M1_X2",
    "qint8": "QI8",
    "quint8": "QU8",
    "qint32": "QI32",
    "quint4x2": "QU4X2",
    "quint2x4": "QU2X4",
    "bits8": "BITS8",
    "bits16": "BITS16",
    "bits1x8": "BITS1X8",
    "bits2x4": "BITS2X4",
    "bits4x2": "BITS4X2",
}

# Bytes per element. Sub-byte dtypes (torch.uint4, torch.int2, ...) are absent: their storage
# size cannot be checked element by element.
ITEM_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "BOOL": 1,
    "C32": 4,
    "C64": 8,
    "C128": 16,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1,
    "F4_E2M1_X2": 1,
    "QI8": 1,
    "QU8": 1,
    "QI32": 4,
    "QU4X2": 1,
    "QU2X4": 1,
    "BITS8": 1,
    "BITS16": 2,
    "BITS1X8": 1,
    "BITS2X4": 1,
    "BITS4X2": 1,
}

# numpy dtype codes (as numpy pickles them: kind + item size) to `struct` formats, for numpy
# scalars stored as metrics.
NUMPY_SCALAR_FORMATS: dict[str, str] = {
    "f2": "e",
    "f4": "f",
    "f8": "d",
    "i1": "b",
    "i2": "h",
    "i4": "i",
    "i8": "q",
    "u1": "B",
    "u2": "H",
    "u4": "I",
    "u8": "Q",
}


def torch_dtype_label(name: str) -> str | None:
    """The label of `torch.<name>`, or of a sub-byte type such as `torch.uint4` ("U4")."""
    if name in TORCH_DTYPES:
        return TORCH_DTYPES[name]
    for prefix, label in (("uint", "U"), ("int", "I")):
        digits = name.removeprefix(prefix)
        if name.startswith(prefix) and digits.isdigit() and 1 <= int(digits) <= 7:
            return f"{label}{digits}"
    return None
