"""`modelyard pull NAME@REF --from http://127.0.0.1:PORT` end to end: a node fetches a version
from a real server (in a subprocess) with its API key, verifies every file, reports back, and the
server's status matrix shows it. Interrupted downloads resume with a Range request, damaged kept
bytes are caught by the SHA-256 check, a damaged installed copy is repaired block by block, and a
wrong key is a clear error.

What travelled is read from the server's own /metrics: the response bytes of the blob route.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import write_safetensors
from modelyard.distribute.source import REPAIR_BLOCK_SIZE
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry
from serverproc import ServerProcess, free_port

ARTIFACT = "tiny-llm-v1"
WEIGHTS = "model.safetensors"
BLOB_ROUTE = "/api/v1/blobs/{sha256}"
BLOCKS_ROUTE = "/api/v1/blobs/{sha256}/blocks"


@dataclass
class Upstream:
    """The server, a deployer's key, and the files of ARTIFACT@1 as registered."""

    server: ServerProcess
    key: str
    source: Path

    def headers(self) -> dict[str, str]:
        return self.server.auth(self.key)

    def describe(self) -> dict[str, Any]:
        response = httpx.get(
            f"{self.server.url}/api/v1/artifacts/{ARTIFACT}/versions/1/describe",
            params={"require_stage": "any"},
            headers=self.headers(),
        )
        assert response.status_code == 200, response.text
        artifact: dict[str, Any] = response.json()["artifact"]
        return artifact

    def sent(self, route: str = BLOB_ROUTE) -> float:
        """The response body bytes the server has sent on a route (GET)."""
        return _metric(self.server, "modelyard_http_response_body_bytes_total", method="GET", route=route)

    def requests(self, route: str, status: str) -> float:
        return _metric(self.server, "modelyard_http_requests_total", method="GET", route=route, status=status)

    def deployments(self, node: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.server.url}/api/v1/deployments", params={"node": node}, headers=self.headers(), timeout=60
        )
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["deployments"]
        return rows


