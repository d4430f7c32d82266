"""Building a promoted version's tree: a private staging directory under the registry home, the
files taken from the version promoted, the changelog and the model card, and its registration as
the next version of the artifact (visible only once that registration commits)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.domain import Lifecycle, VersionRecord
from modelyard.errors import ConflictError, InvalidInputError, ModelyardError
from modelyard.lifecycle.scratch import scratch_dir
from modelyard.names import MANIFEST_FILENAME

if TYPE_CHECKING:
    from modelyard.lifecycle.report import ValidationReport
    from modelyard.registry import Registry

# Manifest fields a promoted version inherits from the version it was promoted from.
INHERITED_FIELDS = (
    "base_model",
    "task",
    "component",
    "embedding_dim",
    "precision",
    "quantized",
    "train_data_tags",
    "license",
    "node_type",
    "privacy_level",
    "model_config",
    "input_spec",
    "training_config",
    "checkpoint_policy",
    "data_prep_profile",
    "run_name",
)


def read_small_file(registry: Registry, version: VersionRecord, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
    entry = next((f for f in version.manifest.files if f.path == path), None)
    if entry is None:
        raise FileNotFoundError(path)
    if entry.size > limit:
        raise InvalidInputError(f"larger than {limit} bytes", path=f"{version.ref}:{path}")
    with registry.store.open(entry.sha256) as handle:
        return handle.read(limit + 1)


def export_into(registry: Registry, version: VersionRecord, directory: Path) -> None:
    """Write a version's files (not its manifest) into an existing empty directory."""
    for entry in version.manifest.files:
        target = directory / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with registry.store.open(entry.sha256) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1024 * 1024)


def require_stage(version: VersionRecord, stage: str, target: str) -> None:
    if version.stage != stage:
        raise InvalidInputError(
            f"{version.ref} is {version.stage}; only a {stage} version can be promoted to {target}",
            field="reference",
        )


@contextmanager
def staging(registry: Registry, stage: str) -> Iterator[Path]:
    """A private, locked directory under the registry home for building a tree; removed afterwards,
    or by the next promotion if this process is killed (see `scratch.py`)."""
    with scratch_dir(registry.settings.home, f"promote-{stage}-") as scratch:
        tree = scratch / "tree"
        tree.mkdir()
        yield tree


def export_file(registry: Registry, version: VersionRecord, path: str, target: Path) -> None:
    entry = next(f for f in version.manifest.files if f.path == path)
    with registry.store.open(entry.sha256) as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, 1024 * 1024)


def copy_files(registry: Registry, version: VersionRecord, tree: Path, wanted: Any) -> list[str]:
    copied = []
    for entry in version.manifest.files:
        if wanted(entry.path):
            target = tree / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            export_file(registry, version, entry.path, target)
            copied.append(entry.path)
    return copied


# What promotion writes itself: never copied from the version promoted.
LIFECYCLE_DOCUMENTS = frozenset({"README.md", "CHANGELOG.md", "metadata.json", "config.yaml"})
_LIFECYCLE_DIRECTORIES = ("validation/", "performance/", "deployment/", "checkpoints/")


def model_files(registry: Registry, version: VersionRecord) -> list[str]:
    """The files that make up the model itself, as a server loads it: the weights and the files
    read beside them (config.json, tokenizer files, adapter_config.json, ...), without training
    state, checkpoints or the documents promotion writes. For a model directory registered as
    it is (a Hugging Face folder, a PEFT adapter, a GGUF file), with no checkpoints/ to choose from."""
    from modelyard.distribute.profiles import select_files

    config = registry.model_config(version.ref)
    selection = select_files(
        version.manifest.files,
        getattr(config, "model_type", None),
        getattr(config, "layout", None),
        getattr(config, "format", None),
    )
    return [
        entry.path
        for entry in selection.files
        if entry.path not in LIFECYCLE_DOCUMENTS and not entry.path.startswith(_LIFECYCLE_DIRECTORIES)
    ]


