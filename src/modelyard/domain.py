"""Plain, immutable records that cross layers: what the catalog returns and the registry reports.

They hold no database or filesystem handles, so the CLI, the server and library users can keep
and compare them freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic loads only when a manifest is read: not for an unchanged registration
    from modelyard.manifest import ArtifactManifest
    from modelyard.modelconfig import BaseModelConfig


@dataclass(frozen=True)
class VersionRecord:
    """One registered version: its manifest and where it came from.

    The manifest is kept as the JSON text the catalog stores and validated when first read:
    finding a version (say, an unchanged re-registration of 20,000 files) need not parse it."""

    artifact_name: str
    number: int
    manifest_json: str = field(repr=False)
    content_key: str
    registered_at: datetime
    registered_by: str
    source_path: str | None
    # Seed 003's lifecycle: the stage, the layout label (session id, validated id, production id),
    # a production version's semantic version, and whether a promotion was forced past a gate.
    stage: str = "raw"
    label: str | None = None
    semver: str | None = None
    forced: bool = False

    @property
    def ref(self) -> str:
        return f"{self.artifact_name}@{self.number}"

    @cached_property
    def manifest(self) -> ArtifactManifest:
        from modelyard.manifest import parse_manifest

        return parse_manifest(self.manifest_json, f"catalog manifest of {self.ref}")

    @classmethod
    def with_manifest(cls, manifest: ArtifactManifest, manifest_json: str, **fields: Any) -> VersionRecord:
        """A record for a manifest already in hand (validated as it was built) and its JSON text."""
        record = cls(manifest_json=manifest_json, **fields)
        record.__dict__["manifest"] = manifest  # fill the cache; the text is the same manifest
        return record


@dataclass(frozen=True)
class Lifecycle:
    """What a promotion records on the version it creates (set by `modelyard.lifecycle`)."""

    stage: str
    derived_from: str | None = None  # NAME@N
    semantic_version: str | None = None
    checkpoint: str | None = None
    label: str | None = None
    forced: bool = False

    def manifest_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"stage": self.stage}
        for key in ("derived_from", "semantic_version", "checkpoint"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = value
        return fields


@dataclass(frozen=True)
class VersionSummary:
    """A version as listings show it, without its file list."""

    artifact_name: str
    number: int
    version_count: int
    registered_at: datetime
    created_at: datetime
    component: str | None
    task: str | None
    node_type: str | None
    base_model: str | None
    precision: str | None
    quantized: bool
    file_count: int
    total_size: int
    train_data_tags: tuple[str, ...] = ()
    # From inspection (None for versions registered without one).
    model_type: str | None = None
    architecture: str | None = None
    family: str | None = None
    quantization: str | None = None
    parameter_count: int | None = None
    pickle_verdict: str | None = None
    stage: str = "raw"
    semver: str | None = None
    forced: bool = False
    status: str | None = None  # the latest status event: demoted, deprecated (None: active)

    @property
    def ref(self) -> str:
        return f"{self.artifact_name}@{self.number}"


@dataclass(frozen=True)
class ListFilters:
    """Filters of `list`; each set field must match exactly. `tag` matches a train data tag or a
    tag the model carries; `base_model` the manifest's or the inspected one."""

    component: str | None = None
    task: str | None = None
    node_type: str | None = None
    base_model: str | None = None
    tag: str | None = None
    model_type: str | None = None
    architecture: str | None = None
    family: str | None = None
    quantization: str | None = None
    stage: str | None = None
    search: str | None = None  # a part of the artifact name (case-insensitive)
    name: str | None = None  # exactly this artifact


@dataclass(frozen=True)
class StoredModelConfig:
    """A version's typed configuration as the catalog keeps it."""

    config_json: str = field(repr=False)
    inspected_at: datetime
    inspector_version: int

    @cached_property
    def config(self) -> BaseModelConfig:
        from modelyard.modelconfig import parse_model_config

        return parse_model_config(self.config_json, "catalog model entry")


@dataclass(frozen=True)
class FileUse:
    """A place where a blob is used: the version and the path inside it."""

    artifact_name: str
    number: int
    path: str

    def __str__(self) -> str:
        return f"{self.artifact_name}@{self.number}:{self.path}"


@dataclass(frozen=True)
class Registration:
    """What `register` did. `created` is False when an identical version already existed."""

    version: VersionRecord
    created: bool
    files_total: int
    bytes_total: int
    files_read: int
    bytes_read: int
    bytes_added: int
    methods: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """Seed 002's catalog entry, mapped onto a registered version.

    id = `NAME@N`; name = the artifact name; author = the author the files name, else who
    registered it; path = where it was registered from; size = the version's bytes; status = its
    lifecycle stage; added_at = when it was registered; config = the typed configuration."""

    id: str
    name: str
    author: str | None
    path: str | None
    size: int
    status: str
    added_at: datetime
    model_type: str
    config: BaseModelConfig | None
