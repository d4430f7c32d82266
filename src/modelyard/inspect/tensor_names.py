"""Recognise what a weights file holds from its tensor names and shapes alone.

A checkpoint without a config.json (a Stable Diffusion single file, a torchvision detector, a
timm ViT, an RL policy) still says what it is through its state dict keys: diffusers decides
single-file families this way (`single_file_utils.py`, model-formats.md section 5), and the other
rules below follow the key layouts torchvision, timm, YOLOX, Hugging Face and Stable-Baselines3
write. Every rule needs only names and shapes, which headers carry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Shapes = Mapping[str, tuple[int, ...]]

_SD_PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class TensorEvidence:
    """What the tensor names say: a model type and family, and facts read off shapes."""

    model_type: str
    family: str
    architecture: str | None = None
    task: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def recognise(shapes: Shapes) -> TensorEvidence | None:
    """The first rule that matches, most specific first; None when nothing does."""
    if not shapes:
        return None
    for rule in _RULES:
        evidence = rule(shapes)
        if evidence is not None:
            return evidence
    return None


def _has(shapes: Shapes, *names: str) -> bool:
    return all(name in shapes for name in names)


def _any_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(name.startswith(prefix) for name in shapes)


def _count_blocks(shapes: Shapes, pattern: str) -> int:
    """How many distinct indices `pattern` (a regex with one group) matches."""
    compiled = re.compile(pattern)
    return len({m.group(1) for name in shapes if (m := compiled.match(name))})


def _dim(shapes: Shapes, name: str, index: int) -> int | None:
    shape = shapes.get(name)
    if not shape:
        return None
    try:
        return shape[index]
    except IndexError:
        return None


# -- image generation ------------------------------------------------------------------------


def _strip(shapes: Shapes, prefix: str) -> dict[str, tuple[int, ...]]:
    return {name[len(prefix) :]: shape for name, shape in shapes.items() if name.startswith(prefix)}


def _stable_diffusion(shapes: Shapes) -> TensorEvidence | None:
    facts: dict[str, Any] = {"checkpoint_type": "checkpoint"}
    bare = _strip(shapes, _SD_PREFIX) or dict(shapes)
    if _any_prefix(shapes, "first_stage_model."):
        facts["baked_vae"] = True
    if "single_stream_modulation.lin.weight" in bare:
        return TensorEvidence("image", "flux", "Flux.2", "text-to-image", {**facts, "base_model": "Flux"})
    if "double_blocks.0.img_attn.norm.key_norm.scale" in bare:
        dev = "guidance_in.in_layer.bias" in bare
        variant = "dev" if dev else "schnell"
        channels = _dim(bare, "img_in.weight", 1)
        if dev and channels == 384:
            variant = "fill"
        elif dev and channels == 128:
            variant = "depth"
        return TensorEvidence(
            "image", "flux", "Flux.1", "text-to-image", {**facts, "base_model": "Flux", "variant": variant}
        )
    if "joint_blocks.0.context_block.adaLN_modulation.1.bias" in bare:
        variant = "3.5-large" if "joint_blocks.37.x_block.mlp.fc1.weight" in bare else "3-medium"
        if _dim(bare, "pos_embed", 1) == 147456:
            variant = "3.5-medium"
        return TensorEvidence(
            "image", "stable-diffusion", "SD3", "text-to-image", {**facts, "base_model": "SD3", "variant": variant}
        )
    if "edm_mean" in shapes:
        return TensorEvidence(
            "image",
            "stable-diffusion",
            "Playground v2.5",
            "text-to-image",
            {**facts, "base_model": "SDXL", "variant": "playground-v2.5"},
        )
    if _has(shapes, "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"):
        return TensorEvidence(
            "image", "stable-diffusion", "SDXL", "text-to-image", {**facts, "base_model": "SDXL", **_inpainting(shapes)}
        )
    if _has(shapes, "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"):
        return TensorEvidence(
            "image", "stable-diffusion", "SDXL", "image-to-image", {**facts, "base_model": "SDXL", "variant": "refiner"}
        )
    context = _dim(shapes, _SD_PREFIX + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight", -1)
    if context == 1024:
        return TensorEvidence(
            "image", "stable-diffusion", "SD 2", "text-to-image", {**facts, "base_model": "SD 2", **_inpainting(shapes)}
        )
    if context == 768 or _has(shapes, _SD_PREFIX + "output_blocks.11.0.skip_connection.weight"):
        return TensorEvidence(
            "image",
            "stable-diffusion",
            "SD 1.5",
            "text-to-image",
            {**facts, "base_model": "SD 1.5", **_inpainting(shapes)},
        )
    return None


def _inpainting(shapes: Shapes) -> dict[str, Any]:
    if _dim(shapes, _SD_PREFIX + "input_blocks.0.0.weight", 1) == 9:
        return {"variant": "inpainting"}
    return {}


def _kohya_lora(shapes: Shapes) -> TensorEvidence | None:
    if not any(
        name.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_transformer_")) for name in shapes
    ):
        return None
    facts: dict[str, Any] = {"checkpoint_type": "lora"}
    if _any_prefix(shapes, "lora_te1_") or _any_prefix(shapes, "lora_te2_"):
        facts["base_model"] = "SDXL"
    ranks = [shape[0] for name, shape in shapes.items() if name.endswith("lora_down.weight") and shape]
    if ranks:
        facts["network_dim"] = max(set(ranks), key=ranks.count)
    return TensorEvidence("image", "stable-diffusion", None, "text-to-image", facts)


def _diffusers_lora(shapes: Shapes) -> TensorEvidence | None:
    lora = [name for name in shapes if ".lora" in name or "lora_A" in name or "lora.down" in name]
    if not lora or not all(
        name.startswith(("unet.", "transformer.", "text_encoder.", "text_encoder_2.")) for name in lora
    ):
        return None
    facts: dict[str, Any] = {"checkpoint_type": "lora"}
    if _any_prefix(shapes, "text_encoder_2."):
        facts["base_model"] = "SDXL"
    return TensorEvidence("image", "diffusers", None, "text-to-image", facts)


def _textual_inversion(shapes: Shapes) -> TensorEvidence | None:
    names = set(shapes)
    a1111 = any(name.startswith("string_to_param.") for name in names)  # A1111's .pt embeddings
    if names in ({"emb_params"}, {"clip_l", "clip_g"}) or a1111:
        facts: dict[str, Any] = {"checkpoint_type": "embedding"}
        if names == {"clip_l", "clip_g"}:
            facts["base_model"] = "SDXL"
        else:
            width = _dim(shapes, "emb_params", -1) or next(
                (shape[-1] for name, shape in shapes.items() if name.startswith("string_to_param.") and shape), None
            )
            facts["base_model"] = {768: "SD 1.5", 1024: "SD 2"}.get(width or 0)
        return TensorEvidence("image", "stable-diffusion", None, "text-to-image", facts)
    return None


def _vae(shapes: Shapes) -> TensorEvidence | None:
    if not _has(shapes, "encoder.conv_in.weight", "decoder.conv_out.weight"):
        return None
    latent = _dim(shapes, "encoder.conv_out.weight", 0)  # 2 x latent channels
    facts: dict[str, Any] = {"checkpoint_type": "vae"}
    if latent == 32:
        facts["latent_channels"] = 16  # Flux and SD3 VAEs
    elif latent == 8:
        facts["latent_channels"] = 4  # SD 1.x, 2.x and SDXL VAEs
    return TensorEvidence("image", "stable-diffusion", "AutoencoderKL", None, facts)


# -- language and embedding models ---------------------------------------------------------------


def _peft_lora(shapes: Shapes) -> TensorEvidence | None:
    if any(".lora_A." in name or ".lora_B." in name or "lora_embedding_A" in name for name in shapes):
        ranks = [shape[0] for name, shape in shapes.items() if ".lora_A." in name and len(shape) == 2]
        facts: dict[str, Any] = {"peft_type": "LORA"}
        if ranks:
            facts["r"] = max(set(ranks), key=ranks.count)
        return TensorEvidence("adapter", "peft", None, None, facts)
    return None


def _decoder_lm(shapes: Shapes) -> TensorEvidence | None:
    for prefix in ("model.", ""):
        if f"{prefix}embed_tokens.weight" in shapes and _any_prefix(shapes, f"{prefix}layers.0.self_attn."):
            layers = _count_blocks(shapes, rf"^{re.escape(prefix)}layers\.(\d+)\.")
            vocab, hidden = (shapes[f"{prefix}embed_tokens.weight"] + (0, 0))[:2]
            return TensorEvidence(
                "llm",
                "llama",
                None,
                "text-generation",
                {"num_layers": layers, "vocab_size": vocab, "hidden_size": hidden},
            )
    for prefix in ("transformer.", ""):
        if f"{prefix}wte.weight" in shapes and _any_prefix(shapes, f"{prefix}h.0.attn."):
            layers = _count_blocks(shapes, rf"^{re.escape(prefix)}h\.(\d+)\.")
            vocab, hidden = (shapes[f"{prefix}wte.weight"] + (0, 0))[:2]
            context = _dim(shapes, f"{prefix}wpe.weight", 0)
            return TensorEvidence(
                "llm",
                "gpt2",
                "GPT2LMHeadModel",
                "text-generation",
                {"num_layers": layers, "vocab_size": vocab, "hidden_size": hidden, "context_length": context},
            )
    if _any_prefix(shapes, "gpt_neox.layers.0."):
        return TensorEvidence(
            "llm",
            "gpt_neox",
            "GPTNeoXForCausalLM",
            "text-generation",
            {"num_layers": _count_blocks(shapes, r"^gpt_neox\.layers\.(\d+)\.")},
        )
    return None


def _text_encoder(shapes: Shapes) -> TensorEvidence | None:
    for family in ("bert", "roberta", "mpnet", "xlm_roberta", "distilbert", "deberta", "electra"):
        for prefix in (f"{family}.", ""):
            embeddings = f"{prefix}embeddings.word_embeddings.weight"
            if embeddings in shapes and (
                _any_prefix(shapes, f"{prefix}encoder.layer.0.") or _any_prefix(shapes, f"{prefix}transformer.layer.0.")
            ):
                vocab, hidden = (shapes[embeddings] + (0, 0))[:2]
                positions = _dim(shapes, f"{prefix}embeddings.position_embeddings.weight", 0)
                name = family if prefix else "bert"
                return TensorEvidence(
                    "embedding",
                    name,
                    None,
                    "embed",
                    {"embedding_dim": hidden, "vocab_size": vocab, "max_seq_length": positions},
                )
    return None


# -- vision ------------------------------------------------------------------------------------------


def _faster_rcnn(shapes: Shapes) -> TensorEvidence | None:
    if _any_prefix(shapes, "rpn.head.") and "roi_heads.box_predictor.cls_score.weight" in shapes:
        backbone = "resnet50-fpn" if _any_prefix(shapes, "backbone.fpn.") else "resnet50"
        classes = _dim(shapes, "roi_heads.box_predictor.cls_score.weight", 0)
        return TensorEvidence(
            "vision", "faster-rcnn", "FasterRCNN", "detection", {"num_labels": classes, "backbone": backbone}
        )
    return None


_YOLOX_WIDTHS = {16: "nano", 24: "tiny", 32: "s", 48: "m", 64: "l", 80: "x"}


def _yolox(shapes: Shapes) -> TensorEvidence | None:
    if _any_prefix(shapes, "backbone.backbone.stem.") and _any_prefix(shapes, "head.cls_preds.0."):
        classes = _dim(shapes, "head.cls_preds.0.weight", 0)
        stem = _dim(shapes, "backbone.backbone.stem.conv.conv.weight", 0)
        variant = _YOLOX_WIDTHS.get(stem or 0)
        return TensorEvidence(
            "vision",
            "yolox",
            f"YOLOX-{variant}" if variant else "YOLOX",
            "detection",
            {"num_labels": classes, "backbone": "darknet-csp"},
        )
    return None


_RESNET_DEPTHS = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}


def _resnet(shapes: Shapes) -> TensorEvidence | None:
    for prefix in ("", "backbone.", "model.", "encoder."):
        if not _has(
            shapes, f"{prefix}conv1.weight", f"{prefix}layer1.0.conv1.weight", f"{prefix}layer4.0.conv1.weight"
        ):
            continue
        bottleneck = f"{prefix}layer1.0.conv3.weight" in shapes
        blocks = _count_blocks(shapes, rf"^{re.escape(prefix)}layer3\.(\d+)\.")
        depth = _RESNET_DEPTHS.get((bottleneck, blocks))
        facts: dict[str, Any] = {"num_channels": _dim(shapes, f"{prefix}conv1.weight", 1)}
        task = "embed"
        if f"{prefix}fc.weight" in shapes:
            facts["num_labels"] = _dim(shapes, f"{prefix}fc.weight", 0)
            task = "classification"
        projector = _projector_dim(shapes)
        if projector is not None:
            facts["embedding_dim"] = projector
            task = "embed"
        name = f"resnet{depth}" if depth else "resnet"
        return TensorEvidence("vision", "resnet", name, task, facts)
    return None


def _projector_dim(shapes: Shapes) -> int | None:
    """The output width of a projection head (`projector.*`, `proj.*`, `head.proj*`)."""
    heads = [
        (name, shape)
        for name, shape in shapes.items()
        if name.startswith(("projector.", "proj.", "projection.", "head.proj"))
        and name.endswith("weight")
        and len(shape) == 2
    ]
    if not heads:
        return None
    return sorted(heads)[-1][1][0]


def _vit(shapes: Shapes) -> TensorEvidence | None:
    for prefix in ("", "vit.", "model.", "visual."):
        patch = shapes.get(f"{prefix}patch_embed.proj.weight") or shapes.get(
            f"{prefix}embeddings.patch_embeddings.projection.weight"
        )
        if patch is None or len(patch) != 4:
            continue
        width, channels, patch_size = patch[0], patch[1], patch[2]
        positions = shapes.get(f"{prefix}pos_embed") or shapes.get(f"{prefix}embeddings.position_embeddings")
        facts: dict[str, Any] = {"embedding_dim": width, "num_channels": channels, "patch_size": patch_size}
        if positions is not None and len(positions) == 3 and positions[1] > 1:
            side = math.isqrt(positions[1] - 1)
            if side * side == positions[1] - 1:
                facts["image_size"] = side * patch_size
        layers = _count_blocks(shapes, rf"^{re.escape(prefix)}(?:blocks|encoder\.layer)\.(\d+)\.")
        facts["num_layers"] = layers or None
        task = "embed"
        head = shapes.get(f"{prefix}head.weight") or shapes.get("classifier.weight")
        if head is not None and len(head) == 2:
            facts["num_labels"] = head[0]
            task = "classification"
        return TensorEvidence("vision", "vit", None, task, facts)
    return None


def _clip(shapes: Shapes) -> TensorEvidence | None:
    if _any_prefix(shapes, "text_model.embeddings.") and _any_prefix(shapes, "vision_model.embeddings."):
        return TensorEvidence(
            "multimodal", "clip", "CLIPModel", "embed", {"embedding_dim": _dim(shapes, "text_projection.weight", 0)}
        )
    return None


# -- audio -------------------------------------------------------------------------------------------


def _speech(shapes: Shapes) -> TensorEvidence | None:
    for family in ("wav2vec2", "hubert", "wavlm", "data2vec_audio"):
        for prefix in (f"{family}.", ""):
            if _any_prefix(shapes, f"{prefix}feature_extractor.conv_layers.0.") and _any_prefix(
                shapes, f"{prefix}encoder.layers.0."
            ):
                hidden = _dim(shapes, f"{prefix}feature_projection.projection.weight", 0)
                name = family if prefix else "wav2vec2"
                task = "speech-recognition" if "lm_head.weight" in shapes else "embed"
                return TensorEvidence(
                    "audio",
                    name,
                    None,
                    task,
                    {
                        "embedding_dim": hidden,
                        "num_layers": _count_blocks(shapes, rf"^{re.escape(prefix)}encoder\.layers\.(\d+)\."),
                    },
                )
    if _has(shapes, "model.encoder.conv1.weight", "model.decoder.embed_tokens.weight"):
        mels = _dim(shapes, "model.encoder.conv1.weight", 1)
        return TensorEvidence(
            "audio", "whisper", "WhisperForConditionalGeneration", "speech-recognition", {"num_mel_bins": mels}
        )
    return None


# -- decision ------------------------------------------------------------------------------------------


def _policy(shapes: Shapes) -> TensorEvidence | None:
    names = list(shapes)
    has_actor = any(
        n.startswith(("actor.", "pi.", "policy_net.", "mlp_extractor.policy_net.", "action_net.", "policy."))
        for n in names
    )
    has_critic = any(
        n.startswith(("critic.", "vf.", "value_net.", "mlp_extractor.value_net.", "value.", "q_net.", "qf1."))
        for n in names
    )
    if not (has_actor or any(n.startswith("q_net.") for n in names)):
        return None
    if not (has_actor and has_critic) and not any(n.startswith("q_net.") for n in names):
        return None
    first_layers = [shape for name, shape in sorted(shapes.items()) if name.endswith("0.weight") and len(shape) == 2]
    facts: dict[str, Any] = {"has_actor": has_actor, "has_critic": has_critic}
    if first_layers:
        facts["observation_dim"] = first_layers[0][1]
    for head in ("action_net.weight", "actor.mu.weight", "pi.weight", "actor.fc_out.weight"):
        if head in shapes and len(shapes[head]) == 2:
            facts["action_dim"] = shapes[head][0]
            break
    algorithm = "dqn" if any(n.startswith("q_net.") for n in names) else ("actor-critic" if has_critic else None)
    framework = "stable-baselines3" if any(n.startswith("mlp_extractor.") for n in names) else "pytorch"
    return TensorEvidence(
        "policy", algorithm or "policy", None, "control", {**facts, "algorithm": algorithm, "framework": framework}
    )


_RULES: tuple[Callable[[Shapes], TensorEvidence | None], ...] = (
    _stable_diffusion,
    _kohya_lora,
    _diffusers_lora,
    _textual_inversion,
    _peft_lora,
    _vae,
    _clip,
    _faster_rcnn,
    _yolox,
    _speech,
    _decoder_lm,
    _text_encoder,
    _vit,
    _resnet,
    _policy,
)
