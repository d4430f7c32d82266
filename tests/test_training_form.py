"""The learning form (seed 000 section 3): its preview (name, manifest, training_config_hash) through the
Python API, the CLI and a real server; job definitions and their storage; every bad input.

The two mapping examples of seed 000 must come out exactly: `vision-vit-base16-embed-v1` and
`gpt-small-v1-lm-finetune-int8-v1`, with the seed's manifest keys and values, and a hash that is the
SHA-256 of the RFC 8785 bytes of the training settings (written out by hand below).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conftest import RunBuilder, write_safetensors
from modelyard.catalog.db import create_catalog_engine, downgrade, upgrade
from modelyard.catalog.tables import Base
from modelyard.digest import training_config_hash
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.manifest import ArtifactManifest
from modelyard.names import MODALITY_COMPONENTS, NODE_TYPES, SEED_PURPOSES, SEED_QUANT_SUFFIXES, parse_name, slug
from modelyard.register.flow import current_user
from modelyard.registry import Registry
from modelyard.training.form import LearningForm, load_form, preview
from modelyard.training.jobs import define_job, job_definition, job_definitions, load_definition
from serverproc import ServerProcess

VISION = {
    "component": "vision",
    "base_model": "vit-base16",
    "task": "embed",
    "embedding_dim": 768,
    "precision": "fp16",
    "quantize": False,
    "batch_size": 256,
    "epochs": 10,
}
GPT = {
    "component": "inference",
    "base_model": "gpt-small-v1",
    "task": "lm-finetune",
    "max_seq_length": 1024,
    "learning_rate": 2e-5,
    "epochs": 3,
    "quantize": "int8",
}
# RFC 8785 bytes of each example's training settings, by hand: sorted keys, no spaces, 2e-5 as 0.00002.
VISION_HASH = hashlib.sha256(b'{"batch_size":256,"epochs":10}').hexdigest()
GPT_HASH = hashlib.sha256(b'{"epochs":3,"learning_rate":0.00002}').hexdigest()
VISION_MANIFEST = {  # seed 000's example manifest, plus what else the form determines
    "base_model": "vit-base16",
    "task": "embed",
    "embedding_dim": 768,
    "precision": "fp16",
    "training_config_hash": VISION_HASH,
    "artifact_name": "vision-vit-base16-embed-v1",
    "model_version": 1,
    "component": "vision",
    "quantized": False,
    "training_config": {"batch_size": 256, "epochs": 10},
    "privacy_level": "none",
    "train_data_tags": [],
}
GPT_MANIFEST = {
    "quantized": True,
    "precision": "int8",
    "input_spec": {"max_seq_length": 1024},
    "artifact_name": "gpt-small-v1-lm-finetune-int8-v1",
    "model_version": 1,
    "base_model": "gpt-small-v1",
    "task": "lm-finetune",
    "component": "inference",
    "node_type": "inference",
    "training_config": {"learning_rate": 2e-5, "epochs": 3},
    "training_config_hash": GPT_HASH,
}
BUILTIN = {"kind": "builtin", "trainer": "ddp"}
DP = {"target_epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0}


def _contains(manifest: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        assert key in manifest, f"the preview manifest lacks {key}"
        assert manifest[key] == value, f"{key}: {manifest[key]!r} != {value!r}"


# -- the seed's examples through the Python API ----------------------------------------------------


def test_the_vision_example_gives_the_seeds_name_manifest_and_hash() -> None:
    result = preview(LearningForm.model_validate(VISION))
    assert result.artifact_name == "vision-vit-base16-embed-v1"
    assert result.training_config_hash == VISION_HASH == training_config_hash({"batch_size": 256, "epochs": 10})
    _contains(result.manifest, VISION_MANIFEST)
    assert "node_type" not in result.manifest  # a modality says nothing of the node it runs on
    assert result.manifest["model_config"] == {} and result.manifest["input_spec"] == {}


def test_the_gpt_example_gives_the_final_quantized_name_and_the_seeds_manifest() -> None:
    result = preview(LearningForm.model_validate(GPT))
    assert result.artifact_name == "gpt-small-v1-lm-finetune-int8-v1"
    assert result.training_config_hash == GPT_HASH
    _contains(result.manifest, GPT_MANIFEST)
    assert "embedding_dim" not in result.manifest


@pytest.mark.parametrize("example", [VISION, GPT], ids=["vision", "gpt"])
def test_a_preview_manifest_is_a_valid_manifest_once_it_has_files(example: dict[str, Any]) -> None:
    manifest = preview(LearningForm.model_validate(example)).manifest
    full = ArtifactManifest.model_validate({**manifest, "created_at": datetime.now(UTC), "files": []})
    assert full.artifact_name == manifest["artifact_name"]
    assert full.training_config_hash == manifest["training_config_hash"]
    parsed = parse_name(manifest["artifact_name"])
    assert (parsed.base_model, parsed.purpose, parsed.major) == (manifest["base_model"], manifest["task"], 1)
    assert parsed.quant == ("int8" if manifest["quantized"] else None)


@pytest.mark.parametrize("example", [VISION, GPT], ids=["vision", "gpt"])
def test_registering_a_run_with_the_preview_manifest_stores_what_the_preview_said(
    example: dict[str, Any], registry: Registry, make_run: RunBuilder
) -> None:
    """A training script writes the preview's manifest into its run: the registry accepts it unchanged."""
    expected = preview(LearningForm.model_validate(example), registry)
    run = make_run(manifest=expected.manifest)
    stored = registry.register(run).version
    assert stored.ref == f"{expected.artifact_name}@1"
    saved = stored.manifest.model_dump(by_alias=True, mode="json")
    for key, value in expected.manifest.items():
        if isinstance(value, dict) and key != "training_config":
            assert {k: saved[key][k] for k in value} == value, key
        else:
            assert saved[key] == value, key
    again = preview(LearningForm.model_validate(example), registry)
    assert again.manifest["model_version"] == 2 and again.artifact_name == expected.artifact_name


