"""Bundles for air-gapped nodes: `modelyard bundle NAME@REF... --out FILE` on one registry and
`modelyard import bundle FILE` on another.

One source registry holds a real lifecycle (a raw run of safetensors checkpoints, its validated
version, a production release). Its bundles go to empty registries in other homes: versions,
stages, labels, lineage, typed configurations and bytes arrive intact, and a second import changes
nothing. Tampered bundles (a flipped byte, a truncation, `../evil`, a symlink, a device, an extra
member, a bad bundle.json) are refused with nothing visible in the target: no version, no blob, no
scratch directory. The CLI runs end to end in subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, RunBuilder
from modelyard.distribute.bundle import BUNDLE_JSON, FORMAT_VERSION, document_digest
from modelyard.distribute.bundle_import import import_bundle
from modelyard.distribute.bundle_write import write_bundle
from modelyard.domain import VersionRecord
from modelyard.errors import ConflictError, CorruptionError, InvalidInputError, ModelyardError
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry

NAME = "vision-vit-base16-embed-v1"
BLOBS = "blobs/sha256/"

# The CLI as it runs once `bundle` is installed on the app and on `import` (done here when the
# installation in modelyard.cli is not there yet, so these tests need no other file).
CLI_DRIVER = """
from modelyard.cli import app, bundle, main, marketplace

if "bundle" not in {c.name for c in app.registered_commands}:
    bundle.install(app)
if "bundle" not in {c.name for c in marketplace.import_app.registered_commands}:
    bundle.add_import_command(marketplace.import_app)
main()
"""


# -- the source registry ----------------------------------------------------------------------


@dataclass
class Source:
    registry: Registry
    home: Path
    raw: VersionRecord
    validated: VersionRecord
    production: VersionRecord
    bundle: Path  # the validated version's bundle (with its raw parent)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    base = tmp_path_factory.mktemp("source")
    policy = base / "policy.json"
    policy.write_text(json.dumps({"checks": ["files_present", "readable", "pickles", {"metric": "best_val_loss < 1"}]}))
    run = RunBuilder(base / "runs")("v5_5_20251124")
    with Registry.open(base / "home") as registry:
        options = RegisterOptions(artifact_name=NAME, license="mit", metrics={"best_val_loss": 0.38})
        raw = registry.register(run, options).version
        validated = registry.promote(raw.ref, "validated", checkpoint="best", policy=policy)
        production = registry.promote(validated.ref, "production", version="1.0.0", approved_by="alice")
        bundle = base / "validated.tar"
        write_bundle(registry, [validated.ref], bundle)
        yield Source(registry, base / "home", raw, validated, production, bundle)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Registry]:
    """An empty registry in another home: the air-gapped node."""
    with Registry.open(tmp_path / "target-home") as opened:
        yield opened


# -- helpers -----------------------------------------------------------------------------------


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def _document(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(BUNDLE_JSON)
        assert handle is not None
        return json.loads(handle.read())


def _rewrite(good: Path, out: Path, change: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> Path:
    """A copy of a bundle whose (member, data) list `change` edited in place."""
    with tarfile.open(good) as tar:
        members = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            members.append((info, handle.read() if handle is not None else b""))
    change(members)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out


def _with_document(
    edit: Callable[[dict[str, Any]], None], *, redigest: bool = True
) -> Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]:
    """Edit bundle.json (and by default give it its new digest, as a deliberate edit would)."""

    def change(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        info, data = members[0]
        document = json.loads(data)
        edit(document)
        if redigest:
            document["document_sha256"] = document_digest(document)
        members[0] = (info, json.dumps(document).encode())

    return change


def _extra(info: tarfile.TarInfo, data: bytes = b"") -> Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]:
    def change(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        members.append((info, data))

    return change


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _flip_a_blob_byte(good: Path, out: Path) -> Path:
    blob = next(m for m in _members(good) if m.name.startswith(BLOBS) and m.size > 100)
    data = bytearray(good.read_bytes())
    data[blob.offset_data + blob.size // 2] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def _assert_nothing_visible(target: Registry, tmp_path: Path) -> None:
    assert target.list(all_versions=True) == []
    assert list(target.store.list()) == []
    scratch = target.settings.home / "tmp"
    assert not scratch.exists() or not [p for p in scratch.iterdir() if p.is_dir()]
    assert not (tmp_path / "evil").exists() and not (target.settings.home / "evil").exists()


def _blob_bytes(registry: Registry, version: VersionRecord) -> dict[str, bytes]:
    files = {}
    for entry in version.manifest.files:
        with registry.store.open(entry.sha256) as handle:
            files[entry.path] = handle.read()
    return files


def _comparable(version: VersionRecord) -> dict[str, Any]:
    """A manifest without what is local to a registry: the version number and the parent's."""
    dumped = version.manifest.model_dump(mode="json")
    return {k: v for k, v in dumped.items() if k not in ("model_version", "derived_from")}


