"""Reading the catalog: artifacts, versions, typed configs, compatibility, lineage, files.

A version is addressed as `/artifacts/{name}/versions/{ref}`, where ref is anything `NAME@REF`
accepts: a number, latest, a stage, a semantic version, an alias. File downloads honour HTTP
range requests and carry `ETag: "<sha256>"`, so an interrupted download resumes and a cache
revalidates without a byte of content.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from modelyard.access import Principal
from modelyard.domain import ListFilters, VersionRecord, VersionSummary
from modelyard.errors import NotFoundError
from modelyard.server.responses import BlobResponse
from modelyard.server.security import RegistryDep, require

router = APIRouter(prefix="/api/v1", tags=["artifacts"])
Reader = Annotated[Principal, Depends(require("read"))]
MAX_PAGE = 500


class ArtifactPage(BaseModel):
    items: list[VersionSummary]
    total: int
    limit: int
    offset: int


class FileOut(BaseModel):
    path: str
    size: int
    sha256: str


class StatusEventOut(BaseModel):
    status: str = Field(description="deprecated, demoted or restored")
    actor: str
    at: datetime
    reason: str


class VersionOut(BaseModel):
    ref: str
    artifact_name: str
    number: int
    content_key: str = Field(description="SHA-256 over the version's file list: equal lists, equal keys")
    stage: str
    semantic_version: str | None
    label: str | None
    forced: bool
    status: str | None = Field(description="the latest lifecycle status event: deprecated, demoted, restored")
    registered_at: datetime
    registered_by: str
    source_path: str | None
    aliases: list[str]
    status_history: list[StatusEventOut] = Field(description="deprecate/demote/restore events, oldest first")
    manifest: dict[str, Any]


class ArtifactOut(BaseModel):
    name: str
    versions: list[VersionSummary]
    aliases: dict[str, str] = Field(description="alias -> NAME@N")


class CompatOut(BaseModel):
    runtime: str
    compatible: bool
    reason: str


class LineageOut(BaseModel):
    ref: str
    stage: str
    label: str | None
    detail: str


@router.get("/artifacts", response_model=ArtifactPage, summary="List artifacts (their latest version) or versions")
def list_artifacts(
    registry: RegistryDep,
    _: Reader,
    q: Annotated[str | None, Query(max_length=200, description="part of the artifact name")] = None,
    type: Annotated[str | None, Query(max_length=50, description="model type: llm, image, adapter, ...")] = None,
    stage: Annotated[str | None, Query(pattern="^(raw|validated|production)$")] = None,
    architecture: Annotated[str | None, Query(max_length=200)] = None,
    family: Annotated[str | None, Query(max_length=200)] = None,
    base_model: Annotated[str | None, Query(max_length=300)] = None,
    quantization: Annotated[str | None, Query(max_length=50)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    node_type: Annotated[str | None, Query(max_length=50)] = None,
    task: Annotated[str | None, Query(max_length=100)] = None,
    component: Annotated[str | None, Query(max_length=100)] = None,
    all_versions: bool = False,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ArtifactPage:
    filters = ListFilters(
        component=component,
        task=task,
        node_type=node_type,
        base_model=base_model,
        tag=tag,
        model_type=type,
        architecture=architecture,
        family=family,
        quantization=quantization,
        stage=stage,
        search=q,
    )
    items = registry.list(filters, all_versions=all_versions, limit=limit, offset=offset)
    total = registry.count(filters, all_versions=all_versions)
    return ArtifactPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/artifacts/{name}", response_model=ArtifactOut, summary="An artifact's versions and aliases")
def show_artifact(name: str, registry: RegistryDep, _: Reader) -> ArtifactOut:
    mine = registry.list(ListFilters(name=name), all_versions=True)
    if not mine:
        registry.versions(name)  # raises NotFoundError naming the artifact
    aliases = {entry.alias: entry.version for entry in registry.aliases(name)}
    return ArtifactOut(name=name, versions=mine, aliases=aliases)


@router.get("/artifacts/{name}/versions/{ref}", response_model=VersionOut, summary="One version and its manifest")
def show_version(name: str, ref: str, registry: RegistryDep, _: Reader) -> VersionOut:
    version = registry.show(f"{name}@{ref}")
    return version_out(registry, version)


def version_out(registry: Any, version: VersionRecord) -> VersionOut:
    import json

    aliases, history = registry.catalog.lifecycle.standing(version)
    latest = history[-1].status if history else None
    return VersionOut(
        ref=version.ref,
        artifact_name=version.artifact_name,
        number=version.number,
        content_key=version.content_key,
        stage=version.stage,
        semantic_version=version.semver,
        label=version.label,
        forced=version.forced,
        status=None if latest in (None, "restored") else latest,
        registered_at=version.registered_at,
        registered_by=version.registered_by,
        source_path=version.source_path,
        aliases=aliases,
        status_history=[StatusEventOut(status=e.status, actor=e.actor, at=e.at, reason=e.reason) for e in history],
        manifest=json.loads(version.manifest_json),
    )


@router.get("/artifacts/{name}/versions/{ref}/config", summary="The typed model configuration (seed 002)")
def version_config(name: str, ref: str, registry: RegistryDep, _: Reader) -> dict[str, Any]:
    version = registry.show(f"{name}@{ref}")
    config = registry.model_config(version.ref)
    if config is None:
        raise NotFoundError(f"{version.ref} has no typed configuration (registered without inspection)")
    return config.model_dump(mode="json")


@router.get("/artifacts/{name}/versions/{ref}/compat", response_model=list[CompatOut], summary="Runtimes")
def version_compat(
    name: str,
    ref: str,
    registry: RegistryDep,
    _: Reader,
    runtime: Annotated[str | None, Query(max_length=50)] = None,
) -> list[CompatOut]:
    answers = registry.compat(f"{name}@{ref}", runtime)
    return [CompatOut(runtime=a.runtime, compatible=a.compatible, reason=a.reason) for a in answers]


@router.get("/artifacts/{name}/versions/{ref}/lineage", response_model=list[LineageOut], summary="Lineage")
def version_lineage(name: str, ref: str, registry: RegistryDep, _: Reader) -> list[LineageOut]:
    return [
        LineageOut(ref=step.ref, stage=step.stage, label=step.label, detail=step.detail)
        for step in registry.lineage(f"{name}@{ref}")
    ]


@router.get("/artifacts/{name}/versions/{ref}/files", response_model=list[FileOut], summary="The file list")
def version_files(name: str, ref: str, registry: RegistryDep, _: Reader) -> list[FileOut]:
    version = registry.show(f"{name}@{ref}")
    return [FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in version.manifest.files]


@router.head(
    "/artifacts/{name}/versions/{ref}/files/{path:path}",
    operation_id="head_file",
    response_class=Response,
)
@router.get(
    "/artifacts/{name}/versions/{ref}/files/{path:path}",
    operation_id="get_file",
    summary="Download one file (HTTP range requests; ETag is its SHA-256)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a range of the file"}},
)
def download_file(name: str, ref: str, path: str, request: Request, registry: RegistryDep, _: Reader) -> Response:
    version = registry.show(f"{name}@{ref}")
    manifest = version.manifest
    if path == "artifact_manifest.json":
        body = manifest.to_json().encode("utf-8")
        return Response(body, media_type="application/json", headers={"ETag": _etag_of(body)})
    entry = next((f for f in manifest.files if f.path == path), None)
    if entry is None:
        raise NotFoundError(f"{version.ref} has no file {path!r}")
    etag = f'"{entry.sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable",  # a version's bytes never change
        "Content-Disposition": f'attachment; filename="{_ascii_name(path)}"',
        "X-Content-SHA256": entry.sha256,
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    blob_path = getattr(registry.store, "blob_path", None)
    if blob_path is not None:
        # sendfile from the store, with Range and If-Range handled by Starlette
        return BlobResponse(blob_path(entry.sha256), media_type="application/octet-stream", headers=headers)
    stream = registry.store.open(entry.sha256)
    return StreamingResponse(_chunks(stream), media_type="application/octet-stream", headers=headers)


def _chunks(stream: Any) -> Any:
    with stream:
        while chunk := stream.read(1 << 20):
            yield chunk


def _etag_of(body: bytes) -> str:
    import hashlib

    return f'"{hashlib.sha256(body).hexdigest()}"'


def _ascii_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
