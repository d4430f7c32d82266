"""The end-to-end demo behind `modelyard demo` (the README's first command), on this machine:

1. a learning form (seed 000 section 3) becomes a job: its artifact name, manifest preview and
   training_config_hash, as the web form shows them;
2. the built-in `tiny-classifier` trains on CPU on data it generates; the run registers itself as a
   raw artifact, and post-training quantization registers a linked `-int8` artifact (seed 000
   section 4);
3. both are validated against a policy and promoted to validated; an approver approves the int8
   model and promotes it to production (seed 003);
4. the production version goes to a small local fleet, is verified there, and the status matrix
   is printed (seed 004);
5. the user is told how to open the web UI on the result.

Run again, it finds what the first run made (no second training, no new versions) and pushes
nothing a node already holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.domain import VersionRecord
from modelyard.errors import ModelyardError, NotFoundError
from modelyard.registry import Registry

Say = Callable[[str], None]

# The learning form of the demo job: what a user fills in on the web form's page.
DEMO_FORM: dict[str, Any] = {
    "component": "vision",
    "base_model": "tiny-mlp",
    "task": "classification",
    "input_size": 16,
    "hidden_size": 64,
    "num_layers": 2,
    "embedding_dim": 32,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "optimizer": "adamw",
    "epochs": 8,
    "weight_decay": 0.01,
    "quantize": "int8",
    "checkpoint_interval": 2,
    "train_data_tags": ["synthetic-blobs"],
    "privacy_level": "none",
}
DEMO_JOB: dict[str, Any] = {
    **DEMO_FORM,
    "name": "demo-tiny-classifier",
    "run": {"kind": "builtin", "trainer": "tiny-classifier"},
    "executor": "local",
    "quantization_mode": "post-training",
    "timeout_seconds": 600,
}
# Seed 003's gates, with thresholds the built-in trainer's metrics must meet; the int8 model is
# judged on its own accuracy and on how far quantization moved its outputs.
GATES = """\
checks:
  - files_present
  - readable
  - pickles
  - manifest_complete: {fields: [base_model, task, training_config_hash, precision]}
