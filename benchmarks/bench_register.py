#!/usr/bin/env python3
"""Registration benchmark: modelyard `register` against what this machine can do on the same bytes.

    .venv/bin/python benchmarks/bench_register.py                      # the full run (a few minutes)
    .venv/bin/python benchmarks/bench_register.py --size-gib 0.2 --small-files 2000 --runs 1   # smoke

Two data sets are generated under --workdir: about 3 GiB of "weights" (four files of equal size and
a few small JSON/YAML configs) and 20,000 files of 4 KiB in a few subdirectories, all random bytes
(no dedup), mtimes set an hour into the past and synced, so the stat cache may trust them.

Every figure is printed next to its reference, measured in the same run on the same bytes:

* first `register --link` vs the SHA-256 ceiling: hashlib.sha256 (OpenSSL) in two threads over
  the same files; target >= 0.85x its throughput.
* first `register` in copy mode (durable) vs `cp -r SRC DST && sync`; target <= 1.5x its time.
* unchanged re-register: 0 bytes added; in-process < 50 ms; CLI process <= `modelyard --version`
  + 0.15 s; CLI start-up (`--version`) < 0.3 s.
* 20,000 small files, in-process: `--link` < 3 s, copy < 5 s, unchanged re-register < 0.3 s
  (< 0.7 s through the CLI).

Method: the minimum of --runs interleaved rounds (each round runs every method once, in a fixed
order: SHA-256 reference, cp, copy-mode register, --link register, each register followed by its
unchanged re-registers), with the page cache warm (the sources are read right before each timed
step that reads them). A "first" registration gets a fresh registry home: the large set's previous
home is deleted (and synced) before the next; the small set's homes and copies are kept until the
end, because on ext4 without a journal, creating files in the minute after 20,000 were deleted is
several times slower (the benchmark also waits out that minute after a --link registration, whose
reflink attempts free one inode per file where the filesystem cannot reflink). Each registration
runs in its own child Python process; its time is taken inside the child around
`registry.register(...)` only (interpreter start-up and imports excluded), and its peak RSS is the
child's VmHWM. CLI figures are whole processes timed from the parent (fork, exec, imports, work,
exit). The CPU time other processes use meanwhile is printed: on a busy machine figures are
pessimistic.

Only the standard library (and modelyard, in the child processes) is used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import queue
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

ARTIFACT_NAME = "vision-vit-base16-embed-v1"
WEIGHT_FILES = 4
SMALL_FILE_SIZE = 4 * KiB
SMALL_DIRS = 20
GEN_CHUNK = 64 * MiB
HASH_CHUNK = 1 * MiB  # the reference's read size (1 MiB reads of page-cached files hash at full speed)
HASH_THREADS = 2
CLI_REPEATS = 3  # CLI processes per figure per round (they are cheap: fractions of a second)
TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # GNU time, for cp's RSS
MTIME_AGE_S = 3600  # generated files look an hour old: the stat cache trusts them at once
MANY_FILES = 1000  # a data set with more files than this frees "many inodes" when deleted
INODE_COOLDOWN_S = 65  # ext4 without a journal avoids reusing inodes freed in the last 60 s

SPEC_SIZE_GIB = 3.0
SPEC_SMALL_FILES = 20_000
CLI_VERSION_FIGURE = "CLI start-up: modelyard --version"

# Modules a registration imports on first use. The children import them before the clock starts,
# so that in-process timings leave imports out, as a long-running process would.
PREIMPORT_FIRST = [
    "modelyard.registry",
    "modelyard.register.flow",
    "modelyard.store.local",
    "modelyard.catalog.catalog",
    "modelyard.catalog.fastpath",
    "alembic.command",
    "alembic.config",
    "alembic.script",
]
# The unchanged path answers from the stat cache and a read-only sqlite3 query: no SQLAlchemy.
PREIMPORT_UNCHANGED = [
    "modelyard.registry",
    "modelyard.register.flow",
    "modelyard.store.local",
    "modelyard.catalog.fastpath",
]


# ---------------------------------------------------------------------------------------------
# Child processes: `bench_register.py --child JSON` does one timed operation and prints JSON.
# ---------------------------------------------------------------------------------------------


def child_main(spec: dict[str, Any]) -> None:
    if spec["op"] == "hash":
        out = _child_hash(spec["root"], spec["threads"], spec["chunk"])
    elif spec["op"] == "register":
        out = _child_register(spec)
    elif spec["op"] == "generate":
        out = _child_generate(spec)
    elif spec["op"] == "prefault":
        out = _child_prefault(spec["bytes"])
    else:
        raise SystemExit(f"unknown child op {spec['op']!r}")
    out["rss_kib"] = peak_rss_kib()
    sys.stdout.write(json.dumps(out) + "\n")


def peak_rss_kib() -> int | None:
    """This process's peak resident set (VmHWM): exact, unlike a forked child's ru_maxrss, which
    starts from the parent's peak."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def _child_prefault(nbytes: int) -> dict[str, Any]:
    """Touch `nbytes` of anonymous memory, then free it (see `Bench.prefault`)."""
    import mmap

    started = time.perf_counter()
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, nbytes, 4096):
        memory[offset] = 1
    memory.close()
    return {"seconds": time.perf_counter() - started}


