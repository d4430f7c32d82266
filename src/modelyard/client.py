"""The API client (seed 000's `api_client`): a registry on a modelyard server, over HTTP.

`RemoteRegistry(url, api_key)` answers the same calls as `modelyard.registry.Registry` for what
the server offers (reading the catalog, registering by upload, the lifecycle, downloads, keys,
deployments) and returns the same domain objects, so the CLI runs unchanged against a server when
`MODELYARD_URL` and `MODELYARD_API_KEY` are set:

    with RemoteRegistry.from_environment() as registry:
        version = registry.show("vision-vit-base16-embed-v1@production")

Uploads go through the resumable upload API (each file's SHA-256 declared first, checked by the
server on arrival; an interrupted upload resumes where the server's state says). Downloads resume
from a `.part` file with HTTP range requests and are checked against the manifest's SHA-256.
A server's error body becomes the same `ModelyardError` class (by its `code`), so exit codes
match a local run.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx

from modelyard import errors
from modelyard.access import ApiKey
from modelyard.catalog.deployments import Deployment
from modelyard.catalog.lifecycle import AliasEntry, Approval, StatusEntry, StoredReport
from modelyard.domain import ListFilters, Registration, VersionRecord, VersionSummary
from modelyard.errors import InvalidInputError, ModelyardError, RemoteError
from modelyard.export import ExportResult
from modelyard.lifecycle.lineage import LineageStep
from modelyard.lifecycle.promote import ValidationOutcome
from modelyard.lifecycle.report import ValidationReport
from modelyard.modelconfig import BaseModelConfig, parse_model_config
from modelyard.modelconfig.base import Compatibility
from modelyard.names import MANIFEST_FILENAME
from modelyard.progress import NullProgress, Progress
from modelyard.register.metadata import RegisterOptions

URL_ENV = "MODELYARD_URL"
API_KEY_ENV = "MODELYARD_API_KEY"
API = "/api/v1"
CHUNK = 1 << 20
UPLOAD_CHUNK = 64 << 20  # one PUT per 64 MiB: an interruption loses at most this much
PAGE = 500
TIMEOUT = httpx.Timeout(30.0, read=600.0)  # a commit of a large upload hashes it all server-side

if TYPE_CHECKING:
    from modelyard.distribute.check import NodeCheck
    from modelyard.distribute.drift import DriftReport
    from modelyard.distribute.fleet import Fleet
    from modelyard.distribute.install import Outcome
    from modelyard.distribute.plan import Assignment, DistributionPlan
    from modelyard.distribute.push import PushOptions, PushReport
    from modelyard.progress import ProgressBoard

T = TypeVar("T")


def remote_configured() -> bool:
    """Whether the environment points the CLI at a server."""
    return bool(os.environ.get(URL_ENV))


class RemoteRegistry:
    """A registry on a modelyard server, reached over HTTP with an API key."""

    def __init__(self, url: str, api_key: str, *, verify: bool | str = True) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"{url!r} is not an http:// or https:// URL", field=URL_ENV)
        if not api_key:
            raise errors.AuthenticationError(
                f"{URL_ENV} is set but {API_KEY_ENV} is not: create a key on the server with 'modelyard keys create'"
            )
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "modelyard-cli"},
            timeout=TIMEOUT,
            verify=verify,
        )

    @classmethod
    def from_environment(cls) -> RemoteRegistry:
        ca_bundle = os.environ.get("MODELYARD_CA_BUNDLE")
        return cls(os.environ.get(URL_ENV, ""), os.environ.get(API_KEY_ENV, ""), verify=ca_bundle or True)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # -- HTTP -------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the registry server at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

    # -- reading the catalog ----------------------------------------------------------------------

    def show(self, reference: str) -> VersionRecord:
        return _version_record(self._json("GET", _version_path(reference)))

    def list(
        self,
        filters: ListFilters | None = None,
        *,
        all_versions: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[VersionSummary]:
        params = _filter_params(filters or ListFilters()) | {"all_versions": str(all_versions).lower()}
        found: builtins.list[VersionSummary] = []
        while limit is None or len(found) < limit:
            page_size = PAGE if limit is None else min(PAGE, limit - len(found))
            page = self._json("GET", "/artifacts", params=params | {"limit": page_size, "offset": offset})
            items = [_build(VersionSummary, item) for item in page["items"]]
            found.extend(items)
            offset += len(items)
            if len(items) < page_size or offset >= page["total"]:
                break
        return found

    def count(self, filters: ListFilters | None = None, *, all_versions: bool = False) -> int:
        params = _filter_params(filters or ListFilters()) | {"all_versions": str(all_versions).lower(), "limit": 1}
        return int(self._json("GET", "/artifacts", params=params)["total"])

    def model_config(self, reference: str) -> BaseModelConfig | None:
        try:
            data = self._json("GET", _version_path(reference) + "/config")
        except errors.NotFoundError:
            self.show(reference)  # the version itself missing is the error to report
            return None
        return parse_model_config(data, f"typed configuration of {reference} from {self.url}")

    def compat(self, reference: str, runtime: str | None = None) -> builtins.list[Compatibility]:
        params = {"runtime": runtime} if runtime else {}
        answers = self._json("GET", _version_path(reference) + "/compat", params=params)
        return [_build(Compatibility, answer) for answer in answers]

    def lineage(self, reference: str) -> builtins.list[LineageStep]:
        return [_build(LineageStep, step) for step in self._json("GET", _version_path(reference) + "/lineage")]

    def aliases(self, name: str) -> builtins.list[AliasEntry]:
        entries = self._json("GET", f"/artifacts/{_segment(name)}/aliases")
        return [AliasEntry(e["alias"], e["ref"], e["set_by"], _datetime(e["set_at"])) for e in entries]

    def status_history(self, reference: str) -> builtins.list[StatusEntry]:
        version = self._json("GET", _version_path(reference))
        return [_build(StatusEntry, entry) for entry in version.get("status_history", [])]

    def approvals(self, reference: str) -> builtins.list[Approval]:
        return [_build(Approval, entry) for entry in self._json("GET", _version_path(reference) + "/approvals")]

    def reports(self, reference: str) -> builtins.list[StoredReport]:
        stored = self._json("GET", _version_path(reference) + "/reports")
        return [
            StoredReport(
                id=entry["id"],
                version=entry["version"],
                checkpoint=entry["checkpoint"],
                policy_sha256=entry["policy_sha256"],
                passed=entry["passed"],
                actor=entry["actor"],
                created_at=_datetime(entry["created_at"]),
                report_json=json.dumps(entry["report"]),
            )
            for entry in stored
        ]

    def audit(self, target: str | None = None, *, limit: int = 100) -> builtins.list[dict[str, object]]:
        params: dict[str, Any] = {"limit": limit} | ({"artifact": target} if target else {})
        events: builtins.list[dict[str, object]] = self._json("GET", "/audit", params=params)
        return events

    # -- the lifecycle ----------------------------------------------------------------------------

    def validate(
        self,
        reference: str,
        *,
        checkpoint: str | None = None,
        policy: Path | None = None,
        validation_results: dict[str, Any] | None = None,
    ) -> ValidationOutcome:
        if policy is not None:
            raise InvalidInputError(
                "a server validates with its own policy; --policy works only on a local registry", field="--policy"
            )
        body = {"checkpoint": checkpoint, "validation_results": validation_results}
        stored = self._json("POST", _version_path(reference) + "/validate", json=_without_none(body))
        report = ValidationReport.from_json(json.dumps(stored["report"]), f"report from {self.url}")
        return ValidationOutcome(report=report, report_id=int(stored["id"]), version=self.show(stored["version"]))

    def promote(
        self,
        reference: str,
        to: str,
        *,
        checkpoint: str | None = None,
        policy: Path | None = None,
        validation_results: dict[str, Any] | None = None,
        force: bool = False,
        reason: str | None = None,
        version: str | None = None,
        approved_by: str | None = None,
        benchmarks: Path | None = None,
        security_reviewed_by: str | None = None,
    ) -> VersionRecord:
        if policy is not None or benchmarks is not None:
            raise InvalidInputError(
                "a server promotes with its own policy; --policy and --benchmarks work only on a local registry",
                field="--policy" if policy is not None else "--benchmarks",
            )
        # approved_by is not sent: the server records the API key's owner as the approver.
        body = {
            "to": to,
            "checkpoint": checkpoint,
            "validation_results": validation_results,
            "force": force,
            "reason": reason,
            "version": version,
            "security_reviewed_by": security_reviewed_by,
        }
        return _version_record(self._json("POST", _version_path(reference) + "/promote", json=_without_none(body)))

    def approve(self, reference: str, *, approved_by: str, note: str | None = None) -> VersionRecord:
        self._json("POST", _version_path(reference) + "/approve", json=_without_none({"note": note}))
        return self.show(reference)

    def set_alias(self, reference: str, alias: str, *, approved_by: str, reason: str | None = None) -> str | None:
        name, _, ref = reference.partition("@")
        body = _without_none({"version": ref or "latest", "reason": reason})
        answer = self._json("PUT", f"/artifacts/{_segment(name)}/aliases/{_segment(alias)}", json=body)
        previous: str | None = answer.get("previous")
        return previous

    def remove_alias(self, name: str, alias: str, *, approved_by: str, reason: str | None = None) -> str:
        params = {"reason": reason} if reason else {}
        answer = self._json("DELETE", f"/artifacts/{_segment(name)}/aliases/{_segment(alias)}", params=params)
        return str(answer["ref"])

    def set_status(self, reference: str, status: str, *, reason: str) -> VersionRecord:
        body = {"status": status, "reason": reason}
        return _version_record(self._json("POST", _version_path(reference) + "/status", json=body))

    # -- registering by upload ----------------------------------------------------------------------

    def register(
        self,
        path: str | Path,
        options: RegisterOptions | None = None,
        *,
        link: bool = False,
        progress: Progress | None = None,
    ) -> Registration:
        """Upload a directory (or one file) and register it on the server as the next version."""
        from modelyard.register.scan import scan_source

        if link:
            raise InvalidInputError("--link needs the store on this machine; a server receives copies", field="--link")
        options = options or RegisterOptions()
        progress = progress or NullProgress()
        source = Path(path)
        tree = scan_source(source, options.exclude)
        uploads = [(f.relpath, Path(f.abspath)) for f in tree.files]
        if tree.run_manifest is not None:
            uploads.append((MANIFEST_FILENAME, tree.run_manifest))
        declared = [_declare(relpath, file) for relpath, file in uploads]
        body = {"files": declared, "options": _upload_options(options, source)}
        state = self._json("POST", "/uploads", json=body)
        upload_id = state["upload_id"]
        received = {entry["path"]: entry["received"] for entry in state["files"]}
        progress.start(f"uploading {tree.run_name}", sum(d["size"] for d in declared))
        try:
            for (relpath, file), entry in zip(uploads, declared, strict=True):
                self._send_file(upload_id, relpath, file, entry["size"], received.get(relpath, 0), progress)
        finally:
            progress.finish()
        answer = self._json("POST", f"/uploads/{upload_id}/commit")
        return _registration(answer, declared)

    def _send_file(self, upload_id: str, relpath: str, file: Path, size: int, start: int, progress: Progress) -> None:
        """PUT the file in chunks from `start` (what the server already holds)."""
        progress.advance(start)
        url = f"/uploads/{upload_id}/files/{quote(relpath)}"
        if size == 0:
            self._call("PUT", url, content=b"", headers={"Content-Range": "bytes */0"})
            return
        with file.open("rb") as handle:
            handle.seek(start)
            offset = start
            while offset < size:
                length = min(UPLOAD_CHUNK, size - offset)
                headers = {"Content-Range": f"bytes {offset}-{offset + length - 1}/{size}"}
                self._call("PUT", url, content=_read_chunks(handle, length, progress), headers=headers)
                offset += length

    def register_zip(
        self, path: str | Path, options: RegisterOptions | None = None, *, progress: Progress | None = None
    ) -> Registration:
        """Upload seed 000's upload ZIP (`POST /zip`); the server registers the run directory inside."""
        archive = Path(path)
        options = options or RegisterOptions()
        progress = progress or NullProgress()
        digest = _sha256_of(archive)
        metadata = {"options": _upload_options(options, archive), "sha256": digest}
        size = archive.stat().st_size
        progress.start(f"uploading {archive.name}", size)
        try:
            with archive.open("rb") as handle:
                files = {
                    "metadata": (None, json.dumps(metadata), "application/json"),
                    "file": (archive.name, _ProgressReader(handle, progress), "application/zip"),
                }
                answer = self._json("POST", "/zip", files=files)
        finally:
            progress.finish()
        return _registration(answer, [])

    # -- downloads ----------------------------------------------------------------------------------

    def export(
        self,
        reference: str,
        *,
        to: Path | None = None,
        zip_path: Path | None = None,
        progress: Progress | None = None,
    ) -> ExportResult:
        """Download a version's files and manifest into `to` (and/or seed 000's ZIP at `zip_path`).

        Files land in a download directory beside the destination (`.<name>.download`), each as
        `<file>.part` until its SHA-256 is the manifest's; running the command again after an
        interruption resumes there with range requests. The destination appears only complete."""
        from modelyard.export import write_zip

        if to is None and zip_path is None:
            raise InvalidInputError("say where to export: --to DIR and/or --zip FILE", field="--to")
        if to is not None and to.exists() and (not to.is_dir() or any(to.iterdir())):
            raise errors.ConflictError("already exists and is not an empty directory; choose a new directory", path=to)
        if zip_path is not None and zip_path.exists():
            raise errors.ConflictError("already exists; remove it or choose another file", path=zip_path)
        version = self.show(reference)
        manifest = version.manifest
        named = to if to is not None else zip_path
        assert named is not None
        staging = named.parent / f".{named.name}.download"
        staging.mkdir(parents=True, exist_ok=True)
        progress = progress or NullProgress()
        progress.start(f"downloading {version.ref}", manifest.total_size)
        try:
            for entry in manifest.files:
                self._download(version, entry.path, entry.size, entry.sha256, staging / entry.path, progress)
        finally:
            progress.finish()
        (staging / MANIFEST_FILENAME).write_text(manifest.to_json(), encoding="utf-8")
        if zip_path is not None:
            progress.start(f"zipping {version.ref}", manifest.total_size)
            try:
                write_zip(version, staging, zip_path, progress)
            finally:
                progress.finish()
        if to is not None:
            if to.exists():
                to.rmdir()
            os.rename(staging, to)
        else:
            shutil.rmtree(staging)
        return ExportResult(version.ref, to, zip_path, len(manifest.files), manifest.total_size)

    def _download(
        self, version: VersionRecord, relpath: str, size: int, sha256: str, target: Path, progress: Progress
    ) -> None:
        if target.exists() and target.stat().st_size == size and _sha256_of(target) == sha256:
            progress.advance(size)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            partial.unlink()
            have = 0
        url = f"{API}/artifacts/{_segment(version.artifact_name)}/versions/{version.number}/files/{quote(relpath)}"
        if have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self._http.stream("GET", url, headers=headers) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response)
                    if have and response.status_code != 206:
                        have = 0  # the server sent the whole file: start over
                    progress.advance(have)
                    with partial.open("ab" if have else "wb") as sink:
                        for chunk in response.iter_bytes(CHUNK):
                            sink.write(chunk)
                            progress.advance(len(chunk))
            except httpx.HTTPError as exc:
                raise RemoteError(
                    f"downloading {relpath} was cut off: {exc}; run the command again to resume"
                ) from None
        else:
            progress.advance(have)
        if _sha256_of(partial) != sha256:
            partial.unlink()
            raise errors.CorruptionError(
                f"{relpath} arrived with another SHA-256 than the manifest's; discarded, run the command again",
                path=target,
            )
        os.replace(partial, target)

    # -- deployments and keys ---------------------------------------------------------------------

    def deployments(self, name: str | None = None, node: str | None = None) -> builtins.list[Deployment]:
        params = _without_none({"name": name, "node": node})
        rows = self._json("GET", "/deployments", params=params)["deployments"]
        return [_deployment(row) for row in rows]

    # Deployments run on the server: it holds the fleet file and the fleet's SSH keys. The fleet
    # a call takes is the server's own, so `fleet` accepts no file.

    def fleet(self, path: str | Path | None = None) -> Fleet:
        from modelyard.distribute.fleet import Fleet

        if path is not None:
            raise InvalidInputError(
                "a server deploys to its own fleet file; --fleet works only on a local registry", field="--fleet"
            )
        return Fleet.model_validate(self._json("GET", "/fleet"))

    def fleet_check(self, fleet: Fleet, nodes: builtins.list[str] | None = None) -> builtins.list[NodeCheck]:
        from modelyard.distribute.check import NodeCheck

        checks = self._json("GET", "/fleet/check", params={"node": nodes} if nodes else {})
        return [_build(NodeCheck, check) for check in checks]

    def plan_deployment(
        self,
        assignments: builtins.list[str] | builtins.list[Assignment],
        *,
        fleet: Fleet,
        require_stage: str = "production",
        all_files: bool = False,
    ) -> DistributionPlan:
        from modelyard.distribute.plan import DistributionPlan

        sent = [_assignment_json(assignment) for assignment in assignments]
        body = {"assignments": sent, "require_stage": require_stage, "all_files": all_files}
        return DistributionPlan.model_validate(self._json("POST", "/deployments/plan", json=body))

    def push(
        self, plan: DistributionPlan, options: PushOptions | None = None, board: ProgressBoard | None = None
    ) -> PushReport:
        """The server pushes (synchronously); progress is the server's, so no bars here."""
        from modelyard.distribute.push import PushOptions, PushReport

        options = options or PushOptions()
        body = {
            "plan": plan.model_dump(mode="json"),
            "parallel": options.parallel,
            "canary": options.canary,
            "repair": options.repair,
            "nodes": options.nodes,
            "keep": options.keep,
            "compress": options.compress,
        }
        report = self._json("POST", "/deployments/push", json=_without_none(body))
        return PushReport(
            outcomes=[_outcome(entry) for entry in report["outcomes"]],
            held_back=[_outcome(entry) for entry in report["held_back"]],
            seconds=float(report["seconds"]),
        )

    def rollback(self, name: str, node: str, fleet: Fleet) -> Outcome:
        return _outcome(self._json("POST", "/deployments/rollback", json={"name": name, "node": node}))

    def verify_deployments(
        self, fleet: Fleet, *, nodes: builtins.list[str] | None = None, name: str | None = None
    ) -> DriftReport:
        from modelyard.distribute.drift import DriftFinding, DriftReport

        report = self._json("POST", "/deployments/verify", json=_without_none({"nodes": nodes, "name": name}))
        return DriftReport(findings=[_build(DriftFinding, finding) for finding in report["findings"]])

    def keys(self) -> builtins.list[ApiKey]:
        return [_api_key(entry) for entry in self._json("GET", "/keys")]

    def create_key(self, name: str, role: str) -> tuple[ApiKey, str]:
        answer = self._json("POST", "/keys", json={"name": name, "role": role})
        return _api_key(answer), str(answer["key"])

    def revoke_key(self, name: str) -> ApiKey:
        return _api_key(self._json("DELETE", f"/keys/{_segment(name)}"))


