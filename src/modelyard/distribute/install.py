"""One planned artifact onto one node: transfer, verify, switch, activate, check health, keep K.

The order is what makes a push safe to interrupt at any point:
1. rsync into `.modelyard/<target>/.staging/<version>` (resumable: --partial), after the node
   hardlinked there the files it already holds in another version (same SHA-256 by its records);
2. verify on the node (files present, sizes, SHA-256 computed there, the load check); only a
   version that passes is renamed into `.modelyard/<target>/<version>` with a record of it;
3. switch the serving symlink atomically; run the node's `activate`, then its `health` until it
   passes or times out; on failure switch back to the previous version (and activate it again);
4. remove versions beyond the newest K verified ones.
Each step moves the node's status in the catalog (pending, transferring, verifying, verified,
activated, failed, rolled_back), with an audit event.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.catalog.deployments import DeploymentKey
from modelyard.distribute.fleet import Node
from modelyard.distribute.plan import NodeTarget, PlannedArtifact
from modelyard.distribute.remote import Agent, AgentRefused
from modelyard.distribute.source import REPAIR_BLOCK_SIZE, SourceTrees, block_digests, read_blocks
from modelyard.distribute.transport import Completed, NodeConnection
from modelyard.errors import ModelyardError, RemoteError
from modelyard.progress import Progress

if TYPE_CHECKING:
    from modelyard.registry import Registry

HEALTH_INTERVAL = 1.0
PATCH_BATCH = 16  # blocks per repair call (64 MiB at the default block size)


class StepFailed(Exception):
    """A step failed on this node; the message is the status reason."""


@dataclass
class Outcome:
    node: str
    ref: str
    target_name: str
    status: str
    reason: str = ""
    up_to_date: bool = False
    transferred: bool = False
    repaired: list[str] = field(default_factory=list)
    rolled_back_to: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "activated"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "ref": self.ref,
            "target_name": self.target_name,
            "status": self.status,
            "reason": self.reason,
            "up_to_date": self.up_to_date,
            "transferred": self.transferred,
            "repaired": self.repaired,
            "rolled_back_to": self.rolled_back_to,
            "checks": self.checks,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class InstallOptions:
    repair: bool = False
    compress: bool = False
    keep: int | None = None  # overrides the node's keep_versions


class NodeInstaller:
    """Installs planned artifacts on one node, one after the other (bases first)."""

    def __init__(
        self,
        registry: Registry,
        node: Node,
        agent: Agent,
        connection: NodeConnection,
        *,
        catalog_lock: threading.Lock,
        options: InstallOptions,
        progress: Progress,
        actor: str,
    ) -> None:
        self.registry = registry
        self.node = node
        self.agent = agent
        self.connection = connection
        self.catalog_lock = catalog_lock
        self.options = options
        self.progress = progress
        self.actor = actor

    # -- status ---------------------------------------------------------------------------------

    def key(self, item: PlannedArtifact, target: NodeTarget) -> DeploymentKey:
        return DeploymentKey(
            node=self.node.name,
            target_name=item.target_name,
            version_dir=item.version_dir,
            artifact_name=item.artifact,
            version_number=item.number,
            serving_path=target.serving_path,
        )

    def set_status(self, item: PlannedArtifact, target: NodeTarget, status: str, **fields: Any) -> None:
        with self.catalog_lock:
            self.registry.catalog.deployments.set_status(self.key(item, target), status, actor=self.actor, **fields)

    # -- the whole install ------------------------------------------------------------------------

    def install(self, item: PlannedArtifact, trees: SourceTrees) -> Outcome:
        target = next(t for t in item.nodes if t.node == self.node.name)
        outcome = Outcome(self.node.name, item.ref, item.target_name, "pending")
        started = time.monotonic()
        files = [f.model_dump() for f in item.files]
        load = load_spec(item, target)
        try:
            self._install(item, target, trees, outcome, files, load)
        except (StepFailed, AgentRefused) as exc:
            outcome.status, outcome.reason = "failed", _reason(exc)
        except RemoteError as exc:
            outcome.status, outcome.reason = "failed", _reason(exc)
        except ModelyardError as exc:
            outcome.status, outcome.reason = "failed", exc.render()
        if outcome.status == "failed":
            self.set_status(
                item, target, "failed", reason=outcome.reason, checks=outcome.checks or None, files=files, load=load
            )
        outcome.seconds = time.monotonic() - started
        return outcome

    def _install(
        self,
        item: PlannedArtifact,
        target: NodeTarget,
        trees: SourceTrees,
        outcome: Outcome,
        files: list[dict[str, Any]],
        load: dict[str, Any],
    ) -> None:
        where: dict[str, Any] = {"root": self.node.models_root, "target": item.target_name}
        state = self.agent.call("state", **where)
        if state["serving"] == "foreign":
            raise StepFailed(f"{target.serving_path} exists and was not made by modelyard; move it away first")
        present = {v["version"]: v for v in state["versions"]}
        mine = present.get(item.version_dir)
        previous = self.registry.catalog.deployments.find(self.node.name, item.target_name, item.version_dir)
        # a copy marked failed (say, by `deploy verify`) is hashed again, whatever its mtimes say
        trusted = not self.options.repair and not (previous is not None and previous.status == "failed")
        if state["current"] == item.version_dir and mine and mine["intact"] and trusted:
            outcome.status, outcome.up_to_date = "activated", True  # the record matches: nothing to do
            if previous is None or previous.status != "activated":
                self.set_status(item, target, "activated", reason="already on the node", files=files, load=load)
            return
        self.set_status(item, target, "pending", files=files, load=load)
        if mine and mine["recorded"] and mine["intact"] and trusted:
            pass  # installed and intact: only the switch is left
        elif mine and mine["recorded"]:
            self._check_installed(item, target, outcome, files, load)
        else:
            self._transfer(item, target, trees, outcome)
            self._verify_staged(item, target, outcome, files, load)
        self._activate(item, target, outcome, previous=state["current"])

    # -- transfer and verification ---------------------------------------------------------------

    def _transfer(self, item: PlannedArtifact, target: NodeTarget, trees: SourceTrees, outcome: Outcome) -> None:
        prepared = self.agent.call(
            "prepare",
            root=self.node.models_root,
            target=item.target_name,
            version=item.version_dir,
            bytes=item.bytes,
            files=[f.model_dump() for f in item.files],
        )
        if prepared["installed"]:
            return
        self.set_status(item, target, "transferring")
        self.progress.start(f"sending {item.ref}", item.bytes)
        completed = self.connection.rsync_to(
            trees.get(item),
            prepared["staging"],
            on_bytes=self.progress.advance,
            compress=self.options.compress,
        )
        self.progress.finish()
        if not completed.ok:
            raise StepFailed(f"transfer failed: {rsync_problem(completed)} (a retry resumes)")
        outcome.transferred = True

    def _verify_staged(
        self,
        item: PlannedArtifact,
        target: NodeTarget,
        outcome: Outcome,
        files: list[dict[str, Any]],
        load: dict[str, Any],
    ) -> None:
        self.set_status(item, target, "verifying")
        self.progress.start(f"verifying {item.ref}", 0)
        result = self.agent.call(
            "verify",
            root=self.node.models_root,
            target=item.target_name,
            version=item.version_dir,
            ref=item.ref,
            files=files,
            load=load,
            where="staging",
            timeout=_verify_timeout(item.bytes),
        )
        outcome.checks = result["checks"]
        if not result["passed"]:
            raise StepFailed(f"verification failed: {failed_checks(result['checks'])} (a retry resends those files)")
        self.set_status(item, target, "verified", checks=result["checks"])

    def _check_installed(
        self,
        item: PlannedArtifact,
        target: NodeTarget,
        outcome: Outcome,
        files: list[dict[str, Any]],
        load: dict[str, Any],
    ) -> None:
        """A version already on the node whose record no longer matches (or --repair): hash it,
        and with --repair fetch only the damaged blocks of damaged files."""
        self.set_status(item, target, "verifying")
        result = self._verify_installed(item, files, load)
        if not result["passed"] and self.options.repair:
            outcome.repaired = self.repair(item, result)
            result = self._verify_installed(item, files, load)
        outcome.checks = result["checks"]
        if not result["passed"]:
            hint = "" if self.options.repair else "; run `modelyard deploy push PLAN --repair`"
            raise StepFailed(f"the copy on the node is damaged: {failed_checks(result['checks'])}{hint}")
        self.set_status(item, target, "verified", checks=result["checks"])

    def _verify_installed(self, item: PlannedArtifact, files: list[dict[str, Any]], load: dict[str, Any]) -> Any:
        return self.agent.call(
            "verify",
            root=self.node.models_root,
            target=item.target_name,
            version=item.version_dir,
            ref=item.ref,
            files=files,
            load=load,
            where="installed",
            timeout=_verify_timeout(item.bytes),
        )

    # -- partial repair ---------------------------------------------------------------------------

    def repair(self, item: PlannedArtifact, result: dict[str, Any]) -> list[str]:
        """For each file whose size or digest is wrong, or that is missing: ask the node for its
        block digests, compare with the store's, send only the differing blocks. The node checks
        the whole file's SHA-256 before the repaired file replaces the damaged one."""
        seen = result.get("files", {})
        repaired = []
        extra = result.get("extra") or []
        if extra:  # a file the version does not have: a server might read it
            self.agent.call(
                "discard", root=self.node.models_root, target=item.target_name, version=item.version_dir, paths=extra
            )
            repaired += [f"removed {path}" for path in extra]
        for planned in item.files:
            on_node = seen.get(planned.path)
            if on_node is not None and on_node["sha256"] == planned.sha256:
                continue
            if planned.path == "artifact_manifest.json":
                self._patch(item, planned.path, planned.size, planned.sha256, list(range(1)), manifest=True)
            else:
                self._repair_file(item, planned.path, planned.size, planned.sha256)
            repaired.append(planned.path)
        return repaired

    def _repair_file(self, item: PlannedArtifact, path: str, size: int, sha256: str) -> None:
        theirs = self.agent.call(
            "ranges",
            root=self.node.models_root,
            target=item.target_name,
            version=item.version_dir,
            path=path,
            block_size=REPAIR_BLOCK_SIZE,
            timeout=_verify_timeout(size),
        )
        ours = block_digests(self.registry, sha256, REPAIR_BLOCK_SIZE)
        node_blocks = theirs["blocks"]
        bad = [index for index, digest in enumerate(ours) if index >= len(node_blocks) or node_blocks[index] != digest]
        if size == 0:
            bad = []
        self._patch(item, path, size, sha256, bad)

    def _patch(
        self, item: PlannedArtifact, path: str, size: int, sha256: str, blocks: list[int], *, manifest: bool = False
    ) -> None:
        """Send the blocks in batches; each batch is one agent call that checks the whole file
        only on the last batch (earlier batches write into the same repair copy)."""
        if manifest:
            payload = self.registry.show(item.ref).manifest.to_json().encode("utf-8")
            self._send_patch(item, path, size, sha256, [0] if size else [], payload)
            return
        batches = [blocks[i : i + PATCH_BATCH] for i in range(0, len(blocks), PATCH_BATCH)] or [[]]
        for number, batch in enumerate(batches):
            payload = b"".join(read_blocks(self.registry, sha256, batch, REPAIR_BLOCK_SIZE))
            last = number == len(batches) - 1
            self._send_patch(item, path, size, sha256, batch, payload, first=number == 0, final=last)

    def _send_patch(
        self,
        item: PlannedArtifact,
        path: str,
        size: int,
        sha256: str,
        blocks: list[int],
        payload: bytes,
        *,
        first: bool = True,
        final: bool = True,
    ) -> None:
        self.agent.call(
            "patch",
            payload=payload,
            root=self.node.models_root,
            target=item.target_name,
            version=item.version_dir,
            path=path,
            size=size,
            sha256=sha256,
            blocks=blocks,
            block_size=REPAIR_BLOCK_SIZE,
            first=first,
            final=final,
            timeout=_verify_timeout(size),
        )

    # -- switch, activate, health, keep K -------------------------------------------------------

    def _activate(self, item: PlannedArtifact, target: NodeTarget, outcome: Outcome, previous: str | None) -> None:
        where: dict[str, Any] = {"root": self.node.models_root, "target": item.target_name}
        self.agent.call("switch", version=item.version_dir, **where)
        problem = self.run_hooks(hook_environment(item.ref, target.serving_path, item.target_name, item.version_dir))
        if problem is not None:
            outcome.rolled_back_to = self.switch_back(item.target_name, previous, target.serving_path)
            back = f"switched back to {previous}" if previous else "the serving path was removed (no earlier version)"
            raise StepFailed(f"{problem}; {back}")
        self.set_status(item, target, "activated", checks=outcome.checks or None)
        outcome.status = "activated"
        self.keep_newest(item.target_name, item.version_dir)

    def run_hooks(self, env: str) -> str | None:
        """Run the node's activate command, then its health command until it passes (`env` is
        hook_environment's prefix). Returns the failure, or None."""
        if self.node.activate:
            completed = self.connection.run_shell(env + self.node.activate, timeout=self.node.activate_timeout)
            if not completed.ok:
                return f"activate command failed ({_exit(completed)}): {completed.tail(400) or 'no output'}"
        if self.node.health:
            return self._wait_healthy(env + self.node.health)
        return None

    def _wait_healthy(self, script: str) -> str | None:
        deadline = time.monotonic() + self.node.health_timeout
        last: Completed | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            last = self.connection.run_shell(script, timeout=remaining)
            if last.ok:
                return None
            if last.timed_out:
                break
            time.sleep(min(HEALTH_INTERVAL, max(0.0, deadline - time.monotonic())))
        detail = ""
        if last is not None:
            output = last.tail(400)
            detail = (
                f" ({_exit(last)}): {output}"
                if output
                else f" ({_exit(last)}{'' if last.timed_out else ', no output'})"
            )
        return f"health check did not pass within {self.node.health_timeout:g} s{detail}"

    def switch_back(self, target_name: str, previous: str | None, serving_path: str) -> str | None:
        """Point the serving path at `previous` again (or remove it) and activate that."""
        where: dict[str, Any] = {"root": self.node.models_root, "target": target_name}
        self.agent.call("switch", version=previous, **where)
        if previous is not None and self.node.activate:
            row = self.registry.catalog.deployments.find(self.node.name, target_name, previous)
            env = hook_environment(row.ref if row else "", serving_path, target_name, previous)
            self.connection.run_shell(env + self.node.activate, timeout=self.node.activate_timeout)
        return previous

    def keep_newest(self, target_name: str, current: str) -> list[str]:
        """Keep the newest K verified versions (the current one among them), remove the rest."""
        keep_count = self.options.keep or self.node.keep_versions
        where: dict[str, Any] = {"root": self.node.models_root, "target": target_name}
        state = self.agent.call("state", **where)
        recorded = [v for v in state["versions"] if v["recorded"]]
        recorded.sort(key=lambda v: (v["version"] == current, v.get("verified_at") or 0), reverse=True)
        keep = [v["version"] for v in recorded[:keep_count]]
        removed: list[str] = self.agent.call("cleanup", keep=keep, keep_staging=[], **where)["removed"]
        for version in removed:
            with self.catalog_lock:
                self.registry.catalog.deployments.forget(self.node.name, target_name, version, actor=self.actor)
        return removed


