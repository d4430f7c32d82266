"""`VisionConfig`: image encoders, classifiers, detectors and segmenters (the fleet's vision nodes)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from modelyard.modelconfig.base import BaseModelConfig, InferenceParams


class VisionConfig(BaseModelConfig):
    """A vision model: input geometry and normalisation, and what it outputs."""

    model_type: Literal["vision"] = "vision"
    architecture: str | None = None  # ViTModel, ResNetForImageClassification, FasterRCNN, YOLOX, ...
    model_family: str | None = None  # vit, resnet, yolox, faster-rcnn, ...
    image_size: int | tuple[int, int] | None = None
    patch_size: int | None = None
    num_channels: int | None = None
    embedding_dim: int | None = None
    num_layers: int | None = None
    num_labels: int | None = None
    image_processor: str | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    backbone: str | None = None  # detectors: the backbone family (resnet50, darknet, ...)
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {}
        if self.image_size is not None:
            size = self.image_size
            additional["image_size"] = list(size) if isinstance(size, tuple) else size
        for key in ("num_channels", "num_labels", "image_mean", "image_std"):
            value = getattr(self, key)
            if value is not None:
                additional[key] = value
        return InferenceParams(additional=additional)
