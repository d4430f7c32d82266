"""The distribution plan: which version goes to which nodes, with what files, at which path.

`modelyard deploy plan` turns assignments (`NAME@REF=TARGETS`, or a YAML file of them) into the
machine-readable manifest `deploy push` executes and a Markdown document shaped like seed 004.
Everything that can be refused is refused here, before a byte is sent: an unknown node, a version
not in the required stage, an adapter whose base model no node will have, two versions for one
serving path, a name that would leave a node's models root.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from modelyard.distribute.fleet import Fleet, Node, check_target_name
from modelyard.distribute.profiles import select_files
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.names import MANIFEST_FILENAME, STAGES, check_relative_path, parse_reference, slug

if TYPE_CHECKING:
    from modelyard.domain import VersionRecord
    from modelyard.registry import Registry

PLAN_FORMAT: Final = "modelyard-distribution-plan/1"
ANY_STAGE = "any"


class PlannedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int
    sha256: str


class NodeTarget(BaseModel):
    """One node receiving one artifact: where it serves it and where its base model is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    address: str
    serving_path: str
    base_path: str | None = None
    base_source: Literal["fleet", "registry"] | None = None


class PlannedArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str  # NAME@N, resolved when the plan was made
    requested: str  # what the assignment said: NAME@production, NAME@champion, ...
    artifact: str
    number: int
    stage: str
    semantic_version: str | None
    model_type: str | None
    profile: str
    target_name: str
    version_dir: str  # the directory name on the node: v<N>-<digest of the file list>
    base_model: str | None
    base_ref: str | None  # the registered base shipped before this artifact, if any
    dependency: bool = False  # added to the plan as another artifact's base
    base_of: list[str] = []  # the adapters (NAME@N) this base is shipped for
    training_data: list[str]
    metrics: dict[str, JsonValue]
    license: str | None
    files: list[PlannedFile]
    bytes: int
    left_out: int  # the version's files the profile does not send
    nodes: list[NodeTarget]


class DistributionPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["modelyard-distribution-plan/1"] = PLAN_FORMAT
    created_at: datetime
    created_by: str
    registry: str
    fleet_file: str
    fleet: Fleet
    require_stage: str
    all_files: bool
    artifacts: list[PlannedArtifact]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def artifact(self, ref_or_name: str) -> PlannedArtifact:
        for item in self.artifacts:
            if ref_or_name in (item.ref, item.artifact, item.target_name):
                return item
        raise NotFoundError(f"the plan has no artifact {ref_or_name!r}")


@dataclass
class Assignment:
    """`NAME@REF=TARGETS`, or one entry of an assignments YAML file."""

    reference: str
    targets: str
    target_name: str | None = None
    base: str | None = None  # NAME@REF of a registered base model, when not found by name
    source: str = "command line"
    extra: dict[str, Any] = field(default_factory=dict)


def parse_assignment(text: str) -> Assignment:
    reference, sep, targets = text.partition("=")
    if not sep or not reference.strip() or not targets.strip():
        raise InvalidInputError(
            f"assignment {text!r} must read NAME@REF=TARGETS (e.g. grammar-lora@production=jw2,type:inference)",
            field="assignment",
        )
    parse_reference(reference.strip())
    return Assignment(reference.strip(), targets.strip())


