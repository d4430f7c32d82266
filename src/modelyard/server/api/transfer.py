"""Blobs by digest, for nodes that pull over HTTP: the bytes (with ranges, to resume) and the
SHA-256 of each block (to repair a damaged copy by fetching only the blocks that differ)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from modelyard.access import Principal
from modelyard.distribute.source import REPAIR_BLOCK_SIZE, block_digests
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.registry import Registry
from modelyard.server.responses import BlobResponse
from modelyard.server.security import RegistryDep, require

router = APIRouter(prefix="/api/v1", tags=["transfer"])
Reader = Annotated[Principal, Depends(require("read"))]
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BlockDigests(BaseModel):
    sha256: str
    size: int
    block_size: int
    blocks: list[str]


def _check_digest(registry: Registry, sha256: str) -> int:
    if not _DIGEST.match(sha256):
        raise InvalidInputError("a blob is named by its lowercase hex SHA-256 (64 characters)", field="sha256")
    info = registry.store.stat(sha256)
    if info is None:
        raise NotFoundError(f"no blob {sha256}")
    return int(info.size)


@router.head("/blobs/{sha256}", operation_id="head_blob", response_class=Response)
@router.get(
    "/blobs/{sha256}",
    operation_id="get_blob",
    summary="A blob's bytes by its SHA-256 (HTTP range requests)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a range of the blob"}},
)
def get_blob(sha256: str, request: Request, registry: RegistryDep, _: Reader) -> Response:
    _check_digest(registry, sha256)
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    blob_path = getattr(registry.store, "blob_path", None)
    if blob_path is not None:
        return BlobResponse(blob_path(sha256), media_type="application/octet-stream", headers=headers)
    stream = registry.store.open(sha256)

    def chunks() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(1 << 20):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


@router.get("/blobs/{sha256}/blocks", response_model=BlockDigests, summary="SHA-256 of each block of a blob")
def get_blocks(
    sha256: str,
    registry: RegistryDep,
    _: Reader,
    block_size: Annotated[int, Query(ge=64 * 1024, le=256 * 1024 * 1024)] = REPAIR_BLOCK_SIZE,
) -> BlockDigests:
    size = _check_digest(registry, sha256)
    blocks = block_digests(registry, sha256, block_size)  # computed once, then cached under <home>/ranges
    return BlockDigests(sha256=sha256, size=size, block_size=block_size, blocks=blocks)
