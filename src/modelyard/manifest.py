"""`artifact_manifest.json`: the pydantic models, their JSON Schema, and strict load/dump.

Field names follow seed 000: section 2's recorded metadata (artifact_name, model_version,
base_model, task, embedding_dim, quantized, precision, training_config_hash, train_data_tags,
license, created_at, node_type, privacy_level) and the fields its section 3 maps the learning form
to (component, model_config, input_spec, training_config, checkpoint_policy,
data_prep_profile), plus metrics and the file list.

Two models share those fields: `RunManifest` is what a training script may leave in its run
directory (everything optional), `ArtifactManifest` is what the registry stores for a version
(complete, validated on write and on read). The JSON Schema in `schemas/` is generated from
`ArtifactManifest`; `python -m modelyard.manifest` rewrites it.
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from modelyard.errors import InvalidInputError
from modelyard.loaders import parse_json, read_text
from modelyard.names import MANIFEST_FILENAME as MANIFEST_FILENAME
from modelyard.names import check_relative_path as check_relative_path

SCHEMA_VERSION = 2  # 2: the lifecycle fields (stage, derived_from, semantic_version, checkpoint)
SCHEMA_PATH = Path(__file__).parent / "schemas" / "artifact_manifest.schema.json"
SCHEMA_ID = "https://modelyard.dev/schemas/artifact_manifest.schema.json"

Precision = Literal["fp32", "fp16", "bf16", "int8"]
NodeType = Literal["sensing", "encoder", "inference", "decision", "memory", "learning", "aggregation", "management"]
PrivacyLevel = Literal["none", "dp", "secure-agg"]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex SHA-256")]
Tag = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        populate_by_name=True,
        serialize_by_alias=True,
        frozen=True,
    )


class _Open(BaseModel):
    """Sub-objects name the learning form's fields and accept more, as real training setups have."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), frozen=True)


class ModelArchitecture(_Open):
    """`model_config`: architecture changes from the learning form."""

    hidden_size: PositiveInt | None = None
    num_layers: PositiveInt | None = None
    num_heads: PositiveInt | None = None


class InputSpec(_Open):
    """`input_spec`: the model's input/output specification."""

    max_seq_length: PositiveInt | None = None
    sample_rate: PositiveInt | None = None
    input_size: PositiveInt | list[PositiveInt] | None = None


class CheckpointPolicy(_Open):
    """`checkpoint_policy`: how often the training job saved checkpoints."""

    checkpoint_interval: PositiveInt | None = None


class DataPrepProfile(_Open):
    """`data_prep_profile`: data augmentation and preprocessing."""

    augmentations: list[str] = Field(default_factory=list)
    preprocessing_profile: str | None = None


class FileEntry(_Strict):
    """One stored file of a version: its path inside the artifact, size and SHA-256."""

    path: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0)
    sha256: Sha256Hex

    @field_validator("path")
    @classmethod
    def _safe_relative_path(cls, value: str) -> str:
        return check_relative_path(value)


class _ManifestFields(_Strict):
    """The metadata fields, all optional; subclasses decide which are required."""

    schema_version: int | None = None
    artifact_name: str | None = None
    model_version: int | str | None = None
    base_model: str | None = None
    task: str | None = None
    embedding_dim: PositiveInt | None = None
    quantized: bool | None = None
    precision: Precision | None = None
    training_config_hash: Sha256Hex | None = None
    train_data_tags: list[Tag] | None = None
    license: str | None = None
    created_at: datetime | None = None
    node_type: NodeType | None = None
    privacy_level: PrivacyLevel | None = None
    component: str | None = None
    run_name: str | None = None
    architecture: ModelArchitecture | None = Field(default=None, alias="model_config")
    input_spec: InputSpec | None = None
    training_config: dict[str, JsonValue] | None = None
    checkpoint_policy: CheckpointPolicy | None = None
    data_prep_profile: DataPrepProfile | None = None
    metrics: dict[str, JsonValue] | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not one this modelyard reads (1..{SCHEMA_VERSION}); upgrade modelyard"
            )
        return value

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class RunManifest(_ManifestFields):
    """An `artifact_manifest.json` as a training script writes it into its run directory."""

    files: list[FileEntry] | None = None


