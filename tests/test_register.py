"""`register`: seed 000's metadata rules, versions, deduplication and the stat cache."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import RunBuilder, backdate, write_safetensors
from modelyard.digest import sha256_file, training_config_hash
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.names import MANIFEST_FILENAME
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry

SEED_FIRST_EXAMPLE = {
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


def test_run_manifest_is_the_metadata_source(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run(manifest=SEED_FIRST_EXAMPLE)
    result = registry.register(run)
    manifest = result.version.manifest
    assert result.version.ref == "vision-vit-base16-embed-v1@1"
    assert manifest.model_version == 1
    for key, value in SEED_FIRST_EXAMPLE.items():
        dumped = manifest.model_dump(mode="json", by_alias=True)
        assert dumped[key] == value, key
    assert manifest.quantized is False
    assert manifest.privacy_level == "none"
    assert manifest.run_name == "v5_5_20251124"
    paths = [f.path for f in manifest.files]
    assert MANIFEST_FILENAME not in paths
    assert paths == sorted(paths)
    assert "checkpoints/best.safetensors" in paths
    for entry in manifest.files:
        assert (entry.sha256, entry.size) == sha256_file(run / entry.path)


def test_flags_fill_gaps_and_agreeing_flags_are_fine(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run(manifest={"artifact_name": "vit-base16-embed-v1", "precision": "fp16"})
    result = registry.register(
        run, RegisterOptions(precision="fp16", license="apache-2.0", train_data_tags=["a", "b", "a"])
    )
    manifest = result.version.manifest
    assert (manifest.license, manifest.precision, manifest.train_data_tags) == ("apache-2.0", "fp16", ["a", "b"])


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (RegisterOptions(precision="bf16"), "precision"),
        (RegisterOptions(artifact_name="gpt-small-v1"), "artifact_name"),
        (RegisterOptions(embedding_dim=512), "embedding_dim"),
        (RegisterOptions(node_type="inference"), "node_type"),
        (RegisterOptions(train_data_tags=["other"]), "train_data_tags"),
        (RegisterOptions(config={"batch_size": 128, "epochs": 10}), "training_config"),
        (RegisterOptions(metrics={"coverage": 0.5}), "metrics.coverage"),
    ],
)
def test_a_flag_contradicting_the_run_manifest_is_an_error_naming_the_field(
    registry: Registry, make_run: RunBuilder, options: RegisterOptions, field: str
) -> None:
    run = make_run(manifest={**SEED_FIRST_EXAMPLE, "metrics": {"coverage": 0.99}})
    with pytest.raises(InvalidInputError) as caught:
        registry.register(run, options)
    assert caught.value.field == field
    assert str(run / MANIFEST_FILENAME) in str(caught.value)
    assert "contradicts the run's manifest" in str(caught.value)
    assert registry.list() == []


def test_quantize_without_precision_means_int8(registry: Registry, make_run: RunBuilder) -> None:
    manifest = registry.register(make_run(), RegisterOptions(quantize=True)).version.manifest
    assert (manifest.quantized, manifest.precision) == (True, "int8")


def test_precision_int8_implies_quantized(registry: Registry, make_run: RunBuilder) -> None:
    manifest = registry.register(make_run(), RegisterOptions(precision="int8")).version.manifest
    assert manifest.quantized is True


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_quantize_with_a_float_precision_is_refused(registry: Registry, make_run: RunBuilder, precision: str) -> None:
    with pytest.raises(InvalidInputError, match=f"--quantize cannot go with precision {precision}"):
        registry.register(make_run(), RegisterOptions(quantize=True, precision=precision))


def test_config_file_becomes_training_config_and_its_hash(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    manifest = registry.register(run, RegisterOptions(config=run / "config.yaml")).version.manifest
    assert manifest.training_config == {"batch_size": 256, "epochs": 10, "learning_rate": 0.0001}
    assert manifest.training_config_hash == training_config_hash(
        {"learning_rate": 1e-4, "epochs": 10, "batch_size": 256}
    )


def test_a_wrong_training_config_hash_in_the_manifest_is_refused(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run(manifest={**SEED_FIRST_EXAMPLE, "training_config_hash": "0" * 64})
    with pytest.raises(InvalidInputError) as caught:
        registry.register(run)
    assert caught.value.field == "training_config_hash"


def test_metrics_file_merges_with_manifest_metrics(registry: Registry, make_run: RunBuilder, tmp_path: Path) -> None:
    run = make_run(manifest={**SEED_FIRST_EXAMPLE, "metrics": {"coverage": 0.99}})
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"best_val_loss": 0.38, "coverage": 0.99}))
    manifest = registry.register(run, RegisterOptions(metrics=metrics)).version.manifest
    assert manifest.metrics == {"coverage": 0.99, "best_val_loss": 0.38}


def test_generated_name_uses_seed_000_second_form(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run("run42")
    newest = max(p.stat().st_mtime for p in run.rglob("*") if p.is_file())
    result = registry.register(run, RegisterOptions(node_type="encoder", task="embed", base_model="vit-base16"))
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(int(newest), UTC).strftime("%Y%m%dT%H%M%SZ")
    assert result.version.artifact_name == f"encoder.embed.vit-base16.run42.{stamp}"
    assert result.version.manifest.created_at == datetime.fromtimestamp(int(newest), UTC)


def test_structured_name_fills_fields_and_warns_on_disagreement(registry: Registry, make_run: RunBuilder) -> None:
    result = registry.register(make_run(), RegisterOptions(artifact_name="gpt-small-v1-lm-finetune-int8-v1"))
    manifest = result.version.manifest
    assert (manifest.base_model, manifest.task, manifest.quantized, manifest.precision) == (
        "gpt-small-v1",
        "lm-finetune",
        True,
        "int8",
    )
    other = registry.register(
        make_run("other"), RegisterOptions(artifact_name="vision-vit-base16-embed-v1", task="classification")
    )
    assert any("says task 'embed', but task is 'classification'" in w for w in other.warnings)


def test_versions_count_up_and_references_resolve(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    options = RegisterOptions(artifact_name="gpt-small-v1")
    first = registry.register(run, options)
    write_safetensors(run / "checkpoints" / "latest.safetensors", seed=99)
    backdate(run)
    second = registry.register(run, options)
    third = registry.register(run, RegisterOptions(artifact_name="gpt-small-v1", license="mit"))
    assert [first.version.number, second.version.number, third.version.number] == [1, 2, 3]
    assert all(r.created for r in (first, second, third))
    assert registry.show("gpt-small-v1").number == 3
    assert registry.show("gpt-small-v1@latest").number == 3
    assert registry.show("gpt-small-v1@2").manifest.files == second.version.manifest.files
    assert registry.show("gpt-small-v1@1").manifest.files != second.version.manifest.files
    with pytest.raises(NotFoundError, match="has no version 7; its versions are 1..3"):
        registry.show("gpt-small-v1@7")
    with pytest.raises(NotFoundError, match="no artifact named 'nope-v1'"):
        registry.show("nope-v1")
    with pytest.raises(NotFoundError, match="unknown reference 'champion'"):
        registry.show("gpt-small-v1@champion")


def test_identical_registration_returns_the_existing_version(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    options = RegisterOptions(artifact_name="gpt-small-v1", precision="fp32")
    first = registry.register(run, options)
    again = registry.register(run, options)
    assert (again.created, again.version.number, again.bytes_added, again.files_read) == (False, 1, 0, 0)
    # The same files from another directory (stat cache cannot help) still find the version.
    copy = run.parent / "copy"
    shutil.copytree(run, copy)
    backdate(copy)
    from_copy = registry.register(copy, options)
    assert (from_copy.created, from_copy.version.number, from_copy.bytes_added) == (False, 1, 0)
    assert from_copy.files_read == first.files_total
    assert len(registry.list(all_versions=True)) == 1


def test_unchanged_files_are_not_read_again(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    options = RegisterOptions(artifact_name="gpt-small-v1")
    first = registry.register(run, options)
    assert first.files_read == first.files_total
    write_safetensors(run / "checkpoints" / "latest.safetensors", seed=7)
    backdate(run / "checkpoints" / "latest.safetensors")
    second = registry.register(run, options)
    assert second.files_read == 1  # only the rewritten file
    assert second.methods["cached"] == first.files_total - 1
    assert second.bytes_added == (run / "checkpoints" / "latest.safetensors").stat().st_size


def test_an_edit_that_restores_size_and_mtime_is_still_seen(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    target = run / "training.log"
    registry.register(run, RegisterOptions(artifact_name="gpt-small-v1"))
    before = target.stat()
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime; ctime moved
    result = registry.register(run, RegisterOptions(artifact_name="gpt-small-v1"))
    assert result.created and result.version.number == 2
    assert result.files_read == 1


def test_an_unchanged_tree_is_answered_from_its_snapshot_and_an_edit_still_seen(
    registry: Registry, make_run: RunBuilder
) -> None:
    """After two registrations the stat cache holds a snapshot of the whole tree: the next
    unchanged registration is answered from it, and an edit that keeps the size is still seen."""
    run = make_run()
    options = RegisterOptions(artifact_name="gpt-small-v1")
    registry.register(run, options)
    registry.register(run, options)
    snapshot = sqlite3.connect(registry.settings.stat_cache_path).execute("SELECT root FROM trees").fetchall()
    assert snapshot == [(str(run),)]
    unchanged = registry.register(run, options)
    assert (unchanged.created, unchanged.files_read, unchanged.version.number) == (False, 0, 1)

    target = run / "checkpoints" / "latest.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    backdate(target)
    edited = registry.register(run, options)
    assert (edited.created, edited.version.number, edited.files_read) == (True, 2, 1)


def test_a_quarantined_blob_is_stored_again_by_an_unchanged_registration(
    registry: Registry, make_run: RunBuilder
) -> None:
    """The snapshot's "every blob present" holds only while no blob has left the store."""
    run = make_run()
    options = RegisterOptions(artifact_name="gpt-small-v1")
    registry.register(run, options)
    registry.register(run, options)  # the tree snapshot is recorded
    digest = sha256_file(run / "checkpoints" / "best.safetensors")[0]
    epoch = registry.store.removal_epoch()
    assert registry.store.quarantine(digest) is not None
    assert registry.store.removal_epoch() != epoch
    assert not registry.store.has_all([digest])
    again = registry.register(run, options)
    assert (again.created, again.version.number) == (False, 1)
    assert registry.store.has_all([digest])
    assert not registry.verify().problems


