"""`LlmConfig`: language models (seed 002's LLM fields, from Hugging Face folders and GGUF files)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from modelyard.modelconfig.base import BaseModelConfig, InferenceParams, _Frozen


class TokenizerConfig(_Frozen):
    """Special tokens and the chat template: without them a served model formats chats wrongly."""

    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    chat_template: str | None = None
    # Named templates besides the default one (tokenizer_config.json lists, .jinja files, GGUF keys).
    chat_templates: dict[str, str] = Field(default_factory=dict)
    tokenizer_class: str | None = None
    tokenizer_model: str | None = None  # GGUF tokenizer.ggml.model: llama, gpt2, ...
    vocab_size: int | None = None
    model_max_length: int | None = None


class LlmConfig(BaseModelConfig):
    """A language model: what a serving runtime needs to load it and format its prompts."""

    model_type: Literal["llm"] = "llm"
    # -- critical for inference (seed 002) --
    architecture: str | None = None  # LlamaForCausalLM
    model_family: str | None = None  # llama, gpt2, mistral, ...
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    context_length: int | None = None
    quantization: str | None = None  # Q4_K_M, Q8_0, F16, gptq, awq, ...
    # -- inference settings --
    default_temperature: float | None = None
    default_top_p: float | None = None
    languages: list[str] = Field(default_factory=list)
    # -- metadata --
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    # -- Hugging Face Hub --
    sha: str | None = None
    gated: bool = False
    downloads: int = 0
    likes: int = 0
    # -- beyond the seed: what else a config file states --
    context_length_source: str | None = None  # the config key the context length came from
    vocab_size: int | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    expert_count: int | None = None
    rope_scaling: dict[str, JsonValue] | None = None
    quantization_method: str | None = None  # config.json quantization_config.quant_method
    custom_code: bool = False  # config.json auto_map: loading runs the repository's own Python
    generation: dict[str, JsonValue] = Field(default_factory=dict)  # generation_config.json defaults
    datasets: list[str] = Field(default_factory=list)
    pipeline_tag: str | None = None
    library_name: str | None = None
    size_label: str | None = None
    transformers_version: str | None = None

    def inference_params(self) -> InferenceParams:
        additional: dict[str, JsonValue] = {}
        if self.default_temperature is not None:
            additional["temperature"] = self.default_temperature
        if self.default_top_p is not None:
            additional["top_p"] = self.default_top_p
        for key in ("top_k", "repetition_penalty", "max_new_tokens", "do_sample"):
            if key in self.generation:
                additional[key] = self.generation[key]
        if self.tokenizer.chat_template:
            additional["chat_template"] = True
        if self.tokenizer.eos_token:
            additional["eos_token"] = self.tokenizer.eos_token
        return InferenceParams(context_length=self.context_length, additional=additional)
