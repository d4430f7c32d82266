"""Faults, run for real: kill -9 in the middle of a registration, a full disk, unreadable files,
symlinks, bad input, a store other users cannot change, `--link`'s shared inodes, and a file that
changes under a registration.

Every case runs the real CLI in a subprocess against real files. Whatever goes wrong, the
invariant is the same: the registration either fails with a one-line error naming the file or
field and the cause (and the right exit code), or the version is fully there; nothing
half-written is visible (no new version in `modelyard list`, nothing left in `<home>/store/tmp/`)
and `modelyard verify` passes.

Tests that mount filesystems or switch to the `nobody` user need root and skip without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import CliResult, RunBuilder, backdate

NAME = "gpt-small-v1"
OTHER_NAME = "vision-vit-base16-embed-v1"
MiB = 1024 * 1024
NOBODY_UID = 65534
SETPRIV_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


# -- helpers --------------------------------------------------------------------------------


def _require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "MODELYARD_HOME": str(home)}
    env.pop("MODELYARD_DB_URL", None)
    env.pop("MODELYARD_STORE_URL", None)
    return env


def _command(args: tuple[str, ...], as_nobody: bool) -> list[str]:
    # setpriv execs the interpreter itself, while it still may: as nobody, an `env` in between
    # could not follow the venv's python link into a root-only directory (/root/.pyenv here).
    command = [sys.executable, "-m", "modelyard", *args]
    return [*SETPRIV_NOBODY, *command] if as_nobody else command


def _popen(home: Path, *args: str, as_nobody: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _command(args, as_nobody),
        env=_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> CliResult:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish within {timeout} s:\n{stderr}") from None
    return CliResult(proc.returncode, stdout, stderr)


def _cli(home: Path, *args: str, as_nobody: bool = False) -> CliResult:
    return _finish(_popen(home, *args, as_nobody=as_nobody))


def _cli_all(home: Path, commands: list[tuple[str, ...]]) -> list[CliResult]:
    """Run independent commands side by side (each one a separate real process)."""
    procs = [_popen(home, *args) for args in commands]
    return [_finish(proc) for proc in procs]


@contextlib.contextmanager
def _running(home: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A CLI process that is killed with SIGKILL when the block ends (if still running)."""
    proc = _popen(home, *args)
    try:
        yield proc
    finally:
        _kill(proc)


def _assert_one_line_error(result: CliResult, exit_code: int, *needles: str) -> None:
    assert result.returncode == exit_code, f"exit {result.returncode}, wanted {exit_code}:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"wanted one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} is not in {lines[0]!r}"
    assert "Traceback" not in result.stderr


def _tmp_entries(home: Path) -> list[str]:
    try:
        return sorted(os.listdir(home / "store" / "tmp"))
    except FileNotFoundError:
        return []


def _blobs(home: Path) -> dict[str, Path]:
    objects = home / "store" / "objects" / "sha256"
    if not objects.is_dir():
        return {}
    return {path.name: path for path in objects.glob("??/*")}


def _blob_path(home: Path, sha256: str) -> Path:
    return home / "store" / "objects" / "sha256" / sha256[:2] / sha256


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            hasher.update(chunk)
    return hasher.hexdigest()


def _run_digests(run: Path) -> set[str]:
    """The digests a registration of `run` stores (its artifact_manifest.json is metadata)."""
    return {_sha256(p) for p in run.rglob("*") if p.is_file() and p.name != "artifact_manifest.json"}


def _state(home: Path, *, as_nobody: bool = False) -> tuple[list[str], CliResult]:
    """`modelyard list --all-versions --json` and `modelyard verify --json`, run side by side."""
    listing = _popen(home, "list", "--all-versions", "--json", as_nobody=as_nobody)
    verifying = _popen(home, "verify", "--json", as_nobody=as_nobody)
    listed, verified = _finish(listing), _finish(verifying)
    assert listed.returncode == 0, listed.stderr
    return sorted(row["ref"] for row in listed.json()), verified


