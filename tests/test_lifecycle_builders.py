"""What a promotion builds: clean weights, the model card, deployment files and resource usage.

Real torch checkpoints (training checkpoints with optimizer state, tied weights, pickles naming
code-executing or unknown globals), real model folders inspected by modelyard, manifests checked
with kubernetes-validate, the generated serve.py run as a real HTTP server, and weights loaded in
real child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import kubernetes_validate
import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model_builders import gguf_file, llama_folder, sentence_transformers_folder
from modelyard.errors import InvalidInputError, InvalidModelFileError
from modelyard.inspect import inspect_path
from modelyard.lifecycle.deployment import (
    KUBERNETES_VERSION,
    DeploymentSpec,
    check_manifest,
    write_deployment,
)
from modelyard.lifecycle.model_card import ModelCardInput, front_matter, pipeline_tag_for, write_model_card
from modelyard.lifecycle.resources import measure_resource_usage, read_benchmarks
from modelyard.lifecycle.weights import CleanWeights, clean_weights
from modelyard.loaders import parse_yaml
from modelyard.modelconfig import PickleFindingEntry, PickleScanSummary

# -- checkpoints ----------------------------------------------------------------------------------


class TinyNet(torch.nn.Module):
    """Two layers and a buffer: the model of a small training run."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 2)
        self.register_buffer("scale", torch.tensor([0.5, 2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.encoder(x))) * self.scale


class TiedLM(torch.nn.Module):
    """A language-model shape whose output projection shares the embedding's storage."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 6)
        self.lm_head = torch.nn.Linear(6, 10, bias=False)
        self.lm_head.weight = self.embed.weight


class ShellOut:
    """A pickle payload: unpickling it would run a shell command that creates `canary`."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.canary}",))


def trained(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
    return model, optimizer


def training_checkpoint(path: Path, **extra: Any) -> dict[str, torch.Tensor]:
    """What a training loop saves; returns the model's state dict."""
    model, optimizer = trained(TinyNet())
    state = model.state_dict()
    torch.save(
        {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(), "best_val_loss": 0.4}
        | extra,
        path,
    )
    return state


def assert_same_tensors(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, ordered: bool = True
) -> None:
    """Same names (in the same order, unless the format sorts them, as safetensors does) and the
    same dtypes and values."""
    assert list(actual) == list(expected) if ordered else sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert torch.equal(actual[name], tensor), name


# -- clean weights --------------------------------------------------------------------------------


def test_clean_weights_keep_the_state_dict_and_drop_the_training_state(tmp_path: Path) -> None:
    state = training_checkpoint(tmp_path / "epoch_3.pt")

    result = clean_weights(tmp_path / "epoch_3.pt", tmp_path / "out", scan=None)

    parameters = sum(t.numel() for t in state.values())
    assert result == CleanWeights(
        files=("model.pt", "model.safetensors"),
        tensor_count=5,
        parameter_count=parameters,
        dtypes={"f32": parameters},
        stripped_keys=("epoch", "optimizer_state_dict", "best_val_loss"),
        source="epoch_3.pt",
        safetensors_written=True,
    )
    loaded = torch.load(tmp_path / "out" / "model.pt", map_location="cpu", weights_only=True)
    assert_same_tensors(loaded, state)
    assert not any("optimizer" in key or key in ("epoch", "best_val_loss") for key in loaded)
    assert_same_tensors(load_file(str(tmp_path / "out" / "model.safetensors")), dict(state), ordered=False)
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    model = TinyNet()
    model.load_state_dict(loaded)  # the cleaned file is a state dict the architecture accepts
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.pt", "model.safetensors"]


def test_tied_weights_stay_tied_in_model_pt_and_are_copied_for_safetensors(tmp_path: Path) -> None:
    state = TiedLM().state_dict()
    assert state["embed.weight"].data_ptr() == state["lm_head.weight"].data_ptr()
    with pytest.raises(RuntimeError, match="share memory"):  # what a naive save would hit
        save_file(dict(state), str(tmp_path / "naive.safetensors"))
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "last.ckpt")

    result = clean_weights(tmp_path / "last.ckpt", tmp_path / "out", scan=None)

    assert result.safetensors_written and result.stripped_keys == ("optimizer",)
    loaded = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert loaded["embed.weight"].data_ptr() == loaded["lm_head.weight"].data_ptr()
    assert_same_tensors(load_file(str(tmp_path / "out" / "model.safetensors")), dict(state), ordered=False)