def _cli(home: Path, *args: str) -> CliResult:
    env = {**os.environ, "MODELYARD_HOME": str(home)}
    env.pop("MODELYARD_DB_URL", None)
    env.pop("MODELYARD_STORE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", CLI_DRIVER, *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _one_line_error(result: CliResult, exit_code: int, *needles: str) -> None:
    assert result.returncode == exit_code, f"exit {result.returncode}, wanted {exit_code}:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} is not in {lines[0]!r}"


# -- writing -----------------------------------------------------------------------------------


def test_the_bundle_is_a_plain_tar_with_bundle_json_first_and_each_blob_once(source: Source) -> None:
    members = _members(source.bundle)
    assert members[0].name == BUNDLE_JSON
    assert all(m.isreg() for m in members)
    names = [m.name for m in members[1:]]
    digests = {f.sha256 for v in (source.raw, source.validated) for f in v.manifest.files}
    assert len(names) == len(set(names)) == len(digests)  # model.safetensors is best.safetensors: once
    assert set(names) == {BLOBS + d for d in digests}
    assert source.bundle.read_bytes()[257:262] == b"ustar"  # no compression by default

    document = _document(source.bundle)
    assert (document["format"], document["format_version"]) == ("modelyard-bundle", FORMAT_VERSION)
    assert document["created_by"] and document["modelyard_version"] and document["created_at"]
    assert document["document_sha256"] == document_digest(document)
    raw, validated = document["versions"]
    assert (raw["ref"], raw["stage"], raw["requested"], raw["derived_from"]) == (source.raw.ref, "raw", False, None)
    assert (validated["stage"], validated["label"], validated["requested"]) == (
        "validated",
        source.validated.label,
        True,
    )
    assert validated["derived_from"] == raw["id"]
    assert [step["ref"] for step in validated["lineage"]] == [source.validated.ref, source.raw.ref]
    assert validated["manifest"] == json.loads(source.validated.manifest_json)
    assert validated["typed_config"] == source.registry.model_config(source.validated.ref).model_dump(mode="json")
    assert validated["files"] == [f.model_dump() for f in source.validated.manifest.files]


def test_an_existing_bundle_is_kept_unless_forced_and_gzip_is_optional(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "out" / "b.tar.gz"
    report = write_bundle(source.registry, [f"{NAME}@production"], out, gzip=True)
    assert report.versions == (source.raw.ref, source.validated.ref, source.production.ref)
    assert report.requested == (source.production.ref,) and report.gzip
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    with pytest.raises(ConflictError, match="already exists"):
        write_bundle(source.registry, [source.raw.ref], out)
    assert _document(out)["versions"][-1]["semver"] == "1.0.0"
    only = write_bundle(source.registry, [source.production.ref], out, with_lineage=False, force=True)
    assert only.versions == (source.production.ref,)
    assert [v["derived_from"] for v in _document(out)["versions"]] == [None]
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.tar.gz"]


def test_a_corrupt_blob_in_the_store_stops_the_bundle_and_leaves_nothing(
    registry: Registry, make_run: RunBuilder, tmp_path: Path
) -> None:
    version = registry.register(make_run(), RegisterOptions(artifact_name="gpt-small-v1")).version
    entry = next(f for f in version.manifest.files if f.path == "training.log")
    blob = registry.settings.home / "store" / "objects" / "sha256" / entry.sha256[:2] / entry.sha256
    os.chmod(blob, 0o644)
    blob.write_bytes(b"X" * entry.size)
    out = tmp_path / "b.tar"
    with pytest.raises(CorruptionError, match=f"no longer match sha256 {entry.sha256}"):
        write_bundle(registry, [version.ref], out)
    blob.write_bytes(b"X" * (entry.size - 3))
    with pytest.raises(CorruptionError, match="ends 3 bytes early"):
        write_bundle(registry, [version.ref], out)
    assert list(tmp_path.glob("b.tar*")) == []


def test_a_killed_write_leaves_only_a_partial_file(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from modelyard.distribute import bundle_write as bundle\n"
        "from modelyard.registry import Registry\n"
        "real, count = bundle._add_blob, []\n"
        "def dying(*args):\n"
        "    count.append(1)\n"
        "    if len(count) == 3:\n"
        "        os._exit(9)  # as killed: no cleanup runs\n"
        "    real(*args)\n"
        "bundle._add_blob = dying\n"
        "bundle.write_bundle(Registry.open(sys.argv[1]), [sys.argv[2]], Path(sys.argv[3]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(source.home), source.validated.ref, str(out)], capture_output=True
    )
    assert proc.returncode == 9, proc.stderr
    assert not out.exists() and (tmp_path / "b.tar.partial").exists()
    # The next write replaces the leftover.
    write_bundle(source.registry, [source.validated.ref], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar"]


# -- importing ---------------------------------------------------------------------------------


def test_a_validated_version_arrives_with_its_lineage_configs_and_bytes(source: Source, target: Registry) -> None:
    report = import_bundle(target, source.bundle)
    assert [(v.source_ref, v.ref, v.stage, v.created) for v in report.versions] == [
        (source.raw.ref, f"{NAME}@1", "raw", True),
        (source.validated.ref, f"{NAME}@2", "validated", True),
    ]
    assert report.warnings == ()
    for original in (source.raw, source.validated):
        local = target.show(original.ref)
        assert (local.stage, local.label, local.semver, local.forced) == (
            original.stage,
            original.label,
            original.semver,
            original.forced,
        )
        assert _comparable(local) == _comparable(original)
        assert local.source_path == f"bundle {source.bundle.name}"
        assert target.model_config(local.ref) == source.registry.model_config(original.ref)
        assert _blob_bytes(target, local) == _blob_bytes(source.registry, original)
    assert target.show(f"{NAME}@validated").manifest.derived_from == f"{NAME}@1"
    assert [(s.ref, s.stage, s.label, s.detail) for s in target.lineage(f"{NAME}@validated")] == [
        (s.ref, s.stage, s.label, s.detail) for s in source.registry.lineage(source.validated.ref)
    ]
    assert [v.typed_config for v in report.versions] == ["inspection", "inspection"]
    imports = [e for e in target.audit(NAME) if e["action"] == "import"]
    assert {e["details"]["source_ref"] for e in imports} == {source.raw.ref, source.validated.ref}
    assert target.verify(quarantine=False).ok

    # The same bundle again: found, not added.
    events, objects = len(target.audit(limit=1000)), sorted(b.sha256 for b in target.store.list())
    again = import_bundle(target, source.bundle)
    assert [(v.ref, v.created, v.typed_config) for v in again.versions] == [
        (f"{NAME}@1", False, None),
        (f"{NAME}@2", False, None),
    ]
    assert [v.ref for v in again.present] == [f"{NAME}@1", f"{NAME}@2"] and again.created == []
    assert len(target.list(all_versions=True)) == 2
    assert len(target.audit(limit=1000)) == events
    assert sorted(b.sha256 for b in target.store.list()) == objects
    assert not [p for p in (target.settings.home / "tmp").iterdir() if p.is_dir()]


def test_local_numbers_differ_and_parents_map_to_them(
    source: Source, target: Registry, make_run: RunBuilder, tmp_path: Path
) -> None:
    own = target.register(make_run("other_run", seed=7), RegisterOptions(artifact_name=NAME)).version
    bundle = write_bundle(source.registry, [f"{NAME}@1.0.0"], tmp_path / "prod.tar").path
    report = import_bundle(target, bundle)
    assert [(v.source_ref, v.ref) for v in report.versions] == [
        (source.raw.ref, f"{NAME}@2"),
        (source.validated.ref, f"{NAME}@3"),
        (source.production.ref, f"{NAME}@4"),
    ]
    production = target.show(f"{NAME}@1.0.0")
    assert (production.ref, production.stage, production.label) == (f"{NAME}@4", "production", source.production.label)
    assert production.manifest.derived_from == f"{NAME}@3"
    assert target.show(f"{NAME}@3").manifest.derived_from == f"{NAME}@2"
    assert [s.ref for s in target.lineage(f"{NAME}@production")] == [f"{NAME}@4", f"{NAME}@3", f"{NAME}@2"]
    assert target.show(own.ref).manifest == own.manifest  # untouched
    assert all(not v.created for v in import_bundle(target, bundle).versions)


def test_a_semantic_version_taken_here_by_other_content_refuses_the_bundle(
    source: Source, target: Registry, make_run: RunBuilder, tmp_path: Path
) -> None:
    raw = target.register(make_run("other_run", seed=7), RegisterOptions(artifact_name=NAME)).version
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"checks": ["files_present"]}))
    validated = target.promote(raw.ref, "validated", checkpoint="best", policy=policy)
    target.promote(validated.ref, "production", version="1.0.0", approved_by="bob")
    before = [v.ref for v in target.list(all_versions=True)]
    bundle = write_bundle(source.registry, [source.production.ref], tmp_path / "prod.tar").path
    with pytest.raises(ConflictError, match=f"{NAME} 1.0.0 already exists here as {NAME}@3"):
        import_bundle(target, bundle)
    assert [v.ref for v in target.list(all_versions=True)] == before


