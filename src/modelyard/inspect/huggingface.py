"""Hugging Face folder side files: config.json, the tokenizer files, generation defaults, the
preprocessor and the README model card (model-formats.md sections 3 and 11).

Each reader takes an opened `ByteSource` and returns a small frozen record of the facts the
catalog uses. Wrong types are errors naming the file and key; values that are merely unusual
(a context length of 10^30 meaning "unset") become None.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import InvalidInputError, InvalidModelFileError
from modelyard.inspect._bounded import ByteSource, read_json_object, read_text
from modelyard.inspect._fields import (
    int_or_pair,
    opt_bool,
    opt_dict,
    opt_float,
    opt_int,
    opt_str,
    str_list,
)

# Context length has many spellings (each model's attribute_map); the first present wins.
CONTEXT_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "max_sequence_length",
    "seq_length",
    "context_length",
    "n_ctx",
    "model_max_length",
)
HIDDEN_SIZE_KEYS = ("hidden_size", "d_model", "n_embd", "dim", "embed_dim")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_config.json's model_max_length when nobody set it (transformers' VERY_LARGE_INTEGER).
_UNSET_MAX_LENGTH = 10**20


@dataclass(frozen=True)
class ModelConfigFile:
    """config.json: the architecture and its dimensions."""

    architectures: tuple[str, ...]
    model_type: str | None
    dtype: str | None
    transformers_version: str | None
    custom_code: bool
    quantization_method: str | None
    quantization_bits: int | None
    context_length: int | None
    context_length_source: str | None
    vocab_size: int | None
    hidden_size: int | None
    num_layers: int | None
    num_heads: int | None
    num_kv_heads: int | None
    expert_count: int | None
    rope_scaling: dict[str, Any] | None
    num_labels: int | None
    image_size: int | tuple[int, int] | None
    patch_size: int | None
    num_channels: int | None
    num_mel_bins: int | None
    max_source_positions: int | None
    max_target_positions: int | None
    projection_dim: int | None
    text_config: ModelConfigFile | None
    vision_config: ModelConfigFile | None
    audio_config: ModelConfigFile | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def architecture(self) -> str | None:
        return self.architectures[0] if self.architectures else None


def read_model_config(source: ByteSource) -> ModelConfigFile:
    return _model_config(read_json_object(source), source.name, depth=0)


def _model_config(raw: dict[str, Any], name: str, depth: int) -> ModelConfigFile:
    architectures = _architectures(raw, name)
    quantization = opt_dict(raw, "quantization_config", name) or {}
    context_length, context_source = _first_int(raw, CONTEXT_LENGTH_KEYS, name)

    def nested(key: str) -> ModelConfigFile | None:
        sub = opt_dict(raw, key, name)
        if sub is None or depth > 1:
            return None
        return _model_config(sub, f"{name} ({key})", depth + 1)

    dtype = raw.get("torch_dtype", raw.get("dtype"))
    rope = opt_dict(raw, "rope_scaling", name)
    return ModelConfigFile(
        architectures=tuple(architectures),
        model_type=opt_str(raw, "model_type", name),
        dtype=dtype if isinstance(dtype, str) else None,  # may be a per-sub-config dict: no single dtype
        transformers_version=opt_str(raw, "transformers_version", name),
        custom_code=isinstance(raw.get("auto_map"), dict) and bool(raw.get("auto_map")),
        quantization_method=opt_str(quantization, "quant_method", name),
        quantization_bits=opt_int(quantization, "bits", name, maximum=64),
        context_length=context_length,
        context_length_source=context_source,
        vocab_size=opt_int(raw, "vocab_size", name),
        hidden_size=_first_int(raw, HIDDEN_SIZE_KEYS, name)[0],
        num_layers=_first_int(raw, LAYER_KEYS, name)[0],
        num_heads=_first_int(raw, HEAD_KEYS, name)[0],
        num_kv_heads=_first_int(raw, KV_HEAD_KEYS, name)[0],
        expert_count=_first_int(raw, ("num_local_experts", "num_experts", "n_routed_experts"), name)[0],
        rope_scaling=rope,
        num_labels=_num_labels(raw, name),
        image_size=int_or_pair(raw, "image_size", name),
        patch_size=_patch_size(raw, name),
        num_channels=opt_int(raw, "num_channels", name, maximum=64),
        num_mel_bins=opt_int(raw, "num_mel_bins", name, maximum=4096),
        max_source_positions=opt_int(raw, "max_source_positions", name),
        max_target_positions=opt_int(raw, "max_target_positions", name),
        projection_dim=opt_int(raw, "projection_dim", name),
        text_config=nested("text_config"),
        vision_config=nested("vision_config"),
        audio_config=nested("audio_config"),
        raw=raw,
    )


def _architectures(raw: dict[str, Any], name: str) -> list[str]:
    """A list of class names (transformers writes a list even for one)."""
    value = raw.get("architectures")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidModelFileError("expected a list of class names", path=name, field="architectures")
    return value


def _first_int(raw: dict[str, Any], keys: tuple[str, ...], name: str) -> tuple[int | None, str | None]:
    for key in keys:
        if key == "model_max_length" and isinstance(raw.get(key), int) and raw[key] >= _UNSET_MAX_LENGTH:
            continue
        value = opt_int(raw, key, name)
        if value is not None:
            return value, key
    return None, None


def _patch_size(raw: dict[str, Any], name: str) -> int | None:
    value = int_or_pair(raw, "patch_size", name)
    return value[0] if isinstance(value, tuple) else value


def _num_labels(raw: dict[str, Any], name: str) -> int | None:
    labels = raw.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    return opt_int(raw, "num_labels", name)


@dataclass(frozen=True)
class TokenizerFacts:
    """tokenizer_config.json, special_tokens_map.json and chat template files, merged."""

    tokens: dict[str, str]  # bos_token -> "<s>", ...
    chat_template: str | None
    chat_templates: dict[str, str]
    tokenizer_class: str | None
    model_max_length: int | None


def read_special_tokens(source: ByteSource) -> dict[str, str]:
    """The named special tokens of a tokenizer_config.json or special_tokens_map.json."""
    raw = read_json_object(source)
    return {key: token for key in SPECIAL_TOKENS if (token := _token(raw, key, source.name)) is not None}


def _token(raw: dict[str, Any], key: str, name: str) -> str | None:
    """A special token: a string, null, or an AddedToken object whose `content` is the token."""
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        content = value.get("content")
        if isinstance(content, str):
            return content
    raise InvalidModelFileError(
        "expected a string, null or an AddedToken object with a 'content'", path=name, field=key
    )


def read_tokenizer_config(source: ByteSource) -> tuple[dict[str, str], dict[str, str], str | None, int | None]:
    """(special tokens, chat templates by name with 'default' first, tokenizer class, max length)."""
    raw = read_json_object(source)
    tokens = {key: token for key in SPECIAL_TOKENS if (token := _token(raw, key, source.name)) is not None}
    templates = _chat_templates(raw.get("chat_template"), source.name)
    max_length = raw.get("model_max_length")
    usable_max = max_length if isinstance(max_length, int) and 0 < max_length < _UNSET_MAX_LENGTH else None
    return tokens, templates, opt_str(raw, "tokenizer_class", source.name), usable_max


def _chat_templates(value: Any, name: str) -> dict[str, str]:
    """A chat template is a string, or a list of {"name", "template"} objects."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"default": value}
    if isinstance(value, list):
        templates: dict[str, str] = {}
        for index, entry in enumerate(value):
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
                raise InvalidModelFileError(
                    f"entry {index} is not a {{'name', 'template'}} object", path=name, field="chat_template"
                )
            template = entry.get("template")
            if not isinstance(template, str):
                raise InvalidModelFileError(
                    f"template {entry['name']!r} is not a string", path=name, field="chat_template"
                )
            check_template_name(entry["name"], name)
            templates[entry["name"]] = template
        return dict(sorted(templates.items(), key=lambda item: item[0] != "default"))
    raise InvalidModelFileError("expected a string or a list of named templates", path=name, field="chat_template")