def test_an_unsafe_checkpoint_is_refused_and_never_loaded(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    training_checkpoint(tmp_path / "best.pt", callback=ShellOut(canary))

    with pytest.raises(InvalidInputError) as caught:
        clean_weights(tmp_path / "best.pt", tmp_path / "out", scan=None, allowed_globals=["posix.system"])

    assert "best.pt" in str(caught.value)
    assert "posix.system" in str(caught.value) and "can run code" in str(caught.value)
    assert not canary.exists()
    assert not (tmp_path / "out" / "model.pt").exists()


def test_an_unsafe_verdict_recorded_for_the_file_is_honoured(tmp_path: Path) -> None:
    training_checkpoint(tmp_path / "best.pt")
    recorded = PickleScanSummary(
        verdict="unsafe",
        files_scanned=1,
        findings=[
            PickleFindingEntry(
                file="checkpoints/best.pt", module="builtins", name="eval", severity="unsafe", reason="runs code"
            )
        ],
    )
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "best.pt").rename(tmp_path / "checkpoints" / "best.pt")

    with pytest.raises(InvalidInputError, match=r"checkpoints/best\.pt: its pickle imports builtins\.eval"):
        clean_weights(tmp_path / "checkpoints" / "best.pt", tmp_path / "out", scan=recorded)


def test_a_suspicious_checkpoint_loads_only_when_its_globals_are_allowed(tmp_path: Path) -> None:
    state = training_checkpoint(tmp_path / "run.pt", args=argparse.Namespace(lr=0.1, epochs=3))

    with pytest.raises(InvalidInputError) as caught:
        clean_weights(tmp_path / "run.pt", tmp_path / "out", scan=None)
    assert "run.pt" in str(caught.value) and "argparse.Namespace" in str(caught.value)
    assert "allow it in the policy" in str(caught.value)

    result = clean_weights(tmp_path / "run.pt", tmp_path / "out", scan=None, allowed_globals=["argparse.Namespace"])
    assert "args" in result.stripped_keys
    assert_same_tensors(torch.load(tmp_path / "out" / "model.pt", weights_only=True), state)


def test_numpy_metrics_in_a_checkpoint_do_not_stop_the_weights_only_load(tmp_path: Path) -> None:
    state = training_checkpoint(tmp_path / "best.pth", best_val_loss=np.float64(0.37), step=np.int64(900))

    result = clean_weights(tmp_path / "best.pth", tmp_path / "out", scan=None)

    assert "best_val_loss" in result.stripped_keys and "step" in result.stripped_keys
    assert_same_tensors(torch.load(tmp_path / "out" / "model.pt", weights_only=True), state)


def test_a_legacy_format_bin_checkpoint_is_cleaned_too(tmp_path: Path) -> None:
    model, optimizer = trained(TinyNet())
    checkpoint = {"model": model.state_dict(), "optim": optimizer.state_dict(), "global_step": 20}
    torch.save(checkpoint, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)

    result = clean_weights(tmp_path / "pytorch_model.bin", tmp_path / "out", scan=None)

    assert result.stripped_keys == ("optim", "global_step") and result.safetensors_written
    assert_same_tensors(torch.load(tmp_path / "out" / "model.pt", weights_only=True), model.state_dict())


