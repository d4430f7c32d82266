"""Which modality a Hugging Face `model_type` belongs to, and what task an architecture name means.

transformers names a model family in config.json's `model_type` and its head in the
architecture's suffix (`...ForCausalLM`, `...ForObjectDetection`). These tables turn both into
modelyard's model types and tasks. A family missing here still gets a type from its suffix.
"""

from __future__ import annotations

LLM_FAMILIES = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3_text", "phi", "phi3", "phimoe", "gpt2", "gpt_neox", "gptj", "gpt_neo", "gpt_bigcode", "falcon",
        "opt", "bloom", "mpt", "stablelm", "starcoder2", "deepseek_v2", "deepseek_v3", "cohere", "cohere2",
        "olmo", "olmo2", "olmoe", "granite", "granitemoe", "internlm2", "baichuan", "chatglm", "glm", "glm4",
        "t5", "mt5", "umt5", "bart", "mbart", "pegasus", "marian", "jamba", "mamba", "mamba2", "rwkv",
        "recurrent_gemma", "nemotron", "exaone", "smollm3", "ernie4_5", "hunyuan_v1_dense", "gpt_oss",
        "codegen", "ctrl", "openai-gpt", "xglm", "persimmon", "fuyu",
    }
)  # fmt: skip
TEXT_ENCODER_FAMILIES = frozenset(
    {
        "bert", "roberta", "xlm-roberta", "xlm_roberta", "mpnet", "distilbert", "deberta", "deberta-v2",
        "electra", "albert", "camembert", "modernbert", "nomic_bert", "new", "ernie", "xlnet", "longformer",
        "bge", "e5", "jina_bert", "roformer", "luke", "canine", "funnel", "mobilebert", "megatron-bert",
    }
)  # fmt: skip
VISION_FAMILIES = frozenset(
    {
        "vit", "deit", "beit", "swin", "swinv2", "convnext", "convnextv2", "resnet", "regnet", "efficientnet",
        "mobilenet_v1", "mobilenet_v2", "mobilevit", "mobilevitv2", "dinov2", "dinov2_with_registers", "dinov3_vit",
        "levit", "poolformer", "cvt", "detr", "conditional_detr", "deformable_detr", "yolos", "rt_detr",
        "rt_detr_v2", "table-transformer", "dpt", "segformer", "mask2former", "maskformer", "upernet", "sam",
        "depth_anything", "focalnet", "hiera", "siglip_vision_model", "clip_vision_model", "dit", "bit",
        "vit_mae", "vit_msn", "vit_hybrid", "timm_wrapper", "glpn", "zoedepth", "oneformer", "d_fine",
        "grounding-dino", "owlvit", "owlv2", "textnet", "pvt", "pvt_v2", "van", "nat", "dinat", "efficientformer",
    }
)  # fmt: skip
AUDIO_FAMILIES = frozenset(
    {
        "wav2vec2", "wav2vec2-bert", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech",
        "unispeech-sat", "sew", "sew-d", "whisper", "speech_to_text", "speecht5", "encodec",
        "audio-spectrogram-transformer",
        "musicgen", "musicgen_melody", "bark", "vits", "mimi", "dac", "moonshine", "seamless_m4t", "mctct",
        "pop2piano", "univnet", "fastspeech2_conformer", "clvp", "parakeet", "dia", "csm",
    }
)  # fmt: skip
VIDEO_FAMILIES = frozenset({"videomae", "timesformer", "vivit", "x_clip", "tvp", "vjepa2"})
MULTIMODAL_FAMILIES = frozenset(
    {
        "llava", "llava_next", "llava_onevision", "llava_next_video", "qwen2_vl", "qwen2_5_vl", "qwen2_audio",
        "qwen2_5_omni", "mllama", "paligemma", "idefics", "idefics2", "idefics3", "blip", "blip-2",
        "instructblip", "kosmos-2", "clip", "siglip", "siglip2", "chameleon", "gemma3", "gemma3n", "pixtral",
        "smolvlm", "florence2", "align", "altclip", "chinese_clip", "clap", "flava", "git", "owlvit", "aria",
        "aya_vision", "internvl", "janus", "llama4", "mistral3", "phi4_multimodal", "video_llava", "emu3",
    }
)  # fmt: skip
POLICY_FAMILIES = frozenset({"decision_transformer", "trajectory_transformer"})

# Architecture suffix -> task, longest suffixes first so that e.g. ...ForImageClassification wins.
ARCHITECTURE_TASKS: tuple[tuple[str, str], ...] = (
    ("ForImageClassification", "classification"),
    ("ForVideoClassification", "classification"),
    ("ForAudioClassification", "audio-classification"),
    ("ForAudioFrameClassification", "audio-classification"),
    ("ForSequenceClassification", "classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForObjectDetection", "detection"),
    ("ForSemanticSegmentation", "segmentation"),
    ("ForInstanceSegmentation", "segmentation"),
    ("ForUniversalSegmentation", "segmentation"),
    ("ForMaskGeneration", "segmentation"),
    ("ForDepthEstimation", "depth-estimation"),
    ("ForCTC", "speech-recognition"),
    ("ForSpeechSeq2Seq", "speech-recognition"),
    ("ForXVector", "speaker-verification"),
    ("ForTextToSpeech", "text-to-speech"),
    ("ForMaskedLM", "fill-mask"),
    ("ForMaskedImageModeling", "embed"),
    ("ForPreTraining", "embed"),
    ("ForImageTextToText", "image-text-to-text"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("Model", "embed"),
)

# What a family's task becomes for ForConditionalGeneration heads, which mean different things.
CONDITIONAL_GENERATION_TASKS = {
    "whisper": "speech-recognition",
    "speech_to_text": "speech-recognition",
    "seamless_m4t": "speech-recognition",
    "musicgen": "text-to-audio",
    "musicgen_melody": "text-to-audio",
    "bark": "text-to-audio",
    "pop2piano": "audio-generation",
}


def task_of(architecture: str | None, family: str | None) -> str | None:
    if architecture is None:
        return None
    if architecture.endswith("ForConditionalGeneration"):
        if family in CONDITIONAL_GENERATION_TASKS:
            return CONDITIONAL_GENERATION_TASKS[family]
        if family in MULTIMODAL_FAMILIES:
            return "image-text-to-text"
    for suffix, task in ARCHITECTURE_TASKS:
        if architecture.endswith(suffix):
            return task
    return None


def model_type_of(family: str | None, architecture: str | None, has_vision: bool, has_text: bool) -> str | None:
    """The modality of a config.json: by family first, then by the architecture's head."""
    normalized = (family or "").lower()
    if normalized in POLICY_FAMILIES:
        return "policy"
    if normalized in MULTIMODAL_FAMILIES or (has_vision and has_text):
        return "multimodal"
    if normalized in VIDEO_FAMILIES:
        return "video"
    if normalized in AUDIO_FAMILIES:
        return "audio"
    if normalized in VISION_FAMILIES:
        return "vision"
    if normalized in TEXT_ENCODER_FAMILIES:
        task = task_of(architecture, normalized)
        return "embedding" if task in (None, "embed", "fill-mask") else "llm"
    if normalized in LLM_FAMILIES:
        return "llm"
    task = task_of(architecture, normalized)
    if task in ("text-generation", "text2text-generation"):
        return "llm"
    if task in ("detection", "segmentation", "depth-estimation"):
        return "vision"
    if task in ("speech-recognition", "audio-classification", "speaker-verification", "text-to-speech"):
        return "audio"
    return None