def check_template_name(template_name: str, source: str) -> None:
    """Template names become file names (additional_chat_templates/<name>.jinja): no paths."""
    if not template_name or "/" in template_name or "\\" in template_name or template_name in (".", ".."):
        raise InvalidModelFileError(f"chat template name {template_name!r} is not a plain name", path=source)


def read_chat_template_json(source: ByteSource) -> str | None:
    """chat_template.json (processors): {"chat_template": "..."}."""
    raw = read_json_object(source)
    return opt_str(raw, "chat_template", source.name)


def read_template_file(source: ByteSource) -> str:
    return read_text(source)


@dataclass(frozen=True)
class GenerationDefaults:
    temperature: float | None
    top_p: float | None
    values: dict[str, Any]  # top_k, max_new_tokens, repetition_penalty, do_sample, ... as given
    eos_token_ids: tuple[int, ...]


_GENERATION_KEYS = ("top_k", "max_length", "max_new_tokens", "repetition_penalty", "do_sample", "num_beams")


def read_generation_config(source: ByteSource) -> GenerationDefaults:
    raw = read_json_object(source)
    name = source.name
    values: dict[str, Any] = {}
    for key in _GENERATION_KEYS:
        value = raw.get(key)
        if key == "do_sample":
            flag = opt_bool(raw, key, name)
            if flag is not None:
                values[key] = flag
        elif key == "repetition_penalty":
            number = opt_float(raw, key, name)
            if number is not None:
                values[key] = number
        elif value is not None:
            values[key] = opt_int(raw, key, name)
    return GenerationDefaults(
        temperature=opt_float(raw, "temperature", name),
        top_p=opt_float(raw, "top_p", name),
        values=values,
        eos_token_ids=_token_ids(raw, "eos_token_id", name),
    )


