"""The training loop both built-in trainers share (this module imports torch).

One loop: seeded data from the trainer, an optimizer from the job, cross-entropy on the last
dimension (class scores or next-token scores), an evaluation on held-out data after each epoch,
metrics and checkpoints through the `Run`. DDP when WORLD_SIZE > 1 (gloo; each rank trains on
its shard, rank 0 writes), QAT (fake quantization while training, an int8 model at the end) and
DP-SGD (Opacus) as the job asks.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modelyard.training.builtin import ARCHITECTURE_KEY, MODEL_FILE, STATE_KEY, Trainer
from modelyard.training.builtin.layers import convert_int8, prepare_qat, quiet_quantization

if TYPE_CHECKING:
    from modelyard.training.privacy import PrivateTraining
    from modelyard.training.run_api import Run

SEED = 0
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_OPTIMIZER = "adamw"


@dataclass(frozen=True)
class Settings:
    """The job's training settings, defaults filled in."""

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    weight_decay: float
    qat: bool
    dp: bool

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> Settings:
        return cls(
            epochs=int(job.get("epochs") or DEFAULT_EPOCHS),
            batch_size=int(job.get("batch_size") or DEFAULT_BATCH_SIZE),
            learning_rate=float(job.get("learning_rate") or DEFAULT_LEARNING_RATE),
            optimizer=str(job.get("optimizer") or DEFAULT_OPTIMIZER),
            weight_decay=float(job.get("weight_decay") or 0.0),
            qat=job.get("quantization_mode") == "quantization-aware",
            dp=job.get("privacy_level") == "dp",
        )


def make_optimizer(name: str, model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=learning_rate, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=learning_rate, momentum=0.9, weight_decay=weight_decay)


