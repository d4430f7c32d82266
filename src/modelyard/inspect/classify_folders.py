"""Builders for model folders, most specific first: PEFT adapters, diffusers pipelines,
sentence-transformers, Hugging Face models (see `modelyard.inspect.classify`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelyard.inspect.evidence import (
    Context,
    Finding,
    hinted_model_type,
    root_weights,
    tensor_evidence,
    without_variants,
)
from modelyard.inspect.families import model_type_of, task_of
from modelyard.inspect.tree import join
from modelyard.modelconfig import (
    TokenizerConfig,
    VisionTower,
)

# -- builders, most specific evidence first ----------------------------------------------------


def from_peft(ctx: Context, root: str) -> Finding | None:
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


def from_diffusers(ctx: Context, root: str) -> Finding | None:
    from modelyard.inspect.diffusers import read_pipeline

    if not ctx.has(join(root, "model_index.json")):
        return None
    ctx.sources.append(join(root, "model_index.json"))
    pipeline = read_pipeline(root, ctx.pathset, ctx.open)
    main = without_variants([r for r in ctx.weights.readings if r.path.startswith(root)])
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


def from_sentence_transformers(ctx: Context, root: str) -> Finding | None:
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
    return Finding("embedding", fields, root_weights(ctx, root), "sentence-transformers")


def from_huggingface(ctx: Context, root: str) -> Finding | None:
    from modelyard.inspect.huggingface import read_model_config

    path = join(root, "config.json")
    if not ctx.has(path):
        return None
    config = ctx.read(path, read_model_config)
    if not config.architectures and config.model_type is None:
        return None  # a config.json of something else (a training run's own settings)
    family, architecture = config.model_type, config.architecture
    model_type = model_type_of(family, architecture, config.vision_config is not None, config.text_config is not None)
    main = root_weights(ctx, root)
    if model_type is None:
        evidence = tensor_evidence(main)
        model_type = evidence.model_type if evidence else (hinted_model_type(ctx) or "unknown")
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
