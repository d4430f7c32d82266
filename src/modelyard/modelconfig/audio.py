"""`AudioConfig`: speech and audio encoders, recognisers and generators."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from modelyard.modelconfig.base import BaseModelConfig, InferenceParams


class AudioConfig(BaseModelConfig):
    """An audio model: what its input must look like (rate, channels, features)."""

    model_type: Literal["audio"] = "audio"
    architecture: str | None = None  # Wav2Vec2Model, WhisperForConditionalGeneration, ...
    model_family: str | None = None  # wav2vec2, hubert, whisper, ...
    sample_rate: int | None = None
    channels: int | None = None
    feature_extractor: str | None = None  # Wav2Vec2FeatureExtractor, WhisperFeatureExtractor, ...
    feature_size: int | None = None
    num_mel_bins: int | None = None
    embedding_dim: int | None = None
    num_layers: int | None = None
    max_source_positions: int | None = None
    max_target_positions: int | None = None
    vocab_size: int | None = None
    chunk_length: int | None = None  # seconds per window (Whisper)
    do_normalize: bool | None = None
    languages: list[str] = Field(default_factory=list)
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {}
        for key in ("sample_rate", "channels", "feature_size", "num_mel_bins", "chunk_length"):
            value = getattr(self, key)
            if value is not None:
                additional[key] = value
        return InferenceParams(context_length=self.max_source_positions, additional=additional)
