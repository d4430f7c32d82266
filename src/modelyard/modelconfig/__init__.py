"""Typed model configurations (seed 002): one class per modality, one discriminated union.

from modelyard.modelconfig import parse_model_config
config = parse_model_config(json_text)        # LlmConfig, ImageConfig, ... by model_type
config.is_compatible_with("llama-cpp")        # Compatibility(runtime, compatible, reason)
config.inference_params()                     # InferenceParams(context_length, batch_size, additional)
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from modelyard.errors import InvalidInputError
from modelyard.modelconfig.adapter import AdapterConfig
from modelyard.modelconfig.audio import AudioConfig
from modelyard.modelconfig.base import (
    MODEL_TYPES,
    BaseModelConfig,
    CatalogFields,
    Compatibility,
    InferenceParams,
    PickleFindingEntry,
    PickleScanSummary,
    WeightsFile,
)
from modelyard.modelconfig.embedding import EmbeddingConfig
from modelyard.modelconfig.image import ImageConfig, ImagePreview
from modelyard.modelconfig.llm import LlmConfig, TokenizerConfig
from modelyard.modelconfig.other import (
    ConfigArtifactConfig,
    MultimodalConfig,
    PolicyConfig,
    UnknownConfig,
    VideoConfig,
    VisionTower,
)
from modelyard.modelconfig.vision import VisionConfig

__all__ = [
    "MODEL_TYPES",
    "AdapterConfig",
    "AudioConfig",
    "BaseModelConfig",
    "CatalogFields",
    "Compatibility",
    "ConfigArtifactConfig",
    "EmbeddingConfig",
    "ImageConfig",
    "ImagePreview",
    "InferenceParams",
    "LlmConfig",
    "ModelConfig",
    "MultimodalConfig",
    "PickleFindingEntry",
    "PickleScanSummary",
    "PolicyConfig",
    "TokenizerConfig",
    "UnknownConfig",
    "VideoConfig",
    "VisionConfig",
    "VisionTower",
    "WeightsFile",
    "parse_model_config",
]

ModelConfig = Annotated[
    LlmConfig
    | ImageConfig
    | AudioConfig
    | VideoConfig
    | VisionConfig
    | EmbeddingConfig
    | AdapterConfig
    | MultimodalConfig
    | PolicyConfig
    | ConfigArtifactConfig
    | UnknownConfig,
    Field(discriminator="model_type"),
]

CONFIG_CLASSES: dict[str, type[BaseModelConfig]] = {
    "llm": LlmConfig,
    "image": ImageConfig,
    "audio": AudioConfig,
    "video": VideoConfig,
    "vision": VisionConfig,
    "embedding": EmbeddingConfig,
    "adapter": AdapterConfig,
    "multimodal": MultimodalConfig,
    "policy": PolicyConfig,
    "config": ConfigArtifactConfig,
    "unknown": UnknownConfig,
}

_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelConfig)


def parse_model_config(data: str | dict[str, Any], source: str = "model configuration") -> BaseModelConfig:
    """Validate a stored configuration (JSON text or a dict) into its typed class."""
    try:
        config = _ADAPTER.validate_json(data) if isinstance(data, str) else _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise InvalidInputError(f"{location}: {first['msg']}", path=source) from None
    assert isinstance(config, BaseModelConfig)
    return config
