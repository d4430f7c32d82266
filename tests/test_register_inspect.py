"""Registration with inspection: the model entry in the catalog, the manifest fields it fills, the
list filters, `compat`, `reinspect`, and what a malformed or unsafe model file does."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliResult, backdate
from model_builders import gguf_file, llama_folder, peft_folder, safetensors_file
from modelyard.errors import InvalidModelFileError, NotFoundError
from modelyard.modelconfig import AdapterConfig, LlmConfig
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry

Cli = Callable[..., CliResult]


def test_register_stores_the_typed_entry_and_fills_the_manifest(any_registry: Registry, tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama-3.2-1b-chat")
    result = any_registry.register(root, RegisterOptions(artifact_name="gpt-small-v1"))
    manifest = result.version.manifest
    assert (manifest.precision, manifest.quantized, manifest.base_model) == ("fp16", False, "meta-llama/Llama-3.2-1B")
    config = any_registry.model_config("gpt-small-v1@1")
    assert isinstance(config, LlmConfig) and config.tokenizer.eos_token == "<|eot_id|>"
    entry = any_registry.model_entry("gpt-small-v1")
    assert (entry.id, entry.name, entry.model_type, entry.status) == ("gpt-small-v1@1", "gpt-small-v1", "llm", "raw")
    assert entry.path == str(root) and entry.size == manifest.total_size
    # The same files again: the same version, found without inspecting anything.
    again = any_registry.register(root, RegisterOptions(artifact_name="gpt-small-v1"))
    assert (again.created, again.version.number) == (False, 1)


def test_a_given_value_wins_over_the_files_with_a_warning(registry: Registry, tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama")
    result = registry.register(root, RegisterOptions(artifact_name="gpt-small-v1", precision="bf16"))
    assert result.version.manifest.precision == "bf16"
    assert any("the files say precision 'fp16'" in w and "'bf16'" in w for w in result.warnings)


def test_list_filters_on_the_inspected_fields(any_registry: Registry, tmp_path: Path) -> None:
    from modelyard.domain import ListFilters

    any_registry.register(llama_folder(tmp_path / "llama"), RegisterOptions(artifact_name="gpt-small-v1"))
    quantized = tmp_path / "gguf"
    gguf_file(quantized / "tiny.Q4_K_M.gguf")
    backdate(quantized)
    any_registry.register(quantized, RegisterOptions(artifact_name="gpt-medium-v1"))
    any_registry.register(peft_folder(tmp_path / "lora"), RegisterOptions(artifact_name="llama32-3b-grammar-v1"))

    def names(**filters: str) -> list[str]:
        return [row.artifact_name for row in any_registry.list(ListFilters(**filters))]

    assert names(model_type="llm") == ["gpt-medium-v1", "gpt-small-v1"]
    assert names(model_type="adapter") == ["llama32-3b-grammar-v1"]
    assert names(architecture="LlamaForCausalLM") == ["gpt-small-v1"]
    assert names(family="llama") == ["gpt-medium-v1", "gpt-small-v1"]
    assert names(quantization="Q4_K_M") == ["gpt-medium-v1"]
    assert names(tag="chat") == ["gpt-small-v1"]  # a tag from the model card
    assert names(base_model="meta-llama/Llama-3.2-3B-Instruct") == ["llama32-3b-grammar-v1"]
    row = any_registry.list(ListFilters(quantization="Q4_K_M"))[0]
    assert (row.model_type, row.pickle_verdict) == ("llm", "none")


def test_the_cli_shows_lists_and_answers_compat(cli: Cli, tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama")
    assert cli("register", str(root), "--artifact-name", "gpt-small-v1", check=True).returncode == 0
    shown = cli("show", "gpt-small-v1", check=True).stdout
    assert "model:" in shown and "llm (text-generation)" in shown and "LlamaForCausalLM" in shown
    typed = cli("show", "gpt-small-v1", "--json", "--model", check=True).json()
    assert typed["model_type"] == "llm" and typed["tokenizer"]["bos_token"] == "<|begin_of_text|>"
    assert cli("show", "gpt-small-v1", "--json", check=True).json()["artifact_name"] == "gpt-small-v1"
    listed = cli("list", "--type", "llm", "--json", check=True).json()
    assert [(r["artifact_name"], r["model_type"], r["architecture"]) for r in listed] == [
        ("gpt-small-v1", "llm", "LlamaForCausalLM")
    ]
    assert cli("list", "--type", "image", "--json", check=True).json() == []
    table = cli("compat", "gpt-small-v1", "--json", check=True).json()
    assert {row["runtime"]: row["compatible"] for row in table}["vllm"] is True
    assert len(table) == 12 and all(row["reason"] for row in table)
    assert cli("compat", "gpt-small-v1", "--runtime", "vllm").returncode == 0
    refused = cli("compat", "gpt-small-v1", "--runtime", "llama-cpp")
    assert refused.returncode == 1 and "GGUF" in refused.stdout
    unknown = cli("compat", "gpt-small-v1", "--runtime", "triton")
    assert unknown.returncode == 3 and "known: llama-cpp" in unknown.stderr


def test_inspect_prints_without_registering(cli: Cli, tmp_path: Path, home: Path) -> None:
    root = peft_folder(tmp_path / "llama32_3b_grammar_lora")
    human = cli("inspect", str(root), check=True).stdout
    assert "adapter" in human and "meta-llama/Llama-3.2-3B-Instruct" in human and "peft" in human
    data = cli("inspect", str(root), "--json", check=True).json()
    assert (data["model_type"], data["peft_type"], data["r"], data["alpha"]) == ("adapter", "LORA", 16, 32.0)
    assert {"model_type", "task", "format", "parameter_count", "dtype"} <= set(data)
    assert not (home / "catalog.db").exists()


def test_a_malformed_model_file_stops_the_registration_and_leaves_nothing(cli: Cli, tmp_path: Path, home: Path) -> None:
    root = llama_folder(tmp_path / "llama")
    weights = root / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    backdate(root)
    failed = cli("register", str(root), "--artifact-name", "gpt-small-v1")
    assert failed.returncode == 3
    assert failed.stderr.count("\n") == 1 and str(weights) in failed.stderr and "--no-inspect" in failed.stderr
    assert not any((home / "store" / "objects").rglob("*/" + "?" * 64)), "a blob was published"
    assert not list((home / "store" / "tmp").iterdir()), "a staged blob was left behind"
    assert cli("list", "--json", check=True).json() == []
    # Without inspection the files register as they are, and `reinspect` names the problem.
    plain = cli("register", str(root), "--artifact-name", "gpt-small-v1", "--no-inspect", check=True)
    assert plain.stdout.startswith("registered gpt-small-v1@1")
    assert "not inspected" in cli("show", "gpt-small-v1", check=True).stdout
    again = cli("reinspect", "gpt-small-v1@1")
    assert again.returncode == 3 and "model.safetensors" in again.stderr


def test_reinspect_fills_entries_and_is_audited(registry: Registry, tmp_path: Path) -> None:
    root = llama_folder(tmp_path / "llama")
    registry.register(root, RegisterOptions(artifact_name="gpt-small-v1", inspect=False))
    assert registry.model_config("gpt-small-v1") is None
    with pytest.raises(NotFoundError, match="reinspect gpt-small-v1"):
        registry.compat("gpt-small-v1")
    assert [v.ref for v in registry.reinspect(outdated_only=True)] == ["gpt-small-v1@1"]
    assert isinstance(registry.model_config("gpt-small-v1"), LlmConfig)
    assert registry.reinspect(outdated_only=True) == []
    event = registry.events(1)[0]
    assert (event["action"], event["artifact_name"], event["details"]["model_type"]) == (
        "inspect",
        "gpt-small-v1",
        "llm",
    )


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch /tmp/modelyard-pwned",))


def test_an_unsafe_pickle_registers_and_its_verdict_is_kept(cli: Cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    safetensors_file(run / "model.safetensors", {"w": (2, 2)})
    (run / "extra_state.pkl").write_bytes(pickle.dumps({"state": _Exploit()}, protocol=4))
    backdate(run)
    assert cli("register", str(run), "--artifact-name", "gpt-small-v1", check=True).returncode == 0
    listed = cli("list", "--json", check=True).json()
    assert listed[0]["pickle_verdict"] == "unsafe"
    shown = cli("show", "gpt-small-v1", check=True).stdout
    assert "UNSAFE" in shown and "system in extra_state.pkl" in shown
    typed = cli("show", "gpt-small-v1", "--json", "--model", check=True).json()
    assert typed["pickle_scan"]["verdict"] == "unsafe"
    assert not Path("/tmp/modelyard-pwned").exists()


def test_an_adapter_folder_through_the_api(registry: Registry, tmp_path: Path) -> None:
    registry.register(peft_folder(tmp_path / "lora"), RegisterOptions(artifact_name="llama32-3b-grammar-v1"))
    config = registry.model_config("llama32-3b-grammar-v1@latest")
    assert isinstance(config, AdapterConfig) and config.base_model == "meta-llama/Llama-3.2-3B-Instruct"
    assert registry.show("llama32-3b-grammar-v1").manifest.base_model == "meta-llama/Llama-3.2-3B-Instruct"


def test_inspect_reports_a_bad_file_with_exit_3(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF\x09\x00\x00\x00" + b"\x00" * 16)
    result = cli("inspect", str(bad))
    assert result.returncode == 3 and str(bad) in result.stderr and "version" in result.stderr


def test_inspect_api_raises_the_model_file_error(registry: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": "high"}))
    with pytest.raises(InvalidModelFileError, match="lora_alpha"):
        registry.inspect(bad)
