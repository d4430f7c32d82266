"""Marketplace metadata import: Hub model-info and CivitAI model-version answers mapped to typed
configurations, merged into registered versions after their hashes check out, and the CLI.

Every answer here is a saved answer written as a dict shaped like the real services' (fields,
nesting, spelling, upper-case CivitAI hex); nothing reaches the network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, write_safetensors
from modelyard.errors import ConflictError, InvalidInputError, RemoteError
from modelyard.marketplace import MarketplaceFile, MarketplaceImport
from modelyard.marketplace.apply import check_files, import_into, merge_configs
from modelyard.marketplace.civitai import commercial_uses, import_model_version, parse_version_id
from modelyard.marketplace.huggingface import import_model_info, model_info_url, read_model_info
from modelyard.modelconfig import (
    AdapterConfig,
    AudioConfig,
    EmbeddingConfig,
    ImageConfig,
    LlmConfig,
    UnknownConfig,
    VisionConfig,
)
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry

Cli = Callable[..., CliResult]

CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{%- endfor %}"
)
GGUF_SHA = "5f1a8e9b6ad3b0f1c8c7f0c6a1e7f3e0f2b9c4d8a6b5e4f3a2b1c0d9e8f7a6b5"
PTH_SHA = "1b0d7f3c4e5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def llama_info(weights_sha: str = "a" * 64) -> dict[str, Any]:
    """A Llama-3.2-style instruct repository: safetensors, an original checkpoint, one GGUF."""
    return {
        "_id": "66eaf1d5c7f4b5e6a1f0c9d2",
        "id": "acme/Llama-3.2-1B-Instruct",
        "modelId": "acme/Llama-3.2-1B-Instruct",
        "author": "acme",
        "sha": "9213176726f574b556790deb65791e0c5aa438b6",
        "lastModified": "2024-10-24T15:07:29.000Z",
        "createdAt": "2024-09-18T15:12:47.000Z",
        "private": False,
        "disabled": False,
        "gated": False,
        "downloads": 2861234,
        "likes": 1048,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": [
            "transformers",
            "safetensors",
            "gguf",
            "llama",
            "text-generation",
            "llama-3",
            "conversational",
            "en",
            "de",
            "arxiv:2204.05149",
            "license:llama3.2",
            "autotrain_compatible",
            "text-generation-inference",
            "endpoints_compatible",
            "region:us",
        ],
        "cardData": {
            "language": ["en", "de", "fr"],
            "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["llama-3", "conversational"],
            "license": "llama3.2",
            "base_model": ["meta-llama/Llama-3.2-1B"],
            "datasets": None,
            "extra_gated_prompt": None,
        },
        "config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "tokenizer_config": {
                "bos_token": "<|begin_of_text|>",
                "eos_token": {"__type": "AddedToken", "content": "<|eot_id|>", "lstrip": False, "rstrip": False},
                "pad_token": None,
                "chat_template": CHAT_TEMPLATE,
            },
        },
        "transformersInfo": {
            "auto_model": "AutoModelForCausalLM",
            "pipeline_tag": "text-generation",
            "processor": "AutoTokenizer",
        },
        "siblings": [
            {"rfilename": ".gitattributes", "blobId": "a6344aac8c09253b3b630fb776ae94478aa0275b", "size": 1519},
            {"rfilename": "config.json", "blobId": "8e7a6c3b2f0e1d4c5b6a79880f1e2d3c4b5a6978", "size": 877},
            {"rfilename": "generation_config.json", "blobId": "b1f0e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3", "size": 189},
            {
                "rfilename": "model.safetensors",
                "blobId": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
                "size": 2471645608,
                "lfs": {"sha256": weights_sha, "size": 2471645608, "pointerSize": 135},
            },
            {
                "rfilename": "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
                "blobId": "c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a697",
                "size": 807694464,
                "lfs": {"sha256": GGUF_SHA.upper(), "size": 807694464, "pointerSize": 134},
            },
            {
                "rfilename": "original/consolidated.00.pth",
                "blobId": "d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f",
                "size": 2471678226,
                "lfs": {"sha256": PTH_SHA, "size": 2471678226, "pointerSize": 135},
            },
            {"rfilename": "tokenizer_config.json", "blobId": "e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e", "size": 54528},
        ],
        "spaces": ["acme/chat"],
        "safetensors": {"parameters": {"BF16": 1235814400}, "total": 1235814400},
        "gguf": {
            "total": 1235814432,
            "architecture": "llama",
            "context_length": 131072,
            "chat_template": CHAT_TEMPLATE,
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
        },
        "usedStorage": 7412174836,
        "baseModels": {"relation": "finetune", "models": [{"id": "meta-llama/Llama-3.2-1B"}]},
    }


SENTENCE_TRANSFORMERS_INFO: dict[str, Any] = {
    "id": "sentence-transformers/all-MiniLM-L6-v2",
    "author": "sentence-transformers",
    "sha": "c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
    "gated": False,
    "downloads": 98234512,
    "likes": 3411,
    "library_name": "sentence-transformers",
    "pipeline_tag": "sentence-similarity",
    "tags": ["sentence-transformers", "pytorch", "safetensors", "bert", "feature-extraction", "en"],
    "cardData": {"language": "en", "license": "apache-2.0", "datasets": ["s2orc", "ms_marco"]},
    "config": {"architectures": ["BertModel"], "model_type": "bert"},
    "transformersInfo": {"auto_model": "AutoModel", "pipeline_tag": "feature-extraction", "processor": "AutoTokenizer"},
    "siblings": [
        {"rfilename": "1_Pooling/config.json"},
        {"rfilename": "config.json"},
        {"rfilename": "model.safetensors", "lfs": {"sha256": "b" * 64, "size": 90868376, "pointerSize": 134}},
        {"rfilename": "modules.json"},
        {"rfilename": "sentence_bert_config.json"},
    ],
    "safetensors": {"parameters": {"I64": 512, "F32": 22713216}, "total": 22713728},
}

GATED_INFO: dict[str, Any] = {
    "id": "google/gemma-2-2b-it",
    "author": "google",
    "sha": "299a8560bedf22ed1c72a8a11e7dce4a7f9f51f8",
    "gated": "manual",
    "downloads": 312004,
    "likes": None,
    "pipeline_tag": "text-generation",
    "library_name": "transformers",
    "tags": None,
    "cardData": {"license": "gemma", "base_model": "google/gemma-2-2b"},
    "config": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "tokenizer_config": None},
    "siblings": None,
    "safetensors": None,
    "gguf": None,
}


def civitai_lora(sha: str = "c" * 64, name: str = "pixel_sprites.safetensors") -> dict[str, Any]:
    """A LORA version as GET /api/v1/model-versions/{id} answers it."""
    return {
        "id": 128713,
        "modelId": 4201,
        "name": "v1.0",
        "createdAt": "2023-07-23T22:00:46.318Z",
        "updatedAt": "2023-07-24T08:12:01.120Z",
        "status": "Published",
        "publishedAt": "2023-07-24T08:12:01.116Z",
        "trainedWords": ["pixel art", " pixelsprite ", ""],
        "trainingStatus": None,
        "trainingDetails": None,
        "baseModel": "SD 1.5",
        "baseModelType": "Standard",
        "earlyAccessEndsAt": None,
        "description": "<p>Sprites for 16-bit games.</p>",
        "uploadType": "Created",
        "air": "urn:air:sd1:lora:civitai:4201@128713",
        "stats": {"downloadCount": 51234, "ratingCount": 12, "rating": 4.9, "thumbsUpCount": 4321},
        "model": {
            "name": "Pixel Art Sprites",
            "type": "LORA",
            "nsfw": False,
            "poi": False,
            "allowCommercialUse": "{Image,RentCivit}",
            "allowDerivatives": True,
            "allowNoCredit": False,
        },
        "files": [
            {
                "id": 93442,
                "sizeKB": 147571.39,
                "name": name,
                "type": "Model",
                "pickleScanResult": "Success",
                "pickleScanMessage": "No Pickle imports",
                "virusScanResult": "Success",
                "virusScanMessage": None,
                "scannedAt": "2023-07-23T22:05:11.210Z",
                "metadata": {"format": "SafeTensor", "size": None, "fp": "fp16"},
                "hashes": {
                    "AutoV1": "7C3E4A1B",
                    "AutoV2": sha[:10].upper(),
                    "SHA256": sha.upper(),
                    "CRC32": "1A2B3C4D",
                    "BLAKE3": "E" * 64,
                    "AutoV3": "F1E2D3C4B5A6",
                },
                "primary": True,
                "downloadUrl": "https://civitai.com/api/download/models/128713",
            },
            {
                "id": 93443,
                "sizeKB": 20480.0,
                "name": "pixel_sprites_training_data.zip",
                "type": "Training Data",
                "metadata": {"format": "Other", "size": None, "fp": None},
                "hashes": {"SHA256": "D" * 64, "AutoV2": "D" * 10},
                "primary": False,
            },
        ],
        "images": [
            {
                "url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/0c1b/width=512/1.jpeg",
                "nsfwLevel": 1,
                "width": 512,
                "height": 768,
                "hash": "U9Fr~}oz00of~pof9Fj[?bWBIUj[",
                "type": "image",
                "meta": {"prompt": "pixel art, knight", "sampler": "DPM++ 2M Karras", "steps": 25, "cfgScale": 7,
                         "clipSkip": 2, "seed": 1234, "Size": "512x768"},
                "availability": "Public",
                "hasMeta": True,
            },
            {
                "url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/9f2e/width=512/2.jpeg",
                "nsfwLevel": 4,
                "width": 512,
                "height": 512,
                "meta": {"sampler": "Euler a", "steps": "lots", "cfgScale": 7.5, "clipSkip": 2},
            },
            {"url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/3a4b/width=512/3.jpeg", "meta": None},
        ],
        "downloadUrl": "https://civitai.com/api/download/models/128713",
    }  # fmt: skip


CIVITAI_CHECKPOINT: dict[str, Any] = {
    "id": 354657,
    "modelId": 139562,
    "name": "V5.0 Inpainting",
    "baseModel": "SDXL 1.0",
    "baseModelType": "Inpainting",
    "trainedWords": [],
    "stats": {"downloadCount": 8120, "thumbsUpCount": None, "favoriteCount": 77},
    "model": {"name": "RealVisXL", "type": "Checkpoint", "nsfw": True, "allowCommercialUse": ["Image", "Rent", "Sell"]},
    "files": [
        {"name": "realvisxl_v50_vae.safetensors", "type": "VAE", "primary": False, "hashes": {"SHA256": "1" * 64}},
        {
            "name": "realvisxl_v50_inpainting.safetensors",
            "type": "Model",
            "primary": True,
            "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
            "hashes": {"SHA256": "2" * 64, "AutoV2": "2" * 10},
        },
    ],
    "images": [{"url": "https://image.civitai.com/a/b/1.jpeg", "nsfw": "Mature", "width": 832, "height": 1216}],
}

CIVITAI_CONTROLNET: dict[str, Any] = {
    "id": 44811,
    "modelId": 38784,
    "name": "v1.1 canny",
    "baseModel": "SD 1.5",
    "model": {"name": "ControlNet 1.1", "type": "Controlnet", "nsfw": False, "allowCommercialUse": "{}"},
    "files": [{"name": "control_v11p_sd15_canny.pth", "type": "Model", "metadata": {"format": "PickleTensor"}}],
}


# -- Hugging Face mapping ---------------------------------------------------------------------


def test_a_llama_instruct_answer_maps_every_field() -> None:
    imported = import_model_info(llama_info(), "acme/Llama-3.2-1B-Instruct")
    config = imported.config
    assert isinstance(config, LlmConfig)
    assert (config.architecture, config.model_family, config.task) == ("LlamaForCausalLM", "llama", "text-generation")
    assert config.tokenizer.bos_token == "<|begin_of_text|>"
    assert config.tokenizer.eos_token == "<|eot_id|>"  # an AddedToken object's content
    assert config.tokenizer.chat_template == CHAT_TEMPLATE
    assert (config.context_length, config.context_length_source) == (131072, "gguf.context_length")
    assert (config.license, config.base_model, config.languages) == (
        "llama3.2",
        "meta-llama/Llama-3.2-1B",
        ["en", "de", "fr"],
    )
    assert "region:us" in config.tags and "llama-3" in config.tags
    assert (config.sha, config.gated, config.downloads, config.likes) == (
        "9213176726f574b556790deb65791e0c5aa438b6",
        False,
        2861234,
        1048,
    )
    assert (config.parameter_count, config.dtype, config.format, config.layout) == (
        1235814400,
        "bf16",
        "safetensors",
        "huggingface",
    )
    assert (config.pipeline_tag, config.library_name, config.author) == ("text-generation", "transformers", "acme")
    assert config.files[0] == ".gitattributes" and "original/consolidated.00.pth" in config.files
    assert config.sources == ["huggingface:acme/Llama-3.2-1B-Instruct@9213176726f574b556790deb65791e0c5aa438b6"]
    # Only LFS files state a SHA-256, lower-cased.
    assert imported.hashes == {
        "model.safetensors": "a" * 64,
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf": GGUF_SHA,
        "original/consolidated.00.pth": PTH_SHA,
    }
    assert (imported.source, imported.source_id, imported.match_by) == (
        "huggingface",
        "acme/Llama-3.2-1B-Instruct",
        "path",
    )
    assert config.is_compatible_with("vllm").compatible is False  # no weights were read: the files decide
    # The context length comes from config.json's keys when there is no GGUF summary.
    info = llama_info()
    del info["gguf"]
    info["config"]["max_position_embeddings"] = 131072
    plain = import_model_info(info).config
    assert isinstance(plain, LlmConfig) and plain.context_length_source == "config.max_position_embeddings"


def test_the_model_info_url_carries_the_revision_and_blobs() -> None:
    url = model_info_url("acme/Llama-3.2-1B-Instruct", "refs/pr/1", endpoint="https://hub.example/")
    assert url == "https://hub.example/api/models/acme/Llama-3.2-1B-Instruct/revision/refs%2Fpr%2F1?blobs=true"
    with pytest.raises(InvalidInputError, match="REPO_ID"):
        model_info_url("../etc", endpoint="https://hub.example")


def test_a_sentence_transformers_answer_is_an_embedding_model() -> None:
    config = import_model_info(SENTENCE_TRANSFORMERS_INFO).config
    assert isinstance(config, EmbeddingConfig)
    assert (config.architecture, config.model_family, config.task, config.layout) == (
        "BertModel", "bert", "embed", "sentence-transformers"
    )  # fmt: skip
    assert (config.languages, config.license, config.parameter_count, config.dtype) == (
        ["en"],
        "apache-2.0",
        22713728,
        "f32",
    )
    assert config.is_compatible_with("sentence-transformers").compatible


def test_a_gated_answer_with_nulls_everywhere() -> None:
    config = import_model_info(GATED_INFO, "google/gemma-2-2b-it").config
    assert isinstance(config, LlmConfig)
    assert (config.gated, config.likes, config.tags, config.files) == (True, 0, [], [])
    assert (config.license, config.base_model, config.tokenizer.eos_token) == ("gemma", "google/gemma-2-2b", None)
    for gated, expected in (("auto", True), (True, True), (False, False), (None, False)):
        other = import_model_info({**GATED_INFO, "gated": gated}).config
        assert isinstance(other, LlmConfig) and other.gated is expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pipeline_tag": "automatic-speech-recognition", "config": {"model_type": "whisper"}}, AudioConfig),
        ({"pipeline_tag": "audio-classification"}, AudioConfig),
        ({"pipeline_tag": "object-detection", "config": {"architectures": ["DetrForObjectDetection"]}}, VisionConfig),
        ({"pipeline_tag": "image-classification"}, VisionConfig),
        ({"library_name": "peft", "pipeline_tag": "text-generation"}, AdapterConfig),
        ({"pipeline_tag": None, "siblings": [{"rfilename": "adapter_config.json"}]}, AdapterConfig),
        ({"pipeline_tag": "text-to-image", "library_name": "diffusers"}, ImageConfig),
        ({"pipeline_tag": None, "library_name": None, "config": {"model_type": "mistral"}}, LlmConfig),
        ({"pipeline_tag": None, "library_name": None, "gguf": {"architecture": "qwen2"}}, LlmConfig),
        ({"pipeline_tag": "tabular-regression", "library_name": "sklearn"}, UnknownConfig),
    ],
)
def test_the_pipeline_tag_library_and_files_pick_the_class(changes: dict[str, Any], expected: type) -> None:
    info = {"id": "someone/model", "sha": "0" * 40, **changes}
    config = import_model_info(info).config
    assert isinstance(config, expected)
    if isinstance(config, UnknownConfig):
        assert "tabular-regression" in config.reason and "sklearn" in config.reason


def test_a_diffusers_lora_repository_is_an_image_lora() -> None:
    info = {
        "id": "someone/pixel-lora",
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "tags": ["diffusers", "lora", "template:sd-lora", "not-for-all-audiences"],
        "cardData": {"base_model": "stabilityai/stable-diffusion-xl-base-1.0", "instance_prompt": "pixel art"},
        "siblings": [{"rfilename": "pytorch_lora_weights.safetensors", "lfs": {"sha256": "9" * 64}}],
    }
    config = import_model_info(info).config
    assert isinstance(config, ImageConfig)
    assert (config.checkpoint_type, config.trigger_words, config.nsfw, config.layout) == (
        "lora", ["pixel art"], True, "single-file"
    )  # fmt: skip


# -- CivitAI mapping ----------------------------------------------------------------------------


def test_a_civitai_lora_maps_every_field() -> None:
    sha = hashlib.sha256(b"lora").hexdigest()
    imported = import_model_version(civitai_lora(sha), 128713)
    config = imported.config
    assert isinstance(config, ImageConfig)
    assert (config.base_model, config.checkpoint_type, config.original_type) == ("SD 1.5", "lora", None)
    assert config.trigger_words == ["pixel art", "pixelsprite"]
    assert (config.nsfw, config.downloads, config.likes, config.variant) == (False, 51234, 4321, None)
    assert (config.civitai_model_id, config.civitai_version_id, config.dtype, config.format) == (
        4201, 128713, "f16", "safetensors"
    )  # fmt: skip
    assert config.hashes == {
        "SHA256": sha,
        "AutoV1": "7c3e4a1b",
        "AutoV2": sha[:10],
        "AutoV3": "f1e2d3c4b5a6",
        "CRC32": "1a2b3c4d",
        "BLAKE3": "e" * 64,
    }
    assert [(p.width, p.height, p.nsfw) for p in config.preview_images] == [
        (512, 768, False),
        (512, 512, True),
        (None, None, False),
    ]
    assert config.license == "civitai (commercial use: Image, RentCivit; credit required)"
    # Recommended settings: what the previews were generated with (a non-number is skipped).
    assert (config.samplers, config.steps, config.cfg_scale, config.clip_skip) == (
        ["DPM++ 2M Karras", "Euler a"], 25, 7.0, 2
    )  # fmt: skip
    assert config.sources == ["urn:air:sd1:lora:civitai:4201@128713"]
    assert config.files == ["pixel_sprites.safetensors", "pixel_sprites_training_data.zip"]
    assert imported.files[0] == MarketplaceFile("pixel_sprites.safetensors", sha, sha[:10])
    assert (imported.match_by, imported.source_id, imported.title) == ("name", "128713", "Pixel Art Sprites / v1.0")
    assert config.is_compatible_with("comfyui").compatible


def test_a_civitai_checkpoint_and_a_controlnet() -> None:
    config = import_model_version(CIVITAI_CHECKPOINT).config
    assert isinstance(config, ImageConfig)
    assert (config.checkpoint_type, config.variant, config.base_model, config.nsfw) == (
        "checkpoint", "inpainting", "SDXL 1.0", True
    )  # fmt: skip
    assert (config.likes, config.hashes["AutoV2"], config.dtype) == (77, "2" * 10, "f16")  # the primary file's
    assert config.license == "civitai (commercial use: Image, Rent, Sell)"
    assert [p.nsfw for p in config.preview_images] == [True]  # an older answer's nsfw word
    other = import_model_version(CIVITAI_CONTROLNET).config
    assert isinstance(other, ImageConfig)
    assert (other.checkpoint_type, other.original_type, other.task, other.format) == (
        "other", "Controlnet", None, "pytorch"
    )  # fmt: skip
    assert other.license == "civitai (no commercial use)"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("LORA", "lora"), ("LoCon", "lora"), ("DoRA", "lora"), ("TextualInversion", "embedding"),
     ("Checkpoint", "checkpoint"), ("Hypernetwork", "hypernetwork"), ("VAE", "vae"), ("Upscaler", "other")],
)  # fmt: skip
def test_civitai_model_types(word: str, expected: str) -> None:
    answer = {"id": 1, "model": {"type": word}}
    config = import_model_version(answer).config
    assert isinstance(config, ImageConfig) and config.checkpoint_type == expected
    assert config.original_type == (word if expected == "other" else None)


def test_allow_commercial_use_in_both_shapes_and_version_ids() -> None:
    assert commercial_uses("{Image,RentCivit}") == ["Image", "RentCivit"]
    assert commercial_uses(["Image", "Sell"]) == ["Image", "Sell"]
    assert commercial_uses("None") == commercial_uses("{}") == commercial_uses([]) == []
    assert commercial_uses(None) is None
    assert parse_version_id("128713") == 128713
    assert parse_version_id("https://civitai.com/models/4201/pixel?modelVersionId=128713") == 128713
    with pytest.raises(InvalidInputError, match="VERSION_ID"):
        parse_version_id("pixel-art")


# -- bad answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ("[1, 2]", "expected a JSON object at the top level, found a list"),
        (json.dumps({"id": "a/b", "downloads": "many"}), "field 'downloads': expected a non-negative integer"),
        (json.dumps({"id": "a/b", "tags": [1]}), "field 'tags[0]': expected a string, found the number 1"),
        (json.dumps({"id": "a/b", "gated": 3}), "field 'gated'"),
        (
            json.dumps({"id": "a/b", "siblings": [{"rfilename": "x"}, {"rfilename": "y", "lfs": {"sha256": "zz"}}]}),
            "field 'siblings[1].lfs.sha256': expected 64 hex digits",
        ),
        (json.dumps({"id": "c/d"}), "field 'id': expected the answer for a/b, found the string 'c/d'"),
    ],
)
def test_a_bad_saved_hub_answer_names_the_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    saved = tmp_path / "model_info.json"
    saved.write_text(content)
    with pytest.raises(InvalidInputError) as caught:
        import_model_info(read_model_info(saved), "a/b", str(saved))
    assert str(caught.value).startswith(str(saved)) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_civitai_answer_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"field 'trainedWords': expected a string or a list"):
        import_model_version({"id": 1, "trainedWords": 5}, source="version.json")
    with pytest.raises(InvalidInputError, match=r"field 'files\[0\].hashes.SHA256': expected 64 hex digits"):
        import_model_version({"id": 1, "files": [{"name": "a", "hashes": {"SHA256": "XYZ"}}]})
    with pytest.raises(InvalidInputError, match="field 'model.allowCommercialUse'"):
        import_model_version({"id": 1, "model": {"allowCommercialUse": 7}})
    with pytest.raises(InvalidInputError, match="field 'id': expected the answer for model version 2"):
        import_model_version({"id": 1}, 2)


# -- merging into a registered version ----------------------------------------------------------


def llama_folder(root: Path) -> Path:
    """A tiny Hugging Face Llama folder with real safetensors weights."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 2048,
                    "hidden_size": 16, "num_hidden_layers": 1, "vocab_size": 32})
    )  # fmt: skip
    (root / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    write_safetensors(root / "model.safetensors", seed=3)
    return root


@pytest.fixture
def llama_version(registry: Registry, tmp_path: Path) -> tuple[str, str]:
    """A registered Llama folder: (reference, sha256 of its model.safetensors)."""
    root = llama_folder(tmp_path / "llama")
    result = registry.register(root, RegisterOptions(artifact_name="gpt-small-v1"))
    return result.version.ref, sha256_of(root / "model.safetensors")


def test_import_into_merges_the_marketplace_facts_and_records_an_event(
    registry: Registry, llama_version: tuple[str, str]
) -> None:
    ref, sha = llama_version
    before, manifest = registry.model_config(ref), registry.show(ref).manifest_json
    assert isinstance(before, LlmConfig) and before.context_length == 2048
    result = import_into(registry, ref, import_model_info(llama_info(sha), "acme/Llama-3.2-1B-Instruct"))
    assert (result.version, result.source, result.verified) == (ref, "huggingface", ["model.safetensors"])
    assert result.unmatched == [
        ".gitattributes",
        "generation_config.json",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "original/consolidated.00.pth",
    ]
    merged = registry.model_config(ref)
    assert merged == result.config and isinstance(merged, LlmConfig)
    # What the files said stays ...
    assert (merged.files, merged.weights, merged.format, merged.layout) == (
        before.files, before.weights, before.format, before.layout
    )  # fmt: skip
    assert (merged.context_length, merged.tokenizer.eos_token, merged.parameter_count) == (
        2048, "</s>", before.parameter_count
    )  # fmt: skip
    # ... the chat template the files lack comes from the answer, and so does what only the Hub knows.
    assert merged.tokenizer.chat_template == CHAT_TEMPLATE
    assert (merged.downloads, merged.likes, merged.gated) == (2861234, 1048, False)
    assert merged.sha == "9213176726f574b556790deb65791e0c5aa438b6"
    assert (merged.license, merged.base_model) == ("llama3.2", "meta-llama/Llama-3.2-1B")
    assert set(before.tags) <= set(merged.tags) and "conversational" in merged.tags
    assert "downloads" in result.changed and "files" not in result.changed
    event = registry.events(1)[0]
    assert (event["action"], event["artifact_name"], event["version_number"]) == ("import", "gpt-small-v1", 1)
    assert event["details"] == {
        "source": "huggingface",
        "id": "acme/Llama-3.2-1B-Instruct",
        "verified": ["model.safetensors"],
    }
    assert registry.show(ref).manifest_json == manifest  # the manifest never changes


def test_a_mismatching_hash_is_a_conflict_and_changes_nothing(
    registry: Registry, llama_version: tuple[str, str]
) -> None:
    ref, sha = llama_version
    before, events = registry.model_config(ref), registry.events()
    with pytest.raises(ConflictError) as caught:
        import_into(registry, ref, import_model_info(llama_info("0" * 64)))
    message = str(caught.value)
    assert message.startswith("model.safetensors: ") and sha in message and "0" * 64 in message
    assert registry.model_config(ref) == before and registry.events() == events


def test_a_different_model_type_is_a_conflict(registry: Registry, llama_version: tuple[str, str]) -> None:
    ref, _ = llama_version
    with pytest.raises(ConflictError, match="stored as a llm model, but the civitai answer describes a image model"):
        import_into(registry, ref, import_model_version(civitai_lora()))


def test_an_unknown_entry_takes_the_imported_class(registry: Registry, tmp_path: Path) -> None:
    weights = tmp_path / "lora" / "pixel_sprites.safetensors"
    write_safetensors(weights, seed=5)
    ref = registry.register(weights, RegisterOptions(artifact_name="sd15-lora-v1")).version.ref
    before = registry.model_config(ref)
    assert isinstance(before, UnknownConfig)
    result = import_into(registry, ref, import_model_version(civitai_lora(sha256_of(weights))))
    config = result.config
    assert isinstance(config, ImageConfig) and config.checkpoint_type == "lora"
    assert (config.files, config.weights, config.format, config.sources) == (
        before.files, before.weights, before.format, before.sources
    )  # fmt: skip
    assert (config.trigger_words, config.civitai_version_id) == (["pixel art", "pixelsprite"], 128713)
    assert config.hashes["AutoV2"] == sha256_of(weights)[:10]
    assert (result.verified, result.unmatched) == (["pixel_sprites.safetensors"], ["pixel_sprites_training_data.zip"])


def test_a_version_registered_without_inspection_gets_the_imported_entry(registry: Registry, tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_safetensors(run / "out" / "pixel_sprites.safetensors", seed=7)
    (run / "notes.txt").write_text("trained on 40 sprites\n")
    ref = registry.register(run, RegisterOptions(artifact_name="sd15-lora-v1", inspect=False)).version.ref
    assert registry.model_config(ref) is None
    imported = import_model_version(civitai_lora(sha256_of(run / "out" / "pixel_sprites.safetensors")))
    result = import_into(registry, ref, imported)
    assert result.verified == ["out/pixel_sprites.safetensors"]  # matched by base name
    entry = registry.model_config(ref)
    assert isinstance(entry, ImageConfig) and entry.model_copy(update={"files": [], "warnings": []}) == (
        imported.config.model_copy(update={"files": [], "warnings": []})
    )
    # It lists the version's files, not the marketplace's, and says that none was read.
    assert entry.files == ["notes.txt", "out/pixel_sprites.safetensors"]
    assert "registered without inspection" in entry.warnings[-1] and entry.weights == []
    stored = registry.catalog.model_config(registry.show(ref))
    from modelyard.inspect import INSPECTOR_VERSION

    assert stored is not None and stored.inspector_version == INSPECTOR_VERSION


def test_an_autov2_prefix_alone_is_checked() -> None:
    from modelyard.manifest import FileEntry

    files = [FileEntry(path="a/x.safetensors", size=1, sha256="ab" * 32)]
    config = import_model_version({"id": 1}).config

    def stated(autov2: str) -> MarketplaceImport:
        return MarketplaceImport("civitai", "1", config, (MarketplaceFile("x.safetensors", autov2=autov2),), "name")

    assert check_files(files, stated("abababab" + "ab")) == (["a/x.safetensors"], [])
    with pytest.raises(ConflictError, match="AutoV2 0000000000"):
        check_files(files, stated("0" * 10))


def test_merging_keeps_stored_license_and_joins_hashes() -> None:
    stored = ImageConfig(
        license="creativeml-openrail-m", tags=["sprites"], hashes={"AutoV1": "12345678"}, base_model="SD 1.5"
    )
    imported = import_model_version(civitai_lora()).config
    merged = merge_configs(stored, imported)
    assert isinstance(merged, ImageConfig)
    assert (merged.license, merged.base_model, merged.tags[0]) == ("creativeml-openrail-m", "SD 1.5", "sprites")
    assert merged.hashes["AutoV1"] == "7c3e4a1b" and merged.hashes["SHA256"] == "c" * 64
    assert merge_configs(None, imported) == imported


# -- the command line ---------------------------------------------------------------------------


def test_cli_offline_says_to_use_from_file(cli: Cli) -> None:
    result = cli("import", "hf", "some/repo", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == RemoteError.exit_code
    assert "--from-file" in result.stderr and "HF_HUB_OFFLINE" in result.stderr and "curl" in result.stderr
    assert result.stderr.count("\n") == 1


def test_cli_imports_a_saved_answer_into_a_version(
    cli: Cli, registry: Registry, llama_version: tuple[str, str], tmp_path: Path
) -> None:
    ref, sha = llama_version
    registry.close()
    saved = tmp_path / "model_info.json"
    saved.write_text(json.dumps(llama_info(sha)))
    printed = cli("import", "hf", "acme/Llama-3.2-1B-Instruct", "--from-file", str(saved), "--json", check=True)
    assert printed.json()["model_type"] == "llm" and printed.json()["gated"] is False
    human = cli("import", "hf", "acme/Llama-3.2-1B-Instruct", "--from-file", str(saved), check=True)
    assert "LlamaForCausalLM" in human.stdout and "stated hashes" in human.stdout
    merged = cli("import", "hf", "acme/Llama-3.2-1B-Instruct", "--from-file", str(saved), "--into", ref, "--json")
    assert merged.returncode == 0, merged.stderr
    answer = merged.json()
    assert set(answer) == {"ref", "source", "verified", "unmatched", "config"}
    assert (answer["ref"], answer["source"], answer["verified"]) == (ref, "huggingface", ["model.safetensors"])
    assert answer["config"]["downloads"] == 2861234
    # A mismatching hash: exit 5, one line naming the file and both digests, nothing changed.
    saved.write_text(json.dumps(llama_info("0" * 64)))
    refused = cli("import", "hf", "acme/Llama-3.2-1B-Instruct", "--from-file", str(saved), "--into", ref)
    assert refused.returncode == ConflictError.exit_code == 5
    assert "model.safetensors" in refused.stderr and sha in refused.stderr and "0" * 64 in refused.stderr
    assert registry.model_config(ref).downloads == 2861234  # type: ignore[union-attr]


def test_cli_civitai_from_file_and_bad_files(cli: Cli, tmp_path: Path) -> None:
    saved = tmp_path / "version.json"
    saved.write_text(json.dumps(civitai_lora()))
    shown = cli("import", "civitai", "--from-file", str(saved), check=True)
    assert "trigger_words" in shown.stdout and "pixel art" in shown.stdout
    assert (
        cli("import", "civitai", "128713", "--from-file", str(saved), "--json", check=True).json()["civitai_version_id"]
        == 128713
    )
    saved.write_text("[]")
    bad = cli("import", "civitai", "--from-file", str(saved))
    assert bad.returncode == InvalidInputError.exit_code and str(saved) in bad.stderr
    missing = cli("import", "civitai")
    assert missing.returncode == InvalidInputError.exit_code and "--from-file" in missing.stderr


def test_unreachable_services_are_remote_errors_naming_from_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection on the loopback interface stands for a network without the service."""
    from huggingface_hub import constants

    from modelyard.marketplace import civitai, huggingface

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(RemoteError, match=r"cannot reach http://127.0.0.1:9/api/models/a/b\?blobs=true .*--from-file"):
        huggingface.fetch_model_info("a/b", timeout=2)
    monkeypatch.setattr(civitai, "API_ROOT", "http://127.0.0.1:9/api/v1")
    with pytest.raises(
        RemoteError, match=r"cannot reach http://127.0.0.1:9/api/v1/model-versions/5 .*curl.*--from-file"
    ):
        civitai.fetch_model_version(5, timeout=2)
