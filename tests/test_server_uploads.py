"""The upload API over real HTTP: one multipart request, resumable chunked sessions, seed 000's
upload ZIP, and every kind of bad input (refused with the one error body, nothing stored)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import stat
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import write_safetensors
from modelyard.digest import training_config_hash
from serverproc import ServerProcess, free_port

API = "/api/v1"
MiB = 1024 * 1024
SEED_MANIFEST = {  # seed 000 section 3, first mapping example, as a training script writes it
    "artifact_name": "vision-vit-base16-embed-v1",
    "base_model": "vit-base16",
    "task": "embed",
    "embedding_dim": 768,
    "precision": "fp16",
    "training_config_hash": training_config_hash({"batch_size": 256, "epochs": 10}),
    "training_config": {"batch_size": 256, "epochs": 10},
    "component": "vision",
    "node_type": "encoder",
    "train_data_tags": ["imagenet-1k"],
}
WAIT_SECONDS = 60.0  # the most a test waits for the server to notice a dropped connection


# -- helpers --------------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _declared(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"path": path, "size": len(data), "sha256": _sha(data)} for path, data in files.items()]


def _run_files(root: Path) -> dict[str, bytes]:
    """A training run's files, written by the official libraries: path in the run -> bytes."""
    write_safetensors(root / "checkpoints" / "best.safetensors", seed=1, shape=(64, 32))
    write_safetensors(root / "checkpoints" / "latest.safetensors", seed=2, shape=(64, 32))
    (root / "config.yaml").write_text("batch_size: 256\nepochs: 10\n")
    (root / "metrics" / "training_metrics.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "metrics" / "training_metrics.json").write_text(json.dumps({"best_val_loss": 0.38}))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _zip(entries: list[tuple[str, bytes]], *, symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, (2025, 12, 21, 10, 0, 0))
            if name in symlinks:  # how Info-ZIP records a symlink: Unix mode in the external attributes
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"modelyard-test-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body written byte by byte, for what HTTP clients would escape (NUL)."""
    body = b"".join(
        b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + data + b"\r\n"
        for disposition, data in parts
    )
    return body + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


def _metadata(**body: Any) -> tuple[None, str, str]:
    return (None, json.dumps(body), "application/json")


def _blobs(server: ServerProcess) -> list[str]:
    objects = server.home / "store" / "objects" / "sha256"
    return sorted(p.name for p in objects.rglob("*") if p.is_file()) if objects.is_dir() else []


def _scratch(server: ServerProcess) -> list[str]:
    """What uploads left under <home>/tmp: session directories and one-request scratch directories."""
    tmp = server.home / "tmp"
    sessions = [f"uploads/{p.name}" for p in (tmp / "uploads").iterdir()] if (tmp / "uploads").is_dir() else []
    return sorted(sessions + [p.name for p in tmp.iterdir() if p.name.startswith("upload-")])


def _error(response: httpx.Response, status: int, code: str, *named: str, home: Path | None = None) -> dict[str, Any]:
    """The one error body, with this status and code, its message naming each of `named`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["details"], dict)
    for text in named:
        assert text in error["message"], (text, error["message"])
    if home is not None:  # the server's own directories are nobody's business
        assert str(home) not in response.text and "/tmp/" not in error["message"], error
    return error


def _nothing_stored(server: ServerProcess, headers: dict[str, str], blobs: list[str]) -> None:
    listed = httpx.get(server.url + API + "/artifacts", headers=headers).json()
    assert listed["total"] == 0 and listed["items"] == []
    assert _blobs(server) == blobs


def _log_is_clean(server: ServerProcess, *keys: str) -> None:
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    for key in keys:
        assert key not in log and key.removeprefix("myd_") not in log


def _download(server: ServerProcess, headers: dict[str, str], ref: str, path: str) -> httpx.Response:
    name, number = ref.split("@")
    response = httpx.get(f"{server.url}{API}/artifacts/{name}/versions/{number}/files/{path}", headers=headers)
    assert response.status_code == 200, response.text
    return response


def _state(server: ServerProcess, headers: dict[str, str], upload_id: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{server.url}{API}/uploads/{upload_id}", headers=headers)
    assert response.status_code == 200, response.text
    return {f["path"]: f for f in response.json()["files"]}


def _put(
    server: ServerProcess, headers: dict[str, str], upload_id: str, path: str, data: bytes, start: int, total: int
) -> httpx.Response:
    content_range = f"bytes {start}-{start + len(data) - 1}/{total}"
    return httpx.put(
        f"{server.url}{API}/uploads/{upload_id}/files/{path}",
        headers={**headers, "Content-Range": content_range},
        content=data,
        timeout=60,
    )


def _send_and_hang_up(server: ServerProcess, key: str, target: str, headers: dict[str, str], body: bytes) -> None:
    """Send a request's headers (announcing `Content-Length`) and only `body`, then close: a client
    whose connection dropped mid-upload."""
    head = [f"PUT {target} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Authorization: Bearer {key}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(WAIT_SECONDS)
        # The server reads what arrived, then sees the end: wait for it to drop the connection too.
        while sock.recv(65536):
            pass


def _wait_for(condition: Any, what: str) -> None:
    """Poll until `condition()` holds (the server works on a dropped connection in its own time)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@dataclass
class _LimitedServer(ServerProcess):
    """A server whose uploaded files may have at most 64 KiB."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "MODELYARD_UPLOAD_MAX_FILE_SIZE": "64K"}


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = _LimitedServer(home=tmp_path / "server-home", port=free_port())
    server.home.mkdir()
    server.start()
    yield server
    server.stop()


# -- one multipart request ------------------------------------------------------------------------


def test_multipart_upload_registers_a_version_whose_files_download_identical(
    server: ServerProcess, tmp_path: Path
) -> None:
    key = server.key("trainer", name="tara")
    headers = server.auth(key)
    files = _run_files(tmp_path / "run")
    options = {"artifact_name": "vision-vit-base16-embed-v1", "precision": "fp16", "train_data_tags": ["coco"]}
    parts: list[tuple[str, Any]] = [("metadata", _metadata(files=_declared(files), options=options))]
    parts += [("file", (path, data, "application/octet-stream")) for path, data in files.items()]

    first = httpx.post(server.url + API + "/artifacts", headers=headers, files=parts, timeout=120)
    assert first.status_code == 201, first.text
    version = first.json()
    assert (version["ref"], version["created"], version["stage"]) == ("vision-vit-base16-embed-v1@1", True, "raw")
    assert version["manifest"]["precision"] == "fp16" and version["manifest"]["train_data_tags"] == ["coco"]
    assert (version["source_path"], version["registered_by"]) == ("HTTP upload by tara", "tara")
    assert {f["path"]: f["sha256"] for f in version["manifest"]["files"]} == {p: _sha(d) for p, d in files.items()}
    assert sorted(_blobs(server)) == sorted({_sha(d) for d in files.values()})

    listed = httpx.get(server.url + API + "/artifacts", headers=server.auth(server.key("viewer"))).json()
    assert [(i["artifact_name"], i["number"]) for i in listed["items"]] == [("vision-vit-base16-embed-v1", 1)]
    for path, data in files.items():
        downloaded = _download(server, headers, version["ref"], path)
        assert downloaded.content == data and downloaded.headers["etag"] == f'"{_sha(data)}"'

    again = httpx.post(server.url + API + "/artifacts", headers=headers, files=parts, timeout=120)
    assert again.status_code == 200, again.text
    assert (again.json()["ref"], again.json()["created"]) == ("vision-vit-base16-embed-v1@1", False)
    # Without digests in the metadata the bytes are taken as they come (and hashed on arrival).
    changed = {**files, "config.yaml": b"batch_size: 128\n"}
    unchecked = [("metadata", _metadata(options=options))]
    unchecked += [("file", (p, d, "application/octet-stream")) for p, d in changed.items()]
    second = httpx.post(server.url + API + "/artifacts", headers=headers, files=unchecked, timeout=120)
    assert second.status_code == 201 and second.json()["ref"] == "vision-vit-base16-embed-v1@2", second.text
    assert _download(server, headers, "vision-vit-base16-embed-v1@2", "config.yaml").content == b"batch_size: 128\n"
    assert _scratch(server) == []
    _log_is_clean(server, key)


def test_a_multipart_part_whose_bytes_miss_the_declared_digest_stores_nothing(server: ServerProcess) -> None:
    key = server.key("trainer")
    headers = server.auth(key)
    good, bad = b"weights" * 1000, b"tampered" * 1000
    declared = _declared({"model.bin": good, "config.json": b"{}"})
    parts = [
        ("metadata", _metadata(files=declared, options={"artifact_name": "digest-check-v1"})),
        ("file", ("config.json", b"{}")),
        ("file", ("model.bin", bad)),
    ]
    response = httpx.post(server.url + API + "/artifacts", headers=headers, files=parts)
    error = _error(response, 422, "digest_mismatch", "model.bin", _sha(bad), _sha(good), home=server.home)
    assert error["details"]["field"] == "model.bin"
    sent_not_declared = [*parts[:2], ("file", ("model.bin", good)), ("file", ("extra.bin", b"x"))]
    response = httpx.post(server.url + API + "/artifacts", headers=headers, files=sent_not_declared)
    _error(response, 422, "invalid_input", "extra.bin", "metadata.files", home=server.home)
    declared_not_sent = parts[:2]
    response = httpx.post(server.url + API + "/artifacts", headers=headers, files=declared_not_sent)
    _error(response, 422, "invalid_input", "model.bin", "was not sent", home=server.home)
    _nothing_stored(server, headers, [])
    assert _scratch(server) == []
    _log_is_clean(server, key)


# -- resumable chunked uploads ----------------------------------------------------------------------


def test_an_interrupted_chunked_upload_resumes_where_the_bytes_end_and_commits(
    server: ServerProcess, tmp_path: Path
) -> None:
    key = server.key("trainer", name="tara")
    headers = server.auth(key)
    weights = os.urandom(3 * MiB + 12345)
    config = b'{"model_type": "llama", "hidden_size": 64}'
    files = {"checkpoints/model.bin": weights, "config.json": config}
    created = httpx.post(
        server.url + API + "/uploads",
        headers=headers,
        json={"files": _declared(files), "options": {"artifact_name": "gpt-small-v1", "task": "lm-finetune"}},
    )
    assert created.status_code == 201, created.text
    upload_id = created.json()["upload_id"]
    assert [(f["path"], f["received"], f["complete"]) for f in created.json()["files"]] == [
        ("checkpoints/model.bin", 0, False),
        ("config.json", 0, False),
    ]
    total = len(weights)

    first = _put(server, headers, upload_id, "checkpoints/model.bin", weights[:MiB], 0, total)
    assert first.status_code == 200 and first.json() == {
        "path": "checkpoints/model.bin",
        "received": MiB,
        "complete": False,
    }
    # The connection drops after 1.5 MiB of a 2.2 MiB chunk: what arrived is kept.
    target = f"{API}/uploads/{upload_id}/files/checkpoints/model.bin"
    rest = total - MiB
    sent = MiB + MiB // 2
    announced = {"Content-Range": f"bytes {MiB}-{total - 1}/{total}", "Content-Length": str(rest)}
    _send_and_hang_up(server, key, target, announced, weights[MiB:sent])
    _wait_for(lambda: _state(server, headers, upload_id)["checkpoints/model.bin"]["received"] == sent, "the prefix")

    # Nothing is visible, nothing is in the store, and `modelyard gc` leaves the session alone.
    _nothing_stored(server, server.auth(server.key("viewer")), [])
    collected = server.cli("gc", "--grace", "0")
    assert collected.returncode == 0, collected.stderr
    assert _state(server, headers, upload_id)["checkpoints/model.bin"]["received"] == sent

    # A chunk that does not start where the bytes end (a gap, or an overlap) is refused with where to resume.
    for start in (sent + 10, sent - 10, 0):
        refused = _put(server, headers, upload_id, "checkpoints/model.bin", weights[start : start + 100], start, total)
        error = _error(refused, 409, "offset_mismatch", "checkpoints/model.bin", f"resume at byte {sent}")
        assert error["details"] == {"path": "checkpoints/model.bin", "received": sent}
    early = httpx.post(f"{server.url}{API}/uploads/{upload_id}/commit", headers=headers)
    error = _error(
        early, 409, "incomplete", upload_id, f"checkpoints/model.bin ({sent} of {total} bytes)", "config.json"
    )
    assert error["details"]["incomplete"] == [
        {"path": "checkpoints/model.bin", "size": total, "received": sent},
        {"path": "config.json", "size": len(config), "received": 0},
    ]

    resumed = _put(server, headers, upload_id, "checkpoints/model.bin", weights[sent:], sent, total)
    assert resumed.status_code == 200 and resumed.json()["complete"] is True, resumed.text
    whole = httpx.put(f"{server.url}{API}/uploads/{upload_id}/files/config.json", headers=headers, content=config)
    assert whole.json() == {"path": "config.json", "received": len(config), "complete": True}
    again = httpx.put(f"{server.url}{API}/uploads/{upload_id}/files/config.json", headers=headers, content=config)
    _error(again, 409, "offset_mismatch", "config.json", "complete already")
    assert _blobs(server) == []  # still nothing stored before the commit

    committed = httpx.post(f"{server.url}{API}/uploads/{upload_id}/commit", headers=headers, timeout=120)
    assert committed.status_code == 201, committed.text
    version = committed.json()
    assert version["ref"] == "gpt-small-v1@1" and version["manifest"]["task"] == "lm-finetune"
    assert version["source_path"] == f"upload {upload_id} by tara"
    for path, data in files.items():
        downloaded = _download(server, headers, version["ref"], path)
        assert downloaded.content == data and downloaded.headers["etag"] == f'"{_sha(data)}"'
    gone = httpx.get(f"{server.url}{API}/uploads/{upload_id}", headers=headers)
    _error(gone, 404, "not_found", upload_id)
    assert _scratch(server) == []
    _log_is_clean(server, key)


def test_aborting_an_upload_removes_its_bytes_and_only_its_owner_or_an_admin_sees_it(server: ServerProcess) -> None:
    owner_key, other_key, admin_key = server.key("trainer"), server.key("trainer"), server.key("admin")
    owner, other, admin = server.auth(owner_key), server.auth(other_key), server.auth(admin_key)
    data = os.urandom(200_000)
    created = httpx.post(server.url + API + "/uploads", headers=owner, json={"files": _declared({"w.bin": data})})
    upload_id = created.json()["upload_id"]
    assert _put(server, owner, upload_id, "w.bin", data[:1000], 0, len(data)).json()["received"] == 1000
    assert (server.home / "tmp" / "uploads" / upload_id / "parts" / "0").stat().st_size == 1000

    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/commit")):
        refused = httpx.request(method, f"{server.url}{API}/uploads/{upload_id}{suffix}", headers=other)
        _error(refused, 404, "not_found", upload_id)  # another's session answers as a missing one
    refused = _put(server, other, upload_id, "w.bin", data[1000:2000], 1000, len(data))
    _error(refused, 404, "not_found", upload_id)
    assert _state(server, admin, upload_id)["w.bin"]["received"] == 1000

    aborted = httpx.delete(f"{server.url}{API}/uploads/{upload_id}", headers=owner)
    assert aborted.status_code == 204
    assert _scratch(server) == []
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/commit")):
        _error(httpx.request(method, f"{server.url}{API}/uploads/{upload_id}{suffix}", headers=owner), 404, "not_found")
    _error(_put(server, owner, upload_id, "w.bin", data[1000:], 1000, len(data)), 404, "not_found", upload_id)
    _error(httpx.get(f"{server.url}{API}/uploads/{'0' * 32}", headers=owner), 404, "not_found")
    _error(httpx.get(f"{server.url}{API}/uploads/not-an-id", headers=owner), 404, "not_found")
    _nothing_stored(server, owner, [])
    _log_is_clean(server, owner_key, other_key, admin_key)


def test_chunked_bytes_that_miss_the_declared_digest_are_dropped_and_nothing_is_stored(server: ServerProcess) -> None:
    key = server.key("trainer")
    headers = server.auth(key)
    declared, sent = b"the declared bytes" * 100, b"other bytes, same size!" * 100
    sent = sent[: len(declared)]
    created = httpx.post(
        server.url + API + "/uploads",
        headers=headers,
        json={"files": _declared({"model.bin": declared}), "options": {"artifact_name": "digest-check-v1"}},
    )
    upload_id = created.json()["upload_id"]
    half = len(sent) // 2
    assert _put(server, headers, upload_id, "model.bin", sent[:half], 0, len(sent)).status_code == 200
    last = _put(server, headers, upload_id, "model.bin", sent[half:], half, len(sent))
    error = _error(last, 422, "digest_mismatch", "model.bin", _sha(sent), _sha(declared), "send the file again")
    assert error["details"]["received"] == 0
    assert _state(server, headers, upload_id)["model.bin"] == {
        "path": "model.bin",
        "size": len(declared),
        "received": 0,
        "complete": False,
    }
    _error(httpx.post(f"{server.url}{API}/uploads/{upload_id}/commit", headers=headers), 409, "incomplete", "model.bin")
    _nothing_stored(server, headers, [])
    assert httpx.delete(f"{server.url}{API}/uploads/{upload_id}", headers=headers).status_code == 204
    assert _scratch(server) == []

    empty = httpx.post(
        server.url + API + "/uploads", headers=headers, json={"files": [{"path": "e", "size": 0, "sha256": "0" * 64}]}
    )
    _error(empty, 422, "digest_mismatch", "e", _sha(b""))
    _nothing_stored(server, headers, [])
    assert _scratch(server) == []
    _log_is_clean(server, key)


def test_chunk_ranges_that_do_not_fit_are_refused(limited_server: ServerProcess) -> None:
    server = limited_server
    key = server.key("trainer")
    headers = server.auth(key)
    data = os.urandom(10_000)
    created = httpx.post(server.url + API + "/uploads", headers=headers, json={"files": _declared({"w.bin": data})})
    upload_id = created.json()["upload_id"]
    url = f"{server.url}{API}/uploads/{upload_id}/files/w.bin"
    for header, status, named in (
        ("bytes=0-99/10000", 422, "Content-Range"),
        ("bytes 0-99", 422, "Content-Range"),
        ("bytes 99-0/10000", 422, "ends before it starts"),
        ("bytes 0-99/20000", 422, "20000 bytes; 10000 were declared"),
    ):
        refused = httpx.put(url, headers={**headers, "Content-Range": header}, content=data[:100])
        _error(refused, status, "invalid_input", named)
    beyond = httpx.put(url, headers={**headers, "Content-Range": "bytes 9900-10099/10000"}, content=os.urandom(200))
    _error(beyond, 413, "too_large", "beyond its declared size of 10000")
    longer = httpx.put(url, headers=headers, content=data + b"more")
    _error(longer, 413, "too_large", "w.bin", "10000")
    mismatch = httpx.put(url, headers={**headers, "Content-Range": "bytes 0-49/10000"}, content=data[:100])
    _error(mismatch, 422, "invalid_input", "Content-Length 100", "bytes 0-49")
    undeclared = httpx.put(f"{server.url}{API}/uploads/{upload_id}/files/other.bin", headers=headers, content=b"x")
    _error(undeclared, 404, "not_found", "other.bin")
    assert _state(server, headers, upload_id)["w.bin"]["received"] == 0  # no refused byte was kept

    too_big = httpx.post(
        server.url + API + "/uploads",
        headers=headers,
        json={"files": [{"path": "huge.bin", "size": 64 * 1024 + 1, "sha256": "a" * 64}]},
    )
    error = _error(too_big, 413, "too_large", "huge.bin", "65537", "MODELYARD_UPLOAD_MAX_FILE_SIZE")
    assert error["details"]["field"] == "files[0].size"
    _nothing_stored(server, headers, [])
    _log_is_clean(server, key)


# -- seed 000's upload ZIP --------------------------------------------------------------------------


def test_seed_000_upload_zip_becomes_one_version_with_the_manifests_fields(
    server: ServerProcess, tmp_path: Path
) -> None:
    key = server.key("trainer", name="tara")
    headers = server.auth(key)
    files = _run_files(tmp_path / "vit_run_5")
    manifest = json.dumps(SEED_MANIFEST).encode()
    # `zip -r run.zip vit_run_5/`: one top directory, the manifest at its top.
    entries = [(f"vit_run_5/{path}", data) for path, data in files.items()]
    upload = _zip([("vit_run_5/", b""), *entries, ("vit_run_5/artifact_manifest.json", manifest)])
    metadata = _metadata(sha256=_sha(upload), options={"license": "apache-2.0"})

    created = httpx.post(
        server.url + API + "/zip", headers=headers, files={"metadata": metadata, "file": ("vit.zip", upload)}
    )
    assert created.status_code == 201, created.text
    version = created.json()
    assert version["ref"] == "vision-vit-base16-embed-v1@1" and version["created"] is True
    stored = version["manifest"]
    for field, value in SEED_MANIFEST.items():
        assert stored[field] == value, field
    assert stored["license"] == "apache-2.0" and stored["run_name"] == "vit_run_5"
    assert stored["model_version"] == 1 and stored["quantized"] is False
    assert {f["path"] for f in stored["files"]} == set(files)  # the manifest is metadata, not a file
    assert (version["source_path"], version["registered_by"]) == ("vit.zip (uploaded by tara)", "tara")
    for path, data in files.items():
        downloaded = _download(server, headers, version["ref"], path)
        assert downloaded.content == data and downloaded.headers["etag"] == f'"{_sha(data)}"'

    again = httpx.post(
        server.url + API + "/zip", headers=headers, files={"metadata": metadata, "file": ("vit.zip", upload)}
    )
    assert again.status_code == 200 and again.json()["ref"] == "vision-vit-base16-embed-v1@1", again.text
    # Without a top directory the run is named after the ZIP (and the run's name makes a new version).
    flat = _zip([*files.items(), ("artifact_manifest.json", manifest)])
    renamed = httpx.post(server.url + API + "/zip", headers=headers, files={"file": ("vit_run_6.zip", flat)})
    assert renamed.status_code == 201 and renamed.json()["ref"] == "vision-vit-base16-embed-v1@2", renamed.text
    assert renamed.json()["manifest"]["run_name"] == "vit_run_6"
    assert _scratch(server) == []
    _log_is_clean(server, key)


def test_bad_zips_are_refused_naming_the_entry_and_nothing_is_stored(server: ServerProcess) -> None:
    key = server.key("trainer")
    headers = server.auth(key)
    manifest = json.dumps(SEED_MANIFEST).encode()
    good = _zip([("run/artifact_manifest.json", manifest), ("run/model.bin", b"w" * 1000)])
    cases: list[tuple[bytes, str, tuple[str, ...]]] = [
        (_zip([("run/model.bin", b"w")]), "invalid_input", ("run/artifact_manifest.json", "no ")),
        (b"PK\x03\x04 this is no zip", "invalid_input", ("not a readable ZIP",)),
        (good[: len(good) // 2], "invalid_input", ("not a readable ZIP",)),
        (_zip([("artifact_manifest.json", manifest), ("../evil.bin", b"x")]), "invalid_input", ("'../evil.bin'",)),
        (_zip([("artifact_manifest.json", manifest), ("/etc/evil", b"x")]), "invalid_input", ("'/etc/evil'",)),
        (_zip([("artifact_manifest.json", manifest), ("a\\..\\b", b"x")]), "invalid_input", ("backslash",)),
        (
            _zip([("artifact_manifest.json", manifest), ("link", b"/etc/passwd")], symlinks=("link",)),
            "invalid_input",
            ("'link'", "symbolic link"),
        ),
        (
            _zip([("run/artifact_manifest.json", b'{"artifact_name": "x-v1", "colour": "red"}'), ("run/m", b"m")]),
            "invalid_input",
            ("bad.zip (entry run/artifact_manifest.json)", "colour"),
        ),
    ]
    for upload, code, named in cases:
        response = httpx.post(server.url + API + "/zip", headers=headers, files={"file": ("bad.zip", upload)})
        _error(response, 422, code, "bad.zip", *named, home=server.home)
    # zipfile cuts names at a NUL when it reads them: the entry is judged by its name as stored.
    nul = _zip([("artifact_manifest.json", manifest), ("evil.binXmore", b"x")]).replace(
        b"evil.binXmore", b"evil.bin\x00more"
    )
    response = httpx.post(server.url + API + "/zip", headers=headers, files={"file": ("bad.zip", nul)})
    _error(response, 422, "invalid_input", "NUL byte", home=server.home)

    mismatch = httpx.post(
        server.url + API + "/zip",
        headers=headers,
        files={"metadata": _metadata(sha256="0" * 64), "file": ("good.zip", good)},
    )
    _error(mismatch, 422, "digest_mismatch", _sha(good), "0" * 64, home=server.home)
    wrong_part = httpx.post(server.url + API + "/zip", headers=headers, files={"archive": ("good.zip", good)})
    _error(wrong_part, 422, "invalid_input", "'archive'", "'file'")
    no_file = httpx.post(server.url + API + "/zip", headers=headers, files={"metadata": _metadata()})
    _error(no_file, 422, "invalid_input", "no ZIP")
    _nothing_stored(server, headers, [])
    assert _scratch(server) == []
    _log_is_clean(server, key)


# -- bad input and security -----------------------------------------------------------------------


def test_uploads_need_a_valid_key_with_the_register_permission(server: ServerProcess) -> None:
    viewer_key, deployer_key = server.key("viewer", name="vera"), server.key("deployer", name="dora")
    data = b"weights"
    declared = {"files": _declared({"w.bin": data})}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/uploads", {"json": declared}),
        ("GET", f"/uploads/{'a' * 32}", {}),
        ("PUT", f"/uploads/{'a' * 32}/files/w.bin", {"content": data}),
        ("POST", f"/uploads/{'a' * 32}/commit", {}),
        ("DELETE", f"/uploads/{'a' * 32}", {}),
        ("POST", "/artifacts", {"files": [("metadata", _metadata()), ("file", ("w.bin", data))]}),
        ("POST", "/zip", {"files": {"file": ("run.zip", _zip([("w.bin", data)]))}}),
    ]
    for method, path, body in requests:
        for headers in ({}, server.auth("myd_" + "x" * 43), {"Authorization": "Basic dXNlcjpwYXNz"}):
            response = httpx.request(method, server.url + API + path, headers=headers, **body)
            error = _error(response, 401, "unauthenticated")
            assert "key" in error["message"].lower() and response.headers["www-authenticate"] == "Bearer"
        for key, role in ((viewer_key, "viewer"), (deployer_key, "deployer")):
            response = httpx.request(method, server.url + API + path, headers=server.auth(key), **body)
            _error(response, 403, "forbidden", f"({role})", "'register'")
    server.cli("keys", "revoke", "vera")
    revoked = httpx.post(server.url + API + "/uploads", headers=server.auth(viewer_key), json=declared)
    _error(revoked, 401, "unauthenticated", "revoked")
    _nothing_stored(server, server.auth(server.key("admin")), [])
    assert _scratch(server) == []
    _log_is_clean(server, viewer_key, deployer_key)


def test_file_paths_that_would_leave_the_version_are_refused(server: ServerProcess) -> None:
    key = server.key("trainer")
    headers = server.auth(key)
    unsafe = ["../x", "/abs", "a\x00b", "a/../../b", "a/./b", "a//b", "a\\b", ".."]
    for path in unsafe:
        declared = [
            {"path": "ok.bin", "size": 1, "sha256": _sha(b"1")},
            {"path": path, "size": 1, "sha256": _sha(b"1")},
        ]
        response = httpx.post(server.url + API + "/uploads", headers=headers, json={"files": declared})
        error = _error(response, 422, "invalid_input", "files[1].path", "cannot be stored")
        assert error["details"]["field"] == "files[1].path"
    clash = [{"path": "a", "size": 1, "sha256": _sha(b"1")}, {"path": "a/b", "size": 1, "sha256": _sha(b"1")}]
    _error(
        httpx.post(server.url + API + "/uploads", headers=headers, json={"files": clash}), 422, "invalid_input", "'a'"
    )
    twice = [{"path": "a", "size": 1, "sha256": _sha(b"1")}] * 2
    _error(
        httpx.post(server.url + API + "/uploads", headers=headers, json={"files": twice}), 422, "invalid_input", "twice"
    )

    meta = json.dumps({"options": {"artifact_name": "paths-check-v1"}}).encode()
    for filename in (b"../x", b"/abs", b"a\x00b", b"a/b/../../c", b"", b"a\\b"):
        body, content_type = _multipart(
            [(b'name="metadata"', meta), (b'name="file"; filename="' + filename + b'"', b"x")]
        )
        response = httpx.post(
            server.url + API + "/artifacts", headers={**headers, "Content-Type": content_type}, content=body
        )
        error = _error(response, 422, "invalid_input", "field 'filename'", "cannot be stored", home=server.home)
        assert error["details"]["field"] == "filename"
    body, content_type = _multipart([(b'name="metadata"', meta), (b"name=\"file\"; filename*=UTF-8''..%2Fx", b"x")])
    response = httpx.post(
        server.url + API + "/artifacts", headers={**headers, "Content-Type": content_type}, content=body
    )
    _error(response, 422, "invalid_input", "filename*")
    _nothing_stored(server, headers, [])
    assert _scratch(server) == []
    _log_is_clean(server, key)


def test_malformed_json_and_unknown_fields_are_refused_naming_the_field(server: ServerProcess) -> None:
    key = server.key("trainer")
    headers = server.auth(key)
    file = {"path": "w.bin", "size": 1, "sha256": _sha(b"1")}
    url = server.url + API + "/uploads"
    malformed = httpx.post(url, headers={**headers, "Content-Type": "application/json"}, content=b'{"files": [')
    _error(malformed, 422, "invalid_input", "JSON")
    for body, field in (
        ({"files": [file], "colour": "red"}, "colour"),
        ({"files": [{**file, "mode": 420}]}, "files.0.mode"),
        ({"files": [file], "options": {"artifact_nam": "x"}}, "options.artifact_nam"),
        ({"files": [{**file, "sha256": "ABC"}]}, "files.0.sha256"),
        ({"files": [{**file, "size": -1}]}, "files.0.size"),
        ({"files": []}, "files"),
        ({"files": [file], "options": {"precision": "fp8"}}, "options.precision"),
        ({"files": [file], "options": {"embedding_dim": 0}}, "options.embedding_dim"),
    ):
        error = _error(httpx.post(url, headers=headers, json=body), 422, "invalid_input", f"'{field}'")
        assert error["details"]["field"] == field

    artifacts = server.url + API + "/artifacts"
    for metadata, field, named in (
        ('{"options": {', "metadata", "not valid JSON"),
        ('{"options": {"artifact_nam": "x"}}', "metadata.options.artifact_nam", "unknown field"),
        ('{"colour": 1}', "metadata.colour", "unknown field"),
        ('{"options": {"precision": "fp8"}}', "metadata.options.precision", "fp16"),
    ):
        files = [("metadata", (None, metadata, "application/json")), ("file", ("w.bin", b"1"))]
        error = _error(httpx.post(artifacts, headers=headers, files=files), 422, "invalid_input", f"'{field}'", named)
        assert error["details"]["field"] == field
    not_multipart = httpx.post(artifacts, headers=headers, json={"options": {}})
    _error(not_multipart, 422, "invalid_input", "Content-Type", "multipart/form-data")
    stray = httpx.post(artifacts, headers=headers, files=[("metadata", _metadata()), ("notes", (None, "hi"))])
    _error(stray, 422, "invalid_input", "'notes'")
    no_files = httpx.post(artifacts, headers=headers, files=[("metadata", _metadata())])
    _error(no_files, 422, "invalid_input", "no files")
    body, content_type = _multipart([(b'name="metadata"', b"{}"), (b'name="file"; filename="w.bin"', b"1")])
    cut = httpx.post(artifacts, headers={**headers, "Content-Type": content_type}, content=body[:-8])
    _error(cut, 422, "invalid_input", "closing boundary")
    twice = httpx.post(artifacts, headers=headers, files=[("file", ("w.bin", b"1")), ("file", ("w.bin", b"2"))])
    _error(twice, 422, "invalid_input", "'w.bin'", "twice")
    _nothing_stored(server, headers, [])
    assert _scratch(server) == []
    _log_is_clean(server, key)


def test_oversized_requests_are_refused_with_413_and_nothing_is_kept(limited_server: ServerProcess) -> None:
    server = limited_server
    key = server.key("trainer")
    headers = server.auth(key)
    big = os.urandom(64 * 1024 + 1)
    parts = [("metadata", _metadata(options={"artifact_name": "big-v1"})), ("file", ("big.bin", big))]
    response = httpx.post(server.url + API + "/artifacts", headers=headers, files=parts)
    _error(response, 413, "too_large", "big.bin", "65536", "MODELYARD_UPLOAD_MAX_FILE_SIZE", home=server.home)
    upload = _zip([("artifact_manifest.json", json.dumps(SEED_MANIFEST).encode()), ("big.bin", big)])
    response = httpx.post(server.url + API + "/zip", headers=headers, files={"file": ("big.zip", upload)})
    _error(response, 413, "too_large", "65536", home=server.home)
    # A declaration bigger than any upload can be (32 MiB of JSON) is refused before it is read whole.
    padding = "x" * (32 * MiB)
    response = httpx.post(
        server.url + API + "/uploads",
        headers=headers,
        json={"files": [{"path": "w.bin", "size": 1, "sha256": "a" * 64}], "note": padding},
        timeout=120,
    )
    _error(response, 413, "too_large", "body", str(32 * MiB))
    _nothing_stored(server, headers, [])
    assert _scratch(server) == []
    _log_is_clean(server, key)


def test_a_killed_servers_upload_scratch_is_removed_by_the_next_upload(server: ServerProcess) -> None:
    key = server.key("trainer")
    meta = json.dumps({"options": {"artifact_name": "killed-v1"}}).encode()
    body, content_type = _multipart([(b'name="metadata"', meta), (b'name="file"; filename="w.bin"', b"w" * MiB)])
    head = (
        f"POST {API}/artifacts HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
        _wait_for(lambda: any(p.name.startswith("upload-") for p in (server.home / "tmp").iterdir()), "the scratch")
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGKILL)  # the server dies mid-upload
        server.process.wait(timeout=30)
    abandoned = [p.name for p in (server.home / "tmp").iterdir() if p.name.startswith("upload-")]
    server.start()
    parts = [("metadata", _metadata(options={"artifact_name": "next-v1"})), ("file", ("w.bin", b"1"))]
    assert httpx.post(server.url + API + "/artifacts", headers=server.auth(key), files=parts).status_code == 201
    left = {p.name for p in (server.home / "tmp").iterdir()}
    assert not left & set(abandoned)
