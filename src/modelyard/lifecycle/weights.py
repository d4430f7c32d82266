"""Clean weights for a validated version: the model's state dict out of a training checkpoint.

`clean_weights` reads one checkpoint of a raw run (`.pt .pth .ckpt .bin`, or `.safetensors`) and
writes `model.pt` holding the tensor mapping only (optimizer, scheduler, epoch and metrics are
dropped) and, when every tensor is a plain dense tensor, `model.safetensors` with the same tensors.

Where the weights are is decided exactly as inspection decides it
(`modelyard.inspect.pytorch.read_torch_checkpoint`'s `weights_key`). A pickle is only ever loaded
with `torch.load(weights_only=True)`, and only after its own scan (repeated here on the very bytes
that are loaded) says "safe", or "suspicious" with every suspicious global allowed by the caller;
"unsafe" is refused outright. Without torch, a checkpoint that already holds weights only is
copied unchanged; anything that needs stripping asks for the `torch` extra.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidInputError, InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.pickle_globals import classify_global
from modelyard.inspect.weights import normalise_dtype
from modelyard.modelconfig.base import PickleScanSummary

if TYPE_CHECKING:
    import torch

    from modelyard.inspect.pickle_scan import PickleScan
    from modelyard.inspect.pytorch import TorchCheckpoint

__all__ = ["MODEL_PT", "MODEL_SAFETENSORS", "TORCH_CHECKPOINT_SUFFIXES", "CleanWeights", "clean_weights"]

MODEL_PT = "model.pt"
MODEL_SAFETENSORS = "model.safetensors"
TORCH_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
INSTALL_TORCH = "install the `torch` extra (pip install 'modelyard[torch]')"
_Admitted = Callable[..., Any] | tuple[Callable[..., Any], str]  # what torch's safe_globals takes


@dataclass(frozen=True)
class CleanWeights:
    """What `clean_weights` wrote into its output directory.

    `files` are names relative to that directory. `dtypes` counts elements per dtype in the
    inspection vocabulary ("f32", "bf16", ...). `stripped_keys` are the checkpoint's top-level keys
    that were dropped (empty when the checkpoint held the weights only). `safetensors_reason` says
    why `model.safetensors` was not written (None when it was).
    """

    files: tuple[str, ...]
    tensor_count: int
    parameter_count: int
    dtypes: dict[str, int]
    stripped_keys: tuple[str, ...]
    source: str
    safetensors_written: bool
    safetensors_reason: str | None = None


def clean_weights(
    checkpoint: Path, out_dir: Path, *, scan: PickleScanSummary | None, allowed_globals: Collection[str] = ()
) -> CleanWeights:
    """Write `out_dir/model.pt` (and `model.safetensors` when possible) from one checkpoint.

    `scan` is the artifact's pickle scan (its findings for this file are honoured too);
    `allowed_globals` are the audited "module.name" exceptions a policy allows.
    """
    suffix = checkpoint.suffix.lower()
    if suffix == ".safetensors":
        return _from_safetensors(checkpoint, out_dir)
    if suffix in TORCH_CHECKPOINT_SUFFIXES:
        return _from_torch_checkpoint(checkpoint, out_dir, scan, frozenset(allowed_globals))
    expected = ", ".join((*TORCH_CHECKPOINT_SUFFIXES, ".safetensors"))
    raise InvalidInputError(
        f"not a checkpoint file (expected {expected}, got '{suffix or 'no suffix'}')", path=checkpoint
    )


def torch_available() -> bool:
    """True when torch can be imported (find_spec does not import it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


# -- safetensors checkpoints ----------------------------------------------------------------------


def _from_safetensors(checkpoint: Path, out_dir: Path) -> CleanWeights:
    from modelyard.inspect.safetensors import read_safetensors

    with ByteSource.open(checkpoint) as source:
        header = read_safetensors(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _atomic(out_dir / MODEL_SAFETENSORS) as target:
        shutil.copyfile(checkpoint, target)
    files = [MODEL_SAFETENSORS]
    if torch_available():
        _safetensors_to_pt(checkpoint, out_dir / MODEL_PT)
        files.insert(0, MODEL_PT)
    return CleanWeights(
        files=tuple(files),
        tensor_count=header.tensor_count,
        parameter_count=header.parameter_count,
        dtypes=_normalised(header.dtype_parameters),
        stripped_keys=(),
        source=checkpoint.name,
        safetensors_written=True,
    )


def _safetensors_to_pt(checkpoint: Path, target_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(checkpoint), device="cpu")
    with _atomic(target_path) as target:
        torch.save(tensors, target)


# -- PyTorch checkpoints --------------------------------------------------------------------------


def _from_torch_checkpoint(
    checkpoint: Path, out_dir: Path, summary: PickleScanSummary | None, allowed: frozenset[str]
) -> CleanWeights:
    described = _describe(checkpoint)
    _check_scan(checkpoint, described.scan, summary, allowed)
    key = described.weights_key
    if key is None:
        raise InvalidInputError(
            "holds no mapping of names to tensors (a pickled model object?): save model.state_dict() instead",
            path=checkpoint,
        )
    stripped = tuple(name for name, _ in described.top_level_keys if name != key)
    out_dir.mkdir(parents=True, exist_ok=True)
    if torch_available():
        reason = _load_and_write(checkpoint, described, allowed, out_dir)
    elif key == "":
        with _atomic(out_dir / MODEL_PT) as target:
            shutil.copyfile(checkpoint, target)  # already the weights only: unchanged bytes
        reason = f"torch is not installed: {INSTALL_TORCH} to also write {MODEL_SAFETENSORS}"
    else:
        raise InvalidInputError(
            f"holds more than the weights ({', '.join(stripped[:5])}); stripping them needs torch: {INSTALL_TORCH}",
            path=checkpoint,
        )
    files = (MODEL_PT,) if reason else (MODEL_PT, MODEL_SAFETENSORS)
    return CleanWeights(
        files=files,
        tensor_count=len(described.tensors),
        parameter_count=described.parameter_count,
        dtypes=_normalised(described.dtype_parameters),
        stripped_keys=stripped,
        source=checkpoint.name,
        safetensors_written=reason is None,
        safetensors_reason=reason,
    )


def _describe(checkpoint: Path) -> TorchCheckpoint:
    from modelyard.inspect.pytorch import read_torch_checkpoint

    with ByteSource.open(checkpoint) as source:
        described = read_torch_checkpoint(source)
    if described.format == "torchscript":
        raise InvalidInputError(
            "is a TorchScript archive, not a training checkpoint: promote it as it is", path=checkpoint
        )
    return described


def _check_scan(checkpoint: Path, own: PickleScan, summary: PickleScanSummary | None, allowed: frozenset[str]) -> None:
    """Refuse unless every global is safe or allowed. The file's own scan decides; the artifact's
    summary can only add findings (an unsafe verdict recorded at registration stays unsafe)."""
    findings = {(f"{f.module}.{f.name}", f.severity) for f in own.findings}
    if summary is not None:
        findings.update(
            (f"{f.module}.{f.name}", f.severity) for f in summary.findings if _names_file(f.file, checkpoint)
        )
    unsafe = sorted(name for name, severity in findings if severity == "unsafe")
    if unsafe:
        raise InvalidInputError(
            f"its pickle imports {', '.join(unsafe[:3])}, which can run code: refusing to load it", path=checkpoint
        )
    refused = sorted(name for name, severity in findings if severity == "suspicious" and name not in allowed)
    if refused:
        raise InvalidInputError(
            f"its pickle imports {', '.join(refused[:3])}, not on the allow-list of plain tensor checkpoints; "
            "audit it and allow it in the policy, or re-save the checkpoint with plain tensors",
            path=checkpoint,
        )


def _names_file(finding_file: str, checkpoint: Path) -> bool:
    """A summary finding's path (relative to the artifact) refers to this checkpoint."""
    return finding_file == checkpoint.name or checkpoint.as_posix().endswith("/" + finding_file.lstrip("/"))


def _load_and_write(checkpoint: Path, described: TorchCheckpoint, allowed: frozenset[str], out_dir: Path) -> str | None:
    """Load the checkpoint once, keep the weights, write both files; the reason when no safetensors."""
    import torch

    state = _load_state_dict(checkpoint, described, allowed)
    with _atomic(out_dir / MODEL_PT) as target:
        torch.save(state, target)
    reason = _write_safetensors(_flatten(state, checkpoint), out_dir / MODEL_SAFETENSORS)
    del state  # the only copy of the weights: freed before the caller goes on
    return reason


def _load_state_dict(checkpoint: Path, described: TorchCheckpoint, allowed: frozenset[str]) -> Mapping[str, Any]:
    import torch

    extra = _globals_to_admit(checkpoint, described.scan, allowed)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(extra):
            warnings.simplefilter("ignore")
            # mmap: an optimizer's state (twice the weights for Adam) is never read into memory.
            loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=described.format == "zip")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ValueError, ... for bad files
        raise InvalidModelFileError(
            f"torch.load(weights_only=True) failed: {_torch_load_cause(exc)}", path=checkpoint
        ) from None
    key = described.weights_key
    state = loaded if key == "" else (loaded.get(key) if isinstance(loaded, Mapping) else None)
    if not isinstance(state, Mapping):
        raise InvalidModelFileError(f"key '{key}' does not hold a mapping of tensors once loaded", path=checkpoint)
    return state


def _torch_load_cause(exc: Exception) -> str:
    """The line of torch's long, advisory message that says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global:" in line:
            return line[line.index("Unsupported global:") :].split(". Please")[0]
        if line.startswith("Can only build"):
            return line
    return lines[0] if lines else type(exc).__name__


def _globals_to_admit(checkpoint: Path, scan: PickleScan, allowed: frozenset[str]) -> list[_Admitted]:
    """The globals torch's weights_only unpickler must be told about: the allowed suspicious ones,
    and numpy's array and scalar builders (safe by modelyard's list, not by torch's default)."""
    admitted: list[_Admitted] = []
    for module, name in scan.globals:
        qualified = f"{module}.{name}"
        severity, _ = classify_global(module, name)
        if (severity == "suspicious" and qualified in allowed) or (
            severity == "safe" and module.split(".")[0] == "numpy"
        ):
            admitted.append((_resolve(checkpoint, module, name), qualified))
    if any(module.split(".")[0] == "numpy" for module, _ in scan.globals):
        admitted.extend(_numpy_dtype_classes())
    return admitted


def _numpy_dtype_classes() -> list[_Admitted]:
    """numpy scalars rebuild their dtype by BUILD on a `numpy.dtypes.<Kind>DType` instance, a class
    the pickle never names: torch needs each of them allowed too (they only describe dtypes)."""
    import numpy.dtypes

    return [
        getattr(numpy.dtypes, name)
        for name in dir(numpy.dtypes)
        if name.endswith("DType") and isinstance(getattr(numpy.dtypes, name), type)
    ]


def _resolve(checkpoint: Path, module: str, name: str) -> Callable[..., Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy.core.* is a deprecated alias of numpy._core
            value: Any = importlib.import_module(module)
        for part in name.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(
            f"its pickle needs {module}.{name}, which cannot be imported here ({exc})", path=checkpoint
        ) from None
    return value  # type: ignore[no-any-return]


def _flatten(state: Mapping[str, Any], checkpoint: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Name -> tensor, nested mappings joined with '.' (as inspection names them)."""
    import torch

    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, checkpoint, f"{name}."))
        else:
            raise InvalidModelFileError(f"weight '{name}' is a {type(value).__name__}, not a tensor", path=checkpoint)
    return flat


def _write_safetensors(tensors: dict[str, torch.Tensor], target_path: Path) -> str | None:
    """Write the tensors as safetensors; the reason instead when they cannot be."""
    from safetensors.torch import save_file

    problem = _not_plain_dense(tensors)
    if problem is not None:
        return problem
    try:
        with _atomic(target_path) as target:
            # transformers reads metadata "format": "pt" to know the tensors came from torch.
            save_file(_unshared(tensors), str(target), metadata={"format": "pt"})
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        return f"safetensors cannot hold these tensors: {str(exc).strip().splitlines()[0]}"
    return None


def _not_plain_dense(tensors: Mapping[str, torch.Tensor]) -> str | None:
    import torch

    for name, tensor in tensors.items():
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
            return f"tensor '{name}' is a {type(tensor).__name__}, not a plain tensor"
        if tensor.layout != torch.strided:
            return f"tensor '{name}' is {tensor.layout} (sparse), not dense"
        if tensor.is_quantized:
            return f"tensor '{name}' is quantized ({tensor.dtype})"
        if tensor.device.type == "meta":
            return f"tensor '{name}' is on the meta device (it holds no data)"
    return None


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors will accept: contiguous, detached, and none sharing memory with another
    (tied weights are kept under every name, so each one after the first gets its own copy)."""
    seen_storages: set[int] = set()
    result: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        plain = tensor.detach()
        storage = plain.untyped_storage().data_ptr() if plain.numel() else 0
        if storage and storage in seen_storages:
            plain = plain.clone()
        elif storage:
            seen_storages.add(storage)
        result[name] = plain.contiguous()
    return result


def _normalised(counts: Mapping[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for label, count in counts.items():
        key = normalise_dtype(label)
        merged[key] = merged.get(key, 0) + count
    return merged


@contextmanager
def _atomic(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`, renamed over it only when the body succeeds."""
    temporary = target.with_name(f".{target.name}.partial")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