def test_every_field_lands_where_seed_000_maps_it() -> None:
    form = LearningForm(
        component="audio",
        base_model="wav2vec2-base",
        task="classification",
        major_version=3,
        node_type="encoder",
        embedding_dim=512,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        sample_rate=16000,
        input_size=[1, 16000],
        batch_size=32,
        learning_rate=1e-4,
        optimizer="adamw",
        epochs=20,
        weight_decay=0.01,
        precision="bf16",
        checkpoint_interval=5,
        augmentations=["specaugment", "noise"],
        preprocessing_profile="log-mel-80",
        train_data_tags=["librispeech", "commonvoice"],
        privacy_level="secure-agg",
    )
    result = preview(form)
    assert result.artifact_name == "audio-wav2vec2-base-classification-v3"
    assert result.manifest == {
        "schema_version": 2,
        "artifact_name": "audio-wav2vec2-base-classification-v3",
        "model_version": 1,
        "component": "audio",
        "node_type": "encoder",
        "base_model": "wav2vec2-base",
        "task": "classification",
        "embedding_dim": 512,
        "quantized": False,
        "precision": "bf16",
        "training_config": {
            "batch_size": 32,
            "learning_rate": 1e-4,
            "optimizer": "adamw",
            "epochs": 20,
            "weight_decay": 0.01,
        },
        "training_config_hash": hashlib.sha256(
            b'{"batch_size":32,"epochs":20,"learning_rate":0.0001,"optimizer":"adamw","weight_decay":0.01}'
        ).hexdigest(),
        "train_data_tags": ["librispeech", "commonvoice"],
        "privacy_level": "secure-agg",
        "model_config": {"hidden_size": 768, "num_layers": 12, "num_heads": 12},
        "input_spec": {"sample_rate": 16000, "input_size": [1, 16000]},
        "checkpoint_policy": {"checkpoint_interval": 5},
        "data_prep_profile": {"augmentations": ["specaugment", "noise"], "preprocessing_profile": "log-mel-80"},
    }


