"""`modelyard train`: the command in a real subprocess (`python -m modelyard.cli.train`, until the
main CLI installs it) and its options as Typer builds them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from ruamel.yaml import YAML

from conftest import CliResult
from modelyard.cli import train
from modelyard.registry import Registry
from modelyard.training.form import LearningForm, load_form, preview

FORM_FLAGS = ["--component", "vision", "--base-model", "vit-base16", "--task", "embed", "--embedding-dim", "16"]
FORM = {"component": "vision", "base_model": "vit-base16", "task": "embed", "embedding_dim": 16}
TRAIN = """
import json, os, sys
run = os.environ["MODELYARD_RUN_DIR"]
print("epoch 1 loss 0.5", flush=True)
with open(os.path.join(run, "metrics", "training_metrics.json"), "w") as out:
    json.dump({"argv": sys.argv[1:]}, out)
"""


def modelyard_train(home: Path, *args: str, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-m", "modelyard.cli.train", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELYARD_HOME": str(home), "COLUMNS": "200"},  # usage errors unwrapped
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    (path / "train.py").write_text(TRAIN)
    return path


def registered(home: Path) -> list[str]:
    with Registry.open(home) as registry:
        return [summary.ref for summary in registry.list()]


def test_every_form_field_is_a_flag_with_dashes() -> None:
    app = typer.Typer()
    train.install(app)

    @app.callback()
    def _root() -> None:
        """Root."""

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {opt for param in command.params for opt in param.opts}
    for name in LearningForm.model_fields:
        expected = {"train_data_tags": "--train-data-tag", "augmentations": "--augmentation"}.get(
            name, "--" + name.replace("_", "-")
        )
        assert expected in options, name
    for job_flag in ("--builtin", "--executor", "--nproc-per-node", "--node", "--timeout", "--quantization-mode"):
        assert job_flag in options
    multiple = {param.opts[0] for param in command.params if getattr(param, "multiple", False)}
    assert multiple == {"--train-data-tag", "--augmentation", "--node"}


def test_dry_run_prints_what_the_form_preview_prints(home: Path, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    flags = [*FORM_FLAGS, "--learning-rate", "2e-5", "--epochs", "3", "--train-data-tag", "b", "--train-data-tag", "a"]
    flags += ["--input-size", "3,224,224", "--quantize", "int8", "--augmentation", "hflip"]
    dry = modelyard_train(home, *flags, "--builtin", "tiny-classifier", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    form_file = tmp_path / "form.yaml"
    values = {
        **FORM,
        "learning_rate": 2e-5,
        "epochs": 3,
        "train_data_tags": ["b", "a"],
        "input_size": [3, 224, 224],
        "quantize": "int8",
        "augmentations": ["hflip"],
    }
    form_file.write_text(json.dumps(values))
    shown = cli("training", "preview", str(form_file), "--json", check=True)
    assert dry.json() == shown.json()
    with Registry.open(home) as registry:
        assert dry.json() == preview(load_form(values), registry).model_dump(mode="json")
    assert dry.json()["artifact_name"] == "vision-vit-base16-embed-int8-v1"
    text = modelyard_train(home, *FORM_FLAGS, "--dry-run", "--", "python", "train.py")
    assert text.returncode == 0 and "artifact_name: vision-vit-base16-embed-v1" in text.stdout
    assert not (home / "runs").exists() and registered(home) == []


def test_a_command_after_double_dash_runs_and_registers(home: Path, workdir: Path) -> None:
    result = modelyard_train(
        home, *FORM_FLAGS, "--epochs", "2", "--", sys.executable, "train.py", "--mine", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1 loss 0.5" in result.stdout  # live output
    assert result.stdout.rstrip().endswith("registered vision-vit-base16-embed-v1@1")
    assert registered(home) == ["vision-vit-base16-embed-v1@1"]
    [run_dir] = (home / "runs").iterdir()
    assert json.loads((run_dir / "metrics" / "training_metrics.json").read_text()) == {"argv": ["--mine"]}


def test_pass_flags_appends_the_form(home: Path, workdir: Path) -> None:
    result = modelyard_train(
        home,
        *FORM_FLAGS,
        "--pass-flags",
        "--run-dir",
        str(workdir / "run"),
        "--",
        sys.executable,
        "train.py",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    argv = json.loads((workdir / "run" / "metrics" / "training_metrics.json").read_text())["argv"]
    assert argv[:4] == ["--component", "vision", "--base-model", "vit-base16"] and "--embedding-dim" in argv


def test_a_job_file_runs_and_flags_override_it(home: Path, workdir: Path) -> None:
    job_file = workdir / "job.yaml"
    document: dict[str, Any] = {
        **FORM,
        "epochs": 5,
        "run": {"kind": "command", "argv": [sys.executable, "train.py"], "workdir": str(workdir)},
    }
    yaml = YAML(typ="safe", pure=True)
    with job_file.open("w") as out:
        yaml.dump(document, out)
    result = modelyard_train(home, str(job_file), "--epochs", "7", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    outcome = result.json()
    assert outcome["status"] == "succeeded" and outcome["registered"] == ["vision-vit-base16-embed-v1@1"]
    assert "epoch 1 loss 0.5" in result.stderr  # with --json, live output goes to stderr
    with Registry.open(home) as registry:
        assert registry.show("vision-vit-base16-embed-v1@1").manifest.training_config == {"epochs": 7}


def test_a_failing_job_exits_non_zero_with_the_logs_tail(home: Path, workdir: Path) -> None:
    (workdir / "crash.py").write_text("print('loading data', flush=True)\nraise SystemExit('dataset missing')\n")
    result = modelyard_train(home, *FORM_FLAGS, "--", sys.executable, "crash.py", cwd=workdir)
    assert result.returncode == 1
    assert "last lines of" in result.stderr and "loading data" in result.stderr
    assert "error: job " in result.stderr and "failed: the command exited with status 1" in result.stderr
    assert "dataset missing" in result.stderr
    assert registered(home) == []


def test_a_missing_command_fails_clearly(home: Path, workdir: Path) -> None:
    result = modelyard_train(home, *FORM_FLAGS, "--", "no-such-trainer-xyz", cwd=workdir)
    assert result.returncode == 1 and "'no-such-trainer-xyz' is not found on PATH" in result.stderr
    assert "Traceback" not in result.stderr and registered(home) == []


def test_a_timeout_stops_the_job(home: Path, workdir: Path) -> None:
    (workdir / "hang.py").write_text("import time\nprint('waiting', flush=True)\ntime.sleep(600)\n")
    result = modelyard_train(home, *FORM_FLAGS, "--timeout", "1", "--", sys.executable, "hang.py", cwd=workdir)
    assert result.returncode == 1 and "timed out after 1 s" in result.stderr and registered(home) == []


def test_ctrl_c_cancels_the_job(home: Path, workdir: Path) -> None:
    (workdir / "hang.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(600)\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelyard.cli.train", *FORM_FLAGS, "--", sys.executable, "hang.py"],
        cwd=workdir,
        env={**os.environ, "MODELYARD_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == "ready":
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "cancelled" in stderr and registered(home) == []


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--batch-size", "0"], "batch_size"),
        (["--learning-rate", "11"], "learning_rate"),
        (["--quantize", "int8", "--precision", "fp16"], "quantize"),
        (["--privacy-level", "dp"], "dp"),
        (["--privacy-level", "dp", "--dp-max-grad-norm", "1", "--dp-delta", "1e-5"], "dp"),
        (["--nproc-per-node", "2"], "nproc_per_node"),
        (["--executor", "slurm"], "executor"),
        (["--input-size", "3x224"], "input_size"),
        (["--task", "dreaming"], "task"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_a_bad_parameter_is_refused_before_anything_runs(
    home: Path, workdir: Path, flags: list[str], field: str
) -> None:
    result = modelyard_train(home, *FORM_FLAGS, *flags, "--", sys.executable, "train.py", cwd=workdir)
    assert result.returncode == 3, result.stderr
    assert f"field '{field}'" in result.stderr
    assert not (home / "runs").exists() and registered(home) == []


def test_a_wrong_type_is_a_usage_error(home: Path, workdir: Path) -> None:
    result = modelyard_train(home, *FORM_FLAGS, "--batch-size", "many", "--", sys.executable, "train.py", cwd=workdir)
    assert (
        result.returncode == 2
        and "--batch-size" in result.stderr
        and "Invalid value for '--batch-size': 'many' is not a valid int" in result.stderr
    )


def test_nothing_to_run_is_refused(home: Path) -> None:
    result = modelyard_train(home, *FORM_FLAGS)
    assert result.returncode == 3 and "field 'run'" in result.stderr and "nothing to run" in result.stderr
    both = modelyard_train(home, *FORM_FLAGS, "--builtin", "tiny-lm", "--", "python", "x.py")
    assert both.returncode == 3 and "not both" in both.stderr


def test_a_bad_job_file_names_the_file_and_field(home: Path, tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({**FORM, "epochs": -1, "run": {"kind": "command", "argv": ["true"]}}))
    result = modelyard_train(home, str(job_file))
    assert result.returncode == 3 and str(job_file) in result.stderr and "field 'epochs'" in result.stderr


def test_the_builtin_trainer_with_post_training_quantization_registers_two_linked_artifacts(home: Path) -> None:
    pytest.importorskip("torch")
    form = ["--component", "vision", "--base-model", "tiny-mlp", "--task", "classification", "--embedding-dim", "16"]
    result = modelyard_train(
        home,
        *form,
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--quantize",
        "true",
        "--builtin",
        "tiny-classifier",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    float_ref, int8_ref = "vision-tiny-mlp-classification-v1@1", "vision-tiny-mlp-classification-int8-v1@1"
    assert result.stdout.rstrip().endswith(f"registered {float_ref}\nregistered {int8_ref}")
    with Registry.open(home) as registry:
        quantized = registry.show(int8_ref).manifest
        trained = registry.show(float_ref).manifest
    assert quantized.quantized is True and quantized.precision == "int8" and quantized.derived_from == float_ref
    assert trained.quantized is False and trained.training_config_hash == quantized.training_config_hash
    assert 0 < float(quantized.metrics["int8_size_ratio"]) < 1  # type: ignore[arg-type]
    assert {entry.path for entry in quantized.files} >= {"checkpoints/model_int8.pt", "metrics/quantization.json"}
