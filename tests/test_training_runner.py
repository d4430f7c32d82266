"""The job runner: real training commands (small Python scripts written here) run in subprocesses,
their run directories, environment, logs, faults, confinement, and what gets registered."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from modelyard.distribute.fleet import parse_fleet
from modelyard.errors import InvalidInputError
from modelyard.registry import Registry
from modelyard.training.executors import (
    Program,
    c10d_rendezvous,
    plan_launches,
    remote_copy_argv,
    standalone_rendezvous,
    torchrun_argv,
)
from modelyard.training.form import preview
from modelyard.training.jobs import JobDefinition, load_definition
from modelyard.training.runner import JobResult, form_flags, run_job

VISION = {"component": "vision", "base_model": "vit-base16", "task": "embed", "embedding_dim": 16}
SETTINGS = {"batch_size": 8, "learning_rate": 1e-4, "epochs": 2, "optimizer": "adamw"}
HAS_BWRAP = shutil.which("bwrap") is not None

# A training script: writes a real safetensors checkpoint and metrics, prints to stdout and stderr,
# and records the environment it got.
TRAIN = """
import json, os, sys
import numpy as np
from safetensors.numpy import save_file

run = os.environ["MODELYARD_RUN_DIR"]
print("training", sys.argv[1:], flush=True)
save_file({"w": np.ones((4, 4), np.float32)}, os.path.join(run, "checkpoints", "best.safetensors"))
names = ("MODELYARD_RUN_DIR", "MODELYARD_JOB_FILE", "MODELYARD_PRIVACY_LEVEL", "MODELYARD_QUANTIZATION_MODE",
         "MODELYARD_SECURE_AGG", "EXTRA")
env = {name: os.environ.get(name) for name in names}
with open(os.path.join(run, "metrics", "training_metrics.json"), "w") as out:
    json.dump({"env": env, "argv": sys.argv[1:], "cwd": os.getcwd()}, out)
print("a warning on stderr", file=sys.stderr, flush=True)
"""


def script(tmp_path: Path, body: str, name: str = "train.py") -> Path:
    path = tmp_path / "scripts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def job(argv: list[str], **fields: Any) -> JobDefinition:
    return load_definition({**VISION, **SETTINGS, "run": {"kind": "command", "argv": argv}, **fields})


def python_job(path: Path, **fields: Any) -> JobDefinition:
    return job([sys.executable, str(path)], **fields)


def metrics(result: JobResult) -> dict[str, Any]:
    return dict(json.loads((result.run_dir / "metrics" / "training_metrics.json").read_text()))


def no_process_with(token: str) -> bool:
    """No live process has `token` in its command line (checked through /proc, whatever PID namespace)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            return False
    return True


# -- success ---------------------------------------------------------------------------------------


def test_a_successful_run_registers_its_directory_with_the_forms_manifest(registry: Registry, tmp_path: Path) -> None:
    definition = python_job(
        script(tmp_path, TRAIN),
        train_data_tags=["imagenet-1k"],
        privacy_level="none",
        run={
            "kind": "command",
            "argv": [sys.executable, str(tmp_path / "scripts" / "train.py")],
            "env": {"EXTRA": "1"},
        },
    )
    expected = preview(definition.form(), registry)
    lines: list[str] = []
    result = run_job(registry, definition, run_dir=tmp_path / "run", on_output=lines.append)

    assert result.status == "succeeded", result.message
    assert result.exit_code == 0 and result.registered == ["vision-vit-base16-embed-v1@1"]
    assert "training []" in lines and "a warning on stderr" in lines  # live, both streams
    run = tmp_path / "run"
    assert result.run_dir == run
    for name in ("checkpoints", "metrics", "config.yaml", "training.log", "README.md", "job.json"):
        assert (run / name).exists(), name
    log = (run / "training.log").read_text()
    assert "training []" in log and "a warning on stderr" in log
    assert YAML(typ="safe").load((run / "config.yaml").read_text()) == expected.manifest["training_config"]

    job_file = json.loads((run / "job.json").read_text())
    assert job_file == {
        **definition.model_dump(mode="json"),
        "artifact_name": expected.artifact_name,
        "training_config_hash": expected.training_config_hash,
    }
    got = metrics(result)
    assert got["env"] == {
        "MODELYARD_RUN_DIR": str(run),
        "MODELYARD_JOB_FILE": str(run / "job.json"),
        "MODELYARD_PRIVACY_LEVEL": "none",
        "MODELYARD_QUANTIZATION_MODE": "none",
        "MODELYARD_SECURE_AGG": None,
        "EXTRA": "1",
    }
    assert got["cwd"] == str(run)  # no workdir: the run directory

    version = registry.show("vision-vit-base16-embed-v1@1")
    manifest = version.manifest
    assert manifest.training_config_hash == expected.training_config_hash
    assert manifest.privacy_level == "none" and manifest.quantized is False
    assert manifest.embedding_dim == 16 and manifest.base_model == "vit-base16" and manifest.task == "embed"
    assert manifest.train_data_tags == ["imagenet-1k"] and manifest.stage == "raw"
    paths = {entry.path for entry in manifest.files}
    assert {"checkpoints/best.safetensors", "metrics/training_metrics.json", "job.json", "config.yaml"} <= paths


