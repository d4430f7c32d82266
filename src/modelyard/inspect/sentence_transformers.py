"""sentence-transformers folders: modules.json, the pooling module and the model's own settings."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource, read_json, read_json_object
from modelyard.inspect._fields import opt_bool, opt_int, opt_str

OpenFile = Callable[[str], AbstractContextManager[ByteSource]]
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SETTINGS_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_xlnet_config.json")


@dataclass(frozen=True)
class SentenceTransformer:
    modules: tuple[tuple[str, str], ...]  # (path, type)
    embedding_dim: int | None
    pooling: str | None
    normalize: bool
    max_seq_length: int | None
    similarity_fn: str | None
    prompts: dict[str, str]
    library_version: str | None


def read_modules(source: ByteSource) -> list[tuple[str, str]]:
    """modules.json: a list of {"idx", "name", "path", "type"}; returns (path, type) in order."""
    value = read_json(source)
    if not isinstance(value, list):
        raise InvalidModelFileError("must be a JSON list of modules", path=source.name)
    modules: list[tuple[str, str]] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise InvalidModelFileError(f"module {index} is not an object", path=source.name)
        path = opt_str(entry, "path", source.name) or ""
        kind = opt_str(entry, "type", source.name)
        if kind is None:
            raise InvalidModelFileError(f"module {index} has no type", path=source.name, field="type")
        if path.startswith("/") or ".." in path.split("/") or "\\" in path:
            raise InvalidModelFileError(f"module {index} path {path!r} leaves the model folder", path=source.name)
        modules.append((path, kind))
    return modules


def read_sentence_transformer(folder: str, paths: set[str], open_file: OpenFile) -> SentenceTransformer:
    """Everything the folder says about the embedding it produces."""

    def at(*parts: str) -> str:
        return posixpath.join(folder, *parts) if folder else posixpath.join(*parts)

    with open_file(at("modules.json")) as source:
        modules = read_modules(source)
    embedding_dim, pooling = None, None
    normalize = False
    for path, kind in modules:
        short = kind.rsplit(".", 1)[-1]
        config_path = at(path, "config.json") if path else at("config.json")
        if short == "Pooling" and config_path in paths:
            with open_file(config_path) as source:
                embedding_dim, pooling = _pooling(read_json_object(source), source.name)
        elif short == "Dense" and config_path in paths:
            with open_file(config_path) as source:
                embedding_dim = opt_int(read_json_object(source), "out_features", source.name) or embedding_dim
        elif short == "Normalize":
            normalize = True
    max_seq_length = None
    for name in SETTINGS_FILES:
        if at(name) in paths:
            with open_file(at(name)) as source:
                max_seq_length = opt_int(read_json_object(source), "max_seq_length", source.name)
            break
    similarity, prompts, version = _model_settings(folder, paths, open_file)
    return SentenceTransformer(
        modules=tuple(modules),
        embedding_dim=embedding_dim,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        similarity_fn=similarity,
        prompts=prompts,
        library_version=version,
    )


def _pooling(raw: dict[str, Any], name: str) -> tuple[int | None, str | None]:
    """Legacy saves: word_embedding_dimension + booleans; v6: embedding_dimension + pooling_mode."""
    dimension = opt_int(raw, "embedding_dimension", name) or opt_int(raw, "word_embedding_dimension", name)
    mode = raw.get("pooling_mode")
    if isinstance(mode, str):
        return dimension, mode
    if isinstance(mode, list) and all(isinstance(m, str) for m in mode):
        return dimension, "+".join(mode)
    if mode is not None:
        raise InvalidModelFileError("expected a string or a list of strings", path=name, field="pooling_mode")
    modes = [label for key, label in _POOLING_FLAGS.items() if opt_bool(raw, key, name)]
    return dimension, "+".join(modes) if modes else None


def _model_settings(folder: str, paths: set[str], open_file: OpenFile) -> tuple[str | None, dict[str, str], str | None]:
    path = (
        posixpath.join(folder, "config_sentence_transformers.json") if folder else "config_sentence_transformers.json"
    )
    if path not in paths:
        return None, {}, None
    with open_file(path) as source:
        raw = read_json_object(source)
        similarity = opt_str(raw, "similarity_fn_name", source.name)
        prompts_value = raw.get("prompts") or {}
        if not isinstance(prompts_value, dict) or not all(isinstance(v, str) for v in prompts_value.values()):
            raise InvalidModelFileError("expected an object of strings", path=source.name, field="prompts")
        versions = raw.get("__version__")
        version = versions.get("sentence_transformers") if isinstance(versions, dict) else None
    return similarity, dict(prompts_value), version if isinstance(version, str) else None
