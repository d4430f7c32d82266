"""The server's read API over real HTTP: keys, listing, versions, downloads with ranges and ETags."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import httpx

from conftest import write_safetensors
from serverproc import ServerProcess


def _register(server: ServerProcess, tmp_path: Path, name: str = "tiny-llm-v1") -> Path:
    run = tmp_path / name
    run.mkdir()
    write_safetensors(run / "model.safetensors", shape=(256, 64))
    (run / "config.json").write_text('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}')
    server.cli("register", str(run), "--artifact-name", name, "-q")
    return run


def test_requests_without_a_valid_key_are_refused_with_one_error_body(server: ServerProcess) -> None:
    url = server.url + "/api/v1/artifacts"
    missing = httpx.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "unauthenticated"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    wrong = httpx.get(url, headers=server.auth("myd_not-a-key"))
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "unknown or revoked API key"
    malformed = httpx.get(url, headers={"Authorization": "Basic abc"})
    assert malformed.status_code == 401

    key = server.key("viewer", name="vera")
    assert httpx.get(url, headers=server.auth(key)).status_code == 200
    server.cli("keys", "revoke", "vera")
    revoked = httpx.get(url, headers=server.auth(key))
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "unauthenticated"


def test_a_key_is_printed_once_and_stored_only_as_its_digest(server: ServerProcess) -> None:
    created = server.cli("keys", "create", "--name", "svc", "--role", "trainer")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("myd_") and len(key) == 4 + 43
    files = [p for p in server.home.iterdir() if p.name.startswith("catalog.db")]
    assert files and all(key.encode() not in p.read_bytes() for p in files)  # WAL included
    with sqlite3.connect(server.home / "catalog.db") as db:
        stored = db.execute("SELECT digest, prefix FROM api_keys WHERE name = 'svc'").fetchone()
    assert stored == (hashlib.sha256(key.encode()).hexdigest(), key[:8])
    listed = server.cli("keys", "list").stdout
    assert "svc" in listed and key not in listed
    duplicate = server.cli("keys", "create", "--name", "svc", "--role", "viewer", check=False)
    assert duplicate.returncode == 5 and "exists" in duplicate.stderr
    bad_role = server.cli("keys", "create", "--name", "x", "--role", "root", check=False)
    assert bad_role.returncode == 3 and "--role" in bad_role.stderr and "viewer" in bad_role.stderr


def test_list_show_config_and_files_of_a_registered_version(server: ServerProcess, tmp_path: Path) -> None:
    _register(server, tmp_path)
    _register(server, tmp_path, "other-llm-v1")
    headers = server.auth(server.key("viewer"))
    page = httpx.get(server.url + "/api/v1/artifacts", params={"limit": 1}, headers=headers).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["artifact_name"] == "other-llm-v1"
    second = httpx.get(server.url + "/api/v1/artifacts", params={"limit": 1, "offset": 1}, headers=headers).json()
    assert second["items"][0]["artifact_name"] == "tiny-llm-v1"
    searched = httpx.get(server.url + "/api/v1/artifacts", params={"q": "TINY"}, headers=headers).json()
    assert [i["artifact_name"] for i in searched["items"]] == ["tiny-llm-v1"]
    version = httpx.get(server.url + "/api/v1/artifacts/tiny-llm-v1/versions/latest", headers=headers).json()
    assert version["ref"] == "tiny-llm-v1@1" and version["manifest"]["artifact_name"] == "tiny-llm-v1"
    config = httpx.get(server.url + "/api/v1/artifacts/tiny-llm-v1/versions/1/config", headers=headers).json()
    assert config["model_type"] == "llm"
    files = httpx.get(server.url + "/api/v1/artifacts/tiny-llm-v1/versions/1/files", headers=headers).json()
    assert {f["path"] for f in files} == {"config.json", "model.safetensors"}
    missing = httpx.get(server.url + "/api/v1/artifacts/nope-v1/versions/1", headers=headers)
    assert missing.status_code == 404 and "nope-v1" in missing.json()["error"]["message"]


def test_downloads_honour_ranges_and_etags(server: ServerProcess, tmp_path: Path) -> None:
    run = _register(server, tmp_path)
    headers = server.auth(server.key("viewer"))
    url = server.url + "/api/v1/artifacts/tiny-llm-v1/versions/1/files/model.safetensors"
    data = (run / "model.safetensors").read_bytes()
    whole = httpx.get(url, headers=headers)
    assert whole.status_code == 200 and whole.content == data
    etag = whole.headers["etag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    part = httpx.get(url, headers={**headers, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert httpx.get(url, headers={**headers, "If-None-Match": etag}).status_code == 304
    head = httpx.head(url, headers=headers)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    unknown = httpx.get(url.replace("model.safetensors", "nope.bin"), headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_bad_query_parameters_name_the_field(server: ServerProcess) -> None:
    headers = server.auth(server.key("viewer"))
    response = httpx.get(server.url + "/api/v1/artifacts", params={"limit": 0}, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "query.limit"
    stage = httpx.get(server.url + "/api/v1/artifacts", params={"stage": "gold"}, headers=headers)
    assert stage.status_code == 422 and "stage" in stage.json()["error"]["message"]
