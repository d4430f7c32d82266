"""The built-in trainers: `tiny-classifier` and `tiny-lm`, small models that train in seconds on CPU
on data they generate, so every training path (DDP, QAT, DP, PTQ) runs for real without downloads.

Run one as ``python -m modelyard.training.builtin NAME`` inside a training run (the job runner
sets ``MODELYARD_RUN_DIR`` and ``MODELYARD_JOB_FILE``), or under torchrun for DDP. `check_supported`
refuses, before anything starts, a job a built-in trainer cannot run; `load_model` rebuilds the
module a run saved in ``checkpoints/model.pt``. Importing this package does not import torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from modelyard.errors import InvalidInputError, InvalidModelFileError
from modelyard.training.builtin import tiny_classifier, tiny_lm

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["MODEL_FILE", "TRAINERS", "Trainer", "check_supported", "load_model", "trainer"]

MODEL_FILE = "model.pt"
ARCHITECTURE_KEY = "architecture"
STATE_KEY = "state_dict"
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
PRECISIONS = ("fp32", "int8")
MAX_PARAMETERS = 50_000_000
MAX_LM_SEQ_LENGTH = 4096
INSTALL_TORCH = "install the torch extra (pip install 'modelyard[torch]')"


class Trainer(Protocol):
    """What a built-in trainer module provides (see tiny_classifier.py)."""

    NAME: str

    def architecture(self, job: dict[str, Any]) -> dict[str, int]: ...

    def parameter_count(self, args: dict[str, int]) -> int: ...

    def build(self, args: dict[str, int]) -> nn.Module: ...

    def make_data(
        self, args: dict[str, int]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]: ...


TRAINERS: dict[str, Trainer] = {tiny_classifier.NAME: tiny_classifier, tiny_lm.NAME: tiny_lm}


def trainer(name: str) -> Trainer:
    """The built-in trainer `name`; InvalidInputError listing the names otherwise."""
    found = TRAINERS.get(name)
    if found is None:
        raise InvalidInputError(
            f"no built-in trainer {name!r}; the built-in trainers are {', '.join(TRAINERS)}", field="run.trainer"
        )
    return found


def check_supported(job: dict[str, Any], world_size: int = 1, source: str | Path = "job.json") -> None:
    """Refuse, before training starts, a job (job.json's dict) that its built-in trainer cannot run
    with `world_size` processes: an unknown trainer, an optimizer, precision or quantization it
    does not implement, DP without Opacus or combined with QAT or DDP, secure aggregation, a model
    too big to be a tiny example. Command jobs are only checked as job definitions. Errors name
    `source` (the job file) and the field."""
    from modelyard.training.jobs import JobDefinition, load_definition

    fields = {key: value for key, value in job.items() if key in JobDefinition.model_fields}
    try:
        definition = load_definition(fields, source)
    except ValidationError as exc:  # pragma: no cover - load_definition turns these into InvalidInputError
        raise InvalidInputError(str(exc)) from None
    if definition.run.kind != "builtin":
        return
    name = definition.run.trainer
    try:
        chosen = trainer(name)
        if importlib.util.find_spec("torch") is None:
            raise InvalidInputError(f"the built-in trainer {name} needs torch: {INSTALL_TORCH}", field="run.trainer")
        _check_settings(name, definition.optimizer, definition.precision, definition.quantization_mode, job)
        _check_privacy(name, definition.privacy_level, definition.quantization_mode, world_size)
        _check_size(name, chosen, job)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.message, path=source, field=exc.field) from None


def _check_settings(
    name: str, optimizer: str | None, precision: str | None, mode: str | None, job: dict[str, Any]
) -> None:
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise InvalidInputError(
            f"the built-in trainer {name} implements the optimizers {', '.join(OPTIMIZERS)}, not {optimizer}",
            field="optimizer",
        )
    if precision is not None and precision not in PRECISIONS:
        raise InvalidInputError(
            f"the built-in trainer {name} trains and saves fp32 (int8 by quantization), not {precision}; "
            "leave precision empty or set fp32",
            field="precision",
        )
    quantize = job.get("quantize")
    if mode == "quantization-aware" and quantize not in (True, "int8", None, False):
        raise InvalidInputError(
            f"quantization-aware training in {name} produces int8, not {quantize}; set quantize to int8",
            field="quantize",
        )


def _check_privacy(name: str, privacy_level: str, mode: str | None, world_size: int) -> None:
    if privacy_level == "secure-agg":
        raise InvalidInputError(
            f"the built-in trainer {name} does no secure aggregation, and modelyard performs none itself; "
            "use a command job whose trainer implements it, or privacy_level none or dp",
            field="privacy_level",
        )
    if privacy_level != "dp":
        return
    from modelyard.training.privacy import require_opacus

    require_opacus()
    if mode == "quantization-aware":
        raise InvalidInputError(
            f"the built-in trainer {name} cannot combine DP-SGD with quantization-aware training; "
            "use quantization_mode post-training (quantize after private training) or drop one",
            field="quantization_mode",
        )
    if world_size > 1:
        raise InvalidInputError(
            f"the built-in trainer {name} runs DP-SGD in one process only, not with {world_size} (DDP); "
            "run it with the local executor or drop privacy_level dp",
            field="privacy_level",
        )


def _check_size(name: str, chosen: Trainer, job: dict[str, Any]) -> None:
    args = chosen.architecture(job)
    if chosen is tiny_lm:
        if args["hidden_size"] % args["num_heads"]:
            raise InvalidInputError(
                f"hidden_size {args['hidden_size']} is not divisible by num_heads {args['num_heads']}",
                field="num_heads",
            )
        if args["max_seq_length"] > MAX_LM_SEQ_LENGTH:
            raise InvalidInputError(
                f"the built-in trainer {name} takes max_seq_length up to {MAX_LM_SEQ_LENGTH}, "
                f"not {args['max_seq_length']}",
                field="max_seq_length",
            )
    count = chosen.parameter_count(args)
    if count > MAX_PARAMETERS:
        raise InvalidInputError(
            f"the built-in trainer {name} is a small example: {args} makes {count:,} parameters, more than "
            f"{MAX_PARAMETERS:,}; choose a smaller hidden_size, num_layers or input size",
            field="hidden_size",
        )


def load_model(path: Path) -> nn.Module:
    """The module a built-in trainer saved as checkpoints/model.pt (float, or int8 after QAT), or the
    post-training int8 model_int8.pt of `modelyard.training.quantize`, in eval mode."""
    import torch

    from modelyard.training.builtin.layers import (
        convert_int8,
        load_int8_tensors,
        prepare_qat,
        quiet_quantization,
    )

    saved = read_model_file(path)
    architecture = saved[ARCHITECTURE_KEY]
    chosen = trainer(str(architecture.get("trainer")))
    model = chosen.build(dict(architecture["args"]))
    if architecture.get("quantized") == "qat-int8":
        engine = architecture.get("qat_engine") or torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        model = convert_int8(prepare_qat(model))
    elif architecture.get("quantized") == "dynamic-int8":  # written by modelyard.training.quantize
        try:
            model = load_int8_tensors(model, saved[STATE_KEY])
        except ValueError as exc:
            message = f"its int8 weights do not fit the {chosen.NAME} it describes: {exc}"
            raise InvalidModelFileError(message, path=path) from None
        return model.eval()
    with quiet_quantization():
        try:
            model.load_state_dict(saved[STATE_KEY])
        except RuntimeError as exc:
            raise InvalidModelFileError(
                f"its weights do not fit the {chosen.NAME} it describes: {str(exc).splitlines()[0]}", path=path
            ) from None
    return model.eval()


def read_model_file(path: Path) -> dict[str, Any]:
    """checkpoints/model.pt of a built-in trainer's run: {"architecture": {...}, "state_dict": {...}}."""
    import torch

    from modelyard.training.builtin.layers import quiet_quantization

    try:
        with quiet_quantization():
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidInputError("does not exist", path=path) from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for files it cannot read
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModelFileError(f"torch.load(weights_only=True) failed: {cause}", path=path) from None
    architecture = saved.get(ARCHITECTURE_KEY) if isinstance(saved, dict) else None
    if not isinstance(architecture, dict) or not isinstance(saved.get(STATE_KEY), dict):
        raise InvalidInputError(
            f"not a built-in trainer's model file: it has no '{ARCHITECTURE_KEY}' and '{STATE_KEY}' keys", path=path
        )
    if architecture.get("trainer") not in TRAINERS or not isinstance(architecture.get("args"), dict):
        raise InvalidInputError(
            f"architecture names no built-in trainer ({', '.join(TRAINERS)}): {architecture.get('trainer')!r}",
            path=path,
        )
    return dict(saved)
