"""Step 2 of the flow: what is this model file or folder? Headers and small side files only.

    from modelyard.inspect import inspect_path
    config = inspect_path("runs/llama-3.2-3b-instruct")   # an LlmConfig, ImageConfig, ... (seed 002)
    config.model_type, config.format, config.parameter_count, config.pickle_scan.verdict
    config.is_compatible_with("vllm")

No weights are loaded and no pickle is ever unpickled: every reader bounds what it reads by the
file's real size, and a malformed file raises `InvalidModelFileError` naming the file and field.
`register` runs the same inspection on the blobs it has just staged, before the version commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard.inspect.hints import Hints
from modelyard.inspect.tree import DirectoryTree, ModelTree
from modelyard.modelconfig import BaseModelConfig

__all__ = ["INSPECTOR_VERSION", "Hints", "inspect_path", "inspect_tree", "manifest_suggestions"]

# Raised whenever inspection learns to read something new, so that `reinspect --outdated` can
# find the entries an older modelyard wrote.
INSPECTOR_VERSION = 1

# Tensor dtypes (normalised) -> the manifest's precision (seed 000: fp32/fp16/int8, plus bf16).
_PRECISIONS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "q8_0": "int8"}
_UNQUANTIZED = {"fp32", "fp16", "bf16"}
_GGUF_FLOAT = {"F16": "fp16", "BF16": "bf16", "ALL_F32": "fp32", "F32": "fp32"}


def inspect_tree(
    tree: ModelTree, hints: Hints | None = None, heads: Mapping[str, bytes] | None = None
) -> BaseModelConfig:
    """Inspect a set of files. `heads` (first bytes of files already read elsewhere) spares
    opening every data file again to tell whether it is a pickle."""
    from modelyard.inspect.classify import classify
    from modelyard.inspect.weights import read_weights

    weights = read_weights(tree, heads)
    return classify(tree, weights, hints or Hints())


def inspect_path(path: str | Path, hints: Hints | None = None) -> BaseModelConfig:
    """Inspect a model file or folder on disk. A run's `artifact_manifest.json`, when present,
    supplies the hints (name, component, task, node type) unless `hints` are given."""
    tree = DirectoryTree.from_path(Path(path))
    if hints is None:
        hints = _hints_from_run_manifest(Path(path))
    return inspect_tree(tree, hints)


def _hints_from_run_manifest(path: Path) -> Hints:
    from modelyard.manifest import load_run_manifest
    from modelyard.names import MANIFEST_FILENAME

    manifest_path = path / MANIFEST_FILENAME
    if not path.is_dir() or not manifest_path.is_file():
        return Hints()
    manifest = load_run_manifest(manifest_path)
    return Hints(
        artifact_name=manifest.artifact_name,
        component=manifest.component,
        task=manifest.task,
        node_type=manifest.node_type,
        base_model=manifest.base_model,
    )


def manifest_suggestions(config: BaseModelConfig) -> dict[str, Any]:
    """The manifest fields inspection can fill (seed 000): embedding_dim, base_model, precision,
    quantized. Only what the files state; the registration keeps a user's own values."""
    suggestions: dict[str, Any] = {}
    embedding_dim = getattr(config, "embedding_dim", None)
    if isinstance(embedding_dim, int) and embedding_dim > 0:
        suggestions["embedding_dim"] = embedding_dim
    base_model = getattr(config, "base_model", None)
    if isinstance(base_model, str) and base_model:
        suggestions["base_model"] = base_model
    precision, quantized = _precision(config)
    if precision is not None:
        suggestions["precision"] = precision
    if quantized is not None:
        suggestions["quantized"] = quantized
    return suggestions


def _precision(config: BaseModelConfig) -> tuple[str | None, bool | None]:
    quantization = getattr(config, "quantization", None)
    if config.format == "gguf" and isinstance(quantization, str):
        if quantization in _GGUF_FLOAT:
            return _GGUF_FLOAT[quantization], False
        return ("int8" if quantization == "Q8_0" else None), True
    if isinstance(quantization, str) and quantization:  # gptq, awq, bitsandbytes, ...
        return ("int8" if quantization.endswith("-8bit") else None), True
    precision = _PRECISIONS.get(config.dtype or "")
    if precision is None:
        return None, None
    return precision, precision not in _UNQUANTIZED
