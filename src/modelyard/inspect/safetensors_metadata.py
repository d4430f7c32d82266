"""Typed readings of a safetensors `__metadata__` block (model-formats.md section 6).

Two conventions are read: the `ss_*` keys kohya-ss/sd-scripts writes into LoRAs (`read_kohya`)
and the `modelspec.*` keys of Stability AI's ModelSpec (`read_modelspec`). Their values are
untrusted strings written by many tools: `"None"` stands for a missing value, embedded JSON may be
broken, numbers may be anything. Nothing here raises on a bad value: it is left out and a warning
naming the key says why. `base_family` and `is_adapter` summarise both for the catalog.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.loaders import parse_json

KOHYA_PREFIX = "ss_"
MODELSPEC_PREFIX = "modelspec."
TRIGGER_WORD_LIMIT = 20
_NONE_STRINGS = frozenset({"", "None", "null"})
_RESOLUTION_PAIR = re.compile(r"^\(?\s*(\d{1,6})\s*(?:,\s*(\d{1,6})\s*)?\)?$")  # "512,512", "(512, 768)", "512"
_RESOLUTION_WXH = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")  # "1024x1024"
_SHA256_HEX = re.compile(r"^0x[0-9a-f]{64}$")

SD15, SD2, SDXL, SD3, FLUX = "SD 1.5", "SD 2", "SDXL", "SD3", "Flux"
# ModelSpec architecture ids by prefix (the part before any "/lora"-style suffix), most specific first.
_MODELSPEC_FAMILIES = (
    ("stable-diffusion-xl-", SDXL),
    ("stable-diffusion-3", SD3),
    ("stable-diffusion-v2", SD2),
    ("stable-diffusion-v1", SD15),
    ("flux-1-", FLUX),
)
# kohya `ss_base_model_version` values by prefix (`library/model_util.py`, `flux_utils.py`, ...).
_KOHYA_FAMILIES = (("sdxl_", SDXL), ("sd_v2", SD2), ("sd_v1", SD15), ("sd3", SD3), ("flux1", FLUX))
_ADAPTER_SUFFIXES = ("/lora", "/textual-inversion", "-lora", "-textual-inversion")  # ModelSpec 1.0.1, and 1.0.0


@dataclass(frozen=True)
class KohyaInfo:
    """The training facts of a kohya-ss LoRA. `network_alpha` is resolved: kohya's alpha 0 or None
    means alpha = rank."""

    base_model_version: str | None
    v2: bool | None
    network_module: str | None
    network_dim: int | None
    network_alpha: float | None
    network_args: dict[str, str]
    resolution: tuple[int, int] | None
    clip_skip: int | None
    epochs: int | None
    steps: int | None
    learning_rate: float | None
    output_name: str | None
    sd_model_name: str | None
    sd_model_hash: str | None
    trigger_words: tuple[str, ...]
    dataset_dirs: tuple[str, ...]
    training_comment: str | None
    model_hash: str | None
    legacy_hash: str | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ModelSpecInfo:
    """The `modelspec.*` keys (ModelSpec 1.0.1). `resolution` is (width, height)."""

    sai_model_spec: str | None
    architecture: str | None
    implementation: str | None
    title: str | None
    resolution: tuple[int, int] | None
    description: str | None
    author: str | None
    date: str | None
    hash_sha256: str | None
    implementation_version: str | None
    license: str | None
    usage_hint: str | None
    category: str | None
    thumbnail: str | None
    tags: tuple[str, ...]
    merged_from: str | None
    trigger_phrase: str | None
    prediction_type: str | None
    timestep_range: tuple[int, int] | None
    encoder_layer: int | None
    preprocessor: str | None
    is_negative_embedding: bool | None
    unet_dtype: str | None
    vae_dtype: str | None
    data_format: str | None
    format_type: str | None
    language: str | None
    format_template: str | None
    warnings: tuple[str, ...]


class _Values:
    """Typed reads of untrusted metadata strings that collect a warning instead of raising."""

    def __init__(self, metadata: dict[str, str], prefix: str = "") -> None:
        self.metadata = metadata
        self.prefix = prefix
        self.warnings: list[str] = []

    def text(self, key: str) -> str | None:
        value = self.metadata.get(self.prefix + key)
        return None if value is None or value.strip() in _NONE_STRINGS else value

    def integer(self, key: str) -> int | None:
        value = self.text(key)
        if value is None:
            return None
        try:
            number = float(value.strip())
        except ValueError:
            self.warn(key, value, "an integer")
            return None
        if not number.is_integer():
            self.warn(key, value, "an integer")
            return None
        return int(number)

    def number(self, key: str) -> float | None:
        value = self.text(key)
        if value is None:
            return None
        try:
            number = float(value.strip())
        except ValueError:
            self.warn(key, value, "a number")
            return None
        if not math.isfinite(number):
            self.warn(key, value, "a finite number")
            return None
        return number

    def flag(self, key: str) -> bool | None:
        value = self.text(key)
        if value is None:
            return None
        if value.strip().lower() in ("true", "1"):
            return True
        if value.strip().lower() in ("false", "0"):
            return False
        self.warn(key, value, "True or False")
        return None

    def json(self, key: str) -> Any:
        value = self.text(key)
        if value is None:
            return None
        try:
            return parse_json(value, self.prefix + key)
        except InvalidInputError as exc:
            self.warn(key, value, f"JSON ({exc.message})")
            return None

    def warn(self, key: str, value: str, expected: str) -> None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        self.warnings.append(f"{self.prefix}{key}: expected {expected}, found {shown!r}")


# -- kohya-ss ---------------------------------------------------------------------------------


def read_kohya(metadata: dict[str, str]) -> KohyaInfo | None:
    """The kohya-ss training metadata, or None when there is no `ss_*` key."""
    if not any(key.startswith(KOHYA_PREFIX) for key in metadata):
        return None
    values = _Values(metadata, KOHYA_PREFIX)
    dim = values.integer("network_dim")
    alpha = values.number("network_alpha")
    if not alpha and dim is not None:  # kohya's networks/lora.py: alpha 0 or None means alpha = rank
        alpha = float(dim)
    return KohyaInfo(
        base_model_version=values.text("base_model_version"),
        v2=values.flag("v2"),
        network_module=values.text("network_module"),
        network_dim=dim,
        network_alpha=alpha,
        network_args=_network_args(values),
        resolution=_kohya_resolution(values),
        clip_skip=values.integer("clip_skip"),
        epochs=values.integer("num_epochs"),
        steps=values.integer("steps"),
        learning_rate=values.number("learning_rate"),
        output_name=values.text("output_name"),
        sd_model_name=values.text("sd_model_name"),
        sd_model_hash=values.text("new_sd_model_hash") or values.text("sd_model_hash"),
        trigger_words=_trigger_words(values),
        dataset_dirs=_dataset_dirs(values),
        training_comment=values.text("training_comment"),
        model_hash=_Values(metadata).text("sshs_model_hash"),
        legacy_hash=_Values(metadata).text("sshs_legacy_hash"),
        warnings=tuple(values.warnings),
    )


def _network_args(values: _Values) -> dict[str, str]:
    parsed = values.json("network_args")
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        values.warnings.append("ss_network_args: expected a JSON object")
        return {}
    return {str(key): item if isinstance(item, str) else str(item) for key, item in parsed.items()}


def _kohya_resolution(values: _Values) -> tuple[int, int] | None:
    """`ss_resolution` ("512,512" or "(512, 512)"), else the first dataset's in `ss_datasets`."""
    text = values.text("resolution")
    if text is not None:
        match = _RESOLUTION_PAIR.match(text.strip())
        if match:
            width = int(match.group(1))
            return width, int(match.group(2) or width)
        values.warn("resolution", text, "a resolution like '512,512'")
        return None
    datasets = values.json("datasets")
    if datasets is None:
        return None
    if isinstance(datasets, list):
        for dataset in datasets:
            size = dataset.get("resolution") if isinstance(dataset, dict) else None
            if isinstance(size, int) and not isinstance(size, bool) and size > 0:
                return size, size
            if isinstance(size, list) and len(size) == 2 and all(_positive_int(item) for item in size):
                return size[0], size[1]
    values.warnings.append("ss_datasets: no dataset with a [width, height] resolution")
    return None


