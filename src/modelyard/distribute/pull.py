"""`modelyard pull NAME[@REF] --to DIR --from REGISTRY`: a node fetches a version itself.

For nodes the registry cannot reach (behind NAT, a firewall that only lets them out). The node
asks the registry (over SSH, running `modelyard deploy describe` there; or a registry home on a
mounted filesystem) which files the version's deploy profile holds, fetches the blobs it lacks
with rsync (resuming partial files), and installs them exactly as a push does: into staging,
every file hashed before the version is renamed into place, then the serving symlink
`DIR/<target>` switched atomically. It reports its status back to the registry when it can.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelyard.distribute import agent as node_agent
from modelyard.distribute.fleet import Node, check_target_name
from modelyard.distribute.install import failed_checks
from modelyard.distribute.plan import PlannedArtifact, PlannedFile
from modelyard.distribute.remote import AgentRefused
from modelyard.distribute.transport import NodeConnection
from modelyard.errors import InvalidInputError, ModelyardError, RemoteError
from modelyard.names import MANIFEST_FILENAME
from modelyard.progress import NullProgress, Progress

_SSH_URL = re.compile(r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?(?P<path>/.*)$")
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+):(?P<path>/.*)$")
BLOBS = ".blobs"


class PullSource(Protocol):
    """Where a pull fetches from: over SSH or a local path (RegistrySource), or the registry's
    HTTP server (HttpSource)."""

    def describe(self, reference: str, *, require_stage: str, all_files: bool) -> dict[str, Any]: ...

    def fetch(
        self, described: dict[str, Any], blobs: list[tuple[str, int]], into: Path, progress: Progress
    ) -> None: ...

    def repair(self, described: dict[str, Any], damaged: list[tuple[PlannedFile, Path]], into: Path) -> int: ...

    def report(self, record: dict[str, Any]) -> str | None: ...


def parse_source(
    text: str,
    *,
    identity_file: str | None = None,
    known_hosts: str | None = None,
    remote_command: str = "modelyard",
    api_key: str | None = None,
) -> PullSource:
    """`https://host:port` (the server, with an API key), `ssh://[user@]host[:port]/home`,
    `[user@]host:/home`, or a local `/path/to/home`."""
    if text.startswith(("http://", "https://")):
        from modelyard.distribute.http_source import HttpSource

        return HttpSource.for_url(text, api_key)
    return RegistrySource.parse(
        text, identity_file=identity_file, known_hosts=known_hosts, remote_command=remote_command
    )


@dataclass(frozen=True)
class RegistrySource:
    """Where a pull fetches from: a registry home over SSH, or on a local path."""

    home: str
    host: str | None = None
    user: str | None = None
    port: int = 22
    identity_file: str | None = None
    known_hosts: str | None = None
    remote_command: str = "modelyard"

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        identity_file: str | None = None,
        known_hosts: str | None = None,
        remote_command: str = "modelyard",
    ) -> RegistrySource:
        """`ssh://[user@]host[:port]/path/to/home`, `[user@]host:/path/to/home`, or `/path/to/home`."""
        match = _SSH_URL.match(text) or _SCP_LIKE.match(text)
        if match is None:
            if not text.startswith("/"):
                raise InvalidInputError(
                    f"{text!r} is not ssh://[user@]host[:port]/home, [user@]host:/home or an absolute path",
                    field="--from",
                )
            return cls(home=os.path.normpath(text))
        port = int(match.groupdict().get("port") or 22)
        return cls(
            home=match.group("path"),
            host=match.group("host"),
            user=match.group("user"),
            port=port,
            identity_file=identity_file,
            known_hosts=known_hosts or str(Path("~/.ssh/known_hosts").expanduser()),
            remote_command=remote_command,
        )

    @property
    def is_local(self) -> bool:
        return self.host is None

    def connection(self) -> NodeConnection:
        node = Node(
            name="registry",
            host=self.host or "local",
            user=self.user,
            port=self.port,
            identity_file=self.identity_file,
            known_hosts=self.known_hosts,
            models_root="/",
        )
        return NodeConnection(node)

    def describe(self, reference: str, *, require_stage: str, all_files: bool) -> dict[str, Any]:
        if self.is_local:
            return _describe_locally(Path(self.home), reference, require_stage=require_stage, all_files=all_files)
        argv = [self.remote_command, "deploy", "describe", reference, "--home", self.home]
        argv += ["--require-stage", require_stage] + (["--all-files"] if all_files else [])
        connection = self.connection()
        completed = connection.check(connection.run(argv, timeout=120), "describe")
        if not completed.ok:
            message = completed.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RemoteError(f"the registry at {self.host}:{self.home} refused: {message[-1] if message else ''}")
        document: dict[str, Any] = json.loads(completed.stdout)
        return document

    def fetch(self, described: dict[str, Any], blobs: list[tuple[str, int]], into: Path, progress: Progress) -> None:
        """rsync the blobs (digest, size) into `into/<ab>/<digest>`, partial files kept."""
        with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as listing:
            listing.write("".join(f"{digest[:2]}/{digest}\n" for digest, _ in blobs))
        try:
            completed = self.connection().rsync_from(
                described["blob_root"], Path(listing.name), into, on_bytes=progress.advance
            )
        finally:
            os.unlink(listing.name)
        if not completed.ok:
            raise RemoteError(f"fetching from the registry failed: {completed.tail(300)} (pull again to resume)")

    def repair(self, described: dict[str, Any], damaged: list[tuple[PlannedFile, Path]], into: Path) -> int:
        """rsync's delta transfer against each damaged copy (the node sends block checksums, the
        registry answers with the bytes of the blocks that differ). Returns the bytes fetched."""
        for planned, installed in damaged:
            basis = into / planned.sha256[:2] / planned.sha256
            basis.parent.mkdir(parents=True, exist_ok=True)
            if installed.exists() and not basis.exists():
                os.link(installed, basis)  # rsync writes a new file beside it: the basis inode is not changed
        with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as listing:
            listing.write("".join(f"{f.sha256[:2]}/{f.sha256}\n" for f, _ in damaged))
        try:
            completed = self.connection().rsync_from(described["blob_root"], Path(listing.name), into, delta=True)
        finally:
            os.unlink(listing.name)
        if not completed.ok:
            raise RemoteError(f"repairing from the registry failed: {completed.tail(300)}")
        return literal_bytes(completed.text())

    def report(self, record: dict[str, Any]) -> str | None:
        """Tell the registry how the pull ended; returns why it could not, or None."""
        try:
            if self.is_local:
                from modelyard.registry import Registry

                with Registry.open(Path(self.home)) as registry:
                    registry.record_pull(record)
                return None
            connection = self.connection()
            argv = [self.remote_command, "deploy", "record", "--home", self.home]
            completed = connection.run(argv, input=json.dumps(record).encode(), timeout=60)
            return None if completed.ok else completed.tail(300)
        except (ModelyardError, OSError) as exc:
            return str(exc)


def _describe_locally(home: Path, reference: str, *, require_stage: str, all_files: bool) -> dict[str, Any]:
    from modelyard.registry import Registry

    with Registry.open(home) as registry:
        return registry.describe_for_pull(reference, require_stage=require_stage, all_files=all_files)


@dataclass
class PullReport:
    ref: str
    target_name: str
    serving_path: str
    version_dir: str
    status: str
    reason: str = ""
    up_to_date: bool = False
    fetched_files: int = 0
    repaired: list[str] = field(default_factory=list)
    repair_bytes: int = 0  # bytes the repair fetched (rsync's literal data)
    checks: dict[str, Any] = field(default_factory=dict)
    reported: bool = False
    report_problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "activated"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "target_name": self.target_name,
            "serving_path": self.serving_path,
            "version_dir": self.version_dir,
            "status": self.status,
            "reason": self.reason,
            "up_to_date": self.up_to_date,
            "fetched_files": self.fetched_files,
            "repaired": self.repaired,
            "repair_bytes": self.repair_bytes,
            "checks": self.checks,
            "reported": self.reported,
            "report_problem": self.report_problem,
        }


def pull(
    source: PullSource,
    reference: str,
    to: Path,
    *,
    target_name: str | None = None,
    node_name: str | None = None,
    require_stage: str = "production",
    all_files: bool = False,
    keep: int = 2,
    repair: bool = False,
    progress: Progress | None = None,
) -> PullReport:
    progress = progress or NullProgress()
    root = Path(os.path.abspath(to))
    described = source.describe(reference, require_stage=require_stage, all_files=all_files)
    item = PlannedArtifact.model_validate(described["artifact"])
    target = check_target_name(target_name or item.target_name)
    report = PullReport(item.ref, target, str(root / target), item.version_dir, "pending")
    root.mkdir(parents=True, exist_ok=True)
    where = {"root": str(root), "target": target}
    try:
        _install(source, described, item, where, report, progress, keep, repair)
    except (AgentRefused, node_agent.AgentError) as exc:
        report.status, report.reason = "failed", str(exc)
    except RemoteError as exc:
        report.status, report.reason = "failed", exc.render()
    report.report_problem = source.report(_record(item, report, node_name or socket.gethostname()))
    report.reported = report.report_problem is None
    return report


def _install(
    source: PullSource,
    described: dict[str, Any],
    item: PlannedArtifact,
    where: dict[str, Any],
    report: PullReport,
    progress: Progress,
    keep: int,
    repair: bool,
) -> None:
    state = _agent("state", **where)
    if state["serving"] == "foreign":
        raise AgentRefused(f"{report.serving_path} exists and was not made by modelyard; move it away first")
    mine = next((v for v in state["versions"] if v["version"] == item.version_dir), None)
    if state["current"] == item.version_dir and mine and mine["intact"] and not repair:
        report.status, report.up_to_date = "activated", True
        return
    files = [f.model_dump() for f in item.files]
    load = {"kind": "peft" if item.model_type == "adapter" else (item.model_type or "files")}
    if mine and mine["recorded"] and (repair or not mine["intact"]):
        _check_installed(source, described, item, where, report, files, load)
    elif not (mine and mine["recorded"]):
        staged = _agent("prepare", version=item.version_dir, bytes=item.bytes, **where)
        if not staged["installed"]:
            report.fetched_files = _fetch(source, described, item, Path(staged["staging"]), progress)
            result = _agent(
                "verify", version=item.version_dir, ref=item.ref, files=files, load=load, where="staging", **where
            )
            report.checks = result["checks"]
            if not result["passed"]:
                raise AgentRefused(f"verification failed: {failed_checks(result['checks'])} (pull again to refetch)")
    _agent("switch", version=item.version_dir, **where)
    report.status = "activated"
    recorded = [v for v in _agent("state", **where)["versions"] if v["recorded"]]
    recorded.sort(key=lambda v: (v["version"] == item.version_dir, v.get("verified_at") or 0), reverse=True)
    _agent("cleanup", keep=[v["version"] for v in recorded[:keep]], keep_staging=[], **where)


def _check_installed(
    source: PullSource,
    described: dict[str, Any],
    item: PlannedArtifact,
    where: dict[str, Any],
    report: PullReport,
    files: list[dict[str, Any]],
    load: dict[str, Any],
) -> None:
    """A version already here whose record no longer matches (or --repair): hash it; repair the
    damaged files with rsync's delta transfer against the damaged copy (the node sends block
    checksums, the registry answers with the bytes of the blocks that differ), then hash again."""
    result = _agent("verify", version=item.version_dir, ref=item.ref, files=files, load=load, **where)
    if not result["passed"]:
        report.repaired, report.repair_bytes = _repair(source, described, item, where, result)
        result = _agent("verify", version=item.version_dir, ref=item.ref, files=files, load=load, **where)
    report.checks = result["checks"]
    if not result["passed"]:
        raise AgentRefused(f"the copy here is damaged and could not be repaired: {failed_checks(result['checks'])}")


def _repair(
    source: PullSource, described: dict[str, Any], item: PlannedArtifact, where: dict[str, Any], result: Any
) -> tuple[list[str], int]:
    version_dir = Path(where["root"]) / node_agent.STATE_DIR / where["target"] / item.version_dir
    blobs = version_dir.parent / BLOBS
    seen = result.get("files", {})
    damaged = [f for f in item.files if seen.get(f.path, {}).get("sha256") != f.sha256]
    manifest_damaged = any(f.path == MANIFEST_FILENAME for f in damaged)
    damaged = [f for f in damaged if f.path != MANIFEST_FILENAME]
    fetched = 0
    if damaged:
        fetched = source.repair(described, [(f, version_dir / f.path) for f in damaged], blobs)
        for planned in damaged:
            installed = version_dir / planned.path
            installed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(blobs / planned.sha256[:2] / planned.sha256, installed)
    if manifest_damaged:
        (version_dir / MANIFEST_FILENAME).write_text(described["manifest"], encoding="utf-8")
    return [f.path for f in damaged] + ([MANIFEST_FILENAME] if manifest_damaged else []), fetched


def literal_bytes(rsync_stats: str) -> int:
    """rsync --stats' "Literal data": the bytes actually sent (the rest matched the basis)."""
    match = re.search(r"Literal data: ([\d,]+) bytes", rsync_stats)
    return int(match.group(1).replace(",", "")) if match else -1


