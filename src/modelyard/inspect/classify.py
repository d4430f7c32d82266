"""Turn what an artifact's files say into one typed configuration (seed 002).

Evidence is taken in order of how much it says, and the first kind that applies decides the type:
an adapter_config.json (PEFT adapter), a model_index.json (diffusers pipeline), a modules.json
(sentence-transformers), a config.json (Hugging Face model), GGUF metadata, the tensor names of
bare weights (single-file Stable Diffusion, torchvision detectors, RL policies, ...), an ONNX
graph, and last the registration's own hints (component, task, node type, name). An artifact
with no weights at all is a configuration artifact when it holds configuration documents.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.families import model_type_of, task_of
from modelyard.inspect.hints import Hints, config_kind, hinted_type
from modelyard.inspect.tree import ModelTree, join
from modelyard.inspect.weights import WeightReading, WeightsReport
from modelyard.modelconfig import (
    CONFIG_CLASSES,
    BaseModelConfig,
    TokenizerConfig,
    VisionTower,
)

T = TypeVar("T")
MAX_LISTED_FILES = 2000
MAX_LISTED_WEIGHTS = 500
MARKERS = ("adapter_config.json", "model_index.json", "modules.json", "config.json")
CONFIG_DOCUMENT_SUFFIXES = (".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".proto", ".sql", ".xml")
_GENERIC_GRAPH_NAMES = {"main_graph", "torch_jit", "torch-jit-export", "graph", "tf2onnx", "model"}
_CHECKPOINT_NAME = re.compile(
    r"^(best|latest|last|final|epoch[_-]?\d+|checkpoint[_-]?\d+|step[_-]?\d+|ckpt[_-]?\d+)(\b|_|\.|-)"
)


@dataclass
class Finding:
    """What one builder found: the class, its type-specific fields, and the weights it describes."""

    model_type: str
    fields: dict[str, Any]
    main: list[WeightReading]
    layout: str


@dataclass
class Context:
    tree: ModelTree
    paths: list[str]
    weights: WeightsReport
    hints: Hints
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pathset = set(self.paths)

    @contextmanager
    def open(self, path: str) -> Iterator[ByteSource]:
        if path not in self.sources:
            self.sources.append(path)
        with self.tree.open(path) as source:
            yield source

    def read(self, path: str, reader: Callable[[ByteSource], T]) -> T:
        with self.open(path) as source:
            return reader(source)

    def has(self, path: str) -> bool:
        return path in self.pathset


def classify(tree: ModelTree, weights: WeightsReport, hints: Hints) -> BaseModelConfig:
    ctx = Context(tree, sorted(tree.sizes), weights, hints, warnings=list(weights.warnings))
    ctx.sources.extend(r.path for r in weights.readings)
    root = model_root(ctx.paths)
    finding = (
        _peft(ctx, root)
        or _diffusers(ctx, root)
        or _sentence_transformers(ctx, root)
        or _huggingface(ctx, root)
        or _gguf(ctx)
        or _bare_weights(ctx)
        or _onnx(ctx)
        or _hinted(ctx)
        or _configuration(ctx)
        or _unknown(ctx)
    )
    return _finish(ctx, finding, root)


def model_root(paths: list[str]) -> str:
    """The folder of the shallowest marker file (config.json, ...): where a model folder starts."""
    marked = [p for p in paths if p.rpartition("/")[2] in MARKERS]
    if not marked:
        return ""
    shallowest = min(marked, key=lambda p: (p.count("/"), MARKERS.index(posixpath.basename(p)), p))
    return posixpath.dirname(shallowest)


# -- builders, most specific evidence first ----------------------------------------------------


def _peft(ctx: Context, root: str) -> Finding | None:
    from modelyard.inspect.peft import ADAPTER_WEIGHTS, check_lora_tensors, read_adapter_config

    path = join(root, "adapter_config.json")
    if not ctx.has(path):
        return None
    adapter = ctx.read(path, read_adapter_config)
    ctx.warnings.extend(adapter.warnings)
    main = [r for r in ctx.weights.readings if r.path in {join(root, name) for name in ADAPTER_WEIGHTS}]
    if not main:
        ctx.warnings.append(f"{path}: no {' or '.join(ADAPTER_WEIGHTS)} beside it")
    for reading in main:
        ctx.warnings.extend(check_lora_tensors(adapter, reading.shapes, reading.path))
    fields = {
        "task": adapter.task_type.lower().replace("_", "-") if adapter.task_type else None,
        "peft_type": adapter.peft_type,
        "base_model": adapter.base_model,
        "base_model_revision": adapter.revision,
        "r": adapter.r,
        "alpha": adapter.alpha,
        "target_modules": adapter.target_modules,
        "task_type": adapter.task_type,
        "dropout": adapter.dropout,
        "bias": adapter.bias,
        "use_dora": adapter.use_dora,
        "use_rslora": adapter.use_rslora,
        "modules_to_save": adapter.modules_to_save,
        "rank_pattern": adapter.rank_pattern,
        "adapter_format": "peft",
        "peft_version": adapter.peft_version,
    }
    return Finding("adapter", fields, main, "peft")


def _diffusers(ctx: Context, root: str) -> Finding | None:
    from modelyard.inspect.diffusers import read_pipeline

    if not ctx.has(join(root, "model_index.json")):
        return None
    ctx.sources.append(join(root, "model_index.json"))
    pipeline = read_pipeline(root, ctx.pathset, ctx.open)
    main = _without_variants([r for r in ctx.weights.readings if r.path.startswith(root)])
    common = {
        "task": pipeline.task,
        "architecture": pipeline.pipeline_class,
        "pipeline_class": pipeline.pipeline_class,
        "base_model": pipeline.base_model,
    }
    if pipeline.is_video:
        return Finding("video", {**common, "model_family": "diffusers"}, main, "diffusers")
    fields = {
        **common,
        "model_family": "stable-diffusion" if "Stable" in pipeline.pipeline_class else pipeline.pipeline_class,
        "checkpoint_type": "checkpoint",
        "variant": pipeline.variant,
        "prediction_type": pipeline.prediction_type,
        "components": {k: v for k, v in pipeline.components.items() if v},
        "vae": pipeline.components.get("vae") or None,
        "resolution": (pipeline.resolution, pipeline.resolution) if pipeline.resolution else None,
    }
    return Finding("image", fields, main, "diffusers")


def _sentence_transformers(ctx: Context, root: str) -> Finding | None:
    from modelyard.inspect.sentence_transformers import read_sentence_transformer

    if not ctx.has(join(root, "modules.json")):
        return None
    ctx.sources.append(join(root, "modules.json"))
    st = read_sentence_transformer(root, ctx.pathset, ctx.open)
    fields: dict[str, Any] = {
        "task": "embed",
        "embedding_dim": st.embedding_dim,
        "pooling": st.pooling,
        "normalize": st.normalize,
        "max_seq_length": st.max_seq_length,
        "similarity_fn": st.similarity_fn,
        "prompts": st.prompts,
    }
    config_path = join(root, "config.json")
    if ctx.has(config_path):
        from modelyard.inspect.huggingface import read_model_config

        config = ctx.read(config_path, read_model_config)
        fields.update(architecture=config.architecture, model_family=config.model_type, vocab_size=config.vocab_size)
        fields["embedding_dim"] = fields["embedding_dim"] or config.hidden_size
    return Finding("embedding", fields, _root_weights(ctx, root), "sentence-transformers")


def _huggingface(ctx: Context, root: str) -> Finding | None:
    from modelyard.inspect.huggingface import read_model_config

    path = join(root, "config.json")
    if not ctx.has(path):
        return None
    config = ctx.read(path, read_model_config)
    if not config.architectures and config.model_type is None:
        return None  # a config.json of something else (a training run's own settings)
    family, architecture = config.model_type, config.architecture
    model_type = model_type_of(family, architecture, config.vision_config is not None, config.text_config is not None)
    main = _root_weights(ctx, root)
    if model_type is None:
        evidence = _tensor_evidence(main)
        model_type = evidence.model_type if evidence else (_hinted_model_type(ctx) or "unknown")
    task = task_of(architecture, family)
    builders: dict[str, Callable[[Context, str, Any], dict[str, Any]]] = {
        "llm": _llm_fields,
        "embedding": _embedding_fields,
        "vision": _vision_fields,
        "audio": _audio_fields,
        "video": _video_fields,
        "multimodal": _multimodal_fields,
        "policy": _policy_fields,
    }
    fields = builders[model_type](ctx, root, config) if model_type in builders else {}
    fields.setdefault("architecture", architecture)
    fields.setdefault("model_family", family)
    if model_type == "unknown":
        fields = {"reason": f"config.json names {architecture or family}, which modelyard does not know"}
    fields["task"] = task
    return Finding(model_type, fields, main, "huggingface")


def _llm_fields(ctx: Context, root: str, config: Any) -> dict[str, Any]:
    tokenizer = _tokenizer(ctx, root, config.vocab_size)
    fields: dict[str, Any] = {
        "tokenizer": tokenizer,
        "context_length": config.context_length or tokenizer.model_max_length,
        "context_length_source": config.context_length_source
        or ("tokenizer_config.json model_max_length" if tokenizer.model_max_length else None),
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads,
        "expert_count": config.expert_count,
        "rope_scaling": config.rope_scaling,
        "quantization_method": config.quantization_method,
        "quantization": _hf_quantization(config),
        "custom_code": config.custom_code,
        "transformers_version": config.transformers_version,
    }
    fields.update(_generation(ctx, root))
    return fields


def _hf_quantization(config: Any) -> str | None:
    if config.quantization_method is None:
        return None
    bits = f"-{config.quantization_bits}bit" if config.quantization_bits else ""
    return f"{config.quantization_method}{bits}"


def _generation(ctx: Context, root: str) -> dict[str, Any]:
    from modelyard.inspect.huggingface import read_generation_config

    path = join(root, "generation_config.json")
    if not ctx.has(path):
        return {}
    defaults = ctx.read(path, read_generation_config)
    return {
        "default_temperature": defaults.temperature,
        "default_top_p": defaults.top_p,
        "generation": defaults.values,
    }


def _tokenizer(ctx: Context, root: str, vocab_size: int | None) -> TokenizerConfig:
    from modelyard.inspect.huggingface import (
        read_chat_template_json,
        read_special_tokens,
        read_template_file,
        read_tokenizer_config,
        template_files,
    )

    tokens: dict[str, str] = {}
    templates: dict[str, str] = {}
    tokenizer_class, max_length = None, None
    if ctx.has(join(root, "special_tokens_map.json")):
        tokens.update(ctx.read(join(root, "special_tokens_map.json"), read_special_tokens))
    if ctx.has(join(root, "tokenizer_config.json")):
        found, templates, tokenizer_class, max_length = ctx.read(
            join(root, "tokenizer_config.json"), read_tokenizer_config
        )
        tokens.update(found)
    if "default" not in templates and ctx.has(join(root, "chat_template.json")):
        template = ctx.read(join(root, "chat_template.json"), read_chat_template_json)
        if template:
            templates["default"] = template
    for name, path in template_files(ctx.paths, root).items():
        templates[name] = ctx.read(path, read_template_file)  # the .jinja file wins over the config's copy
    default = templates.pop("default", None)
    return TokenizerConfig(
        bos_token=tokens.get("bos_token"),
        eos_token=tokens.get("eos_token"),
        pad_token=tokens.get("pad_token"),
        unk_token=tokens.get("unk_token"),
        chat_template=default,
        chat_templates=templates,
        tokenizer_class=tokenizer_class,
        vocab_size=vocab_size,
        model_max_length=max_length,
    )


def _preprocessor(ctx: Context, root: str) -> Any:
    from modelyard.inspect.huggingface import read_preprocessor

    path = join(root, "preprocessor_config.json")
    return ctx.read(path, read_preprocessor) if ctx.has(path) else None


def _embedding_fields(ctx: Context, root: str, config: Any) -> dict[str, Any]:
    return {
        "embedding_dim": config.hidden_size,
        "max_seq_length": config.context_length,
        "vocab_size": config.vocab_size,
        "pooling": None,
    }


def _vision_fields(ctx: Context, root: str, config: Any) -> dict[str, Any]:
    pre = _preprocessor(ctx, root)
    sizes = config.raw.get("hidden_sizes")
    width = config.hidden_size or (
        sizes[-1] if isinstance(sizes, list) and sizes and isinstance(sizes[-1], int) else None
    )
    return {
        "image_size": config.image_size or (pre.image_size if pre else None),
        "patch_size": config.patch_size,
        "num_channels": config.num_channels,
        "embedding_dim": width,
        "num_layers": config.num_layers,
        "num_labels": config.num_labels,
        "image_processor": pre.processor_class if pre else None,
        "image_mean": pre.image_mean if pre else None,
        "image_std": pre.image_std if pre else None,
    }


def _audio_fields(ctx: Context, root: str, config: Any) -> dict[str, Any]:
    pre = _preprocessor(ctx, root)
    return {
        "sample_rate": pre.sampling_rate if pre else None,
        "channels": 1 if pre and pre.sampling_rate else None,  # every transformers audio extractor is mono
        "feature_extractor": pre.processor_class if pre else None,
        "feature_size": pre.feature_size if pre else None,
        "chunk_length": pre.chunk_length if pre else None,
        "do_normalize": pre.do_normalize if pre else None,
        "num_mel_bins": config.num_mel_bins,
        "embedding_dim": config.hidden_size,
        "num_layers": config.num_layers,
        "max_source_positions": config.max_source_positions,
        "max_target_positions": config.max_target_positions,
        "vocab_size": config.vocab_size,
    }


def _video_fields(ctx: Context, root: str, config: Any) -> dict[str, Any]:
    frames = config.raw.get("num_frames")
    return {
        "num_frames": frames if isinstance(frames, int) and not isinstance(frames, bool) and frames > 0 else None,
        "image_size": config.image_size,
    }


def _multimodal_fields(ctx: Context, root: str, config: Any) -> dict[str, Any]:
    text, vision = config.text_config, config.vision_config
    modalities = ["text"] + (["image"] if vision is not None or "clip" in (config.model_type or "") else [])
    if config.audio_config is not None:
        modalities.append("audio")
    tower = None
    if vision is not None:
        tower = VisionTower(
            model_family=vision.model_type,
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            hidden_size=vision.hidden_size,
        )
    return {
        "modalities": modalities,
        "text_family": text.model_type if text else None,
        "vision": tower,
        "tokenizer": _tokenizer(ctx, root, text.vocab_size if text else config.vocab_size),
        "context_length": (text.context_length if text else None) or config.context_length,
        "embedding_dim": config.projection_dim,
    }


def _policy_fields(ctx: Context, root: str, config: Any) -> dict[str, Any]:
    state, action = config.raw.get("state_dim"), config.raw.get("act_dim")
    return {
        "algorithm": "decision-transformer" if config.model_type == "decision_transformer" else None,
        "framework": "transformers",
        "observation_dim": state if isinstance(state, int) and not isinstance(state, bool) else None,
        "action_dim": action if isinstance(action, int) and not isinstance(action, bool) else None,
    }


def _gguf(ctx: Context) -> Finding | None:
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


def _bare_weights(ctx: Context) -> Finding | None:
    """Weights without a config: what their tensor names and embedded metadata say."""
    candidates = [r for r in ctx.weights.readings if r.shapes or r.format == "safetensors"]
    if not candidates:
        return None
    main = _pick_checkpoint(candidates)
    image = _image_metadata(main[0])
    evidence = _tensor_evidence(main)
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
    if model_type == "embedding" and _hint_modality(ctx):
        fields["modality"] = _hint_modality(ctx)
    layout = "single-file" if len(ctx.weights.readings) == 1 else _layout_of(main)
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


def _onnx(ctx: Context) -> Finding | None:
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
    named = info.graph_name if info.graph_name and info.graph_name not in _GENERIC_GRAPH_NAMES else None
    fields = {"task": task, "architecture": named}
    return Finding(model_type, fields, readings[:1], "single-file" if len(readings) == 1 else "files")


def _hinted(ctx: Context) -> Finding | None:
    """Weights that say nothing about themselves, typed by the registration's fields and name."""
    if not ctx.weights.readings:
        return None
    hinted = hinted_type(ctx.hints)
    candidates = [r for r in ctx.weights.readings if r.shapes] or ctx.weights.readings
    main = _pick_checkpoint(candidates)
    if hinted is None:
        return None
    fields: dict[str, Any] = {"task": hinted.task, "model_family": hinted.family}
    if hinted.modality and hinted.model_type == "embedding":
        fields["modality"] = hinted.modality
    if hinted.model_type == "policy":
        fields.update(_policy_shapes(main[0].shapes))
    if hinted.model_type == "multimodal":
        fields["modalities"] = []
    return Finding(hinted.model_type, fields, main, _layout_of(main))


