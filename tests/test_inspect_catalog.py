"""Inspection end to end: real model folders and files in, seed 002's typed configurations out,
with runtime compatibility, inference parameters and the manifest fields inspection fills."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from model_builders import (
    FASTER_RCNN_KEYS,
    FLUX_DEV_KEYS,
    KOHYA_LORA_KEYS,
    RESNET50_KEYS,
    SB3_PPO_KEYS,
    SD15_KEYS,
    SDXL_KEYS,
    VIT_TIMM_KEYS,
    YOLOX_S_KEYS,
    diffusers_folder,
    gguf_file,
    llama_folder,
    peft_folder,
    safetensors_file,
    sentence_transformers_folder,
)
from modelyard.errors import InvalidModelFileError
from modelyard.inspect import Hints, inspect_path, manifest_suggestions
from modelyard.modelconfig import (
    AdapterConfig,
    ConfigArtifactConfig,
    EmbeddingConfig,
    ImageConfig,
    LlmConfig,
    PolicyConfig,
    UnknownConfig,
    VideoConfig,
    VisionConfig,
    parse_model_config,
)


def runtimes(config: object) -> set[str]:
    return {c.runtime for c in config.compatibility() if c.compatible}  # type: ignore[attr-defined]


# -- language models ------------------------------------------------------------------------------


def test_a_transformers_llm_folder(tmp_path: Path) -> None:
    config = inspect_path(llama_folder(tmp_path / "llama"))
    assert isinstance(config, LlmConfig)
    assert (config.model_type, config.task, config.format, config.layout) == (
        "llm",
        "text-generation",
        "safetensors",
        "huggingface",
    )
    assert (config.architecture, config.model_family) == ("LlamaForCausalLM", "llama")
    assert config.tokenizer.bos_token == "<|begin_of_text|>"
    assert config.tokenizer.eos_token == "<|eot_id|>"  # an AddedToken object: its content
    assert config.tokenizer.chat_template and "messages" in config.tokenizer.chat_template
    assert (config.context_length, config.context_length_source) == (131072, "max_position_embeddings")
    assert (config.default_temperature, config.default_top_p) == (0.6, 0.9)
    assert (config.license, config.base_model, config.languages) == (
        "llama3.2",
        "meta-llama/Llama-3.2-1B",
        ["en", "ja"],
    )
    assert config.num_kv_heads == 1 and config.rope_scaling == {"factor": 32.0, "rope_type": "llama3"}
    assert config.parameter_count == 64 * 8 + 8 * 8 + 16 * 8 + 64 * 8 and config.dtype == "f16"
    assert runtimes(config) == {"transformers", "vllm", "tgi", "pytorch"}
    assert not config.is_compatible_with("llama-cpp").compatible
    assert "GGUF" in config.is_compatible_with("llama-cpp").reason
    params = config.inference_params()
    assert params.context_length == 131072 and params.additional["temperature"] == 0.6
    assert manifest_suggestions(config) == {
        "base_model": "meta-llama/Llama-3.2-1B",
        "precision": "fp16",
        "quantized": False,
    }
    assert parse_model_config(config.model_dump_json()) == config  # the catalog's round trip


def test_chat_template_files_win_and_named_templates_are_kept(tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama")
    (root / "chat_template.jinja").write_text("{{ 'from the jinja file' }}")
    (root / "additional_chat_templates").mkdir()
    (root / "additional_chat_templates" / "tool_use.jinja").write_text("{{ tools }}")
    config = inspect_path(root)
    assert isinstance(config, LlmConfig)
    assert config.tokenizer.chat_template == "{{ 'from the jinja file' }}"
    assert config.tokenizer.chat_templates == {"tool_use": "{{ tools }}"}


def test_a_list_of_named_chat_templates(tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama", chat_template=False)
    (root / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "default", "template": "A"}, {"name": "rag", "template": "B"}]})
    )
    config = inspect_path(root)
    assert isinstance(config, LlmConfig)
    assert (config.tokenizer.chat_template, config.tokenizer.chat_templates) == ("A", {"rag": "B"})


def test_a_gguf_file(tmp_path: Path) -> None:
    config = inspect_path(gguf_file(tmp_path / "tiny.Q4_K_M.gguf"))
    assert isinstance(config, LlmConfig)
    assert (config.format, config.quantization, config.context_length) == ("gguf", "Q4_K_M", 8192)
    assert (config.tokenizer.bos_token, config.tokenizer.eos_token) == ("tok1", "tok2")
    assert config.tokenizer.tokenizer_model == "gpt2" and config.tokenizer.vocab_size == 40
    assert config.tokenizer.chat_template and config.license == "apache-2.0"
    assert runtimes(config) == {"llama-cpp"}
    assert manifest_suggestions(config) == {"quantized": True}  # Q4: quantized, not int8
    assert manifest_suggestions(inspect_path(gguf_file(tmp_path / "q8.gguf", file_type=7))) == {
        "precision": "int8",
        "quantized": True,
    }


def test_gguf_adapters_and_embedding_models(tmp_path: Path) -> None:
    adapter = inspect_path(gguf_file(tmp_path / "lora.gguf", general_type="adapter"))
    assert isinstance(adapter, AdapterConfig) and adapter.adapter_format == "gguf"
    assert adapter.is_compatible_with("llama-cpp").compatible
    embedding = inspect_path(gguf_file(tmp_path / "embed.gguf", pooling=1))
    assert isinstance(embedding, EmbeddingConfig) and embedding.embedding_dim == 32


# -- adapters, pipelines, embeddings ----------------------------------------------------------------


def test_a_peft_adapter(tmp_path: Path) -> None:
    config = inspect_path(peft_folder(tmp_path / "llama32_3b_grammar_lora"))
    assert isinstance(config, AdapterConfig)
    assert (config.peft_type, config.base_model, config.r, config.alpha) == (
        "LORA",
        "meta-llama/Llama-3.2-3B-Instruct",
        16,
        32.0,
    )
    assert (config.target_modules, config.task_type, config.layout) == (["q_proj", "v_proj"], "CAUSAL_LM", "peft")
    assert runtimes(config) == {"peft", "vllm", "tgi", "pytorch"}
    assert manifest_suggestions(config)["base_model"] == "meta-llama/Llama-3.2-3B-Instruct"


def test_an_adapter_without_a_base_cannot_run_under_peft(tmp_path: Path) -> None:
    config = inspect_path(peft_folder(tmp_path / "orphan", base=None))
    answer = config.is_compatible_with("peft")
    assert not answer.compatible and "base_model_name_or_path" in answer.reason


def test_lora_ranks_that_contradict_r_are_a_warning(tmp_path: Path) -> None:
    root = peft_folder(tmp_path / "lora", r=16)
    config_path = root / "adapter_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "r": 8}))
    assert any("differ from r = 8" in w for w in inspect_path(root).warnings)


def test_a_diffusers_pipeline(tmp_path: Path) -> None:
    config = inspect_path(diffusers_folder(tmp_path / "sdxl"))
    assert isinstance(config, ImageConfig)
    assert (config.base_model, config.pipeline_class, config.prediction_type) == (
        "SDXL",
        "StableDiffusionXLPipeline",
        "epsilon",
    )
    assert config.components["unet"] == "UNet2DConditionModel" and "safety_checker" not in config.components
    assert config.resolution == (1024, 1024)
    # The fp16 variant holds the same weights: counted once.
    assert config.parameter_count == 4 * 4 * 3 * 3 + 8 * 3 * 3 * 3 + 10 * 8
    assert "diffusers" in runtimes(config) and "comfyui" not in runtimes(config)


def test_stable_diffusion_1_and_video_pipelines(tmp_path: Path) -> None:
    sd15 = inspect_path(diffusers_folder(tmp_path / "sd15", "StableDiffusionPipeline", context=768))
    assert isinstance(sd15, ImageConfig) and sd15.base_model == "SD 1.5"
    video = inspect_path(diffusers_folder(tmp_path / "svd", "StableVideoDiffusionPipeline"))
    assert isinstance(video, VideoConfig) and video.task == "image-to-video"


def test_a_sentence_transformers_folder(tmp_path: Path) -> None:
    config = inspect_path(sentence_transformers_folder(tmp_path / "sbert-all-mpnet"))
    assert isinstance(config, EmbeddingConfig)
    assert (config.embedding_dim, config.pooling, config.normalize, config.max_seq_length) == (768, "mean", True, 384)
    assert (config.similarity_fn, config.model_family, config.layout) == ("cosine", "mpnet", "sentence-transformers")
    assert "sentence-transformers" in runtimes(config)
    assert manifest_suggestions(config)["embedding_dim"] == 768


# -- single files recognised by their tensor names ------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "base", "variant"),
    [(SD15_KEYS, "SD 1.5", None), (SDXL_KEYS, "SDXL", None), (FLUX_DEV_KEYS, "Flux", "dev")],
)
def test_single_file_image_checkpoints(tmp_path: Path, keys: dict, base: str, variant: str | None) -> None:
    config = inspect_path(safetensors_file(tmp_path / "checkpoint.safetensors", keys))
    assert isinstance(config, ImageConfig)
    assert (config.checkpoint_type, config.base_model, config.variant, config.layout) == (
        "checkpoint",
        base,
        variant,
        "single-file",
    )
    assert {"diffusers", "comfyui", "stable-diffusion"} <= runtimes(config)


def test_a_kohya_lora_with_training_metadata(tmp_path: Path) -> None:
    metadata = {
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "8",
        "ss_network_alpha": "4.0",
        "ss_resolution": "(1024, 1024)",
        "ss_tag_frequency": json.dumps({"10_photo": {"realistic": 12, "photo": 30}}),
        "ss_num_epochs": "10",
        "ss_clip_skip": "None",
    }
    config = inspect_path(safetensors_file(tmp_path / "style.safetensors", KOHYA_LORA_KEYS, np.float32, **metadata))
    assert isinstance(config, ImageConfig)
    assert (config.checkpoint_type, config.base_model, config.network_dim, config.network_alpha) == (
        "lora",
        "SDXL",
        8,
        4.0,
    )
    assert config.resolution == (1024, 1024) and config.trigger_words[:2] == ["photo", "realistic"]
    assert config.training["epochs"] == 10 and config.clip_skip is None


@pytest.mark.parametrize(
    ("keys", "family", "task", "facts"),
    [
        (VIT_TIMM_KEYS, "vit", "embed", {"image_size": 224, "patch_size": 16, "embedding_dim": 32}),
        (RESNET50_KEYS, "resnet", "embed", {"architecture": "resnet50", "embedding_dim": 512}),
        (FASTER_RCNN_KEYS, "faster-rcnn", "detection", {"num_labels": 91, "backbone": "resnet50-fpn"}),
        (YOLOX_S_KEYS, "yolox", "detection", {"architecture": "YOLOX-s", "num_labels": 80}),
    ],
)
def test_vision_models_from_their_state_dicts(tmp_path: Path, keys: dict, family: str, task: str, facts: dict) -> None:
    config = inspect_path(safetensors_file(tmp_path / "model.safetensors", keys, np.float32))
    assert isinstance(config, VisionConfig)
    assert (config.model_family, config.task) == (family, task)
    for key, value in facts.items():
        assert getattr(config, key) == value, key


def test_a_stable_baselines3_policy(tmp_path: Path) -> None:
    config = inspect_path(safetensors_file(tmp_path / "policy.safetensors", SB3_PPO_KEYS, np.float32))
    assert isinstance(config, PolicyConfig)
    assert (config.observation_dim, config.action_dim, config.framework) == (17, 6, "stable-baselines3")
    assert config.has_actor and config.has_critic


# -- hints: seed 000's fleet is typed even when the files say little ----------------------------------


SEED_000_FLEET = [
    # (artifact name, component, task, node type, what the artifact holds, expected model type)
    ("vision-vit-base16-embed-v1", "vision", "embed", "encoder", "weights", "vision"),
    ("resnet50-proj-v1", None, None, "encoder", "weights", "vision"),
    ("audio-wav2vec2-base-embed-v1", "audio", "embed", "encoder", "weights", "audio"),
    ("audio-hubert-large-embed-v1", "audio", "embed", "encoder", "weights", "audio"),
    ("text-sbert-all-mpnet-embed-v1", "text", "embed", "encoder", "weights", "embedding"),
    ("spiking-snn-dvs-embed-v1", "spiking", "embed", "encoder", "weights", "embedding"),
    ("gpt-small-v1-lm-finetune-int8-v1", "inference", "lm-finetune", "inference", "weights", "llm"),
    ("yolox-s-intel-v1", None, "detection", "inference", "weights", "vision"),
    ("fasterrcnn-res50-v1", None, "detection", "inference", "weights", "vision"),
    ("spiking-lm-core-v1", None, None, "inference", "weights", "llm"),
    ("multimodal-ensemble-v1", None, None, "inference", "weights", "multimodal"),
    ("rag-lite-v1", None, None, "inference", "weights", "llm"),
    ("planner-rl-ppo-v1", None, None, "decision", "weights", "policy"),
    ("motor-controller-dnn-v1", None, None, "decision", "weights", "policy"),
    ("milvus-schema-v1", None, None, "memory", "schema", "config"),
    ("minio-log-schema-v1", None, None, "memory", "schema", "config"),
    ("sensing-camera-preproc-v1", None, None, "sensing", "schema", "config"),
    ("trainer-ddp-manager-v1", None, None, "learning", "schema", "config"),
    ("auth-service-v1", None, None, "management", "schema", "config"),
    ("monitoring-stack-v1", None, None, "management", "schema", "config"),
]


@pytest.mark.parametrize(("name", "component", "task", "node_type", "holds", "expected"), SEED_000_FLEET)
def test_the_seed_000_fleet_comes_out_typed(
    tmp_path: Path, name: str, component: str | None, task: str | None, node_type: str, holds: str, expected: str
) -> None:
    root = tmp_path / name
    if holds == "weights":  # bare checkpoints whose tensor names no library defines
        safetensors_file(root / "checkpoints" / "best.safetensors", {"net.0.weight": (8, 4), "net.2.weight": (2, 8)})
        safetensors_file(
            root / "checkpoints" / "epoch_10.safetensors", {"net.0.weight": (8, 4), "net.2.weight": (2, 8)}
        )
    else:
        root.mkdir(parents=True)
        (root / "schema.yaml").write_text("collection: episodes\nfields:\n  - {name: id, type: int64}\n")
    config = inspect_path(root, Hints(artifact_name=name, component=component, task=task, node_type=node_type))
    assert config.model_type == expected, config.model_dump(include={"model_type", "task"})
    if holds == "weights":
        assert config.layout == "run" and config.weights[0].path == "checkpoints/best.safetensors"
        assert config.parameter_count == 8 * 4 + 2 * 8  # one checkpoint described, not their sum
    if name == "milvus-schema-v1":
        assert isinstance(config, ConfigArtifactConfig) and config.kind == "vector-db-schema"
    if name == "spiking-snn-dvs-embed-v1":
        assert isinstance(config, EmbeddingConfig) and config.modality == "event"
    if name == "planner-rl-ppo-v1":
        assert isinstance(config, PolicyConfig) and (config.observation_dim, config.action_dim) == (4, 2)


def test_weights_nothing_explains_are_unknown_with_the_reason(tmp_path: Path) -> None:
    config = inspect_path(safetensors_file(tmp_path / "w.safetensors", {"a": (2, 2)}))
    assert isinstance(config, UnknownConfig) and "do not say" in config.reason
    assert config.parameter_count == 4 and config.format == "safetensors"


def test_data_files_are_not_weights(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "sample.bin").write_bytes(bytes(range(256)) * 4)
    (root / "notes.txt").write_text("hello")
    config = inspect_path(root)
    assert config.model_type == "unknown" and config.weights == [] and config.pickle_scan.verdict == "none"


# -- pickles ----------------------------------------------------------------------------------------


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


def test_an_unsafe_pickle_is_found_and_blocks_pickle_runtimes(tmp_path: Path) -> None:
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "best.pkl").write_bytes(pickle.dumps({"model": _Exploit()}, protocol=2))
    config = inspect_path(root)
    assert config.pickle_scan.verdict == "unsafe"
    finding = config.pickle_scan.findings[0]
    assert (finding.file, finding.severity) == ("checkpoints/best.pkl", "unsafe")
    assert finding.name == "system" and finding.module in ("posix", "os", "nt")
    assert not config.is_compatible_with("pytorch").compatible


def test_a_pytorch_training_checkpoint(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    root = tmp_path / "v5_5_20251124" / "checkpoints"
    root.mkdir(parents=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters())
    torch.save(
        {
            "epoch": 70,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "best_val_loss": 0.38,
        },
        root / "best.pt",
    )
    torch.save(model.state_dict(), root / "latest.pt")
    config = inspect_path(root.parent, Hints(artifact_name="planner-rl-ppo-v1", node_type="decision"))
    assert isinstance(config, PolicyConfig)
    best = next(w for w in config.weights if w.path == "checkpoints/best.pt")
    assert (best.format, best.epoch, best.has_optimizer_state) == ("pytorch", 70, True)
    assert best.metrics == {"best_val_loss": 0.38}
    assert config.pickle_scan.verdict == "safe" and config.pickle_scan.files_scanned == 2
    assert config.is_compatible_with("pytorch").compatible
    assert config.parameter_count == 4 * 8 + 8 + 8 * 2 + 2


# -- bad input: named file, named field -----------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "content", "field"),
    [
        (
            "config.json",
            {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": "long"},
            "max_position_embeddings",
        ),
        ("config.json", {"architectures": "LlamaForCausalLM"}, "architectures"),
        ("tokenizer_config.json", {"chat_template": 42}, "chat_template"),
        ("tokenizer_config.json", {"bos_token": ["<s>"]}, "bos_token"),
        ("generation_config.json", {"temperature": True}, "temperature"),
    ],
)
def test_side_files_with_wrong_types_are_refused(tmp_path: Path, file: str, content: dict, field: str) -> None:
    root = llama_folder(tmp_path / "llama")
    (root / file).write_text(json.dumps(content))
    with pytest.raises(InvalidModelFileError) as caught:
        inspect_path(root)
    assert caught.value.field == field and caught.value.path == str(root / file)


def test_an_adapter_config_with_a_bad_rank_is_refused(tmp_path: Path) -> None:
    root = peft_folder(tmp_path / "lora")
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": -1}))
    with pytest.raises(InvalidModelFileError, match="adapter_config.json: field 'r'"):
        inspect_path(root)


def test_a_diffusers_component_without_its_folder_is_refused(tmp_path: Path) -> None:
    root = diffusers_folder(tmp_path / "sdxl")
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(json.dumps({**index, "controlnet": ["diffusers", "ControlNetModel"]}))
    with pytest.raises(InvalidModelFileError, match="controlnet"):
        inspect_path(root)


def test_a_truncated_weights_file_is_refused_naming_it(tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama")
    weights = root / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(InvalidModelFileError) as caught:
        inspect_path(root)
    assert caught.value.path == str(weights)


def test_front_matter_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama")
    (root / "README.md").write_text("---\n- a\n- b\n---\n")
    with pytest.raises(InvalidModelFileError, match="README.md: the front matter must be a YAML mapping"):
        inspect_path(root)


def test_data_that_merely_starts_like_a_pickle_is_data(tmp_path: Path) -> None:
    """Random bytes begin with a pickle's PROTO opcode once in ~16,000 files: that is no error."""
    root = tmp_path / "samples"
    root.mkdir()
    (root / "sample-000017.bin").write_bytes(b"\x80\x02" + bytes(range(7, 250)))
    (root / "sample-000018.bin").write_bytes(b"PK\x03\x04" + bytes(200))
    config = inspect_path(root)
    assert config.weights == [] and config.pickle_scan.verdict == "none"