def copy_config(registry: Registry, version: VersionRecord, tree: Path) -> None:
    """The original configuration: the version's config.yaml, else its training_config as YAML."""
    if any(f.path == "config.yaml" for f in version.manifest.files):
        export_file(registry, version, "config.yaml", tree / "config.yaml")
        return
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = StringIO()
    yaml.dump(dict(version.manifest.training_config), buffer)
    (tree / "config.yaml").write_text(buffer.getvalue())


def write_changelog(
    registry: Registry, validated: VersionRecord, tree: Path, semver: str, approvers: list[str], actor: str
) -> None:
    """A new entry on top of the previous production version's CHANGELOG.md."""
    previous = ""
    try:
        current = registry.show(f"{validated.artifact_name}@production")
        if any(f.path == "CHANGELOG.md" for f in current.manifest.files):
            previous = read_small_file(registry, current, "CHANGELOG.md").decode("utf-8", "replace")
            previous = previous.split("\n", 2)[2] if previous.startswith("# Changelog") else previous
    except ModelyardError:
        previous = ""
    today = datetime.now(UTC).date().isoformat()
    entry = (
        f"## {semver} ({today})\n\n"
        f"- From {validated.ref} (checkpoint {validated.manifest.checkpoint or '-'}, "
        f"training config {str(validated.manifest.training_config_hash or '-')[:12]})\n"
        f"- Approved by {', '.join(approvers)}; promoted by {actor}\n"
    )
    (tree / "CHANGELOG.md").write_text(f"# Changelog\n\n{entry}\n{previous.lstrip()}".rstrip() + "\n")


def write_card(
    tree: Path,
    source: VersionRecord,
    stage: str,
    metrics: dict[str, float],
    report: ValidationReport | None,
    lineage_refs: list[str],
    session_id: str,
    ref: str,
    model_type: str | None = None,
) -> None:
    from modelyard.lifecycle.model_card import ModelCardInput, pipeline_tag_for, write_model_card

    manifest = source.manifest
    validation = [(c.name, c.passed, c.detail) for c in report.checks] if report else []
    write_model_card(
        tree,
        ModelCardInput(
            artifact_name=source.artifact_name,
            ref=ref,
            stage=stage,
            license=manifest.license,
            base_model=manifest.base_model,
            tags=["modelyard", stage],
            datasets=list(manifest.train_data_tags),
            pipeline_tag=pipeline_tag_for(manifest.task, model_type),
            training_config=dict(manifest.training_config),
            training_config_hash=manifest.training_config_hash,
            session_id=session_id,
            metrics={**numbers(manifest.metrics), **metrics},
            validation=validation,
            lineage=lineage_refs,
            files=sorted(p.name for p in tree.glob("model.*")),
        ),
    )


def register_tree(
    registry: Registry, tree: Path, source: VersionRecord, lifecycle: Lifecycle, metrics: dict[str, float]
) -> VersionRecord:
    """Register a built tree as the next version of the artifact, inheriting the source's fields."""
    from modelyard.register.metadata import RegisterOptions

    inherited = source.manifest.model_dump(mode="json", by_alias=True)
    fields = {key: inherited[key] for key in INHERITED_FIELDS if inherited.get(key) not in (None, [], {})}
    fields["metrics"] = {**{k: v for k, v in source.manifest.metrics.items()}, **metrics}
    fields["artifact_name"] = source.artifact_name
    fields["created_at"] = datetime.now(UTC).isoformat()
    (tree / MANIFEST_FILENAME).write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    options = RegisterOptions(lifecycle=lifecycle, source_label=f"promotion of {source.ref}")
    result = registry.register(tree, options)
    if not result.created:
        raise ConflictError(
            f"{source.artifact_name} already has this exact {lifecycle.stage} version ({result.version.ref})"
        )
    return result.version


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