def test_quantized_tensors_get_model_pt_only_and_the_reason(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates creating quantized tensors directly
        quantized = torch.quantize_per_tensor(torch.tensor([0.1, -0.4, 1.2]), 0.1, 0, torch.qint8)
    torch.save({"state_dict": {"w": torch.ones(3), "q": quantized}, "epoch": 2}, tmp_path / "int8.ckpt")

    result = clean_weights(tmp_path / "int8.ckpt", tmp_path / "out", scan=None)

    assert result.files == ("model.pt",) and not result.safetensors_written
    assert result.safetensors_reason == "tensor 'q' is quantized (torch.qint8)"
    assert not (tmp_path / "out" / "model.safetensors").exists()
    loaded = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert torch.equal(loaded["q"].int_repr(), quantized.int_repr())


def test_a_safetensors_checkpoint_is_copied_and_converted(tmp_path: Path) -> None:
    state = {"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "b": torch.ones(3)}
    save_file(state, str(tmp_path / "step_100.safetensors"))

    result = clean_weights(tmp_path / "step_100.safetensors", tmp_path / "out", scan=None)

    assert result.files == ("model.pt", "model.safetensors")
    assert result.dtypes == {"bf16": 6, "f32": 3} and result.stripped_keys == ()
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (tmp_path / "step_100.safetensors").read_bytes()
    loaded = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert set(loaded) == {"w", "b"} and torch.equal(loaded["w"], state["w"])


def test_files_that_are_not_clean_weights_are_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(InvalidInputError, match=r"weights\.h5: not a checkpoint file .*got '\.h5'"):
        clean_weights(tmp_path / "weights.h5", tmp_path / "out", scan=None)

    torch.save(TinyNet(), tmp_path / "whole_model.pt")  # a pickled module, not a state dict
    with pytest.raises(InvalidInputError, match=r"whole_model\.pt: its pickle imports .*TinyNet"):
        clean_weights(tmp_path / "whole_model.pt", tmp_path / "out", scan=None)

    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole_model.pt").read_bytes()[:300])
    with pytest.raises(InvalidModelFileError, match=r"cut\.pt"):
        clean_weights(tmp_path / "cut.pt", tmp_path / "out", scan=None)


NO_TORCH_SCRIPT = """
import json, sys
sys.modules["torch"] = None  # as if torch were not installed
from pathlib import Path
from modelyard.errors import InvalidInputError
from modelyard.lifecycle.weights import clean_weights

root = Path(sys.argv[1])
results = {}
for name in ("training.pt", "weights_only.pt", "weights.safetensors"):
    try:
        result = clean_weights(root / name, root / ("out-" + name), scan=None)
        results[name] = {"files": result.files, "written": result.safetensors_written,
                         "reason": result.safetensors_reason, "tensors": result.tensor_count}
    except InvalidInputError as exc:
        results[name] = {"error": str(exc)}
print(json.dumps(results))
"""


def test_without_torch_weights_only_files_are_copied_and_stripping_asks_for_the_extra(tmp_path: Path) -> None:
    state = training_checkpoint(tmp_path / "training.pt")
    torch.save(state, tmp_path / "weights_only.pt")
    save_file(dict(state), str(tmp_path / "weights.safetensors"))

    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True
    )
    results = json.loads(done.stdout)

    assert "training.pt" in results["training.pt"]["error"]
    assert "install the `torch` extra" in results["training.pt"]["error"]
    assert results["weights_only.pt"]["files"] == ["model.pt"]
    assert (
        not results["weights_only.pt"]["written"] and "torch is not installed" in results["weights_only.pt"]["reason"]
    )
    assert (tmp_path / "out-weights_only.pt" / "model.pt").read_bytes() == (tmp_path / "weights_only.pt").read_bytes()
    assert results["weights.safetensors"] == {
        "files": ["model.safetensors"],
        "written": True,
        "reason": None,
        "tensors": 5,
    }
    assert not (tmp_path / "out-weights.safetensors" / "model.pt").exists()
    assert not (tmp_path / "out-training.pt" / "model.pt").exists()


# -- model card -----------------------------------------------------------------------------------

TRICKY_TAGS = ["a: b", "no", "on", "null", "1e-4", "#hash", "- dash", 'say "hi"', "two\nlines", "日本語", "x\u2028y"]


def card_input(**changes: Any) -> ModelCardInput:
    values: dict[str, Any] = {
        "artifact_name": "vision-vit-base16-embed-v1",
        "ref": "vision-vit-base16-embed-v1@3",
        "stage": "validated",
        "description": "A ViT-B/16 image encoder.",
        "license": "other",
        "base_model": "google/vit-base-patch16-224:v1",
        "tags": TRICKY_TAGS,
        "datasets": ["imagenet-1k"],
        "pipeline_tag": pipeline_tag_for("embed", "vision"),
        "languages": ["no", "en"],
        "library_name": "timm",
        "training_config": {"lr": 1e-4, "optimizer": {"name": "adamw", "betas": [0.9, 0.999]}, "note": "a | b"},
        "training_config_hash": "sha256:abc123",
        "session_id": "v5_5_20251124",
        "metrics": {"best_val_loss": 0.38, "coverage": 0.99},
        "validation": [("coverage", True, "0.99 >= 0.95"), ("collapse", False, "KL | 0.001\nbelow 0.01")],
        "lineage": ["vision-vit-base16-embed-v1@2"],
        "files": ["model.pt", "model.safetensors"],
    }
    return ModelCardInput(**(values | changes))


def read_front_matter(card: Path) -> str:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return text[4 : text.index("\n---\n", 4) + 1]


def test_the_front_matter_reads_back_as_exactly_the_hub_keys(tmp_path: Path) -> None:
    path = write_model_card(tmp_path, card_input())

    front = read_front_matter(path)
    expected = {
        "license": "other",
        "base_model": "google/vit-base-patch16-224:v1",
        "tags": TRICKY_TAGS,
        "datasets": ["imagenet-1k"],
        "pipeline_tag": "image-feature-extraction",
        "language": ["no", "en"],
        "library_name": "timm",
        "model-index": [
            {
                "name": "vision-vit-base16-embed-v1",
                "results": [
                    {
                        "task": {"type": "image-feature-extraction"},
                        "dataset": {"name": "imagenet-1k", "type": "imagenet-1k"},
                        "metrics": [
                            {"name": "best_val_loss", "type": "best_val_loss", "value": 0.38},
                            {"name": "coverage", "type": "coverage", "value": 0.99},
                        ],
                    }
                ],
            }
        ],
    }
    assert parse_yaml(front, path) == expected
    assert yaml.safe_load(front) == expected  # YAML 1.1 readers (PyYAML, the Hub's) agree


def test_the_card_body_has_training_metrics_validation_lineage_and_loading(tmp_path: Path) -> None:
    text = write_model_card(tmp_path, card_input()).read_text(encoding="utf-8")

    assert "# vision-vit-base16-embed-v1\n" in text and "A ViT-B/16 image encoder." in text
    assert "`v5_5_20251124`" in text and "`sha256:abc123`" in text
    assert "| `lr` | 0.0001 |" in text and "| `optimizer.betas` | [0.9, 0.999] |" in text
    assert "| `note` | a \\| b |" in text
    assert "| best_val_loss | 0.38 |" in text
    assert "| coverage | pass | 0.99 >= 0.95 |" in text
    assert "| collapse | FAIL | KL \\| 0.001<br>below 0.01 |" in text
    assert "`vision-vit-base16-embed-v1@2` → `vision-vit-base16-embed-v1@3`" in text
    assert "modelyard export vision-vit-base16-embed-v1@3" in text and 'load_file("model.safetensors")' in text


def test_a_card_without_metrics_has_no_model_index_and_only_known_keys() -> None:
    front = front_matter(card_input(metrics={}, license=None, tags=[], languages=[], library_name=None))
    assert parse_yaml(front) == {
        "base_model": "google/vit-base-patch16-224:v1",
        "datasets": ["imagenet-1k"],
        "pipeline_tag": "image-feature-extraction",
    }


def test_a_metric_that_is_not_a_finite_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"field 'metrics.loss': must be a finite number .*nan"):
        write_model_card(tmp_path, card_input(metrics={"loss": float("nan")}))
    assert not (tmp_path / "README.md").exists()