def test_a_release_imported_without_its_lineage_is_not_the_release_with_it(
    source: Source, target: Registry, tmp_path: Path
) -> None:
    alone = write_bundle(source.registry, [source.production.ref], tmp_path / "alone.tar", with_lineage=False).path
    assert [v.ref for v in import_bundle(target, alone).versions] == [f"{NAME}@1"]
    full = write_bundle(source.registry, [source.production.ref], tmp_path / "full.tar").path
    with pytest.raises(ConflictError, match=f"1.0.0 already exists here as {NAME}@1, which is not"):
        import_bundle(target, full)
    assert [v.ref for v in target.list(all_versions=True)] == [f"{NAME}@1"]
    assert all(not v.created for v in import_bundle(target, alone).versions)


def test_a_version_stored_without_inspection_is_imported_without_one(
    registry: Registry, make_run: RunBuilder, target: Registry, tmp_path: Path
) -> None:
    options = RegisterOptions(artifact_name="gpt-small-v1", inspect=False)
    version = registry.register(make_run(), options).version
    bundle = write_bundle(registry, [version.ref], tmp_path / "plain.tar").path
    assert _document(bundle)["versions"][0]["typed_config"] is None
    report = import_bundle(target, bundle)
    assert [(v.ref, v.created, v.typed_config) for v in report.versions] == [("gpt-small-v1@1", True, None)]
    assert target.model_config("gpt-small-v1@1") is None
    assert _comparable(target.show("gpt-small-v1@1")) == _comparable(version)