def _child_generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Write a data set (in a child, so that its buffers do not inflate the parent's peak RSS)."""
    root = Path(spec["root"])
    if spec["kind"] == "large":
        make_large(root, spec["bytes"])
    else:
        make_small(root, spec["count"])
    age_files([Path(d, name) for d, _, names in os.walk(root) for name in names])
    return {}


def _child_hash(root: str, threads: int, chunk: int) -> dict[str, Any]:
    """hashlib.sha256 over every file under `root`, `threads` threads taking files biggest first.

    Listing the files is not timed: only opening, reading and hashing them."""
    paths = [os.path.join(d, name) for d, _, names in os.walk(root) for name in names]
    ordered = sorted(paths, key=lambda p: os.stat(p).st_size, reverse=True)
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for path in ordered:
        work.put(path)
    totals = [0] * threads
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        try:
            while True:
                try:
                    path = work.get_nowait()
                except queue.Empty:
                    return
                hasher = hashlib.sha256()
                with open(path, "rb", buffering=0) as handle:
                    while count := handle.readinto(buffer):
                        hasher.update(view[:count])
                        totals[index] += count
                hasher.hexdigest()
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    cpu = time.process_time()
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if errors:
        raise errors[0]
    return {"seconds": seconds, "cpu": cpu, "bytes": sum(totals), "files": len(paths)}


def _child_register(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib

    for module in spec["preimport"]:
        importlib.import_module(module)
    from modelyard.register.metadata import RegisterOptions
    from modelyard.registry import Registry

    registry = Registry.open(spec["home"])
    options = RegisterOptions(artifact_name=spec["name"])
    cpu = time.process_time()
    started = time.perf_counter()
    result = registry.register(spec["path"], options, link=spec["link"])
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    registry.close()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "ref": result.version.ref,
        "created": result.created,
        "files_total": result.files_total,
        "bytes_total": result.bytes_total,
        "files_read": result.files_read,
        "bytes_read": result.bytes_read,
        "bytes_added": result.bytes_added,
        "methods": dict(result.methods),
    }


# ---------------------------------------------------------------------------------------------
# Running processes: wall time and peak RSS (wait4's rusage of exactly that child).
# ---------------------------------------------------------------------------------------------


@dataclass
class Proc:
    wall: float
    returncode: int
    stdout: str
    stderr: str
    maxrss_kib: int


def run_process(argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Proc(
            wall=wall,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            maxrss_kib=usage.ru_maxrss,
        )


def checked(proc: Proc, what: str) -> Proc:
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def child_env() -> dict[str, str]:
    """The environment without MODELYARD_* (a user's MODELYARD_DB_URL must not redirect the catalog)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}


def run_child(spec: dict[str, Any], what: str) -> tuple[dict[str, Any], int | None]:
    """Run one operation in a child Python; its JSON answer and its peak RSS (KiB)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = checked(run_process(argv, env=child_env()), what)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, out.get("rss_kib")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    key: str  # "large" or "small"
    root: Path
    files: list[Path]
    total_bytes: int

    @classmethod
    def scan(cls, key: str, root: Path) -> Dataset:
        files = sorted(Path(d, name) for d, _, names in os.walk(root) for name in names)
        return cls(key, root, files, sum(p.stat().st_size for p in files))


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb", buffering=0) as handle:
        remaining = size
        while remaining:
            n = min(GEN_CHUNK, remaining)
            handle.write(os.urandom(n))
            remaining -= n


def _configs() -> dict[str, bytes]:
    config = {
        "architectures": ["ViTModel"],
        "hidden_size": 768,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "image_size": 224,
        "patch_size": 16,
        "torch_dtype": "float16",
    }
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "preprocessor_config.json": json.dumps({"do_resize": True, "size": 224, "image_mean": [0.5] * 3}).encode(),
        "training.yaml": b"optimizer: adamw\nlearning_rate: 3.0e-4\nbatch_size: 256\nepochs: 90\nseed: 1234\n",
        "model.safetensors.index.json": json.dumps(
            {"metadata": {"format": "pt"}, "weight_map": {f"layer.{i}": f"shard-{i % 4}" for i in range(64)}}
        ).encode(),
    }


def make_large(root: Path, total: int) -> None:
    root.mkdir(parents=True)
    weight_size = max(4 * KiB, (total // WEIGHT_FILES) // (4 * KiB) * (4 * KiB))
    paths = [root / f"model-{i + 1:05d}-of-{WEIGHT_FILES:05d}.bin" for i in range(WEIGHT_FILES)]
    # os.urandom releases the GIL: two writer threads generate twice as fast.
    threads = [threading.Thread(target=_write_random, args=(p, weight_size)) for p in paths]
    for start in range(0, len(threads), 2):
        for t in threads[start : start + 2]:
            t.start()
        for t in threads[start : start + 2]:
            t.join()
    for name, data in _configs().items():
        (root / name).write_bytes(data)


def make_small(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    dirs = [root / f"shard-{i:02d}" for i in range(min(SMALL_DIRS, count))]
    for d in dirs:
        d.mkdir()
    block = 4096  # files per urandom call
    for start in range(0, count, block):
        n = min(block, count - start)
        data = memoryview(os.urandom(n * SMALL_FILE_SIZE))
        for j in range(n):
            i = start + j
            path = dirs[i % len(dirs)] / f"sample-{i:06d}.bin"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data[j * SMALL_FILE_SIZE : (j + 1) * SMALL_FILE_SIZE])
            finally:
                os.close(fd)


def age_files(paths: list[Path]) -> None:
    """mtime an hour ago, not on a whole second (whole seconds would mean a coarse clock)."""
    past = time.time_ns() - MTIME_AGE_S * 1_000_000_000 + 123_456_789
    for path in paths:
        os.utime(path, ns=(past, past))


def warm(paths: list[Path]) -> None:
    """Read every file once so the timed runs find it in the page cache."""
    buffer = bytearray(1 * MiB)
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def settle() -> None:
    """Flush dirty pages (and deletions) so they are not charged to the next timed command."""
    os.sync()
    time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------------


class CpuMeter:
    """CPU time the whole machine spent outside this benchmark's processes (other users' work, and
    kernel threads such as writeback), and hypervisor steal: what makes the figures noisy."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float]:
        hz = os.sysconf("SC_CLK_TCK")
        busy = steal = 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / hz  # user nice system irq softirq
            steal = fields[7] / hz
        t = os.times()
        return time.monotonic(), busy, steal, t.user + t.system + t.children_user + t.children_system

    def report(self) -> tuple[float, float, float]:
        """(seconds elapsed, CPU-seconds used by others, CPU-seconds stolen) since creation."""
        now = self._sample()
        return (
            now[0] - self.start[0],
            max(0.0, (now[1] - self.start[1]) - (now[3] - self.start[3])),
            now[2] - self.start[2],
        )

    def describe(self) -> str:
        wall, other, steal = self.report()
        capacity = wall * (os.cpu_count() or 1)
        return (
            f"{other:.1f} CPU-s outside this benchmark ({100 * other / capacity:.0f}% of the machine), "
            f"{steal:.1f} CPU-s stolen, over {wall:.0f} s"
        )

    def busy_fraction(self) -> float:
        wall, other, steal = self.report()
        return (other + steal) / (wall * (os.cpu_count() or 1))


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def available_memory() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * KiB
    return 0


def balloon_present() -> bool:
    """A virtio balloon device: free page reporting may hand the guest's free memory to the host."""
    with contextlib.suppress(OSError):
        return any(Path("/sys/bus/virtio/drivers/virtio_balloon").glob("virtio*"))
    return False


def mem_total() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) * KiB / GiB:.1f} GiB RAM"
    return "RAM unknown"


def mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, filesystem type, device) of the mount holding `path`."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mountpoint, fstype, *_ = line.split()
            mountpoint = mountpoint.replace("\\040", " ")
            inside = str(path) == mountpoint or str(path).startswith(mountpoint.rstrip("/") + "/")
            if inside and len(mountpoint) >= len(best[0]):
                best = (mountpoint, fstype, device)
    return best