def test_modelyard_tasks_map_to_hub_pipeline_tags() -> None:
    assert pipeline_tag_for("text-generation", "llm") == "text-generation"
    assert pipeline_tag_for("embed", "embedding") == "feature-extraction"
    assert pipeline_tag_for("classification", "vision") == "image-classification"
    assert pipeline_tag_for("classification", "llm") == "text-classification"
    assert pipeline_tag_for("detection", "vision") == "object-detection"
    assert pipeline_tag_for("speech-recognition", "audio") == "automatic-speech-recognition"
    assert pipeline_tag_for("text-to-image", "image") == "text-to-image"
    assert pipeline_tag_for("preproc", None) is None and pipeline_tag_for(None) is None


# -- deployment -----------------------------------------------------------------------------------


def spec_for(tree: Path, name: str, **changes: Any) -> DeploymentSpec:
    """A spec from a real folder: its files, and the runtimes inspection finds compatible."""
    config = inspect_path(tree)
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file() and p.name != "README.md")
    values: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "model_files": files,
        "runtimes": [c.runtime for c in config.compatibility() if c.compatible],
        "weights_bytes": sum(w.size for w in config.weights),
    }
    return DeploymentSpec(**(values | changes))


def manifest_documents(tree: Path) -> list[dict[str, Any]]:
    text = (tree / "deployment" / "kubernetes" / "deployment.yaml").read_text()
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    for document in documents:  # independently of write_deployment's own check
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    return documents