@pytest.mark.parametrize(
    ("fields", "name", "precision"),
    [
        ({"quantize": True}, "gpt-small-v1-lm-finetune-int8-v1", "int8"),
        ({"precision": "int8"}, "gpt-small-v1-lm-finetune-int8-v1", "int8"),
        ({"quantize": "int8", "precision": "int8"}, "gpt-small-v1-lm-finetune-int8-v1", "int8"),
        ({"quantize": "int4"}, "gpt-small-v1-lm-finetune-int4-v1", None),
        ({"quantize": False, "precision": "bf16"}, "gpt-small-v1-lm-finetune-v1", "bf16"),
        ({}, "gpt-small-v1-lm-finetune-v1", None),
    ],
)
def test_quantization_sets_the_suffix_the_flag_and_the_precision(
    fields: dict[str, Any], name: str, precision: str | None
) -> None:
    form = {k: v for k, v in GPT.items() if k != "quantize"} | fields
    manifest = preview(LearningForm.model_validate(form)).manifest
    assert manifest["artifact_name"] == name
    assert manifest["quantized"] is ("int" in name)
    assert manifest.get("precision") == precision


def test_a_free_form_base_model_is_slugged_in_the_name_and_kept_in_the_manifest() -> None:
    form = LearningForm(component="text", base_model="meta-llama/Llama-3.2-3B", task="lm-finetune")
    result = preview(form)
    assert result.artifact_name == "text-meta-llama-llama-3.2-3b-lm-finetune-v1"
    assert result.manifest["base_model"] == "meta-llama/Llama-3.2-3B"


def test_the_registrys_vocabulary_extends_the_choices(home: Path) -> None:
    (home / "config.toml").write_text(
        '[vocabulary]\ncomponents = ["lidar"]\npurposes = ["segmentation"]\nquant_suffixes = ["q4"]\n'
    )
    form = LearningForm(component="lidar", base_model="pointnet", task="segmentation", quantize="q4")
    with pytest.raises(InvalidInputError) as refused:
        preview(form)
    assert refused.value.field == "component"
    with Registry.open(home) as registry:
        assert preview(form, registry).artifact_name == "lidar-pointnet-segmentation-q4-v1"


# -- properties --------------------------------------------------------------------------------------

_VOCABULARY_TOKENS = {
    token for word in (*MODALITY_COMPONENTS, *SEED_PURPOSES, *SEED_QUANT_SUFFIXES) for token in word.split("-")
}
_TOKEN = st.from_regex(r"\A[a-z][a-z0-9]{0,7}\Z").filter(lambda token: token not in _VOCABULARY_TOKENS)
_BASE_MODEL = st.builds(
    lambda tokens, own_major: "-".join(tokens) + (f"-v{own_major}" if own_major else ""),
    st.lists(_TOKEN, min_size=1, max_size=4),
    st.integers(min_value=0, max_value=3),
)
_QUANTIZE = st.sampled_from([None, False, True, *SEED_QUANT_SUFFIXES])


@settings(max_examples=300, deadline=None)
@given(
    component=st.sampled_from([*MODALITY_COMPONENTS, *NODE_TYPES]),
    base_model=_BASE_MODEL,
    task=st.sampled_from(SEED_PURPOSES),
    quantize=_QUANTIZE,
    major=st.integers(min_value=1, max_value=999),
)
def test_the_name_follows_the_rule_and_parses_back(
    component: str, base_model: str, task: str, quantize: bool | str | None, major: int
) -> None:
    form = LearningForm(component=component, base_model=base_model, task=task, quantize=quantize, major_version=major)
    name = preview(form).artifact_name
    quant = "int8" if quantize is True else (quantize or None)
    prefix = [component] if component in MODALITY_COMPONENTS else []
    assert name == "-".join([*prefix, base_model, task, *([quant] if quant else []), f"v{major}"])
    parsed = parse_name(name)
    assert (parsed.component, parsed.base_model, parsed.purpose, parsed.quant, parsed.major) == (
        component if prefix else None,
        base_model,
        task,
        quant,
        major,
    )


@settings(max_examples=300, deadline=None)
@given(base_model=st.text(min_size=1, max_size=60), component=st.sampled_from(["vision", "inference"]))
def test_any_base_model_names_the_artifact_by_its_slug_or_is_refused_naming_base_model(
    base_model: str, component: str
) -> None:
    try:
        form = LearningForm(component=component, base_model=base_model, task="embed")
    except ValidationError as exc:
        assert {error["loc"] for error in exc.errors()} == {("base_model",)}
        return
    try:
        result = preview(form)
    except InvalidInputError as exc:
        assert exc.field == "base_model"
        return
    parsed = parse_name(result.artifact_name)
    assert parsed.base_model == slug(base_model) and parsed.purpose == "embed"
    assert result.manifest["base_model"] == base_model