def test_a_version_without_its_lineage_and_a_gzipped_bundle(source: Source, target: Registry, tmp_path: Path) -> None:
    bundle = write_bundle(
        source.registry, [source.validated.ref], tmp_path / "v.tar.gz", with_lineage=False, gzip=True
    ).path
    report = import_bundle(target, bundle)
    assert [(v.ref, v.stage) for v in report.versions] == [(f"{NAME}@1", "validated")]
    local = target.show(f"{NAME}@1")
    assert local.manifest.derived_from is None and local.label == source.validated.label
    assert [s.ref for s in target.lineage(local.ref)] == [local.ref]


def test_the_bundles_typed_config_is_kept_but_never_its_pickle_verdict(
    source: Source, target: Registry, tmp_path: Path
) -> None:
    local_verdict = source.registry.model_config(source.validated.ref).pickle_scan.verdict  # type: ignore[union-attr]
    claimed = "none" if local_verdict != "none" else "safe"

    def edit(document: dict[str, Any]) -> None:
        config = document["versions"][1]["typed_config"]
        config["author"] = "someone-upstream"
        config["pickle_scan"] = {"verdict": claimed, "files_scanned": 0, "findings": []}

    bundle = _rewrite(source.bundle, tmp_path / "edited.tar", _with_document(edit))
    report = import_bundle(target, bundle)
    assert [v.typed_config for v in report.versions] == ["inspection", "bundle"]
    config = target.model_config(f"{NAME}@2")
    assert config is not None and config.author == "someone-upstream"
    assert config.pickle_scan.verdict == local_verdict
    event = next(e for e in target.audit(f"{NAME}@2") if e["action"] == "import")
    assert event["details"]["typed_config"] == "bundle"