def _policy_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """An MLP policy's input and output widths: the first and last 2-D weight."""
    matrices = [shape for name, shape in shapes.items() if name.endswith("weight") and len(shape) == 2]
    if not matrices:
        return {"framework": "pytorch"}
    return {"framework": "pytorch", "observation_dim": matrices[0][1], "action_dim": matrices[-1][0]}


def _configuration(ctx: Context) -> Finding | None:
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


def _unknown(ctx: Context) -> Finding:
    if ctx.weights.readings:
        main = _pick_checkpoint(ctx.weights.readings)
        reason = "weights whose names, metadata and registration fields do not say what model they are"
        return Finding("unknown", {"reason": reason}, main, _layout_of(main))
    return Finding("unknown", {"reason": "no model weights and no configuration documents"}, [], "files")


# -- helpers ---------------------------------------------------------------------------------


def _tensor_evidence(main: list[WeightReading]) -> Any:
    from modelyard.inspect.tensor_names import recognise

    shapes: dict[str, tuple[int, ...]] = {}
    for reading in main:
        shapes.update(reading.shapes)
    return recognise(shapes)


def _hinted_model_type(ctx: Context) -> str | None:
    hinted = hinted_type(ctx.hints)
    return hinted.model_type if hinted else None


def _hint_modality(ctx: Context) -> str | None:
    hinted = hinted_type(ctx.hints)
    return hinted.modality if hinted else None


