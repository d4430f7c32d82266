"""Uploading new versions: resumable sessions, one multipart request, or seed 000's upload ZIP.

* `POST /uploads` declares files (path, size, SHA-256) and register options; `PUT
  /uploads/{id}/files/{path}` sends a file's bytes in chunks (`Content-Range: bytes S-E/T`, each
  chunk starting where the received bytes end; else 409 with `details.received`);
  `POST /uploads/{id}/commit` registers them as one version. An interrupted transfer keeps the
  bytes that arrived: `GET /uploads/{id}` says where to resume.
* `POST /artifacts` (multipart/form-data): a `metadata` part and one file part per file, its
  filename the file's path in the version.
* `POST /zip` (multipart/form-data): a `file` part holding the upload ZIP (manifest inside).

Bytes go to disk as they arrive, a megabyte at a time, hashed on the way (never a whole file in
memory); each file may have at most MODELYARD_UPLOAD_MAX_FILE_SIZE bytes (default 1 TiB). Every
upload needs the `register` permission; a session is seen only by its key's owner (and admins).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from modelyard.access import Principal
from modelyard.domain import Lifecycle, Registration
from modelyard.errors import InvalidInputError, PayloadTooLargeError
from modelyard.manifest import NodeType, Precision, PrivacyLevel
from modelyard.register.metadata import RegisterOptions
from modelyard.register.zipped import SCRATCH_PREFIX, paths_shown_as, register_zip
from modelyard.registry import Registry
from modelyard.server.api.artifacts import VersionOut, version_out
from modelyard.server.security import RegistryDep, require
from modelyard.server.uploads import (
    MAX_FILES,
    MAX_PATH_BYTES,
    DeclaredFile,
    DigestMismatchError,
    StreamedFile,
    UploadSessions,
    UploadState,
    check_upload_path,
    max_file_size,
)

router = APIRouter(prefix="/api/v1", tags=["uploads"])
Registrar = Annotated[Principal, Depends(require("register"))]
MAX_JSON_BODY = 32 * 1024 * 1024  # 100,000 declared files fit; a bigger JSON body is never read
MAX_METADATA_BYTES = 1024 * 1024
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
WRITE_BATCH = 1024 * 1024  # bytes gathered from the request before one write (in a worker thread)
M = TypeVar("M", bound=BaseModel)
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex SHA-256")]


class UploadOptions(BaseModel):
    """What `modelyard register` takes as flags (RegisterOptions), as JSON."""

    model_config = ConfigDict(extra="forbid")

    artifact_name: str | None = Field(default=None, max_length=200)
    precision: Precision | None = None
    quantize: bool = False
    privacy_level: PrivacyLevel | None = None
    node_type: NodeType | None = None
    component: str | None = Field(default=None, max_length=100)
    base_model: str | None = Field(default=None, max_length=300)
    task: str | None = Field(default=None, max_length=100)
    embedding_dim: int | None = Field(default=None, ge=1)
    train_data_tags: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000
    )
    license: str | None = Field(default=None, max_length=200)
    config: dict[str, JsonValue] | None = Field(default=None, description="the training config")
    metrics: dict[str, JsonValue] | None = None
    inspect: bool = Field(default=True, description="read model headers (as without --no-inspect)")
    derived_from: str | None = Field(
        default=None,
        max_length=300,
        pattern=r"^[^@\s]+@[1-9][0-9]*$",
        description="NAME@N this raw version was made from (an -int8 model quantized from its float one)",
    )

    def to_register_options(self, source_label: str) -> RegisterOptions:
        lifecycle = Lifecycle(stage="raw", derived_from=self.derived_from) if self.derived_from else None
        return RegisterOptions(
            artifact_name=self.artifact_name,
            precision=self.precision,
            quantize=self.quantize,
            privacy_level=self.privacy_level,
            node_type=self.node_type,
            component=self.component,
            base_model=self.base_model,
            task=self.task,
            embedding_dim=self.embedding_dim,
            train_data_tags=tuple(self.train_data_tags),
            license=self.license,
            config=self.config,
            metrics=self.metrics,
            inspect=self.inspect,
            source_label=source_label,
            lifecycle=lifecycle,
        )


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=MAX_PATH_BYTES, description="its path in the version")
    size: int = Field(ge=0)
    sha256: Sha256


class NewUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[FileIn] = Field(min_length=1, max_length=MAX_FILES)
    options: UploadOptions = Field(default_factory=UploadOptions)


class UploadMetadata(BaseModel):
    """The `metadata` part of `POST /artifacts`: options, and digests to check when given."""

    model_config = ConfigDict(extra="forbid")

    files: list[FileIn] | None = Field(default=None, max_length=MAX_FILES)
    options: UploadOptions = Field(default_factory=UploadOptions)


class ZipMetadata(BaseModel):
    """The `metadata` part of `POST /zip`: options on top of the manifest inside, and the ZIP's digest."""

    model_config = ConfigDict(extra="forbid")

    options: UploadOptions = Field(default_factory=UploadOptions)
    sha256: Sha256 | None = Field(default=None, description="the ZIP file's SHA-256, checked on arrival")


