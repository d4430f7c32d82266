"""The `modelyard` command line, run as a real process: output, JSON, and exit codes."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliResult, RunBuilder
from modelyard.manifest import SCHEMA_PATH

Cli = Callable[..., CliResult]


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("modelyard ")


def test_register_show_list_export_verify_gc(cli: Cli, make_run: RunBuilder, tmp_path: Path) -> None:
    run = make_run()
    config = run / "config.yaml"
    first = cli(
        "register", str(run), "--artifact-name", "vision-vit-base16-embed-v1", "--precision", "fp16",
        "--embedding-dim", "768", "--train-data-tag", "imagenet", "--train-data-tag", "coco",
        "--node-type", "encoder", "--config", str(config), "--license", "apache-2.0", "--json",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    data = first.json()
    assert (data["ref"], data["model_version"], data["created"]) == ("vision-vit-base16-embed-v1@1", 1, True)
    assert data["bytes_added"] == data["bytes_total"] > 0

    again = cli("register", str(run), "--artifact-name", "vision-vit-base16-embed-v1", "--precision", "fp16",
                "--embedding-dim", "768", "--train-data-tag", "imagenet", "--train-data-tag", "coco",
                "--node-type", "encoder", "--config", str(config), "--license", "apache-2.0")  # fmt: skip
    assert again.returncode == 0
    assert again.stdout.startswith("unchanged: vision-vit-base16-embed-v1@1 already holds these files")
    assert "nothing read" in again.stdout

    shown = cli("show", "vision-vit-base16-embed-v1", "--json").json()
    assert shown["model_version"] == 1
    assert shown["train_data_tags"] == ["imagenet", "coco"]
    assert shown["training_config"] == {"batch_size": 256, "epochs": 10, "learning_rate": 0.0001}
    human = cli("show", "vision-vit-base16-embed-v1@1").stdout
    assert "training_config_hash" in human and "checkpoints/best.safetensors" in human

    listed = cli("list", "--json", "--task", "embed").json()
    assert [row["ref"] for row in listed] == ["vision-vit-base16-embed-v1@1"]
    assert cli("list", "--tag", "nothing-like-this", "--json").json() == []
    table = cli("list").stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "VERSION"]
    assert table[1].startswith("vision-vit-base16-embed-v1")

    out_dir, out_zip = tmp_path / "exported", tmp_path / "upload.zip"
    exported = cli("export", "vision-vit-base16-embed-v1@1", "--to", str(out_dir), "--zip", str(out_zip))
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((out_dir / "artifact_manifest.json").read_text())
    assert manifest == shown
    assert (out_dir / "checkpoints" / "best.safetensors").read_bytes() == (
        run / "checkpoints" / "best.safetensors"
    ).read_bytes()
    with zipfile.ZipFile(out_zip) as archive:
        assert json.loads(archive.read("artifact_manifest.json")) == shown
        assert sorted(archive.namelist()) == sorted([f["path"] for f in shown["files"]] + ["artifact_manifest.json"])

    verified = cli("verify", "--json")
    assert verified.returncode == 0
    assert verified.json()["ok"] is True and verified.json()["blobs_checked"] == len(shown["files"])
    assert cli("verify", "vision-vit-base16-embed-v1@1").stdout.startswith("ok: ")

    gc = cli("gc", "--dry-run", "--grace", "0", "--json").json()
    assert gc["dry_run"] is True and gc["would_remove"] == [] and gc["blobs_referenced"] == len(shown["files"])


def test_exit_codes_and_one_line_errors(cli: Cli, make_run: RunBuilder, tmp_path: Path) -> None:
    missing = cli("register", str(tmp_path / "nope"))
    assert missing.returncode == 3
    assert missing.stderr == f"error: {tmp_path / 'nope'}: no such file or directory\n"

    bad_name = cli("register", str(make_run()), "--artifact-name", "Vision_embed")
    assert bad_name.returncode == 3
    assert "invalid character 'V' at position 1" in bad_name.stderr
    assert len(bad_name.stderr.strip().splitlines()) == 1

    quantize = cli("register", str(make_run("q")), "--quantize", "--precision", "fp16")
    assert quantize.returncode == 3 and "--quantize cannot go with precision fp16" in quantize.stderr

    usage = cli("register", str(make_run("u")), "--precision", "fp64")
    assert usage.returncode == 2  # rejected by the option's choices

    not_found = cli("show", "nothing-v1")
    assert not_found.returncode == 4 and "no artifact named 'nothing-v1'" in not_found.stderr

    exists = tmp_path / "occupied"
    exists.mkdir()
    (exists / "keep.txt").write_text("mine")
    cli("register", str(make_run("e")), "--artifact-name", "gpt-small-v1", check=True)
    conflict = cli("export", "gpt-small-v1", "--to", str(exists))
    assert conflict.returncode == 5 and "not an empty directory" in conflict.stderr
    assert [p.name for p in exists.iterdir()] == ["keep.txt"]

    assert cli("list", "--json").json()[0]["artifact_name"] == "gpt-small-v1"  # nothing else was registered


def test_schema_command_prints_the_committed_schema(cli: Cli) -> None:
    assert cli("schema").stdout == SCHEMA_PATH.read_text()


def test_help_documents_link_semantics(cli: Cli) -> None:
    text = " ".join(cli("register", "--help").stdout.split())
    assert "shares its inode" in text
    assert "read-only" in text


def test_quiet_and_non_terminal_print_no_progress(cli: Cli, make_run: RunBuilder) -> None:
    result = cli("register", str(make_run()), "--artifact-name", "gpt-small-v1", "--quiet")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("registered gpt-small-v1@1 ")


def test_a_terminal_gets_a_progress_bar_and_quiet_silences_it(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("script") is None:
        import pytest

        pytest.skip("needs util-linux 'script' to provide a pseudo-terminal")
    run = tmp_path / "run"
    run.mkdir()
    (run / "weights.bin").write_bytes(os.urandom(64 * 1024 * 1024))
    os.utime(run / "weights.bin", (1e9, 1e9))

    def on_terminal(home: str, *extra: str) -> str:
        command = [sys.executable, "-m", "modelyard", "register", str(run), "--artifact-name", "gpt-small-v1", *extra]
        proc = subprocess.run(
            ["script", "-qec", " ".join(command), "/dev/null"],
            capture_output=True,
            text=True,
            env={**os.environ, "MODELYARD_HOME": str(tmp_path / home)},
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout
        return proc.stdout

    shown = on_terminal("a")
    assert "storing" in shown and "MiB" in shown
    quiet = on_terminal("b", "--quiet")
    assert "storing" not in quiet
    assert "registered gpt-small-v1@1" in quiet


def test_the_demo_trains_quantizes_promotes_deploys_and_is_idempotent(cli: Callable[..., CliResult]) -> None:
    """`make demo`, the README's first command, on a fresh home: every step, then the same again."""
    pytest.importorskip("torch")
    first = cli("demo", check=True, timeout=600)
    for step in (
        "produces vision-tiny-mlp-classification-int8-v1",
        "| epoch 8/8",
        "quantized after training, vision-tiny-mlp-classification-int8-v1@1",
        "--policy policy.yaml: 5 gates passed",
        "--policy policy-int8.yaml: 6 gates passed",
        "modelyard approve vision-tiny-mlp-classification-int8-v1@2 --approved-by demo-approver",
        "edge-1   vision-tiny-mlp-classification-int8-v1@3 activated",
        "edge-1 ok, edge-2 ok",
        "modelyard serve --home",
    ):
        assert step in first.stdout, step
    assert "vision-tiny-mlp-classification-int8-v1  activated 3  activated 3" in first.stdout
    again = cli("demo", check=True, timeout=600)
    assert "already trained" in again.stdout and "already released" in again.stdout
    assert "edge-2   vision-tiny-mlp-classification-int8-v1@3 up to date" in again.stdout
    listed = cli("list", "--all-versions", "--json", check=True).json()
    assert sorted((row["ref"], row["stage"]) for row in listed) == [
        ("vision-tiny-mlp-classification-int8-v1@1", "raw"),
        ("vision-tiny-mlp-classification-int8-v1@2", "validated"),
        ("vision-tiny-mlp-classification-int8-v1@3", "production"),
        ("vision-tiny-mlp-classification-v1@1", "raw"),
        ("vision-tiny-mlp-classification-v1@2", "validated"),
    ]
    lineage = cli("lineage", "vision-tiny-mlp-classification-int8-v1@production", "--json", check=True).json()
    assert [step["ref"] for step in lineage][-1] == "vision-tiny-mlp-classification-v1@1"
