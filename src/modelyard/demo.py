"""The end-to-end walk behind `modelyard demo`: make a small training output, register it, show it.

The generated run looks like seed 003's raw example (checkpoints, metrics, config, log, README)
and carries the `artifact_manifest.json` a training script writes (seed 000's first example:
`vision-vit-base16-embed-v1`). Its content is fixed, so running the demo again finds the same
version instead of making a new one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from modelyard.digest import training_config_hash
from modelyard.domain import VersionRecord
from modelyard.names import MANIFEST_FILENAME
from modelyard.registry import Registry

DEMO_NAME = "vision-vit-base16-embed-v1"
TRAINING_CONFIG = {"batch_size": 256, "epochs": 10, "learning_rate": 1e-4, "optimizer": "adamw"}


def make_demo_run(directory: Path) -> Path:
    """Write the demo training output (idempotent: files are written once)."""
    from safetensors.numpy import save_file

    run = directory / "v5_5_20251124"
    if (run / MANIFEST_FILENAME).exists():
        return run
    staging = directory / ".v5_5_20251124.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "checkpoints").mkdir(parents=True)
    (staging / "metrics").mkdir()
    rng = np.random.default_rng(20251124)
    for index, name in enumerate(("epoch_5", "epoch_10")):
        # timm's ViT-B/16 names and shapes (one block): inspection recognises the architecture.
        tensors = {
            "cls_token": rng.standard_normal((1, 1, 768)).astype(np.float16),
            "pos_embed": rng.standard_normal((1, 197, 768)).astype(np.float16),
            "patch_embed.proj.weight": rng.standard_normal((768, 3, 16, 16)).astype(np.float16),
            "patch_embed.proj.bias": np.zeros(768, dtype=np.float16),
            "blocks.0.norm1.weight": np.ones(768, dtype=np.float16),
        }
        save_file(
            tensors, str(staging / "checkpoints" / f"{name}.safetensors"), metadata={"epoch": str(5 * (index + 1))}
        )
    shutil.copy(staging / "checkpoints" / "epoch_10.safetensors", staging / "checkpoints" / "best.safetensors")
    shutil.copy(staging / "checkpoints" / "epoch_10.safetensors", staging / "checkpoints" / "latest.safetensors")
    (staging / "checkpoints" / "manifest.json").write_text(json.dumps({"best": "epoch_10", "latest": "epoch_10"}))
    (staging / "metrics" / "training_metrics.json").write_text(
        json.dumps({"best_val_loss": 0.38, "coverage": 0.99, "loss": [0.91, 0.64, 0.47, 0.41, 0.38]}, indent=2)
    )
    (staging / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in TRAINING_CONFIG.items()))
    (staging / "training.log").write_text("".join(f"epoch {e} loss {0.9 - e * 0.05:.2f}\n" for e in range(1, 11)))
    (staging / "README.md").write_text("# ViT-base/16 embedding, demo run\n")
    manifest = {
        "artifact_name": DEMO_NAME,
        "component": "vision",
        "base_model": "vit-base16",
        "task": "embed",
        "embedding_dim": 768,
        "precision": "fp16",
        "quantized": False,
        "training_config": TRAINING_CONFIG,
        "training_config_hash": training_config_hash(TRAINING_CONFIG),
        "train_data_tags": ["imagenet-1k"],
        "license": "apache-2.0",
        "node_type": "encoder",
        "privacy_level": "none",
        "input_spec": {"input_size": [224, 224]},
        "model_config": {"hidden_size": 768, "num_layers": 12, "num_heads": 12},
        "checkpoint_policy": {"checkpoint_interval": 5},
        "metrics": {"best_val_loss": 0.38, "coverage": 0.99},
    }
    (staging / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2))
    # The run "finished" at a fixed time, so its created_at and name are the same on every machine.
    finished = datetime(2025, 11, 24, 10, 30, tzinfo=UTC).timestamp()
    for path in staging.rglob("*"):
        os.utime(path, (finished, finished))
    staging.rename(run)
    return run


def run_demo(registry: Registry, say: Callable[[str], None]) -> None:
    """Register the demo run twice (the second finds the same version), show, verify, export."""
    demo_dir = registry.settings.home / "demo"
    run = make_demo_run(demo_dir)
    say(f"1. A training output like seed 003's raw example, with the manifest of seed 000: {run}")

    started = time.perf_counter()
    first = registry.register(run)
    verb = "registered" if first.created else "already registered"
    say(
        f"2. modelyard register {run}\n   {verb} {first.version.ref}: {first.files_total} files, "
        f"{first.bytes_total} bytes, {first.bytes_added} new ({time.perf_counter() - started:.2f} s)"
    )
    started = time.perf_counter()
    again = registry.register(run)
    say(
        f"3. register again: {again.version.ref}, created={again.created}, files read={again.files_read} "
        f"({time.perf_counter() - started:.3f} s; unchanged files are known by their stat)"
    )
    version = registry.show(first.version.ref)
    manifest = version.manifest
    say(
        f"4. modelyard show {version.ref}\n   base_model={manifest.base_model} task={manifest.task} "
        f"embedding_dim={manifest.embedding_dim} precision={manifest.precision} node_type={manifest.node_type}\n"
        f"   training_config_hash={manifest.training_config_hash}"
    )
    for entry in manifest.files:
        say(f"     {entry.size:>9}  {entry.sha256[:16]}  {entry.path}")
    config = registry.model_config(version.ref)
    if config is not None:
        runtimes = ", ".join(c.runtime for c in config.compatibility() if c.compatible) or "none"
        parameters = f"{config.parameter_count:,}" if config.parameter_count is not None else "unknown"
        say(
            f"   model entry (read from the headers, weights never loaded): {config.model_type} ({config.task}), "
            f"{parameters} parameters ({config.dtype}), pickles: {config.pickle_scan.verdict}; "
            f"runtimes: {runtimes}"
        )
    report = registry.verify(DEMO_NAME)
    say(f"5. modelyard verify {DEMO_NAME}: {'ok' if report.ok else 'PROBLEMS'}, {report.blobs_checked} blobs re-hashed")
    zip_path = demo_dir / f"{DEMO_NAME}-{version.number}.zip"
    zip_path.unlink(missing_ok=True)
    registry.export(version.ref, zip_path=zip_path)
    say(f"6. modelyard export {version.ref} --zip {zip_path}  (the upload ZIP of seed 000, manifest inside)")
    production = _lifecycle(registry, version.ref, demo_dir, say)
    _distribute(registry, production.ref, demo_dir, say)
    say(
        f"\nRegistry home: {registry.settings.home}\n"
        f"Next: modelyard list --all-versions; modelyard lineage {DEMO_NAME}@production; "
        f"modelyard audit {DEMO_NAME}; modelyard register YOUR_RUN_DIR --link"
    )


def _lifecycle(registry: Registry, raw_ref: str, demo_dir: Path, say: Callable[[str], None]) -> VersionRecord:
    """Seed 003: validate the best checkpoint, promote it, approve it, release 1.0.0, lay it out.
    Done once: a second run finds the versions the first one made."""
    from modelyard.errors import ModelyardError

    raw = registry.show(raw_ref)
    promoted = registry.catalog.lifecycle.children(raw)
    if promoted:
        validated = promoted[-1]
        say(f"7. already validated: {validated.ref} ({validated.label})")
    else:
        outcome = registry.validate(raw.ref, checkpoint="best")
        verdict = "passed" if outcome.report.passed else "FAILED"
        say(f"7. modelyard validate {raw.ref} --checkpoint best: {len(outcome.report.checks)} gates {verdict}")
        validated = registry.promote(raw.ref, "validated", checkpoint="best")
        say(f"   modelyard promote {raw.ref} --to validated: {validated.ref} ({validated.label})")
    try:
        production = registry.show(f"{DEMO_NAME}@1.0.0")
        say(f"8. already released: {production.ref} ({production.label})")
    except ModelyardError:
        registry.approve(validated.ref, approved_by="demo-approver", note="the demo approves its own run")
        production = registry.promote(validated.ref, "production", version="1.0.0")
        say(
            f"8. modelyard approve {validated.ref} --approved-by demo-approver; "
            f"modelyard promote {validated.ref} --to production --version 1.0.0: {production.ref} ({production.label})"
        )
    chain = " <- ".join(f"{step.ref} [{step.stage}]" for step in registry.lineage(production.ref))
    say(f"   lineage: {chain}")
    layout = registry.layout(demo_dir / "artifacts", [DEMO_NAME])
    say(
        f"9. modelyard layout {demo_dir / 'artifacts'}: raw/, validated/ and production/ as seed 003 draws them "
        f"({len(layout.written)} written, {layout.unchanged} unchanged)"
    )
    return production


def _distribute(registry: Registry, production_ref: str, demo_dir: Path, say: Callable[[str], None]) -> None:
    """Seed 004 on this machine: a fleet of one local node, a plan, a push, the node's status."""
    from modelyard.distribute.report import current_deployments

    fleet_file = demo_dir / "fleet.yaml"
    models_root = demo_dir / "fleet" / "models"
    fleet_file.write_text(
        "nodes:\n"
        "  - name: demo-node\n"
        "    host: local\n"
        "    node_type: inference\n"
        f"    models_root: {models_root}\n"
        '    health: test -f "$MODELYARD_SERVING_PATH/artifact_manifest.json"\n',
        encoding="utf-8",
    )
    fleet = registry.fleet(fleet_file)
    plan = registry.plan_deployment([f"{production_ref}=demo-node"], fleet=fleet)
    item = plan.artifacts[0]
    say(
        f"10. modelyard deploy plan {DEMO_NAME}@production=demo-node --fleet {fleet_file} --out plan.json\n"
        f"    {item.ref}: {len(item.files)} files ({item.profile} profile; "
        f"{item.left_out} files a server does not read stay behind)"
    )
    report = registry.push(plan)
    for outcome in report.outcomes:
        state = "up to date" if outcome.up_to_date else outcome.status
        say(
            f"    modelyard deploy push plan.json: {outcome.node} {outcome.ref} {state} "
            f"at {models_root / item.target_name}"
        )
    for row in current_deployments(registry.deployments(name=DEMO_NAME)):
        checks = ", ".join(f"{name} {check['status']}" for name, check in row.checks.items())
        say(f"    modelyard deploy status: {row.node} {row.ref} {row.status} ({checks})")
