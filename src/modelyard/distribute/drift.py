"""`deploy verify`: re-hash what every node serves and report what drifted.

For each active deployment the node hashes every file of the version its serving path points at
(computed there, compared with the registry's digests), checks the serving symlink still points
at that version, and says what changed since its last verification: files edited, deleted or
added. A drifted deployment is marked failed with the reason; `deploy push PLAN --repair` fixes
it by fetching only the damaged blocks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.catalog.deployments import Deployment, DeploymentKey
from modelyard.distribute.fleet import Fleet, Node
from modelyard.distribute.install import failed_checks
from modelyard.distribute.remote import open_agent
from modelyard.distribute.transport import NodeConnection
from modelyard.errors import NotFoundError, RemoteError

if TYPE_CHECKING:
    from modelyard.registry import Registry


@dataclass
class DriftFinding:
    node: str
    ref: str
    target_name: str
    serving_path: str
    state: str  # ok, drifted, unreachable, skipped (a node that pulls)
    reason: str = ""
    changes: dict[str, list[str]] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "ref": self.ref,
            "target_name": self.target_name,
            "serving_path": self.serving_path,
            "state": self.state,
            "reason": self.reason,
            "changes": self.changes,
            "checks": self.checks,
        }


@dataclass
class DriftReport:
    findings: list[DriftFinding]

    @property
    def ok(self) -> bool:
        return all(finding.state in ("ok", "skipped") for finding in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [finding.to_dict() for finding in self.findings]}


def verify_fleet(
    registry: Registry,
    fleet: Fleet,
    *,
    nodes: list[str] | None = None,
    name: str | None = None,
    parallel: int = 4,
) -> DriftReport:
    active = [
        row
        for row in registry.catalog.deployments.deployments(name=name)
        if row.status == "activated" or (row.status == "failed" and row.activated_at is not None)
    ]
    active = _current_per_path(active)
    if nodes:
        active = [row for row in active if row.node in nodes]
    if not active:
        raise NotFoundError("no activated deployment to verify (see `modelyard deploy status`)")
    by_node: dict[str, list[Deployment]] = {}
    for row in active:
        by_node.setdefault(row.node, []).append(row)
    actor = registry._actor()

    known = {node.name for node in fleet.nodes}

    def check_node(node_name: str) -> list[DriftFinding]:
        if node_name not in known:
            return [_outside_fleet(row, fleet) for row in by_node[node_name]]
        return _check_node(registry, fleet.node(node_name), by_node[node_name], actor)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(by_node)))) as pool:
        results = list(pool.map(check_node, sorted(by_node)))
    return DriftReport([finding for node_findings in results for finding in node_findings])


def _outside_fleet(row: Deployment, fleet: Fleet) -> DriftFinding:
    """A node that pulls (the registry cannot reach it: it checks itself with `pull --repair`),
    or a node of another fleet file (an error: verify with that file)."""
    if "(pull from " in row.updated_by:
        return _finding(row, "skipped", "a node that pulls: run `modelyard pull --repair` there to verify it")
    reason = f"node {row.node} is not in the fleet file {fleet.source}; pass the fleet it was deployed with"
    return _finding(row, "unreachable", reason)


def _current_per_path(rows: list[Deployment]) -> list[Deployment]:
    """The most recently activated row of each (node, serving path)."""
    newest: dict[tuple[str, str], Deployment] = {}
    for row in rows:
        key = (row.node, row.target_name)
        seen = newest.get(key)
        if seen is None or (row.activated_at or row.updated_at) > (seen.activated_at or seen.updated_at):
            newest[key] = row
    return sorted(newest.values(), key=lambda row: (row.node, row.target_name))


def _check_node(registry: Registry, node: Node, rows: list[Deployment], actor: str) -> list[DriftFinding]:
    with NodeConnection(node) as connection:
        try:
            agent, _ = open_agent(connection)
        except RemoteError as exc:
            return [_finding(row, "unreachable", exc.render()) for row in rows]
        return _check_rows(registry, agent, node, rows, actor)


def _check_rows(registry: Registry, agent: Any, node: Node, rows: list[Deployment], actor: str) -> list[DriftFinding]:
    findings = []
    for row in rows:
        try:
            findings.append(_check_one(registry, agent, node, row, actor))
        except RemoteError as exc:
            findings.append(_finding(row, "unreachable", exc.render()))
    return findings


def _check_one(registry: Registry, agent: Any, node: Node, row: Deployment, actor: str) -> DriftFinding:
    where = {"root": node.models_root, "target": row.target_name}
    state = agent.call("state", **where)
    problems = []
    if state["current"] != row.version_dir:
        problems.append(f"{row.serving_path} points at {state['current'] or 'nothing'}, not {row.version_dir}")
    result = agent.call(
        "verify",
        version=row.version_dir,
        ref=row.ref,
        files=row.files,
        load=row.load,
        where="installed",
        timeout=60 + sum(int(f.get("size", 0)) for f in row.files) / 50e6,
        **where,
    )
    changes = {k: v for k, v in (result.get("changed_since_record") or {}).items() if v}
    if not result["passed"]:
        problems.append(failed_checks(result["checks"]))
    if changes:
        problems.append("; ".join(f"{kind}: {', '.join(paths[:5])}" for kind, paths in changes.items()))
    key = DeploymentKey(
        row.node, row.target_name, row.version_dir, row.artifact_name, row.version_number, row.serving_path
    )
    if problems:
        reason = "drift: " + " | ".join(problems)
        registry.catalog.deployments.set_status(key, "failed", actor=actor, reason=reason, checks=result["checks"])
        return _finding(row, "drifted", reason, changes, result["checks"])
    if row.status != "activated":
        registry.catalog.deployments.set_status(key, "activated", actor=actor, reason="verified again: no drift")
    return _finding(row, "ok", "", {}, result["checks"])


def _finding(
    row: Deployment,
    state: str,
    reason: str,
    changes: dict[str, list[str]] | None = None,
    checks: dict[str, Any] | None = None,
) -> DriftFinding:
    return DriftFinding(
        node=row.node,
        ref=row.ref,
        target_name=row.target_name,
        serving_path=row.serving_path,
        state=state,
        reason=reason,
        changes=changes or {},
        checks=checks or {},
    )