_TRAINING = {
    "batch_size": st.integers(min_value=1, max_value=4096),
    "learning_rate": st.floats(min_value=1e-9, max_value=10, allow_nan=False, allow_infinity=False),
    "optimizer": st.sampled_from(["adamw", "adam", "sgd", "lion"]),
    "epochs": st.integers(min_value=1, max_value=1000),
    "weight_decay": st.floats(min_value=0, max_value=1, allow_nan=False),
}
_TRAINING_VALUES = st.fixed_dictionaries({}, optional=_TRAINING)


def _decimal_spellings(mantissa: int, exponent: int) -> list[str]:
    """One decimal number, spelled five ways in JSON."""
    plain = format(Decimal(mantissa).scaleb(exponent), "f")
    return [
        f"{mantissa}e{exponent}",
        f"{mantissa}E{exponent}",
        f"{mantissa}.0e{exponent}",
        plain,
        f"{mantissa * 10}e{exponent - 1}",
    ]


@settings(max_examples=200, deadline=None)
@given(
    values=_TRAINING_VALUES,
    mantissa=st.integers(min_value=1, max_value=9999),
    exponent=st.integers(min_value=-12, max_value=-4),
    order=st.randoms(use_true_random=False),
)
def test_the_hash_ignores_key_order_and_number_spelling(
    values: dict[str, Any], mantissa: int, exponent: int, order: Any
) -> None:
    fields = {**GPT, **values}
    hashes = set()
    for spelling in _decimal_spellings(mantissa, exponent):
        items = [(key, json.dumps(value)) for key, value in fields.items() if key != "learning_rate"]
        items.append(("learning_rate", spelling))
        order.shuffle(items)
        text = "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in items) + "}"
        result = preview(LearningForm.model_validate_json(text))
        assert result.manifest["training_config"]["learning_rate"] == float(Decimal(mantissa).scaleb(exponent))
        hashes.add(result.training_config_hash)
    assert len(hashes) == 1


@settings(max_examples=200, deadline=None)
@given(values=_TRAINING_VALUES, data=st.data())
def test_equal_settings_hash_alike_and_any_change_of_one_changes_the_hash(values: dict[str, Any], data: Any) -> None:
    first = preview(LearningForm.model_validate({**GPT, **values}))
    twin = preview(LearningForm.model_validate(dict(reversed(list({**GPT, **values}.items())))))
    assert twin.training_config_hash == first.training_config_hash
    assert first.training_config_hash == training_config_hash(first.manifest["training_config"])

    key = data.draw(st.sampled_from(sorted(_TRAINING)))
    other = data.draw(_TRAINING[key].filter(lambda value: value != {**GPT, **values}.get(key)))
    changed = preview(LearningForm.model_validate({**GPT, **values, key: other}))
    assert changed.training_config_hash != first.training_config_hash

    # The model's shape and the name are not training settings: the hash stays.
    reshaped = preview(LearningForm.model_validate({**GPT, **values, "embedding_dim": 64, "base_model": "gpt-tiny"}))
    assert reshaped.training_config_hash == first.training_config_hash
    assert reshaped.artifact_name != first.artifact_name


# -- every bad input, in Python and over HTTP -------------------------------------------------------

