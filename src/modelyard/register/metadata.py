"""Resolve a version's metadata from the user's flags, the run's manifest and its config files.

Sources, in order: a run directory's `artifact_manifest.json` (what the training script wrote;
seed 000 says scripts write one), then flags (`--precision`, `--config FILE`, ...). A flag may fill
what the manifest leaves out; a flag that contradicts the manifest is an error naming the field.
Then seed 000's rules apply:

* `--quantize` without a precision means int8; precision int8 implies `quantized: true`;
  quantized with fp32/fp16/bf16 is refused.
* `training_config_hash` is the SHA-256 of the RFC 8785 form of `training_config`.
* with no name, one is generated as `{node_type}.{task}.{base_model}.{run_name}.{timestamp}`;
  a structured name (`vision-vit-base16-embed-v1`) fills component, base model, task and
  quantization when they are not given, and a disagreement with given fields is a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.digest import canonical_json, training_config_hash
from modelyard.errors import InvalidInputError
from modelyard.loaders import load_mapping
from modelyard.names import MANIFEST_FILENAME, ParsedName, Vocabulary, auto_name, parse_name, slug
from modelyard.register.scan import SourceTree

if TYPE_CHECKING:  # pydantic loads for validation only, which an unchanged registration skips
    from modelyard.domain import Lifecycle
    from modelyard.manifest import RunManifest

# Manifest fields only promotion sets; a run manifest may not.
LIFECYCLE_FIELDS = ("stage", "derived_from", "semantic_version", "checkpoint")

# Flags whose value is a plain manifest field of the same name.
_SCALAR_FLAGS = (
    "artifact_name",
    "base_model",
    "task",
    "embedding_dim",
    "precision",
    "license",
    "node_type",
    "privacy_level",
    "component",
)
_FLAG_SPELLING = {"train_data_tags": "--train-data-tag", "quantized": "--quantize"}


@dataclass
class RegisterOptions:
    """What a user can say about a registration (the CLI's flags, as Python values).

    `config` and `metrics` take a file (YAML or JSON; metrics JSON) or an already-loaded mapping.
    """

    artifact_name: str | None = None
    precision: str | None = None
    quantize: bool = False
    privacy_level: str | None = None
    node_type: str | None = None
    component: str | None = None
    base_model: str | None = None
    task: str | None = None
    embedding_dim: int | None = None
    train_data_tags: Sequence[str] = ()
    license: str | None = None
    config: Path | Mapping[str, Any] | None = None
    metrics: Path | Mapping[str, Any] | None = None
    exclude: Sequence[str] = ()
    # Read model headers (typed catalog entry, pickle scan, manifest fields). Off: register the
    # files as they are, with no model entry; a malformed model file is then no obstacle.
    inspect: bool = True
    # Set by promotion (modelyard.lifecycle) only: the stage and lineage of the version made.
    lifecycle: Lifecycle | None = None
    # What the catalog records as the version's origin, when the registered path is a staging
    # directory (ArtifactRepository, promotion): the user's checkpoint directory, "promotion of ...".
    source_label: str | None = None


@dataclass(frozen=True)
class ResolvedMetadata:
    """Everything the manifest needs except the version number and the file list.

    Resolving is plain dictionary work; `validate_metadata` checks the field types with pydantic.
    An unchanged re-registration skips that: the version it finds was built from these very
    fields, validated when it was registered."""

    manifest_path: Path
    artifact_name: str
    fields: dict[str, Any]
    # The fields the user determined (not derived from mtimes or paths): with the file list
    # they decide whether a registration repeats an existing version.
    identity: dict[str, Any]
    incoming_model_version: int | str | None
    incoming_files: list[dict[str, Any]] | None
    warnings: list[str] = field(default_factory=list)


def flag_name(field_name: str) -> str:
    return _FLAG_SPELLING.get(field_name, "--" + field_name.replace("_", "-"))


def resolve_metadata(
    options: RegisterOptions,
    source: SourceTree,
    incoming: RunManifest | None,
    vocabulary: Vocabulary,
) -> ResolvedMetadata:
    manifest_path = source.run_manifest or source.root / MANIFEST_FILENAME
    given = _incoming_fields(incoming)
    warnings: list[str] = []

    for name in _SCALAR_FLAGS:
        _merge(given, name, getattr(options, name), manifest_path)
    if options.train_data_tags:
        _merge(given, "train_data_tags", list(dict.fromkeys(options.train_data_tags)), manifest_path)
    if options.quantize:
        _merge(given, "quantized", True, manifest_path)
    if options.config is not None:
        config = _load_mapping(options.config, "training config")
        _merge(given, "training_config", config, manifest_path)
    if options.metrics is not None:
        metrics = _load_mapping(options.metrics, "metrics")
        merged = dict(given.get("metrics") or {})
        for key, value in metrics.items():
            if key in merged and canonical_json(merged[key]) != canonical_json(value):
                raise _contradiction(f"metrics.{key}", "--metrics", value, merged[key], manifest_path)
            merged[key] = value
        given["metrics"] = merged

    flagged = {name for name in ("precision",) if options.precision is not None}
    if options.quantize:
        flagged.add("quantized")
    _apply_quantization_rules(given, manifest_path, flagged)
    _apply_config_hash(given, manifest_path)

    identity = {key: value for key, value in given.items() if key not in ("created_at", "run_name")}
    if "train_data_tags" in identity:  # a set of datasets: their order is not what makes a version
        identity["train_data_tags"] = sorted(identity["train_data_tags"])
    if "created_at" in given:
        identity["created_at"] = given["created_at"]
    derived_created = _newest_mtime(source)
    given.setdefault("created_at", derived_created)
    given.setdefault("run_name", source.run_name)

    try:
        parsed = _resolve_name(given, source, vocabulary)
    except InvalidInputError:
        # A bad field (say a node type) makes a bad generated name: name the field instead.
        _validate_fields({k: v for k, v in given.items() if k != "artifact_name"}, manifest_path)
        raise
    warnings += _fill_from_name(given, parsed)
    identity["artifact_name"] = parsed.name
    if options.lifecycle is not None:
        lifecycle_fields = options.lifecycle.manifest_fields()
        given.update(lifecycle_fields)
        identity.update(lifecycle_fields, label=options.lifecycle.label, forced=options.lifecycle.forced)

    fields = {key: value for key, value in given.items() if key not in ("artifact_name", "model_version", "files")}
    return ResolvedMetadata(
        manifest_path=manifest_path,
        artifact_name=parsed.name,
        fields=fields,
        identity={k: v for k, v in identity.items() if k not in ("model_version", "files")},
        incoming_model_version=incoming.model_version if incoming else None,
        incoming_files=[entry.model_dump() for entry in incoming.files] if incoming and incoming.files else None,
        warnings=warnings,
    )


def _incoming_fields(incoming: RunManifest | None) -> dict[str, Any]:
    """The fields the run's manifest actually set (null counts as not set)."""
    if incoming is None:
        return {}
    data = incoming.model_dump(by_alias=True, exclude_none=True, mode="json")
    data.pop("schema_version", None)
    if "created_at" in data:
        data["created_at"] = incoming.created_at
    return data


def _merge(given: dict[str, Any], name: str, value: Any, manifest_path: Path) -> None:
    if value is None:
        return
    if name in given and not _same(given[name], value):
        raise _contradiction(name, flag_name(name), value, given[name], manifest_path)
    given[name] = value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, str) for x in [*a, *b]):
        return set(a) == set(b)
    try:
        return canonical_json(a) == canonical_json(b)
    except InvalidInputError:
        return bool(a == b)


