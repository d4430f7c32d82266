"""Concurrency and garbage collection, with real processes, real SQLite files and the real
PostgreSQL server: concurrent registrations get distinct versions (or the same one for the same
content), concurrent first opens migrate the catalog once, and gc removes exactly the blobs no
version references, never while a registration holds the store's writer lock."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import CliResult, RunBuilder, backdate, write_safetensors
from modelyard.catalog import SCHEMA_REVISION
from modelyard.cli._common import format_bytes
from modelyard.errors import BusyError
from modelyard.manifest import ArtifactManifest, FileEntry
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry

Cli = Callable[..., CliResult]

NAME = "vision-vit-base16-embed-v1"
RACERS = 4

# Runs the CLI like `python -m modelyard ARGS`, but imports the heavy modules first, says it is
# ready, and waits for the `go` file: all racers then enter the registry within a millisecond.
LAUNCHER = r"""
import os, sys, time
ready, go = sys.argv[1], sys.argv[2]
from modelyard.cli import main
import modelyard.catalog.catalog, modelyard.register.flow, modelyard.registry, modelyard.gc
import alembic.command, alembic.config, alembic.script, modelyard.domain
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("the barrier never opened")
    time.sleep(0.0005)
sys.argv = ["modelyard", *sys.argv[3:]]
main()
"""

# Holds the store's writer (shared lock) with one published, uncommitted blob until stdin closes.
HOLDER = r"""
import io, os, sys
from modelyard.registry import Registry
registry = Registry.open(sys.argv[1])
with registry.store.writer() as writer:
    staged = writer.add_stream(io.BytesIO(os.urandom(12_345)))
    writer.publish()
    print(staged.sha256, flush=True)
    sys.stdin.readline()
"""


# -- helpers --------------------------------------------------------------------------------


def cli_env(home: Path, db_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "MODELYARD_HOME": str(home)}
    env.pop("MODELYARD_DB_URL", None)
    if db_url is not None:
        env["MODELYARD_DB_URL"] = db_url
    return env


def run_together(tmp_path: Path, home: Path, commands: list[list[str]], db_url: str | None) -> list[CliResult]:
    """Start one CLI process per command and release them all at the same moment."""
    barrier = tmp_path / f"barrier-{uuid.uuid4().hex[:8]}"
    barrier.mkdir()
    go = barrier / "go"
    procs: list[subprocess.Popen[str]] = []
    try:
        for index, args in enumerate(commands):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", LAUNCHER, str(barrier / f"ready-{index}"), str(go), *args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    env=cli_env(home, db_url),
                )
            )
        deadline = time.monotonic() + 60
        while not all((barrier / f"ready-{i}").exists() for i in range(len(procs))):
            for proc in procs:
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    raise AssertionError(f"a racer exited before the barrier ({proc.returncode}): {err}")
            assert time.monotonic() < deadline, "racers did not get ready"
            time.sleep(0.005)
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append(CliResult(proc.returncode, out, err))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def file_digests(run: Path) -> dict[str, tuple[int, str]]:
    """relpath -> (size, sha256) of every file in a run directory, computed independently."""
    return {
        path.relative_to(run).as_posix(): (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(run.rglob("*"))
        if path.is_file()
    }


def stored_blobs(home: Path) -> dict[str, int]:
    """digest -> size of every blob file under <home>/store/objects/sha256/*/."""
    return {path.name: path.stat().st_size for path in (home / "store" / "objects" / "sha256").glob("*/*")}


def temporaries(home: Path) -> list[str]:
    return sorted(path.name for path in (home / "store" / "tmp").iterdir())


def store_snapshot(home: Path) -> dict[str, tuple[int, int]]:
    """Every file under the store's objects/ and tmp/: relpath -> (size, inode)."""
    root = home / "store"
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_ino)
        for sub in ("objects", "tmp")
        for path in (root / sub).rglob("*")
        if path.is_file()
    }


def version_files(registry: Registry, name: str) -> dict[int, dict[str, tuple[int, str]]]:
    return {
        version.number: {entry.path: (entry.size, entry.sha256) for entry in version.manifest.files}
        for version in registry.versions(name)
    }


def commit_version(registry: Registry, name: str, blob_sha256: str, blob_size: int) -> None:
    """Commit a catalog version referencing one blob, as the end of a registration does."""
    registry.catalog.add_version(
        name=name,
        content_key=hashlib.sha256(blob_sha256.encode()).hexdigest(),
        build_manifest=lambda number: ArtifactManifest.model_validate(
            {
                "artifact_name": name,
                "model_version": number,
                "created_at": datetime.now(UTC),
                "files": [FileEntry(path="weights.bin", size=blob_size, sha256=blob_sha256)],
            }
        ),
        registered_by="test",
        source_path=None,
    )