def test_a_broken_pickle_is_still_scanned_for_what_it_imports(tmp_path: Path) -> None:
    """Unpickling runs opcodes as it reads: a payload before the flaw would still run."""
    root = tmp_path / "run"
    root.mkdir()
    payload = pickle.dumps(_Exploit(), protocol=2)[:-1] + b"\xff garbage"  # STOP replaced by junk
    (root / "state.bin").write_bytes(payload)
    config = inspect_path(root)
    assert config.pickle_scan.verdict == "unsafe"
    assert any("starts like a pickle but is not a valid one" in w for w in config.warnings)
    (root / "state.bin").rename(root / "state.pt")  # named as a checkpoint: a broken one is an error
    with pytest.raises(InvalidModelFileError, match="state.pt"):
        inspect_path(root)


def test_an_onnx_model_lists_its_graph(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((768, 16), np.float32), "proj.weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["pixel_values", "proj.weight"], ["embedding"])],
        "vit-embed",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 768])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 16])],
        [weight],
    )
    model = helper.make_model(
        graph, producer_name="pytorch", producer_version="2.13", opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save_model(model, str(tmp_path / "model.onnx"))
    config = inspect_path(tmp_path / "model.onnx", Hints(component="vision", task="embed"))
    assert isinstance(config, VisionConfig) and config.format == "onnx" and config.parameter_count == 768 * 16
    weights = config.weights[0]
    assert (weights.opset, weights.producer) == (17, "pytorch 2.13")
    assert [(io.name, io.dtype, io.shape) for io in weights.inputs] == [("pixel_values", "float32", ["batch", 768])]
    assert [io.name for io in weights.outputs] == ["embedding"]
    assert config.is_compatible_with("onnxruntime").compatible
