"""`deploy rollback NAME --node N`: serve the previous verified version still on the node.

The previous version is the one activated before the current one (the catalog remembers when
each was activated), among the versions the node still holds with a verification record. The
switch is the same atomic symlink rename as a push, followed by the node's activate and health
commands; when those fail the node is switched forward again and the rollback reported failed.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelyard.catalog.deployments import Deployment, DeploymentKey
from modelyard.distribute.fleet import Fleet, Node
from modelyard.distribute.install import InstallOptions, NodeInstaller, Outcome, hook_environment
from modelyard.distribute.remote import open_agent
from modelyard.distribute.transport import NodeConnection
from modelyard.errors import ConflictError, NotFoundError
from modelyard.progress import NullProgress

if TYPE_CHECKING:
    from modelyard.registry import Registry

_EPOCH = datetime.min.replace(tzinfo=UTC)


def rollback(registry: Registry, fleet: Fleet, name: str, node_name: str) -> Outcome:
    node = fleet.node(node_name)
    rows = registry.catalog.deployments.deployments(node=node_name, name=name)
    if not rows:
        raise NotFoundError(f"node {node_name} has no deployment of {name!r} (see `modelyard deploy status`)")
    target_names = sorted({row.target_name for row in rows})
    if len(target_names) > 1:
        raise ConflictError(
            f"{name!r} is served at several paths on {node_name} ({', '.join(target_names)}); name the target"
        )
    with NodeConnection(node) as connection:
        return _rollback(registry, node, connection, rows, target_names[0])


def _rollback(
    registry: Registry, node: Node, connection: NodeConnection, rows: list[Deployment], target_name: str
) -> Outcome:
    node_name = node.name
    agent, _ = open_agent(connection)
    state = agent.call("state", root=node.models_root, target=target_name)
    current = state["current"]
    by_dir = {row.version_dir: row for row in rows}
    candidates = [v for v in state["versions"] if v["recorded"] and v["version"] != current]
    if not candidates:
        raise NotFoundError(
            f"node {node_name} holds no earlier verified version of {target_name} to roll back to "
            f"(it keeps the last {node.keep_versions}; see `modelyard deploy status`)"
        )
    candidates.sort(key=lambda v: _last_active(by_dir.get(v["version"]), v), reverse=True)
    chosen = candidates[0]["version"]
    restored = by_dir.get(chosen)
    if restored is None:
        raise NotFoundError(f"the catalog has no record of version {chosen} on {node_name}; push it again")
    actor = registry._actor()
    installer = NodeInstaller(
        registry,
        node,
        agent,
        connection,
        catalog_lock=threading.Lock(),
        options=InstallOptions(),
        progress=NullProgress(),
        actor=actor,
    )
    outcome = Outcome(node_name, restored.ref, target_name, "failed")
    agent.call("switch", root=node.models_root, target=target_name, version=chosen)
    env = hook_environment(restored.ref, restored.serving_path, target_name, chosen)
    problem = installer.run_hooks(env)
    if problem is not None:
        installer.switch_back(target_name, current, restored.serving_path)
        outcome.reason = f"{problem}; switched forward again to {current}"
        _set(registry, restored, "failed", actor, outcome.reason)
        return outcome
    replaced = by_dir.get(current) if current is not None else None
    if replaced is not None:
        _set(registry, replaced, "rolled_back", actor, f"rolled back to {restored.ref}")
    _set(registry, restored, "activated", actor, f"rollback from {replaced.ref if replaced else current}")
    outcome.status, outcome.rolled_back_to = "activated", chosen
    return outcome


def _last_active(row: Deployment | None, version: dict[str, Any]) -> tuple[datetime, float]:
    activated = row.activated_at if row is not None and row.activated_at is not None else _EPOCH
    return activated, float(version.get("verified_at") or 0)


def _set(registry: Registry, row: Deployment, status: str, actor: str, reason: str) -> None:
    key = DeploymentKey(
        row.node, row.target_name, row.version_dir, row.artifact_name, row.version_number, row.serving_path
    )
    registry.catalog.deployments.set_status(key, status, actor=actor, reason=reason)