def ext4_without_journal(path: Path) -> bool:
    _, fstype, device = mount_of(path)
    if fstype != "ext4":
        return False
    name = os.path.basename(os.path.realpath(device))
    jbd2 = Path("/proc/fs/jbd2")
    with contextlib.suppress(OSError):
        return not any(entry.name.startswith(f"{name}-") for entry in jbd2.iterdir())
    return True  # no jbd2 at all: no ext4 filesystem has a journal


def damon_active() -> bool:
    """DAMON-based proactive reclaim drops page cache that has been idle for a while."""
    with contextlib.suppress(OSError):
        return any(p.read_text().strip() == "on" for p in Path("/sys/kernel/mm/damon/admin/kdamonds").glob("*/state"))
    return False


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def find_cli() -> str:
    beside = Path(sys.executable).parent / "modelyard"
    if beside.exists():
        return str(beside)
    found = shutil.which("modelyard")
    if not found:
        raise SystemExit("cannot find the modelyard CLI next to this Python or on PATH")
    return found


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    rss_kib: int | None
    info: dict[str, Any] = field(default_factory=dict)


class Results:
    def __init__(self) -> None:
        self.samples: dict[str, list[Sample]] = {}
        self.exact_rss: dict[str, list[int]] = {}  # from untimed runs under GNU time

    def add(self, key: str, sample: Sample) -> None:
        self.samples.setdefault(key, []).append(sample)

    def best(self, key: str) -> float:
        return min(s.seconds for s in self.samples[key])

    def rss(self, key: str) -> str:
        known = self.exact_rss.get(key) or [s.rss_kib for s in self.samples[key] if s.rss_kib is not None]
        return f"{max(known) / KiB:.0f} MiB" if known else "-"

    def all(self, key: str) -> list[Sample]:
        return self.samples.get(key, [])