def test_the_script_may_add_to_the_manifest_but_the_forms_fields_win(registry: Registry, tmp_path: Path) -> None:
    body = (
        TRAIN
        + """
manifest_path = os.path.join(run, "artifact_manifest.json")
manifest = json.load(open(manifest_path))
manifest["metrics"] = {"best_val_loss": 0.25}
manifest["artifact_name"] = "something-else-v9"
json.dump(manifest, open(manifest_path, "w"))
"""
    )
    result = run_job(registry, python_job(script(tmp_path, body)), run_dir=tmp_path / "run")
    assert result.registered == ["vision-vit-base16-embed-v1@1"], result.message
    manifest = registry.show(result.registered[0]).manifest
    assert manifest.metrics == {"best_val_loss": 0.25}


def test_secure_agg_and_quantization_reach_the_environment(registry: Registry, tmp_path: Path) -> None:
    definition = python_job(
        script(tmp_path, TRAIN), privacy_level="secure-agg", quantize=True, quantization_mode="quantization-aware"
    )
    result = run_job(registry, definition, run_dir=tmp_path / "run")
    assert result.status == "succeeded", result.message
    env = metrics(result)["env"]
    assert env["MODELYARD_SECURE_AGG"] == "1" and env["MODELYARD_PRIVACY_LEVEL"] == "secure-agg"
    assert env["MODELYARD_QUANTIZATION_MODE"] == "quantization-aware"
    # QAT: the run itself is the quantized artifact.
    assert result.registered == ["vision-vit-base16-embed-int8-v1@1"]
    manifest = registry.show(result.registered[0]).manifest
    assert manifest.quantized is True and manifest.precision == "int8" and manifest.privacy_level == "secure-agg"


def test_flags_reach_the_command_only_with_pass_flags(registry: Registry, tmp_path: Path) -> None:
    path = script(tmp_path, TRAIN)
    definition = python_job(path, train_data_tags=["a", "b"], input_size=[3, 32, 32], augmentations=["hflip"])
    plain = run_job(registry, definition, run_dir=tmp_path / "plain")
    assert metrics(plain)["argv"] == []
    passed = run_job(registry, definition, run_dir=tmp_path / "passed", pass_flags=True)
    argv = metrics(passed)["argv"]
    assert argv == form_flags(definition.form())
    assert argv[:6] == ["--component", "vision", "--base-model", "vit-base16", "--task", "embed"]
    assert argv[argv.index("--train-data-tag") :][:4] == ["--train-data-tag", "a", "--train-data-tag", "b"]
    assert argv[argv.index("--input-size") + 1] == "3,32,32" and argv[argv.index("--augmentation") + 1] == "hflip"
    assert argv[argv.index("--learning-rate") + 1] == "0.0001"
    # The definition's own pass_flags does the same.
    stored = run_job(registry, python_job(path, pass_flags=True), run_dir=tmp_path / "stored")
    assert metrics(stored)["argv"][:2] == ["--component", "vision"]