# (fields to change in the GPT example, the field the error must name)
BAD_FORMS: list[tuple[dict[str, Any], str]] = [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -5}, "batch_size"),
    ({"batch_size": 2**20 + 1}, "batch_size"),
    ({"batch_size": 256.5}, "batch_size"),
    ({"batch_size": "256"}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"learning_rate": -1e-5}, "learning_rate"),
    ({"learning_rate": 11.0}, "learning_rate"),
    ({"learning_rate": "2e-5"}, "learning_rate"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 100_001}, "epochs"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"weight_decay": 1.5}, "weight_decay"),
    ({"embedding_dim": 0}, "embedding_dim"),
    ({"hidden_size": 2**20 + 1}, "hidden_size"),
    ({"num_layers": 0}, "num_layers"),
    ({"num_heads": 5000}, "num_heads"),
    ({"hidden_size": 768, "num_heads": 7}, "num_heads"),
    ({"max_seq_length": 0}, "max_seq_length"),
    ({"sample_rate": -16000}, "sample_rate"),
    ({"input_size": [3, 0]}, "input_size"),
    ({"input_size": [1, 2, 3, 4, 5, 6]}, "input_size"),
    ({"input_size": []}, "input_size"),
    ({"checkpoint_interval": 0}, "checkpoint_interval"),
    ({"checkpoint_interval": 4}, "checkpoint_interval"),  # more than the 3 epochs
    ({"major_version": 0}, "major_version"),
    ({"lr": 2e-5}, "lr"),
    ({"precision": "fp64"}, "precision"),
    ({"optimizer": "adagrad"}, "optimizer"),
    ({"privacy_level": "secret"}, "privacy_level"),
    ({"node_type": "cloud"}, "node_type"),
    ({"quantize": 8}, "quantize"),
    ({"quantize": "INT8"}, "quantize"),
    ({"quantize": False, "precision": "int8"}, "quantize"),
    ({"quantize": True, "precision": "fp16"}, "quantize"),
    ({"quantize": "int4", "precision": "int8"}, "quantize"),
    ({"augmentations": ["hflip", "hflip"]}, "augmentations"),
    ({"augmentations": ["has space"]}, "augmentations.0"),
    ({"train_data_tags": ["wiki", "wiki"]}, "train_data_tags"),
    ({"train_data_tags": [""]}, "train_data_tags.0"),
    ({"preprocessing_profile": "../etc"}, "preprocessing_profile"),
    ({"base_model": ""}, "base_model"),
    ({"base_model": " gpt"}, "base_model"),
    ({"base_model": "--"}, "base_model"),
    ({"component": "Vision"}, "component"),
]
# Well-formed fields that the vocabulary or the name refuses (found by preview, not by the schema).
BAD_CHOICES: list[tuple[dict[str, Any], str]] = [
    ({"component": "lidar"}, "component"),
    ({"task": "segmentation"}, "task"),
    ({"quantize": "int3"}, "quantize"),
    ({"node_type": "encoder"}, "node_type"),  # contradicts component inference
    ({"base_model": "vision-transformer"}, "base_model"),  # would read back as component vision
]
BAD_DEFINITIONS: list[tuple[dict[str, Any], str]] = [
    ({"privacy_level": "dp"}, "dp"),
    ({"dp": DP}, "dp"),
    ({"privacy_level": "dp", "dp": {**DP, "target_epsilon": 0}}, "dp.target_epsilon"),
    ({"privacy_level": "dp", "dp": {**DP, "noise_multiplier": 1.1}}, "dp"),  # both noise sources
    ({"privacy_level": "dp", "dp": {"delta": 1e-5, "max_grad_norm": 1.0}}, "dp"),  # neither
    ({"privacy_level": "dp", "dp": {**DP, "delta": 1.0}}, "dp.delta"),
    ({"privacy_level": "dp", "dp": {"target_epsilon": 1.0, "delta": 1e-5}}, "dp.max_grad_norm"),
    ({"quantization_mode": "none"}, "quantization_mode"),
    ({"quantize": False, "quantization_mode": "quantization-aware"}, "quantization_mode"),
    ({"quantization_mode": "qat"}, "quantization_mode"),
    ({"run": {"kind": "shell", "argv": ["x"]}}, "run"),
    ({"run": {"kind": "command", "argv": []}}, "run.command.argv"),
    ({"run": {"kind": "command", "argv": ["train"], "workdir": "relative/dir"}}, "run.command.workdir"),
    ({"run": {"kind": "builtin", "trainer": "DDP"}}, "run.builtin.trainer"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"timeout_seconds": 31 * 86_400}, "timeout_seconds"),
    ({"executor": "node one"}, "executor"),
    ({"name": "has space"}, "name"),
]


@pytest.mark.parametrize(("change", "field"), BAD_FORMS, ids=[f"{f}:{c}" for c, f in BAD_FORMS])
def test_a_bad_form_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    data = {**GPT, **change}
    with pytest.raises(ValidationError) as raised:
        LearningForm.model_validate(data)
    assert ".".join(str(p) for p in raised.value.errors()[0]["loc"]) == field
    with pytest.raises(InvalidInputError) as refused:
        load_form(data, "form.yaml")
    assert refused.value.field == field and refused.value.path == "form.yaml"
    assert field.split(".")[0] in str(refused.value)


