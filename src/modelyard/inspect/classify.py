"""Turn what an artifact's files say into one typed configuration (seed 002).

Evidence is taken in order of how much it says, and the first kind that applies decides the type:
an adapter_config.json (PEFT adapter), a model_index.json (diffusers pipeline), a modules.json
(sentence-transformers), a config.json (Hugging Face model), GGUF metadata, the tensor names of
bare weights (single-file Stable Diffusion, torchvision detectors, RL policies, ...), an ONNX
graph, and last the registration's own hints (component, task, node type, name). An artifact
with no weights at all is a configuration artifact when it holds configuration documents.
"""

from __future__ import annotations

from typing import Any

from modelyard.inspect.classify_files import (
    from_bare_weights,
    from_configuration,
    from_gguf,
    from_hints,
    from_onnx,
    unknown_model,
)
from modelyard.inspect.classify_folders import from_diffusers, from_huggingface, from_peft, from_sentence_transformers
from modelyard.inspect.evidence import Context, Finding, model_root
from modelyard.inspect.hints import Hints
from modelyard.inspect.tree import ModelTree, join
from modelyard.inspect.weights import WeightReading, WeightsReport
from modelyard.modelconfig import (
    CONFIG_CLASSES,
    BaseModelConfig,
)

MAX_LISTED_FILES = 2000
MAX_LISTED_WEIGHTS = 500


def classify(tree: ModelTree, weights: WeightsReport, hints: Hints) -> BaseModelConfig:
    ctx = Context(tree, sorted(tree.sizes), weights, hints, warnings=list(weights.warnings))
    ctx.sources.extend(r.path for r in weights.readings)
    root = model_root(ctx.paths)
    finding = (
        from_peft(ctx, root)
        or from_diffusers(ctx, root)
        or from_sentence_transformers(ctx, root)
        or from_huggingface(ctx, root)
        or from_gguf(ctx)
        or from_bare_weights(ctx)
        or from_onnx(ctx)
        or from_hints(ctx)
        or from_configuration(ctx)
        or unknown_model(ctx)
    )
    return _finish(ctx, finding, root)


# -- the common fields -------------------------------------------------------------------------


def _finish(ctx: Context, finding: Finding, root: str) -> BaseModelConfig:
    cls = CONFIG_CLASSES[finding.model_type]
    fields = {k: v for k, v in finding.fields.items() if k in cls.model_fields}
    extra_warnings = finding.fields.get("warnings") or []
    _merge_card(ctx, root, fields, cls)
    main = finding.main
    dtypes: dict[str, int] = {}
    for reading in main:
        for dtype, count in reading.summary.dtypes.items():
            dtypes[dtype] = dtypes.get(dtype, 0) + count
    counts = [r.summary.parameter_count for r in main if r.summary.parameter_count is not None]
    author = _author(main)
    config = cls.model_validate(
        {
            **fields,
            "model_type": finding.model_type,
            "format": main[0].format if main else _format_of(ctx),
            "layout": finding.layout,
            "parameter_count": sum(counts) if counts else None,
            "dtype": max(dtypes, key=lambda d: (dtypes[d], d)) if dtypes else None,
            "author": author,
            "files": _listed_files(ctx.paths),
            "weights": [r.summary for r in ctx.weights.readings[:MAX_LISTED_WEIGHTS]],
            "pickle_scan": ctx.weights.pickle_scan,
            "sources": ctx.sources,
            "warnings": [*ctx.warnings, *extra_warnings],
        }
    )
    return config


def _format_of(ctx: Context) -> str:
    formats = {r.format for r in ctx.weights.readings}
    for name in ("safetensors", "gguf", "pytorch", "torchscript", "onnx", "pickle"):
        if name in formats:
            return name
    return "none"


def _author(main: list[WeightReading]) -> str | None:
    for reading in main:
        author = getattr(reading.header, "author", None)
        if isinstance(author, str) and author:
            return author
    return None


def _listed_files(paths: list[str]) -> list[str]:
    """Every path, or the shallowest MAX_LISTED_FILES of a huge tree (top-level files first)."""
    if len(paths) <= MAX_LISTED_FILES:
        return paths
    return sorted(sorted(paths, key=lambda p: (p.count("/"), p))[:MAX_LISTED_FILES])


def _merge_card(ctx: Context, root: str, fields: dict[str, Any], cls: type[BaseModelConfig]) -> None:
    """README front matter: license, base model, tags, languages, datasets, pipeline tag."""
    from modelyard.inspect.huggingface import read_model_card

    path = join(root, "README.md")
    if not ctx.has(path):
        return
    card = ctx.read(path, read_model_card)
    if card is None:
        return
    offered: dict[str, Any] = {
        "license": card.license,
        "base_model": card.base_models[0] if card.base_models else None,
        "tags": list(card.tags),
        "languages": list(card.languages),
        "datasets": list(card.datasets),
        "pipeline_tag": card.pipeline_tag,
        "library_name": card.library_name,
    }
    for key, value in offered.items():
        if key in cls.model_fields and value not in (None, []) and not fields.get(key):
            fields[key] = value
    if "task" in fields and not fields["task"] and card.pipeline_tag:
        fields["task"] = card.pipeline_tag