def load_spec(item: PlannedArtifact, target: NodeTarget) -> dict[str, Any]:
    """What the node's load check needs: the kind, and for an adapter where its base is."""
    if item.model_type == "adapter":
        return {"kind": "peft", "base_path": target.base_path, "base_model": item.base_model}
    return {"kind": item.model_type or "files"}


def hook_environment(ref: str, serving_path: str, target_name: str, version_dir: str) -> str:
    """Variables the activate and health commands can use, as a shell prefix."""
    values = {
        "MODELYARD_REF": ref,
        "MODELYARD_SERVING_PATH": serving_path,
        "MODELYARD_TARGET_NAME": target_name,
        "MODELYARD_VERSION_DIR": version_dir,
    }
    return "".join(f"export {key}={shlex.quote(value)}; " for key, value in values.items())


def failed_checks(checks: dict[str, Any]) -> str:
    return "; ".join(f"{name}: {check['reason']}" for name, check in checks.items() if check["status"] == "failed")


def rsync_problem(completed: Completed) -> str:
    if completed.timed_out:
        return f"rsync timed out after {completed.seconds:.0f} s"
    lines = [line.strip() for line in completed.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("rsync error:")] or lines
    return f"rsync exited {completed.returncode}: {' / '.join(useful[-2:]) or 'no message'}"


def _verify_timeout(size: int) -> float:
    """Hashing on the node: at least 50 MB/s, plus a minute."""
    return 60 + size / 50e6


def _exit(completed: Completed) -> str:
    return "timed out" if completed.timed_out else f"exit {completed.returncode}"


def _reason(exc: Exception) -> str:
    return exc.render() if isinstance(exc, ModelyardError) else str(exc)