class Bench:
    def __init__(
        self, args: argparse.Namespace, base: Path, cli: str, datasets: dict[str, Dataset], *, slow_after_delete: bool
    ) -> None:
        self.args = args
        self.datasets = datasets
        self.base = base
        self.cli = cli
        self.results = Results()
        self.problems: list[str] = []
        self.background: list[str] = []
        self.slow_after_delete = slow_after_delete
        self.run = 0
        self.homes: dict[tuple[str, str], Path] = {}  # (data set, mode) -> this run's home
        self.last_mass_free = 0.0  # monotonic time many inodes were last freed
        self.waited = 0.0

    # -- fresh directories -------------------------------------------------------------------

    def fresh_dir(self, ds: Dataset, name: str) -> Path:
        """A new, empty directory for this run's home or copy.

        The large data set's previous one is deleted first, then synced (its blobs take 3 GiB).
        Many-file trees get a new directory each run and are deleted at the end: deleting 20,000
        files slows the creation of files for a minute afterwards on some filesystems (see
        `cooldown`), which would charge the deletion to the next timing."""
        if len(ds.files) <= MANY_FILES:
            path = self.base / f"{name}-{ds.key}"
            remove_tree(path)
        else:
            path = self.base / f"{name}-{ds.key}-r{self.run}"
        settle()
        return path

    def prefault(self, ds: Dataset) -> None:
        """In a VM whose balloon reports free pages to the host, memory the guest freed (page cache
        dropped by reclaim, deleted files, exited processes) is no longer backed by the host, and the
        first write to each page costs a host page fault: writing 3 GiB of new page cache then takes
        2-4x longer, varying from run to run. Touching enough memory in a short-lived child right
        before a timed step that writes gives that step host-backed free pages, as on bare metal."""
        if not self.args.prefault:
            return
        nbytes = min(ds.total_bytes + GiB, max(0, available_memory() - 2 * GiB))
        if nbytes > 0:
            run_child({"op": "prefault", "bytes": nbytes}, "prefaulting memory")

    def cooldown(self, ds: Dataset) -> None:
        """On ext4 without a journal, allocating an inode skips (and checks, block by block) every
        inode freed in the last 60 s: creating 20,000 files right after 20,000 were deleted is
        several times slower. Before a timed step that creates many files, let that window pass."""
        if not self.slow_after_delete or len(ds.files) <= MANY_FILES or not self.last_mass_free:
            return
        wait = self.last_mass_free + INODE_COOLDOWN_S - time.monotonic()
        if wait > 0:
            log(f"waiting {wait:.0f} s for recently freed inodes to age (ext4 without a journal)")
            time.sleep(wait)
            self.waited += wait

    # -- one measurement each ----------------------------------------------------------------

    def sha256_ceiling(self, ds: Dataset) -> None:
        warm(ds.files)
        spec = {"op": "hash", "root": str(ds.root), "threads": HASH_THREADS, "chunk": HASH_CHUNK}
        out, rss = run_child(spec, "the sha256 reference")
        if out["bytes"] != ds.total_bytes:
            self.problems.append(f"sha256 reference read {out['bytes']} bytes, expected {ds.total_bytes}")
        self.results.add(f"{ds.key}.sha256", Sample(out["seconds"], rss, out))

    def copy_reference(self, ds: Dataset) -> None:
        if len(ds.files) <= MANY_FILES:
            remove_tree(self.homes.pop((ds.key, "copy"), self.base / "none"))  # at most ~3x the data on disk
        target = self.fresh_dir(ds, "cp")
        self.cooldown(ds)
        warm(ds.files)
        self.prefault(ds)
        rss_file = self.base / "cp-rss"
        # GNU time only reports cp's peak RSS (it is not charged to the timing: cp runs for seconds).
        timer = f'{TIME_BIN} -f %M -o "$3" ' if TIME_BIN else ""
        script = f'{timer}cp -r "$1" "$2" && sync'
        proc = checked(run_process(["sh", "-c", script, "sh", str(ds.root), str(target), str(rss_file)]), script)
        rss = None
        if TIME_BIN:
            with contextlib.suppress(OSError, ValueError, IndexError):
                rss = int(rss_file.read_text().split()[-1])
        self.results.add(f"{ds.key}.cp", Sample(proc.wall, rss))
        if len(ds.files) <= MANY_FILES:
            remove_tree(target)  # cp's copy is not needed any more: free its 3 GiB before the registration

    def register(self, ds: Dataset, mode: str, *, first: bool) -> None:
        if first:
            self.homes[(ds.key, mode)] = self.fresh_dir(ds, f"home-{mode}")
            self.cooldown(ds)
            warm(ds.files)
            self.prefault(ds)
        home = self.homes[(ds.key, mode)]
        spec = {
            "op": "register",
            "home": str(home),
            "path": str(ds.root),
            "name": ARTIFACT_NAME,
            "link": mode == "link",
            "preimport": PREIMPORT_FIRST if first else PREIMPORT_UNCHANGED,
        }
        what = f"register {'--link ' if mode == 'link' else ''}{ds.root} ({'first' if first else 'unchanged'})"
        out, rss = run_child(spec, what)
        if first and mode == "link" and len(ds.files) > MANY_FILES:
            # Where the filesystem cannot reflink, each file's reflink attempt creates and deletes
            # a temporary file: as many freed inodes as files.
            self.last_mass_free = time.monotonic()
        key = f"{ds.key}.{mode}.{'first' if first else 'unchanged'}"
        self.results.add(key, Sample(out["seconds"], rss, out))
        if first and not out["created"]:
            self.problems.append(f"{what}: expected a new version, got {out['ref']} (created=False)")
        if first and out["files_read"] != len(ds.files):
            self.problems.append(f"{what}: read {out['files_read']} files, expected {len(ds.files)}")
        if not first and (out["created"] or out["bytes_added"] or out["files_read"]):
            self.problems.append(
                f"{what}: created={out['created']}, files read {out['files_read']}, bytes added {out['bytes_added']}"
            )

    def cli_argv(self, key: str) -> list[str]:
        if key == "cli.version":
            return [self.cli, "--version"]
        ds_key, mode, _ = key.split(".")
        argv = [self.cli, "register", str(self.datasets[ds_key].root), "--artifact-name", ARTIFACT_NAME]
        if mode == "link":
            argv.append("--link")
        return [*argv, "--home", str(self.homes[(ds_key, mode)]), "--json"]

    def cli_rss(self, key: str) -> None:
        """One more, untimed, run under GNU time for the CLI's exact peak RSS (wait4's ru_maxrss of a
        process this script spawns cannot read below this script's own peak)."""
        if not TIME_BIN:
            return
        rss_file = self.base / "cli-rss"
        argv = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *self.cli_argv(key)]
        checked(run_process(argv, env=child_env()), " ".join(argv))
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.results.exact_rss.setdefault(key, []).append(int(rss_file.read_text().split()[-1]))

    def cli_version(self) -> None:
        proc = checked(run_process(self.cli_argv("cli.version"), env=child_env()), "modelyard --version")
        self.results.add("cli.version", Sample(proc.wall, proc.maxrss_kib))

    def cli_unchanged(self, ds: Dataset, mode: str) -> None:
        argv = self.cli_argv(f"{ds.key}.{mode}.cli")
        proc = checked(run_process(argv, env=child_env()), " ".join(argv))
        out = json.loads(proc.stdout)
        self.results.add(f"{ds.key}.{mode}.cli", Sample(proc.wall, proc.maxrss_kib, out))
        if out["created"] or out["bytes_added"] or out["files_read"]:
            self.problems.append(
                f"CLI re-register ({mode}) of {ds.root}: created={out['created']}, "
                f"files read {out['files_read']}, bytes added {out['bytes_added']}"
            )

    # -- a round: every method once, in a fixed order ----------------------------------------

    def round(self, number: int) -> None:
        self.run = number
        for ds in self.datasets.values():
            meter = CpuMeter()
            self.sha256_ceiling(ds)
            self.copy_reference(ds)
            for mode in ("copy", "link"):
                self.register(ds, mode, first=True)
                self.register(ds, mode, first=False)
                for _ in range(CLI_REPEATS):
                    self.cli_version()
                    self.cli_unchanged(ds, mode)
                self.cli_rss("cli.version")
                self.cli_rss(f"{ds.key}.{mode}.cli")
            log(f"round {number}, {ds.key}: {meter.describe()}")
            self.background.append(f"round {number}, {ds.key}: {meter.describe()}")


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / GiB:.2f} GiB/s" if nbytes >= GiB / 4 else f"{nbytes / seconds / MiB:.0f} MiB/s"


