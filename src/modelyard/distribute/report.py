"""Seed 004 as documents: the distribution manifest a plan renders to, and the status checklist
`deploy status --markdown` renders with its boxes ticked from real results."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelyard.catalog.deployments import Deployment
from modelyard.distribute.plan import DistributionPlan, PlannedArtifact
from modelyard.errors import ModelyardError

if TYPE_CHECKING:
    from modelyard.registry import Registry


def plan_markdown(plan: DistributionPlan, rsync_template: str) -> str:
    lines = [
        "# Model Distribution Manifest",
        f"# Generated: {plan.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"# Registry: {plan.registry} (planned by {plan.created_by})",
        f"# Fleet: {plan.fleet_file or '(inline)'}; required stage: {plan.require_stage}",
        "",
        "## Models Ready for Distribution",
        "",
    ]
    for item in plan.artifacts:
        nodes = ", ".join(f"{t.node} ({t.address})" for t in item.nodes)
        lines.append(f"### {item.target_name} → {nodes}")
        lines += _artifact_lines(item)
        for target in item.nodes:
            lines.append(f"  - Target: `{target.node}:{target.serving_path}/`")
            if target.base_path:
                lines.append(f"    - Base on {target.node}: `{target.base_path}` (from the {target.base_source})")
        lines.append("")
    lines += ["## Files to Transfer (per model)", ""]
    for item in plan.artifacts:
        left = f"; {item.left_out} training files left behind" if item.left_out else ""
        lines.append(f"### {item.ref} ({item.profile} profile{left})")
        lines.append("| File | Size | SHA-256 |")
        lines.append("|---|---:|---|")
        lines += [f"| {f.path} | {f.size} | `{f.sha256}` |" for f in item.files]
        lines.append("")
    lines += [
        "## Transfer Method",
        "Command template (run by `modelyard deploy push`, into a staging directory, resuming partial files):",
        "```bash",
        rsync_template,
        "```",
        "",
        "## Verification",
        "After each transfer, on the node:",
        "1. All files present",
        "2. File sizes match source",
        "3. SHA-256 of every file matches (computed on the node)",
        "4. Load check for the model's kind (a PEFT adapter against its base model's config; loaded with peft "
        "where peft and torch are installed)",
        "",
        "## Status",
    ]
    lines += [f"- [ ] {item.ref} → {', '.join(t.node for t in item.nodes)}" for item in plan.artifacts]
    lines += ["- [ ] All checksums verified", "- [ ] All nodes tested", ""]
    return "\n".join(lines)


def _artifact_lines(item: PlannedArtifact) -> list[str]:
    version = f" {item.semantic_version}" if item.semantic_version else ""
    lines = [f"- **{item.ref}** ({item.stage}{version}, {item.model_type or 'files'}; requested as {item.requested})"]
    lines.append(f"  - Source: registry version {item.ref} ({len(item.files)} files, {_size(item.bytes)})")
    if item.base_model:
        shipped = f", shipped first as {item.base_ref}" if item.base_ref else ""
        lines.append(f"  - Base: {item.base_model}{shipped}")
    if item.training_data:
        lines.append(f"  - Training: {', '.join(item.training_data)}")
    if item.metrics:
        lines.append(f"  - Quality: {_metrics(item.metrics)}")
    if item.license:
        lines.append(f"  - License: {item.license}")
    return lines


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in list(metrics.items())[:6] if not isinstance(value, dict | list))


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# -- status ---------------------------------------------------------------------------------------


def current_deployments(rows: Iterable[Deployment]) -> list[Deployment]:
    """For each (node, serving path): the activated version if there is one, else the newest row
    (a first push still transferring, or one that failed)."""
    best: dict[tuple[str, str], Deployment] = {}
    for row in rows:
        key = (row.node, row.target_name)
        seen = best.get(key)
        if seen is None or _rank(row) > _rank(seen):
            best[key] = row
    return sorted(best.values(), key=lambda row: (row.target_name, row.node))


def _rank(row: Deployment) -> tuple[int, datetime]:
    """In progress or failed newer than the active version shows; else the active one."""
    if row.status in ("pending", "transferring", "verifying", "verified", "failed"):
        return (1, row.updated_at)
    if row.status == "activated":
        return (1, row.activated_at or row.updated_at)
    return (0, row.updated_at)


def status_matrix(rows: list[Deployment]) -> dict[str, Any]:
    """{"nodes": [...], "artifacts": [{"target_name", "cells": {node: {...}}}]} for `deploy status`."""
    current = current_deployments(rows)
    nodes = sorted({row.node for row in current})
    artifacts: dict[str, dict[str, Any]] = {}
    for row in current:
        entry = artifacts.setdefault(row.target_name, {"target_name": row.target_name, "cells": {}})
        active = next(
            (
                r
                for r in sorted(rows, key=lambda r: r.activated_at or r.updated_at, reverse=True)
                if r.node == row.node and r.target_name == row.target_name and r.status == "activated"
            ),
            None,
        )
        entry["cells"][row.node] = row.to_dict() | {"serving": active.ref if active else None}
    return {"nodes": nodes, "artifacts": list(artifacts.values())}


def status_markdown(registry: Registry, rows: list[Deployment]) -> str:
    current = current_deployments(rows)
    lines = [
        "# Model Distribution Status",
        f"# Generated: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"# Registry: {registry.settings.home}",
        "",
        "## Models",
        "",
    ]
    for row in current:
        lines.append(f"### {row.target_name} → {row.node}")
        lines.append(f"- **{row.ref}** at `{row.node}:{row.serving_path}/`: {row.status}")
        if row.reason:
            lines.append(f"  - Reason: {row.reason}")
        lines += _version_lines(registry, row.ref)
        for name, check in row.checks.items():
            lines.append(
                f"  - [{'x' if check['status'] == 'passed' else ' '}] {name}: {check['status']}"
                + (f" ({check['reason']})" if check.get("reason") else "")
            )
        lines.append("")
    lines.append("## Status")
    by_target: dict[str, list[Deployment]] = {}
    for row in current:
        by_target.setdefault(row.target_name, []).append(row)
    for target, target_rows in by_target.items():
        done = all(row.status == "activated" for row in target_rows)
        nodes = ", ".join(f"{row.node} ({row.status})" for row in target_rows)
        lines.append(f"- [{'x' if done else ' '}] {target} → {nodes}")
    checksums = bool(current) and all(_passed(row, "sha256") for row in current)
    # a load check that was skipped did not test the node: the box stays empty
    tested = bool(current) and all(row.status == "activated" and _passed(row, "load") for row in current)
    lines.append(f"- [{'x' if checksums else ' '}] All checksums verified")
    lines.append(f"- [{'x' if tested else ' '}] All nodes tested")
    lines.append("")
    return "\n".join(lines)


def _passed(row: Deployment, check: str) -> bool:
    return bool(row.checks.get(check, {}).get("status") == "passed")


def _version_lines(registry: Registry, ref: str) -> list[str]:
    try:
        manifest = registry.show(ref).manifest
    except ModelyardError:  # a version pruned since: the deployment row still says what it was
        return []
    lines = []
    if manifest.base_model:
        lines.append(f"  - Base: {manifest.base_model}")
    if manifest.train_data_tags:
        lines.append(f"  - Training: {', '.join(manifest.train_data_tags)}")
    if manifest.metrics:
        lines.append(f"  - Quality: {_metrics(dict(manifest.metrics))}")
    return lines
