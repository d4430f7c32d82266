"""tiny-classifier: an MLP that sorts points drawn around 4 seeded centres into their classes.

Form fields used: input_size (one number, or dimensions multiplied together; default 16),
hidden_size (default 32), num_layers (hidden layers, default 2), embedding_dim (the last hidden
layer's width; default hidden_size).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

NAME = "tiny-classifier"
CLASSES = 4
TRAIN_SAMPLES = 512
VAL_SAMPLES = 128
DATA_SEED = 20_240_607
DEFAULTS = {"input_size": 16, "hidden_size": 32, "num_layers": 2}


def architecture(job: dict[str, Any]) -> dict[str, int]:
    """The model's constructor arguments from the job's fields."""
    input_size = job.get("input_size") or DEFAULTS["input_size"]
    if isinstance(input_size, list):
        input_size = math.prod(input_size)
    hidden_size = job.get("hidden_size") or DEFAULTS["hidden_size"]
    return {
        "input_size": int(input_size),
        "hidden_size": int(hidden_size),
        "num_layers": int(job.get("num_layers") or DEFAULTS["num_layers"]),
        "embedding_dim": int(job.get("embedding_dim") or hidden_size),
        "num_classes": CLASSES,
    }


def parameter_count(args: dict[str, int]) -> int:
    widths = [args["input_size"]] + [args["hidden_size"]] * (args["num_layers"] - 1) + [args["embedding_dim"]]
    widths.append(args["num_classes"])
    return sum(inputs * outputs + outputs for inputs, outputs in itertools.pairwise(widths))


def build(args: dict[str, int]) -> nn.Module:
    from torch import nn

    from modelyard.training.builtin.layers import Dense

    widths = [args["input_size"]] + [args["hidden_size"]] * (args["num_layers"] - 1) + [args["embedding_dim"]]
    layers: list[nn.Module] = []
    for inputs, outputs in itertools.pairwise(widths):
        layers += [Dense(inputs, outputs), nn.ReLU()]
    layers.append(Dense(widths[-1], args["num_classes"]))
    return nn.Sequential(*layers)


def make_data(args: dict[str, int]) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) for training and for validation, the same on every call and every rank."""
    import torch

    generator = torch.Generator().manual_seed(DATA_SEED)
    centres = torch.randn(args["num_classes"], args["input_size"], generator=generator) * 0.6

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, args["num_classes"], (count,), generator=generator)
        points = centres[labels] + torch.randn(count, args["input_size"], generator=generator)
        return points, labels

    return draw(TRAIN_SAMPLES), draw(VAL_SAMPLES)