@dataclass
class Row:
    figure: str
    measured: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""
    rss: str = ""


def verdict(ok: bool, informative: bool = False) -> str:
    text = "PASS" if ok else "FAIL"
    return text + "*" if informative else text


def build_rows(bench: Bench, datasets: dict[str, Dataset]) -> list[Row]:
    r = bench.results
    rows: list[Row] = []
    version = r.best("cli.version")
    large, small = datasets["large"], datasets["small"]
    large_indicative = abs(bench.args.size_gib - SPEC_SIZE_GIB) > 1e-9
    small_indicative = len(small.files) != SPEC_SMALL_FILES
    small_scale = len(small.files) / SPEC_SMALL_FILES

    def add(
        figure: str,
        measured: str,
        *,
        reference: str = "",
        ratio: str = "",
        target: str = "",
        ok: bool | None = None,
        key: str | None = None,
    ) -> None:
        indicative = small_indicative if figure.startswith("small") else large_indicative
        rows.append(
            Row(
                figure,
                measured,
                reference,
                ratio,
                target,
                "" if ok is None else verdict(ok, informative=indicative and figure != CLI_VERSION_FIGURE),
                r.rss(key) if key else "",
            )
        )

    def unchanged_bytes_added(prefix: str) -> int:
        keys = [f"{prefix}.{mode}.{how}" for mode in ("link", "copy") for how in ("unchanged", "cli")]
        return max(s.info["bytes_added"] for key in keys for s in r.all(key))

    # -- the large data set: ratios to references measured on the same bytes
    n = large.total_bytes
    ceiling = r.best("large.sha256")
    add(
        f"large: sha256 ceiling, {HASH_THREADS} threads",
        f"{fmt_rate(n, ceiling)} ({fmt_s(ceiling)})",
        key="large.sha256",
    )
    link = r.best("large.link.first")
    add(
        "large: first register --link",
        f"{fmt_rate(n, link)} ({fmt_s(link)})",
        reference=f"{fmt_rate(n, ceiling)} sha256",
        ratio=f"{ceiling / link:.2f}x",
        target=">= 0.85x",
        ok=ceiling / link >= 0.85,
        key="large.link.first",
    )
    cp = r.best("large.cp")
    add("large: cp -r SRC DST && sync", f"{fmt_s(cp)} ({fmt_rate(n, cp)})", key="large.cp")
    copy = r.best("large.copy.first")
    add(
        "large: first register (copy, durable)",
        f"{fmt_s(copy)} ({fmt_rate(n, copy)})",
        reference=f"{fmt_s(cp)} cp+sync",
        ratio=f"{copy / cp:.2f}x",
        target="<= 1.5x",
        ok=copy / cp <= 1.5,
        key="large.copy.first",
    )
    for mode, flag in (("link", " --link"), ("copy", "")):
        t = r.best(f"large.{mode}.unchanged")
        add(
            f"large: unchanged re-register{flag}, in-process",
            fmt_s(t),
            target="< 50 ms",
            ok=t < 0.050,
            key=f"large.{mode}.unchanged",
        )
    for mode, flag in (("link", " --link"), ("copy", "")):
        t = r.best(f"large.{mode}.cli")
        add(
            f"large: unchanged re-register{flag}, CLI",
            fmt_s(t),
            reference=f"{fmt_s(version)} --version",
            ratio=f"+{(t - version) * 1000:.0f} ms",
            target="<= +150 ms",
            ok=t <= version + 0.150,
            key=f"large.{mode}.cli",
        )
    added = unchanged_bytes_added("large")
    add("large: bytes added, unchanged re-registers", fmt_bytes(added), target="0 B", ok=added == 0)
    add(CLI_VERSION_FIGURE, fmt_s(version), target="< 300 ms", ok=version < 0.3, key="cli.version")

    # -- the small files: absolute targets for 20,000 files (scaled linearly for other counts)
    n = small.total_bytes
    ceiling = r.best("small.sha256")
    add(
        f"small: sha256 ceiling, {HASH_THREADS} threads",
        f"{fmt_s(ceiling)} ({fmt_rate(n, ceiling)})",
        key="small.sha256",
    )
    cp = r.best("small.cp")
    add("small: cp -r SRC DST && sync", fmt_s(cp), key="small.cp")
    for key, name, limit in (
        ("small.link.first", "first register --link", 3.0),
        ("small.copy.first", "first register (copy, durable)", 5.0),
        ("small.link.unchanged", "unchanged re-register --link, in-process", 0.3),
        ("small.copy.unchanged", "unchanged re-register, in-process", 0.3),
        ("small.link.cli", "unchanged re-register --link, CLI", 0.7),
        ("small.copy.cli", "unchanged re-register, CLI", 0.7),
    ):
        t = r.best(key)
        if key.endswith(".link.first"):
            reference, ratio = f"{fmt_s(ceiling)} sha256", f"{t / ceiling:.1f}x"
        elif key.endswith(".copy.first"):
            reference, ratio = f"{fmt_s(cp)} cp+sync", f"{t / cp:.2f}x"
        elif key.endswith(".cli"):
            reference, ratio = f"{fmt_s(version)} --version", f"+{(t - version) * 1000:.0f} ms"
        else:
            reference, ratio = "", ""
        scaled = limit * small_scale
        add(
            f"small: {name}",
            fmt_s(t),
            reference=reference,
            ratio=ratio,
            target=f"< {fmt_s(scaled)}",
            ok=t < scaled,
            key=key,
        )
    added = unchanged_bytes_added("small")
    add("small: bytes added, unchanged re-registers", fmt_bytes(added), target="0 B", ok=added == 0)
    return rows


