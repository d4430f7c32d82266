"""Recognising tensors, mappings and numbers in a replayed checkpoint pickle, by shape alone.

A tensor is a call of a `torch._utils._rebuild_*` function (torch/_utils.py); its dtype comes
from the storage class in the persistent id or, for `_rebuild_tensor_v3`, from the dtype
argument, and its shape from the size argument. Each tensor's size, stride and offset are checked
against its storage's element count, and (in a zip archive) that count against the storage
member's real size, so a corrupt header cannot claim weights the file does not hold.

Replayed values can be cyclic or shared many times through the memo, so every walk here is
bounded in depth (`MAX_NESTING`) and in total visits (`MAX_VISITS`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TypeGuard

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.pickles import Build, Call, Global, Key, Omitted, PersistentId, Value
from modelyard.inspect.torch_dtypes import ITEM_SIZES, NUMPY_SCALAR_FORMATS, STORAGE_DTYPES, torch_dtype_label

MAX_NESTING = 64
MAX_VISITS = 2_000_000
MAX_DIMS = 64

_STORAGE_REBUILDERS = frozenset({"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"})
_WRAPPING_REBUILDERS = frozenset(
    {"_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_cpu_tensor"}
)
_STORAGE_MODULES = frozenset({"torch", "torch.cuda", "torch.storage"})
_NUMPY_SCALARS = frozenset({"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"})
_MAPPING_CLASSES = frozenset({"collections.OrderedDict", "collections.defaultdict", "builtins.dict"})


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's dtype label (F32, BF16, I8, ...) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _Storage:
    dtype: str
    key: str
    numel: int  # in elements of `dtype` (bytes for an untyped storage)


class TensorWalker:
    """Finds tensors in replayed values, validating each against its storage."""

    def __init__(self, source: ByteSource, storage_sizes: dict[str, int] | None) -> None:
        self.source = source
        self.storage_sizes = storage_sizes  # storage key -> bytes in the archive (zip only)
        self.visits = 0
        self._specs: dict[int, TensorSpec | None] = {}

    def visit(self) -> None:
        self.visits += 1
        if self.visits > MAX_VISITS:
            raise self.source.error(
                f"nested values expand to more than {MAX_VISITS:,} entries (objects shared through the pickle memo)"
            )

    def tensor(self, value: Value, name: str) -> TensorSpec | None:
        """The spec of `value` when it rebuilds a tensor, else None."""
        if not isinstance(value, Call):
            return None
        # Shared tensors (tied weights, memo reuse) are validated once. The values outlive the
        # walker, so their ids stay unique while it runs.
        if id(value) not in self._specs:
            self._specs[id(value)] = self._tensor(value, name)
        return self._specs[id(value)]

    def _tensor(self, value: Value, name: str) -> TensorSpec | None:
        for _ in range(4):  # parameters and device copies wrap the tensor they rebuild
            if not isinstance(value, Call) or not isinstance(value.func, Global):
                return None
            function = _rebuilder(value.func)
            args = value.args if isinstance(value.args, tuple) else ()
            if function in _WRAPPING_REBUILDERS and args:
                value = args[0]
            elif function == "_rebuild_from_type_v2" and len(args) >= 3:  # (func, type, args, state)
                value = Call(args[0], args[2])
            else:
                return self._rebuilt(function, args, name)
        return None

    def _rebuilt(self, function: str, args: tuple[Value, ...], name: str) -> TensorSpec | None:
        if function in _STORAGE_REBUILDERS:
            return self._from_storage(function, args, name)
        if function == "_rebuild_meta_tensor_no_storage":  # (dtype, size, stride, requires_grad)
            return TensorSpec(self._dtype(args[0] if args else None, name), self._shape(args, 1, name))
        if function == "_rebuild_wrapper_subclass":  # (cls, dtype, size, stride, offset, ...)
            return TensorSpec(self._dtype(args[1] if len(args) > 1 else None, name), self._shape(args, 2, name))
        return None

    def _from_storage(self, function: str, args: tuple[Value, ...], name: str) -> TensorSpec:
        # (storage, storage_offset, size, stride, ...); v3 adds the dtype as its 7th argument
        if len(args) < (7 if function == "_rebuild_tensor_v3" else 4):
            raise self._error(name, f"{function} is called with {len(args)} arguments")
        storage = self._storage(args[0], name)
        dtype = self._dtype(args[6], name) if function == "_rebuild_tensor_v3" else storage.dtype
        shape = self._shape(args, 2, name)
        stride = self._shape(args, 3, name, what="stride")
        offset = args[1]
        if not _is_int(offset) or offset < 0 or len(stride) != len(shape):
            raise self._error(name, "storage offset or stride does not fit its shape")
        self._check_extent(name, storage, dtype, shape, stride, offset)
        return TensorSpec(dtype, shape)

    def _storage(self, value: Value, name: str) -> _Storage:
        pid = value.value if isinstance(value, PersistentId) else None
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise self._error(name, "its storage is not a ('storage', type, key, location, size) persistent id")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, Global) or storage_type.module not in _STORAGE_MODULES:
            raise self._error(name, "its storage type is not a torch storage class")
        dtype = STORAGE_DTYPES.get(storage_type.name)
        if dtype is None or not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise self._error(name, f"unknown storage type {storage_type.qualified} or a bad storage key or size")
        view = pid[5] if len(pid) > 5 else None  # legacy files: (view key, offset, view size)
        if isinstance(view, tuple) and len(view) == 3 and _is_int(view[2]) and view[2] >= 0:
            numel = view[2]
        storage = _Storage(dtype, key, numel)
        self._check_storage_member(name, storage, storage_type.name == "UntypedStorage")
        return storage

    def _check_storage_member(self, name: str, storage: _Storage, untyped: bool) -> None:
        if self.storage_sizes is None:
            return
        size = self.storage_sizes.get(storage.key)
        if size is None:
            raise self._error(name, f"its storage data/{storage.key} is not in the archive")
        needed = storage.numel * (1 if untyped else ITEM_SIZES[storage.dtype])
        if size < needed:
            raise self._error(name, f"its storage data/{storage.key} holds {size} bytes but claims {needed}")

    def _check_extent(
        self, name: str, storage: _Storage, dtype: str, shape: tuple[int, ...], stride: tuple[int, ...], offset: int
    ) -> None:
        if 0 in shape:
            return
        last = offset + sum((size - 1) * step for size, step in zip(shape, stride, strict=True))
        needed = last + 1
        if storage.dtype != dtype:  # an untyped (byte) storage holding `dtype` elements
            if dtype not in ITEM_SIZES:
                return
            needed *= ITEM_SIZES[dtype]
        if needed > storage.numel:
            raise self._error(
                name, f"shape {list(shape)} needs {needed} storage elements but its storage holds {storage.numel}"
            )

    def _dtype(self, value: Value, name: str) -> str:
        label = torch_dtype_label(value.name) if isinstance(value, Global) and value.module == "torch" else None
        if label is None:
            raise self._error(name, "its dtype is not a torch dtype")
        return label

    def _shape(self, args: tuple[Value, ...], index: int, name: str, what: str = "size") -> tuple[int, ...]:
        value = args[index] if index < len(args) else None
        if isinstance(value, Call) and value.func == Global("torch", "Size") and isinstance(value.args, tuple):
            value = value.args[0] if value.args else None
        if not isinstance(value, tuple) or len(value) > MAX_DIMS:
            raise self._error(name, f"its {what} is not a tuple of at most {MAX_DIMS} integers")
        dims: list[int] = []
        for dim in value:
            if not _is_int(dim) or dim < 0:
                raise self._error(name, f"its {what} holds a value that is not a non-negative integer")
            dims.append(dim)
        return tuple(dims)

    def _error(self, name: str, problem: str) -> InvalidModelFileError:
        return self.source.error(f"tensor {name!r}: {problem}")

    # -- collections of tensors -----------------------------------------------------------------

    def tensor_mapping(self, value: Value, prefix: str = "") -> dict[str, TensorSpec] | None:
        """Name -> spec when `value` is a mapping whose leaves (nested mappings flattened with '.')
        are all tensors; else None."""
        mapping = as_mapping(value)
        if not mapping:
            return None
        found: dict[str, TensorSpec] = {}
        if not self._collect(mapping, prefix, 0, found):
            return None
        return found

    def _collect(self, mapping: dict[Key, Value], prefix: str, depth: int, found: dict[str, TensorSpec]) -> bool:
        if depth > MAX_NESTING:
            return False
        for key, value in mapping.items():
            self.visit()
            text = key_text(key)
            if text is None:
                return False
            spec = self.tensor(value, prefix + text)
            if spec is not None:
                found[prefix + text] = spec
                continue
            nested = as_mapping(value)
            if not nested or not self._collect(nested, f"{prefix}{text}.", depth + 1, found):
                return False
        return True

    def module_tensors(self, value: Value, prefix: str = "", depth: int = 0) -> dict[str, TensorSpec]:
        """The parameters and buffers of a pickled `nn.Module` (its `_parameters`, `_buffers` and
        `_modules`), or the tensor attributes of a TorchScript object, named as in a state dict."""
        found: dict[str, TensorSpec] = {}
        state = as_mapping(value.state) if isinstance(value, Build) and depth <= MAX_NESTING else None
        if not state:
            return found
        if "_parameters" in state or "_modules" in state:
            for group in ("_parameters", "_buffers"):
                found.update(self._named_tensors(as_mapping(state.get(group)) or {}, prefix))
            for child_name, child in (as_mapping(state.get("_modules")) or {}).items():
                self.visit()
                text = key_text(child_name)
                if text is not None:
                    found.update(self.module_tensors(child, f"{prefix}{text}.", depth + 1))
            return found
        for attribute, child in state.items():
            self.visit()
            text = key_text(attribute)
            spec = self.tensor(child, prefix + (text or ""))
            if text is not None and spec is not None:
                found[prefix + text] = spec
            elif text is not None and isinstance(child, Build):
                found.update(self.module_tensors(child, f"{prefix}{text}.", depth + 1))
        return found

    def _named_tensors(self, mapping: dict[Key, Value], prefix: str) -> dict[str, TensorSpec]:
        found: dict[str, TensorSpec] = {}
        for key, value in mapping.items():
            self.visit()
            text = key_text(key)
            spec = self.tensor(value, prefix + (text or ""))
            if text is not None and spec is not None:
                found[prefix + text] = spec
        return found


def as_mapping(value: Value) -> dict[Key, Value] | None:
    """The items of a dict, or of a dict subclass built by a call (OrderedDict) and perhaps given
    attributes by BUILD (a state dict's `_metadata`); None for anything else."""
    for _ in range(MAX_NESTING):
        if isinstance(value, dict):
            return value
        if isinstance(value, Build):
            value = value.obj
            continue
        if isinstance(value, Call) and (
            value.items or (isinstance(value.func, Global) and value.func.qualified in _MAPPING_CLASSES)
        ):
            return value.items
        return None
    return None


def key_text(key: Key) -> str | None:
    """A mapping key as text: str keys as they are, int keys (optimizer state) in decimal."""
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return None


def number(value: Value) -> int | float | None:
    """An int or float, including a numpy scalar decoded from its bytes; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    return _numpy_scalar(value)


def is_tensor_call(value: Value) -> bool:
    return isinstance(value, Call) and isinstance(value.func, Global) and _rebuilder(value.func) != ""


def _rebuilder(func: Global) -> str:
    if func.module in ("torch._utils", "torch._tensor") and func.name.startswith("_rebuild_"):
        return func.name
    return ""


def _numpy_scalar(value: Value) -> int | float | None:
    """`numpy.core.multiarray.scalar(dtype, raw_bytes)`, as numpy pickles its scalars."""
    if not (isinstance(value, Call) and isinstance(value.func, Global) and value.func.qualified in _NUMPY_SCALARS):
        return None
    if not isinstance(value.args, tuple) or len(value.args) != 2:
        return None
    code, order = _numpy_dtype(value.args[0])
    raw = _bytes(value.args[1])
    layout = NUMPY_SCALAR_FORMATS.get(code)
    if layout is None or raw is None or len(raw) != struct.calcsize(layout):
        return None
    result: int | float = struct.unpack((">" if order == ">" else "<") + layout, raw)[0]
    return result


def _numpy_dtype(value: Value) -> tuple[str, str]:
    """(code, byte order) of a pickled `numpy.dtype(code, False, True)` with BUILD state
    `(3, order, ...)`."""
    order = "<"
    if isinstance(value, Build):
        state = value.state
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            order = state[1]
        value = value.obj
    if isinstance(value, Call) and value.func == Global("numpy", "dtype") and isinstance(value.args, tuple):
        code = value.args[0] if value.args else None
        if isinstance(code, str):
            if code[:1] in ("<", ">", "|", "="):
                order, code = code[0], code[1:]
            return code, order
    return "", order


def _bytes(value: Value) -> bytes | None:
    """Bytes as pickled: natively (protocol 3+) or as `_codecs.encode(text, "latin1")` (protocol 2)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, Omitted) or not isinstance(value, Call) or value.func != Global("_codecs", "encode"):
        return None
    args = value.args
    if not isinstance(args, tuple) or len(args) != 2 or not isinstance(args[0], str):
        return None
    if args[1] not in ("latin1", "latin-1"):
        return None
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        return None


def _is_int(value: Value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
