#!/usr/bin/env python3
"""Distribution benchmark: `deploy push` of about 2 GiB to two loopback SSH nodes, against plain rsync.

    .venv/bin/python benchmarks/bench_deploy.py            # the full run: 2 GiB, 3 rounds (~2-3 min)
    .venv/bin/python benchmarks/bench_deploy.py --small    # smoke: 256 MiB, 2 rounds (~30 s)

Two real sshd nodes are started on 127.0.0.1 (tests/sshnodes.py: their own host keys, strict
known_hosts, one client key). A model directory of four safetensors shards (random bytes) and a
config.json is registered once with --link. Each round, in this order:

* reference: plain `rsync -a` over the same ssh command (same options, same cipher) of the same
  files (the push's own source tree of hardlinks) to the same places, one rsync per node run in
  parallel, into empty directories;
* `deploy push` (Registry.push, parallel 2) into empty models roots: transfer into staging, SHA-256
  of every file on each node, load check, symlink switch;
* the same push again with every node up to date, through the Python API and through the CLI
  (`modelyard deploy push PLAN`, a fresh process: what a user waits for).

Printed: the minimum over the rounds of each, seconds and GB/s (bytes moved to all nodes / s), and
the ratios to the targets: first push within 1.5x of plain rsync; an up-to-date push under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

MiB = 1024 * 1024
GiB = 1024 * MiB
SHARDS = 4


def write_model(directory: Path, total: int) -> None:
    """Four safetensors shards of random bytes (one random block repeated, then one unique block
    per shard so no two files are equal) and a config.json."""
    directory.mkdir(parents=True)
    block = os.urandom(16 * MiB)
    per_shard = total // SHARDS
    for index in range(SHARDS):
        data_size = per_shard - 8 - 128
        header = json.dumps({"w": {"dtype": "U8", "shape": [data_size], "data_offsets": [0, data_size]}}).encode()
        header = header.ljust(128, b" ")
        with open(directory / f"model-{index + 1:05d}-of-{SHARDS:05d}.safetensors", "wb") as handle:
            handle.write(struct.pack("<Q", len(header)) + header)
            handle.write(os.urandom(MiB))
            remaining = data_size - MiB
            while remaining > 0:
                chunk = block[: min(len(block), remaining)]
                handle.write(chunk)
                remaining -= len(chunk)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    }
    (directory / "config.json").write_text(json.dumps(config))


def clear_nodes(roots: list[Path]) -> None:
    for root in roots:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)


def plain_rsync(tree: Path, nodes: list, ssh_base: list[list[str]], destinations: list[Path]) -> float:
    """One `rsync -a` per node, in parallel, over the push's own ssh command."""

    def one(index: int) -> None:
        node = nodes[index]
        argv = [
            "rsync",
            "-a",
            "-e",
            " ".join(ssh_base[index]),
            f"{tree}/",
            f"{node.user}@{node.host}:{destinations[index]}/",
        ]
        subprocess.run(argv, check=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(one, range(len(nodes))))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="256 MiB, 2 rounds")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    total = 256 * MiB if args.small else 2 * GiB
    runs = args.runs or (2 if args.small else 3)

    from modelyard.distribute.plan import read_plan
    from modelyard.distribute.push import PushOptions
    from modelyard.distribute.source import source_trees
    from modelyard.distribute.transport import NodeConnection
    from modelyard.registry import Registry
    from sshnodes import ClientKey, SshNodeFactory, write_fleet_file

    work = Path(tempfile.mkdtemp(prefix="bench-deploy-", dir=args.workdir))
    factory = None
    try:
        (work / "client").mkdir()
        key = ClientKey.generate(work / "client" / "id_ed25519")
        factory = SshNodeFactory(work / "nodes", key)
        nodes = factory(2)
        fleet_file = write_fleet_file(work / "fleet.yaml", nodes)
        home = work / "home"
        model = work / "model"
        print(f"writing {total / GiB:.2f} GiB of model files ...", flush=True)
        write_model(model, total)
        env = {**os.environ, "MODELYARD_HOME": str(home)}
        cli = [sys.executable, "-m", "modelyard"]
        subprocess.run(
            [*cli, "register", str(model), "--artifact-name", "bench-llm-v1", "--link", "-q"], check=True, env=env
        )
        plan_file = work / "plan.json"
        subprocess.run(
            [
                *cli,
                "deploy",
                "plan",
                "bench-llm-v1@latest=" + ",".join(n.name for n in nodes),
                "--fleet",
                str(fleet_file),
                "--out",
                str(plan_file),
                "--require-stage",
                "any",
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        plan = read_plan(plan_file)
        item = plan.artifacts[0]
        moved = item.bytes * len(nodes)
        roots = [Path(node.models_root) for node in nodes]
        plain_roots = [Path(f"{node.models_root}-plain") for node in nodes]
        ssh_base = [NodeConnection(n).ssh_base() for n in plan.fleet.nodes]
        registry = Registry.open(home)
        figures: dict[str, list[float]] = {"plain": [], "push": [], "up_to_date_api": [], "up_to_date_cli": []}
        with source_trees(registry) as trees:
            tree = trees.get(item)
            for run in range(runs):
                clear_nodes(plain_roots)
                figures["plain"].append(plain_rsync(tree, nodes, ssh_base, plain_roots))
                clear_nodes(roots)
                started = time.perf_counter()
                report = registry.push(plan, PushOptions(parallel=2))
                figures["push"].append(time.perf_counter() - started)
                assert report.ok, report.to_dict()
                started = time.perf_counter()
                again = registry.push(plan, PushOptions(parallel=2))
                figures["up_to_date_api"].append(time.perf_counter() - started)
                assert all(o.up_to_date for o in again.outcomes), again.to_dict()
                started = time.perf_counter()
                subprocess.run(
                    [*cli, "deploy", "push", str(plan_file), "-q"], check=True, env=env, stdout=subprocess.DEVNULL
                )
                figures["up_to_date_cli"].append(time.perf_counter() - started)
                print(f"round {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in figures.items()), flush=True)
        registry.close()
        best = {name: min(values) for name, values in figures.items()}
        ratio = best["push"] / best["plain"]
        print()
        print(f"{total / GiB:.2f} GiB x {len(nodes)} loopback SSH nodes, minimum of {runs} interleaved rounds")
        print(f"  plain rsync -a (reference) {best['plain']:7.2f} s  {moved / best['plain'] / 1e9:5.2f} GB/s")
        print(
            f"  deploy push, first        {best['push']:7.2f} s  {moved / best['push'] / 1e9:5.2f} GB/s"
            f"  = {ratio:.2f}x rsync (target <= 1.5x: {'PASS' if ratio <= 1.5 else 'FAIL'})"
        )
        for name in ("up_to_date_api", "up_to_date_cli"):
            verdict = "PASS" if best[name] < 2.0 else "FAIL"
            print(f"  push, up to date ({name[11:]:>3})  {best[name]:7.2f} s  (target < 2 s: {verdict})")
    finally:
        if factory is not None:
            factory.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
