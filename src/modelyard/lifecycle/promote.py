"""Seed 003's promotions: raw -> validated after the gates pass, validated -> production after
approval. Each promotion builds the new stage's tree in a private staging directory and registers
it as a new immutable version of the same artifact, with its stage and lineage; nothing becomes
visible until that registration commits, so a killed promotion leaves the previous stage as it was.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.domain import Lifecycle, VersionRecord
from modelyard.errors import ConflictError, GateFailedError, InvalidInputError, ModelyardError
from modelyard.names import MANIFEST_FILENAME, check_semver

if TYPE_CHECKING:
    from modelyard.lifecycle.policy import Policy
    from modelyard.lifecycle.report import ValidationReport
    from modelyard.modelconfig import BaseModelConfig
    from modelyard.registry import Registry

STAGING_MAX_AGE_SECONDS = 24 * 3600
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


@dataclass(frozen=True)
class ValidationOutcome:
    report: ValidationReport
    report_id: int
    version: VersionRecord


# -- validation ------------------------------------------------------------------------------


def load_policy_from(policy: Policy | Path | None) -> Policy:
    from modelyard.lifecycle.policy import Policy, default_policy, load_policy

    if policy is None:
        return default_policy()
    if isinstance(policy, Policy):
        return policy
    return load_policy(Path(policy))


def validate(
    registry: Registry,
    reference: str,
    *,
    checkpoint: str | None = None,
    policy: Policy | Path | None = None,
    validation_results: dict[str, Any] | None = None,
    actor: str,
) -> ValidationOutcome:
    """Run a policy's gates on a version (and one of its checkpoints) and store the report."""
    from modelyard.lifecycle.checks import ValidationSubject, run_checks

    version = registry.show(reference)
    rules = load_policy_from(policy)
    subject = ValidationSubject(
        ref=version.ref,
        manifest=version.manifest,
        model_config=registry.model_config(version.ref),
        checkpoint=checkpoint,
        submitted=dict(validation_results or {}),
        verify_files=lambda: _verify_problems(registry, version),
        reinspect=lambda: _reinspect(registry, version),
        read_file=lambda path: _read_small_file(registry, version, path),
        export_to=lambda directory: _export_into(registry, version, directory),
    )
    report = run_checks(rules, subject)
    report_id = registry.catalog.lifecycle.add_report(
        version, checkpoint, report.policy_sha256, report.passed, actor, report.to_json()
    )
    return ValidationOutcome(report, report_id, version)


def _verify_problems(registry: Registry, version: VersionRecord) -> list[str]:
    report = registry.verify(version.ref, quarantine=False)
    return [
        f"{problem.status}: sha256:{problem.sha256} ({', '.join(map(str, problem.uses))})"
        for problem in report.problems
    ]


def _reinspect(registry: Registry, version: VersionRecord) -> BaseModelConfig:
    from modelyard.inspect import Hints, inspect_tree
    from modelyard.inspect.tree import BlobTree

    manifest = version.manifest
    tree = BlobTree(registry.store.open, version.ref, {f.path: (f.size, f.sha256) for f in manifest.files})
    hints = Hints(version.artifact_name, manifest.component, manifest.task, manifest.node_type, manifest.base_model)
    return inspect_tree(tree, hints)


def _read_small_file(registry: Registry, version: VersionRecord, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
    entry = next((f for f in version.manifest.files if f.path == path), None)
    if entry is None:
        raise FileNotFoundError(path)
    if entry.size > limit:
        raise InvalidInputError(f"larger than {limit} bytes", path=f"{version.ref}:{path}")
    with registry.store.open(entry.sha256) as handle:
        return handle.read(limit + 1)


def _export_into(registry: Registry, version: VersionRecord, directory: Path) -> None:
    """Write a version's files (not its manifest) into an existing empty directory."""
    for entry in version.manifest.files:
        target = directory / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with registry.store.open(entry.sha256) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1024 * 1024)


# -- raw -> validated ------------------------------------------------------------------------------


