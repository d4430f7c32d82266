"""Lineage (seed 003's traceability): every version back to its training session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelyard.domain import VersionRecord
    from modelyard.registry import Registry


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
