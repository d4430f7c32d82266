"""The CLI against a server (MODELYARD_URL + MODELYARD_API_KEY): the same commands, the same
output and exit codes, nothing read from or written to a local registry home."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import write_safetensors
from serverproc import ServerProcess

ARTIFACT = "tiny-llm-v1"


def _run(tmp_path: Path, name: str = "run", *, seed: int = 0) -> Path:
    run = tmp_path / name
    (run / "checkpoints").mkdir(parents=True)
    write_safetensors(run / "checkpoints" / "best.safetensors", seed=seed, shape=(128, 64))
    (run / "config.json").write_text('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}')
    (run / "training.log").write_text("epoch 1 loss 0.5\n")
    return run


class Remote:
    """`modelyard` run as a client of `server` with `key`, its own (empty) home beside it."""

    def __init__(self, server: ServerProcess, key: str, cwd: Path) -> None:
        self.server = server
        self.key = key
        self.cwd = cwd
        self.local_home = cwd / "client-home"

    def __call__(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        env |= {
            "MODELYARD_URL": self.server.url,
            "MODELYARD_API_KEY": self.key if key is None else key,
            "MODELYARD_HOME": str(self.local_home),
        }
        return subprocess.run(
            [sys.executable, "-m", "modelyard", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def remote(server: ServerProcess, tmp_path: Path) -> Remote:
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    return Remote(server, server.key("admin", name="alice"), client_dir)


def test_register_list_show_and_export_go_through_the_server(remote: Remote, tmp_path: Path) -> None:
    run = _run(tmp_path)
    first = remote("register", str(run), "--artifact-name", ARTIFACT, "--base-model", "tiny", "--task", "lm", "--json")
    assert first.returncode == 0, first.stderr
    registered = json.loads(first.stdout)
    assert registered["ref"] == f"{ARTIFACT}@1" and registered["created"] is True
    assert "by alice" in remote("show", ARTIFACT).stdout  # the key's owner registered it
    again = remote("register", str(run), "--artifact-name", ARTIFACT, "--base-model", "tiny", "--task", "lm")
    assert again.returncode == 0 and f"unchanged: {ARTIFACT}@1" in again.stdout

    listed = remote("list", "--json")
    assert [row["ref"] for row in json.loads(listed.stdout)] == [f"{ARTIFACT}@1"]
    shown = remote("show", ARTIFACT)
    assert shown.returncode == 0, shown.stderr
    assert "model_type             llm" in shown.stdout and "checkpoints/best.safetensors" in shown.stdout
    manifest = json.loads(remote("show", ARTIFACT, "--json").stdout)
    assert manifest["base_model"] == "tiny" and manifest["task"] == "lm"
    # The server's own catalog holds the version; the client's home was never created.
    assert ARTIFACT in remote.server.cli("list").stdout
    assert not remote.local_home.exists()

    exported = remote("export", ARTIFACT, "--to", "out", "--zip", "out.zip")
    assert exported.returncode == 0, exported.stderr
    weights = (run / "checkpoints" / "best.safetensors").read_bytes()
    assert (remote.cwd / "out" / "checkpoints" / "best.safetensors").read_bytes() == weights
    assert json.loads((remote.cwd / "out" / "artifact_manifest.json").read_text())["artifact_name"] == ARTIFACT
    with zipfile.ZipFile(remote.cwd / "out.zip") as archive:
        assert archive.read("checkpoints/best.safetensors") == weights
        assert "artifact_manifest.json" in archive.namelist()


def test_an_interrupted_export_resumes_and_a_corrupt_part_is_discarded(remote: Remote, tmp_path: Path) -> None:
    run = _run(tmp_path)
    remote.server.cli("register", str(run), "--artifact-name", ARTIFACT, "-q")
    weights = (run / "checkpoints" / "best.safetensors").read_bytes()
    staging = remote.cwd / ".out.download" / "checkpoints"
    staging.mkdir(parents=True)
    # What an interrupted run leaves: the first bytes of the file, correct.
    (staging / "best.safetensors.part").write_bytes(weights[:5000])
    resumed = remote("export", ARTIFACT, "--to", "out")
    assert resumed.returncode == 0, resumed.stderr
    assert (remote.cwd / "out" / "checkpoints" / "best.safetensors").read_bytes() == weights
    assert not (remote.cwd / ".out.download").exists()

    # A partial file whose bytes are wrong: the whole file's SHA-256 catches it, nothing lands.
    staging = remote.cwd / ".bad.download" / "checkpoints"
    staging.mkdir(parents=True)
    (staging / "best.safetensors.part").write_bytes(b"\0" * 5000)
    refused = remote("export", ARTIFACT, "--to", "bad")
    assert refused.returncode == 6 and "another SHA-256" in refused.stderr
    assert not (remote.cwd / "bad").exists() and not (staging / "best.safetensors.part").exists()
    again = remote("export", ARTIFACT, "--to", "bad")
    assert again.returncode == 0 and (remote.cwd / "bad" / "checkpoints" / "best.safetensors").read_bytes() == weights


def test_the_lifecycle_runs_on_the_server_as_the_keys_owner(remote: Remote, tmp_path: Path) -> None:
    run = _run(tmp_path)
    config = tmp_path / "train.yaml"
    config.write_text("batch_size: 8\nlearning_rate: 1e-4\n")
    options = ["--artifact-name", ARTIFACT, "--base-model", "tiny", "--task", "lm", "--precision", "fp16"]
    assert remote("register", str(run), *options, "--config", str(config)).returncode == 0
    validated = remote("validate", f"{ARTIFACT}@1")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "PASSED" in validated.stdout
    promoted = remote("promote", f"{ARTIFACT}@1", "--to", "validated", "--json")
    assert promoted.returncode == 0, promoted.stderr
    validated_ref = json.loads(promoted.stdout)["ref"]

    approver = remote.server.key("approver", name="bob")
    approved = remote("approve", validated_ref, "--approved-by", "ignored-over-http", key=approver)
    assert approved.returncode == 0, approved.stderr
    production = remote("promote", validated_ref, "--to", "production", "--version", "1.0.0", key=approver)
    assert production.returncode == 0, production.stderr
    assert "approved by           bob" in remote("show", validated_ref).stdout
    shown = remote("show", f"{ARTIFACT}@production").stdout
    assert "stage                 production 1.0.0" in shown and "by bob" in shown  # bob made it
    assert "lineage" in shown and f"{ARTIFACT}@1 [raw]" in shown

    assert (
        remote("alias", "set", f"{ARTIFACT}@production", "champion", "--approved-by", "x", key=approver).returncode == 0
    )
    aliases = json.loads(remote("alias", "list", ARTIFACT, "--json").stdout)
    assert [(a["alias"], a["set_by"]) for a in aliases] == [("champion", "bob")]
    trainer = remote.server.key("trainer", name="tina")
    refused = remote("alias", "rm", ARTIFACT, "champion", "--approved-by", "tina", key=trainer)
    assert refused.returncode == 11 and "alias" in refused.stderr

    deprecated = remote("deprecate", f"{ARTIFACT}@1", "--reason", "superseded")
    assert deprecated.returncode == 0, deprecated.stderr
    assert "status                deprecated by alice" in remote("show", f"{ARTIFACT}@1").stdout
    events = json.loads(remote("audit", ARTIFACT, "--json").stdout)
    assert {("bob", "approve"), ("alice", "validate")} <= {(str(e["actor"]), str(e["action"])) for e in events}
    lineage = json.loads(remote("lineage", f"{ARTIFACT}@production", "--json").stdout)
    assert [step["stage"] for step in lineage][:3] == ["production", "validated", "raw"]


def test_errors_keep_their_exit_codes_and_say_what_to_do(remote: Remote, tmp_path: Path) -> None:
    missing = remote("show", "nope-v1")
    assert missing.returncode == 4 and "nope-v1" in missing.stderr
    wrong_key = remote("list", key="myd_wrong")
    assert wrong_key.returncode == 11 and "MODELYARD_API_KEY" in wrong_key.stderr
    no_key = remote("list", key="")
    assert no_key.returncode == 11 and "modelyard keys create" in no_key.stderr
    viewer = remote.server.key("viewer", name="vic")
    refused = remote("register", str(_run(tmp_path)), "--artifact-name", ARTIFACT, key=viewer)
    assert refused.returncode == 11 and "register" in refused.stderr
    assert "no artifacts match" in remote("list").stderr  # nothing was stored
    linked = remote("register", str(_run(tmp_path, "other")), "--artifact-name", ARTIFACT, "--link")
    assert linked.returncode == 3 and "--link" in linked.stderr
    policy = tmp_path / "policy.yaml"
    policy.write_text("gates: []\n")
    assert remote("validate", f"{ARTIFACT}@1", "--policy", str(policy)).returncode in (3, 4)

    unreachable = Remote(remote.server, remote.key, remote.cwd)
    unreachable.server = ServerProcess(home=tmp_path / "none", port=1)
    down = unreachable("list")
    assert down.returncode == 10 and "cannot reach the registry server" in down.stderr


def test_keys_are_managed_remotely_by_an_admin(remote: Remote) -> None:
    created = remote("keys", "create", "--name", "ci-bot", "--role", "trainer")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("myd_")
    assert httpx.get(remote.server.url + "/api/v1/artifacts", headers=remote.server.auth(secret)).status_code == 200
    listed = json.loads(remote("keys", "list", "--json").stdout)
    assert {"alice", "ci-bot"} <= {entry["name"] for entry in listed}
    assert remote("keys", "revoke", "ci-bot").returncode == 0
    assert httpx.get(remote.server.url + "/api/v1/artifacts", headers=remote.server.auth(secret)).status_code == 401
    viewer = remote.server.key("viewer", name="val")
    assert remote("keys", "list", key=viewer).returncode == 11


def test_a_zip_from_seed_000s_training_scripts_registers_as_one_version(remote: Remote, tmp_path: Path) -> None:
    run = _run(tmp_path)
    manifest = {"artifact_name": "vision-vit-base16-embed-v1", "base_model": "vit-base16", "task": "embed"}
    (run / "artifact_manifest.json").write_text(json.dumps(manifest))
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(run.rglob("*")):
            if file.is_file():
                out.write(file, file.relative_to(run).as_posix())
    registered = remote("register", str(archive), "--json")
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["ref"] == "vision-vit-base16-embed-v1@1"
    shown = json.loads(remote("show", "vision-vit-base16-embed-v1", "--json").stdout)
    digest = hashlib.sha256((run / "checkpoints" / "best.safetensors").read_bytes()).hexdigest()
    assert {f["path"]: f["sha256"] for f in shown["files"]}["checkpoints/best.safetensors"] == digest


def test_a_zip_registers_locally_too_and_link_or_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / "artifact_manifest.json").write_text(json.dumps({"artifact_name": "vision-vit-base16-embed-v1"}))
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(run.rglob("*")):
            if file.is_file():
                out.write(file, f"v5_5/{file.relative_to(run).as_posix()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")} | {
        "MODELYARD_HOME": str(tmp_path / "h")
    }

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelyard", *args], env=env, capture_output=True, text=True)

    linked = local("register", str(archive), "--link")
    assert linked.returncode == 3 and "--link" in linked.stderr
    registered = local("register", str(archive), "--json")
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["ref"] == "vision-vit-base16-embed-v1@1"
    files = {f["path"] for f in json.loads(local("show", "vision-vit-base16-embed-v1", "--json").stdout)["files"]}
    assert "checkpoints/best.safetensors" in files and "artifact_manifest.json" not in files
    bare = tmp_path / "bare.zip"
    with zipfile.ZipFile(bare, "w") as out:
        out.writestr("weights.bin", b"1234")
    refused = local("register", str(bare))
    assert refused.returncode == 3 and "artifact_manifest.json" in refused.stderr


def test_deployments_run_on_the_server_with_its_fleet(remote: Remote, tmp_path: Path) -> None:
    run = _run(tmp_path)
    remote.server.cli("register", str(run), "--artifact-name", ARTIFACT, "-q")
    node_root = tmp_path / "node-1"
    node_root.mkdir()
    (remote.server.home / "fleet.yaml").write_text(
        f"nodes:\n  - name: node-1\n    host: local\n    node_type: inference\n    models_root: {node_root}\n"
    )
    shown = json.loads(remote("fleet", "show", "--json").stdout)
    assert [node["name"] for node in shown["nodes"]] == ["node-1"]
    own_fleet = remote("fleet", "show", "--fleet", str(tmp_path / "mine.yaml"))
    assert own_fleet.returncode == 3 and "--fleet" in own_fleet.stderr

    deployer = remote.server.key("deployer", name="dora")
    planned = remote(
        "deploy", "plan", f"{ARTIFACT}@1=node-1", "--require-stage", "any", "--out", "plan.json", key=deployer
    )
    assert planned.returncode == 0, planned.stderr
    assert f"{ARTIFACT}@1 -> node-1" in planned.stdout and (remote.cwd / "plan.json").is_file()
    pushed = remote("deploy", "push", "plan.json", "-q", key=deployer)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "activated" in pushed.stdout
    served = node_root / ARTIFACT / "checkpoints" / "best.safetensors"
    assert served.read_bytes() == (run / "checkpoints" / "best.safetensors").read_bytes()
    status = remote("deploy", "status", key=deployer)
    assert "activated 1" in status.stdout
    assert remote("deploy", "verify", key=deployer).returncode == 0
    viewer = remote.server.key("viewer", name="vic")
    refused = remote("deploy", "push", "plan.json", key=viewer)
    assert refused.returncode == 11 and "deploy" in refused.stderr


def test_a_training_run_registers_itself_on_the_server_through_the_zip_upload(remote: Remote) -> None:
    pytest.importorskip("torch")
    trainer = remote.server.key("trainer", name="tess")
    trained = remote(
        "train",
        "--builtin",
        "tiny-classifier",
        "--component",
        "vision",
        "--base-model",
        "tiny-mlp",
        "--task",
        "classification",
        "--epochs",
        "2",
        "--quantize",
        "int8",
        "--json",
        key=trainer,
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert json.loads(trained.stdout)["registered"] == [
        "vision-tiny-mlp-classification-v1@1",
        "vision-tiny-mlp-classification-int8-v1@1",
    ]
    # On the server: registered by the key's owner from the upload ZIP, the int8 model linked to its float one.
    shown = remote("show", "vision-tiny-mlp-classification-int8-v1@1").stdout
    assert "by tess" in shown and ".zip (uploaded by tess)" in shown
    lineage = json.loads(remote("lineage", "vision-tiny-mlp-classification-int8-v1@1", "--json").stdout)
    assert [step["ref"] for step in lineage] == [
        "vision-tiny-mlp-classification-int8-v1@1",
        "vision-tiny-mlp-classification-v1@1",
    ]
    assert not list(remote.cwd.glob("runs/*.zip"))  # the upload ZIP is not left behind
