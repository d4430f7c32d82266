"""What a PyTorch checkpoint (`.pt .pth .bin .ckpt`) holds, read from its pickles without loading it.

Three layouts (model-formats.md section 9): the zip archive of torch >= 1.6 (a TorchScript
archive when it has `code/` or `constants.pkl`), the legacy stream of five pickles followed by
raw storages, and a plain pickle. Every pickle is replayed symbolically (`pickles.py`, nothing
is unpickled) and scanned (`pickle_scan.py`); storages are never read, so checkpoints larger
than memory cost a few small reads.

From the replayed value of the main pickle the contents are described by shape alone
(`torch_tensors.py`): the weights are the top-level mapping when it maps names to tensors, else
the tensor mapping under a key such as `state_dict`, else the parameters of a pickled module;
epochs, steps, metrics and optimizer state are recognised by their keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.pickle_globals import classify_global
from modelyard.inspect.pickle_scan import PickleScan, combine, scan_simulated
from modelyard.inspect.pickles import (
    Build,
    Call,
    Global,
    Key,
    PersistentId,
    SimulatedPickle,
    Value,
    describe,
    simulate_pickle,
)
from modelyard.inspect.torch_tensors import TensorSpec, TensorWalker, as_mapping, is_tensor_call, key_text, number
from modelyard.inspect.torch_zip import TorchZip, open_member, read_torch_zip

__all__ = ["CheckpointFormat", "TensorSpec", "TorchCheckpoint", "read_torch_checkpoint"]

CheckpointFormat = Literal["zip", "torchscript", "legacy", "pickle"]
KeyKind = Literal[
    "weights", "optimizer_state", "scheduler_state", "int", "float", "str", "dict", "list", "object", "other"
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
MAX_PLAIN_PICKLES = 16  # consecutive pickles scanned in a plain pickle file before refusing it
MAX_LISTED_KEYS = 10_000

WEIGHTS_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "network",
    "ema",
    "model_ema",
    "state_dict_ema",
    "params",
    "params_ema",
    "weights",
)
OPTIMIZER_KEYS = frozenset(
    {"optimizer", "optimizer_state_dict", "optimizer_state", "optimizer_states", "optim", "optim_state", "opt"}
)
METRICS_KEYS = ("metrics", "best_metrics")
EPOCH_KEYS = ("epoch",)
STEP_KEYS = ("global_step", "step")


@dataclass(frozen=True)
class TorchCheckpoint:
    """What a checkpoint holds.

    `tensors` are the model weights (name -> spec). `weights_key` says where they were found: ""
    for the top-level mapping itself, a top-level key such as "state_dict", or None when there is
    no tensor mapping (for a pickled module, `full_model_class` is set and `tensors` holds its
    parameters and buffers). `top_level_keys` pairs each top-level key with its kind; it is empty
    when the top level is the weights mapping itself. `metrics` holds finite numbers only.
    """

    format: CheckpointFormat
    scan: PickleScan
    tensors: dict[str, TensorSpec]
    weights_key: str | None
    parameter_count: int
    dtype_parameters: dict[str, int]
    has_optimizer_state: bool
    epoch: int | None
    global_step: int | None
    metrics: dict[str, float]
    top_level_keys: tuple[tuple[str, str], ...]
    full_model_class: str | None


def read_torch_checkpoint(source: ByteSource) -> TorchCheckpoint:
    """Describe a PyTorch checkpoint and scan every pickle in it, without loading anything."""
    if source.size == 0:
        raise source.error("is empty; expected a PyTorch checkpoint")
    if source.read(0, min(4, source.size), "the file signature") == b"PK\x03\x04":
        return _read_zip(source)
    return _read_pickle_stream(source)


# -- layouts --------------------------------------------------------------------------------


def _read_zip(source: ByteSource) -> TorchCheckpoint:
    archive = read_torch_zip(source)
    main = archive.member("data.pkl")
    if main is None:
        raise source.error(f"zip archive has no {archive.prefix}/data.pkl, so it is not a torch checkpoint")
    pickles = [main] + [m for m in archive.members.values() if m is not main and _is_pickle_member(m.name)]
    scans: list[PickleScan] = []
    top: Value = None
    for member in pickles:
        member_source, offset, length = open_member(source, archive, member)
        simulated = simulate_pickle(member_source, offset, length, member.name)
        scans.append(scan_simulated(simulated, member.name))
        if member is main:
            top = simulated.value
    torchscript = archive.member("constants.pkl") is not None or any(
        name.startswith(f"{archive.prefix}/code/") for name in archive.members
    )
    walker = TensorWalker(source, _storage_sizes(archive))
    return _describe("torchscript" if torchscript else "zip", combine(scans), top, walker)


def _is_pickle_member(name: str) -> bool:
    """data.pkl, constants.pkl, other *.pkl, and TorchScript's *.debug_pkl."""
    return name.endswith((".pkl", ".debug_pkl"))


