"""`fleet check`: can modelyard reach each node, and what will it use there?"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelyard.distribute.fleet import Fleet, Node
from modelyard.distribute.remote import open_agent
from modelyard.distribute.transport import NodeConnection
from modelyard.errors import RemoteError


@dataclass
class NodeCheck:
    node: str
    address: str
    reachable: bool
    reason: str = ""
    python: str | None = None
    hasher: str | None = None
    free_bytes: int | None = None
    tools: dict[str, str | None] = field(default_factory=dict)
    models_root: str = ""
    root_exists: bool | None = None
    root_writable: bool | None = None
    peft: bool | None = None
    base_models: dict[str, bool] = field(default_factory=dict)  # declared base -> present

    @property
    def ok(self) -> bool:
        return self.reachable and not self.problems()

    def problems(self) -> list[str]:
        found = []
        if self.reachable and not self.tools.get("rsync") and self.address != "local":
            found.append("no rsync on the node")
        if self.reachable and self.root_writable is False:
            found.append(f"{self.models_root} is not writable (or its nearest existing parent)")
        if self.reachable and self.python is None and not self.tools.get("openssl"):
            found.append("neither python3 >= 3.11 nor openssl: nothing to hash with")
        found += [f"base model {name} missing" for name, present in self.base_models.items() if not present]
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "address": self.address,
            "reachable": self.reachable,
            "ok": self.ok,
            "reason": self.reason,
            "problems": self.problems(),
            "python": self.python,
            "hasher": self.hasher,
            "free_bytes": self.free_bytes,
            "tools": self.tools,
            "models_root": self.models_root,
            "root_exists": self.root_exists,
            "root_writable": self.root_writable,
            "peft": self.peft,
            "base_models": self.base_models,
        }


def check_fleet(fleet: Fleet, nodes: list[str] | None = None, parallel: int = 8) -> list[NodeCheck]:
    chosen = [fleet.node(name) for name in nodes] if nodes else list(fleet.nodes)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(chosen)))) as pool:
        return list(pool.map(check_node, chosen))


def check_node(node: Node) -> NodeCheck:
    address = "local" if node.is_local else f"{node.address()}:{node.port}"
    try:
        agent, probe = open_agent(NodeConnection(node))
        if node.base_models:
            probe = agent.call("probe", root=node.models_root, paths=list(node.base_models.values())) | {
                "python": probe.get("python")
            }
    except RemoteError as exc:
        return NodeCheck(node.name, address, False, exc.render(), models_root=node.models_root)
    paths = probe.get("paths") or {}
    return NodeCheck(
        node=node.name,
        address=address,
        reachable=True,
        python=probe.get("python"),
        hasher=agent.hasher if probe.get("python") is None else probe.get("hasher"),
        free_bytes=probe.get("free_bytes"),
        tools=probe.get("tools") or {},
        models_root=node.models_root,
        root_exists=probe.get("root_exists"),
        root_writable=probe.get("root_writable"),
        peft=probe.get("peft"),
        base_models={name: bool(paths.get(path)) for name, path in node.base_models.items()},
    )