# -- refusals ----------------------------------------------------------------------------------


def _drop_last_blob(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    members.pop()


def _resize_a_blob(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    info, data = members[-1]
    members[-1] = (info, data + b"!")


def _bundle_json_second(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    members.append(members.pop(0))


def _truncate(good: Path, out: Path) -> Path:
    out.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return out


def _not_a_tar(good: Path, out: Path) -> Path:
    out.write_bytes(b"hello, world\n" * 100)
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return edit


REFUSALS: dict[str, tuple[Callable[[Path, Path], Path], type[ModelyardError], str]] = {
    "a flipped byte": (_flip_a_blob_byte, CorruptionError, "does not match its digest"),
    "truncated": (_truncate, CorruptionError, "truncated"),
    "a missing member": (lambda g, o: _rewrite(g, o, _drop_last_blob), CorruptionError, "is missing"),
    "a wrong size": (lambda g, o: _rewrite(g, o, _resize_a_blob), CorruptionError, "bytes, bundle.json says"),
    "../evil": (lambda g, o: _rewrite(g, o, _extra(_member("../evil"), b"x")), InvalidInputError, "unsafe name"),
    "an absolute name": (lambda g, o: _rewrite(g, o, _extra(_member("/tmp/evil"))), InvalidInputError, "unsafe"),
    "a symlink": (
        lambda g, o: _rewrite(g, o, _extra(_member(BLOBS + "0" * 64, tarfile.SYMTYPE, "/etc/passwd"))),
        InvalidInputError,
        "is a link",
    ),
    "a hardlink": (
        lambda g, o: _rewrite(g, o, _extra(_member("evil", tarfile.LNKTYPE, BUNDLE_JSON))),
        InvalidInputError,
        "is a link",
    ),
    "a device": (lambda g, o: _rewrite(g, o, _extra(_member("dev", tarfile.CHRTYPE))), InvalidInputError, "device"),
    "an extra member": (
        lambda g, o: _rewrite(g, o, _extra(_member("notes.txt"), b"hello")),
        InvalidInputError,
        "'notes.txt' is not listed in bundle.json",
    ),
    "an unlisted blob": (
        lambda g, o: _rewrite(g, o, _extra(_member(BLOBS + "a" * 64), b"")),
        InvalidInputError,
        "is not listed",
    ),
    "bundle.json not first": (lambda g, o: _rewrite(g, o, _bundle_json_second), InvalidInputError, "first member"),
    "not a tar": (_not_a_tar, InvalidInputError, "not a tar"),
    "a newer format": (
        lambda g, o: _rewrite(g, o, _with_document(_set("format_version", 2))),
        InvalidInputError,
        "field 'format_version': 2 is not a bundle format",
    ),
    "a malformed entry": (
        lambda g, o: _rewrite(g, o, _with_document(_set("versions.1.stage", "gold"))),
        InvalidInputError,
        "field 'versions[1].stage'",
    ),
    "a string for a number": (
        lambda g, o: _rewrite(g, o, _with_document(_set("versions.0.number", "1"))),
        InvalidInputError,
        "field 'versions[0].number'",
    ),
    "an entry against its manifest": (
        lambda g, o: _rewrite(g, o, _with_document(_set("versions.1.semver", "1.0.0"))),
        InvalidInputError,
        "field 'versions[1].semver': disagrees with the entry's manifest",
    ),
    "a dangling parent": (
        lambda g, o: _rewrite(g, o, _with_document(_set("versions.1.derived_from", 9))),
        InvalidInputError,
        "field 'versions[1].derived_from': 9 is not the id of an earlier entry",
    ),
    "a changed label": (
        lambda g, o: _rewrite(g, o, _with_document(_set("versions.1.label", "v5_4"), redigest=False)),
        CorruptionError,
        "does not match its document_sha256",
    ),
    "no document digest": (
        lambda g, o: _rewrite(g, o, _with_document(lambda d: d.pop("document_sha256"), redigest=False)),
        InvalidInputError,
        "field 'document_sha256': is missing or not a string",
    ),
    "a bad manifest": (
        lambda g, o: _rewrite(g, o, _with_document(_set("versions.0.manifest.precision", "fp64"))),
        InvalidInputError,
        "versions[0].manifest: precision",
    ),
    "a bad typed config": (
        lambda g, o: _rewrite(g, o, _with_document(_set("versions.0.typed_config.model_type", "toaster"))),
        InvalidInputError,
        "versions[0].typed_config",
    ),
    "a file missing from the blob list": (
        lambda g, o: _rewrite(g, o, _with_document(_set("blobs", []))),
        InvalidInputError,
        "field 'versions[0].files'",
    ),
}


def _not_json(good: Path, out: Path) -> Path:
    def change(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        members[0] = (members[0][0], b'{"format": "modelyard-bundle", "format": 1}')

    return _rewrite(good, out, change)


REFUSALS["duplicate keys"] = (_not_json, InvalidInputError, "duplicate key 'format'")


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_tampered_bundle_is_refused_with_nothing_visible(
    case: str, source: Source, target: Registry, tmp_path: Path
) -> None:
    make, kind, needle = REFUSALS[case]
    bundle = make(source.bundle, tmp_path / "tampered.tar")
    with pytest.raises(kind) as caught:
        import_bundle(target, bundle)
    message = str(caught.value)
    assert needle in message and "\n" not in message
    assert str(bundle) in message  # names the bundle
    _assert_nothing_visible(target, tmp_path)


def test_a_truncated_gzip_bundle_is_refused(source: Source, target: Registry, tmp_path: Path) -> None:
    gzipped = write_bundle(source.registry, [source.raw.ref], tmp_path / "raw.tar.gz", gzip=True).path
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzipped.read_bytes()[: gzipped.stat().st_size - 200])
    with pytest.raises(CorruptionError, match="truncated"):
        import_bundle(target, cut)
    _assert_nothing_visible(target, tmp_path)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_bundle_and_import_end_to_end(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "cli.tar"
    written = _cli(source.home, "bundle", f"{NAME}@validated", "--out", str(out), "--json")
    assert written.returncode == 0, written.stderr
    assert written.json()["versions"] == [source.raw.ref, source.validated.ref]
    _one_line_error(_cli(source.home, "bundle", source.raw.ref, "--out", str(out)), 5, "already exists")
    plain = _cli(source.home, "bundle", source.validated.ref, "--out", str(out), "--force", "--no-lineage")
    assert plain.returncode == 0 and "1 version" in plain.stdout, plain.stderr
    _one_line_error(_cli(source.home, "bundle", f"{NAME}@9", "--out", str(tmp_path / "x.tar")), 4, "no version 9")
    written = _cli(source.home, "bundle", f"{NAME}@validated", "--out", str(out), "--force", "--gzip")
    assert written.returncode == 0, written.stderr

    node = tmp_path / "node"
    tampered = _flip_a_blob_byte(source.bundle, tmp_path / "flipped.tar")
    _one_line_error(_cli(node, "import", "bundle", str(tampered)), 6, "does not match its digest")
    bad = _rewrite(source.bundle, tmp_path / "bad.tar", _with_document(_set("format_version", 7)))
    _one_line_error(_cli(node, "import", "bundle", str(bad), "--home", str(node)), 3, "format_version")
    listed = _cli(node, "list", "--all-versions", "--json")
    assert listed.returncode == 0 and listed.json() == [], listed.stderr

    first = _cli(node, "import", "bundle", str(out), "--json")
    assert first.returncode == 0, first.stderr
    assert first.json()["created"] == [f"{NAME}@1", f"{NAME}@2"] and first.json()["present"] == []
    second = _cli(node, "import", "bundle", str(out))
    assert second.returncode == 0 and "0 created, 2 already present" in second.stdout, second.stderr
    listed = _cli(node, "list", "--all-versions", "--json")
    assert sorted((row["ref"], row["stage"]) for row in listed.json()) == [
        (f"{NAME}@1", "raw"),
        (f"{NAME}@2", "validated"),
    ]
    shutil.rmtree(node)
