"""Differential privacy for the built-in trainers: DP-SGD with Opacus (the `privacy` extra).

A job with ``privacy_level: dp`` carries ``dp: {max_grad_norm, delta, noise_multiplier |
target_epsilon}`` (`modelyard.training.jobs.DifferentialPrivacy`). `make_private` clips each
sample's gradient to ``max_grad_norm`` and adds Gaussian noise: with ``noise_multiplier`` as given,
or with the multiplier Opacus computes so that the whole training spends ``target_epsilon`` at
``delta``. `epsilon_spent` is what the accountant says the steps taken so far cost.

``secure-agg`` is recorded only: modelyard performs no secure aggregation itself.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidInputError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

INSTALL_OPACUS = "install the privacy extra (pip install 'modelyard[privacy]', which brings opacus)"


def opacus_available() -> bool:
    return importlib.util.find_spec("opacus") is not None


def require_opacus() -> None:
    if not opacus_available():
        raise InvalidInputError(f"privacy_level dp trains with Opacus DP-SGD, which is not installed: {INSTALL_OPACUS}")


@dataclass(frozen=True)
class DPSettings:
    """The job's ``dp`` parameters."""

    max_grad_norm: float
    delta: float
    noise_multiplier: float | None
    target_epsilon: float | None

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> DPSettings:
        dp = job.get("dp")
        if not isinstance(dp, dict):
            raise InvalidInputError(
                "privacy_level dp needs dp parameters: {max_grad_norm, delta, noise_multiplier or target_epsilon}",
                field="dp",
            )
        noise, target = dp.get("noise_multiplier"), dp.get("target_epsilon")
        if (noise is None) == (target is None):
            raise InvalidInputError("dp needs exactly one of noise_multiplier or target_epsilon", field="dp")
        for name in ("max_grad_norm", "delta"):
            if not isinstance(dp.get(name), int | float) or isinstance(dp.get(name), bool):
                raise InvalidInputError(f"dp needs {name}, a number", field=f"dp.{name}")
        return cls(
            max_grad_norm=float(dp["max_grad_norm"]),
            delta=float(dp["delta"]),
            noise_multiplier=None if noise is None else float(noise),
            target_epsilon=None if target is None else float(target),
        )


@dataclass
class PrivateTraining:
    """The model, optimizer and loader Opacus made private, and its privacy engine."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader[Any]
    engine: Any
    settings: DPSettings

    @property
    def noise_multiplier(self) -> float:
        return float(self.optimizer.noise_multiplier)  # type: ignore[attr-defined]

    def epsilon_spent(self) -> float:
        return float(self.engine.get_epsilon(self.settings.delta))


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Any],
    settings: DPSettings,
    epochs: int,
) -> PrivateTraining:
    """Wrap the model, optimizer and loader for DP-SGD (Poisson sampling, per-sample clipping, noise)."""
    require_opacus()
    # opacus has no type information: its objects are Any here.
    opacus: Any = importlib.import_module("opacus")
    validators: Any = importlib.import_module("opacus.validators")
    problems = validators.ModuleValidator.validate(model, strict=False)
    if problems:
        raise InvalidInputError(f"the model has layers Opacus cannot train privately: {problems[0]}")
    engine = opacus.PrivacyEngine(accountant="rdp")
    if settings.noise_multiplier is not None:
        private = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=settings.noise_multiplier,
            max_grad_norm=settings.max_grad_norm,
        )
    else:
        assert settings.target_epsilon is not None  # DPSettings holds exactly one of the two
        private = engine.make_private_with_epsilon(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=settings.target_epsilon,
            target_delta=settings.delta,
            epochs=epochs,
            max_grad_norm=settings.max_grad_norm,
        )
    wrapped, private_optimizer, private_loader = private
    return PrivateTraining(wrapped, private_optimizer, private_loader, engine, settings)