class FileStateOut(BaseModel):
    path: str
    size: int
    received: int
    complete: bool


class UploadOut(BaseModel):
    upload_id: str
    files: list[FileStateOut]
    expires_at: datetime = Field(description="when the session is removed unless more bytes arrive")


class ReceivedOut(BaseModel):
    path: str
    received: int
    complete: bool


class RegisteredOut(VersionOut):
    created: bool = Field(description="false when an identical version existed (and is returned)")
    warnings: list[str]


_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}
_RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


# -- resumable sessions ------------------------------------------------------------------------


class _BoundedJsonRoute(APIRoute):
    """A route that reads its JSON body first, at most MAX_JSON_BODY bytes: a bigger one is a 413
    in the one error body, never held in memory (FastAPI's `max_body_size` answers in plain text)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            await _read_body_within(request, MAX_JSON_BODY)
            return await handler(request)

        return bounded


def create_upload(body: NewUpload, registry: RegistryDep, principal: Registrar) -> UploadOut:
    files = [DeclaredFile(f.path, f.size, f.sha256) for f in body.files]
    state = _sessions(registry).create(principal.name, files, body.options.model_dump(mode="json"))
    return _upload_out(state)


router.add_api_route(
    "/uploads",
    create_upload,
    methods=["POST"],
    status_code=201,
    response_model=UploadOut,
    summary="Start a resumable upload: declare files (path, size, SHA-256) and register options",
    route_class_override=_BoundedJsonRoute,
)


@router.get("/uploads/{upload_id}", response_model=UploadOut, summary="An upload's state: where to resume")
def show_upload(upload_id: str, registry: RegistryDep, principal: Registrar) -> UploadOut:
    return _upload_out(_sessions(registry).state(upload_id, principal))


@router.put(
    "/uploads/{upload_id}/files/{path:path}",
    response_model=ReceivedOut,
    summary="Send a file's bytes, or a chunk of them (Content-Range: bytes START-END/TOTAL)",
    openapi_extra=_RAW_BODY,
)
async def put_file(upload_id: str, path: str, request: Request, registry: RegistryDep, principal: Registrar) -> Any:
    first, last, total = _content_range(request.headers.get("content-range"))
    length = _content_length(request)
    if length is not None and last is not None and length != last - first + 1:
        raise InvalidInputError(
            f"Content-Length {length} does not match Content-Range bytes {first}-{last}", field="Content-Length"
        )
    sessions = _sessions(registry)
    receiver = await run_in_threadpool(sessions.receive, upload_id, principal, path, first, last, total)
    try:
        if length is not None and first + length > receiver.declared.size:
            raise PayloadTooLargeError(
                f"{path}: {length} bytes from byte {first} go beyond its declared size of {receiver.declared.size}",
                field="Content-Length",
            )
        buffer = bytearray()
        try:
            async for chunk in request.stream():
                buffer += chunk
                if len(buffer) >= WRITE_BATCH:
                    await run_in_threadpool(receiver.write, bytes(buffer))
                    buffer.clear()
        except ClientDisconnect:
            # The bytes that arrived are a correct prefix: keep them, the client resumes after them.
            if buffer:
                await run_in_threadpool(receiver.write, bytes(buffer))
            await run_in_threadpool(receiver.interrupted)
            return Response(status_code=400)  # nobody is listening any more
        if buffer:
            await run_in_threadpool(receiver.write, bytes(buffer))
        progress = await run_in_threadpool(receiver.finish)
    finally:
        receiver.close()
    return ReceivedOut(path=progress.path, received=progress.received, complete=progress.complete)


@router.post(
    "/uploads/{upload_id}/commit",
    status_code=201,
    response_model=RegisteredOut,
    summary="Register an upload whose files all arrived as one version; the session is removed",
    responses={200: {"model": RegisteredOut, "description": "an identical version existed"}},
)
def commit_upload(upload_id: str, response: Response, registry: RegistryDep, principal: Registrar) -> RegisteredOut:
    sessions = _sessions(registry)
    stored = sessions.state(upload_id, principal).options
    options = UploadOptions.model_validate(stored).to_register_options(f"upload {upload_id} by {principal.name}")
    with registry.acting_as(principal):
        registration = sessions.commit(registry, upload_id, principal, options)
    return _registered(registry, registration, response)


@router.delete("/uploads/{upload_id}", status_code=204, summary="Abort an upload: its bytes are removed")
def abort_upload(upload_id: str, registry: RegistryDep, principal: Registrar) -> Response:
    _sessions(registry).abort(upload_id, principal)
    return Response(status_code=204)


# -- one request -------------------------------------------------------------------------------


@router.post(
    "/artifacts",
    status_code=201,
    response_model=RegisteredOut,
    summary="Upload a version in one multipart request: a 'metadata' part and one part per file",
    responses={200: {"model": RegisteredOut, "description": "an identical version existed"}},
    openapi_extra=_MULTIPART_BODY,
)
async def upload_version(
    request: Request, response: Response, registry: RegistryDep, principal: Registrar
) -> RegisteredOut:
    from modelyard.lifecycle.scratch import scratch_dir

    boundary = _multipart_boundary(request)
    limit = max_file_size()
    with scratch_dir(registry.settings.home, SCRATCH_PREFIX) as scratch:
        run_dir = scratch / "upload"

        def place(field: str, filename: str) -> tuple[Path, str]:
            return run_dir / check_upload_path(filename, "filename"), filename

        form = _StreamedForm(place, limit)
        await form.read(request, boundary)
        metadata = _metadata(form.metadata, UploadMetadata)
        if not form.files:
            raise InvalidInputError("no files: send one file part per file, its filename the path", field="files")
        if metadata.files is not None:
            _check_digests(metadata.files, form.files)
        options = metadata.options.to_register_options(f"HTTP upload by {principal.name}")
        with paths_shown_as(run_dir, lambda path: path, "the upload"):
            registration = await run_in_threadpool(_register, registry, principal, run_dir, options)
    return _registered(registry, registration, response)


@router.post(
    "/zip",
    status_code=201,
    response_model=RegisteredOut,
    summary="Upload seed 000's upload ZIP (a run directory with artifact_manifest.json inside)",
    responses={200: {"model": RegisteredOut, "description": "an identical version existed"}},
    openapi_extra=_MULTIPART_BODY,
)
async def upload_zip(
    request: Request, response: Response, registry: RegistryDep, principal: Registrar
) -> RegisteredOut:
    from modelyard.lifecycle.scratch import scratch_dir

    boundary = _multipart_boundary(request)
    limit = max_file_size()
    sent_as = ["upload.zip"]  # the client's file name: errors name the ZIP so, not by its scratch path
    with scratch_dir(registry.settings.home, SCRATCH_PREFIX) as scratch:

        def place(field: str, filename: str) -> tuple[Path, str]:
            if field != "file":
                raise InvalidInputError(f"unknown file part {field!r}; send the ZIP as the part 'file'", field=field)
            # Its name only names the run when the ZIP has no top directory; any path in it goes.
            name = Path(filename.replace("\\", "/")).name
            sent_as[0] = name.replace("\x00", "") or sent_as[0]
            stem = _UNSAFE_NAME.sub("-", Path(name).stem).strip(".-") or "upload"
            return scratch / "zip" / f"{stem}.zip", "file"

        form = _StreamedForm(place, limit)
        await form.read(request, boundary)
        metadata = _metadata(form.metadata, ZipMetadata)
        if "file" not in form.files:
            raise InvalidInputError("no ZIP: send it as the file part 'file'", field="file")
        size, actual = form.files["file"]
        if metadata.sha256 is not None and actual != metadata.sha256:
            raise DigestMismatchError(
                f"the ZIP's {size} bytes have SHA-256 {actual}, not the declared {metadata.sha256}", field="file"
            )
        zip_path = next((scratch / "zip").iterdir())
        options = metadata.options.to_register_options(f"{zip_path.name} (uploaded by {principal.name})")
        registration = await run_in_threadpool(_register_zip, registry, principal, zip_path, options, sent_as[0])
    return _registered(registry, registration, response)


# -- helpers -----------------------------------------------------------------------------------


def _sessions(registry: Registry) -> UploadSessions:
    return UploadSessions(registry.settings.home, max_file_size=max_file_size())


def _upload_out(state: UploadState) -> UploadOut:
    files = [FileStateOut(path=f.path, size=f.size, received=f.received, complete=f.complete) for f in state.files]
    return UploadOut(upload_id=state.upload_id, files=files, expires_at=state.expires_at)


def _register(registry: Registry, principal: Principal, run_dir: Path, options: RegisterOptions) -> Registration:
    with registry.acting_as(principal):
        # The files are ours and about to be removed: link them into the store, not copy them.
        return registry.register(run_dir, options, link=True)


def _register_zip(
    registry: Registry, principal: Principal, zip_path: Path, options: RegisterOptions, name: str
) -> Registration:
    with registry.acting_as(principal):
        return register_zip(registry, zip_path, options, name=name)


def _registered(registry: Registry, registration: Registration, response: Response) -> RegisteredOut:
    response.status_code = 201 if registration.created else 200
    version = version_out(registry, registration.version)
    return RegisteredOut(**version.model_dump(), created=registration.created, warnings=list(registration.warnings))


def _content_range(header: str | None) -> tuple[int, int | None, int | None]:
    """`bytes START-END/TOTAL` -> (START, END, TOTAL); no header: the whole file from byte 0."""
    if header is None:
        return 0, None, None
    unit, _, spec = header.strip().partition(" ")
    span, _, total_text = spec.partition("/")
    first_text, _, last_text = span.partition("-")
    if (
        unit != "bytes"
        or not (first_text.isdigit() and last_text.isdigit())
        or not (total_text.isdigit() or total_text == "*")
    ):
        raise InvalidInputError(
            f"Content-Range {header!r} must read 'bytes START-END/TOTAL' (END inclusive)", field="Content-Range"
        )
    first, last = int(first_text), int(last_text)
    if last < first:
        raise InvalidInputError(f"Content-Range {header!r} ends before it starts", field="Content-Range")
    return first, last, None if total_text == "*" else int(total_text)


async def _read_body_within(request: Request, limit: int) -> None:
    """Read the whole body, refusing it as soon as it is longer than `limit` bytes; FastAPI then
    parses what was read (Starlette keeps a read body on the request)."""
    length = _content_length(request)
    if length is not None and length > limit:
        raise PayloadTooLargeError(f"the body has {length} bytes; at most {limit} are accepted", field="body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the body is longer than the {limit} bytes accepted", field="body")
    request._body = bytes(body)


def _content_length(request: Request) -> int | None:
    text = request.headers.get("content-length")
    if text is None:
        return None
    if not text.isdigit():
        raise InvalidInputError(f"Content-Length {text!r} is not a number of bytes", field="Content-Length")
    return int(text)


def _multipart_boundary(request: Request) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidInputError(
            "send multipart/form-data (with a boundary): a 'metadata' part and the file parts", field="Content-Type"
        )
    return params[b"boundary"]


def _metadata(raw: bytes | None, model: type[M]) -> M:
    """The `metadata` part, validated; a problem names its field (`metadata.options.precision`)."""
    if raw is None:
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field = f"metadata.{where}" if where else "metadata"
        if error["type"] == "json_invalid":
            raise InvalidInputError(f"is not valid JSON: {error['msg']}", field="metadata") from None
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise InvalidInputError(message, field=field, details={"problems": len(exc.errors())}) from None


def _check_digests(declared: list[FileIn], received: dict[str, tuple[int, str]]) -> None:
    """With `files` in the metadata, the parts must be exactly those files, byte for byte."""
    named = {f.path for f in declared}
    for path in sorted(set(received) - named):
        raise InvalidInputError(f"{path!r} was sent but is not in metadata.files", field=path)
    for entry in declared:
        if entry.path not in received:
            raise InvalidInputError(f"{entry.path!r} is in metadata.files but was not sent", field=entry.path)
        size, sha256 = received[entry.path]
        if (size, sha256) != (entry.size, entry.sha256):
            raise DigestMismatchError(
                f"{entry.path}: received {size} bytes with SHA-256 {sha256}; metadata.files says "
                f"{entry.size} bytes with SHA-256 {entry.sha256}",
                field=entry.path,
            )


class _StreamedForm:
    """A multipart/form-data body read as it arrives: file parts straight to disk (hashed on the
    way), the `metadata` part (at most 1 MiB) in memory; any other part is refused."""

    def __init__(self, place: Callable[[str, str], tuple[Path, str]], limit: int) -> None:
        self._place = place  # (field name, filename) -> (where to write, the name messages use)
        self._limit = limit
        self.metadata: bytes | None = None
        self.files: dict[str, tuple[int, str]] = {}  # name -> (size, sha256)
        self._events: list[tuple[str, bytes]] = []
        self._pending = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._file: StreamedFile | None = None
        self._meta: bytearray | None = None
        self._ended = False

    async def read(self, request: Request, boundary: bytes) -> None:
        try:
            parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": lambda: self._event("begin", b""),
                    "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
                    "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                    "on_header_end": self._header_end,
                    "on_headers_finished": lambda: self._event("headers", self._disposition),
                    "on_part_data": lambda data, start, end: self._event("data", data[start:end]),
                    "on_part_end": lambda: self._event("end", b""),
                    "on_end": self._end,
                },
            )
            try:
                async for chunk in request.stream():
                    parser.write(chunk)
                    if self._pending >= WRITE_BATCH or len(self._events) > 1000:
                        await run_in_threadpool(self._apply)
                parser.finalize()
            except FormParserError as exc:
                raise InvalidInputError(f"malformed multipart body: {exc}", field="body") from None
            await run_in_threadpool(self._apply)
            if not self._ended:
                raise InvalidInputError("the multipart body ended before its closing boundary", field="body")
        finally:
            if self._file is not None:
                self._file.close()

    def _event(self, kind: str, data: bytes) -> None:
        self._events.append((kind, data))
        self._pending += len(data)

    def _header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _end(self) -> None:
        self._ended = True

    def _apply(self) -> None:
        """Act on the parsed events, in a worker thread: disk writes and hashing leave the event loop free."""
        events, self._events, self._pending = self._events, [], 0
        for kind, data in events:
            if kind == "headers":
                self._start_part(data)
            elif kind == "data":
                if self._file is not None:
                    self._file.write(data)
                elif self._meta is not None:
                    if len(self._meta) + len(data) > MAX_METADATA_BYTES:
                        raise PayloadTooLargeError(
                            f"the metadata part is larger than {MAX_METADATA_BYTES} bytes", field="metadata"
                        )
                    self._meta.extend(data)
            elif kind == "end":
                if self._file is not None:
                    self.files[self._file.name] = (self._file.size, self._file.close())
                    self._file = None
                elif self._meta is not None:
                    self.metadata = bytes(self._meta)
                    self._meta = None

    def _start_part(self, disposition: bytes) -> None:
        _, params = parse_options_header(disposition)
        try:
            field = params[b"name"].decode("utf-8")
            filename = params[b"filename"].decode("utf-8") if b"filename" in params else None
            if filename is None and b"filename*" in disposition.lower():  # the parser drops it silently
                raise InvalidInputError(
                    f'part {field!r}: send its path as filename="..." (UTF-8); filename* is not read',
                    field=field,
                )
        except KeyError:
            raise InvalidInputError(
                "a part has no name (Content-Disposition: form-data; name=...)", field="body"
            ) from None
        except UnicodeDecodeError:
            raise InvalidInputError("a part's name or filename is not UTF-8", field="body") from None
        if filename is not None:
            target, name = self._place(field, filename)
            if name in self.files:
                raise InvalidInputError(f"{name!r} was sent twice", field=name)
            self._file = StreamedFile(target, name, self._limit)
        elif field == "metadata":
            if self.metadata is not None:
                raise InvalidInputError("the metadata part was sent twice", field="metadata")
            self._meta = bytearray()
        else:
            raise InvalidInputError(
                f"unknown form field {field!r}: send 'metadata' (JSON) and file parts (with a filename)", field=field
            )