def _assert_clean(home: Path, refs: list[str], *, blobs_checked: int | None = None, as_nobody: bool = False) -> None:
    """Exactly these versions are listed, nothing is staged, and `modelyard verify` passes."""
    listed, verified = _state(home, as_nobody=as_nobody)
    assert listed == sorted(refs)
    assert _tmp_entries(home) == []
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = verified.json()
    assert report["ok"] is True and report["problems"] == []
    assert report["versions"] == len(refs)
    if blobs_checked is not None:
        assert report["blobs_checked"] == blobs_checked


def _write_random(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


def _kill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL (unless it has already exited and been reaped); what it wrote on stderr."""
    proc.kill()
    return proc.communicate()[1]


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    """Poll until `condition()` holds while `proc` still runs; fail if it finished first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _, stderr = proc.communicate()
            raise AssertionError(f"the registration ended (exit {proc.returncode}) before {what}:\n{stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _blocked_on_flock(lock_path: Path) -> bool:
    """True when some process waits for a flock on `lock_path` (a '->' line in /proc/locks)."""
    # e.g. "1: -> FLOCK  ADVISORY  READ 14240 fe:00:2229351 0 EOF" (pid, then device:inode)
    inode = str(os.stat(lock_path).st_ino)
    waiting = [line.split() for line in Path("/proc/locks").read_text().splitlines() if " -> FLOCK " in line]
    return any(len(fields) > 6 and fields[6].rsplit(":", 1)[-1] == inode for fields in waiting)


def _rmtree(path: Path) -> None:
    """Remove a tree whatever its modes (tests leave 0000 files and 0444 blobs behind)."""

    def fix(function, failed, _exc):  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o755)
            os.chmod(failed, 0o755)
        function(failed)

    if path.exists():
        shutil.rmtree(path, onerror=fix)


def _edit_in_place(path: Path, offset: int = 100) -> None:
    """Overwrite a few bytes without changing the size (root ignores the 0444 mode)."""
    if os.geteuid() != 0:
        os.chmod(path, 0o644)
    with path.open("r+b") as handle:
        handle.seek(offset)
        original = handle.read(8)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in original))


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that `nobody` can traverse (pytest's tmp_path parents are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="modelyard-faults-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        _rmtree(path)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 3 MB tmpfs, unmounted afterwards whatever happens."""
    _require_root("mounts a tmpfs")
    mountpoint = Path(tempfile.mkdtemp(prefix="modelyard-full-", dir="/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        mountpoint.rmdir()


# -- 1. kill -9 during registration ---------------------------------------------------------


@pytest.mark.slow
def test_kill_9_while_a_large_file_is_copied_leaves_only_temporaries_that_gc_removes(tmp_path: Path) -> None:
    home, big = tmp_path / "home", tmp_path / "big"
    size = 400 * MiB
    big.mkdir()
    with (big / "weights.bin").open("wb") as handle:  # mostly a hole, with random bytes here and there
        handle.truncate(size)
        rng = random.Random(3)
        for offset in range(0, size, size // 8):
            handle.seek(offset)
            handle.write(rng.randbytes(64 * 1024))
    (big / "config.json").write_text('{"lr": 0.001}')
    backdate(big)
    try:
        with _running(home, "register", str(big), "--artifact-name", NAME) as proc:
            _wait_for(lambda: bool(_tmp_entries(home)), proc, "a file appeared in store/tmp/")
        assert proc.returncode == -signal.SIGKILL

        leftovers = _tmp_entries(home)
        assert leftovers, "the kill left no temporary behind: it came too late to test anything"
        assert all((home / "store" / "tmp" / name).stat().st_size < size for name in leftovers)
        assert _blobs(home) == {}  # nothing is published before everything is staged
        listed, verified = _state(home)
        assert listed == []
        assert verified.returncode == 0 and verified.json()["ok"] is True

        gc = _cli(home, "gc", "--grace", "0", "--json")
        assert gc.returncode == 0, gc.stderr
        assert sorted(gc.json()["temporaries"]) == leftovers
        assert _tmp_entries(home) == []

        again = _cli(home, "register", str(big), "--artifact-name", NAME, "--json")
        assert again.returncode == 0, again.stderr
        assert again.json()["created"] is True and again.json()["bytes_added"] == size + len('{"lr": 0.001}')
        verified = _cli(home, "verify", "--json")
        assert verified.returncode == 0, verified.stdout
        assert (verified.json()["versions"], verified.json()["blobs_checked"]) == (1, 2)
        assert _tmp_entries(home) == []
    finally:  # 800 MB: do not leave them to pytest's retention of old temporary directories
        _rmtree(big)
        _rmtree(home)


@contextlib.contextmanager
def _holding_store_lock(home: Path) -> Iterator[Path]:
    lock = home / "store" / "lock"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lock
    finally:
        os.close(fd)


@contextlib.contextmanager
def _holding_sqlite_write_lock(database: Path) -> Iterator[None]:
    assert database.is_file(), database
    connection = sqlite3.connect(database, timeout=5, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def _catalog_versions(home: Path) -> int:
    connection = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=5)
    try:
        return int(connection.execute("SELECT count(*) FROM versions").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.slow
def test_kill_9_at_each_phase_of_a_registration(tmp_path: Path, make_run: RunBuilder) -> None:
    """Hold the lock the registration needs next, wait until it blocks there, kill it; at three
    phases in turn, next to a version registered before (whose small files it shares)."""
    home = tmp_path / "home"
    warmup = make_run("warmup", seed=40)
    assert _cli(home, "register", str(warmup), "--artifact-name", NAME).returncode == 0
    before = set(_blobs(home))
    run = make_run("v5_5_20251124", seed=1)
    _write_random(run / "checkpoints" / "large.bin", 5 * MiB, seed=2)  # big enough to be fsynced alone
    backdate(run)
    new = _run_digests(run) - before
    assert len(new) == 3  # best, latest and large: the small files are stored already
    args = ("register", str(run), "--artifact-name", OTHER_NAME, "--json")

    # 1. Scanned and hashed nothing yet: waiting for the store's (shared) lock.
    with _holding_store_lock(home) as lock, _running(home, *args) as proc:
        _wait_for(lambda: _blocked_on_flock(lock), proc, "it waited for the store's lock")
    assert proc.returncode == -signal.SIGKILL
    _assert_clean(home, [f"{NAME}@1"], blobs_checked=len(before))
    assert set(_blobs(home)) == before

    # 2. Blobs stored and published, the catalog commit pending: unreferenced blobs, no version.
    with _holding_sqlite_write_lock(home / "catalog.db"), _running(home, *args) as proc:
        _wait_for(lambda: new <= set(_blobs(home)) and not _tmp_entries(home), proc, "its blobs were published")
    assert proc.returncode == -signal.SIGKILL
    _assert_clean(home, [f"{NAME}@1"], blobs_checked=len(before))
    gc = _cli(home, "gc", "--grace", "0", "--json")
    assert gc.returncode == 0, gc.stderr
    assert set(gc.json()["removed"]) == new
    assert set(_blobs(home)) == before

    # 3. Version committed, the stat cache update pending: the version is whole.
    with _holding_sqlite_write_lock(home / "cache" / "stat.sqlite3"), _running(home, *args) as proc:
        _wait_for(lambda: _catalog_versions(home) == 2, proc, "its version was committed")
    assert proc.returncode == -signal.SIGKILL
    _assert_clean(home, [f"{NAME}@1", f"{OTHER_NAME}@1"], blobs_checked=len(before | new))

    again = _cli(home, *args)
    assert again.returncode == 0, again.stderr
    assert (again.json()["ref"], again.json()["created"], again.json()["bytes_added"]) == (f"{OTHER_NAME}@1", False, 0)
    assert _tmp_entries(home) == []


@pytest.mark.slow
def test_kill_9_after_a_delay_leaves_the_version_whole_or_absent(tmp_path: Path) -> None:
    run = tmp_path / "many"
    for i in range(300):
        _write_random(run / "shards" / f"part-{i:03d}.json", 1500 + i, seed=i)
    for i in range(2):
        _write_random(run / f"model-{i}.bin", 6 * MiB, seed=1000 + i)
    backdate(run)
    digests = _run_digests(run)
    killed = 0
    for attempt, delay in enumerate([0.35, 0.7, 1.05]):
        home = tmp_path / f"home{attempt}"
        proc = _popen(home, "register", str(run), "--artifact-name", NAME)
        time.sleep(delay)
        stderr = _kill(proc)
        assert proc.returncode in (0, -signal.SIGKILL), stderr
        killed += proc.returncode == -signal.SIGKILL
        listed, verified = _state(home)
        assert verified.returncode == 0 and verified.json()["ok"] is True, verified.stdout
        assert listed in ([], [f"{NAME}@1"])
        if listed:
            assert verified.json()["blobs_checked"] == len(digests)
        kept = digests if listed else set()
        assert kept <= set(_blobs(home))
        if _tmp_entries(home) or set(_blobs(home)) != kept:
            assert _cli(home, "gc", "--grace", "0").returncode == 0
        assert _tmp_entries(home) == []
        assert set(_blobs(home)) == kept
    assert killed, "every registration finished before its kill"


# -- 2. the disk fills up -------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.slow
def test_a_full_disk_fails_with_exit_7_and_leaves_nothing_behind(small_disk: Path, tmp_path: Path) -> None:
    home = small_disk / "home"
    one_big = tmp_path / "one_big"
    _write_random(one_big / "weights.bin", 5 * MiB, seed=1)
    (one_big / "notes.txt").write_text("small\n")
    several = tmp_path / "several"  # >= 1 MiB each: stored in parallel, one file per task
    for i in range(5):
        _write_random(several / f"shard-{i}.bin", MiB + i, seed=10 + i)
    many_small = tmp_path / "many_small"  # < 1 MiB each: stored one after another in one batch
    for i in range(20):
        _write_random(many_small / f"part-{i:02d}.bin", 200_000 + i, seed=100 + i)
    for run in (one_big, several, many_small):
        backdate(run)
        result = _cli(home, "register", str(run), "--artifact-name", NAME)
        _assert_one_line_error(result, 7, "no space left", str(home / "store"))
        assert _tmp_entries(home) == []
        assert _blobs(home) == {}
    _assert_clean(home, [])


@pytest.mark.root
@pytest.mark.slow
def test_a_disk_that_fills_up_at_the_catalog_commit_fails_cleanly(small_disk: Path, tmp_path: Path) -> None:
    """A file that just fits, leaving too little room for the catalog's commit: one line, exit 7.

    Sizes step up to the free space from below: the first ones do not fit in the store; the
    first failure that leaves a blob stored was the catalog's commit running out of room."""
    home = small_disk / "home"
    page = 4096
    commit_failed = False
    for spare_pages in range(12, 80, 4):
        run = tmp_path / f"fit{spare_pages}"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        _write_random(run / "weights.bin", free - spare_pages * page, seed=spare_pages)
        backdate(run)
        result = _cli(home, "register", str(run), "--artifact-name", NAME)
        assert _tmp_entries(home) == []
        assert result.returncode != 0, f"{spare_pages} pages to spare were enough for the commit too"
        _assert_one_line_error(result, 7)
        assert "no space" in result.stderr or "full" in result.stderr
        if _blobs(home):  # stored and published, but the commit failed: unreferenced, gc removes it
            commit_failed = True
            break
    assert commit_failed
    assert _cli(home, "gc", "--grace", "0").returncode == 0
    assert _blobs(home) == {}

    fits = tmp_path / "fits"
    _write_random(fits / "weights.bin", MiB, seed=1)
    backdate(fits)
    result = _cli(home, "register", str(fits), "--artifact-name", NAME)
    assert result.returncode == 0, result.stderr
    _assert_clean(home, [f"{NAME}@1"], blobs_checked=1)  # @1: no failed attempt left a version


# -- 3. unreadable files --------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.slow
def test_an_unreadable_file_or_directory_is_refused_with_exit_3_naming_it(shared_dir: Path) -> None:
    _require_root("registers as the nobody user")
    home, run = shared_dir / "home", shared_dir / "run"
    for i in range(3):  # staged (in parallel) before the unreadable file is reached, then discarded
        _write_random(run / f"shard-{i}.bin", 2 * MiB, seed=i)
    secret = run / "sub" / "secret.bin"
    _write_random(secret, 1000, seed=9)
    home.mkdir()
    subprocess.run(["chown", "-R", f"{NOBODY_UID}:{NOBODY_UID}", str(home), str(run)], check=True)
    secret.chmod(0o000)

    result = _cli(home, "register", str(run), "--artifact-name", NAME, as_nobody=True)
    _assert_one_line_error(result, 3, str(secret), "Permission denied")
    assert _tmp_entries(home) == [] and _blobs(home) == {}

    secret.chmod(0o644)
    (run / "sub").chmod(0o000)
    result = _cli(home, "register", str(run), "--artifact-name", NAME, as_nobody=True)
    _assert_one_line_error(result, 3, str(run / "sub"), "Permission denied")
    assert _tmp_entries(home) == [] and _blobs(home) == {}

    (run / "sub").chmod(0o755)
    result = _cli(home, "register", str(run), "--artifact-name", NAME, as_nobody=True)
    assert result.returncode == 0, result.stderr
    _assert_clean(home, [f"{NAME}@1"], blobs_checked=4, as_nobody=True)


@pytest.mark.root
def test_an_unreadable_file_is_refused_with_link_too_and_keeps_its_mode(shared_dir: Path) -> None:
    """--link must not make a file its owner made unreadable (mode 0000) readable to store it."""
    _require_root("registers as the nobody user")
    home, run = shared_dir / "home", shared_dir / "run"
    _write_random(run / "weights.bin", 4000, seed=1)
    secret = run / "secret.bin"
    _write_random(secret, 1000, seed=2)
    home.mkdir()
    subprocess.run(["chown", "-R", f"{NOBODY_UID}:{NOBODY_UID}", str(home), str(run)], check=True)
    secret.chmod(0o000)

    result = _cli(home, "register", str(run), "--artifact-name", NAME, "--link", as_nobody=True)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o000, "--link changed the mode of the user's file"
    _assert_one_line_error(result, 3, str(secret), "Permission denied")
    _assert_clean(home, [], as_nobody=True)


# -- 4. symlinks ----------------------------------------------------------------------------


@pytest.mark.slow
def test_symlinks_inside_are_followed_outside_and_dangling_ones_refused(tmp_path: Path, make_run: RunBuilder) -> None:
    home = tmp_path / "home"
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the run\n")
    (tmp_path / "outside_dir").mkdir()
    refusals = [  # (link in checkpoints/, its target, what the error says)
        ("leak.txt", str(outside), "symlink points outside the registered directory"),
        ("leak_dir", str(tmp_path / "outside_dir"), "symlink points outside the registered directory"),
        ("sneaky.txt", "../../../outside.txt", "symlink points outside the registered directory"),
        ("gone.txt", "nothing-here.txt", "symlink points to nothing (a dangling link)"),
    ]
    links = []
    for i, (name, target, _) in enumerate(refusals):
        link = make_run(f"refused{i}") / "checkpoints" / name
        link.symlink_to(target)
        links.append(link)
    results = _cli_all(home, [("register", str(link.parent.parent), "--artifact-name", NAME) for link in links])
    for link, (_, _, message), result in zip(links, refusals, results, strict=True):
        _assert_one_line_error(result, 3, str(link), message)
    assert _tmp_entries(home) == []

    run = make_run()
    (run / "checkpoints" / "final.safetensors").symlink_to("best.safetensors")
    (run / "metrics_link").symlink_to(run / "metrics")  # an absolute link to a directory inside
    result = _cli(home, "register", str(run), "--artifact-name", NAME, "--json")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "exported"
    shown, exported = _cli_all(home, [("show", f"{NAME}@1", "--json"), ("export", f"{NAME}@1", "--to", str(out))])
    assert exported.returncode == 0, exported.stderr
    files = {entry["path"]: entry for entry in shown.json()["files"]}
    best = run / "checkpoints" / "best.safetensors"
    assert files["checkpoints/final.safetensors"]["sha256"] == files["checkpoints/best.safetensors"]["sha256"]
    assert files["checkpoints/final.safetensors"]["size"] == best.stat().st_size
    assert "metrics/training_metrics.json" in files
    final = out / "checkpoints" / "final.safetensors"
    assert not final.is_symlink() and final.read_bytes() == best.read_bytes()
    _assert_clean(home, [f"{NAME}@1"])  # only the last registration made a version


def test_a_symlink_loop_is_refused_with_exit_3_naming_the_link(tmp_path: Path, make_run: RunBuilder) -> None:
    home = tmp_path / "home"
    to_itself = make_run("self") / "loop"
    to_itself.symlink_to("loop")
    pair = make_run("pair")
    (pair / "ping").symlink_to("pong")
    (pair / "pong").symlink_to("ping")
    results = _cli_all(home, [("register", str(run), "--artifact-name", NAME) for run in (to_itself.parent, pair)])
    for result, names in zip(results, [[to_itself], [pair / "ping", pair / "pong"]], strict=True):
        _assert_one_line_error(result, 3, "symbolic link")
        assert any(str(name) in result.stderr for name in names), result.stderr
    _assert_clean(home, [])


# -- 5. bad input ---------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_paths_names_configs_and_manifests_fail_with_exit_3(tmp_path: Path, make_run: RunBuilder) -> None:
    home = tmp_path / "home"
    run = make_run()
    missing = tmp_path / "no" / "such" / "run"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("batch_size: 256\nlr: [0.1, 0.2\nepochs: 3\n")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "batch_size": 256,\n  "epochs": 3,,\n}\n')
    fp12 = make_run("fp12", manifest={"precision": "fp12"})
    typo = make_run("typo", manifest={"embeding_dim": 768})

    cases: list[tuple[tuple[str, ...], tuple[str, ...]]] = [  # (register's arguments, what stderr says)
        ((str(missing),), (str(missing), "no such file or directory")),
        ((str(run), "--config", str(bad_yaml)), (str(bad_yaml), "invalid YAML at line 3 column")),
        ((str(run), "--config", str(bad_json)), (str(bad_json), "invalid JSON at line 3 column")),
        ((str(fp12),), (str(fp12 / "artifact_manifest.json"), "precision: Input should be 'fp32'")),
        ((str(typo),), (str(typo / "artifact_manifest.json"), "embeding_dim: unknown field", "'embedding_dim'")),
    ]
    for name, problem in [
        ("Vision-embed", "invalid character 'V' at position 1"),
        ("vision-embed", "must end with the major version '-v<N>'"),
        ("vision-embed-v1", "the base-model part is missing before the purpose 'embed'"),
        ("vision-vit--embed-v1", "part '' is empty"),
        ("encoder.embed.vit.run", "an automatic name has 5 dot-separated parts"),
    ]:
        cases.append(((str(run), "--artifact-name", name), ("field 'artifact_name'", repr(name), problem)))

    results = _cli_all(home, [("register", *args) for args, _ in cases])
    for (_, needles), result in zip(cases, results, strict=True):
        _assert_one_line_error(result, 3, *needles)
    _assert_clean(home, [])


# -- 6. stored content is read-only ---------------------------------------------------------

_TAMPER = r"""
import json, os, sys
blob, shard, tmp = sys.argv[1:4]
results = {}
def attempt(name, action):
    try:
        action()
    except PermissionError as exc:
        results[name] = f"PermissionError {exc.errno}"
    except OSError as exc:
        results[name] = f"OSError {exc.errno}"
    else:
        results[name] = "succeeded"
attempt("open for writing", lambda: open(blob, "r+b").close())
attempt("open for appending", lambda: open(blob, "ab").close())
attempt("truncate", lambda: os.truncate(blob, 0))
attempt("unlink", lambda: os.unlink(blob))
attempt("rename", lambda: os.rename(blob, blob + ".moved"))
attempt("chmod", lambda: os.chmod(blob, 0o666))
attempt("create in shard", lambda: open(os.path.join(shard, "intruder"), "xb").close())
attempt("create in tmp", lambda: open(os.path.join(tmp, "intruder"), "xb").close())
print(json.dumps(results))
"""


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SETPRIV_NOBODY, sys.executable, *args], capture_output=True, text=True, cwd="/")


@pytest.mark.root
@pytest.mark.slow
def test_other_users_cannot_change_stored_blobs_and_root_damage_is_caught(shared_dir: Path) -> None:
    _require_root("tries changes as the nobody user and writes to a 0444 blob as root")
    home = shared_dir / "home"
    run = RunBuilder(shared_dir / "runs")()
    assert _cli(home, "register", str(run), "--artifact-name", NAME).returncode == 0
    digest = _sha256(run / "checkpoints" / "best.safetensors")
    blob = _blob_path(home, digest)
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444

    tamper = _as_nobody("-c", _TAMPER, str(blob), str(blob.parent), str(home / "store" / "tmp"))
    assert tamper.returncode == 0, tamper.stderr
    results = json.loads(tamper.stdout)
    assert len(results) == 8
    assert all(outcome.startswith("PermissionError") for outcome in results.values()), results
    assert _sha256(blob) == digest and stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert not (blob.parent / "intruder").exists() and not _tmp_entries(home)

    # Root ignores 0444: the damage is caught, reported with the version and path, and quarantined.
    _edit_in_place(blob)
    verified = _cli(home, "verify")
    assert verified.returncode == 6
    assert f"corrupt: sha256:{digest} used by {NAME}@1:checkpoints/best.safetensors" in verified.stdout
    assert f"moved to {home / 'store' / 'quarantine' / digest}." in verified.stdout
    assert not blob.exists()
    assert [p.name.split(".")[0] for p in (home / "store" / "quarantine").iterdir()] == [digest]
    again = _cli(home, "verify")
    assert again.returncode == 6
    assert f"missing: sha256:{digest} used by {NAME}@1:checkpoints/best.safetensors" in again.stdout

    restored = _cli(home, "register", str(run), "--artifact-name", NAME)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"unchanged: {NAME}@1")
    assert _sha256(blob) == digest and stat.S_IMODE(blob.stat().st_mode) == 0o444
    _assert_clean(home, [f"{NAME}@1"])


@pytest.mark.root
def test_a_blob_is_read_only_even_for_the_user_who_owns_it(shared_dir: Path) -> None:
    _require_root("registers as the nobody user")
    home = shared_dir / "home"
    run = RunBuilder(shared_dir / "runs")()
    home.mkdir()
    subprocess.run(["chown", "-R", f"{NOBODY_UID}:{NOBODY_UID}", str(home), str(run)], check=True)
    result = _cli(home, "register", str(run), "--artifact-name", NAME, as_nobody=True)
    assert result.returncode == 0, result.stderr
    blob = _blob_path(home, _sha256(run / "checkpoints" / "best.safetensors"))
    info = blob.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY_UID, 0o444)
    opened = _as_nobody("-c", "import sys; open(sys.argv[1], 'r+b')", str(blob))
    assert opened.returncode == 1
    assert "PermissionError: [Errno 13] Permission denied" in opened.stderr
    _assert_clean(home, [f"{NAME}@1"], as_nobody=True)