def print_table(rows: list[Row]) -> None:
    headers = Row("figure", "measured (min)", "reference (same run)", "ratio", "target", "verdict", "peak RSS")
    cols = ["figure", "measured", "reference", "ratio", "target", "verdict", "rss"]
    widths = {c: max(len(getattr(x, c)) for x in [headers, *rows]) for c in cols}
    for i, row in enumerate([headers, *rows]):
        line = "  ".join(
            getattr(row, c).rjust(widths[c]) if c in ("rss",) else getattr(row, c).ljust(widths[c]) for c in cols
        )
        print(line.rstrip())
        if i == 0:
            print("-" * len(line))


def print_runs(bench: Bench) -> None:
    print(
        "\nall runs, in seconds (in-process: the register() call only, [its CPU time, user+sys, all threads]; "
        "CLI: whole processes):"
    )
    for key, samples in bench.results.samples.items():
        times = " ".join(f"{s.seconds:.3f}" + (f" [{s.info['cpu']:.2f}]" if "cpu" in s.info else "") for s in samples)
        print(f"  {key:<22} {times}")
    methods = {}
    for key in ("large.link.first", "large.copy.first", "small.link.first", "small.copy.first"):
        if bench.results.all(key):
            methods[key] = bench.results.all(key)[0].info["methods"]
    print("ingest methods of the first registrations: " + "; ".join(f"{k} {v}" for k, v in methods.items()))


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    default_workdir = Path(__file__).resolve().parent.parent / "bench-data"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=default_workdir, help=f"(default: {default_workdir})")
    parser.add_argument("--size-gib", type=float, default=SPEC_SIZE_GIB, help="size of the large data set")
    parser.add_argument("--small-files", type=int, default=SPEC_SMALL_FILES, help="number of 4 KiB files")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds; each figure is their minimum")
    parser.add_argument("--keep", action="store_true", help="leave the generated data and homes in --workdir")
    parser.add_argument(
        "--prefault",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="touch (data + 1 GiB) of memory before each timed step that writes (default: on in a VM with a "
        "virtio balloon, whose free page reporting makes first writes to freed memory slow)",
    )
    args = parser.parse_args(argv)
    if args.prefault is None:
        args.prefault = balloon_present()
    if args.size_gib <= 0 or args.small_files < 1 or args.runs < 1:
        parser.error("--size-gib, --small-files and --runs must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--child"]:
        child_main(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    cli = find_cli()
    large_bytes = int(args.size_gib * GiB)
    small_bytes = args.small_files * SMALL_FILE_SIZE
    # The large source + cp's copy or the copy-mode store of the previous run + this run's; the
    # small files' copies and homes are kept until the end; --link adds links, not bytes.
    needed = 3 * large_bytes + (1 + 3 * args.runs) * small_bytes * 2 + GiB
    free = shutil.disk_usage(existing_ancestor(args.workdir)).free
    if free < needed:
        print(
            f"not enough free disk space under {args.workdir}: {fmt_bytes(free)} free, this run needs about "
            f"{fmt_bytes(needed)} (3 x the data plus 1 GiB); use --workdir elsewhere or a smaller --size-gib",
            file=sys.stderr,
        )
        return 2

    args.workdir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="bench-register-", dir=args.workdir)).resolve()
    try:
        return run(args, base, cli)
    finally:
        if args.keep:
            log(f"kept {base}")
        else:
            remove_tree(base)
            os.sync()