def _storage_sizes(archive: TorchZip) -> dict[str, int]:
    folder = f"{archive.prefix}/data/"
    return {name[len(folder) :]: m.size for name, m in archive.members.items() if name.startswith(folder)}


def _read_pickle_stream(source: ByteSource) -> TorchCheckpoint:
    first = simulate_pickle(source, 0, source.size)
    if _is_int(first.value) and first.value == LEGACY_MAGIC:
        return _read_legacy(source, first)
    simulated = [first]
    while _pickle_follows(source, simulated[-1].end):
        if len(simulated) == MAX_PLAIN_PICKLES:
            raise source.error(f"holds more than {MAX_PLAIN_PICKLES} pickles one after another")
        end = simulated[-1].end
        simulated.append(simulate_pickle(source, end, source.size - end))
    walker = TensorWalker(source, None)
    return _describe("pickle", combine(scan_simulated(each) for each in simulated), first.value, walker)


def _pickle_follows(source: ByteSource, offset: int) -> bool:
    """Another protocol 2+ pickle starts at `offset` (a PROTO opcode)."""
    if source.remaining(offset) < 2:
        return False
    head = source.read(offset, 2, "the next pickle")
    return head[0] == 0x80 and head[1] <= 5


def _read_legacy(source: ByteSource, magic: SimulatedPickle) -> TorchCheckpoint:
    """Legacy `torch.save` (torch < 1.6 or `_use_new_zipfile_serialization=False`): magic number,
    protocol version, system info, the object, the storage keys; then raw storages, not read."""
    simulated = [magic]
    for _ in ("protocol version", "system info", "object", "storage keys"):
        end = simulated[-1].end
        simulated.append(simulate_pickle(source, end, source.size - end))
    scan = combine(scan_simulated(each) for each in simulated)
    protocol, main = simulated[1].value, simulated[3].value
    if protocol != LEGACY_PROTOCOL:
        shown = str(protocol) if _is_int(protocol) else describe(protocol)
        raise source.error(
            f"legacy torch file has protocol version {shown}, expected {LEGACY_PROTOCOL}{_scan_note(scan)}"
        )
    # The storage-key list is not checked: torch unpickles it like the others, so a payload there
    # must show up in the scan rather than as a format error.
    return _describe("legacy", scan, main, TensorWalker(source, None))


def _scan_note(scan: PickleScan) -> str:
    unsafe = sorted({finding.qualified for finding in scan.findings if finding.severity == "unsafe"})
    return f" (and its pickles name unsafe globals: {', '.join(unsafe[:5])})" if unsafe else ""


# -- contents -------------------------------------------------------------------------------


def _describe(layout: CheckpointFormat, scan: PickleScan, top: Value, walker: TensorWalker) -> TorchCheckpoint:
    mapping = as_mapping(top)
    model_class = None if mapping is not None else _full_model_class(top)
    weights_key: str | None = None
    tensors: dict[str, TensorSpec] = {}
    if model_class is not None:
        tensors = walker.module_tensors(top)
    elif mapping is not None:
        weights_key, tensors = _find_weights(mapping, walker)
    keys = _top_level_keys(mapping, weights_key, walker) if mapping is not None and weights_key != "" else ()
    dtype_parameters: dict[str, int] = {}
    for spec in tensors.values():
        dtype_parameters[spec.dtype] = dtype_parameters.get(spec.dtype, 0) + spec.numel
    plain = mapping if mapping is not None and weights_key != "" else {}
    return TorchCheckpoint(
        format=layout,
        scan=scan,
        tensors=tensors,
        weights_key=weights_key,
        parameter_count=sum(dtype_parameters.values()),
        dtype_parameters=dtype_parameters,
        has_optimizer_state=any(kind == "optimizer_state" for _, kind in keys),
        epoch=_first_int(plain, EPOCH_KEYS),
        global_step=_first_int(plain, STEP_KEYS),
        metrics=_metrics(plain),
        top_level_keys=keys,
        full_model_class=model_class,
    )