def loss_of(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension: class scores (B, C) or token scores (B, T, V)."""
    return nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def train(trainer: Trainer, run: Run) -> None:
    """Train `trainer`'s model as `run.job` says, writing everything through `run`."""
    settings = Settings.from_job(run.job)
    distributed = run.world_size > 1
    if distributed:
        torch.distributed.init_process_group("gloo", rank=run.rank, world_size=run.world_size)
    try:
        _train(trainer, run, settings, distributed)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def _train(trainer: Trainer, run: Run, settings: Settings, distributed: bool) -> None:
    # Opacus's hooks see the first layer's input needs no gradient (data never does); that is expected.
    warnings.filterwarnings("ignore", message=r"Full backward hook is firing", category=UserWarning)
    torch.manual_seed(SEED)  # the same initial weights on every rank
    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // run.world_size)))
    args = trainer.architecture(run.job)
    (train_x, train_y), (val_x, val_y) = trainer.make_data(args)
    net = trainer.build(args)
    if settings.qat:
        net = prepare_qat(net)
    model: nn.Module = net
    if distributed:
        model = nn.parallel.DistributedDataParallel(net)
    loader = _loader(TensorDataset(train_x, train_y), settings.batch_size, run, distributed)
    optimizer = make_optimizer(settings.optimizer, model, settings.learning_rate, settings.weight_decay)
    private: PrivateTraining | None = None
    if settings.dp:
        from modelyard.training.privacy import DPSettings, make_private

        private = make_private(model, optimizer, loader, DPSettings.from_job(run.job), settings.epochs)
        model, optimizer, loader = private.model, private.optimizer, private.loader
    _say(run, f"{trainer.NAME}: {sum(p.numel() for p in net.parameters())} parameters, {args}, {_modes(settings, run)}")
    for epoch in range(1, settings.epochs + 1):
        if distributed and isinstance(loader.sampler, torch.utils.data.DistributedSampler):
            loader.sampler.set_epoch(epoch)
        train_loss = _epoch(model, loader, optimizer, distributed)
        val_loss, val_accuracy = _evaluate(model, val_x, val_y)
        values = {"loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy}
        if private is not None:
            values["epsilon"] = private.epsilon_spent()
        run.log_metrics(epoch, **values)
        _say(run, f"epoch {epoch}/{settings.epochs} " + " ".join(f"{k} {v:.4f}" for k, v in values.items()))
        state = {
            "model_state_dict": net.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "epoch": epoch,
            "metrics": values,
            ARCHITECTURE_KEY: _architecture(trainer, args, settings, "qat-prepared" if settings.qat else None),
        }
        run.save_checkpoint(state, epoch, metric=val_loss, force=epoch == settings.epochs)
    facts: dict[str, Any] = {
        "trainer": trainer.NAME,
        "parameters": sum(p.numel() for p in net.parameters()),
        "world_size": run.world_size,
        "quantization_mode": "quantization-aware" if settings.qat else str(run.job.get("quantization_mode") or "none"),
        "privacy_level": str(run.job.get("privacy_level") or "none"),
    }
    if private is not None:
        facts.update(
            epsilon_spent=private.epsilon_spent(),
            delta=private.settings.delta,
            noise_multiplier=private.noise_multiplier,
            max_grad_norm=private.settings.max_grad_norm,
        )
    run.report(**facts)
    _save_final(trainer, run, net, args, settings)


def _loader(dataset: TensorDataset, batch_size: int, run: Run, distributed: bool) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(SEED)
    if distributed:
        sampler: torch.utils.data.DistributedSampler[Any] = torch.utils.data.DistributedSampler(
            dataset, num_replicas=run.world_size, rank=run.rank, seed=SEED
        )
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)


def _epoch(model: nn.Module, loader: DataLoader[Any], optimizer: torch.optim.Optimizer, distributed: bool) -> float:
    """One pass over the (local shard of the) training data; the mean loss over every rank."""
    model.train()
    total, count = torch.zeros(()), torch.zeros(())
    for inputs, targets in loader:
        if len(inputs) == 0:  # Poisson sampling (DP) can draw an empty batch
            continue
        optimizer.zero_grad()
        loss = loss_of(model(inputs), targets)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        total += loss.detach() * len(inputs)
        count += len(inputs)
    if distributed:
        sums = torch.stack([total, count])
        torch.distributed.all_reduce(sums)
        total, count = sums[0], sums[1]
    return float(total / count.clamp(min=1))


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(loss, accuracy) of `model` on a batch: what the trainers log as val_loss and val_accuracy."""
    return _evaluate(model, inputs, targets)


def _evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    accuracy = (outputs.argmax(dim=-1) == targets).float().mean()
    return float(loss_of(outputs, targets)), float(accuracy)


def _save_final(trainer: Trainer, run: Run, net: nn.Module, args: dict[str, int], settings: Settings) -> None:
    """checkpoints/model.pt: the final model (int8 after QAT) and how to rebuild it."""
    if not run.is_main:
        return
    final = net
    quantized = None
    if settings.qat:
        final = convert_int8(net)
        quantized = "qat-int8"
    with quiet_quantization():
        state = final.state_dict()
    target = run.checkpoint_dir / MODEL_FILE
    temporary = target.with_name(f".{MODEL_FILE}.partial")
    torch.save({ARCHITECTURE_KEY: _architecture(trainer, args, settings, quantized), STATE_KEY: state}, temporary)
    os.replace(temporary, target)
    note = " (int8, quantization-aware training)" if quantized else ""
    _say(run, f"saved {target.relative_to(run.run_dir)}{note}")


def _architecture(trainer: Trainer, args: dict[str, int], settings: Settings, quantized: str | None) -> dict[str, Any]:
    return {"trainer": trainer.NAME, "args": dict(args), "quantized": quantized, "qat_engine": _engine(settings)}


def _engine(settings: Settings) -> str | None:
    return torch.backends.quantized.engine if settings.qat else None


def _modes(settings: Settings, run: Run) -> str:
    parts = [f"world_size {run.world_size}", f"optimizer {settings.optimizer}", f"epochs {settings.epochs}"]
    if settings.qat:
        parts.append("quantization-aware training")
    if settings.dp:
        parts.append("DP-SGD")
    return ", ".join(parts)


def _say(run: Run, text: str) -> None:
    if run.is_main:
        print(text, flush=True)