def dockerfile_lines(tree: Path) -> list[str]:
    return (tree / "deployment" / "docker" / "Dockerfile").read_text().splitlines()


def test_an_llm_deploys_with_vllm_on_a_gpu(tmp_path: Path) -> None:
    tree = llama_folder(tmp_path / "prod")
    spec = spec_for(tree, "text.llm.Llama_3B", weights_bytes=10 * 1024**3)
    assert "vllm" in spec.runtimes and "transformers" in spec.runtimes

    result = write_deployment(tree, spec)

    assert (result.runtime, result.image, result.port) == ("vllm", "IMAGE_REGISTRY/text-llm-llama-3b:1.0.0", 8000)
    assert result.files == (
        "deployment/docker/Dockerfile",
        "deployment/kubernetes/deployment.yaml",
        "deployment/README.md",
    )
    lines = dockerfile_lines(tree)
    assert "FROM vllm/vllm-openai:v0.11.0" in lines
    assert 'COPY ["model.safetensors", "/model/model.safetensors"]' in lines
    assert 'COPY ["config.json", "/model/config.json"]' in lines
    assert "USER 10001" in lines and "EXPOSE 8000" in lines
    assert any(line.startswith("HEALTHCHECK ") and "http://127.0.0.1:8000/health" in line for line in lines)
    assert 'ENTRYPOINT ["vllm", "serve"]' in lines
    assert lines[-1].startswith('CMD ["/model", "--served-model-name", "text-llm-llama-3b", "--host", "0.0.0.0"')
    deployment, service = manifest_documents(tree)
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.0"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": f"{10 * 1024 * 5 // 4 + 4096}Mi"},
        "limits": {"memory": f"{10 * 1024 * 2 + 4096}Mi", "nvidia.com/gpu": 1},
    }
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    manifest_text = (tree / "deployment" / "kubernetes" / "deployment.yaml").read_text()
    assert "# IMAGE_REGISTRY is a placeholder" in manifest_text
    readme = (tree / "deployment" / "README.md").read_text()
    image = "registry.example.com/models/text-llm-llama-3b:1.0.0"
    assert f"docker build -f deployment/docker/Dockerfile -t {image} ." in readme
    assert "sed -i 's#IMAGE_REGISTRY#registry.example.com/models#' deployment/kubernetes/deployment.yaml" in readme
    assert "kubectl apply -f deployment/kubernetes/deployment.yaml" in readme


