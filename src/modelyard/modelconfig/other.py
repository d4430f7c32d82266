"""The remaining kinds: multimodal and video models, RL policies, non-model config artifacts, unknown."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from modelyard.modelconfig.base import BaseModelConfig, InferenceParams, _Frozen
from modelyard.modelconfig.llm import TokenizerConfig


class VisionTower(_Frozen):
    """The vision side of a multimodal model."""

    model_family: str | None = None
    image_size: int | tuple[int, int] | None = None
    patch_size: int | None = None
    hidden_size: int | None = None


class MultimodalConfig(BaseModelConfig):
    """A model that takes several modalities: vision-language chat models, CLIP, GGUF projectors."""

    model_type: Literal["multimodal"] = "multimodal"
    architecture: str | None = None  # LlavaForConditionalGeneration, CLIPModel, ...
    model_family: str | None = None
    modalities: list[str] = Field(default_factory=list)  # text, image, audio, video
    text_family: str | None = None
    vision: VisionTower | None = None
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    context_length: int | None = None
    embedding_dim: int | None = None  # CLIP-style projection dimension
    quantization: str | None = None
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {"modalities": list(self.modalities)}
        if self.vision is not None and self.vision.image_size is not None:
            size = self.vision.image_size
            additional["image_size"] = list(size) if isinstance(size, tuple) else size
        if self.tokenizer.chat_template:
            additional["chat_template"] = True
        return InferenceParams(context_length=self.context_length, additional=additional)


class VideoConfig(BaseModelConfig):
    """A video model: a video classifier/encoder or a text/image-to-video pipeline."""

    model_type: Literal["video"] = "video"
    architecture: str | None = None
    model_family: str | None = None
    pipeline_class: str | None = None
    num_frames: int | None = None
    image_size: int | tuple[int, int] | None = None
    fps: float | None = None
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {}
        if self.num_frames is not None:
            additional["num_frames"] = self.num_frames
        if self.image_size is not None:
            size = self.image_size
            additional["image_size"] = list(size) if isinstance(size, tuple) else size
        return InferenceParams(batch_size=1, additional=additional)


class PolicyConfig(BaseModelConfig):
    """A decision model (seed 000's planners and controllers): observation in, action out."""

    model_type: Literal["policy"] = "policy"
    architecture: str | None = None
    model_family: str | None = None  # actor-critic, mlp, ...
    algorithm: str | None = None  # ppo, sac, dqn, ...
    framework: str | None = None  # pytorch, stable-baselines3, ...
    observation_dim: int | None = None
    action_dim: int | None = None
    has_actor: bool = False
    has_critic: bool = False
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {}
        if self.observation_dim is not None:
            additional["observation_dim"] = self.observation_dim
        if self.action_dim is not None:
            additional["action_dim"] = self.action_dim
        return InferenceParams(batch_size=1, additional=additional)


class ConfigArtifactConfig(BaseModelConfig):
    """A non-model artifact (seed 000 section 1: schemas, pipelines, service configurations)."""

    model_type: Literal["config"] = "config"
    kind: str | None = None  # vector-db-schema, preprocessing-pipeline, service-config, ...
    documents: list[str] = Field(default_factory=list)  # the configuration files
    document_formats: list[str] = Field(default_factory=list)  # json, yaml, toml, ...
    license: str | None = None
    tags: list[str] = Field(default_factory=list)


class UnknownConfig(BaseModelConfig):
    """Nothing recognisable: the files are stored and listed, and the reason is kept."""

    model_type: Literal["unknown"] = "unknown"
    reason: str = ""
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
