"""Builders for artifacts without a model folder: GGUF, bare weights (by tensor names and
metadata), ONNX graphs, the registration's hints, configuration documents, and the unknown
(see `modelyard.inspect.classify`)."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from modelyard.inspect.evidence import (
    Context,
    Finding,
    hint_modality,
    layout_of,
    pick_checkpoint,
    tensor_evidence,
)
from modelyard.inspect.hints import config_kind, hinted_type
from modelyard.inspect.weights import WeightReading
from modelyard.modelconfig import (
    TokenizerConfig,
)

CONFIG_DOCUMENT_SUFFIXES = (".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".proto", ".sql", ".xml")
GENERIC_GRAPH_NAMES = {"main_graph", "torch_jit", "torch-jit-export", "graph", "tf2onnx", "model"}


def from_gguf(ctx: Context) -> Finding | None:
    readings = ctx.weights.by_format("gguf")
    if not readings:
        return None
    main = _gguf_main(ctx, readings)
    info = main[0].header
    base = info.base_models[0] if info.base_models else None
    base_name = (base.repo_url or base.name) if base else None
    common = {"license": info.license, "base_model": base_name}
    if info.general_type == "adapter" or info.adapter_type:
        fields = {
            **common,
            "peft_type": (info.adapter_type or "lora").upper(),
            "alpha": info.lora_alpha,
            "adapter_format": "gguf",
            "architecture": info.architecture,
            "model_family": info.architecture,
        }
        return Finding("adapter", fields, main, "gguf")
    tokenizer = TokenizerConfig(
        bos_token=info.bos_token,
        eos_token=info.eos_token,
        pad_token=info.padding_token,
        unk_token=info.unknown_token,
        chat_template=info.chat_template,
        chat_templates=info.chat_templates,
        tokenizer_model=info.tokenizer_model,
        vocab_size=info.vocab_size,
    )
    if info.general_type == "mmproj" or info.architecture == "clip":
        fields = {
            **common,
            "architecture": info.architecture,
            "model_family": info.architecture,
            "modalities": ["text", "image"],
            "quantization": info.quantization,
        }
        return Finding("multimodal", fields, main, "gguf")
    if info.pooling_type is not None:
        fields = {
            **common,
            "architecture": info.architecture,
            "model_family": info.architecture,
            "embedding_dim": info.embedding_length,
            "pooling": info.pooling_type,
            "max_seq_length": info.context_length,
            "vocab_size": info.vocab_size,
            "quantization": info.quantization,
            "task": "embed",
        }
        return Finding("embedding", fields, main, "gguf")
    fields = {
        **common,
        "task": "text-generation",
        "architecture": info.architecture,
        "model_family": info.architecture,
        "tokenizer": tokenizer,
        "context_length": info.context_length,
        "context_length_source": f"{info.architecture}.context_length" if info.context_length else None,
        "quantization": info.quantization,
        "vocab_size": info.vocab_size,
        "hidden_size": info.embedding_length,
        "num_layers": info.block_count,
        "num_heads": info.head_count,
        "num_kv_heads": info.head_count_kv,
        "expert_count": info.expert_count,
        "size_label": info.size_label,
    }
    return Finding("llm", fields, main, "gguf")


def _gguf_main(ctx: Context, readings: list[WeightReading]) -> list[WeightReading]:
    """Split files of one model together; among alternatives (one model in several
    quantizations), the first by name, with a warning naming the others."""
    first = readings[0]
    if first.header.split_count and first.header.split_count > 1:
        stem = re.sub(r"-\d{5}-of-\d{5}\.gguf$", "", first.path)
        return [r for r in readings if r.path.startswith(stem)]
    if len(readings) > 1:
        others = ", ".join(r.path for r in readings[1:4])
        ctx.warnings.append(f"{len(readings)} GGUF files; described: {first.path} (also: {others})")
    return [first]


def from_bare_weights(ctx: Context) -> Finding | None:
    """Weights without a config: what their tensor names and embedded metadata say."""
    candidates = [r for r in ctx.weights.readings if r.shapes or r.format == "safetensors"]
    if not candidates:
        return None
    main = pick_checkpoint(candidates)
    image = _image_metadata(main[0])
    evidence = tensor_evidence(main)
    if evidence is None and image is None:
        return None
    if evidence is None or (image is not None and evidence.model_type != "image"):
        model_type, facts, family, task = "image", {}, "stable-diffusion", "text-to-image"
    else:
        model_type, facts, family, task = evidence.model_type, dict(evidence.facts), evidence.family, evidence.task
        if evidence.architecture:
            facts.setdefault("architecture", evidence.architecture)
    fields: dict[str, Any] = {"model_family": family, "task": task, **facts}
    if model_type == "image" and image:
        fields.update({k: v for k, v in image.items() if v is not None or k not in fields})
    if model_type == "adapter":
        fields.setdefault("adapter_format", "peft")
    if model_type == "embedding" and hint_modality(ctx):
        fields["modality"] = hint_modality(ctx)
    layout = "single-file" if len(ctx.weights.readings) == 1 else layout_of(main)
    return Finding(model_type, fields, main, layout)


def _image_metadata(reading: WeightReading) -> dict[str, Any] | None:
    """kohya and ModelSpec metadata of a safetensors file, as ImageConfig fields."""
    if reading.format != "safetensors" or not reading.header.metadata:
        return None
    from modelyard.inspect.safetensors_metadata import base_family, is_adapter, read_kohya, read_modelspec

    metadata = reading.header.metadata
    kohya, spec = read_kohya(metadata), read_modelspec(metadata)
    if kohya is None and spec is None:
        return None
    fields: dict[str, Any] = {"base_model": base_family(kohya, spec)}
    if spec is not None:
        fields.update(
            architecture=spec.architecture,
            resolution=spec.resolution,
            license=spec.license,
            tags=list(spec.tags),
            trigger_words=[spec.trigger_phrase] if spec.trigger_phrase else [],
            prediction_type=spec.prediction_type,
            clip_skip=spec.encoder_layer,
        )
        if is_adapter(spec):
            fields["checkpoint_type"] = "embedding" if "textual-inversion" in (spec.architecture or "") else "lora"
    if kohya is not None:
        fields["checkpoint_type"] = "lora"
        fields["network_module"] = kohya.network_module
        fields["network_dim"] = kohya.network_dim
        fields["network_alpha"] = kohya.network_alpha
        fields["resolution"] = fields.get("resolution") or kohya.resolution
        fields["clip_skip"] = fields.get("clip_skip") or kohya.clip_skip
        fields["trigger_words"] = fields.get("trigger_words") or list(kohya.trigger_words)
        fields["training"] = _kohya_training(kohya)
        fields["warnings"] = list(kohya.warnings)
    if spec is not None:
        fields.setdefault("warnings", []).extend(spec.warnings)
    return fields


def _kohya_training(kohya: Any) -> dict[str, Any]:
    """The kohya training facts worth keeping (all JSON values)."""
    facts = {
        "base_model_version": kohya.base_model_version,
        "epochs": kohya.epochs,
        "steps": kohya.steps,
        "learning_rate": kohya.learning_rate,
        "output_name": kohya.output_name,
        "sd_model_name": kohya.sd_model_name,
        "sd_model_hash": kohya.sd_model_hash,
        "dataset_dirs": list(kohya.dataset_dirs),
        "training_comment": kohya.training_comment,
        "network_args": dict(kohya.network_args),
    }
    return {key: value for key, value in facts.items() if value not in (None, [], {})}


def from_onnx(ctx: Context) -> Finding | None:
    readings = ctx.weights.by_format("onnx")
    if not readings:
        return None
    info = readings[0].header
    input_names = {value.name for value in info.inputs}
    hinted = hinted_type(ctx.hints)
    if hinted is not None:
        model_type, task = hinted.model_type, hinted.task
    elif input_names & {"input_ids", "attention_mask"}:
        embed = any(o.name in ("sentence_embedding", "pooler_output", "embeddings") for o in info.outputs)
        model_type, task = ("embedding", "embed") if embed else ("llm", None)
    elif input_names & {"input_values", "input_features"}:
        model_type, task = "audio", None
    elif input_names & {"pixel_values", "images", "image"} or any(v.shape and len(v.shape) == 4 for v in info.inputs):
        model_type, task = "vision", None
    else:
        return Finding(
            "unknown",
            {"reason": "an ONNX graph whose inputs do not say what it is", "task": None},
            readings[:1],
            "single-file",
        )
    # Exporters name graphs generically (main_graph, torch_jit): such a name says nothing.
    named = info.graph_name if info.graph_name and info.graph_name not in GENERIC_GRAPH_NAMES else None
    fields = {"task": task, "architecture": named}
    return Finding(model_type, fields, readings[:1], "single-file" if len(readings) == 1 else "files")


def from_hints(ctx: Context) -> Finding | None:
    """Weights that say nothing about themselves, typed by the registration's fields and name."""
    if not ctx.weights.readings:
        return None
    hinted = hinted_type(ctx.hints)
    candidates = [r for r in ctx.weights.readings if r.shapes] or ctx.weights.readings
    main = pick_checkpoint(candidates)
    if hinted is None:
        return None
    fields: dict[str, Any] = {"task": hinted.task, "model_family": hinted.family}
    if hinted.modality and hinted.model_type == "embedding":
        fields["modality"] = hinted.modality
    if hinted.model_type == "policy":
        fields.update(_policy_shapes(main[0].shapes))
    if hinted.model_type == "multimodal":
        fields["modalities"] = []
    return Finding(hinted.model_type, fields, main, layout_of(main))