def _trigger_words(values: _Values) -> tuple[str, ...]:
    """Tags of `ss_tag_frequency` ({dataset_dir: {tag: count}}), by total count, the top 20."""
    frequency = values.json("tag_frequency")
    if frequency is None:
        return ()
    if not isinstance(frequency, dict):
        values.warnings.append("ss_tag_frequency: expected a JSON object of datasets")
        return ()
    totals: dict[str, int] = {}
    skipped = 0
    for tags in frequency.values():
        if not isinstance(tags, dict):
            skipped += 1
            continue
        for tag, count in tags.items():
            tag = tag.strip()
            if not tag or not _positive_int(count):
                skipped += 1
                continue
            totals[tag] = totals.get(tag, 0) + count
    if skipped:
        values.warnings.append(f"ss_tag_frequency: skipped {skipped} entries that are not tag counts")
    ranked = sorted(totals, key=lambda tag: (-totals[tag], tag))
    return tuple(ranked[:TRIGGER_WORD_LIMIT])


def _dataset_dirs(values: _Values) -> tuple[str, ...]:
    dirs = values.json("dataset_dirs")
    if dirs is None:
        return ()
    if not isinstance(dirs, dict):
        values.warnings.append("ss_dataset_dirs: expected a JSON object of directories")
        return ()
    return tuple(dirs)


