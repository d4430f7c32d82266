"""`export`: directories and upload ZIPs, re-hashed on the way out, all or nothing."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from conftest import RunBuilder
from modelyard.errors import ConflictError, CorruptionError, InvalidInputError
from modelyard.manifest import parse_manifest
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry


@pytest.fixture
def registered(registry: Registry, make_run: RunBuilder) -> str:
    registry.register(make_run(), RegisterOptions(artifact_name="gpt-small-v1", precision="fp32"))
    return "gpt-small-v1@1"


def test_directory_export_holds_the_files_and_a_valid_manifest(
    registry: Registry, registered: str, tmp_path: Path
) -> None:
    target = tmp_path / "empty"
    target.mkdir()  # an existing empty directory is fine
    result = registry.export(registered, to=target)
    manifest = parse_manifest(json.loads((target / "artifact_manifest.json").read_text()), "exported")
    assert manifest == registry.show(registered).manifest
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(
        [f.path for f in manifest.files] + ["artifact_manifest.json"]
    )
    assert result.files == len(manifest.files)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_zip_is_reproducible_and_compresses_only_text(registry: Registry, registered: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    registry.export(registered, zip_path=first)
    registry.export(registered, zip_path=second)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        methods = {info.filename: info.compress_type for info in archive.infolist()}
        assert archive.testzip() is None
    assert methods["checkpoints/best.safetensors"] == zipfile.ZIP_STORED
    assert methods["config.yaml"] == zipfile.ZIP_DEFLATED
    assert methods["artifact_manifest.json"] == zipfile.ZIP_DEFLATED


def test_a_corrupt_blob_stops_the_export_and_leaves_nothing(
    registry: Registry, registered: str, tmp_path: Path
) -> None:
    entry = next(f for f in registry.show(registered).manifest.files if f.path == "training.log")
    blob = registry.settings.home / "store" / "objects" / "sha256" / entry.sha256[:2] / entry.sha256
    os.chmod(blob, 0o644)
    blob.write_bytes(b"X" * entry.size)
    with pytest.raises(CorruptionError, match="stored bytes of training.log no longer match"):
        registry.export(registered, to=tmp_path / "out")
    with pytest.raises(CorruptionError):
        registry.export(registered, zip_path=tmp_path / "out.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["home", "runs"])


def test_existing_zip_is_not_overwritten(registry: Registry, registered: str, tmp_path: Path) -> None:
    existing = tmp_path / "x.zip"
    existing.write_text("precious")
    with pytest.raises(ConflictError, match="already exists"):
        registry.export(registered, zip_path=existing)
    assert existing.read_text() == "precious"


def test_export_needs_a_destination(registry: Registry, registered: str) -> None:
    with pytest.raises(InvalidInputError, match="needs a destination"):
        registry.export(registered)


def test_a_missing_blob_is_reported_as_corruption(registry: Registry, registered: str, tmp_path: Path) -> None:
    entry = registry.show(registered).manifest.files[0]
    registry.store.delete(entry.sha256)
    with pytest.raises(CorruptionError, match="is missing from the store"):
        registry.export(registered, to=tmp_path / "out")
    assert not (tmp_path / "out").exists()