def test_a_missing_required_field_is_named() -> None:
    with pytest.raises(InvalidInputError) as refused:
        load_form({"component": "vision", "task": "embed"})
    assert refused.value.field == "base_model" and "Field required" in refused.value.message


def test_an_unknown_field_suggests_the_known_one() -> None:
    with pytest.raises(InvalidInputError, match="unknown field; did you mean 'learning_rate'"):
        load_form({**GPT, "learning_rat": 1e-4})


@pytest.mark.parametrize(("change", "field"), BAD_CHOICES, ids=[f for _, f in BAD_CHOICES])
def test_a_choice_outside_the_vocabulary_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    form = LearningForm.model_validate({**GPT, **change})
    with pytest.raises(InvalidInputError) as refused:
        preview(form)
    assert refused.value.field == field


@pytest.mark.parametrize(("change", "field"), BAD_DEFINITIONS, ids=[f"{f}:{c}" for c, f in BAD_DEFINITIONS])
def test_a_bad_job_definition_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        load_definition({**GPT, "run": BUILTIN, **change})
    assert refused.value.field == field


def test_the_quantization_mode_defaults_from_the_form_and_dp_goes_with_privacy_level_dp() -> None:
    quantized = load_definition({**GPT, "run": BUILTIN})
    assert quantized.quantization_mode == "post-training" and quantized.dp is None
    plain = load_definition({**GPT, "quantize": False, "run": BUILTIN})
    assert plain.quantization_mode == "none" and plain.timeout_seconds == 86_400 and plain.executor == "local"
    qat = load_definition({**GPT, "quantization_mode": "quantization-aware", "run": BUILTIN})
    assert qat.quantization_mode == "quantization-aware"
    private = load_definition({**GPT, "privacy_level": "dp", "dp": DP, "run": BUILTIN})
    assert private.dp is not None and private.dp.target_epsilon == 3.0 and private.dp.noise_multiplier is None
    assert private.form() == LearningForm.model_validate({**GPT, "privacy_level": "dp"})


# -- storage ------------------------------------------------------------------------------------------


def test_definitions_are_saved_listed_and_read_back(any_registry: Registry) -> None:
    command = {"kind": "command", "argv": ["python", "train.py"], "workdir": "/srv/jobs", "env": {"SEED": "1"}}
    first = define_job(any_registry, load_definition({**GPT, "run": BUILTIN, "name": "gpt-int8"}))
    second = define_job(
        any_registry, load_definition({**VISION, "run": command, "executor": "torchrun", "nodes": ["gpu-node-1"]})
    )
    assert (first.id, first.name, first.artifact_name) == (1, "gpt-int8", "gpt-small-v1-lm-finetune-int8-v1")
    assert first.training_config_hash == GPT_HASH and first.created_by == current_user()
    assert second.artifact_name == "vision-vit-base16-embed-v1" and second.name is None
    assert [r.id for r in job_definitions(any_registry)] == [1, 2]
    again = job_definition(any_registry, 2)
    assert again == second and again.definition.run.kind == "command" and again.definition.nodes == ["gpu-node-1"]
    assert again.created_at.tzinfo is not None
    events = [e for e in any_registry.events() if e["action"] == "job_definition.create"]
    assert len(events) == 2

    with pytest.raises(ConflictError) as taken:
        define_job(any_registry, load_definition({**VISION, "run": BUILTIN, "name": "gpt-int8"}))
    assert taken.value.field == "name"
    with pytest.raises(NotFoundError):
        job_definition(any_registry, 3)
    with pytest.raises(InvalidInputError) as refused:  # checked against the vocabulary before saving
        define_job(any_registry, load_definition({**GPT, "task": "segmentation", "run": BUILTIN}))
    assert refused.value.field == "task"
    assert len(job_definitions(any_registry)) == 2


def test_migration_0006_builds_the_table_as_declared_and_goes_down_again(db_url: str) -> None:
    engine = create_catalog_engine(db_url)
    try:
        upgrade(engine, "head")
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert "job_definitions" in sa.inspect(engine).get_table_names()
        downgrade(engine, "0005")
        assert "job_definitions" not in sa.inspect(engine).get_table_names()
        upgrade(engine, "head")
        assert "job_definitions" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# -- the CLI ------------------------------------------------------------------------------------------