def _metric(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=60).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A server holding ARTIFACT@1: a Hugging Face folder whose weights span two repair blocks."""
    root = tmp_path_factory.mktemp("pull-http")
    source = root / "runs" / ARTIFACT
    write_safetensors(source / WEIGHTS, shape=(1536, 1024))  # 6 MiB of float32: blocks of 4 MiB and 2 MiB
    (source / "config.json").write_text(
        json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4})
    )
    server = ServerProcess(home=root / "home", port=free_port())
    server.home.mkdir()
    with Registry.open(server.home) as opened:
        opened.register(source, RegisterOptions(artifact_name=ARTIFACT))
    server.start()
    try:
        yield Upstream(server, server.key("deployer", name="edge-puller"), source)
    finally:
        server.stop()


def pull(
    registry: Upstream, to: Path, *args: str, key: str | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`modelyard pull` on a "node": its own MODELYARD_HOME, the key in MODELYARD_API_KEY."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["MODELYARD_HOME"] = str(to.parent / "node-home")
    if key != "":
        env["MODELYARD_API_KEY"] = key or registry.key
    argv = [f"{ARTIFACT}@1", "--to", str(to), "--from", url or registry.server.url, "--require-stage", "any"]
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "pull", *argv, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def pulled(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(artifact: dict[str, Any]) -> dict[str, Any]:
    planned: dict[str, Any] = next(f for f in artifact["files"] if f["path"] == WEIGHTS)
    return planned


def _blob_bytes(artifact: dict[str, Any]) -> int:
    """The bytes of the blobs a first pull fetches (the manifest comes with the description)."""
    return sum({f["sha256"]: f["size"] for f in artifact["files"] if f["path"] != "artifact_manifest.json"}.values())


def _part_file(to: Path, artifact: dict[str, Any], digest: str) -> Path:
    """Where a pull keeps a blob it is downloading: `<to>/.modelyard/<target>/.blobs/<ab>/<digest>.part`."""
    return to / ".modelyard" / artifact["target_name"] / ".blobs" / digest[:2] / f"{digest}.part"


def _check_installed(to: Path, artifact: dict[str, Any]) -> Path:
    serving = to / artifact["target_name"]
    assert os.readlink(serving) == f".modelyard/{artifact['target_name']}/{artifact['version_dir']}"
    for planned in artifact["files"]:
        assert _sha256(serving / planned["path"]) == planned["sha256"], planned["path"]
    return serving


# == a pull, reported to the server ==============================================================================


def test_a_pull_over_http_installs_verified_files_and_the_server_shows_the_node(
    registry: Upstream, tmp_path: Path
) -> None:
    artifact = registry.describe()
    to = tmp_path / "models"
    before = registry.sent()

    report = pulled(pull(registry, to, "--node", "edge1", "--json"))
    assert (report["status"], report["reported"], report["report_problem"]) == ("activated", True, None)
    assert report["fetched_files"] == len([f for f in artifact["files"] if f["path"] != "artifact_manifest.json"])
    assert report["checks"]["sha256"]["status"] == "passed"
    serving = _check_installed(to, artifact)
    assert (serving / WEIGHTS).read_bytes() == (registry.source / WEIGHTS).read_bytes()
    assert registry.sent() - before == _blob_bytes(artifact)  # each blob once, whole
    assert not list((to / ".modelyard" / artifact["target_name"] / ".blobs").rglob("*.part"))

    (row,) = registry.deployments("edge1")
    assert (row["status"], row["ref"], row["version_dir"]) == ("activated", f"{ARTIFACT}@1", artifact["version_dir"])
    assert row["updated_by"] == "edge-puller (pull from edge1)" and row["serving_path"] == str(serving)

    again = pulled(pull(registry, to, "--node", "edge1", "--json"))
    assert again["up_to_date"] is True and again["fetched_files"] == 0
    assert registry.sent() - before == _blob_bytes(artifact)  # nothing fetched again


def test_an_interrupted_download_resumes_with_a_range_request(registry: Upstream, tmp_path: Path) -> None:
    artifact = registry.describe()
    weights = _weights(artifact)
    to = tmp_path / "models"
    kept = 2 * REPAIR_BLOCK_SIZE // 3 + 123  # what an earlier try had written before it was cut off
    part = _part_file(to, artifact, weights["sha256"])
    part.parent.mkdir(parents=True)
    part.write_bytes((registry.source / WEIGHTS).read_bytes()[:kept])
    before, ranges_before = registry.sent(), registry.requests(BLOB_ROUTE, "206")

    report = pulled(pull(registry, to, "--node", "edge2", "--json"))
    assert report["status"] == "activated"
    _check_installed(to, artifact)
    assert registry.sent() - before == _blob_bytes(artifact) - kept  # only the rest of the weights travelled
    assert registry.requests(BLOB_ROUTE, "206") - ranges_before == 1
    assert not part.exists()


def test_damaged_kept_bytes_are_caught_by_the_sha256_check_and_fetched_again(
    registry: Upstream, tmp_path: Path
) -> None:
    artifact = registry.describe()
    weights = _weights(artifact)
    to = tmp_path / "models"
    kept = 3 * REPAIR_BLOCK_SIZE // 4
    damaged = bytearray((registry.source / WEIGHTS).read_bytes()[:kept])
    damaged[1000] ^= 0xFF  # the leading bytes look like a resumable start but are not the blob's
    part = _part_file(to, artifact, weights["sha256"])
    part.parent.mkdir(parents=True)
    part.write_bytes(bytes(damaged))
    before = registry.sent()

    report = pulled(pull(registry, to, "--node", "edge3", "--json"))
    assert report["status"] == "activated"
    serving = _check_installed(to, artifact)
    assert (serving / WEIGHTS).read_bytes() == (registry.source / WEIGHTS).read_bytes()
    # The rest was resumed, its digest failed, then the whole blob came again.
    assert registry.sent() - before == _blob_bytes(artifact) - kept + weights["size"]


# == repair by block ======================================================================================


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_a_damaged_copy_is_repaired_by_fetching_only_the_blocks_that_differ(registry: Upstream, tmp_path: Path) -> None:
    artifact = registry.describe()
    weights = _weights(artifact)
    to = tmp_path / "models"
    serving = to / artifact["target_name"]
    pulled(pull(registry, to, "--node", "edge4", "--json"))
    last_block = weights["size"] - REPAIR_BLOCK_SIZE  # the second block: 2 MiB

    # Bit rot after the pull: the file's size and mtime change nothing the state sees as wrong...
    stat = (serving / WEIGHTS).stat()
    _flip(serving / WEIGHTS, REPAIR_BLOCK_SIZE + 4096)
    os.utime(serving / WEIGHTS, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    unnoticed = pulled(pull(registry, to, "--node", "edge4", "--json"))
    assert unnoticed["up_to_date"] is True
    # ...--repair hashes the copy, asks the server for its block digests and fetches one block.
    before, blocks_before = registry.sent(), registry.requests(BLOCKS_ROUTE, "200")
    repaired = pulled(pull(registry, to, "--node", "edge4", "--repair", "--json"))
    assert (repaired["status"], repaired["repaired"]) == ("activated", [WEIGHTS])
    assert repaired["repair_bytes"] == last_block
    assert registry.sent() - before == last_block
    assert registry.requests(BLOCKS_ROUTE, "200") - blocks_before == 1
    _check_installed(to, artifact)

    # An edit the state notices (a new mtime) is repaired without --repair; damage in the first block.
    _flip(serving / WEIGHTS, 10)
    before = registry.sent()
    noticed = pulled(pull(registry, to, "--node", "edge4", "--json"))
    assert (noticed["repaired"], noticed["repair_bytes"]) == ([WEIGHTS], REPAIR_BLOCK_SIZE)
    assert registry.sent() - before == REPAIR_BLOCK_SIZE
    _check_installed(to, artifact)
    (row,) = registry.deployments("edge4")
    assert row["status"] == "activated"


# == keys ==============================================================================================================


def _one_line_error(result: subprocess.CompletedProcess[str], exit_code: int, *needles: str) -> str:
    assert result.returncode == exit_code, f"exit {result.returncode}, wanted {exit_code}:\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_wrong_missing_or_revoked_key_is_a_clear_error_and_nothing_is_installed(
    registry: Upstream, tmp_path: Path
) -> None:
    to = tmp_path / "models"
    wrong = pull(registry, to, key="myd_" + "x" * 43)
    line = _one_line_error(wrong, 11, "the registry refused the API key", "unknown or revoked API key")
    assert "x" * 43 not in line  # the key is never echoed
    _one_line_error(pull(registry, to, key=""), 3, "MODELYARD_API_KEY", "--from")
    revoked_key = registry.server.cli("keys", "create", "--name", "old-node", "--role", "deployer").stdout.split()[-1]
    registry.server.cli("keys", "revoke", "old-node")
    _one_line_error(pull(registry, to, key=revoked_key), 11, "unknown or revoked API key")
    assert not to.exists() or not any(to.iterdir())


def test_a_key_that_may_read_but_not_deploy_pulls_and_says_it_could_not_report(
    registry: Upstream, tmp_path: Path
) -> None:
    to = tmp_path / "models"
    viewer = registry.server.key("viewer", name="read-only-node")
    result = pull(registry, to, "--node", "edge5", key=viewer)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first == f"{ARTIFACT}@1 at {to / ARTIFACT}: activated (2 files fetched)"
    assert second.startswith("(could not report to the registry: ") and "'deploy'" in second
    _check_installed(to, registry.describe())
    assert registry.deployments("edge5") == []


def test_an_unknown_version_or_an_unreachable_server_is_a_clear_error(registry: Upstream, tmp_path: Path) -> None:
    to = tmp_path / "models"
    missing = subprocess.run(
        [sys.executable, "-m", "modelyard", "pull", "nope-v1@1", "--to", str(to), "--from", registry.server.url],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")},
            "MODELYARD_API_KEY": registry.key,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_line_error(missing, 4, "nope-v1")
    closed = f"http://127.0.0.1:{free_port()}"
    _one_line_error(pull(registry, to, url=closed), 10, "cannot reach the registry", closed)
    assert not to.exists() or not any(to.iterdir())