def test_a_workdir_is_where_the_command_starts(registry: Registry, tmp_path: Path) -> None:
    path = script(tmp_path, TRAIN)
    run = {"kind": "command", "argv": [sys.executable, "train.py"], "workdir": str(path.parent)}
    definition = job([], run=run)
    result = run_job(registry, definition, run_dir=tmp_path / "run")
    assert result.status == "succeeded", result.message
    assert metrics(result)["cwd"] == str(path.parent)


# -- faults ----------------------------------------------------------------------------------------


def test_a_crashing_script_fails_with_the_logs_tail_and_registers_nothing(registry: Registry, tmp_path: Path) -> None:
    body = "import sys\nprint('epoch 1 loss 0.9')\nraise SystemExit('CUDA out of memory (pretend)')\n"
    result = run_job(registry, python_job(script(tmp_path, body)), run_dir=tmp_path / "run")
    assert result.status == "failed" and result.exit_code == 1 and result.registered == []
    assert "exited with status 1" in result.message and "CUDA out of memory (pretend)" in result.message
    assert "epoch 1 loss 0.9" in result.log_tail
    assert "CUDA out of memory" in (tmp_path / "run" / "training.log").read_text()
    assert registry.count() == 0


def test_a_command_that_does_not_exist_fails_clearly(registry: Registry, tmp_path: Path) -> None:
    result = run_job(registry, job(["no-such-trainer-xyz", "--epochs", "1"]), run_dir=tmp_path / "run")
    assert result.status == "failed" and result.exit_code is None and result.registered == []
    assert "'no-such-trainer-xyz' is not found on PATH" in result.message
    assert "not found on PATH" in (tmp_path / "run" / "training.log").read_text()
    relative = run_job(registry, job(["./missing.sh"]), run_dir=tmp_path / "run2")
    assert relative.status == "failed" and "'./missing.sh' does not exist" in relative.message
    assert registry.count() == 0


def test_a_hanging_script_is_stopped_at_its_timeout_with_its_children(registry: Registry, tmp_path: Path) -> None:
    token = f"{uuid.uuid4().int % 10**6}.5"
    body = f"import subprocess, time\nsubprocess.Popen(['sleep', '{token}'])\n"
    body += "print('started', flush=True)\ntime.sleep(600)\n"
    result = run_job(registry, python_job(script(tmp_path, body), timeout_seconds=2), run_dir=tmp_path / "run")
    assert result.status == "timed_out" and result.registered == []
    assert "timed out after 2 s" in result.message and "started" in result.log_tail
    assert no_process_with(token)
    assert registry.count() == 0


def test_a_script_ignoring_sigterm_is_killed(registry: Registry, tmp_path: Path) -> None:
    body = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    body += "print('stubborn', flush=True)\ntime.sleep(600)\n"
    result = run_job(
        registry, python_job(script(tmp_path, body), timeout_seconds=1), run_dir=tmp_path / "run", kill_grace=0.5
    )
    assert result.status == "timed_out" and result.exit_code is not None and result.exit_code < 0


def test_cancelling_stops_the_job_and_registers_nothing(registry: Registry, tmp_path: Path) -> None:
    cancel = threading.Event()

    def watch(line: str) -> None:
        if line == "ready":
            cancel.set()

    body = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
    result = run_job(
        registry, python_job(script(tmp_path, body)), run_dir=tmp_path / "run", on_output=watch, cancel=cancel
    )
    assert result.status == "cancelled" and result.registered == []
    assert "cancelled" in result.message and "ready" in result.log_tail
    assert registry.count() == 0