def _token_ids(raw: dict[str, Any], key: str, name: str) -> tuple[int, ...]:
    """A token id: an int, or a list of ints (several end-of-sequence tokens)."""
    value = raw.get(key)
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in items):
        raise InvalidModelFileError("expected a token id or a list of token ids", path=name, field=key)
    return tuple(items)


@dataclass(frozen=True)
class Preprocessor:
    """preprocessor_config.json: an audio feature extractor or an image processor."""

    processor_class: str | None
    sampling_rate: int | None
    feature_size: int | None
    chunk_length: int | None
    do_normalize: bool | None
    image_size: int | tuple[int, int] | None
    image_mean: list[float] | None
    image_std: list[float] | None

    @property
    def is_audio(self) -> bool:
        return self.sampling_rate is not None


_SIZE_KEY_SETS = (
    {"height", "width"},
    {"shortest_edge"},
    {"shortest_edge", "longest_edge"},
    {"longest_edge"},
    {"max_height", "max_width"},
    {"min_pixels", "max_pixels"},
)


def read_preprocessor(source: ByteSource) -> Preprocessor:
    raw = read_json_object(source)
    name = source.name
    processor = (
        opt_str(raw, "feature_extractor_type", name)
        or opt_str(raw, "image_processor_type", name)
        or opt_str(raw, "processor_class", name)
    )
    mean = _float_list(raw, "image_mean", name)
    std = _float_list(raw, "image_std", name)
    if mean is not None and std is not None and len(mean) != len(std):
        raise InvalidModelFileError(
            f"image_mean has {len(mean)} values but image_std has {len(std)}", path=name, field="image_std"
        )
    return Preprocessor(
        processor_class=processor,
        sampling_rate=opt_int(raw, "sampling_rate", name, maximum=1_000_000),
        feature_size=opt_int(raw, "feature_size", name, maximum=100_000),
        chunk_length=opt_int(raw, "chunk_length", name, maximum=100_000),
        do_normalize=opt_bool(raw, "do_normalize", name),
        image_size=_image_size(raw, name),
        image_mean=mean,
        image_std=std,
    )