def _policy_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """An MLP policy's input and output widths: the first and last 2-D weight."""
    matrices = [shape for name, shape in shapes.items() if name.endswith("weight") and len(shape) == 2]
    if not matrices:
        return {"framework": "pytorch"}
    return {"framework": "pytorch", "observation_dim": matrices[0][1], "action_dim": matrices[-1][0]}


def from_configuration(ctx: Context) -> Finding | None:
    if ctx.weights.readings:
        return None
    documents = [p for p in ctx.paths if p.lower().endswith(CONFIG_DOCUMENT_SUFFIXES) and p != "artifact_manifest.json"]
    if not documents:
        return None
    formats = sorted({posixpath.splitext(p)[1].lstrip(".").lower().replace("yml", "yaml") for p in documents})
    fields = {
        "kind": config_kind(ctx.hints) or "configuration",
        "documents": documents[:200],
        "document_formats": formats,
        "task": None,
    }
    return Finding("config", fields, [], "files")


def unknown_model(ctx: Context) -> Finding:
    if ctx.weights.readings:
        main = pick_checkpoint(ctx.weights.readings)
        reason = "weights whose names, metadata and registration fields do not say what model they are"
        return Finding("unknown", {"reason": reason}, main, layout_of(main))
    return Finding("unknown", {"reason": "no model weights and no configuration documents"}, [], "files")