"""
FLOAT_POLICY = GATES + '  - metric: "best_val_accuracy >= 0.8"\n'
INT8_POLICY = GATES + '  - metric: "quantized_val_accuracy >= 0.8"\n  - metric: "max_abs_diff < 0.5"\n'
NODES = ("edge-1", "edge-2")


def run_demo(registry: Registry, say: Say) -> None:
    """The whole walk; each step prints what it did and the command that does it alone."""
    demo_dir = registry.settings.home / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    float_ref, int8_ref = _train(registry, demo_dir, say)
    float_policy, int8_policy = demo_dir / "policy.yaml", demo_dir / "policy-int8.yaml"
    float_policy.write_text(FLOAT_POLICY, encoding="utf-8")
    int8_policy.write_text(INT8_POLICY, encoding="utf-8")
    validated_float = _validate_and_promote(registry, float_ref, float_policy, say, step=4)
    validated_int8 = _validate_and_promote(registry, int8_ref, int8_policy, say, step=5)
    production = _release(registry, validated_int8, say)
    _distribute(registry, production, demo_dir, say)
    say(
        f"\nDone in {time.perf_counter() - started:.0f} s. Registry home: {registry.settings.home}\n"
        f"  modelyard list --all-versions          every version, with its stage\n"
        f"  modelyard lineage {production.artifact_name}@production\n"
        f"  modelyard show {validated_float.ref}\n"
        "Open the web UI on this registry:\n"
        f"  modelyard keys create --name you --role admin --home {registry.settings.home}\n"
        f"  modelyard serve --home {registry.settings.home}\n"
        "  then open http://127.0.0.1:8600/ and log in with the key"
    )


# -- 1-3: the form, the job, its two artifacts -----------------------------------------------------


def _train(registry: Registry, demo_dir: Path, say: Say) -> tuple[str, str]:
    """Train the demo job once; later runs find the versions it registered."""
    from modelyard.training.form import preview
    from modelyard.training.jobs import load_definition

    definition = load_definition(DEMO_JOB, "the demo job")
    shown = preview(definition.form(), registry)
    say(
        "1. The learning form (seed 000 section 3): "
        + ", ".join(f"{key}={value}" for key, value in DEMO_FORM.items() if key != "train_data_tags")
        + f"\n   produces {shown.artifact_name}, training_config_hash {shown.training_config_hash[:16]}..."
        "\n   (modelyard train --builtin tiny-classifier --component vision --base-model tiny-mlp ... --dry-run)"
    )
    existing = _trained_before(registry, shown.artifact_name)
    if existing is not None:
        float_ref, int8_ref = existing
        say(f"2. already trained: {float_ref} and its int8 model {int8_ref} (remove the registry home to start over)")
        return float_ref, int8_ref
    return _run_training(registry, definition, demo_dir, say)


def _trained_before(registry: Registry, int8_name: str) -> tuple[str, str] | None:
    """The raw float and int8 versions an earlier demo run registered, if any."""
    try:
        int8 = registry.show(f"{int8_name}@1")
    except NotFoundError:
        return None
    parent = int8.manifest.derived_from
    return (parent, int8.ref) if parent else None


def _run_training(registry: Registry, definition: Any, demo_dir: Path, say: Say) -> tuple[str, str]:
    from modelyard.training.runner import run_job

    say("2. modelyard train --builtin tiny-classifier ... (the job's output, live):")

    def show_line(line: str) -> None:
        say(f"   | {line.rstrip()}")

    started = time.perf_counter()
    result = run_job(registry, definition, run_dir=demo_dir / "run", on_output=show_line)
    if not result.ok or len(result.registered) != 2:
        raise ModelyardError(f"the demo's training job {result.status}: {result.message}\n{result.log_tail}")
    float_ref, int8_ref = result.registered
    float_version, int8_version = registry.show(float_ref), registry.show(int8_ref)
    say(
        f"3. the run registered itself in {time.perf_counter() - started:.0f} s: {float_ref} "
        f"({_size(float_version)}) and, quantized after training, {int8_ref} ({_size(int8_version)}, "
        f"quantized={int8_version.manifest.quantized}, derived from {int8_version.manifest.derived_from})"
    )
    return float_ref, int8_ref


def _size(version: VersionRecord) -> str:
    weights = sum(f.size for f in version.manifest.files if f.path.startswith("checkpoints/model"))
    return f"model {weights / 1024:.1f} KiB"


# -- 4-6: validation, promotion, approval -------------------------------------------------------------


def _validate_and_promote(registry: Registry, raw_ref: str, policy: Path, say: Say, *, step: int) -> VersionRecord:
    raw = registry.show(raw_ref)
    promoted = [
        child
        for child in registry.catalog.lifecycle.children(raw)
        if child.artifact_name == raw.artifact_name and child.stage == "validated"
    ]
    if promoted:
        say(f"{step}. already validated: {promoted[-1].ref} ({promoted[-1].label})")
        return promoted[-1]
    outcome = registry.validate(raw.ref, policy=policy)
    verdict = "passed" if outcome.report.passed else "FAILED"
    say(f"{step}. modelyard validate {raw.ref} --policy {policy.name}: {len(outcome.report.checks)} gates {verdict}")
    for line in outcome.report.summary_lines():
        say(f"     {line}")
    validated = registry.promote(raw.ref, "validated", policy=policy)
    say(f"   modelyard promote {raw.ref} --to validated: {validated.ref} ({validated.label})")
    return validated


def _release(registry: Registry, validated: VersionRecord, say: Say) -> VersionRecord:
    try:
        production = registry.show(f"{validated.artifact_name}@1.0.0")
        say(f"6. already released: {production.ref} ({production.label})")
        return production
    except ModelyardError:
        pass
    registry.approve(validated.ref, approved_by="demo-approver", note="the demo's approver")
    production = registry.promote(validated.ref, "production", version="1.0.0")
    chain = " <- ".join(f"{step.ref} [{step.stage}]" for step in registry.lineage(production.ref))
    say(
        f"6. modelyard approve {validated.ref} --approved-by demo-approver\n"
        f"   modelyard promote {validated.ref} --to production --version 1.0.0: {production.ref}\n"
        f"   lineage: {chain}"
    )
    return production


# -- 7-8: a small local fleet ---------------------------------------------------------------------------


def _distribute(registry: Registry, production: VersionRecord, demo_dir: Path, say: Say) -> None:
    """Seed 004 on this machine: two local nodes, a plan, a push, verification, the status matrix."""
    fleet_file = demo_dir / "fleet.yaml"
    nodes = "".join(
        f"  - name: {node}\n"
        "    host: local\n"
        "    node_type: inference\n"
        f"    models_root: {demo_dir / 'fleet' / node}\n"
        '    health: test -f "$MODELYARD_SERVING_PATH/artifact_manifest.json"\n'
        for node in NODES
    )
    fleet_file.write_text(f"nodes:\n{nodes}", encoding="utf-8")
    fleet = registry.fleet(fleet_file)
    name = production.artifact_name
    plan = registry.plan_deployment([f"{production.ref}={','.join(NODES)}"], fleet=fleet)
    item = plan.artifacts[0]
    say(
        f"7. modelyard deploy plan {name}@production={','.join(NODES)} --fleet {fleet_file} --out plan.json\n"
        f"   {item.ref}: {len(item.files)} files, {item.bytes} bytes ({item.profile} profile)\n"
        "   modelyard deploy push plan.json"
    )
    for outcome in registry.push(plan).outcomes:
        state = "up to date" if outcome.up_to_date else outcome.status
        say(f"     {outcome.node:<8} {outcome.ref} {state}" + (f": {outcome.reason}" if outcome.reason else ""))
    drift = registry.verify_deployments(fleet, name=name)
    say(f"   modelyard deploy verify {name}: " + ", ".join(f"{f.node} {f.state}" for f in drift.findings))
    say("8. modelyard deploy status")
    for line in _status_lines(registry, name):
        say(f"     {line}")


def _status_lines(registry: Registry, name: str) -> list[str]:
    from modelyard.distribute.report import current_deployments

    current = current_deployments(registry.deployments(name=name))
    nodes = sorted({row.node for row in current})
    targets = sorted({row.target_name for row in current})
    cells = {(row.target_name, row.node): f"{row.status} {row.ref.rsplit('@', 1)[1]}" for row in current}
    rows = [["ARTIFACT", *nodes], *([t, *(cells.get((t, n), "-") for n in nodes)] for t in targets)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