def test_a_symlink_out_of_the_run_directory_is_not_registered(registry: Registry, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not training output")
    body = TRAIN + f"\nos.symlink({str(secret)!r}, os.path.join(run, 'checkpoints', 'leak.txt'))\n"
    result = run_job(registry, python_job(script(tmp_path, body)), run_dir=tmp_path / "run")
    assert result.status == "failed" and result.registered == []
    assert "symlink points outside the registered directory" in result.message
    assert registry.count() == 0


@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")
def test_a_script_cannot_write_outside_its_run_directory(registry: Registry, tmp_path: Path) -> None:
    outside = Path("/var/tmp") / f"modelyard-test-{uuid.uuid4().hex}"
    outside.mkdir()
    try:
        body = (
            TRAIN
            + f"""
open(os.path.join(run, "inside.txt"), "w").write("ok")
open("/tmp/{outside.name}-scratch", "w").write("tmp is fine")
try:
    open({str(outside / "escaped.txt")!r}, "w").write("escaped")
except OSError as exc:
    print("refused:", exc.strerror, flush=True)
    raise SystemExit(7)
"""
        )
        result = run_job(registry, python_job(script(tmp_path, body)), run_dir=tmp_path / "run")
        assert result.confined
        assert result.status == "failed" and result.exit_code == 7, result.message
        assert "refused: Read-only file system" in result.log_tail
        assert not (outside / "escaped.txt").exists()
        assert (tmp_path / "run" / "inside.txt").read_text() == "ok"
        assert "confined with bubblewrap" in (tmp_path / "run" / "training.log").read_text()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        Path(f"/tmp/{outside.name}-scratch").unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root); skipped where mounting is not allowed."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def test_a_full_disk_fails_the_job_with_a_clear_message(registry: Registry, tmp_path: Path, small_disk: Path) -> None:
    body = "import os\nwith open(os.path.join(os.environ['MODELYARD_RUN_DIR'], 'checkpoints', 'big.bin'), 'wb') as f:\n"
    body += "    for _ in range(64):\n        f.write(b'x' * 65536)\n"
    result = run_job(registry, python_job(script(tmp_path, body)), run_dir=small_disk / "run")
    assert result.status == "failed" and result.registered == []
    assert "no space left on the run directory's filesystem" in result.message
    assert "No space left on device" in result.log_tail
    assert registry.count() == 0


# -- refused before running ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"epochs": 1.5}, "epochs"),
        ({"privacy_level": "dp"}, "dp"),
        ({"privacy_level": "dp", "dp": {"max_grad_norm": 1.0, "delta": 1e-5}}, "dp"),
        ({"nproc_per_node": 2}, "nproc_per_node"),
        ({"executor": "torchrun", "nodes": ["a", "a"]}, "nodes"),
        ({"executor": "slurm"}, "executor"),
    ],
    ids=lambda value: str(value),
)
def test_a_bad_job_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        load_definition({**VISION, "run": {"kind": "command", "argv": ["true"]}, **change})
    assert refused.value.field == field


def test_a_choice_outside_the_vocabulary_is_refused_before_anything_runs(registry: Registry, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    definition = job(["touch", str(marker)], task="segmentation-of-dreams")
    with pytest.raises(InvalidInputError) as refused:
        run_job(registry, definition, run_dir=tmp_path / "run")
    assert refused.value.field == "task"
    assert not (tmp_path / "run").exists() and not marker.exists()


def test_a_used_run_directory_is_refused(registry: Registry, tmp_path: Path) -> None:
    used = tmp_path / "run"
    used.mkdir()
    (used / "old.txt").write_text("earlier run")
    with pytest.raises(InvalidInputError, match="exists and is not empty"):
        run_job(registry, job(["true"]), run_dir=used)


# -- executors -------------------------------------------------------------------------------------


def test_torchrun_command_lines() -> None:
    builtin = Program(trainer="tiny-classifier")
    assert builtin.local_argv() == [sys.executable, "-m", "modelyard.training.builtin", "tiny-classifier"]
    assert torchrun_argv(sys.executable, 2, standalone_rendezvous(), builtin) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "modelyard.training.builtin",
        "tiny-classifier",
    ]
    command = Program(argv=("python", "train.py", "--lr", "1"))
    assert command.torchrun_tail() == ["--no-python", "python", "train.py", "--lr", "1"]
    assert c10d_rendezvous("node-a", 3, "job-7") == [
        "--nnodes",
        "3",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "node-a:29400",
        "--rdzv-id",
        "job-7",
    ]


