"""Seed 003's promotions: raw -> validated after the gates pass, validated -> production after
approval. Each promotion builds the new stage's tree in a private staging directory and registers
it as a new immutable version of the same artifact, with its stage and lineage; nothing becomes
visible until that registration commits, so a killed promotion leaves the previous stage as it was.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.domain import Lifecycle, VersionRecord
from modelyard.errors import ConflictError, GateFailedError, InvalidInputError, ModelyardError
from modelyard.lifecycle.building import (
    INHERITED_FIELDS,
    copy_config,
    copy_files,
    export_file,
    export_into,
    model_files,
    read_small_file,
    register_tree,
    require_stage,
    staging,
    write_card,
    write_changelog,
    write_json,
)
from modelyard.lifecycle.lineage import LineageStep, lineage
from modelyard.lifecycle.scratch import scratch_dir
from modelyard.names import check_semver

__all__ = [
    "INHERITED_FIELDS",
    "LineageStep",
    "ValidationOutcome",
    "lineage",
    "promote_to_production",
    "promote_to_validated",
    "validate",
]

if TYPE_CHECKING:
    from modelyard.lifecycle.policy import Policy
    from modelyard.lifecycle.report import ValidationReport
    from modelyard.modelconfig import BaseModelConfig
    from modelyard.registry import Registry


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
    with scratch_dir(registry.settings.home, "validate-") as scratch:
        subject = ValidationSubject(
            ref=version.ref,
            manifest=version.manifest,
            model_config=registry.model_config(version.ref),
            checkpoint=checkpoint,
            submitted=dict(validation_results or {}),
            verify_files=lambda: _verify_problems(registry, version),
            reinspect=lambda: _reinspect(registry, version),
            read_file=lambda path: read_small_file(registry, version, path),
            export_to=lambda directory: export_into(registry, version, directory),
            scratch=scratch,
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
    require_stage(raw, "raw", "validated")
    rules = load_policy_from(policy)
    name = checkpoint or _default_checkpoint(raw)
    checkpoint_path = resolve_checkpoint(raw.ref, raw.manifest, name) if name else None
    checkpoint_name = _checkpoint_name(checkpoint_path) if checkpoint_path else None
    report = _passing_report(registry, raw, checkpoint_name, rules, validation_results, force, reason, actor)
    session_id = raw.manifest.run_name or raw.label or raw.artifact_name
    validated_id = f"{session_id}_{checkpoint_name or 'model'}_validated"
    config = registry.model_config(raw.ref)
    with staging(registry, "validated") as tree:
        weights_note: dict[str, Any] = {}
        if checkpoint_path is not None:
            source = tree.parent / "source" / posixpath.basename(checkpoint_path)
            source.parent.mkdir()
            export_file(registry, raw, checkpoint_path, source)
            cleaned = clean_weights(
                source, tree, scan=config.pickle_scan if config else None, allowed_globals=rules.allowed_globals
            )
            weights_note = {
                "files": list(cleaned.files),
                "parameter_count": cleaned.parameter_count,
                "stripped_keys": list(cleaned.stripped_keys),
                "safetensors": cleaned.safetensors_written or cleaned.safetensors_reason,
            }
        else:
            # No checkpoints/ to choose from: the registered directory is the model (a Hugging
            # Face folder, a PEFT adapter, a GGUF file); it goes on as it is, minus training state.
            payload = set(model_files(registry, raw))
            weights_note = {"files": copy_files(registry, raw, tree, payload.__contains__), "from": "model directory"}
        copy_config(registry, raw, tree)
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
        write_json(tree / "metadata.json", metadata)
        write_card(
            tree, raw, "validated", metrics, report, [raw.ref], session_id, f"{raw.artifact_name}@{validated_id}"
        )
        forced = force and not report.passed
        lifecycle = Lifecycle("validated", raw.ref, None, checkpoint_name, validated_id, forced)
        return register_tree(registry, tree, raw, lifecycle, metrics)


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
    require_stage(validated, "validated", "production")
    if registry.catalog.lifecycle.status(validated) in ("demoted", "deprecated"):
        raise GateFailedError(f"{validated.ref} was demoted or deprecated; promote another validated version")
    semver = check_semver(version)
    _require_new_semver(registry, validated.artifact_name, semver)
    rules = load_policy_from(policy)
    lifecycle = registry.catalog.lifecycle
    given = approved_by.strip() if approved_by and approved_by.strip() else None
    if given is not None and given not in {a.approved_by for a in lifecycle.approvals(validated)}:
        # An approval is the approver's statement about this validated version: it stands even
        # if the promotion is refused (say, for want of a second approver), as with `approve`.
        lifecycle.add_approval(validated, given, actor, f"given with the promotion to {semver}")
    approvers = _check_approvals(registry, validated, rules, actor)
    if rules.security_review and not (security_reviewed_by and security_reviewed_by.strip()):
        raise GateFailedError(
            "the policy requires a security review before production: add --security-reviewed-by NAME"
        )
    session_id = validated.manifest.run_name or validated.artifact_name
    production_id = f"{session_id}_prod_v{semver}"
    config = registry.model_config(validated.ref)
    with staging(registry, "production") as tree:
        payload = set(model_files(registry, validated))
        weights = copy_files(registry, validated, tree, lambda path: path.startswith("model.") or path in payload)
        copy_config(registry, validated, tree)
        performance = tree / "performance"
        performance.mkdir()
        bench = read_benchmarks(benchmarks) if benchmarks else _run_benchmark(registry, validated, rules)
        write_json(performance / "benchmarks.json", bench)
        loadable = [tree / path for path in weights if path.endswith((".safetensors", ".pt", ".gguf"))]
        if loadable:
            usage = measure_resource_usage(sorted(loadable, key=lambda p: not p.name.endswith(".safetensors"))[:1])
            (performance / "resource_usage.json").write_text(usage.to_json())
        else:
            # A config artifact (seed 000's schemas, service configurations) or ONNX/.bin-only
            # weights: nothing this step can load and measure.
            write_json(performance / "resource_usage.json", {"measured": False, "reason": "no loadable weights files"})
        compatible = [c.runtime for c in config.compatibility() if c.compatible] if config else []
        spec = DeploymentSpec(
            name=validated.artifact_name,
            version=semver,
            model_files=list(weights),
            runtimes=compatible,
            weights_bytes=sum((tree / path).stat().st_size for path in weights),
            deployment_config=dict(deployment_config or {}),
            pipeline_tag=_pipeline_tag(validated, config),
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
        write_json(tree / "metadata.json", metadata)
        write_changelog(registry, validated, tree, semver, approvers, actor)
        chain = [step.ref for step in reversed(lineage(registry, validated.ref))]
        card_ref = f"{validated.artifact_name}@{semver}"  # a semantic version names exactly one version
        write_card(
            tree,
            validated,
            "production",
            metrics,
            None,
            chain,
            session_id,
            card_ref,
            config.model_type if config else None,
        )
        result = register_tree(
            registry, tree, validated, Lifecycle("production", validated.ref, semver, None, production_id), metrics
        )
    if security_reviewed_by:
        registry.catalog.record_event(
            security_reviewed_by.strip(), "security-review", result.artifact_name, result.number, {"os_user": actor}
        )
    return result


def _pipeline_tag(version: VersionRecord, config: BaseModelConfig | None) -> str | None:
    from modelyard.lifecycle.model_card import pipeline_tag_for

    return pipeline_tag_for(version.manifest.task, config.model_type if config else None)


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

    with scratch_dir(registry.settings.home, "bench-") as scratch:
        directory = scratch / "artifact"
        directory.mkdir()
        export_into(registry, version, directory)
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