def test_a_gguf_deploys_with_the_llama_cpp_server(tmp_path: Path) -> None:
    gguf_file(tmp_path / "prod" / "weights" / "tiny-q4_k_m.gguf")
    spec = spec_for(tmp_path / "prod", "7B.chat_GGUF")

    result = write_deployment(tmp_path / "prod", spec)

    assert (result.runtime, result.port, result.image) == ("llama-cpp", 8080, "IMAGE_REGISTRY/m-7b-chat-gguf:1.0.0")
    lines = dockerfile_lines(tmp_path / "prod")
    assert "FROM ghcr.io/ggml-org/llama.cpp:server-b9603" in lines
    assert 'COPY ["weights/tiny-q4_k_m.gguf", "/model/tiny-q4_k_m.gguf"]' in lines
    assert 'ENTRYPOINT ["/app/llama-server"]' in lines
    assert lines[-1] == (
        'CMD ["--model", "/model/tiny-q4_k_m.gguf", "--alias", "m-7b-chat-gguf", "--host", "0.0.0.0", "--port", "8080"]'
    )
    assert any(line.startswith("HEALTHCHECK ") and '"curl"' in line for line in lines)
    deployment, _ = manifest_documents(tmp_path / "prod")
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def test_an_embedding_model_deploys_with_sentence_transformers_and_serve_py(tmp_path: Path) -> None:
    tree = sentence_transformers_folder(tmp_path / "prod")

    result = write_deployment(tree, spec_for(tree, "text-mpnet-embed-v1", pipeline_tag="feature-extraction"))

    assert result.runtime == "sentence-transformers"
    assert "deployment/docker/serve.py" in result.files
    compile((tree / "deployment" / "docker" / "serve.py").read_text(), "serve.py", "exec")
    lines = dockerfile_lines(tree)
    assert "FROM python:3.11.13-slim-bookworm" in lines
    install = "\n".join(lines)
    assert "torch==2.13.0" in install and "sentence-transformers==6.2.0" in install
    assert 'COPY ["1_Pooling/config.json", "/model/1_Pooling/config.json"]' in lines
    assert 'COPY ["deployment/docker/serve.py", "/app/serve.py"]' in lines
    env = next(line for line in lines if line.startswith("ENV "))
    assert 'MODELYARD_RUNTIME="sentence-transformers"' in env and 'MODELYARD_TASK="feature-extraction"' in env
    assert lines[-1] == 'CMD ["python3", "/app/serve.py"]'
    manifest_documents(tree)