def wait_for_lock_attempt(proc: subprocess.Popen[str], lock_path: Path, timeout: float = 60) -> None:
    """Wait until `proc` has the store's lock file open: it is trying to take the lock."""
    target = os.path.realpath(lock_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"gc finished while a writer held the store (exit {proc.returncode}): {out}{err}")
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        try:
            entries = list(fd_dir.iterdir())
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                if os.readlink(entry) == target:
                    return
            except OSError:
                continue
        time.sleep(0.01)
    raise AssertionError("gc never tried to take the store lock")


# -- concurrent registrations ---------------------------------------------------------------


def test_concurrent_registrations_under_one_name_get_distinct_versions(
    db_url: str, home: Path, cli: Cli, make_run: RunBuilder, tmp_path: Path
) -> None:
    runs = [make_run(f"run{i}", seed=10 * i) for i in range(RACERS)]
    results = run_together(
        tmp_path, home, [["register", str(run), "--artifact-name", NAME, "--json"] for run in runs], db_url
    )
    for result in results:
        assert result.returncode == 0, result.stderr
    outputs = [result.json() for result in results]
    assert all(output["created"] for output in outputs)
    assert sorted(output["model_version"] for output in outputs) == list(range(1, RACERS + 1))

    env = {"MODELYARD_DB_URL": db_url}
    listed = cli("list", "--all-versions", "--json", env=env, check=True).json()
    assert sorted((row["artifact_name"], row["model_version"]) for row in listed) == [
        (NAME, number) for number in range(1, RACERS + 1)
    ]
    assert {row["versions"] for row in listed} == {RACERS}

    with Registry.open(home, db_url=db_url) as registry:
        stored = version_files(registry, NAME)
        for run, output in zip(runs, outputs, strict=True):
            assert stored[output["model_version"]] == file_digests(run), run.name
            assert registry.show(f"{NAME}@{output['model_version']}").manifest.run_name == run.name

    verified = cli("verify", "--json", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = verified.json()
    assert report["ok"] and report["versions"] == RACERS
    every_digest = {sha for run in runs for _, sha in file_digests(run).values()}
    assert set(stored_blobs(home)) == every_digest
    assert temporaries(home) == []


def test_concurrent_registrations_of_identical_content_share_one_version(
    db_url: str, home: Path, cli: Cli, tmp_path: Path
) -> None:
    # Same content in different directories: the run name is not part of a version's identity.
    runs = [RunBuilder(tmp_path / f"copy{i}")("v5_5_20251124", seed=3) for i in range(RACERS)]
    assert len({json.dumps(file_digests(run)) for run in runs}) == 1
    results = run_together(
        tmp_path, home, [["register", str(run), "--artifact-name", NAME, "--json"] for run in runs], db_url
    )
    for result in results:
        assert result.returncode == 0, result.stderr
    outputs = [result.json() for result in results]
    assert {output["ref"] for output in outputs} == {f"{NAME}@1"}
    assert sorted(output["created"] for output in outputs) == [False] * (RACERS - 1) + [True]

    env = {"MODELYARD_DB_URL": db_url}
    listed = cli("list", "--all-versions", "--json", env=env, check=True).json()
    assert [(row["ref"], row["versions"]) for row in listed] == [(f"{NAME}@1", 1)]
    with Registry.open(home, db_url=db_url) as registry:
        assert version_files(registry, NAME) == {1: file_digests(runs[0])}
        assert registry.verify().ok
    assert set(stored_blobs(home)) == {sha for _, sha in file_digests(runs[0]).values()}
    assert temporaries(home) == []


def test_concurrent_first_opens_create_the_schema_once(db_url: str, make_run: RunBuilder, tmp_path: Path) -> None:
    home = tmp_path / "home"  # the `home` fixture is not used: nothing exists yet
    assert not home.exists()
    names = [f"vision-vit-base16-embed-v{i + 1}" for i in range(RACERS)]
    commands = [
        ["register", str(make_run(f"run{i}", seed=i)), "--artifact-name", names[i], "--json"]
        if i % 2
        else ["list", "--json"]
        for i in range(RACERS)
    ]
    results = run_together(tmp_path, home, commands, db_url)
    for result in results:
        assert result.returncode == 0, result.stderr
        assert isinstance(result.json(), list | dict)

    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [(SCHEMA_REVISION,)]
        assert {"artifacts", "versions", "files", "events"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    with Registry.open(home, db_url=db_url) as registry:
        assert sorted(row.artifact_name for row in registry.list()) == [names[i] for i in range(RACERS) if i % 2]
        assert registry.verify().ok


# -- gc -------------------------------------------------------------------------------------


def test_gc_dry_run_default_grace_and_sweep(
    any_registry: Registry, db_url: str, home: Path, cli: Cli, make_run: RunBuilder
) -> None:
    registry = any_registry
    env = {"MODELYARD_DB_URL": db_url}
    first = registry.register(make_run("a", seed=0), RegisterOptions(artifact_name=NAME))
    second = registry.register(make_run("b", seed=7), RegisterOptions(artifact_name=NAME))
    assert (first.version.number, second.version.number) == (1, 2)
    referenced = {entry.sha256 for r in (first, second) for entry in r.version.manifest.files}
    # Blobs stored directly, as a crash between publishing and committing would leave them.
    orphans = {
        info.sha256: info.size
        for info in (registry.store.put(io.BytesIO(os.urandom(size))) for size in (1, 4096, 70_000))
    }
    leftover = home / "store" / "tmp" / "4242-00deadbeef00cafe"  # an interrupted write
    leftover.write_bytes(b"x" * 100)
    assert set(stored_blobs(home)) == referenced | set(orphans)
    before = store_snapshot(home)

    dry = cli("gc", "--dry-run", "--grace", "0", "--json", env=env, check=True).json()
    assert dry["dry_run"] is True
    assert dry["would_remove"] == sorted(orphans)
    assert dry["temporaries"] == [leftover.name]
    assert dry["bytes"] == sum(orphans.values()) + 100
    assert (dry["blobs_total"], dry["blobs_referenced"]) == (len(referenced) + 3, len(referenced))
    human = cli("gc", "--dry-run", "--grace", "0", env=env, check=True).stdout.splitlines()
    listed = sorted(line for line in human if line.startswith("would remove sha256:"))
    assert listed == sorted(f"would remove sha256:{sha} ({format_bytes(size)})" for sha, size in orphans.items())
    assert f"would remove temporary {leftover.name} (100 B)" in human
    assert store_snapshot(home) == before

    young = cli("gc", env=env, check=True).stdout
    assert "removed 0 blobs and 0 temporaries" in young
    assert "3 unreferenced kept (younger than the 3600 s grace)" in young
    assert store_snapshot(home) == before

    swept = cli("gc", "--grace", "0", "--json", env=env, check=True).json()
    assert swept["dry_run"] is False
    assert swept["removed"] == sorted(orphans)
    assert swept["temporaries"] == [leftover.name]
    assert swept["bytes"] == sum(orphans.values()) + 100
    assert set(stored_blobs(home)) == referenced
    assert temporaries(home) == []
    unchanged = {path: entry for path, entry in before.items() if Path(path).name in referenced}
    assert store_snapshot(home) == unchanged  # referenced blobs untouched, same inodes

    verified = cli("verify", "--json", env=env)
    assert verified.returncode == 0, verified.stdout
    assert verified.json()["blobs_checked"] == len(referenced)
    again = cli("gc", "--grace", "0", "--json", env=env, check=True).json()
    assert (again["removed"], again["temporaries"], again["bytes"]) == ([], [], 0)
    assert [event["action"] for event in registry.events()].count("gc") == 1


def test_gc_grace_applies_to_blobs_and_temporaries(registry: Registry, home: Path, make_run: RunBuilder) -> None:
    kept = registry.register(make_run(), RegisterOptions(artifact_name=NAME))
    tmp = home / "store" / "tmp"
    old_blob = registry.store.put(io.BytesIO(b"old orphan"))
    (tmp / "1-old").write_bytes(b"o" * 10)
    time.sleep(1.3)
    young_blob = registry.store.put(io.BytesIO(b"young orphan"))
    (tmp / "2-young").write_bytes(b"y" * 20)

    report = registry.gc(grace_seconds=1.0)
    assert [blob.sha256 for blob in report.removable] == [old_blob.sha256]
    assert report.temporaries == [("1-old", 10)]
    assert (report.kept_young, report.bytes_kept_young) == (1, young_blob.size)
    assert report.bytes_removable == old_blob.size + 10
    assert registry.store.stat(old_blob.sha256) is None
    assert registry.store.stat(young_blob.sha256) is not None
    assert temporaries(home) == ["2-young"]
    assert set(stored_blobs(home)) == {e.sha256 for e in kept.version.manifest.files} | {young_blob.sha256}
    assert registry.verify().ok


def test_gc_waits_for_an_open_writer_and_rereads_references(
    any_registry: Registry, db_url: str, home: Path, make_run: RunBuilder
) -> None:
    registry = any_registry
    registry.register(make_run(), RegisterOptions(artifact_name=NAME))
    orphan = registry.store.put(io.BytesIO(b"orphan " * 100))
    lock_path = home / "store" / "lock"
    gc: subprocess.Popen[str] | None = None
    try:
        with registry.store.writer() as writer:
            committed = writer.add_stream(io.BytesIO(os.urandom(50_000)))
            abandoned = writer.add_stream(io.BytesIO(os.urandom(20_000)))
            writer.publish()
            published = (committed.sha256, abandoned.sha256, orphan.sha256)
            assert all(registry.store.stat(sha) is not None for sha in published)
            # Another process collects with no grace while this "registration" is between
            # publishing its blobs and committing its version.
            gc = subprocess.Popen(
                [sys.executable, "-m", "modelyard", "gc", "--grace", "0", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=cli_env(home, db_url),
            )
            wait_for_lock_attempt(gc, lock_path)
            hold_until = time.monotonic() + 1.0
            while time.monotonic() < hold_until:
                assert gc.poll() is None, "gc did not wait for the writer"
                assert all(registry.store.stat(sha) is not None for sha in published), "gc removed a blob"
                time.sleep(0.02)
            commit_version(registry, "gpt-small-v1", committed.sha256, committed.size)
            time.sleep(0.2)
            assert gc.poll() is None
            assert all(registry.store.stat(sha) is not None for sha in published)
        out, err = gc.communicate(timeout=60)
        assert gc.returncode == 0, err
    finally:
        if gc is not None and gc.poll() is None:
            gc.kill()
            gc.wait()
    report = json.loads(out)
    # gc planned all three, but re-read the references under the lock: the committed blob stays.
    assert report["removed"] == sorted([orphan.sha256, abandoned.sha256])
    assert registry.store.stat(committed.sha256) is not None
    assert registry.store.stat(abandoned.sha256) is None
    assert registry.verify().ok
    assert temporaries(home) == []


def test_gc_api_raises_busy_while_another_process_writes(registry: Registry, home: Path) -> None:
    orphan = registry.store.put(io.BytesIO(b"an orphan blob"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        held = holder.stdout.readline().strip()
        assert len(held) == 64, holder.stderr.read() if holder.stderr else ""
        before = store_snapshot(home)
        # A dry run takes no lock: it answers at once, even while a writer is active.
        plan = registry.gc(dry_run=True, grace_seconds=0, lock_timeout=0.5)
        assert sorted(blob.sha256 for blob in plan.removable) == sorted([held, orphan.sha256])
        started = time.monotonic()
        with pytest.raises(BusyError, match="a registration is writing to the store") as caught:
            registry.gc(grace_seconds=0, lock_timeout=0.5)
        elapsed = time.monotonic() - started
        assert caught.value.exit_code == 8
        assert 0.5 <= elapsed < 10
        assert store_snapshot(home) == before
        assert registry.store.stat(held) is not None and registry.store.stat(orphan.sha256) is not None
        assert "gc" not in [event["action"] for event in registry.events()]
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    report = registry.gc(grace_seconds=0, lock_timeout=5)
    assert sorted(blob.sha256 for blob in report.removable) == sorted([held, orphan.sha256])
    assert stored_blobs(home) == {}


# -- deduplication --------------------------------------------------------------------------


def test_dedup_across_names_stores_a_shared_blob_once(registry: Registry, home: Path, make_run: RunBuilder) -> None:
    first_run = make_run("first", seed=0)
    second_run = first_run.parent / "second"
    shutil.copytree(first_run, second_run)
    write_safetensors(second_run / "checkpoints" / "extra.safetensors", seed=99)
    backdate(second_run)
    first_files, second_files = file_digests(first_run), file_digests(second_run)
    extra_size = second_files["checkpoints/extra.safetensors"][0]

    first = registry.register(first_run, RegisterOptions(artifact_name=NAME))
    second = registry.register(second_run, RegisterOptions(artifact_name="gpt-small-v1"))
    assert first.created and second.created
    assert first.bytes_added == sum(dict((sha, size) for size, sha in first_files.values()).values())
    assert second.bytes_added == extra_size
    assert second.bytes_read == second.bytes_total == sum(size for size, _ in second_files.values())
    assert second.methods == {"existing": len(first_files), "copy": 1}

    blobs = stored_blobs(home)
    distinct = {sha: size for size, sha in [*first_files.values(), *second_files.values()]}
    assert blobs == distinct
    assert len(blobs) == len(first_files) + 1
    assert version_files(registry, "gpt-small-v1") == {1: second_files}
    assert registry.verify().ok