class ArtifactManifest(_ManifestFields):
    """The manifest of one registered version, as stored and exported."""

    schema_version: int = SCHEMA_VERSION
    artifact_name: str = Field(min_length=1, max_length=200)
    model_version: int = Field(ge=1, description="the registry's version number N of NAME@N")
    quantized: bool = False
    train_data_tags: list[Tag] = Field(default_factory=list)
    created_at: datetime
    privacy_level: PrivacyLevel = "none"
    architecture: ModelArchitecture = Field(default_factory=ModelArchitecture, alias="model_config")
    input_spec: InputSpec = Field(default_factory=InputSpec)
    training_config: dict[str, JsonValue] = Field(default_factory=dict)
    checkpoint_policy: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    data_prep_profile: DataPrepProfile = Field(default_factory=DataPrepProfile)
    metrics: dict[str, JsonValue] = Field(default_factory=dict)
    # Seed 003's lifecycle: set by promotion, never by a training script.
    stage: Literal["raw", "validated", "production"] = "raw"
    derived_from: str | None = Field(default=None, description="NAME@N of the version this one was promoted from")
    semantic_version: str | None = Field(default=None, description="a production version's semantic version")
    checkpoint: str | None = Field(default=None, description="the raw checkpoint a validated version was built from")
    files: list[FileEntry]

    @model_validator(mode="after")
    def _consistent(self) -> ArtifactManifest:
        if self.precision == "int8" and not self.quantized:
            raise ValueError("precision int8 requires quantized: true")
        if self.quantized and self.precision in ("fp32", "fp16", "bf16"):
            raise ValueError(f"quantized: true contradicts precision {self.precision}")
        paths = [entry.path for entry in self.files]
        if paths != sorted(paths):
            raise ValueError("files must be sorted by path")
        if len(set(paths)) != len(paths):
            raise ValueError("files lists a path twice")
        if MANIFEST_FILENAME in paths:
            raise ValueError(f"files may not contain {MANIFEST_FILENAME} at the top level")
        return self

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> str:
        """The manifest as written to `artifact_manifest.json` (stable key order, indented)."""
        return self.model_dump_json(indent=2, exclude_none=False) + "\n"


def known_field_names() -> list[str]:
    return [field.alias or name for name, field in ArtifactManifest.model_fields.items()]


def format_validation_error(exc: ValidationError, source: str | Path) -> InvalidInputError:
    """Turn pydantic's report into one line naming the file, each bad field and its cause."""
    problems = []
    first_field = None
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        first_field = first_field or location
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            guess = difflib.get_close_matches(str(error["loc"][-1]), known_field_names(), n=1)
            message = "unknown field" + (f"; did you mean '{guess[0]}'?" if guess else "")
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append(f"{location}: {message}")
    more = len(exc.errors()) - len(problems)
    if more > 0:
        problems.append(f"and {more} more")
    return InvalidInputError("; ".join(problems), path=source, field=None, details={"field": first_field})


def parse_manifest(data: dict[str, Any] | str, source: str | Path) -> ArtifactManifest:
    """Validate a stored manifest (a dict, or JSON text as kept in the catalog).

    Text goes straight to pydantic's JSON parser: it was written by modelyard, so the
    duplicate-key and NaN checks that user files get are not needed, and 20,000 file entries
    validate in a few tens of milliseconds instead of a few hundred."""
    try:
        if isinstance(data, str):
            return ArtifactManifest.model_validate_json(data)
        return ArtifactManifest.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, source) from None


def load_run_manifest(path: Path) -> RunManifest:
    """Read and validate a run directory's `artifact_manifest.json`."""
    value = parse_json(read_text(path), path)
    if not isinstance(value, dict):
        raise InvalidInputError("a manifest must be a JSON object", path=path)
    try:
        return RunManifest.model_validate(value)
    except ValidationError as exc:
        raise format_validation_error(exc, path) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of `ArtifactManifest`, as committed under `schemas/`."""
    schema = ArtifactManifest.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m modelyard.manifest: regenerate the committed schema
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(json_schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