def test_a_multi_node_job_starts_torchrun_on_each_node_over_ssh(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    fleet = parse_fleet(
        {
            "nodes": [
                {
                    "name": "learn-1",
                    "host": "10.0.0.5",
                    "user": "train",
                    "known_hosts": str(known_hosts),
                    "models_root": "/srv/models",
                    "python": "/opt/venv/bin/python",
                },
                {
                    "name": "learn-2",
                    "host": "10.0.0.6",
                    "port": 2222,
                    "known_hosts": str(known_hosts),
                    "models_root": "/srv/models",
                },
            ]
        },
        "fleet.yaml",
    )
    definition = load_definition(
        {
            **VISION,
            "run": {"kind": "builtin", "trainer": "tiny-classifier"},
            "executor": "torchrun",
            "nproc_per_node": 2,
            "nodes": ["learn-1", "learn-2"],
        }
    )
    env = {"MODELYARD_RUN_DIR": "/runs/j1", "MODELYARD_JOB_FILE": "/runs/j1/job.json", "PATH": "/bin"}
    launches = plan_launches(definition, Program(trainer="tiny-classifier"), job_id="j1", env=env, fleet=fleet)
    assert [launch.label for launch in launches] == ["learn-1", "learn-2"]
    first, second = (launch.argv for launch in launches)
    assert first[0] == "ssh" and "train@10.0.0.5" in first and "StrictHostKeyChecking=yes" in first
    remote = first[-1]  # one quoted command line for the node's shell
    assert remote.startswith("env MODELYARD_JOB_FILE=/runs/j1/job.json MODELYARD_RUN_DIR=/runs/j1 /opt/venv/bin/python")
    assert "PATH=" not in remote  # only the job's own variables travel
    assert "--nnodes 2 --rdzv-backend c10d --rdzv-endpoint 10.0.0.5:29400 --rdzv-id j1" in remote
    assert remote.endswith("-m modelyard.training.builtin tiny-classifier")
    assert "2222" in second and "python3 -m torch.distributed.run" in second[-1]
    copy = remote_copy_argv(fleet.node("learn-2"), Path("/runs/j1"), to_node=True)
    assert copy[0] == "rsync" and copy[-2:] == ["/runs/j1/", "10.0.0.6:/runs/j1/"]
    missing = load_definition({**definition.model_dump(mode="json"), "nodes": ["learn-9"]})
    from modelyard.errors import NotFoundError

    with pytest.raises(NotFoundError, match="learn-9"):
        plan_launches(missing, Program(trainer="x"), job_id="j1", env=env, fleet=fleet)


DDP = """
import json, os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"rank {rank} of {world}: sum {value.item()}", flush=True)
if rank == 0:
    run = os.environ["MODELYARD_RUN_DIR"]
    with open(os.path.join(run, "metrics", "training_metrics.json"), "w") as out:
        json.dump({"world_size": world, "sum": value.item()}, out)
dist.destroy_process_group()
"""


def test_torchrun_runs_two_processes_on_gloo(registry: Registry, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    definition = python_job(script(tmp_path, DDP), executor="torchrun", nproc_per_node=2, timeout_seconds=600)
    result = run_job(registry, definition, run_dir=tmp_path / "run")
    assert result.status == "succeeded", result.message + "\n" + result.log_tail
    assert metrics(result) == {"world_size": 2, "sum": 3.0}
    log = (tmp_path / "run" / "training.log").read_text()
    assert "rank 0 of 2: sum 3.0" in log and "rank 1 of 2: sum 3.0" in log
    assert result.registered == ["vision-vit-base16-embed-v1@1"]


def test_a_multi_node_torchrun_job_meets_at_the_first_nodes_rendezvous(
    registry: Registry, tmp_path: Path, ssh_nodes: Any
) -> None:
    """Two real sshd nodes on loopback, one torchrun process each, a c10d rendezvous at the first."""
    pytest.importorskip("torch")
    nodes = ssh_nodes(2)
    fleet = parse_fleet({"nodes": [node.fleet_entry(python=sys.executable) for node in nodes]}, "fleet.yaml")
    definition = python_job(
        script(tmp_path, DDP),
        executor="torchrun",
        nodes=[node.name for node in nodes],
        timeout_seconds=600,
    )
    lines: list[str] = []
    result = run_job(registry, definition, run_dir=tmp_path / "run", fleet=fleet, on_output=lines.append)
    assert result.status == "succeeded", result.message + "\n" + result.log_tail
    assert metrics(result) == {"world_size": 2, "sum": 3.0}
    assert any(line.startswith(f"[{nodes[0].name}] rank ") for line in lines)
    assert any(line.startswith(f"[{nodes[1].name}] rank ") for line in lines)
    assert result.registered == ["vision-vit-base16-embed-v1@1"]
