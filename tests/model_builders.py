"""Small but real model folders and files for the catalog tests, written with the official
libraries (safetensors, gguf) and JSON shaped like what transformers, PEFT, diffusers and
sentence-transformers write. Shapes are tiny; names and layouts are the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import save_file

from conftest import backdate


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def _tensors(shapes: dict[str, tuple[int, ...]], dtype: Any = np.float16) -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, dtype) for name, shape in shapes.items()}


def safetensors_file(path: Path, shapes: dict[str, tuple[int, ...]], dtype: Any = np.float16, **metadata: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(shapes, dtype), str(path), metadata=metadata or None)
    return path


def llama_folder(root: Path, *, chat_template: bool = True, card: bool = True) -> Path:
    """A Llama-style transformers folder: config, tokenizer files, generation defaults, card."""
    safetensors_file(
        root / "model.safetensors",
        {
            "model.embed_tokens.weight": (64, 8),
            "model.layers.0.self_attn.q_proj.weight": (8, 8),
            "model.layers.0.mlp.up_proj.weight": (16, 8),
            "lm_head.weight": (64, 8),
        },
        np.float16,
        format="pt",
    )
    _write_json(
        root / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "max_position_embeddings": 131072,
            "vocab_size": 64,
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "torch_dtype": "bfloat16",
            "rope_scaling": {"factor": 32.0, "rope_type": "llama3"},
        },
    )
    tokenizer: dict[str, Any] = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": {"__type": "AddedToken", "content": "<|eot_id|>", "special": True},
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template:
        tokenizer["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    _write_json(root / "tokenizer_config.json", tokenizer)
    _write_json(root / "special_tokens_map.json", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    _write_json(root / "generation_config.json", {"temperature": 0.6, "top_p": 0.9, "eos_token_id": [128001, 128009]})
    if card:
        (root / "README.md").write_text(
            "---\nlicense: llama3.2\nbase_model: meta-llama/Llama-3.2-1B\nlanguage:\n- en\n- ja\n"
            "tags:\n- chat\npipeline_tag: text-generation\n---\n# A small Llama\n"
        )
    backdate(root)
    return root


def gguf_file(path: Path, *, file_type: int = 15, general_type: str | None = None, pooling: int | None = None) -> Path:
    """A GGUF written by gguf-py: llama architecture, a small tokenizer, Q4_K_M by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(8192)
    writer.add_embedding_length(32)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_file_type(file_type)
    writer.add_license("apache-2.0")
    if general_type is not None:
        writer.add_type(general_type)
    if pooling is not None:
        writer.add_uint32("llama.pooling_type", pooling)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(40)])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.add_tensor("token_embd.weight", np.zeros((40, 32), np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def peft_folder(root: Path, *, base: str | None = "meta-llama/Llama-3.2-3B-Instruct", r: int = 16) -> Path:
    safetensors_file(
        root / "adapter_model.safetensors",
        {
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": (r, 32),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": (32, r),
        },
        np.float32,
    )
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "target_modules": ["v_proj", "q_proj"],
        "bias": "none",
    }
    if base is not None:
        config["base_model_name_or_path"] = base
    _write_json(root / "adapter_config.json", config)
    _write_json(root / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>"})
    _write_json(root / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>"})
    backdate(root)
    return root


def diffusers_folder(root: Path, pipeline: str = "StableDiffusionXLPipeline", context: int = 2048) -> Path:
    _write_json(
        root / "model_index.json",
        {
            "_class_name": pipeline,
            "_diffusers_version": "0.31.0",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        },
    )
    _write_json(
        root / "unet" / "config.json",
        {"_class_name": "UNet2DConditionModel", "cross_attention_dim": context, "sample_size": 128},
    )
    safetensors_file(root / "unet" / "diffusion_pytorch_model.safetensors", {"conv_in.weight": (4, 4, 3, 3)})
    safetensors_file(root / "unet" / "diffusion_pytorch_model.fp16.safetensors", {"conv_in.weight": (4, 4, 3, 3)})
    _write_json(root / "vae" / "config.json", {"_class_name": "AutoencoderKL"})
    safetensors_file(root / "vae" / "diffusion_pytorch_model.safetensors", {"encoder.conv_in.weight": (8, 3, 3, 3)})
    _write_json(
        root / "text_encoder" / "config.json", {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model"}
    )
    safetensors_file(
        root / "text_encoder" / "model.safetensors", {"text_model.embeddings.token_embedding.weight": (10, 8)}
    )
    _write_json(
        root / "scheduler" / "scheduler_config.json",
        {"_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon"},
    )
    backdate(root)
    return root


def sentence_transformers_folder(root: Path) -> Path:
    _write_json(
        root / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    _write_json(root / "1_Pooling" / "config.json", {"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True})
    _write_json(root / "sentence_bert_config.json", {"max_seq_length": 384, "do_lower_case": False})
    _write_json(root / "config_sentence_transformers.json", {"similarity_fn_name": "cosine", "prompts": {}})
    _write_json(root / "config.json", {"architectures": ["MPNetModel"], "model_type": "mpnet", "hidden_size": 768})
    safetensors_file(root / "model.safetensors", {"embeddings.word_embeddings.weight": (30, 8)})
    backdate(root)
    return root


SD15_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
    "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
}
SDXL_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
}
FLUX_DEV_KEYS = {
    "double_blocks.0.img_attn.norm.key_norm.scale": (128,),
    "guidance_in.in_layer.bias": (3072,),
    "img_in.weight": (3072, 64),
}
KOHYA_LORA_KEYS = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (8, 320),
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 8),
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": (),
}
VIT_TIMM_KEYS = {
    "cls_token": (1, 1, 32),
    "pos_embed": (1, 197, 32),
    "patch_embed.proj.weight": (32, 3, 16, 16),
    "blocks.0.attn.qkv.weight": (96, 32),
    "blocks.1.attn.qkv.weight": (96, 32),
}
RESNET50_KEYS = {
    "conv1.weight": (64, 3, 7, 7),
    **{f"layer1.{i}.conv1.weight": (64, 64, 1, 1) for i in range(3)},
    **{f"layer1.{i}.conv3.weight": (256, 64, 1, 1) for i in range(3)},
    **{f"layer3.{i}.conv1.weight": (256, 1024, 1, 1) for i in range(6)},
    "layer4.0.conv1.weight": (512, 1024, 1, 1),
    "projector.0.weight": (2048, 2048),
    "projector.2.weight": (512, 2048),
}
FASTER_RCNN_KEYS = {
    "backbone.body.conv1.weight": (64, 3, 7, 7),
    "backbone.fpn.inner_blocks.0.0.weight": (256, 256, 1, 1),
    "rpn.head.conv.0.0.weight": (256, 256, 3, 3),
    "roi_heads.box_predictor.cls_score.weight": (91, 1024),
}
YOLOX_S_KEYS = {
    "backbone.backbone.stem.conv.conv.weight": (32, 12, 3, 3),
    "head.cls_preds.0.weight": (80, 128, 1, 1),
}
SB3_PPO_KEYS = {
    "mlp_extractor.policy_net.0.weight": (64, 17),
    "mlp_extractor.value_net.0.weight": (64, 17),
    "action_net.weight": (6, 64),
    "value_net.weight": (1, 64),
}
