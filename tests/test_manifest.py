"""The manifest model, its committed JSON Schema, and validation on write and read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from modelyard.errors import InvalidInputError
from modelyard.manifest import SCHEMA_PATH, ArtifactManifest, json_schema, json_schema_text, parse_manifest

SEED_SECTION_2_FIELDS = [
    "artifact_name",
    "model_version",
    "base_model",
    "task",
    "embedding_dim",
    "quantized",
    "precision",
    "training_config_hash",
    "train_data_tags",
    "license",
    "created_at",
    "node_type",
    "privacy_level",
]
SEED_SECTION_3_FIELDS = [
    "component",
    "model_config",
    "input_spec",
    "training_config",
    "checkpoint_policy",
    "data_prep_profile",
]


def _manifest(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "artifact_name": "vision-vit-base16-embed-v1",
        "model_version": 1,
        "created_at": "2025-12-21T10:00:00Z",
        "files": [{"path": "model.safetensors", "size": 10, "sha256": "a" * 64}],
    }
    data.update(overrides)
    return data


def test_committed_schema_is_current() -> None:
    committed = SCHEMA_PATH.read_text()
    assert committed == json_schema_text(), (
        f"{SCHEMA_PATH} is out of date; regenerate it with: .venv/bin/python -m modelyard.manifest"
    )


def test_schema_holds_every_seed_field() -> None:
    properties = json_schema()["properties"]
    for field in [*SEED_SECTION_2_FIELDS, *SEED_SECTION_3_FIELDS, "metrics", "files"]:
        assert field in properties, field
    assert set(json_schema()["required"]) >= {"artifact_name", "model_version", "created_at", "files"}


def test_a_full_manifest_validates_in_pydantic_and_in_the_json_schema() -> None:
    data = _manifest(
        base_model="vit-base16",
        task="embed",
        embedding_dim=768,
        precision="fp16",
        quantized=False,
        training_config_hash="5" * 64,
        train_data_tags=["imagenet"],
        license="apache-2.0",
        node_type="encoder",
        privacy_level="none",
        component="vision",
        model_config={"hidden_size": 768, "num_layers": 12, "num_heads": 12},
        input_spec={"input_size": [224, 224]},
        training_config={"batch_size": 256, "epochs": 10},
        checkpoint_policy={"checkpoint_interval": 5},
        data_prep_profile={"augmentations": ["flip"], "preprocessing_profile": "imagenet"},
        metrics={"coverage": 0.99},
    )
    manifest = ArtifactManifest.model_validate(data)
    written = json.loads(manifest.to_json())
    jsonschema.validate(written, json_schema())
    assert written["model_config"] == {"hidden_size": 768, "num_layers": 12, "num_heads": 12}
    assert written["created_at"] == "2025-12-21T10:00:00Z"
    assert parse_manifest(manifest.to_json(), "x") == manifest  # read back, validated again


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"precision": "fp12"}, "precision"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"node_type": "robot"}, "node_type"),
        ({"privacy_level": "secret"}, "privacy_level"),
        ({"training_config_hash": "ABC"}, "training_config_hash"),
        ({"embeding_dim": 3}, "did you mean 'embedding_dim'"),
        ({"model_version": 0}, "model_version"),
        ({"files": [{"path": "../etc/passwd", "size": 1, "sha256": "a" * 64}]}, "'..' part"),
        ({"files": [{"path": "/abs", "size": 1, "sha256": "a" * 64}]}, "absolute"),
        ({"files": [{"path": "a\\b", "size": 1, "sha256": "a" * 64}]}, "backslash"),
        ({"files": [{"path": "a\x00b", "size": 1, "sha256": "a" * 64}]}, "NUL"),
        (
            {"files": [{"path": "b", "size": 1, "sha256": "a" * 64}, {"path": "a", "size": 1, "sha256": "a" * 64}]},
            "sorted",
        ),
        (
            {"files": [{"path": "a", "size": 1, "sha256": "a" * 64}, {"path": "a", "size": 1, "sha256": "a" * 64}]},
            "twice",
        ),
        ({"precision": "int8", "quantized": False}, "requires quantized: true"),
        ({"precision": "fp16", "quantized": True}, "contradicts precision fp16"),
    ],
)
def test_invalid_manifests_name_the_field(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_manifest(_manifest(**overrides), "some/artifact_manifest.json")
    assert fragment in str(caught.value)
    assert "some/artifact_manifest.json" in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"precision": "fp12"},
        {"embedding_dim": 0},
        {"embeding_dim": 3},
        {"files": [{"path": "x", "size": -1, "sha256": "a" * 64}]},
        {"training_config_hash": "nothex"},
    ],
)
def test_the_json_schema_rejects_what_pydantic_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_manifest(**overrides), json_schema())


def test_naive_created_at_is_read_as_utc() -> None:
    manifest = ArtifactManifest.model_validate(_manifest(created_at="2025-12-21T10:00:00"))
    assert manifest.created_at == datetime(2025, 12, 21, 10, 0, tzinfo=UTC)