# The real `modelyard` CLI, with the training commands installed if cli/__init__.py does not yet.
_CLI = (
    "import modelyard.cli as cli, modelyard.cli.training as training\n"
    "if not any(group.name == 'training' for group in cli.app.registered_groups):\n"
    "    training.install(cli.app)\n"
    "cli.main()\n"
)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")} | {"MODELYARD_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_cli_previews_both_examples_from_yaml_and_json(home: Path, tmp_path: Path) -> None:
    vision = tmp_path / "vision.json"
    vision.write_text(json.dumps(VISION))
    gpt = tmp_path / "gpt.yaml"  # YAML 1.2: 2e-5 is a number
    gpt.write_text(
        "component: inference\nbase_model: gpt-small-v1\ntask: lm-finetune\nmax_seq_length: 1024\n"
        "learning_rate: 2e-5\nepochs: 3\nquantize: int8\n"
    )
    shown = _cli(home, "training", "preview", str(vision), "--json")
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["artifact_name"] == "vision-vit-base16-embed-v1" and result["training_config_hash"] == VISION_HASH
    _contains(result["manifest"], VISION_MANIFEST)
    text = _cli(home, "training", "preview", str(gpt))
    assert text.returncode == 0, text.stderr
    assert "artifact_name: gpt-small-v1-lm-finetune-int8-v1" in text.stdout
    assert f"training_config_hash: {GPT_HASH}" in text.stdout
    _contains(json.loads(text.stdout.split("manifest:\n", 1)[1]), GPT_MANIFEST)


def test_the_cli_saves_lists_and_shows_definitions_and_names_bad_fields(home: Path, tmp_path: Path) -> None:
    definition = tmp_path / "job.yaml"
    definition.write_text(
        "name: gpt-int8\ncomponent: inference\nbase_model: gpt-small-v1\ntask: lm-finetune\nepochs: 3\n"
        "learning_rate: 2e-5\nquantize: int8\nquantization_mode: quantization-aware\n"
        "run: {kind: command, argv: [python, train.py]}\ntimeout_seconds: 7200\n"
    )
    saved = _cli(home, "training", "define", str(definition))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout == "saved job definition 1 (gpt-int8): produces gpt-small-v1-lm-finetune-int8-v1\n"
    listed = _cli(home, "training", "definitions")
    assert listed.returncode == 0 and "gpt-int8" in listed.stdout and "command:python" in listed.stdout
    listed_json = json.loads(_cli(home, "training", "definitions", "--json").stdout)
    assert [d["id"] for d in listed_json] == [1] and listed_json[0]["training_config_hash"] == GPT_HASH
    shown = json.loads(_cli(home, "training", "show", "1").stdout)
    assert shown["definition"]["quantization_mode"] == "quantization-aware"
    assert shown["definition"]["timeout_seconds"] == 7200

    missing = _cli(home, "training", "show", "9")
    assert missing.returncode == 4 and "no job definition 9" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("component: vision\nbase_model: vit-base16\ntask: embed\nbatch_size: 0\n")
    refused = _cli(home, "training", "preview", str(bad))
    assert refused.returncode == 3
    assert f"{bad}: field 'batch_size': batch_size: Input should be greater than or equal to 1" in refused.stderr
    no_dp = tmp_path / "no-dp.json"
    no_dp.write_text(json.dumps({**VISION, "privacy_level": "dp", "run": BUILTIN}))
    refused = _cli(home, "training", "define", str(no_dp))
    assert refused.returncode == 3 and "field 'dp'" in refused.stderr and "target_epsilon" in refused.stderr
    wrong_task = tmp_path / "task.json"
    wrong_task.write_text(json.dumps({**VISION, "task": "segmentation"}))
    refused = _cli(home, "training", "preview", str(wrong_task))
    assert refused.returncode == 3 and "field 'task'" in refused.stderr


# -- a real server --------------------------------------------------------------------------------------


