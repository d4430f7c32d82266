"""`AdapterConfig`: parameter-efficient fine-tunes (PEFT LoRA and relatives, GGUF LoRA adapters)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from modelyard.modelconfig.base import BaseModelConfig, InferenceParams


class AdapterConfig(BaseModelConfig):
    """An adapter: useless without its base model, which it names."""

    model_type: Literal["adapter"] = "adapter"
    peft_type: str | None = None  # LORA, ADALORA, IA3, LOHA, LOKR, OFT, PROMPT_TUNING, ...
    base_model: str | None = None
    base_model_revision: str | None = None
    r: int | None = None
    alpha: float | None = None
    target_modules: list[str] | str | None = None  # a list, or a regex / "all-linear"
    task_type: str | None = None  # CAUSAL_LM, SEQ_2_SEQ_LM, SEQ_CLS, ...
    dropout: float | None = None
    bias: str | None = None
    use_dora: bool = False
    use_rslora: bool = False
    modules_to_save: list[str] = Field(default_factory=list)
    rank_pattern: dict[str, JsonValue] = Field(default_factory=dict)
    adapter_format: str | None = None  # peft, gguf
    peft_version: str | None = None
    architecture: str | None = None  # the base's architecture, when known
    model_family: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {}
        for key in ("base_model", "peft_type", "r", "alpha", "task_type"):
            value = getattr(self, key)
            if value is not None:
                additional[key] = value
        return InferenceParams(additional=additional)