def load_assignments(path: Path) -> list[Assignment]:
    """An assignments file: a list (or `assignments:` list) of mappings with `artifact` and
    `targets` (a string or a list), and optionally `target_name` and `base`."""
    from modelyard.loaders import load_document

    document = load_document(path)
    entries = document.get("assignments") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise InvalidInputError("an assignments file holds a non-empty list under 'assignments'", path=path)
    assignments = []
    for index, entry in enumerate(entries):
        where = f"assignments[{index}]"
        if not isinstance(entry, dict):
            raise InvalidInputError("each assignment is a mapping with artifact and targets", path=path, field=where)
        unknown = sorted(set(entry) - {"artifact", "targets", "target_name", "base"})
        if unknown:
            raise InvalidInputError(f"unknown key {unknown[0]!r} (a typo?)", path=path, field=where)
        reference, targets = entry.get("artifact"), entry.get("targets")
        if isinstance(targets, list):
            targets = ",".join(str(target) for target in targets)
        if not isinstance(reference, str) or not isinstance(targets, str) or not targets:
            raise InvalidInputError("needs artifact: NAME@REF and targets: NODES", path=path, field=where)
        for key in ("target_name", "base"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise InvalidInputError(f"{key} must be a string", path=path, field=f"{where}.{key}")
        assignments.append(
            Assignment(reference, targets, entry.get("target_name"), entry.get("base"), source=f"{path}: {where}")
        )
    return assignments


# -- building the plan ----------------------------------------------------------------------------


def build_plan(
    registry: Registry,
    fleet: Fleet,
    assignments: list[Assignment],
    *,
    require_stage: str = "production",
    all_files: bool = False,
) -> DistributionPlan:
    if require_stage != ANY_STAGE and require_stage not in STAGES:
        raise InvalidInputError(
            f"unknown stage {require_stage!r}; use one of {', '.join(STAGES)} or {ANY_STAGE}", field="--require-stage"
        )
    if not assignments:
        raise InvalidInputError("give at least one assignment NAME@REF=TARGETS", field="assignment")
    planned: dict[tuple[str, str], PlannedArtifact] = {}
    for assignment in assignments:
        _plan_one(registry, fleet, assignment, planned, require_stage=require_stage, all_files=all_files)
    _check_serving_paths(list(planned.values()))
    return DistributionPlan(
        created_at=datetime.now(UTC),
        created_by=registry._actor(),
        registry=str(registry.settings.home),
        fleet_file=fleet.source,
        fleet=fleet,
        require_stage=require_stage,
        all_files=all_files,
        artifacts=_dependencies_first(list(planned.values())),
    )


def _plan_one(
    registry: Registry,
    fleet: Fleet,
    assignment: Assignment,
    planned: dict[tuple[str, str], PlannedArtifact],
    *,
    require_stage: str,
    all_files: bool,
) -> None:
    try:
        version = registry.show(assignment.reference)
    except NotFoundError as exc:
        raise NotFoundError(f"{assignment.source}: {exc.message}") from None
    _check_stage(registry, version, assignment.reference, require_stage)
    nodes = fleet.select(assignment.targets)
    target_name = check_target_name(assignment.target_name or version.artifact_name)
    config = registry.model_config(version.ref)
    base_model = _base_model_of(version, config)
    needs_registered_base = _is_adapter(config) and (
        assignment.base is not None or any(base_model not in node.base_models for node in nodes)
    )
    base_version = _registered_base(registry, assignment, base_model, require_stage) if needs_registered_base else None
    targets = []
    for node in nodes:
        base_path, base_source = _base_on_node(node, base_model, base_version, config, assignment)
        targets.append(_target(node, target_name, base_path, base_source))
    if base_version is not None and any(t.base_source == "registry" for t in targets):
        base_nodes = ",".join(t.node for t in targets if t.base_source == "registry")
        dependency = Assignment(base_version.ref, base_nodes, source=f"base model of {version.ref}")
        base_targets = [_target(node, base_version.artifact_name) for node in fleet.select(base_nodes)]
        base_item = _planned(registry, base_version, dependency, base_version.artifact_name, base_targets, all_files)
        _add(planned, base_item.model_copy(update={"base_of": [version.ref]}))
    _add(planned, _planned(registry, version, assignment, target_name, targets, all_files, base_version))


def _target(
    node: Node,
    target_name: str,
    base_path: str | None = None,
    base_source: Literal["fleet", "registry"] | None = None,
) -> NodeTarget:
    return NodeTarget(
        node=node.name,
        address="local" if node.is_local else node.address(),
        serving_path=node.serving_path(target_name),
        base_path=base_path,
        base_source=base_source,
    )


def _check_stage(registry: Registry, version: VersionRecord, requested: str, require_stage: str) -> None:
    """At least the required stage (a production version was validated too), and never a version
    demoted or deprecated (restore it first)."""
    if require_stage != ANY_STAGE and STAGES.index(version.stage) < STAGES.index(require_stage):
        raise InvalidInputError(
            f"{requested} is {version.ref}, a {version.stage} version; the plan requires {require_stage} "
            f"(promote it, or pass --require-stage {version.stage})",
            field="--require-stage",
        )
    status = registry.catalog.lifecycle.status(version)
    if status in ("demoted", "deprecated"):
        raise InvalidInputError(f"{version.ref} is {status}; deploy another version or restore it", field="artifact")


def _is_adapter(config: Any) -> bool:
    return config is not None and getattr(config, "model_type", None) == "adapter"


def _base_model_of(version: VersionRecord, config: Any) -> str | None:
    return getattr(config, "base_model", None) or version.manifest.base_model


def base_artifact_stems(base_model: str) -> list[str]:
    """The names a registered base model is found under, before `-v<N>`:
    `meta-llama/Llama-3.2-3B-Instruct` -> llama-3.2-3b-instruct, meta-llama-llama-3.2-3b-instruct."""
    return list(dict.fromkeys([slug(base_model.rsplit("/", 1)[-1]), slug(base_model)]))


def _registered_base(
    registry: Registry, assignment: Assignment, base_model: str | None, require_stage: str
) -> VersionRecord | None:
    """The registered artifact holding the adapter's base: the assignment's `base`, else the one
    artifact named after the base model (`llama-3.2-3b-instruct-v1` for
    meta-llama/Llama-3.2-3B-Instruct), at its newest version in the required stage. It is held to
    the required stage like the adapter: it is deployed too."""
    if assignment.base is not None:
        version = registry.show(assignment.base)
    elif not base_model:
        return None
    else:
        stems = base_artifact_stems(base_model)
        pattern = re.compile(rf"^(?:{'|'.join(re.escape(stem) for stem in stems)})-v\d+$")
        names = sorted({summary.artifact_name for summary in registry.list() if pattern.match(summary.artifact_name)})
        if not names:
            return None
        if len(names) > 1:
            raise InvalidInputError(
                f"{assignment.source}: several artifacts could hold the base {base_model} ({', '.join(names)}); "
                "give `base: NAME@REF` in an assignments file",
                field="base",
            )
        stage_ref = "latest" if require_stage == ANY_STAGE else require_stage
        try:
            version = registry.show(f"{names[0]}@{stage_ref}")
        except NotFoundError as exc:
            raise InvalidInputError(
                f"{assignment.source}: the base model {base_model} is registered as {names[0]}, but: {exc.message}",
                field="base",
            ) from None
    _check_stage(registry, version, f"the base {version.ref} of {assignment.reference}", require_stage)
    return version


def _base_on_node(
    node: Node, base_model: str | None, base_version: VersionRecord | None, config: Any, assignment: Assignment
) -> tuple[str | None, Literal["fleet", "registry"] | None]:
    """Where this node has the adapter's base: the fleet file's path for it, else the serving
    path of the registered base shipped first. Refused when neither exists."""
    if not _is_adapter(config):
        return None, None
    if assignment.base is None and base_model and base_model in node.base_models:
        return node.base_models[base_model], "fleet"
    if base_version is not None:
        return node.serving_path(base_version.artifact_name), "registry"
    if not base_model:
        raise InvalidInputError(
            f"{assignment.source}: the adapter {assignment.reference} names no base model "
            "(base_model in adapter_config.json or the manifest); give `base: NAME@REF`",
            field="base_model",
        )
    raise InvalidInputError(
        f"{assignment.source}: node {node.name} has no base model {base_model} for {assignment.reference}: "
        f"declare it under base_models of {node.name} in the fleet file, or register it as an artifact "
        f"named {base_artifact_stems(base_model)[0]}-v1 (or give `base: NAME@REF`)",
        field="base_model",
    )


def _planned(
    registry: Registry,
    version: VersionRecord,
    assignment: Assignment,
    target_name: str,
    targets: list[NodeTarget],
    all_files: bool,
    base_version: VersionRecord | None = None,
) -> PlannedArtifact:
    manifest = version.manifest
    config = registry.model_config(version.ref)
    model_type = getattr(config, "model_type", None)
    if all_files:
        profile, files, left_out = "all-files", list(manifest.files), 0
    else:
        selection = select_files(
            manifest.files, model_type, getattr(config, "layout", None), getattr(config, "format", None)
        )
        profile, files, left_out = selection.profile, selection.files, selection.left_out
    manifest_bytes = manifest.to_json().encode("utf-8")
    planned_files = [PlannedFile(path=f.path, size=f.size, sha256=f.sha256) for f in files]
    planned_files.append(
        PlannedFile(path=MANIFEST_FILENAME, size=len(manifest_bytes), sha256=hashlib.sha256(manifest_bytes).hexdigest())
    )
    planned_files.sort(key=lambda f: f.path)
    return PlannedArtifact(
        ref=version.ref,
        requested=assignment.reference,
        artifact=version.artifact_name,
        number=version.number,
        stage=version.stage,
        semantic_version=version.semver,
        model_type=model_type,
        profile=profile,
        target_name=target_name,
        version_dir=version_dir_name(version.number, planned_files),
        base_model=_base_model_of(version, config),
        base_ref=base_version.ref if base_version is not None else None,
        dependency=assignment.source.startswith("base model of "),
        training_data=list(manifest.train_data_tags or []),
        metrics=dict(manifest.metrics or {}),
        license=manifest.license,
        files=planned_files,
        bytes=sum(f.size for f in planned_files),
        left_out=left_out,
        nodes=targets,
    )


def version_dir_name(number: int, files: list[PlannedFile]) -> str:
    """`v<N>-<12 hex>`: the version and the exact file set (a profile and --all-files differ)."""
    listing = json.dumps([[f.path, f.size, f.sha256] for f in files], separators=(",", ":"))
    return f"v{number}-{hashlib.sha256(listing.encode()).hexdigest()[:12]}"


def _add(planned: dict[tuple[str, str], PlannedArtifact], item: PlannedArtifact) -> None:
    """Merge an artifact planned twice (say, a base two adapters need) into one entry."""
    key = (item.ref, item.target_name)
    existing = planned.get(key)
    if existing is None:
        planned[key] = item
        return
    if existing.version_dir != item.version_dir:
        raise InvalidInputError(
            f"{item.ref} is planned twice for {item.target_name} with different files (one with --all-files?)"
        )
    nodes = {target.node: target for target in existing.nodes}
    for target in item.nodes:
        nodes.setdefault(target.node, target)
    planned[key] = existing.model_copy(
        update={
            "nodes": list(nodes.values()),
            "dependency": existing.dependency and item.dependency,
            "base_of": sorted(set(existing.base_of) | set(item.base_of)),
        }
    )


def _check_serving_paths(items: list[PlannedArtifact]) -> None:
    """One serving path on a node serves one version."""
    seen: dict[tuple[str, str], str] = {}
    for item in items:
        for target in item.nodes:
            key = (target.node, target.serving_path)
            if key in seen and seen[key] != item.ref:
                raise InvalidInputError(
                    f"{target.serving_path} on node {target.node} is assigned both {seen[key]} and {item.ref}; "
                    "give one of them another target_name",
                    field="target_name",
                )
            seen[key] = item.ref


def _dependencies_first(items: list[PlannedArtifact]) -> list[PlannedArtifact]:
    """Bases before the adapters on them (seed 004: the base must be on the node first), whether
    the base was added for an adapter or also assigned in its own right."""
    bases = {item.base_ref for item in items if item.base_ref is not None}
    return sorted(items, key=lambda item: (item.ref not in bases, item.artifact, item.number))


# -- reading a plan -------------------------------------------------------------------------------


def read_plan(path: Path) -> DistributionPlan:
    from modelyard.loaders import read_text

    text = read_text(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"not JSON ({exc.msg} at line {exc.lineno})", path=path) from None
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise InvalidInputError(f"not a modelyard distribution plan (format {PLAN_FORMAT})", path=path)
    try:
        plan = DistributionPlan.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        raise InvalidInputError(str(error["msg"]), path=path, field=location) from None
    for item in plan.artifacts:  # a hand-edited plan is held to the same rules as a generated one
        check_target_name(item.target_name)
        for target in item.nodes:
            node = plan.fleet.node(target.node)
            if target.serving_path != node.serving_path(item.target_name):
                raise InvalidInputError(
                    f"serving path {target.serving_path} is not {node.serving_path(item.target_name)}",
                    path=path,
                    field=f"artifacts[{item.ref}].nodes[{target.node}]",
                )
        for planned in item.files:
            try:
                check_relative_path(planned.path)
            except ValueError as exc:
                raise InvalidInputError(str(exc), path=path, field=f"artifacts[{item.ref}].files") from None
        if version_dir_name(item.number, item.files) != item.version_dir:
            raise InvalidInputError("the file list was edited after planning", path=path, field=item.ref)
    return plan


def plan_summary(plan: DistributionPlan) -> list[dict[str, Any]]:
    return [
        {
            "ref": item.ref,
            "target_name": item.target_name,
            "nodes": [target.node for target in item.nodes],
            "files": len(item.files),
            "bytes": item.bytes,
            "profile": item.profile,
        }
        for item in plan.artifacts
    ]


def describe_version(
    registry: Registry, reference: str, *, require_stage: str = "production", all_files: bool = False
) -> PlannedArtifact:
    """One version as a plan entry without nodes: what `modelyard pull` fetches (its files by the
    deploy profile, their digests, the directory name on the node)."""
    if require_stage != ANY_STAGE and require_stage not in STAGES:
        raise InvalidInputError(
            f"unknown stage {require_stage!r}; use one of {', '.join(STAGES)} or {ANY_STAGE}", field="--require-stage"
        )
    version = registry.show(reference)
    _check_stage(registry, version, reference, require_stage)
    return _planned(registry, version, Assignment(reference, "-"), version.artifact_name, [], all_files)
