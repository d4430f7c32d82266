"""Which runtimes can serve an artifact: one table, one rule per runtime.

Seed 002 puts `is_compatible_with(worker)` on each configuration; here every configuration asks
this table, so adding a runtime means adding one rule and one row to `RUNTIMES`, nothing else.
A rule looks only at the typed configuration (formats, layout, architecture, pickle verdict) and
answers yes or no with the reason a user can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modelyard.modelconfig.base import BaseModelConfig, Compatibility

Rule = Callable[[BaseModelConfig], tuple[bool, str]]

# Decoder architectures vLLM and TGI load natively (their model registries, abridged to the
# families a registry meets most; an architecture missing here is answered "not listed").
SERVING_ARCHITECTURES = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen2MoeForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen3MoeForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "Gemma3ForConditionalGeneration",
        "Phi3ForCausalLM",
        "PhiForCausalLM",
        "GPT2LMHeadModel",
        "GPTNeoXForCausalLM",
        "GPTJForCausalLM",
        "GPTBigCodeForCausalLM",
        "FalconForCausalLM",
        "OPTForCausalLM",
        "BloomForCausalLM",
        "MPTForCausalLM",
        "StableLmForCausalLM",
        "Starcoder2ForCausalLM",
        "DeepseekV2ForCausalLM",
        "DeepseekV3ForCausalLM",
        "CohereForCausalLM",
        "OlmoForCausalLM",
        "Olmo2ForCausalLM",
        "GraniteForCausalLM",
        "InternLM2ForCausalLM",
        "BaichuanForCausalLM",
        "ChatGLMModel",
        "LlavaForConditionalGeneration",
        "LlavaNextForConditionalGeneration",
        "Qwen2VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
        "MllamaForConditionalGeneration",
        "PaliGemmaForConditionalGeneration",
        "Idefics3ForConditionalGeneration",
    }
)
# Text encoders sentence-transformers can wrap with a default mean pooling.
ENCODER_FAMILIES = frozenset(
    {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "deberta", "deberta-v2", "electra", "albert",
     "camembert", "modernbert", "nomic_bert", "new", "e5", "t5", "mt5"}
)  # fmt: skip
IMAGE_FAMILIES_FOR_UIS = ("SD 1.5", "SD 2", "SDXL", "SD3", "Flux", "Pony", "Illustrious")
_DIFFUSERS_LOADERS = {
    "checkpoint": "from_single_file",
    "vae": "from_single_file",
    "lora": "load_lora_weights",
    "embedding": "load_textual_inversion",
}
ONNXRUNTIME_MAX_OPSET = 23  # the newest ai.onnx opset onnxruntime 1.23 implements

_PICKLE_FORMATS = {"pytorch", "pickle"}


def _blocked_by_pickles(config: BaseModelConfig) -> str | None:
    if config.pickle_scan.verdict == "unsafe":
        bad = next((f for f in config.pickle_scan.findings if f.severity == "unsafe"), None)
        named = f" ({bad.module}.{bad.name} in {bad.file})" if bad else ""
        return f"a pickle imports code-executing globals{named}: never load it"
    return None


def _weights(config: BaseModelConfig) -> set[str]:
    return config.weights_formats


def _architecture(config: BaseModelConfig) -> str | None:
    value = getattr(config, "architecture", None)
    return value if isinstance(value, str) else None


def _llama_cpp(config: BaseModelConfig) -> tuple[bool, str]:
    if "gguf" not in _weights(config):
        return False, f"llama.cpp reads GGUF files; this artifact has {config.format} weights (convert to GGUF first)"
    if config.model_type == "adapter":
        return True, "a GGUF LoRA adapter (--lora) on its base model"
    if config.model_type not in ("llm", "embedding", "multimodal"):
        return False, f"a GGUF file of a {config.model_type} model, which llama.cpp does not serve"
    return True, "GGUF file" + (f" ({config.dtype})" if config.dtype else "")


def _transformers(config: BaseModelConfig) -> tuple[bool, str]:
    if config.model_type == "adapter":
        return False, "an adapter: load it with peft on top of its base model"
    if not config.has_file("config.json"):
        return False, "no config.json: transformers needs one next to the weights"
    weights = _weights(config) & {"safetensors", "pytorch"}
    if not weights:
        return False, "config.json but no safetensors or PyTorch weights"
    if "safetensors" not in weights and (blocked := _blocked_by_pickles(config)):
        return False, blocked
    architecture = _architecture(config)
    if architecture is None:
        return False, "config.json names no architecture"
    note = "; the repository's own code runs (trust_remote_code)" if getattr(config, "custom_code", False) else ""
    return True, f"{architecture} with {', '.join(sorted(weights))} weights{note}"


def _serving(engine: str, needs_safetensors: bool) -> Rule:
    def rule(config: BaseModelConfig) -> tuple[bool, str]:
        if config.model_type == "adapter":
            peft_type = getattr(config, "peft_type", None)
            if peft_type == "LORA" and "safetensors" in _weights(config):
                return True, f"a LoRA adapter {engine} applies at request time (enable LoRA) on {config_base(config)}"
            return False, f"{engine} serves LoRA adapters in safetensors only (this is {peft_type or 'unknown'})"
        if config.model_type not in ("llm", "multimodal"):
            return False, f"{engine} serves language models; this is a {config.model_type} model"
        if not config.has_file("config.json"):
            return False, "no config.json"
        architecture = _architecture(config)
        if architecture not in SERVING_ARCHITECTURES:
            return False, f"architecture {architecture or 'unknown'} is not among those {engine} supports natively"
        if needs_safetensors and "safetensors" not in _weights(config):
            return False, f"{engine} wants safetensors weights"
        if not _weights(config) & {"safetensors", "pytorch"}:
            return False, "no safetensors or PyTorch weights"
        return True, f"{architecture} is supported"

    return rule


def config_base(config: BaseModelConfig) -> str:
    base = getattr(config, "base_model", None)
    return base if isinstance(base, str) and base else "its base model"


def _sentence_transformers(config: BaseModelConfig) -> tuple[bool, str]:
    if config.layout == "sentence-transformers":
        return True, "a sentence-transformers folder (modules.json)"
    family = getattr(config, "model_family", None)
    if config.model_type in ("embedding", "llm") and family in ENCODER_FAMILIES and config.has_file("config.json"):
        return True, f"a {family} encoder; sentence-transformers adds mean pooling"
    return False, "neither a sentence-transformers folder nor a transformers text encoder"


def _diffusers(config: BaseModelConfig) -> tuple[bool, str]:
    if config.model_type not in ("image", "video"):
        return False, f"diffusers runs image and video pipelines; this is a {config.model_type} model"
    if config.layout == "diffusers":
        return True, f"a diffusers pipeline ({getattr(config, 'pipeline_class', None) or 'model_index.json'})"
    base = getattr(config, "base_model", None)
    kind = getattr(config, "checkpoint_type", None)
    if base in IMAGE_FAMILIES_FOR_UIS and kind in ("checkpoint", "lora", "embedding", "vae"):
        if (blocked := _blocked_by_pickles(config)) is not None:
            return False, blocked
        return True, f"a single-file {base} {kind} ({_DIFFUSERS_LOADERS[kind]})"
    return False, "an image model whose base family is unknown"


def _image_ui(name: str) -> Rule:
    def rule(config: BaseModelConfig) -> tuple[bool, str]:
        if config.model_type != "image":
            return False, f"{name} loads image models; this is a {config.model_type} model"
        if config.layout == "diffusers":
            return False, f"{name} loads single-file checkpoints, not diffusers folders"
        if (blocked := _blocked_by_pickles(config)) is not None:
            return False, blocked
        kind = getattr(config, "checkpoint_type", "checkpoint")
        if kind == "other":
            original = getattr(config, "original_type", None) or "this kind of file"
            return False, f"a {original}: loaded by {name} extensions, which modelyard does not check"
        base = getattr(config, "base_model", None)
        if base is None:
            return False, "the base family (SD 1.5, SDXL, ...) is unknown"
        return True, f"a {base} {kind}"

    return rule


def _peft(config: BaseModelConfig) -> tuple[bool, str]:
    if config.model_type != "adapter" or config.layout != "peft":
        return False, "not a PEFT adapter (adapter_config.json)"
    if not getattr(config, "base_model", None):
        return False, "adapter_config.json names no base model (base_model_name_or_path)"
    if not _weights(config) & {"safetensors", "pytorch"}:
        return False, "adapter_config.json without adapter weights"
    if (blocked := _blocked_by_pickles(config)) is not None:
        return False, blocked
    return True, f"a {getattr(config, 'peft_type', None) or 'PEFT'} adapter on {config_base(config)}"


def _onnxruntime(config: BaseModelConfig) -> tuple[bool, str]:
    if "onnx" not in _weights(config):
        return False, "no ONNX model"
    opset = max((w.opset for w in config.weights if w.format == "onnx" and w.opset), default=None)
    if opset is not None and opset > ONNXRUNTIME_MAX_OPSET:
        return False, f"opset {opset} is newer than onnxruntime implements ({ONNXRUNTIME_MAX_OPSET})"
    return True, "an ONNX model" + (f" (opset {opset})" if opset else "")


def _torchscript(config: BaseModelConfig) -> tuple[bool, str]:
    if "torchscript" in _weights(config):
        return True, "a TorchScript archive (torch.jit.load)"
    return False, "no TorchScript archive"


def _pytorch(config: BaseModelConfig) -> tuple[bool, str]:
    formats = _weights(config)
    if "pytorch" in formats or "pickle" in formats:
        if (blocked := _blocked_by_pickles(config)) is not None:
            return False, blocked
        if config.pickle_scan.verdict == "suspicious":
            names = sorted({f"{f.module}.{f.name}" for f in config.pickle_scan.findings if f.severity == "suspicious"})
            return False, f"needs torch.load(weights_only=False) for {', '.join(names[:3])}: allow them first"
        return True, "PyTorch weights (torch.load with weights_only=True)"
    if "safetensors" in formats:
        return True, "safetensors weights (safetensors.torch.load_file)"
    if "torchscript" in formats:
        return True, "a TorchScript archive (torch.jit.load)"
    return False, "no PyTorch-loadable weights"


@dataclass(frozen=True)
class Runtime:
    id: str
    description: str
    rule: Rule


RUNTIMES: dict[str, Runtime] = {
    runtime.id: runtime
    for runtime in (
        Runtime("llama-cpp", "llama.cpp and its servers (GGUF)", _llama_cpp),
        Runtime("transformers", "Hugging Face transformers", _transformers),
        Runtime("vllm", "vLLM", _serving("vLLM", needs_safetensors=False)),
        Runtime("tgi", "Text Generation Inference", _serving("TGI", needs_safetensors=True)),
        Runtime("sentence-transformers", "sentence-transformers", _sentence_transformers),
        Runtime("diffusers", "Hugging Face diffusers", _diffusers),
        Runtime("stable-diffusion", "AUTOMATIC1111 stable-diffusion-webui", _image_ui("stable-diffusion-webui")),
        Runtime("comfyui", "ComfyUI", _image_ui("ComfyUI")),
        Runtime("peft", "PEFT adapters", _peft),
        Runtime("onnxruntime", "ONNX Runtime", _onnxruntime),
        Runtime("torchscript", "TorchScript (torch.jit)", _torchscript),
        Runtime("pytorch", "plain PyTorch (torch.load / safetensors.torch)", _pytorch),
    )
}


def check_runtime(config: BaseModelConfig, runtime: str) -> Compatibility:
    entry = RUNTIMES.get(runtime)
    if entry is None:
        return Compatibility(runtime, False, f"unknown runtime; known: {', '.join(RUNTIMES)}")
    compatible, reason = entry.rule(config)
    return Compatibility(runtime, compatible, reason)
