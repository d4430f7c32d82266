"""`ImageConfig`: image generation models and their add-ons (seed 002's CivitAI/Stable Diffusion fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from modelyard.modelconfig.base import BaseModelConfig, InferenceParams, _Frozen

CheckpointType = Literal["checkpoint", "lora", "embedding", "hypernetwork", "vae", "other"]


class ImagePreview(_Frozen):
    url: str
    width: int | None = None
    height: int | None = None
    nsfw: bool = False


class ImageConfig(BaseModelConfig):
    """A Stable Diffusion-family checkpoint, diffusers pipeline, LoRA, embedding or VAE."""

    model_type: Literal["image"] = "image"
    # -- critical for inference (seed 002) --
    base_model: str | None = None  # SD 1.5, SD 2, SDXL, SD3, Flux, or a marketplace's label
    checkpoint_type: CheckpointType = "checkpoint"
    original_type: str | None = None  # the source's own word when checkpoint_type is "other" (Controlnet, ...)
    vae: str | None = None
    clip_skip: int | None = None
    resolution: tuple[int, int] | None = None
    trigger_words: list[str] = Field(default_factory=list)
    # -- inference settings --
    samplers: list[str] = Field(default_factory=list)
    steps: int | None = None
    cfg_scale: float | None = None
    # -- metadata --
    nsfw: bool = False
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    preview_images: list[ImagePreview] = Field(default_factory=list)
    downloads: int = 0
    likes: int = 0
    # -- beyond the seed --
    architecture: str | None = None  # pipeline class or ModelSpec architecture id
    model_family: str | None = None  # stable-diffusion, flux, ...
    variant: str | None = None  # inpainting, refiner, dev, schnell, ...
    prediction_type: str | None = None  # epsilon or v
    pipeline_class: str | None = None
    components: dict[str, str] = Field(default_factory=dict)  # diffusers component -> class
    baked_vae: bool = False
    network_module: str | None = None
    network_dim: int | None = None
    network_alpha: float | None = None
    training: dict[str, JsonValue] = Field(default_factory=dict)  # kohya ss_* facts
    hashes: dict[str, str] = Field(default_factory=dict)  # SHA256, AutoV2, ... from a marketplace
    civitai_model_id: int | None = None
    civitai_version_id: int | None = None

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {}
        if self.resolution is not None:
            additional["resolution"] = [self.resolution[0], self.resolution[1]]
        if self.cfg_scale is not None:
            additional["cfg_scale"] = self.cfg_scale
        if self.steps is not None:
            additional["steps"] = self.steps
        if self.clip_skip is not None:
            additional["clip_skip"] = self.clip_skip
        if self.samplers:
            additional["samplers"] = list(self.samplers)
        if self.trigger_words:
            additional["trigger_words"] = list(self.trigger_words)
        return InferenceParams(batch_size=1, additional=additional)