def promote_to_validated(
    registry: Registry,
    reference: str,
    *,
    checkpoint: str | None,
    policy: Policy | Path | None,
    validation_results: dict[str, Any] | None,
    force: bool,
    reason: str | None,
    actor: str,
) -> VersionRecord:
    """Build and register the validated version of a raw version's checkpoint."""
    from modelyard.lifecycle.checks import resolve_checkpoint
    from modelyard.lifecycle.weights import clean_weights

    raw = registry.show(reference)
    _require_stage(raw, "raw", "validated")
    rules = load_policy_from(policy)
    name = checkpoint or _default_checkpoint(raw)
    checkpoint_path = resolve_checkpoint(raw.ref, raw.manifest, name) if name else None
    checkpoint_name = _checkpoint_name(checkpoint_path) if checkpoint_path else None
    report = _passing_report(registry, raw, checkpoint_name, rules, validation_results, force, reason, actor)
    session_id = raw.manifest.run_name or raw.label or raw.artifact_name
    validated_id = f"{session_id}_{checkpoint_name or 'model'}_validated"
    config = registry.model_config(raw.ref)
    with _staging(registry, "validated") as tree:
        weights_note: dict[str, Any] = {}
        if checkpoint_path is not None:
            source = tree.parent / "source" / posixpath.basename(checkpoint_path)
            source.parent.mkdir()
            _export_file(registry, raw, checkpoint_path, source)
            cleaned = clean_weights(
                source, tree, scan=config.pickle_scan if config else None, allowed_globals=rules.allowed_globals
            )
            weights_note = {
                "files": list(cleaned.files),
                "parameter_count": cleaned.parameter_count,
                "stripped_keys": list(cleaned.stripped_keys),
                "safetensors": cleaned.safetensors_written or cleaned.safetensors_reason,
            }
        _copy_config(registry, raw, tree)
        (tree / "validation").mkdir()
        (tree / "validation" / "test_results.json").write_text(report.to_json())
        metrics = {name: value.value for name, value in report.metrics.items()}
        (tree / "validation" / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        metadata = {
            "artifact_name": raw.artifact_name,
            "stage": "validated",
            "validated_id": validated_id,
            "session_id": session_id,
            "derived_from": raw.ref,
            "checkpoint": checkpoint_name,
            "training_config_hash": raw.manifest.training_config_hash,
            "policy_sha256": report.policy_sha256,
            "validated_by": actor,
            "validated_at": datetime.now(UTC).isoformat(),
            "forced": force and not report.passed,
            "force_reason": reason if force and not report.passed else None,
            "weights": weights_note,
        }
        _write_json(tree / "metadata.json", metadata)
        _model_card(tree, raw, "validated", metrics, report, [raw.ref], session_id, f"{raw.artifact_name}@validated")
        forced = force and not report.passed
        lifecycle = Lifecycle("validated", raw.ref, None, checkpoint_name, validated_id, forced)
        return _register_tree(registry, tree, raw, lifecycle, metrics)


def _default_checkpoint(raw: VersionRecord) -> str | None:
    """`best`, else `latest`, else the only checkpoint; None when the version has no checkpoints/."""
    from modelyard.lifecycle.checks import checkpoint_paths

    paths = checkpoint_paths(raw.manifest)
    names = [_checkpoint_name(path) for path in paths]
    for preferred in ("best", "latest"):
        if preferred in names:
            return preferred
    if len(names) == 1:
        return names[0]
    if names:
        raise InvalidInputError(
            f"{raw.ref} holds several checkpoints ({', '.join(sorted(names)[:8])}); choose one with --checkpoint",
            field="checkpoint",
        )
    return None


def _checkpoint_name(path: str) -> str:
    base = posixpath.basename(path)
    return base.split(".", 1)[0]


def _passing_report(
    registry: Registry,
    raw: VersionRecord,
    checkpoint: str | None,
    rules: Policy,
    validation_results: dict[str, Any] | None,
    force: bool,
    reason: str | None,
    actor: str,
) -> ValidationReport:
    """Run the gates now (the report is stored either way); refuse unless all passed or forced."""
    outcome = validate(
        registry, raw.ref, checkpoint=checkpoint, policy=rules, validation_results=validation_results, actor=actor
    )
    report = outcome.report
    if report.passed:
        return report
    failed = ", ".join(f"{c.name} ({c.detail})" for c in report.failed_checks[:4])
    if not force:
        raise GateFailedError(
            f"{raw.ref} did not pass its gates: {failed}; fix them and promote again "
            "(an admin may override with --force --reason TEXT)",
            details={"report": outcome.report_id},
        )
    if not reason or not reason.strip():
        raise InvalidInputError("--force needs --reason: say why the gates may be skipped", field="reason")
    registry.catalog.record_event(
        actor,
        "force",
        raw.artifact_name,
        raw.number,
        {
            "reason": reason.strip(),
            "failed_checks": [c.name for c in report.failed_checks],
            "report": outcome.report_id,
        },
    )
    return report


# -- validated -> production -----------------------------------------------------------------------------


def promote_to_production(
    registry: Registry,
    reference: str,
    *,
    version: str,
    approved_by: str | None,
    policy: Policy | Path | None,
    benchmarks: Path | None,
    deployment_config: dict[str, Any] | None,
    security_reviewed_by: str | None,
    actor: str,
) -> VersionRecord:
    """Build and register the production version of an approved validated version."""
    from modelyard.lifecycle.deployment import DeploymentSpec, write_deployment
    from modelyard.lifecycle.resources import measure_resource_usage, read_benchmarks

    validated = registry.show(reference)
    _require_stage(validated, "validated", "production")
    if registry.catalog.lifecycle.status(validated) in ("demoted", "deprecated"):
        raise GateFailedError(f"{validated.ref} was demoted or deprecated; promote another validated version")
    semver = check_semver(version)
    _require_new_semver(registry, validated.artifact_name, semver)
    rules = load_policy_from(policy)
    lifecycle = registry.catalog.lifecycle
    if approved_by:
        lifecycle.add_approval(validated, approved_by.strip(), actor, f"with the promotion to {semver}")
    approvers = _check_approvals(registry, validated, rules, actor)
    if rules.security_review and not (security_reviewed_by and security_reviewed_by.strip()):
        raise GateFailedError(
            "the policy requires a security review before production: add --security-reviewed-by NAME"
        )
    session_id = validated.manifest.run_name or validated.artifact_name
    production_id = f"{session_id}_prod_v{semver}"
    config = registry.model_config(validated.ref)
    with _staging(registry, "production") as tree:
        weights = _copy_files(registry, validated, tree, lambda path: path.startswith("model."))
        _copy_config(registry, validated, tree)
        performance = tree / "performance"
        performance.mkdir()
        bench = read_benchmarks(benchmarks) if benchmarks else _run_benchmark(registry, validated, rules)
        _write_json(performance / "benchmarks.json", bench)
        loadable = [tree / path for path in weights if path.endswith((".safetensors", ".pt", ".gguf"))]
        usage = measure_resource_usage(sorted(loadable, key=lambda p: not p.name.endswith(".safetensors"))[:1])
        (performance / "resource_usage.json").write_text(usage.to_json())
        compatible = [c.runtime for c in config.compatibility() if c.compatible] if config else []
        spec = DeploymentSpec(
            name=validated.artifact_name,
            version=semver,
            model_files=list(weights),
            runtimes=compatible,
            weights_bytes=sum((tree / path).stat().st_size for path in weights),
            deployment_config=dict(deployment_config or {}),
            pipeline_tag=_pipeline_tag(validated),
        )
        deployment = write_deployment(tree, spec)
        metrics = {k: v for k, v in validated.manifest.metrics.items() if isinstance(v, int | float)}
        metadata = {
            "artifact_name": validated.artifact_name,
            "stage": "production",
            "production_id": production_id,
            "semantic_version": semver,
            "session_id": session_id,
            "derived_from": validated.ref,
            "lineage": [step.ref for step in lineage(registry, validated.ref)],
            "approved_by": approvers,
            "promoted_by": actor,
            "promoted_at": datetime.now(UTC).isoformat(),
            "security_reviewed_by": security_reviewed_by,
            "deployment": {
                "files": list(deployment.files),
                "runtime": deployment.runtime,
                "image": deployment.image,
                "port": deployment.port,
                "kubernetes_version": deployment.kubernetes_version,
                "skipped_reason": deployment.skipped_reason,
            },
            "forced_upstream": validated.forced,
        }
        _write_json(tree / "metadata.json", metadata)
        _changelog(registry, validated, tree, semver, approvers, actor)
        chain = [step.ref for step in reversed(lineage(registry, validated.ref))]
        card_ref = f"{validated.artifact_name}@{semver}"
        _model_card(tree, validated, "production", metrics, None, chain, session_id, card_ref)
        result = _register_tree(
            registry, tree, validated, Lifecycle("production", validated.ref, semver, None, production_id), metrics
        )
    if security_reviewed_by:
        registry.catalog.record_event(
            security_reviewed_by.strip(), "security-review", result.artifact_name, result.number, {"os_user": actor}
        )
    return result


def _pipeline_tag(version: VersionRecord) -> str | None:
    from modelyard.lifecycle.model_card import pipeline_tag_for

    return pipeline_tag_for(version.manifest.task)


def _require_new_semver(registry: Registry, name: str, semver: str) -> None:
    try:
        existing = registry.show(f"{name}@{semver}")
    except ModelyardError:
        return
    raise ConflictError(f"{name} {semver} already exists ({existing.ref}); production versions are never reused")


def _check_approvals(registry: Registry, validated: VersionRecord, rules: Policy, actor: str) -> list[str]:
    """The distinct approvers on record; refuse when there are too few (seed 003: manual approval)."""
    approvals = registry.catalog.lifecycle.approvals(validated)
    names = list(dict.fromkeys(a.approved_by for a in approvals))
    how = (
        f"approve it with 'modelyard approve {validated.ref} --approved-by NAME' "
        f"(or promote with --approved-by NAME; in Python: approved_by=...)"
    )
    if not names:
        raise GateFailedError(f"production promotion needs a manual approval of {validated.ref}: {how}")
    if rules.require_distinct_approver:
        distinct = [name for name in names if name not in (validated.registered_by, actor)]
        if not distinct:
            raise GateFailedError(
                f"the policy requires an approver other than the promoter ({actor}) and the validator "
                f"({validated.registered_by}); approvals so far: {', '.join(names)}; {how}"
            )
    if validated.forced and len(names) < 2:
        raise GateFailedError(
            f"{validated.ref} was validated by force: production needs a second, distinct approver "
            f"(approvals so far: {', '.join(names)}); {how}"
        )
    return names


def _run_benchmark(registry: Registry, version: VersionRecord, rules: Policy) -> dict[str, Any]:
    """The policy's benchmark command on the exported version: its stdout must be a JSON object."""
    if rules.benchmark is None:
        return {"note": "no benchmark given (--benchmarks FILE) and none in the policy"}
    from modelyard.lifecycle.commands import run_command

    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as scratch:
        directory = Path(scratch) / "artifact"
        directory.mkdir()
        _export_into(registry, version, directory)
        argv = [part.replace("{path}", str(directory)) for part in rules.benchmark.run]
        outcome = run_command(argv, timeout=rules.benchmark.timeout, artifact_dir=directory, merge_stderr=False)
    if not outcome.passed:
        raise GateFailedError(
            f"the policy's benchmark {outcome.describe(rules.benchmark.timeout)}: {outcome.output[-400:]}"
        )
    try:
        value = json.loads(outcome.output)
    except ValueError:
        raise InvalidInputError(
            "the benchmark command must print one JSON object on stdout", field="benchmark"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(
            "the benchmark command must print a JSON object, not a list or number", field="benchmark"
        )
    return value


# -- shared --------------------------------------------------------------------------------------------


def _require_stage(version: VersionRecord, stage: str, target: str) -> None:
    if version.stage != stage:
        raise InvalidInputError(
            f"{version.ref} is {version.stage}; only a {stage} version can be promoted to {target}",
            field="reference",
        )


@contextmanager
def _staging(registry: Registry, stage: str) -> Iterator[Path]:
    """A private directory under the registry home, removed afterwards (and by the next promotion
    if this process is killed)."""
    base = registry.settings.home / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale(base)
    scratch = Path(tempfile.mkdtemp(prefix=f"promote-{stage}-", dir=base))
    tree = scratch / "tree"
    tree.mkdir()
    try:
        yield tree
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_stale(base: Path) -> None:
    cutoff = time.time() - STAGING_MAX_AGE_SECONDS
    for entry in base.glob("promote-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _export_file(registry: Registry, version: VersionRecord, path: str, target: Path) -> None:
    entry = next(f for f in version.manifest.files if f.path == path)
    with registry.store.open(entry.sha256) as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, 1024 * 1024)


def _copy_files(registry: Registry, version: VersionRecord, tree: Path, wanted: Any) -> list[str]:
    copied = []
    for entry in version.manifest.files:
        if wanted(entry.path):
            target = tree / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            _export_file(registry, version, entry.path, target)
            copied.append(entry.path)
    return copied


def _copy_config(registry: Registry, version: VersionRecord, tree: Path) -> None:
    """The original configuration: the version's config.yaml, else its training_config as YAML."""
    if any(f.path == "config.yaml" for f in version.manifest.files):
        _export_file(registry, version, "config.yaml", tree / "config.yaml")
        return
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = StringIO()
    yaml.dump(dict(version.manifest.training_config), buffer)
    (tree / "config.yaml").write_text(buffer.getvalue())


def _changelog(
    registry: Registry, validated: VersionRecord, tree: Path, semver: str, approvers: list[str], actor: str
) -> None:
    """A new entry on top of the previous production version's CHANGELOG.md."""
    previous = ""
    try:
        current = registry.show(f"{validated.artifact_name}@production")
        if any(f.path == "CHANGELOG.md" for f in current.manifest.files):
            previous = _read_small_file(registry, current, "CHANGELOG.md").decode("utf-8", "replace")
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


def _model_card(
    tree: Path,
    source: VersionRecord,
    stage: str,
    metrics: dict[str, float],
    report: ValidationReport | None,
    lineage_refs: list[str],
    session_id: str,
    ref: str,
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
            pipeline_tag=pipeline_tag_for(manifest.task),
            training_config=dict(manifest.training_config),
            training_config_hash=manifest.training_config_hash,
            session_id=session_id,
            metrics={**_numbers(manifest.metrics), **metrics},
            validation=validation,
            lineage=lineage_refs,
            files=sorted(p.name for p in tree.glob("model.*")),
        ),
    )


def _register_tree(
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


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


# -- lineage ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineageStep:
    ref: str
    stage: str
    label: str | None
    detail: str


def lineage(registry: Registry, reference: str) -> list[LineageStep]:
    """The chain from a version back to its training session: production -> validated -> raw."""
    steps: list[LineageStep] = []
    current: VersionRecord | None = registry.show(reference)
    while current is not None:
        manifest = current.manifest
        if current.stage == "production":
            detail = f"production {current.semver}"
        elif current.stage == "validated":
            detail = f"validated from checkpoint {manifest.checkpoint or '-'}" + (" (FORCED)" if current.forced else "")
        else:
            detail = (
                f"training session {manifest.run_name or current.label}, training_config_hash "
                f"{manifest.training_config_hash or '-'}, created {manifest.created_at:%Y-%m-%d %H:%M}Z"
            )
        steps.append(LineageStep(current.ref, current.stage, current.label, detail))
        current = registry.catalog.lifecycle.parent(current)
    return steps
