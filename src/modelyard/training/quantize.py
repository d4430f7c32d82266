"""Post-training int8 quantization of a finished run (seed 000 section 4's post-training step).

`post_training_int8(run_dir, out_dir)` takes the run's final model and applies PyTorch's dynamic
quantization (``torch.ao.quantization.quantize_dynamic``: nn.Linear weights stored as qint8,
activations quantized on the fly). It understands two kinds of run:

* a built-in trainer's run: ``checkpoints/model.pt`` holds ``architecture`` (the trainer and its
  constructor arguments) and ``state_dict``; the module is rebuilt, quantized and saved the same
  way (``architecture.quantized: "dynamic-int8"``);
* a TorchScript run: ``checkpoints/model.ts``, or ``checkpoints/model.pt`` written by
  ``torch.jit.save``; quantized with ``quantize_dynamic_jit`` and saved with ``torch.jit.save``.

`out_dir` is laid out like a run: ``checkpoints/model_int8.pt``, ``metrics/quantization.json``
(file sizes before and after, the largest absolute difference between the float and the int8
model's outputs on fixed inputs), the run's ``config.yaml`` and a ``README.md``. Anything else is
refused with InvalidInputError naming the file and saying what is supported. torch is imported
only when quantizing.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidInputError
from modelyard.training.run_api import write_json

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["INT8_FILE", "QUANTIZATION_METRICS", "QuantizeResult", "post_training_int8"]

INT8_FILE = "model_int8.pt"
QUANTIZATION_METRICS = "quantization.json"
TRAINING_METRICS = "training_metrics.json"
SAMPLE_COUNT = 32
SAMPLE_SEED = 0
SUPPORTED = (
    "a built-in trainer's checkpoints/model.pt (with 'architecture' and 'state_dict'), or a TorchScript module "
    "saved with torch.jit.save as checkpoints/model.ts or checkpoints/model.pt"
)
INSTALL_TORCH = "install the torch extra (pip install 'modelyard[torch]')"


@dataclass(frozen=True)
class QuantizeResult:
    """What `post_training_int8` did: the files, their sizes and how far the outputs moved."""

    source: str  # the float model, relative to the run directory
    output: str  # the int8 model, relative to out_dir
    kind: str  # "builtin" or "torchscript"
    float_bytes: int
    int8_bytes: int
    max_abs_diff: float  # largest |float output - int8 output| on the fixed inputs
    float_output_max_abs: float  # the float outputs' largest magnitude, for scale
    input_shape: tuple[int, ...]
    quantized_modules: int  # nn.Linear layers now int8 (0 when TorchScript does not say)
    # A built-in trainer's validation set, scored by both models (None for TorchScript).
    float_val_accuracy: float | None = None
    int8_val_accuracy: float | None = None
    int8_val_loss: float | None = None

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.float_bytes if self.float_bytes else 0.0


def post_training_int8(run_dir: Path, out_dir: Path) -> QuantizeResult:
    """Quantize the run's final model to int8 (dynamic, nn.Linear) and write `out_dir` like a run."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    source = _find_model(run_dir)
    try:
        import torch
    except ImportError:
        raise InvalidInputError(f"post-training quantization needs torch: {INSTALL_TORCH}", path=source) from None
    existed = out_dir.exists()
    if existed and any(out_dir.iterdir()):
        raise InvalidInputError("the output directory is not empty; give a new or empty directory", path=out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    target = out_dir / "checkpoints" / INT8_FILE
    try:
        if _is_torchscript(source):
            result = _quantize_torchscript(run_dir, source, target)
        else:
            result = _quantize_builtin(run_dir, source, target)
        _write_outputs(run_dir, out_dir, result, torch.__version__)
    except BaseException:
        _empty(out_dir, remove=not existed)  # it was empty (or absent): a failure leaves nothing
        raise
    return result


def _empty(directory: Path, remove: bool) -> None:
    if remove:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _find_model(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise InvalidInputError("the run directory does not exist", path=run_dir)
    for name in ("model.pt", "model.ts"):
        candidate = run_dir / "checkpoints" / name
        if candidate.is_file():
            return candidate
    raise InvalidInputError(
        f"no checkpoints/model.pt or checkpoints/model.ts to quantize; post-training int8 supports {SUPPORTED}",
        path=run_dir,
    )


def _is_torchscript(path: Path) -> bool:
    """torch.jit.save writes a zip with code/ and constants.pkl; torch.save's zip has neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


# -- built-in trainers -----------------------------------------------------------------------------


def _quantize_builtin(run_dir: Path, source: Path, target: Path) -> QuantizeResult:
    import torch

    from modelyard.training.builtin import ARCHITECTURE_KEY, STATE_KEY, load_model, read_model_file, trainer
    from modelyard.training.builtin.layers import int8_tensors, quantize_dynamic_int8
    from modelyard.training.builtin.train import evaluate

    saved = read_model_file(_readable(source))
    architecture = dict(saved[ARCHITECTURE_KEY])
    if architecture.get("quantized"):
        raise InvalidInputError(
            f"already quantized ({architecture['quantized']}); post-training int8 takes a float model: {SUPPORTED}",
            path=source,
        )
    chosen = trainer(str(architecture["trainer"]))
    model = load_model(source)
    quantized = quantize_dynamic_int8(model)
    _, (val_inputs, val_targets) = chosen.make_data(dict(architecture["args"]))
    inputs = val_inputs[:SAMPLE_COUNT]
    difference, scale = _difference(model, quantized, inputs)
    with torch.no_grad():
        _, float_accuracy = evaluate(model, val_inputs, val_targets)
        int8_loss, int8_accuracy = evaluate(quantized, val_inputs, val_targets)
    state = int8_tensors(quantized)
    architecture["quantized"] = "dynamic-int8"
    torch.save({ARCHITECTURE_KEY: architecture, STATE_KEY: state}, target)
    return QuantizeResult(
        source=source.relative_to(run_dir).as_posix(),
        output=f"checkpoints/{INT8_FILE}",
        kind="builtin",
        float_bytes=source.stat().st_size,
        int8_bytes=target.stat().st_size,
        max_abs_diff=difference,
        float_output_max_abs=scale,
        input_shape=tuple(inputs.shape),
        quantized_modules=_count_quantized(quantized),
        float_val_accuracy=float_accuracy,
        int8_val_accuracy=int8_accuracy,
        int8_val_loss=int8_loss,
    )


def _count_quantized(model: nn.Module) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(module, DynamicLinear) for module in model.modules())


# -- TorchScript -----------------------------------------------------------------------------------


def _quantize_torchscript(run_dir: Path, source: Path, target: Path) -> QuantizeResult:
    import importlib

    import torch

    from modelyard.training.builtin.layers import quiet_quantization

    jit: Any = torch.jit  # torch.jit.load and the quantization functions carry no annotations
    ao: Any = importlib.import_module("torch.ao.quantization")
    try:
        model = jit.load(str(source), map_location="cpu").eval()
    except Exception as exc:  # torch.jit.load raises RuntimeError and others for archives it cannot read
        cause = _first_line(exc)
        raise InvalidInputError(f"torch.jit.load failed: {cause}; supported: {SUPPORTED}", path=source) from None
    inputs = _torchscript_inputs(run_dir, model, source)
    with quiet_quantization():
        try:
            quantized = ao.quantize_dynamic_jit(model, {"": ao.default_dynamic_qconfig})
        except Exception as exc:  # the JIT pass raises RuntimeError for graphs it cannot rewrite
            cause = _first_line(exc)
            raise InvalidInputError(f"TorchScript dynamic quantization failed: {cause}", path=source) from None
        difference, scale = _difference(model, quantized, inputs)
        torch.jit.save(quantized, str(target))
    return QuantizeResult(
        source=source.relative_to(run_dir).as_posix(),
        output=f"checkpoints/{INT8_FILE}",
        kind="torchscript",
        float_bytes=source.stat().st_size,
        int8_bytes=target.stat().st_size,
        max_abs_diff=difference,
        float_output_max_abs=scale,
        input_shape=tuple(inputs.shape),
        quantized_modules=0,
    )


def _torchscript_inputs(run_dir: Path, model: torch.jit.ScriptModule, source: Path) -> torch.Tensor:
    """Fixed float inputs: the job's input_size when the run has job.json, else the width of the
    first weight matrix (a model starting with a linear layer)."""
    import torch

    shape: list[int] | None = None
    job_file = run_dir / "job.json"
    if job_file.is_file():
        try:
            size = json.loads(job_file.read_text(encoding="utf-8")).get("input_size")
        except (ValueError, AttributeError):
            size = None
        if isinstance(size, int) and not isinstance(size, bool):
            shape = [size]
        elif isinstance(size, list) and all(isinstance(item, int) for item in size):
            shape = list(size)
    if shape is None:
        matrix = next((p for p in model.parameters() if p.dim() == 2), None)
        if matrix is None:
            raise InvalidInputError(
                "the TorchScript model has no weight matrix to take its input width from; give input_size in the job",
                path=source,
            )
        shape = [int(matrix.shape[1])]
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    return torch.randn(SAMPLE_COUNT, *shape, generator=generator)


# -- shared ----------------------------------------------------------------------------------------


def _readable(path: Path) -> Path:
    if not zipfile.is_zipfile(path):
        raise InvalidInputError(f"not a torch.save or torch.jit.save archive; supported: {SUPPORTED}", path=path)
    return path


def _difference(model: Any, quantized: Any, inputs: torch.Tensor) -> tuple[float, float]:
    """The largest |float - int8| output difference and the float outputs' largest magnitude."""
    import torch

    with torch.no_grad():
        try:
            expected, actual = model(inputs), quantized(inputs)
        except Exception as exc:  # a model that cannot take these inputs: say so, with their shape
            raise InvalidInputError(
                f"the model does not run on inputs of shape {tuple(inputs.shape)}: {_first_line(exc)}; give "
                "input_size in the job"
            ) from None
    if not isinstance(expected, torch.Tensor) or not isinstance(actual, torch.Tensor):
        raise InvalidInputError("the model's output is not one tensor; post-training int8 compares single outputs")
    return float((expected - actual).abs().max()), float(expected.abs().max())


def _write_outputs(run_dir: Path, out_dir: Path, result: QuantizeResult, torch_version: str) -> None:
    report = {
        "method": "dynamic",
        "dtype": "qint8",
        "modules": ["torch.nn.Linear"],
        **asdict(result),
        "input_shape": list(result.input_shape),
        "size_ratio": round(result.size_ratio, 6),
        "torch_version": torch_version,
    }
    write_json(out_dir / "metrics" / QUANTIZATION_METRICS, report)
    write_json(out_dir / "metrics" / TRAINING_METRICS, _int8_training_metrics(run_dir, result))
    config = run_dir / "config.yaml"
    if config.is_file():
        shutil.copyfile(config, out_dir / "config.yaml")
    readme = (
        f"# Post-training int8 quantization of {run_dir.name}\n\n"
        f"`{result.output}` is `{result.source}` of the float run with every nn.Linear quantized to int8 "
        "(PyTorch dynamic quantization: int8 weights, activations quantized at run time).\n\n"
        f"- size: {result.float_bytes} bytes -> {result.int8_bytes} bytes ({result.size_ratio:.2f} of the float file)\n"
        f"- largest output difference on {result.input_shape[0]} fixed inputs: {result.max_abs_diff:.6g} "
        f"(float outputs up to {result.float_output_max_abs:.6g})\n\n"
        "Details: `metrics/quantization.json`.\n"
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")


def _int8_training_metrics(run_dir: Path, result: QuantizeResult) -> dict[str, Any]:
    """The float run's training metrics (the training this model comes from) and the int8 model's
    own figures, so validation gates can judge the quantized model: quantized_val_accuracy,
    quantized_val_loss, max_abs_diff, size_ratio."""
    source = run_dir / "metrics" / TRAINING_METRICS
    metrics: dict[str, Any] = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}
    figures = {
        "quantized_val_accuracy": result.int8_val_accuracy,
        "quantized_val_loss": result.int8_val_loss,
        "float_val_accuracy": result.float_val_accuracy,
        "max_abs_diff": result.max_abs_diff,
        "size_ratio": round(result.size_ratio, 6),
    }
    return metrics | {key: value for key, value in figures.items() if value is not None}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
