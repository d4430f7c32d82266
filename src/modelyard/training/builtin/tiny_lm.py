"""tiny-lm: a small causal transformer that learns to continue arithmetic token sequences
(start, start+k, start+2k, ... modulo the vocabulary), generated from a fixed seed.

Form fields used: max_seq_length (default 16), hidden_size (the model width; default
embedding_dim, else 32), num_layers (transformer blocks, default 1), num_heads (default 2, or 1
when 2 does not divide the width).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

NAME = "tiny-lm"
VOCAB_SIZE = 16
MLP_FACTOR = 2
TRAIN_SAMPLES = 256
VAL_SAMPLES = 64
DATA_SEED = 20_240_608
DEFAULTS = {"max_seq_length": 16, "hidden_size": 32, "num_layers": 1, "num_heads": 2}


def architecture(job: dict[str, Any]) -> dict[str, int]:
    """The model's constructor arguments from the job's fields."""
    heads = job.get("num_heads")
    hidden = job.get("hidden_size") or job.get("embedding_dim")
    if hidden is None:
        hidden = DEFAULTS["hidden_size"] if heads is None else 16 * int(heads)
    if heads is None:
        heads = DEFAULTS["num_heads"] if hidden % DEFAULTS["num_heads"] == 0 else 1
    return {
        "vocab_size": VOCAB_SIZE,
        "max_seq_length": int(job.get("max_seq_length") or DEFAULTS["max_seq_length"]),
        "hidden_size": int(hidden),
        "num_layers": int(job.get("num_layers") or DEFAULTS["num_layers"]),
        "num_heads": int(heads),
    }


def parameter_count(args: dict[str, int]) -> int:
    hidden, vocab = args["hidden_size"], args["vocab_size"]
    norms = 2 * hidden
    block = 2 * norms + (hidden * 3 * hidden + 3 * hidden) + (hidden * hidden + hidden)
    block += hidden * MLP_FACTOR * hidden + MLP_FACTOR * hidden + MLP_FACTOR * hidden * hidden + hidden
    embeddings = (vocab + args["max_seq_length"]) * hidden
    return embeddings + args["num_layers"] * block + norms + hidden * vocab + vocab


def build(args: dict[str, int]) -> nn.Module:
    from modelyard.training.builtin.layers import TinyLM

    return TinyLM(**args)


def make_data(args: dict[str, int]) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(tokens, next tokens) for training and for validation, the same on every call and every rank."""
    import torch

    generator = torch.Generator().manual_seed(DATA_SEED)
    length, vocab = args["max_seq_length"], args["vocab_size"]

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, vocab, (count, 1), generator=generator)
        strides = torch.randint(1, 4, (count, 1), generator=generator)
        sequences = (starts + strides * torch.arange(length + 1)) % vocab
        return sequences[:, :-1].contiguous(), sequences[:, 1:].contiguous()

    return draw(TRAIN_SAMPLES), draw(VAL_SAMPLES)
