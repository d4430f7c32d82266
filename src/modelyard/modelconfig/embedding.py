"""`EmbeddingConfig`: models whose output is a vector (sentence-transformers, BERT-like encoders, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from modelyard.modelconfig.base import BaseModelConfig, InferenceParams


class EmbeddingConfig(BaseModelConfig):
    """An embedding model: the vector it makes and how (pooling, normalisation, length)."""

    model_type: Literal["embedding"] = "embedding"
    architecture: str | None = None
    model_family: str | None = None  # bert, mpnet, xlm-roberta, nomic-bert, ...
    modality: str = "text"  # text, image, audio, event (spiking/DVS), ...
    embedding_dim: int | None = None
    pooling: str | None = None  # mean, cls, max, lasttoken, weightedmean, ...
    max_seq_length: int | None = None
    normalize: bool = False
    similarity_fn: str | None = None  # cosine, dot, euclidean, manhattan
    prompts: dict[str, str] = Field(default_factory=dict)
    vocab_size: int | None = None
    quantization: str | None = None
    languages: list[str] = Field(default_factory=list)
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {"normalize": self.normalize}
        if self.embedding_dim is not None:
            additional["embedding_dim"] = self.embedding_dim
        if self.pooling:
            additional["pooling"] = self.pooling
        if self.similarity_fn:
            additional["similarity_fn"] = self.similarity_fn
        return InferenceParams(context_length=self.max_seq_length, additional=additional)