def _image_size(raw: dict[str, Any], name: str) -> int | tuple[int, int] | None:
    """`crop_size` wins over `size` (it is what the model sees); either an int or a dict."""
    for key in ("crop_size", "size"):
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            if set(value) not in _SIZE_KEY_SETS:
                raise InvalidModelFileError(f"unexpected size keys {sorted(value)}", path=name, field=key)
            height, width = opt_int(value, "height", name), opt_int(value, "width", name)
            if height is not None and width is not None:
                return height if height == width else (height, width)
            edge = opt_int(value, "shortest_edge", name)
            if edge is not None:
                return edge
            continue
        return int_or_pair(raw, key, name)
    return None


def _float_list(raw: dict[str, Any], key: str, name: str) -> list[float] | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise InvalidModelFileError("expected a list of numbers", path=name, field=key)
    return [float(v) for v in value]


@dataclass(frozen=True)
class ModelCard:
    """The YAML front matter of a README.md model card."""

    license: str | None
    base_models: tuple[str, ...]
    base_model_relation: str | None
    tags: tuple[str, ...]
    languages: tuple[str, ...]
    datasets: tuple[str, ...]
    pipeline_tag: str | None
    library_name: str | None


_MAX_FRONT_MATTER = 256 * 1024


def read_model_card(source: ByteSource) -> ModelCard | None:
    """The card's metadata, or None when the README has no front matter."""
    from modelyard.loaders import parse_yaml

    head = source.read(0, min(source.size, _MAX_FRONT_MATTER + 8), "the model card").decode("utf-8", "replace")
    head = head.removeprefix("\ufeff")
    if not head.startswith("---"):
        return None
    lines = head.split("\n")
    if lines[0].strip() != "---":
        return None
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        if source.size > _MAX_FRONT_MATTER:
            raise InvalidModelFileError(
                f"front matter longer than {_MAX_FRONT_MATTER} bytes", path=source.name
            ) from None
        raise InvalidModelFileError("front matter opened with '---' is never closed", path=source.name) from None
    try:
        data = parse_yaml("\n".join(lines[1:end]), source.name)
    except InvalidInputError as exc:
        raise InvalidModelFileError(exc.message, path=source.name) from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InvalidModelFileError("the front matter must be a YAML mapping", path=source.name)
    name = source.name
    return ModelCard(
        license=_card_license(data, name),
        base_models=tuple(str_list(data, "base_model", name)),
        base_model_relation=opt_str(data, "base_model_relation", name),
        tags=tuple(str_list(data, "tags", name)),
        languages=tuple(str_list(data, "language", name)),
        datasets=tuple(str_list(data, "datasets", name)),
        pipeline_tag=opt_str(data, "pipeline_tag", name),
        library_name=opt_str(data, "library_name", name),
    )


def _card_license(data: dict[str, Any], name: str) -> str | None:
    license_id = opt_str(data, "license", name)
    if license_id == "other":
        return opt_str(data, "license_name", name) or "other"
    return license_id


def template_files(paths: list[str], folder: str) -> dict[str, str]:
    """Chat template files in a folder: chat_template.jinja (the default) and named extras."""
    found: dict[str, str] = {}
    default = posixpath.join(folder, "chat_template.jinja") if folder else "chat_template.jinja"
    if default in paths:
        found["default"] = default
    extra_dir = posixpath.join(folder, "additional_chat_templates") if folder else "additional_chat_templates"
    for path in paths:
        if posixpath.dirname(path) == extra_dir and path.endswith(".jinja"):
            found[posixpath.basename(path)[: -len(".jinja")]] = path
    return found