def test_deployment_config_overrides_the_defaults(tmp_path: Path) -> None:
    tree = llama_folder(tmp_path / "prod")
    overrides = {
        "runtime": "tgi",
        "replicas": 3,
        "port": 9000,
        "image": "registry.example.com/team/llama:1.0.0",
        "resources": {"requests": {"cpu": "4"}, "limits": {"memory": "48Gi"}},
        "env": {"MAX_INPUT_TOKENS": "4096"},
        "node_selector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "namespace": "models",
        "args": ["--max-concurrent-requests", "64"],
    }

    result = write_deployment(tree, spec_for(tree, "llama", deployment_config=overrides))

    assert (result.runtime, result.port, result.image) == ("tgi", 9000, "registry.example.com/team/llama:1.0.0")
    assert dockerfile_lines(tree)[-1] == (
        'CMD ["--model-id", "/model", "--hostname", "0.0.0.0", "--port", "9000", "--max-concurrent-requests", "64"]'
    )
    deployment, service = manifest_documents(tree)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 3 and deployment["metadata"]["namespace"] == "models"
    assert container["image"] == "registry.example.com/team/llama:1.0.0"
    assert container["ports"][0]["containerPort"] == 9000
    assert container["resources"]["requests"]["cpu"] == "4"
    assert container["resources"]["limits"]["memory"] == "48Gi"
    assert container["env"] == [{"name": "MAX_INPUT_TOKENS", "value": "4096"}]
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["tolerations"] == overrides["tolerations"]
    assert service["metadata"]["namespace"] == "models"
    readme = (tree / "deployment" / "README.md").read_text()
    assert "docker build -f deployment/docker/Dockerfile -t registry.example.com/team/llama:1.0.0 ." in readme
    assert "sed -i" not in readme and "kubectl rollout status deployment/llama -n models" in readme


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"replica": 2}, r"field 'deployment_config.replica': unknown key; known keys: runtime, image, replicas"),
        ({"replicas": -1}, r"field 'deployment_config.replicas': must be an integer from 0 to 10000, got -1"),
        ({"env": {"A": 1}}, r"field 'deployment_config.env': must be a mapping of environment variable names"),
        ({"runtime": "diffusers"}, r"field 'deployment_config.runtime': runtime 'diffusers' cannot serve this"),
    ],
)
def test_bad_deployment_config_names_the_key(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    tree = llama_folder(tmp_path / "prod")
    with pytest.raises(InvalidInputError, match=message):
        write_deployment(tree, spec_for(tree, "llama", deployment_config=config))


def test_a_dockerfile_whose_copy_source_is_missing_is_an_error(tmp_path: Path) -> None:
    tree = llama_folder(tmp_path / "prod")
    spec = spec_for(tree, "llama")
    spec = DeploymentSpec(**(vars(spec) | {"model_files": [*spec.model_files, "model-00002-of-00002.safetensors"]}))

    with pytest.raises(InvalidInputError) as caught:
        write_deployment(tree, spec)

    assert "deployment/docker/Dockerfile" in str(caught.value)
    assert "COPY source 'model-00002-of-00002.safetensors' does not exist under" in str(caught.value)


def test_no_serving_runtime_means_no_dockerfile_and_the_reason(tmp_path: Path) -> None:
    result = write_deployment(
        tmp_path, DeploymentSpec("sd15-lora", "1.0.0", ["lora.safetensors"], ["comfyui", "stable-diffusion"], 1000)
    )

    assert result.runtime is None and result.files == ("deployment/README.md",)
    assert result.skipped_reason is not None and "comfyui, stable-diffusion" in result.skipped_reason
    assert not (tmp_path / "deployment" / "docker").exists()
    assert result.skipped_reason in (tmp_path / "deployment" / "README.md").read_text()


def test_a_manifest_that_breaks_the_kubernetes_schema_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: 1\n  replicaz: 2\n"
        "  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n"
        "    spec:\n      containers: [{name: x, image: x}]\n"
    )
    with pytest.raises(
        InvalidInputError, match=r"deployment\.yaml: Deployment fails the Kubernetes 1\.30 schema .*replicaz"
    ):
        check_manifest(manifest)

    manifest.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  labels:\n    enabled: on\n")
    with pytest.raises(InvalidInputError, match=r"deployment\.yaml: document 1 reads differently under YAML 1\.1"):
        check_manifest(manifest)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_generated_serve_py_serves_cleaned_weights(tmp_path: Path) -> None:
    state = training_checkpoint(tmp_path / "best.pt")
    clean_weights(tmp_path / "best.pt", tmp_path / "prod", scan=None)
    write_deployment(tmp_path / "prod", DeploymentSpec("tiny", "1", ["model.safetensors"], ["pytorch"], 500))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "tinynet.py").write_text(
        textwrap.dedent(inspect_source_of_tinynet()) + "\n\ndef build():\n    return TinyNet()\n"
    )
    port = free_port()
    env = os.environ | {
        "MODELYARD_RUNTIME": "pytorch",
        "MODEL_FILE": str(tmp_path / "prod" / "model.safetensors"),
        "MODEL_FACTORY": "tinynet:build",
        "PYTHONPATH": str(tmp_path / "code"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    server = subprocess.Popen(
        [sys.executable, str(tmp_path / "prod" / "deployment" / "docker" / "serve.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, health = http("GET", f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline, "serve.py did not answer within 30 s"
                time.sleep(0.1)
        assert (status, health) == (200, {"status": "ok", "runtime": "pytorch"})
        status, answer = http("POST", f"http://127.0.0.1:{port}/predict", {"inputs": [[1.0, 2.0, 3.0, 4.0]]})
        model = TinyNet()
        model.load_state_dict(state)
        expected = model(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()
        assert status == 200 and np.allclose(answer["outputs"], expected)
        assert http("POST", f"http://127.0.0.1:{port}/predict", {"wrong": 1})[0] == 400
    finally:
        server.terminate()
        server.wait(timeout=10)


def inspect_source_of_tinynet() -> str:
    import inspect

    return "import torch\n\n\n" + inspect.getsource(TinyNet)


# -- resource usage -------------------------------------------------------------------------------


def test_loading_safetensors_in_a_child_measures_its_memory(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    save_file({"big": torch.ones(size // 4), "small": torch.zeros(3)}, str(tmp_path / "model.safetensors"))

    usage = measure_resource_usage([tmp_path / "model.safetensors"])

    file_size = (tmp_path / "model.safetensors").stat().st_size
    assert usage.files == {"model.safetensors": file_size}
    assert usage.method == "safetensors.numpy.load_file"
    assert usage.load_seconds > 0
    assert usage.peak_rss_bytes > file_size
    assert usage.peak_rss_bytes - usage.baseline_rss_bytes >= 0.9 * size  # the weights themselves
    assert set(usage.library_versions) == {"numpy", "safetensors"}  # torch was not imported
    assert usage.python_version == ".".join(map(str, sys.version_info[:3]))
    stored = json.loads(usage.to_json())
    assert stored["peak_rss_bytes"] == usage.peak_rss_bytes and stored["total_bytes"] == file_size


def test_a_cleaned_model_pt_and_a_gguf_are_measured_together(tmp_path: Path) -> None:
    training_checkpoint(tmp_path / "best.pt")
    clean_weights(tmp_path / "best.pt", tmp_path / "prod", scan=None)
    gguf_file(tmp_path / "prod" / "tiny.gguf")

    usage = measure_resource_usage([tmp_path / "prod" / "model.pt", tmp_path / "prod" / "tiny.gguf"])

    assert usage.methods == {
        "model.pt": "torch.load(weights_only=True)",
        "tiny.gguf": "numpy.memmap (every GGUF tensor read)",
    }
    assert usage.peak_rss_bytes > usage.total_bytes and usage.load_seconds > 0
    assert "torch" in usage.library_versions


def test_a_file_that_fails_to_load_is_named(tmp_path: Path) -> None:
    save_file({"w": torch.ones(1000)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"cut\.safetensors"):
        measure_resource_usage([tmp_path / "model.safetensors", tmp_path / "cut.safetensors"])

    import pickle

    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))  # no torch framing
    with pytest.raises(InvalidInputError, match=r"plain\.pt: loading failed in the measuring process: Unpickl"):
        measure_resource_usage([tmp_path / "plain.pt"])

    training_checkpoint(tmp_path / "evil.pt", callback=ShellOut(tmp_path / "pwned"))
    with pytest.raises(InvalidInputError, match=r"evil\.pt: its pickle scan says unsafe \(posix\.system\)"):
        measure_resource_usage([tmp_path / "evil.pt"])
    assert not (tmp_path / "pwned").exists()


def test_a_load_past_the_timeout_is_stopped_and_named(tmp_path: Path) -> None:
    save_file({"w": torch.ones(1000)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(InvalidInputError, match=r"model\.safetensors: loading took longer than 0\.01 s"):
        measure_resource_usage([tmp_path / "model.safetensors"], timeout=0.01)


def test_benchmarks_must_be_a_json_object(tmp_path: Path) -> None:
    (tmp_path / "bench.json").write_text('{"p50_ms": 12.5, "throughput": {"rps": 40}}')
    assert read_benchmarks(tmp_path / "bench.json") == {"p50_ms": 12.5, "throughput": {"rps": 40}}

    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match=r"list\.json: a benchmarks file must hold a JSON object.*list"):
        read_benchmarks(tmp_path / "list.json")
    (tmp_path / "broken.json").write_text('{"p50_ms": }')
    with pytest.raises(InvalidInputError, match=r"broken\.json: invalid JSON at line 1"):
        read_benchmarks(tmp_path / "broken.json")
    with pytest.raises(InvalidInputError, match=r"missing\.json: file not found"):
        read_benchmarks(tmp_path / "missing.json")