def test_recently_written_files_are_read_again_until_settled(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    (run / "training.log").write_text("just written\n")  # mtime now: inside the racy window
    options = RegisterOptions(artifact_name="gpt-small-v1")
    registry.register(run, options)
    time.sleep(0.2)  # past the racy window: the next registration's reading can be trusted
    second = registry.register(run, options)
    assert second.files_read == 1 and not second.created
    third = registry.register(run, options)
    assert third.files_read == 0


def test_single_file_registration(registry: Registry, tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    write_safetensors(weights)
    backdate(weights)
    result = registry.register(weights, RegisterOptions(artifact_name="resnet50-proj-v1"))
    assert [f.path for f in result.version.manifest.files] == ["model.safetensors"]
    assert result.version.manifest.run_name == "model"


def test_exclude_leaves_files_out(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    result = registry.register(run, RegisterOptions(artifact_name="gpt-small-v1", exclude=["*.log", "metrics"]))
    paths = [f.path for f in result.version.manifest.files]
    assert "training.log" not in paths
    assert not any(p.startswith("metrics/") for p in paths)


def test_files_the_run_manifest_lists_must_match(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    digest, size = sha256_file(run / "README.md")
    good = {"artifact_name": "gpt-small-v1", "files": [{"path": "README.md", "size": size, "sha256": digest}]}
    (run / MANIFEST_FILENAME).write_text(json.dumps(good))
    assert registry.register(run).created
    bad = {"artifact_name": "gpt-small-v1", "files": [{"path": "README.md", "size": size, "sha256": "0" * 64}]}
    (run / MANIFEST_FILENAME).write_text(json.dumps(bad))
    with pytest.raises(InvalidInputError, match="'README.md' should have size"):
        registry.register(run)
    missing = {"artifact_name": "gpt-small-v1", "files": [{"path": "gone.bin", "size": 1, "sha256": "0" * 64}]}
    (run / MANIFEST_FILENAME).write_text(json.dumps(missing))
    with pytest.raises(InvalidInputError, match="lists 'gone.bin', which is not in the directory"):
        registry.register(run)
    assert len(registry.list(all_versions=True)) == 1


def test_a_run_manifest_model_version_is_replaced_with_a_warning(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run(manifest={"artifact_name": "gpt-small-v1", "model_version": "v7"})
    result = registry.register(run)
    assert result.version.manifest.model_version == 1
    assert any("model_version 'v7'" in w and "gpt-small-v1@1" in w for w in result.warnings)


def test_link_shares_the_inode_and_adds_no_copy(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    result = registry.register(run, RegisterOptions(artifact_name="gpt-small-v1"), link=True)
    assert result.methods.get("hardlink", 0) + result.methods.get("reflink", 0) == result.files_total
    best = run / "checkpoints" / "best.safetensors"
    entry = next(f for f in result.version.manifest.files if f.path == "checkpoints/best.safetensors")
    blob = registry.settings.home / "store" / "objects" / "sha256" / entry.sha256[:2] / entry.sha256
    if result.methods.get("hardlink"):
        assert best.stat().st_ino == blob.stat().st_ino
        assert best.stat().st_mode & 0o222 == 0  # no write bits: the file is a blob now


def test_link_across_filesystems_falls_back_to_copy(make_run: RunBuilder, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temporary directory")
    home = Path(shm / f"modelyard-test-{os.getpid()}")
    try:
        with Registry.open(home) as registry:
            result = registry.register(make_run(), RegisterOptions(artifact_name="gpt-small-v1"), link=True)
        assert result.methods == {"copy": result.files_total}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_registration_is_recorded_in_the_audit_log(registry: Registry, make_run: RunBuilder) -> None:
    registry.register(make_run(), RegisterOptions(artifact_name="gpt-small-v1"))
    (event,) = registry.events()
    assert (event["action"], event["artifact_name"], event["version_number"]) == ("register", "gpt-small-v1", 1)
    assert event["actor"]


def test_tag_order_does_not_make_a_new_version(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run()
    first = registry.register(run, RegisterOptions(artifact_name="gpt-small-v1", train_data_tags=["a", "b"]))
    second = registry.register(run, RegisterOptions(artifact_name="gpt-small-v1", train_data_tags=["b", "a"]))
    assert (second.created, second.version.number) == (False, first.version.number)


def test_an_unknown_schema_version_is_refused(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run(manifest={"artifact_name": "gpt-small-v1", "schema_version": 99})
    with pytest.raises(InvalidInputError, match="schema_version 99 is not one this modelyard reads"):
        registry.register(run)


def test_a_directory_with_one_file_is_recorded_as_the_directory(registry: Registry, tmp_path: Path) -> None:
    run = tmp_path / "lidar-run"
    write_safetensors(run / "w.safetensors")
    backdate(run)
    result = registry.register(run, RegisterOptions(artifact_name="gpt-small-v1"))
    assert result.version.source_path == str(run)


def test_a_manifest_quantization_contradiction_names_the_manifest(registry: Registry, make_run: RunBuilder) -> None:
    run = make_run(manifest={"artifact_name": "gpt-small-v1", "quantized": True, "precision": "fp16"})
    with pytest.raises(InvalidInputError) as caught:
        registry.register(run)
    assert str(run / MANIFEST_FILENAME) in str(caught.value)
    assert "quantized: true contradicts precision fp16" in str(caught.value)
    assert "--quantize" not in str(caught.value)


def test_field_errors_come_before_naming(registry: Registry, make_run: RunBuilder) -> None:
    with pytest.raises(InvalidInputError) as caught:
        registry.register(make_run(), RegisterOptions(node_type="bogus"))
    assert "node_type" in str(caught.value)
    assert "artifact name" not in str(caught.value)