# -- 7. --link ------------------------------------------------------------------------------


def test_link_shares_the_inode_and_an_edit_in_place_is_caught(tmp_path: Path, make_run: RunBuilder) -> None:
    home = tmp_path / "home"
    run = make_run()
    result = _cli(home, "register", str(run), "--artifact-name", NAME, "--link", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json()["methods"] == {"hardlink": 7}
    shown, help_result = _cli_all(home, [("show", f"{NAME}@1", "--json"), ("register", "--help")])
    files = shown.json()["files"]
    for entry in files:
        mine, blob = (run / entry["path"]).stat(), _blob_path(home, entry["sha256"]).stat()
        assert (mine.st_dev, mine.st_ino) == (blob.st_dev, blob.st_ino), entry["path"]
        assert stat.S_IMODE(mine.st_mode) & 0o222 == 0 and mine.st_nlink == 2  # write bits gone
    help_text = " ".join(help_result.stdout.replace("│", " ").split()).lower()
    assert "a hardlinked file shares its inode with the stored blob" in help_text

    edited = run / "checkpoints" / "best.safetensors"
    digest = next(e["sha256"] for e in files if e["path"] == "checkpoints/best.safetensors")
    _edit_in_place(edited)
    verified = _cli(home, "verify")
    assert verified.returncode == 6
    assert f"corrupt: sha256:{digest} used by {NAME}@1:checkpoints/best.safetensors" in verified.stdout
    assert "FAILED: 1 problem(s)" in verified.stdout
    assert not _blob_path(home, digest).exists()  # quarantined: the store's name is moved away ...
    assert edited.exists() and _sha256(edited) != digest  # ... the user's name and edit stay


def test_a_failed_link_registration_gives_the_files_their_modes_back(tmp_path: Path, make_run: RunBuilder) -> None:
    """The run's manifest vouches for a file with the wrong digest: refused after the files were
    linked (and made 0444). Nothing was registered, so the user's files must be as they were."""
    home = tmp_path / "home"
    run = make_run()
    best = run / "checkpoints" / "best.safetensors"
    claimed = {"path": "checkpoints/best.safetensors", "size": best.stat().st_size, "sha256": "0" * 64}
    (run / "artifact_manifest.json").write_text(json.dumps({"files": [claimed]}))
    backdate(run)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert all(mode & 0o200 for mode in modes.values())  # writable by their owner, as written

    result = _cli(home, "register", str(run), "--artifact-name", NAME, "--link")
    _assert_one_line_error(result, 3, str(run / "artifact_manifest.json"), "field 'files'", "should have size")
    _assert_clean(home, [])
    now = {p: stat.S_IMODE(p.stat().st_mode) for p in modes}
    changed = {p.relative_to(run).as_posix(): f"{modes[p]:o} -> {now[p]:o}" for p in modes if now[p] != modes[p]}
    assert changed == {}, f"a failed registration left the user's files read-only: {changed}"
    assert all(p.stat().st_nlink == 1 for p in modes)


@pytest.mark.slow
def test_link_keeps_every_blob_read_only_when_two_names_share_an_inode(tmp_path: Path) -> None:
    """A run with hardlinked pairs (latest and best the same file, say): each blob must stay 0444.

    The two names of one inode are linked by two threads at once; the one that finds the digest
    already staged must not restore the mode it saw before the other made the inode read-only.
    """
    run = tmp_path / "pairs"
    for group in range(16):  # >= 1 MiB each: one task per file, two at a time
        first = run / f"g{group:02d}-best.bin"
        _write_random(first, MiB, seed=group)
        os.link(first, run / f"g{group:02d}-latest.bin")
    backdate(run)
    for attempt in range(3):
        home = tmp_path / f"home{attempt}"
        result = _cli(home, "register", str(run), "--artifact-name", NAME, "--link")
        assert result.returncode == 0, result.stderr
        modes = {sha: stat.S_IMODE(path.stat().st_mode) for sha, path in _blobs(home).items()}
        assert len(modes) == 16
        writable = {sha[:12]: oct(mode) for sha, mode in modes.items() if mode != 0o444}
        assert writable == {}, f"attempt {attempt}: stored blobs left writable: {writable}"
        for path in run.iterdir():
            path.chmod(0o644)  # as before the registration, for the next attempt


# -- 8. a file that changes under the registration -----------------------------------------


def test_a_file_changed_after_the_scan_is_refused_or_recorded_as_stored(tmp_path: Path) -> None:
    """The registration scans, then waits for the store's lock; the file grows meanwhile.

    Either it is refused (exit 3, naming the file) or the version records the bytes actually
    stored; a manifest whose size disagrees with its blob cannot be exported."""
    home, run = tmp_path / "home", tmp_path / "run"
    growing = run / "weights.bin"
    _write_random(growing, 3000, seed=1)
    (run / "notes.txt").write_text("notes\n")
    backdate(run)
    assert _cli(home, "verify").returncode == 0  # creates the store and its lock

    with _holding_store_lock(home) as lock:
        proc = _popen(home, "register", str(run), "--artifact-name", NAME, "--json")
        try:
            _wait_for(lambda: _blocked_on_flock(lock), proc, "it waited for the store's lock")
            with growing.open("ab") as handle:
                handle.write(b"appended after the scan")
        except BaseException:
            _kill(proc)
            raise
    result = _finish(proc)

    if result.returncode != 0:
        _assert_one_line_error(result, 3, str(growing), "changed")
        _assert_clean(home, [])
        return
    out = tmp_path / "out"
    shown, exported = _cli_all(home, [("show", f"{NAME}@1", "--json"), ("export", f"{NAME}@1", "--to", str(out))])
    entry = next(e for e in shown.json()["files"] if e["path"] == "weights.bin")
    blob = _blob_path(home, entry["sha256"])
    assert entry["size"] == blob.stat().st_size == growing.stat().st_size, "manifest size != stored bytes"
    assert result.json()["bytes_total"] == result.json()["bytes_read"]
    assert exported.returncode == 0, exported.stderr
    _assert_clean(home, [f"{NAME}@1"])