# -- errors --------------------------------------------------------------------------------------------


def _error_classes() -> dict[str, type[ModelyardError]]:
    found: dict[str, type[ModelyardError]] = {}
    pending: builtins.list[type[ModelyardError]] = [ModelyardError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_response(response: httpx.Response) -> ModelyardError:
    """The server's error body as the ModelyardError class of the same code."""
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
    except (ValueError, KeyError, TypeError):
        return RemoteError(f"the registry server answered {response.status_code}: {response.text[:300]}")
    cls = _error_classes().get(code)
    if cls is None:
        by_status = {401: errors.AuthenticationError, 403: errors.PermissionDeniedError, 404: errors.NotFoundError}
        cls = by_status.get(response.status_code, RemoteError)
    error = cls(message, details=details)
    if cls is errors.AuthenticationError:
        error = cls(f"the registry refused the API key ({API_KEY_ENV}): {message}", details=details)
    return error


# -- building domain objects from JSON -----------------------------------------------------------------


def _build(cls: type[T], data: Mapping[str, Any]) -> T:
    """A dataclass from the JSON the server sent: datetimes parsed, lists made tuples where typed so."""
    assert is_dataclass(cls)
    values: dict[str, Any] = {}
    for field in fields(cls):
        if field.name not in data:
            continue
        value = data[field.name]
        kind = str(field.type)
        if "datetime" in kind and isinstance(value, str):
            value = _datetime(value)
        elif "tuple" in kind and isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return cls(**values)


def _datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _version_record(data: Mapping[str, Any]) -> VersionRecord:
    return VersionRecord(
        artifact_name=data["artifact_name"],
        number=int(data["number"]),
        manifest_json=json.dumps(data["manifest"]),
        content_key=data.get("content_key", ""),
        registered_at=_datetime(data["registered_at"]),
        registered_by=data["registered_by"],
        source_path=data.get("source_path"),
        stage=data.get("stage", "raw"),
        label=data.get("label"),
        semver=data.get("semantic_version"),
        forced=bool(data.get("forced", False)),
    )


def _registration(answer: Mapping[str, Any], declared: builtins.list[dict[str, Any]]) -> Registration:
    version = _version_record(answer)
    manifest = version.manifest
    sent = sum(entry["size"] for entry in declared)
    return Registration(
        version=version,
        created=bool(answer["created"]),
        files_total=len(manifest.files),
        bytes_total=manifest.total_size,
        files_read=len(declared),
        bytes_read=sent,
        bytes_added=sent if answer["created"] else 0,
        methods={"upload": len(manifest.files)} if answer["created"] else {},
        warnings=tuple(answer.get("warnings", ())),
    )


def _deployment(row: Mapping[str, Any]) -> Deployment:
    name, _, number = str(row["ref"]).rpartition("@")

    def when(key: str) -> datetime | None:
        value = row.get(key)
        return _datetime(value) if value else None

    return Deployment(
        node=row["node"],
        target_name=row["target_name"],
        version_dir=row["version_dir"],
        artifact_name=name,
        version_number=int(number),
        serving_path=row["serving_path"],
        status=row["status"],
        reason=row.get("reason", ""),
        checks=row.get("checks") or {},
        files=row.get("files") or [],
        load=row.get("load") or {},
        verified_at=when("verified_at"),
        activated_at=when("activated_at"),
        updated_at=_datetime(row["updated_at"]),
        updated_by=row["updated_by"],
    )


def _outcome(entry: Mapping[str, Any]) -> Outcome:
    from modelyard.distribute.install import Outcome

    return _build(Outcome, entry)


def _assignment_json(assignment: str | Assignment) -> str | dict[str, Any]:
    if isinstance(assignment, str):
        return assignment
    return _without_none(
        {
            "artifact": assignment.reference,
            "targets": assignment.targets,
            "target_name": assignment.target_name,
            "base": assignment.base,
        }
    )


def _api_key(entry: Mapping[str, Any]) -> ApiKey:
    return _build(ApiKey, entry)


# -- small helpers ---------------------------------------------------------------------------------------


def _segment(text: str) -> str:
    return quote(text, safe="")


def _version_path(reference: str) -> str:
    name, _, ref = reference.partition("@")
    if not name:
        raise InvalidInputError(f"{reference!r} is not NAME[@REF]", field="reference")
    return f"/artifacts/{_segment(name)}/versions/{_segment(ref or 'latest')}"


def _filter_params(filters: ListFilters) -> dict[str, Any]:
    params = {
        "q": filters.search,
        "type": filters.model_type,
        "stage": filters.stage,
        "architecture": filters.architecture,
        "family": filters.family,
        "base_model": filters.base_model,
        "quantization": filters.quantization,
        "tag": filters.tag,
        "node_type": filters.node_type,
        "task": filters.task,
        "component": filters.component,
    }
    return _without_none(params)


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _upload_options(options: RegisterOptions, source: Path) -> dict[str, Any]:
    """RegisterOptions as the upload API's JSON: config and metrics files are read here."""
    from modelyard.loaders import load_mapping

    def mapping(value: Path | Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
        if value is None:
            return None
        return dict(load_mapping(value, what)) if isinstance(value, Path) else dict(value)

    return _without_none(
        {
            "artifact_name": options.artifact_name,
            "precision": options.precision,
            "quantize": options.quantize or None,
            "privacy_level": options.privacy_level,
            "node_type": options.node_type,
            "component": options.component,
            "base_model": options.base_model,
            "task": options.task,
            "embedding_dim": options.embedding_dim,
            "train_data_tags": list(options.train_data_tags) or None,
            "license": options.license,
            "config": mapping(options.config, "training config"),
            "metrics": mapping(options.metrics, "metrics"),
            "inspect": None if options.inspect else False,
            "derived_from": options.lifecycle.derived_from if options.lifecycle is not None else None,
        }
    )


def _declare(relpath: str, file: Path) -> dict[str, Any]:
    return {"path": relpath, "size": file.stat().st_size, "sha256": _sha256_of(file)}


def _sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _read_chunks(handle: Any, length: int, progress: Progress) -> Iterator[bytes]:
    left = length
    while left > 0:
        chunk = handle.read(min(CHUNK, left))
        if not chunk:
            raise InvalidInputError("the file shrank while it was being uploaded", path=handle.name)
        left -= len(chunk)
        progress.advance(len(chunk))
        yield chunk


class _ProgressReader:
    """A file object for a multipart body that reports what has been read."""

    def __init__(self, handle: Any, progress: Progress) -> None:
        self._handle = handle
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self._handle.read(size)
        self._progress.advance(len(chunk))
        return chunk