# -- ModelSpec --------------------------------------------------------------------------------


def read_modelspec(metadata: dict[str, str]) -> ModelSpecInfo | None:
    """The ModelSpec keys, or None when there is no `modelspec.*` key."""
    if not any(key.startswith(MODELSPEC_PREFIX) for key in metadata):
        return None
    values = _Values(metadata, MODELSPEC_PREFIX)
    text = values.text
    return ModelSpecInfo(
        sai_model_spec=text("sai_model_spec"),
        architecture=text("architecture"),
        implementation=text("implementation"),
        title=text("title"),
        resolution=_pair(values, "resolution", _RESOLUTION_WXH, "WIDTHxHEIGHT, e.g. '1024x1024'"),
        description=text("description"),
        author=text("author"),
        date=_date(values),
        hash_sha256=_hash(values),
        implementation_version=text("implementation_version"),
        license=text("license"),
        usage_hint=text("usage_hint"),
        category=text("category"),
        thumbnail=text("thumbnail"),
        tags=tuple(tag.strip() for tag in (text("tags") or "").split(",") if tag.strip()),
        merged_from=text("merged_from"),
        trigger_phrase=text("trigger_phrase"),
        prediction_type=_prediction_type(values),
        timestep_range=_pair(values, "timestep_range", re.compile(r"^\s*(\d{1,6})\s*,\s*(\d{1,6})\s*$"), "'min,max'"),
        encoder_layer=values.integer("encoder_layer"),
        preprocessor=text("preprocessor"),
        is_negative_embedding=values.flag("is_negative_embedding"),
        unet_dtype=text("unet_dtype"),
        vae_dtype=text("vae_dtype"),
        data_format=text("data_format"),
        format_type=text("format_type"),
        language=text("language"),
        format_template=text("format_template"),
        warnings=tuple(values.warnings),
    )


def _pair(values: _Values, key: str, pattern: re.Pattern[str], expected: str) -> tuple[int, int] | None:
    text = values.text(key)
    if text is None:
        return None
    match = pattern.match(text)
    if not match:
        values.warn(key, text, expected)
        return None
    return int(match.group(1)), int(match.group(2))


def _date(values: _Values) -> str | None:
    text = values.text("date")
    if text is None:
        return None
    try:
        datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        values.warn("date", text, "an ISO-8601 date")
    return text  # kept as written: a date the parser does not know may still be ISO-8601


def _hash(values: _Values) -> str | None:
    text = values.text("hash_sha256")
    if text is None:
        return None
    if not _SHA256_HEX.match(text):
        values.warn("hash_sha256", text, "'0x' and 64 lower-case hex digits")
        return None
    return text


def _prediction_type(values: _Values) -> str | None:
    text = values.text("prediction_type")
    if text is not None and text not in ("v", "epsilon"):
        values.warn("prediction_type", text, "'v' or 'epsilon'")
    return text


# -- summaries --------------------------------------------------------------------------------


def base_family(kohya: KohyaInfo | None, modelspec: ModelSpecInfo | None) -> str | None:
    """The base model family: "SD 1.5", "SD 2", "SDXL", "SD3" or "Flux"; None when unknown.

    ModelSpec's architecture id wins when it names a known family. Otherwise kohya's metadata
    decides as AUTOMATIC1111 does (`ss_base_model_version` starting `sdxl_` is SDXL, else `ss_v2`
    "True" is SD 2), extended to the SD3 and Flux versions newer sd-scripts write; an older LoRA
    without a version string is SD 1.5 (sd-scripts then only knew SD 1 and 2)."""
    if modelspec is not None and modelspec.architecture:
        architecture = modelspec.architecture.split("/")[0]
        for prefix, family in _MODELSPEC_FAMILIES:
            if architecture.startswith(prefix) or architecture == prefix.rstrip("-"):
                return family
    if kohya is None:
        return None
    version = kohya.base_model_version or ""
    if version.startswith("sdxl_"):
        return SDXL
    if kohya.v2:
        return SD2
    for prefix, family in _KOHYA_FAMILIES:
        if version.startswith(prefix):
            return family
    return SD15 if not version else None


def is_adapter(modelspec: ModelSpecInfo | None) -> bool:
    """True when ModelSpec marks the file as an adapter (architecture ending `/lora` or
    `/textual-inversion`; ModelSpec 1.0.0 examples used `-lora`)."""
    return bool(modelspec and modelspec.architecture and modelspec.architecture.endswith(_ADAPTER_SUFFIXES))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
