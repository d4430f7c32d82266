"""Pulling from the registry's HTTP server (`modelyard pull ... --from https://registry:8600`).

The node asks `GET /api/v1/artifacts/{name}/versions/{ref}/describe` what the version's deploy
profile holds, downloads each blob it lacks from `GET /api/v1/blobs/{sha256}` into
`.blobs/<ab>/<digest>.part`, resuming with a Range request from the bytes already there, checks
the SHA-256 of the whole blob before renaming it into place, and reports back with
`POST /api/v1/deployments/record`. A damaged copy is repaired by block: the server's
`GET /api/v1/blobs/{sha256}/blocks` gives the SHA-256 of each 4 MiB block, the node compares
them with its own and fetches only the blocks that differ.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelyard.client import error_from_response
from modelyard.distribute.plan import PlannedFile
from modelyard.distribute.source import REPAIR_BLOCK_SIZE
from modelyard.errors import InvalidInputError, ModelyardError, RemoteError
from modelyard.progress import Progress

API_KEY_ENV = "MODELYARD_API_KEY"
CHUNK = 1 << 20
TIMEOUT = httpx.Timeout(30.0, read=120.0)


@dataclass(frozen=True)
class HttpSource:
    base_url: str
    api_key: str

    @classmethod
    def for_url(cls, url: str, api_key: str | None) -> HttpSource:
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise InvalidInputError(f"pulling over HTTP needs an API key: set {API_KEY_ENV}", field="--from")
        return cls(url.rstrip("/"), key)

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=TIMEOUT
        )

    def describe(self, reference: str, *, require_stage: str, all_files: bool) -> dict[str, Any]:
        name, _, ref = reference.partition("@")
        params = {"require_stage": require_stage, "all_files": str(all_files).lower()}
        with self._client() as client:
            response = _request(client, "GET", f"/api/v1/artifacts/{name}/versions/{ref or 'latest'}/describe", params)
        document: dict[str, Any] = response.json()
        return document

    def fetch(self, described: dict[str, Any], blobs: list[tuple[str, int]], into: Path, progress: Progress) -> None:
        with self._client() as client:
            for digest, size in blobs:
                _download_blob(client, digest, size, into / digest[:2] / digest, progress)

    def repair(self, described: dict[str, Any], damaged: list[tuple[PlannedFile, Path]], into: Path) -> int:
        fetched = 0
        with self._client() as client:
            for planned, installed in damaged:
                target = into / planned.sha256[:2] / planned.sha256
                target.parent.mkdir(parents=True, exist_ok=True)
                fetched += _repair_blob(client, planned, installed, target)
        return fetched

    def report(self, record: dict[str, Any]) -> str | None:
        try:
            with self._client() as client:
                _request(client, "POST", "/api/v1/deployments/record", json=record)
            return None
        except (ModelyardError, httpx.HTTPError) as exc:
            return str(exc)


def _request(
    client: httpx.Client,
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    try:
        response = client.request(method, path, params=params, json=json, headers=headers)
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach the registry at {client.base_url}: {exc}") from None
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


def _download_blob(client: httpx.Client, digest: str, size: int, target: Path, progress: Progress) -> None:
    """Resume `<target>.part` from its length, check the whole file's SHA-256, rename it. When a
    resumed file's digest is wrong (the bytes kept from an earlier try were damaged), the blob is
    fetched once more from its first byte."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    partial = target.with_name(target.name + ".part")
    got, kept = _fetch_into(client, digest, size, partial, progress, resume=True)
    if got != digest and kept:
        got, _ = _fetch_into(client, digest, size, partial, progress, resume=False)
    if got != digest:
        partial.unlink()
        raise RemoteError(f"blob {digest[:12]} arrived with another SHA-256; discarded, pull again")
    os.replace(partial, target)


def _fetch_into(
    client: httpx.Client, digest: str, size: int, partial: Path, progress: Progress, *, resume: bool
) -> tuple[str, int]:
    """Write the blob to `partial`: after the bytes already there when `resume` (a Range request
    for the rest), else all of it. Returns the SHA-256 of the whole file and the bytes kept."""
    have = partial.stat().st_size if resume and partial.exists() else 0
    if have > size:
        have = 0
    hasher = hashlib.sha256()
    if have:
        with partial.open("rb") as existing:
            while chunk := existing.read(CHUNK):
                hasher.update(chunk)
        progress.advance(have)
    if have == size and have:
        return hasher.hexdigest(), have
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with client.stream("GET", f"/api/v1/blobs/{digest}", headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            if have and not _answers_range(response, have):  # the server sent something else: start over
                hasher, have = hashlib.sha256(), 0
            with partial.open("ab" if have else "wb") as sink:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    hasher.update(chunk)
                    progress.advance(len(chunk))
    except httpx.HTTPError as exc:
        raise RemoteError(f"downloading {digest[:12]} was cut off: {exc} (pull again to resume)") from None
    return hasher.hexdigest(), have


def _answers_range(response: httpx.Response, start: int) -> bool:
    """A 206 whose bytes begin at `start`."""
    return response.status_code == 206 and response.headers.get("content-range", "").startswith(f"bytes {start}-")


def _repair_blob(client: httpx.Client, planned: PlannedFile, installed: Path, target: Path) -> int:
    """Copy the damaged file, overwrite the blocks whose SHA-256 differs from the server's with
    ranges fetched from it; the caller re-hashes the whole file before it is used."""
    response = _request(
        client, "GET", f"/api/v1/blobs/{planned.sha256}/blocks", params={"block_size": str(REPAIR_BLOCK_SIZE)}
    )
    theirs: list[str] = response.json()["blocks"]
    if installed.exists():
        shutil.copyfile(installed, target)
    else:
        target.write_bytes(b"")
    fetched = 0
    with target.open("r+b") as handle:
        handle.truncate(planned.size)
        for index, digest in enumerate(theirs):
            handle.seek(index * REPAIR_BLOCK_SIZE)
            mine = handle.read(REPAIR_BLOCK_SIZE)
            if hashlib.sha256(mine).hexdigest() == digest:
                continue
            start = index * REPAIR_BLOCK_SIZE
            end = min(planned.size, start + REPAIR_BLOCK_SIZE) - 1
            answer = _request(
                client, "GET", f"/api/v1/blobs/{planned.sha256}", headers={"Range": f"bytes={start}-{end}"}
            )
            block = answer.content
            if not _answers_range(answer, start) or len(block) != end - start + 1:
                # Written at this offset, a whole blob or another range would damage the copy further.
                raise RemoteError(f"the registry did not answer the range {start}-{end} of {planned.sha256[:12]}")
            handle.seek(start)
            handle.write(block)
            fetched += len(block)
    return fetched