def run(args: argparse.Namespace, base: Path, cli: str) -> int:
    log(f"generating data under {base}")
    t0 = time.perf_counter()
    run_child(
        {"op": "generate", "kind": "large", "root": str(base / "src-large"), "bytes": int(args.size_gib * GiB)},
        "generating the large data set",
    )
    run_child(
        {"op": "generate", "kind": "small", "root": str(base / "src-small"), "count": args.small_files},
        "generating the small files",
    )
    large = Dataset.scan("large", base / "src-large")
    small = Dataset.scan("small", base / "src-small")
    os.sync()
    log(f"generated {fmt_bytes(large.total_bytes + small.total_bytes)} in {time.perf_counter() - t0:.1f} s; synced")

    weight = max(p.stat().st_size for p in large.files)
    print("modelyard registration benchmark")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {mem_total()}")
    mountpoint, fstype, device = mount_of(base)
    slow_after_delete = ext4_without_journal(base)
    print(
        f"system:  {platform.system()} {platform.release()}; workdir {base} on {fstype} ({device} on {mountpoint}"
        + (", no journal)" if slow_after_delete else ")")
    )
    print(f"python:  {platform.python_version()} ({sys.executable}); {ssl.OPENSSL_VERSION}")
    print(f"modelyard {importlib.metadata.version('modelyard')}: {cli}")
    print(
        f"large:   {fmt_bytes(large.total_bytes)} = {WEIGHT_FILES} x {fmt_bytes(weight)} weights + "
        f"{len(large.files) - WEIGHT_FILES} small configs; random bytes"
    )
    print(f"small:   {len(small.files):,} files x 4 KiB = {fmt_bytes(small.total_bytes)} in {SMALL_DIRS} dirs")
    print(
        f"method:  min of {args.runs} interleaved run(s) of each; page cache warm (the sources are read right before "
        "each timed step that reads them); a fresh registry home for each first register (the large set's previous "
        "home deleted, then sync; the small set's homes kept until the end, see below); in-process = the register() "
        f"call in a child process, imports excluded; CLI = whole process, min of {CLI_REPEATS * args.runs}; "
        "peak RSS = max over runs: VmHWM of the Python children, GNU time's %M for cp and for one extra untimed CLI "
        "run per round"
    )
    if slow_after_delete:
        print(
            "NOTE:    ext4 without a journal: allocating an inode checks and skips every inode freed in the last 60 s, "
            f"so creating many files soon after many were deleted is several times slower. Many-file homes and copies "
            f"are therefore not deleted between runs, and a timed step that creates many files starts at least "
            f"{INODE_COOLDOWN_S} s after the last mass deletion (a --link registration on a filesystem without "
            "reflinks frees one probe inode per file)"
        )
    if args.prefault:
        print(
            "NOTE:    memory prefaulted: before each timed step that writes (cp, first registrations), a child "
            "touches data + 1 GiB of memory and exits, so that the step finds host-backed free pages (a virtio "
            "balloon with free page reporting otherwise makes first writes to freed memory 2-4x slower); "
            "--no-prefault to measure without"
        )
    if damon_active():
        print(
            "NOTE:    DAMON proactive reclaim is on: page cache idle for ~30 s is dropped, hence the re-reads right "
            "before each step"
        )
    if abs(args.size_gib - SPEC_SIZE_GIB) > 1e-9 or args.small_files != SPEC_SMALL_FILES:
        print(
            f"NOTE:    not the specified sizes ({SPEC_SIZE_GIB:g} GiB, {SPEC_SMALL_FILES:,} files): verdicts marked * "
            "are indicative only; small-file time targets are scaled linearly with the file count"
        )
    sys.stdout.flush()

    datasets = {"large": large, "small": small}
    bench = Bench(args, base, cli, datasets, slow_after_delete=slow_after_delete)
    idle = CpuMeter()
    time.sleep(2)
    quiet = idle.busy_fraction()
    print(f"quiet:   before the first round, {idle.describe()}")
    if quiet > 0.05:
        print("WARNING: other processes are using this machine: the figures will be noisy and pessimistic")
    meter = CpuMeter()
    for number in range(1, args.runs + 1):
        bench.round(number)
    busy = meter.busy_fraction()
    if bench.waited:
        log(f"waited {bench.waited:.0f} s in all for freed inodes to age")

    print()
    rows = build_rows(bench, datasets)
    print_table(rows)
    print_runs(bench)
    print("\nbackground load while measuring (kernel writeback of the benchmark's own writes counts as outside):")
    for line in bench.background:
        print(f"  {line}")
    if busy > 0.10:
        print(f"WARNING: {100 * busy:.0f}% of the machine was busy outside this benchmark: figures are pessimistic")
    if bench.problems:
        print("\nproblems:")
        for problem in bench.problems:
            print(f"  - {problem}")
    failed = [row.figure for row in rows if row.verdict.startswith("FAIL")]
    print(f"\n{len(failed)} target(s) failed" + (": " + "; ".join(failed) if failed else ""))
    return 1 if failed or bench.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
