"""`deploy push`: execute a distribution plan on its nodes, several at a time, canaries first.

Each node gets its artifacts in plan order (bases before the adapters on them) from one worker
thread; nodes run in parallel up to `parallel`. A node that cannot be reached, or fails a step,
is marked failed with the reason and the others carry on. With `canary=N` the first N nodes go
alone, and the rest only when every canary ends activated and healthy.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.catalog.deployments import DeploymentKey
from modelyard.distribute.fleet import Node
from modelyard.distribute.install import InstallOptions, NodeInstaller, Outcome
from modelyard.distribute.plan import DistributionPlan, PlannedArtifact
from modelyard.distribute.remote import open_agent
from modelyard.distribute.source import SourceTrees, source_trees
from modelyard.distribute.transport import NodeConnection
from modelyard.errors import InvalidInputError, RemoteError
from modelyard.progress import NullBoard, ProgressBoard

if TYPE_CHECKING:
    from modelyard.registry import Registry


@dataclass
class PushOptions(InstallOptions):
    parallel: int = 4
    canary: int = 0
    nodes: list[str] | None = None  # only these nodes of the plan


@dataclass
class PushReport:
    outcomes: list[Outcome] = field(default_factory=list)
    held_back: list[Outcome] = field(default_factory=list)  # nodes a failed canary kept back
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.held_back and all(outcome.ok for outcome in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
            "held_back": [outcome.to_dict() for outcome in self.held_back],
        }


def push(
    registry: Registry,
    plan: DistributionPlan,
    options: PushOptions | None = None,
    board: ProgressBoard | None = None,
) -> PushReport:
    options = options or PushOptions()
    board = board or NullBoard()
    if options.parallel < 1:
        raise InvalidInputError("--parallel must be at least 1", field="--parallel")
    nodes = _plan_nodes(plan, options.nodes)
    if options.canary < 0 or (options.canary >= len(nodes) and options.canary > 0):
        raise InvalidInputError(
            f"--canary {options.canary} leaves no other node to continue to ({len(nodes)} in the plan)",
            field="--canary",
        )
    started = time.monotonic()
    report = PushReport()
    pusher = _Pusher(registry, plan, options, board)
    with source_trees(registry) as trees:
        canaries, rest = nodes[: options.canary], nodes[options.canary :]
        if canaries:
            report.outcomes += pusher.run(canaries, trees)
            failed = sorted({o.node for o in report.outcomes if not o.ok})
            if failed:
                report.held_back = pusher.hold_back(rest, f"held back: canary {', '.join(failed)} failed")
                report.seconds = time.monotonic() - started
                return report
        report.outcomes += pusher.run(rest, trees)
    report.seconds = time.monotonic() - started
    return report


def _plan_nodes(plan: DistributionPlan, only: list[str] | None) -> list[Node]:
    """The plan's nodes in fleet order (canaries are the first N of them)."""
    named = {target.node for item in plan.artifacts for target in item.nodes}
    if only:
        unknown = sorted(set(only) - named)
        if unknown:
            raise InvalidInputError(f"the plan sends nothing to {', '.join(unknown)}", field="--node")
        named &= set(only)
    return [node for node in plan.fleet.nodes if node.name in named]


class _Pusher:
    def __init__(self, registry: Registry, plan: DistributionPlan, options: PushOptions, board: ProgressBoard) -> None:
        self.registry = registry
        self.plan = plan
        self.options = options
        self.board = board
        self.catalog_lock = threading.Lock()
        self.actor = registry._actor()

    def items_for(self, node: Node) -> list[PlannedArtifact]:
        return [item for item in self.plan.artifacts if any(t.node == node.name for t in item.nodes)]

    def run(self, nodes: list[Node], trees: SourceTrees) -> list[Outcome]:
        if not nodes:
            return []
        with ThreadPoolExecutor(max_workers=min(self.options.parallel, len(nodes))) as pool:
            results = list(pool.map(lambda node: self.push_node(node, trees), nodes))
        return [outcome for node_outcomes in results for outcome in node_outcomes]

    def push_node(self, node: Node, trees: SourceTrees) -> list[Outcome]:
        items = self.items_for(node)
        with NodeConnection(node) as connection:
            return self._push_node(node, connection, items, trees)

    def _push_node(
        self, node: Node, connection: NodeConnection, items: list[PlannedArtifact], trees: SourceTrees
    ) -> list[Outcome]:
        self.board.note(node.name, "connecting")
        try:
            agent, probe = open_agent(connection)
            missing = [tool for tool in ("rsync",) if not probe["tools"].get(tool)]
            if missing and not node.is_local:
                raise RemoteError(f"node {node.name} has no {', '.join(missing)}: install it there")
        except RemoteError as exc:
            self.board.note(node.name, "unreachable")
            return [self.fail_untouched(node, item, exc.render()) for item in items]
        installer = NodeInstaller(
            self.registry,
            node,
            agent,
            connection,
            catalog_lock=self.catalog_lock,
            options=self.options,
            progress=self.board.bar(node.name),
            actor=self.actor,
        )
        outcomes: list[Outcome] = []
        for item in items:
            failed_base = next(
                (o for o in outcomes if not o.ok and item.base_ref is not None and o.ref == item.base_ref), None
            )
            if failed_base is not None:
                outcomes.append(self.fail_untouched(node, item, f"its base {item.base_ref} failed on this node"))
                continue
            self.board.note(node.name, item.ref)
            outcome = installer.install(item, trees)
            self.board.note(node.name, outcome.status if outcome.ok else f"failed: {outcome.reason[:60]}")
            outcomes.append(outcome)
        return outcomes

    def fail_untouched(self, node: Node, item: PlannedArtifact, reason: str) -> Outcome:
        self._record(node, item, "failed", reason)
        return Outcome(node.name, item.ref, item.target_name, "failed", reason)

    def hold_back(self, nodes: list[Node], reason: str) -> list[Outcome]:
        held = []
        for node in nodes:
            for item in self.items_for(node):
                self._record(node, item, "pending", reason)
                held.append(Outcome(node.name, item.ref, item.target_name, "pending", reason))
        return held

    def _record(self, node: Node, item: PlannedArtifact, status: str, reason: str) -> None:
        target = next(t for t in item.nodes if t.node == node.name)
        key = DeploymentKey(
            node.name, item.target_name, item.version_dir, item.artifact, item.number, target.serving_path
        )
        with self.catalog_lock:
            self.registry.catalog.deployments.set_status(
                key, status, actor=self.actor, reason=reason, files=[f.model_dump() for f in item.files]
            )