def _contradiction(name: str, flag: str, value: Any, existing: Any, path: Path) -> InvalidInputError:
    return InvalidInputError(
        f"{flag} {_show(value)} contradicts the run's manifest, which says {_show(existing)}; "
        "drop the flag or fix the manifest",
        path=path,
        field=name,
    )


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict) else "{...}"
    return text if len(text) <= 60 else text[:57] + "..."


def _load_mapping(value: Path | Mapping[str, Any], what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    return load_mapping(Path(value), what)


def _apply_quantization_rules(given: dict[str, Any], manifest_path: Path, flagged: set[str]) -> None:
    precision = given.get("precision")
    quantized = given.get("quantized")
    if quantized and precision is None:
        given["precision"] = precision = "int8"
    if precision == "int8":
        if quantized is False:
            raise InvalidInputError(
                "precision int8 means a quantized artifact, but quantized is false",
                path=manifest_path,
                field="quantized",
            )
        given["quantized"] = True
    elif quantized and precision in ("fp32", "fp16", "bf16"):
        if flagged >= {"quantized", "precision"}:
            raise InvalidInputError(
                f"--quantize cannot go with precision {precision}: a quantized artifact is int8 (seed 000); "
                "drop --quantize or use --precision int8",
                field="precision",
            )
        raise InvalidInputError(
            f"quantized: true contradicts precision {precision} (a quantized artifact is int8, seed 000)",
            path=manifest_path,
            field="quantized" if "quantized" not in flagged else "precision",
        )


def _apply_config_hash(given: dict[str, Any], manifest_path: Path) -> None:
    config = given.get("training_config")
    if not config:
        return
    computed = training_config_hash(config)
    stated = given.get("training_config_hash")
    if stated is not None and stated != computed:
        raise InvalidInputError(
            f"{stated} is not the SHA-256 of training_config's RFC 8785 form ({computed}); "
            "remove it and modelyard computes it",
            path=manifest_path,
            field="training_config_hash",
        )
    given["training_config_hash"] = computed


def _newest_mtime(source: SourceTree) -> datetime:
    """When the run last wrote an output: the default created_at, and the auto-name's time."""
    newest = max(f.mtime_ns for f in source.files)
    return datetime.fromtimestamp(newest // 1_000_000_000, tz=UTC)


def _resolve_name(given: dict[str, Any], source: SourceTree, vocabulary: Vocabulary) -> ParsedName:
    name = given.get("artifact_name")
    if name:
        return parse_name(name, vocabulary)
    generated = auto_name(
        node_type=given.get("node_type"),
        task=given.get("task"),
        base_model=given.get("base_model"),
        run_name=given["run_name"],
        timestamp=given["created_at"],
    )
    return parse_name(generated, vocabulary)


def _fill_from_name(given: dict[str, Any], parsed: ParsedName) -> list[str]:
    """A structured name states component, base model, task and quantization: fill the gaps."""
    if parsed.form != "structured":
        return []
    warnings = []
    for name_value, field_name in (
        (parsed.component, "component"),
        (parsed.base_model, "base_model"),
        (parsed.purpose, "task"),
    ):
        if name_value is None:
            continue
        current = given.get(field_name)
        if current is None:
            given[field_name] = name_value
        elif (slug(current) if field_name == "base_model" else current) != name_value:
            warnings.append(
                f"the name {parsed.name!r} says {field_name.replace('_', ' ')} {name_value!r}, "
                f"but {field_name} is {current!r}"
            )
    if parsed.quant is not None and not given.get("quantized"):
        if given.get("quantized") is False or given.get("precision") in ("fp32", "fp16", "bf16"):
            warnings.append(f"the name {parsed.name!r} ends in -{parsed.quant} but the artifact is not quantized")
        else:
            given["quantized"] = True
            if parsed.quant == "int8":
                given.setdefault("precision", "int8")
    return warnings


def apply_inspection(meta: ResolvedMetadata, suggestions: Mapping[str, Any]) -> ResolvedMetadata:
    """Fill embedding_dim, base_model, precision and quantized from what inspection read in the
    files, where neither the user nor the run's manifest gave them. A given value always wins;
    where the files disagree with it, the registration says so in a warning."""
    fields = dict(meta.fields)
    warnings = list(meta.warnings)

    def disagree(key: str, found: Any, kept: Any) -> None:
        warnings.append(f"the files say {key} {found!r}, the manifest keeps the given {kept!r}")

    for key in ("embedding_dim", "base_model"):
        found = suggestions.get(key)
        if found is None:
            continue
        if fields.get(key) is None:
            fields[key] = found
        elif fields[key] != found:
            disagree(key, found, fields[key])
    precision, quantized = suggestions.get("precision"), suggestions.get("quantized")
    if fields.get("precision") is None and "quantized" not in fields:
        if precision is not None:
            fields["precision"] = precision
        if quantized is not None:
            fields["quantized"] = quantized
    else:
        if precision is not None and fields.get("precision") not in (None, precision):
            disagree("precision", precision, fields["precision"])
        if quantized is not None and "quantized" in fields and fields["quantized"] != quantized:
            disagree("quantized", quantized, fields["quantized"])
    return replace(meta, fields=fields, warnings=warnings)


def validate_metadata(meta: ResolvedMetadata) -> None:
    """Check the field types, before any bytes are stored."""
    fields = {k: v for k, v in meta.fields.items() if k not in LIFECYCLE_FIELDS}
    _validate_fields({**fields, "artifact_name": meta.artifact_name}, meta.manifest_path)


def _validate_fields(given: dict[str, Any], manifest_path: Path) -> None:
    from pydantic import ValidationError

    from modelyard.manifest import RunManifest, format_validation_error

    try:
        RunManifest.model_validate({k: v for k, v in given.items() if k != "files"})
    except ValidationError as exc:
        raise format_validation_error(exc, manifest_path if manifest_path.exists() else "register options") from None