def _fetch(
    source: PullSource, described: dict[str, Any], item: PlannedArtifact, staging: Path, progress: Progress
) -> int:
    """Fetch the blobs the staging directory lacks into `<target>/.blobs` (partial files kept
    for a retry), then link each under its name in the staging directory."""
    blobs = staging.parent.parent / BLOBS
    blobs.mkdir(parents=True, exist_ok=True)
    wanted = [f for f in item.files if f.path != MANIFEST_FILENAME and not (staging / f.path).exists()]
    digests = sorted({f.sha256 for f in wanted})
    if digests:
        sizes = {f.sha256: f.size for f in wanted}
        progress.start(f"fetching {item.ref}", sum(sizes.values()))
        try:
            source.fetch(described, [(digest, sizes[digest]) for digest in digests], blobs, progress)
        finally:
            progress.finish()
    for planned in wanted:
        target = staging / planned.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(blobs / planned.sha256[:2] / planned.sha256, target)  # one blob may have two names
    for digest in digests:
        leftover = blobs / digest[:2] / digest
        if leftover.exists():
            leftover.unlink()
    (staging / MANIFEST_FILENAME).write_text(described["manifest"], encoding="utf-8")
    return len(wanted)


def _agent(command: str, **request: Any) -> Any:
    """The node agent's commands, run in this process (a pull runs on the node itself)."""
    return node_agent.handle({"command": command, **request}, None)


def _record(item: PlannedArtifact, report: PullReport, node_name: str) -> dict[str, Any]:
    return {
        "node": node_name,
        "target_name": report.target_name,
        "version_dir": item.version_dir,
        "artifact_name": item.artifact,
        "version_number": item.number,
        "serving_path": report.serving_path,
        "status": report.status,
        "reason": report.reason or ("pulled by the node" if report.ok else ""),
        "checks": report.checks,
        "files": [f.model_dump() for f in item.files],
    }