def _root_weights(ctx: Context, root: str) -> list[WeightReading]:
    """The weights of a model folder: the files directly in it (shards included), preferring
    safetensors over PyTorch .bin copies of the same weights."""
    direct = [r for r in ctx.weights.readings if posixpath.dirname(r.path) == root and r.shapes]
    safetensors = [r for r in direct if r.format == "safetensors"]
    return _without_variants(safetensors or direct)


def _without_variants(readings: list[WeightReading]) -> list[WeightReading]:
    """diffusers keeps `x.fp16.safetensors` beside `x.safetensors`: count each weight once."""
    names = {r.path for r in readings}
    kept = []
    for reading in readings:
        base = re.sub(r"\.(fp16|bf16|fp32|ema|non_ema)(\.[a-z]+)$", r"\2", reading.path)
        if base != reading.path and base in names:
            continue
        kept.append(reading)
    return kept


def _pick_checkpoint(readings: list[WeightReading]) -> list[WeightReading]:
    """Seed 003's run layout keeps best, latest and epoch_N checkpoints: describe one of them
    (best, then latest, then the highest epoch or step), not their sum."""
    readings = _one_format_each(readings)
    named = {posixpath.basename(r.path).lower(): r for r in readings}
    checkpoints = [r for r in readings if _CHECKPOINT_NAME.match(posixpath.basename(r.path).lower())]
    if len(checkpoints) < 2 and len(readings) > 1 and not checkpoints:
        return readings  # several files of one model (shards, components)
    for preferred in ("best", "latest", "last", "final"):
        for name, reading in sorted(named.items()):
            if name.startswith(preferred) and reading in checkpoints:
                return [reading]
    if checkpoints:
        return [max(checkpoints, key=lambda r: [int(n) for n in re.findall(r"\d+", posixpath.basename(r.path))] or [0])]
    return readings[:1]


def _one_format_each(readings: list[WeightReading]) -> list[WeightReading]:
    """`model.pt` beside `model.safetensors` holds the same weights (a promoted version keeps
    both): count them once, preferring safetensors."""
    by_stem: dict[str, WeightReading] = {}
    for reading in readings:
        stem = reading.path.rsplit(".", 1)[0]
        kept = by_stem.get(stem)
        if kept is None or (reading.format == "safetensors" and kept.format != "safetensors"):
            by_stem[stem] = reading
    chosen = set(id(r) for r in by_stem.values())
    return [r for r in readings if id(r) in chosen]


def _layout_of(main: list[WeightReading]) -> str:
    if any(_CHECKPOINT_NAME.match(posixpath.basename(r.path).lower()) for r in main):
        return "run"
    return "single-file" if len(main) == 1 else "files"


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
