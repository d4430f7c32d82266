#!/usr/bin/env python3
"""Server benchmark: `modelyard serve --workers 2` under wrk, and a large file up and down against http.server.

    .venv/bin/python benchmarks/bench_server.py            # full: 10,000 versions, wrk 20 s, 1 GiB file, 3 rounds
    .venv/bin/python benchmarks/bench_server.py --quick    # smoke: 500 versions, wrk 3 s, 64 MiB file, 2 rounds

The catalog is seeded through the Python API (Registry.register of tiny but real model folders:
a config.json and a safetensors file, inspected; every fifth artifact's last version a forced
promotion to validated) and kept under bench-data/ keyed by the seed's format, the catalog
schema and the version count, so a re-run skips the seeding. Each run serves a copy of it (the
catalog copied, the store's immutable blobs hardlinked) with its own keys, so runs never see
each other's uploads.

Each round, in this order:

* wrk (32 connections, 2 threads) on `show` (GET /api/v1/artifacts/{name}/versions/{ref}, cycling
  through every artifact with a number, `latest` or `validated` as ref) and on a filtered `list`
  (GET /api/v1/artifacts?type=T&stage=validated&limit=50, cycling through four model types),
  with a viewer key;
* the large file (a safetensors file whose first MiB changes every round, so every upload is a
  new version): its SHA-256 in this process (the digest the upload declares), the upload in one
  multipart POST /api/v1/artifacts with curl, then curl downloads of the same bytes from
  `python -m http.server` on 127.0.0.1 (the reference) and from
  GET /api/v1/artifacts/{name}/versions/{n}/files/model.safetensors.

Printed: for wrk, the best of the rounds of each figure (requests/s, p50, p99) and how the two
cores were shared (server, wrk, other processes); for the file, the minimum time over the rounds.
Targets: show >= 1,000 requests/s with p99 < 100 ms; server download >= 0.8x the static rate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

MiB = 1024 * 1024
GiB = 1024 * MiB
SEED_FORMAT = "1"  # bump when the seeded content changes: cached seeds of another format are not reused
VERSIONS_PER_ARTIFACT = 10
VALIDATED_EVERY = 5  # every fifth artifact's last version is a promotion to validated
UPLOAD_NAME = "bench-upload-v1"
SHOW_TARGET_RPS = 1000.0
SHOW_TARGET_P99_MS = 100.0
DOWNLOAD_TARGET_RATIO = 0.8
BUSY_CORES = 0.2  # CPU used by other processes during a wrk run above which the figures are flagged

# Per model type: a transformers-style config.json that inspection classifies, and manifest fields.
KINDS: dict[str, dict[str, Any]] = {
    "llm": {
        "config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 8,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 64,
        },
        "base_model": "meta-llama/Llama-3.2-1B",
        "task": "chat",
    },
    "vision": {
        "config": {
            "architectures": ["ViTModel"],
            "model_type": "vit",
            "hidden_size": 8,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 224,
            "patch_size": 16,
        },
        "base_model": "google/vit-base-patch16-224",
        "task": "embed",
    },
    "audio": {
        "config": {"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper", "d_model": 8},
        "base_model": "openai/whisper-small",
        "task": "asr",
    },
    "embedding": {
        "config": {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8},
        "base_model": "google-bert/bert-base-uncased",
        "task": "retrieval",
    },
}


# -- the seeded catalog ----------------------------------------------------------------------------


@dataclass
class Seed:
    home: Path
    versions: int
    artifacts: list[str]
    seconds: float
    cached: bool


def artifact_names(versions: int) -> list[str]:
    kinds = list(KINDS)
    return [f"bench-{kinds[index % len(kinds)]}-{index:04d}-v1" for index in range(versions // VERSIONS_PER_ARTIFACT)]


def seed_catalog(cache_root: Path, versions: int) -> Seed:
    """The seeded home for `versions` versions: from the cache, else made now (and cached)."""
    from modelyard.catalog import SCHEMA_REVISION

    if versions % VERSIONS_PER_ARTIFACT:
        raise SystemExit(f"--versions must be a multiple of {VERSIONS_PER_ARTIFACT}")
    key = f"server-seed-f{SEED_FORMAT}-schema{SCHEMA_REVISION}-{versions}"
    done = cache_root / key
    names = artifact_names(versions)
    if (done / "seed.json").exists():
        info = json.loads((done / "seed.json").read_text())
        return Seed(done / "home", versions, names, float(info["seconds"]), cached=True)
    partial = cache_root / f".{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"seeding {versions:,} versions in {len(names):,} artifacts (cached for later runs) ...", flush=True)
    seconds = _seed(partial / "home", partial / "source", names)
    shutil.rmtree(partial / "source")
    (partial / "seed.json").write_text(json.dumps({"versions": versions, "seconds": seconds}))
    partial.rename(done)
    return Seed(done / "home", versions, names, seconds, cached=False)


def _seed(home: Path, source: Path, names: list[str]) -> float:
    """Register every version through the Python API; the time of the whole seeding."""
    from modelyard.register.metadata import RegisterOptions
    from modelyard.registry import Registry

    started = time.perf_counter()
    with Registry.open(home) as registry:
        for index, name in enumerate(names):
            kind = KINDS[name.split("-")[1]]
            run = source / name
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps(kind["config"]))
            options = RegisterOptions(
                artifact_name=name,
                base_model=kind["base_model"],
                task=kind["task"],
                precision="fp16",
                train_data_tags=(f"shard-{index % 7}",),
            )
            raw_versions = VERSIONS_PER_ARTIFACT - (1 if index % VALIDATED_EVERY == 0 else 0)
            for number in range(raw_versions):
                _write_weights(run / "model.safetensors", index * VERSIONS_PER_ARTIFACT + number)
                # link: the files are hardlinked into the store, not copied (the fastest registration)
                registry.register(run, options, link=True)
            if raw_versions < VERSIONS_PER_ARTIFACT:
                registry.promote(f"{name}@latest", "validated", force=True, reason="benchmark seed")
            done = index + 1
            if done % 100 == 0 or done == len(names):
                elapsed = time.perf_counter() - started
                print(f"  {done * VERSIONS_PER_ARTIFACT:,} versions, {elapsed:.0f} s", flush=True)
    return time.perf_counter() - started


def _write_weights(path: Path, value: int) -> None:
    """A one-tensor safetensors file holding `value`: every version's weights differ."""
    header = json.dumps({"step": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}).encode().ljust(64)
    # The previous file is hardlinked into the store: a new inode, never a rewrite of the stored one.
    path.unlink(missing_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<q", value))


def copy_home(seeded: Path, home: Path) -> None:
    """The run's own home: the catalog copied (SQLite's backup API), the store's blobs hardlinked
    (they are immutable), so keys and uploads of this run stay out of the cached seed."""
    home.mkdir(parents=True)
    source = sqlite3.connect(seeded / "catalog.db")
    target = sqlite3.connect(home / "catalog.db")
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    subprocess.run(["cp", "-al", str(seeded / "store"), str(home / "store")], check=True)


# -- CPU accounting ----------------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of the live processes in a process group: the server and its workers."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    steal = values[7] if len(values) > 7 else 0
    return (sum(values[:8]) - idle - steal) / CLOCK_TICKS, steal / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- wrk ---------------------------------------------------------------------------------------------


@dataclass
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: dict[str, int]
    server_cores: float
    wrk_cores: float
    other_cores: float
    steal_cores: float


WRK_SCRIPT = """
paths = {%(paths)s}
local threads = 0

function setup(thread)
  -- each thread starts at another place in the list
  thread:set("start", threads * 7919)
  threads = threads + 1
end

function init(args)
  counter = start or 0
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[counter %% #paths + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def write_wrk_script(path: Path, paths: list[str]) -> Path:
    path.write_text(WRK_SCRIPT % {"paths": ", ".join(json.dumps(p) for p in paths)})
    return path


def run_wrk(url: str, script: Path, key: str, server_pgid: int, args: argparse.Namespace, seconds: float) -> WrkRun:
    argv = [
        "wrk",
        f"--connections={args.connections}",
        f"--threads={args.threads}",
        f"--duration={seconds:g}s",
        "--timeout=10s",
        "--latency",
        f"--script={script}",
        f"--header=Authorization: Bearer {key}",
        url,
    ]
    server_before = group_cpu_seconds(server_pgid)
    busy_before, steal_before = machine_cpu_seconds()
    wrk_before = children_cpu_seconds()
    started = time.perf_counter()
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    server = group_cpu_seconds(server_pgid) - server_before
    busy_after, steal_after = machine_cpu_seconds()
    wrk_cpu = children_cpu_seconds() - wrk_before
    line = next((ln for ln in output.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    result = json.loads(line.removeprefix("WRK_RESULT "))
    errors = {k: int(result[k]) for k in ("connect", "read", "write", "status", "timeout") if result[k]}
    return WrkRun(
        requests_per_s=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        requests=int(result["requests"]),
        errors=errors,
        server_cores=server / wall,
        wrk_cores=wrk_cpu / wall,
        other_cores=max(0.0, (busy_after - busy_before) - server - wrk_cpu) / wall,
        steal_cores=(steal_after - steal_before) / wall,
    )


def show_paths(names: list[str]) -> list[str]:
    """Every artifact once, each with a version number, `latest` or (when it has one) `validated`, shuffled."""
    rng = random.Random(6)
    paths = []
    for index, name in enumerate(names):
        refs = [str(rng.randint(1, VERSIONS_PER_ARTIFACT - 1)), "latest"]
        if index % VALIDATED_EVERY == 0:
            refs.append("validated")
        paths.append(f"/api/v1/artifacts/{name}/versions/{rng.choice(refs)}")
    rng.shuffle(paths)
    return paths


def list_paths() -> list[str]:
    return [f"/api/v1/artifacts?type={kind}&stage=validated&limit=50" for kind in KINDS]


# -- the large file ----------------------------------------------------------------------------------


def write_big_file(path: Path, size: int) -> None:
    """A safetensors file of `size` bytes: one U8 tensor, a random 16 MiB block repeated; the first
    MiB of data is made unique each round (refresh_head)."""
    data_size = size - 8 - 128
    header = json.dumps({"weight": {"dtype": "U8", "shape": [data_size], "data_offsets": [0, data_size]}})
    encoded = header.encode().ljust(128)
    block = os.urandom(16 * MiB)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        remaining = data_size
        while remaining > 0:
            remaining -= handle.write(block[: min(len(block), remaining)])


def refresh_head(path: Path) -> None:
    """New random bytes at the start of the data: this round's upload is a new version."""
    with open(path, "r+b") as handle:
        handle.seek(8 + 128)
        handle.write(os.urandom(MiB))


def sha256_of(path: Path) -> tuple[str, float]:
    """The file's SHA-256 (hashlib, 1 MiB reads) and the seconds it took: the hashing ceiling."""
    digest = hashlib.sha256()
    buffer = bytearray(MiB)
    view = memoryview(buffer)
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest(), time.perf_counter() - started


def read_through(path: Path) -> None:
    """Read the file once, untimed: its pages are in the page cache before a timed download."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(8 * MiB):
            pass


def curl(argv: list[str]) -> tuple[int, float, int]:
    """Run curl; (HTTP status, seconds by curl's own clock, bytes moved)."""
    out_format = "%{http_code} %{time_total} %{size_upload} %{size_download}"
    written = subprocess.run(
        ["curl", "--silent", "--show-error", "--write-out", out_format, *argv],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    status, seconds, uploaded, downloaded = written.split()[-4:]
    return int(status), float(seconds), max(int(float(uploaded)), int(float(downloaded)))


def upload(
    url: str, key: str, path: Path, sha256: str, work: Path, name: str = UPLOAD_NAME
) -> tuple[float, dict[str, Any]]:
    metadata = {
        "files": [{"path": "model.safetensors", "size": path.stat().st_size, "sha256": sha256}],
        "options": {"artifact_name": name},
    }
    (work / "metadata.json").write_text(json.dumps(metadata))
    response = work / "upload-response.json"
    status, seconds, sent = curl(
        [
            "--output",
            str(response),
            "--header",
            f"Authorization: Bearer {key}",
            "--header",
            "Expect:",  # no 100-continue round trip
            "--form",
            f"metadata=<{work / 'metadata.json'};type=application/json",
            "--form",
            f"file=@{path};filename=model.safetensors;type=application/octet-stream",
            f"{url}/api/v1/artifacts",
        ]
    )
    body: dict[str, Any] = json.loads(response.read_text())
    if status != 201 or sent < path.stat().st_size:
        raise RuntimeError(f"upload answered {status} after {sent} bytes: {body}")
    return seconds, body


def warm_up_uploads(url: str, key: str, work: Path) -> None:
    """A few small uploads, untimed: each worker's first registration imports the registration and
    inspection code (about a second), which would otherwise land in a timed upload."""
    (work / "warm-up").mkdir()
    small = work / "warm-up" / "model.safetensors"
    for value in range(4):
        _write_weights(small, value)
        upload(url, key, small, sha256_of(small)[0], work, name="bench-warm-up-v1")


def download(url: str, size: int, key: str | None = None, headers_file: Path | None = None) -> float:
    argv = ["--output", "/dev/null"]
    if key is not None:
        argv += ["--header", f"Authorization: Bearer {key}"]
    if headers_file is not None:
        argv += ["--dump-header", str(headers_file)]
    status, seconds, received = curl([*argv, url])
    if status != 200 or received != size:
        raise RuntimeError(f"GET {url} answered {status} with {received} of {size} bytes")
    return seconds


class StaticServer:
    """`python -m http.server` on 127.0.0.1 serving one directory."""

    def __init__(self, directory: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(["curl", "--silent", "--head", "--output", "/dev/null", self.url + "/"])
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("python -m http.server did not answer within 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._log.close()


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class FileRound:
    sha256_s: float
    upload_s: float
    static_s: float
    download_s: float


def check_disk(workdir: Path, file_size: int, runs: int) -> None:
    # the source file, one stored blob per round, and room for the seed and the server's scratch
    needed = (runs + 2) * file_size + GiB
    free = shutil.disk_usage(workdir).free
    if free < needed:
        print(f"not enough disk under {workdir}: {free / GiB:.1f} GiB free, {needed / GiB:.1f} GiB needed")
        raise SystemExit(2)


def file_round(
    server_url: str, static: StaticServer, keys: dict[str, str], big: Path, home: Path, work: Path
) -> FileRound:
    from modelyard.registry import Registry

    refresh_head(big)
    sha256, hashing = sha256_of(big)
    size = big.stat().st_size
    uploading, body = upload(server_url, keys["trainer"], big, sha256, work)
    with Registry.open(home) as registry:
        blob = Path(registry.store.blob_path(sha256))  # type: ignore[attr-defined]
    read_through(big)
    static_s = download(f"{static.url}/{big.name}", size)
    read_through(blob)
    headers = work / "download-headers.txt"
    file_url = f"{server_url}/api/v1/artifacts/{UPLOAD_NAME}/versions/{body['number']}/files/model.safetensors"
    download_s = download(file_url, size, keys["viewer"], headers)
    if f'etag: "{sha256}"' not in headers.read_text().lower():
        raise RuntimeError(f"the download's ETag is not the uploaded file's SHA-256:\n{headers.read_text()}")
    return FileRound(hashing, uploading, static_s, download_s)


def verdict(ok: bool, indicative: bool) -> str:
    return ("PASS" if ok else "FAIL") + ("*" if indicative else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 versions, wrk 3 s, 64 MiB, 2 rounds")
    parser.add_argument("--versions", type=int, default=None, help="versions in the catalog (default 10,000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of each wrk run (default 20)")
    parser.add_argument("--file-mib", type=int, default=None, help="size of the transferred file (default 1024)")
    parser.add_argument("--runs", type=int, default=None, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench-data", help="seed cache and run directory")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (server log, home)")
    args = parser.parse_args()
    versions = args.versions or (500 if args.quick else 10_000)
    duration = args.duration or (3.0 if args.quick else 20.0)
    file_size = (args.file_mib or (64 if args.quick else 1024)) * MiB
    runs = args.runs or (2 if args.quick else 3)
    indicative = (versions, duration, file_size) != (10_000, 20.0, GiB) or (args.connections, args.threads) != (32, 2)
    for tool in ("wrk", "curl", "cp"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt-get install {tool})")
            return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    check_disk(args.workdir, file_size, runs)

    seed = seed_catalog(args.workdir, versions)
    work = Path(tempfile.mkdtemp(prefix="bench-server-", dir=args.workdir))
    try:
        return measure(args, seed, work, duration, file_size, runs, indicative)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def measure(
    args: argparse.Namespace, seed: Seed, work: Path, duration: float, file_size: int, runs: int, indicative: bool
) -> int:
    from modelyard.registry import Registry
    from serverproc import ServerProcess, free_port

    home = work / "home"
    copy_home(seed.home, home)
    with Registry.open(home) as registry:
        keys = {role: registry.create_key(f"bench-{role}", role)[1] for role in ("viewer", "trainer")}
    (work / "static").mkdir()
    big = work / "static" / "model.safetensors"
    print(f"writing the {file_size / GiB:.2f} GiB file ...", flush=True)
    write_big_file(big, file_size)

    server = ServerProcess(home=home, port=free_port(), extra_args=["--workers", str(args.workers)])
    static: StaticServer | None = None
    try:
        server.start()
        assert server.process is not None
        static = StaticServer(work / "static", free_port(), work / "http-server.log")
        show_script = write_wrk_script(work / "show.lua", show_paths(seed.artifacts))
        list_script = write_wrk_script(work / "list.lua", list_paths())
        pgid = server.process.pid  # started in its own session: the workers share its process group
        # warm-up: both workers up, their imports and caches loaded, before anything is timed
        run_wrk(server.url, show_script, keys["viewer"], pgid, args, min(2.0, duration))
        run_wrk(server.url, list_script, keys["viewer"], pgid, args, min(2.0, duration))
        warm_up_uploads(server.url, keys["trainer"], work)
        shows: list[WrkRun] = []
        lists: list[WrkRun] = []
        files: list[FileRound] = []
        for number in range(1, runs + 1):
            shows.append(run_wrk(server.url, show_script, keys["viewer"], pgid, args, duration))
            lists.append(run_wrk(server.url, list_script, keys["viewer"], pgid, args, duration))
            files.append(file_round(server.url, static, keys, big, home, work))
            print(
                f"round {number}: show {shows[-1].requests_per_s:,.0f} req/s, list {lists[-1].requests_per_s:,.0f}"
                f" req/s, upload {files[-1].upload_s:.2f} s, static {files[-1].static_s:.2f} s,"
                f" download {files[-1].download_s:.2f} s",
                flush=True,
            )
    finally:
        if static is not None:
            static.stop()
        server.stop()
    return report(args, seed, duration, file_size, runs, indicative, shows, lists, files)


def report(
    args: argparse.Namespace,
    seed: Seed,
    duration: float,
    file_size: int,
    runs: int,
    indicative: bool,
    shows: list[WrkRun],
    lists: list[WrkRun],
    files: list[FileRound],
) -> int:
    seeded = "cached; seeded" if seed.cached else "seeded"
    print()
    print(
        f"catalog: {seed.versions:,} versions in {len(seed.artifacts):,} artifacts"
        f" ({seeded} through the Python API in {seed.seconds:.1f} s, {seed.versions / seed.seconds:,.0f} versions/s)"
    )
    print(
        f"wrk: {args.connections} connections, {args.threads} threads, {duration:g} s per run, server --workers"
        f" {args.workers}; best of {runs} rounds per figure"
    )
    print(f"  {'':48} {'req/s':>8} {'p50':>9} {'p99':>9}   cores: server   wrk  others steal")
    ok = True
    for label, wrk_runs in (
        ("show  GET /api/v1/artifacts/{name}/versions/{ref}", shows),
        ("list  GET /api/v1/artifacts?type=&stage=&limit=50", lists),
    ):
        best = max(wrk_runs, key=lambda r: r.requests_per_s)
        rps = best.requests_per_s
        p50 = min(r.p50_ms for r in wrk_runs)
        p99 = min(r.p99_ms for r in wrk_runs)
        print(
            f"  {label:48} {rps:8,.0f} {p50:6.1f} ms {p99:6.1f} ms   {best.server_cores:12.2f}"
            f" {best.wrk_cores:5.2f} {best.other_cores:7.2f} {best.steal_cores:5.2f}"
        )
        kinds = ("connect", "read", "write", "status", "timeout")
        errors = {k: sum(r.errors.get(k, 0) for r in wrk_runs) for k in kinds}
        if any(errors.values()):
            ok = False
            print(f"    errors over the rounds (non-2xx/3xx answers count as status): {errors}: FAIL")
    busiest = max(r.other_cores for r in shows + lists)
    if busiest > BUSY_CORES:
        print(
            f"  warning: other processes used up to {busiest:.2f} cores during a wrk run: the machine was not"
            " quiet, these figures are pessimistic"
        )
    best_show = max(shows, key=lambda r: r.requests_per_s)
    show_p99 = min(r.p99_ms for r in shows)
    rps_ok = best_show.requests_per_s >= SHOW_TARGET_RPS
    p99_ok = show_p99 < SHOW_TARGET_P99_MS
    print(f"  show: >= {SHOW_TARGET_RPS:,.0f} req/s: {verdict(rps_ok, indicative)}", end="")
    print(f"; p99 < {SHOW_TARGET_P99_MS:.0f} ms: {verdict(p99_ok, indicative)}")
    ok = ok and rps_ok and p99_ok

    sha = min(f.sha256_s for f in files)
    upload_s = min(f.upload_s for f in files)
    static_s = min(f.static_s for f in files)
    download_s = min(f.download_s for f in files)
    ratio = static_s / download_s
    download_ok = ratio >= DOWNLOAD_TARGET_RATIO

    def rate(seconds: float) -> str:
        return f"{seconds:7.2f} s {file_size / seconds / 1e9:6.2f} GB/s"

    print(f"file: {file_size / GiB:.2f} GiB safetensors, curl over 127.0.0.1, minimum of {runs} interleaved rounds")
    print(f"  SHA-256 in one thread (hashlib; the server hashes on arrival) {rate(sha)}")
    print(f"  static download, python -m http.server (reference)           {rate(static_s)}")
    print(
        f"  download GET .../files/model.safetensors                     {rate(download_s)}  = {ratio:.2f}x static"
        f" (target >= {DOWNLOAD_TARGET_RATIO}x: {verdict(download_ok, indicative)})"
    )
    print(
        f"  upload POST /api/v1/artifacts (multipart, digest declared)   {rate(upload_s)}"
        f"  = {static_s / upload_s:.2f}x static, {sha / upload_s:.2f}x SHA-256 (no target)"
    )
    if indicative:
        print("* a run at other sizes than the specification's (10,000 versions, 32 connections, 2 threads, 20 s,")
        print("  1 GiB): indicative only")
    return 0 if ok and download_ok else 1


if __name__ == "__main__":
    sys.exit(main())
