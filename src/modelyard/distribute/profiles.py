"""Deploy profiles: which of a version's files a server needs, by the kind of model.

A training run's directory holds far more than a server reads: optimizer and scheduler state,
RNG states, intermediate checkpoints, logs. A node gets the files its runtime loads: for a PEFT
adapter seed 004's list (adapter config, adapter weights, tokenizer and special-token files);
for a Hugging Face folder its configs, tokenizer and weights; for a GGUF model the .gguf files.
`--all-files` sends everything.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.manifest import FileEntry

# Tokenizer and chat files every text runtime reads beside the weights.
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "chat_template.jinja",
        "chat_template.json",
    }
)
CONFIG_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "feature_extractor_config.json",
        "image_processor_config.json",
        "model_index.json",
        "scheduler_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "adapter_config.json",
        "params.json",
        "config.yaml",  # seed 003's model directories keep their model config in YAML
        "config.yml",
        "metadata.json",
    }
)
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".onnx_data", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
INDEX_SUFFIX = ".index.json"
# Training state: never needed to serve (the Hugging Face Trainer's names and common ones).
_TRAINING_STATE = re.compile(
    r"(^|/)(optimizer\.(pt|bin|safetensors)|scheduler\.pt|rng_state[^/]*\.pth|trainer_state\.json|"
    r"training_args\.bin|scaler\.pt|events\.out\.tfevents[^/]*)$"
)
_CHECKPOINT_DIR = re.compile(r"(^|/)(checkpoint[-_][^/]+|checkpoints|runs|logs|wandb|mlruns)/")
_PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class Selection:
    profile: str
    files: list[FileEntry]
    left_out: int  # how many of the version's files the profile leaves behind


def select_files(
    files: Sequence[FileEntry], model_type: str | None, layout: str | None, weights_format: str | None
) -> Selection:
    """The files a server of this kind of model needs. Falls back to every file when the
    profile would pick no weights at all (an unusual layout is shipped whole, not half)."""
    kind = _profile(model_type, layout, weights_format)
    if kind == "all-files":
        return Selection("all-files", list(files), 0)
    candidates = [entry for entry in files if _servable(entry.path)]
    if kind == "gguf":
        picked = [entry for entry in candidates if entry.path.endswith(".gguf") or _is_side_file(entry.path)]
    elif kind == "peft-adapter":
        picked = [entry for entry in candidates if _adapter_file(entry.path)]
    else:
        picked = [entry for entry in candidates if _is_side_file(entry.path) or _is_weights(entry.path)]
    picked = _prefer_safetensors(picked)
    if not any(_is_weights(entry.path) for entry in picked):
        return Selection("all-files", list(files), 0)
    return Selection(kind, picked, len(files) - len(picked))


def _profile(model_type: str | None, layout: str | None, weights_format: str | None) -> str:
    if model_type is None or model_type in ("unknown", "config", "policy"):
        return "all-files"
    if weights_format == "gguf":
        return "gguf"
    if model_type == "adapter":
        return "peft-adapter"
    return f"{model_type}-{layout or 'files'}"


def _servable(path: str) -> bool:
    return not _TRAINING_STATE.search(path) and not _CHECKPOINT_DIR.search(path)


def _is_side_file(path: str) -> bool:
    name = posixpath.basename(path)
    return name in TOKENIZER_FILES or name in CONFIG_FILES or name.endswith(INDEX_SUFFIX) or path == "README.md"


def _is_weights(path: str) -> bool:
    return path.endswith(WEIGHT_SUFFIXES) and not path.endswith(INDEX_SUFFIX)


def _adapter_file(path: str) -> bool:
    """Seed 004's files to transfer: adapter_config.json, adapter_model.safetensors (or .bin),
    the tokenizer and special-token files."""
    name = posixpath.basename(path)
    if "/" in path:
        return False
    return name.startswith("adapter_model.") or name in TOKENIZER_FILES or name in ("adapter_config.json", "README.md")


def _prefer_safetensors(files: list[FileEntry]) -> list[FileEntry]:
    """A folder saved in both formats (model.safetensors and pytorch_model.bin) ships the
    safetensors one: the same weights, no pickle to load."""
    directories_with_safetensors = {posixpath.dirname(e.path) for e in files if e.path.endswith(".safetensors")}
    return [
        entry
        for entry in files
        if not (entry.path.endswith(_PICKLE_WEIGHTS) and posixpath.dirname(entry.path) in directories_with_safetensors)
    ]
