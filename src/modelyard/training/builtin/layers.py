"""Building blocks of the built-in models (this module imports torch).

Every linear layer is a `Dense`: the layer between a QuantStub and a DeQuantStub. In a float
model the stubs do nothing (and hold no weights); quantization-aware training gives each `Dense`
a QAT qconfig, so exactly the linear layers become int8 while embeddings, norms and attention
stay float (eager-mode quantization needs quantized inputs at each quantized layer).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub


class Dense(nn.Module):
    """A linear layer that quantization-aware training can make int8."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.linear = nn.Linear(inputs, outputs)
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.linear(self.quant(x)))  # type: ignore[no-any-return]


@contextmanager
def quiet_quantization() -> Iterator[None]:
    """torch 2.13 warns that torch.ao.quantization moves to torchao on every call; the API still
    works and is the one the built-in trainers use, so the warning is noise in a training log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.ao\.quantization")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*quantize_per_tensor")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*quantized tensor creation")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*quant_min and quant_max")
        # A QAT model rebuilt to load its saved int8 weights never ran its observers; the weights replace them.
        warnings.filterwarnings("ignore", category=UserWarning, message=r"must run observer before")
        yield


def _ao() -> Any:
    """torch.ao.quantization, whose functions carry no type annotations."""
    return importlib.import_module("torch.ao.quantization")


def prepare_qat(model: nn.Module) -> nn.Module:
    """Give every Dense a QAT qconfig for this machine's quantized engine and insert fake quantization."""
    with quiet_quantization():
        qconfig = _ao().get_default_qat_qconfig(torch.backends.quantized.engine)
        for module in model.modules():
            if isinstance(module, Dense):
                module.qconfig = qconfig
        model.train()
        prepared: nn.Module = _ao().prepare_qat(model, inplace=True)
        return prepared


def convert_int8(model: nn.Module) -> nn.Module:
    """The int8 model of a QAT-prepared one (its linear layers quantized)."""
    with quiet_quantization():
        model.eval()
        converted: nn.Module = _ao().convert(model, inplace=False)
        return converted


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Post-training dynamic quantization: nn.Linear weights to qint8, activations quantized on the fly."""
    with quiet_quantization():
        model.eval()
        quantized: nn.Module = _ao().quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        return quantized


def int8_tensors(quantized: nn.Module) -> dict[str, torch.Tensor]:
    """A dynamically quantized model's weights as plain tensors: each int8 linear layer as
    ``weight`` (int8), ``weight_scale``, ``weight_zero_point`` and ``bias``; every other parameter
    and buffer as it is. Unlike its state_dict (packed parameters, opaque script objects) this is a
    mapping of names to tensors that safetensors, the registry's inspection and promotion read."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    tensors: dict[str, torch.Tensor] = {}
    packed: list[str] = []
    for name, module in quantized.named_modules():
        if isinstance(module, DynamicLinear):
            prefix = f"{name}." if name else ""
            weight = module.weight()  # type: ignore[no-untyped-call]
            tensors[f"{prefix}weight"] = weight.int_repr()
            tensors[f"{prefix}weight_scale"] = torch.tensor(weight.q_scale(), dtype=torch.float64)
            tensors[f"{prefix}weight_zero_point"] = torch.tensor(weight.q_zero_point(), dtype=torch.int64)
            bias = module.bias()  # type: ignore[no-untyped-call]
            if bias is not None:
                tensors[f"{prefix}bias"] = bias.detach().clone()
            packed.append(prefix)
    with quiet_quantization():
        for key, value in quantized.state_dict().items():
            if isinstance(value, torch.Tensor) and not any(key.startswith(prefix) for prefix in packed):
                tensors[key] = value
    return tensors


def load_int8_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The quantized model `int8_tensors` describes, from a fresh float `model` of the same
    architecture: the other tensors are loaded into the float model, its linear layers quantized,
    then given the saved int8 weights. ValueError naming what is missing or left over."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    linear = [f"{name}." for name, module in model.named_modules() if type(module) is nn.Linear]
    int8_parts = ("weight", "bias", "weight_scale", "weight_zero_point")

    def of_linear(key: str) -> bool:
        return any(key.startswith(prefix) and key[len(prefix) :] in int8_parts for prefix in linear)

    result = model.load_state_dict({k: v for k, v in tensors.items() if not of_linear(k)}, strict=False)
    missing = [key for key in result.missing_keys if not of_linear(key)]
    if missing or result.unexpected_keys:
        raise ValueError(f"tensors missing: {missing[:3]}, not in the model: {result.unexpected_keys[:3]}")
    quantized = quantize_dynamic_int8(model)
    for name, module in quantized.named_modules():
        if not isinstance(module, DynamicLinear):
            continue
        prefix = f"{name}." if name else ""
        try:
            values = tensors[f"{prefix}weight"]
            scale = float(tensors[f"{prefix}weight_scale"])
            zero_point = int(tensors[f"{prefix}weight_zero_point"])
        except KeyError as absent:
            raise ValueError(f"no tensor {absent.args[0]}") from None
        # Dequantize and quantize again with the same scale: the integers come back exactly.
        weight = torch.quantize_per_tensor((values.float() - zero_point) * scale, scale, zero_point, torch.qint8)
        module.set_weight_bias(weight, tensors.get(f"{prefix}bias"))
    return quantized


class Block(nn.Module):
    """A pre-norm transformer block with causal self-attention."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_factor: int = 2) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size)
        self.qkv = Dense(hidden_size, 3 * hidden_size)
        self.proj = Dense(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.up = Dense(hidden_size, mlp_factor * hidden_size)
        self.down = Dense(mlp_factor * hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=-1)
        q, k, v = (part.view(batch, length, self.num_heads, -1).transpose(1, 2) for part in (q, k, v))
        attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.down(nn.functional.gelu(self.up(self.norm2(x))))  # type: ignore[no-any-return]


class TinyLM(nn.Module):
    """Token and position embeddings, `num_layers` blocks, a final norm and the output layer."""

    def __init__(self, vocab_size: int, max_seq_length: int, hidden_size: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, hidden_size)
        # An Embedding rather than a bare Parameter: Opacus computes per-sample gradients per layer type.
        self.positions = nn.Embedding(max_seq_length, hidden_size)
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.head = Dense(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # One row of positions per sample: Opacus needs the batch dimension first in every layer's input.
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        x = self.tokens(tokens) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # type: ignore[no-any-return]