def _full_model_class(top: Value) -> str | None:
    """The class of a pickled object at the top level (a whole `nn.Module`): a BUILD or call of a
    class outside the allow-list, i.e. exactly what the scan calls suspicious."""
    value = top
    while isinstance(value, Build):
        value = value.obj
    if not isinstance(value, Call):
        return None
    cls = value.func
    if isinstance(cls, Global) and cls.name == "_reconstructor" and cls.module in ("copyreg", "copy_reg"):
        cls = value.args[0] if isinstance(value.args, tuple) and value.args else None  # protocol 0/1 objects
    if isinstance(cls, PersistentId) and isinstance(cls.value, tuple) and cls.value[:1] == ("module",):
        cls = cls.value[1] if len(cls.value) > 1 else None  # legacy files: ("module", class, file, source)
    if not isinstance(cls, Global):
        return None
    severity, _ = classify_global(cls.module, cls.name)
    return cls.qualified if severity == "suspicious" else None


def _find_weights(mapping: dict[Key, Value], walker: TensorWalker) -> tuple[str | None, dict[str, TensorSpec]]:
    """Where the weights are: a well-known key holding tensors (or a pickled module), else the
    top-level mapping itself when all its leaves are tensors (""), else the first other key (not
    optimizer or scheduler state) whose value is a tensor mapping."""
    for key in WEIGHTS_KEYS:
        if key in mapping:
            tensors = walker.tensor_mapping(mapping[key]) or walker.module_tensors(mapping[key])
            if tensors:
                return key, tensors
    top_level = walker.tensor_mapping(mapping)
    if top_level:
        return "", top_level
    for other, value in mapping.items():
        walker.visit()
        if isinstance(other, str) and other not in WEIGHTS_KEYS and _state_kind(other, value) is None:
            found = walker.tensor_mapping(value)
            if found:
                return other, found
    return None, {}


def _top_level_keys(
    mapping: dict[Key, Value], weights_key: str | None, walker: TensorWalker
) -> tuple[tuple[str, str], ...]:
    keys: list[tuple[str, str]] = []
    for key, value in mapping.items():
        text = key_text(key)
        if text is None:
            continue
        if len(keys) == MAX_LISTED_KEYS:
            break
        keys.append((text, "weights" if text == weights_key else _kind(text, value, walker)))
    return tuple(keys)


def _kind(key: str, value: Value, walker: TensorWalker) -> KeyKind:
    state = _state_kind(key, value)
    if state is not None:
        return state
    found = number(value)
    if found is not None:
        return "int" if isinstance(found, int) else "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if as_mapping(value) is not None:
        return "weights" if walker.tensor_mapping(value) else "dict"
    if isinstance(value, Call | Build) and not is_tensor_call(value):
        return "object"
    return "other"


def _state_kind(key: str, value: Value) -> KeyKind | None:
    """Optimizer or scheduler state, by key name or by shape."""
    if value is None:
        return None
    lowered = key.lower()
    if lowered in OPTIMIZER_KEYS or _is_optimizer_state(value):
        return "optimizer_state"
    if isinstance(value, list | tuple) and any(_is_optimizer_state(item) for item in value[:8]):
        return "optimizer_state"  # Lightning: "optimizer_states": [state_dict, ...]
    if "scheduler" in lowered or _is_scheduler_state(value):
        return "scheduler_state"
    return None


def _is_optimizer_state(value: Value) -> bool:
    mapping = as_mapping(value)
    return mapping is not None and "state" in mapping and "param_groups" in mapping


def _is_scheduler_state(value: Value) -> bool:
    mapping = as_mapping(value)
    return mapping is not None and "last_epoch" in mapping and "base_lrs" in mapping


def _first_int(mapping: dict[Key, Value], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        found = number(mapping.get(key))
        if isinstance(found, int):
            return found
    return None


def _metrics(mapping: dict[Key, Value]) -> dict[str, float]:
    """Numbers at the top level (besides epoch and step) and under `metrics` / `best_metrics`."""
    metrics: dict[str, float] = {}
    for key, value in mapping.items():
        if isinstance(key, str) and key not in EPOCH_KEYS + STEP_KEYS:
            _add_metric(metrics, key, value)
    for group in METRICS_KEYS:
        for key, value in (as_mapping(mapping.get(group)) or {}).items():
            if isinstance(key, str):
                _add_metric(metrics, f"{group}.{key}", value)
    return metrics


def _add_metric(metrics: dict[str, float], name: str, value: Value) -> None:
    found = number(value)
    if found is None or len(metrics) >= MAX_LISTED_KEYS:
        return
    try:
        converted = float(found)
    except OverflowError:  # an integer beyond float range
        return
    if math.isfinite(converted):  # NaN/inf cannot go into a canonical-JSON manifest
        metrics[name] = converted


def _is_int(value: Value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