def test_the_server_previews_both_examples_as_the_python_api_does(server: ServerProcess, tmp_path: Path) -> None:
    headers = server.auth(server.key("viewer"))
    url = server.url + "/api/v1/training/preview"
    for form, manifest, name in ((VISION, VISION_MANIFEST, "vision"), (GPT, GPT_MANIFEST, "gpt")):
        response = httpx.post(url, json=form, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"artifact_name", "manifest", "training_config_hash"}, name
        assert body == preview(LearningForm.model_validate(form)).model_dump(mode="json"), name
        _contains(body["manifest"], manifest)
    assert httpx.post(url, json=VISION).status_code == 401

    # The server previews against its registry: a registered name's next version number.
    run = tmp_path / "run"
    write_safetensors(run / "model.safetensors")
    server.cli("register", str(run), "--artifact-name", "vision-vit-base16-embed-v1", "-q")
    again = httpx.post(url, json=VISION, headers=headers).json()
    assert again["manifest"]["model_version"] == 2 and again["artifact_name"] == "vision-vit-base16-embed-v1"

    choices = httpx.get(server.url + "/api/v1/training/choices", headers=headers).json()
    assert choices["components"] == list(MODALITY_COMPONENTS) and "inference" in choices["node_roles"]
    assert {"embed", "classification", "lm-finetune", "detection"} <= set(choices["tasks"])


def test_the_server_refuses_every_bad_input_with_422_naming_the_field(server: ServerProcess) -> None:
    headers = server.auth(server.key("trainer"))
    for change, field in [*BAD_FORMS, *BAD_CHOICES]:
        response = httpx.post(server.url + "/api/v1/training/preview", json={**GPT, **change}, headers=headers)
        assert response.status_code == 422, (change, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_input" and error["details"]["field"] == field, (change, error)
        assert f"field '{field}'" in error["message"], error
    for change, field in BAD_DEFINITIONS:
        body = {**GPT, "run": BUILTIN, **change}
        response = httpx.post(server.url + "/api/v1/training/definitions", json=body, headers=headers)
        assert response.status_code == 422 and response.json()["error"]["details"]["field"] == field, (
            change,
            response.text,
        )
    not_json = httpx.post(
        server.url + "/api/v1/training/preview", content=b"{", headers={**headers, "content-type": "application/json"}
    )
    assert not_json.status_code == 422


def test_the_server_saves_definitions_for_jobs_submit_and_shows_them_to_readers(server: ServerProcess) -> None:
    trainer = server.auth(server.key("trainer", name="tara"))
    viewer = server.auth(server.key("viewer"))
    url = server.url + "/api/v1/training/definitions"
    body = {
        **GPT,
        "privacy_level": "dp",
        "dp": DP,
        "run": BUILTIN,
        "executor": "torchrun",
        "nodes": ["node-7"],
        "name": "gpt-dp",
    }
    forbidden = httpx.post(url, json=body, headers=viewer)
    assert forbidden.status_code == 403 and "jobs.submit" in forbidden.json()["error"]["message"]
    created = httpx.post(url, json=body, headers=trainer)
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["id"] == 1 and record["created_by"] == "tara" and record["name"] == "gpt-dp"
    assert record["artifact_name"] == "gpt-small-v1-lm-finetune-int8-v1" and record["training_config_hash"] == GPT_HASH
    assert record["definition"]["dp"] == {**DP, "noise_multiplier": None}
    assert record["definition"]["quantization_mode"] == "post-training"
    duplicate = httpx.post(url, json=body, headers=trainer)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["details"]["field"] == "name"

    assert httpx.get(url, headers=viewer).json() == [record]
    assert httpx.get(f"{url}/1", headers=viewer).json() == record
    missing = httpx.get(f"{url}/2", headers=viewer)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{url}/0", headers=viewer).status_code == 422

    # The schema is published once, with the descriptions the UI shows.
    openapi = httpx.get(server.url + "/api/v1/openapi.json").json()
    paths = openapi["paths"]
    assert {"post"} <= set(paths["/api/v1/training/preview"]) and {"get", "post"} <= set(
        paths["/api/v1/training/definitions"]
    )
    reference = paths["/api/v1/training/definitions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = openapi["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]
    properties = schema["properties"]
    for field in [
        *LearningForm.model_fields,
        "run",
        "executor",
        "nproc_per_node",
        "nodes",
        "pass_flags",
        "quantization_mode",
        "dp",
        "timeout_seconds",
        "name",
    ]:
        assert field in properties and properties[field].get("description"), field
    assert set(schema["required"]) == {"component", "base_model", "task", "run"}
    assert properties["run"]["discriminator"]["propertyName"] == "kind"
    assert properties["batch_size"]["anyOf"][0]["minimum"] == 1
