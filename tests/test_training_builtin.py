"""The helper API for training scripts (`current_run`) and the built-in trainers, run for real as the
job runner runs them: a run directory and a job.json, `python -m modelyard.training.builtin NAME`
in a subprocess (under torch.distributed.run for DDP), then the files the run left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.errors import InvalidInputError
from modelyard.training import current_run
from modelyard.training.builtin import TRAINERS, check_supported, tiny_classifier, tiny_lm
from modelyard.training.run_api import ENV_JOB_FILE, ENV_RUN_DIR, Run

DP = {"max_grad_norm": 1.0, "delta": 1e-5}


def make_run(tmp_path: Path, trainer: str = "tiny-classifier", **fields: Any) -> tuple[Path, dict[str, Any]]:
    """A run directory with job.json as the runner writes it (a JobDefinition dump plus two keys)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job: dict[str, Any] = {
        "component": "vision" if trainer == "tiny-classifier" else "inference",
        "base_model": trainer,
        "task": "classification" if trainer == "tiny-classifier" else "lm-finetune",
        "epochs": 3,
        "run": {"kind": "builtin", "trainer": trainer},
        "privacy_level": "none",
        "quantization_mode": "none",
        "artifact_name": f"vision-{trainer}-classification-v1",
        "training_config_hash": "0" * 64,
        **fields,
    }
    (run_dir / "job.json").write_text(json.dumps(job))
    return run_dir, job


def run_env(run_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env[ENV_RUN_DIR] = str(run_dir)
    env[ENV_JOB_FILE] = str(run_dir / "job.json")
    return env


def train(run_dir: Path, trainer: str, *, ranks: int = 1) -> subprocess.CompletedProcess[str]:
    module = ["-m", "modelyard.training.builtin", trainer]
    if ranks > 1:
        # --standalone: a free rendezvous port, so concurrent runs on this machine do not collide
        module = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *module]
    return subprocess.run(
        [sys.executable, *module], env=run_env(run_dir), capture_output=True, text=True, timeout=600, check=False
    )


def summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics" / "training_metrics.json").read_text())  # type: ignore[no-any-return]


# -- current_run ----------------------------------------------------------------------------------


def test_current_run_outside_a_run_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_RUN_DIR, raising=False)
    with pytest.raises(InvalidInputError, match="not inside a modelyard training run: MODELYARD_RUN_DIR is not set"):
        current_run()


def test_builtin_trainer_outside_a_run_exits_3(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODELYARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "modelyard.training.builtin", "tiny-classifier"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert "MODELYARD_RUN_DIR is not set" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({ENV_RUN_DIR: "{tmp}/missing"}, "the run directory given in MODELYARD_RUN_DIR does not exist"),
        ({ENV_RUN_DIR: "{tmp}"}, "MODELYARD_JOB_FILE is not set"),
        ({ENV_RUN_DIR: "{tmp}", ENV_JOB_FILE: "{tmp}/nope.json"}, "nope.json: the job file given in"),
        ({ENV_RUN_DIR: "{tmp}", ENV_JOB_FILE: "{tmp}/bad.json"}, "bad.json: not a JSON job definition"),
        ({ENV_RUN_DIR: "{tmp}", ENV_JOB_FILE: "{tmp}/list.json"}, "list.json: a job definition is a JSON object"),
        ({ENV_RUN_DIR: "{tmp}", ENV_JOB_FILE: "{tmp}/job.json", "RANK": "x"}, "RANK='x' is not a whole number"),
        ({ENV_RUN_DIR: "{tmp}", ENV_JOB_FILE: "{tmp}/job.json", "WORLD_SIZE": "0"}, "WORLD_SIZE='0' is out of range"),
    ],
)
def test_current_run_refuses_a_broken_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "job.json").write_text("{}")
    for name in (ENV_JOB_FILE, "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    with pytest.raises(InvalidInputError, match=message):
        current_run()


def test_current_run_reads_the_job_and_is_one_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, job = make_run(tmp_path, checkpoint_interval=2)
    for name, value in run_env(run_dir).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELYARD_PRIVACY_LEVEL", "secure-agg")
    run = current_run()
    assert run is current_run()
    assert run.job == job and run.run_dir == run_dir
    assert (run.rank, run.world_size, run.checkpoint_interval) == (0, 1, 2)
    assert run.privacy_level == "secure-agg"  # the environment the runner exported wins


def test_checkpoints_honour_the_interval_and_mark_best_and_latest(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    run_dir, job = make_run(tmp_path, checkpoint_interval=2)
    run = Run(run_dir, job)
    losses = [0.9, 0.5, 0.7, 0.4, 0.6]
    written = [
        run.save_checkpoint({"weights": torch.full((2,), float(epoch))}, epoch, metric=loss)
        for epoch, loss in enumerate(losses, start=1)
    ]
    folder = run_dir / "checkpoints"
    assert written == [None, folder / "epoch_2.pt", None, folder / "epoch_4.pt", None]
    assert sorted(path.name for path in folder.iterdir()) == [
        "best.pt",
        "epoch_2.pt",
        "epoch_4.pt",
        "latest.pt",
        "manifest.json",
    ]
    assert torch.load(folder / "best.pt")["epoch"] == 4  # lowest metric: 0.4 at epoch 4
    assert torch.load(folder / "latest.pt")["weights"].tolist() == [5.0, 5.0]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["best"] == {"file": "best.pt", "epoch": 4, "metric": 0.4}
    assert manifest["latest"] == {"file": "latest.pt", "epoch": 5, "metric": 0.6}
    assert manifest["periodic"] == ["epoch_2.pt", "epoch_4.pt"]
    assert run.save_checkpoint({"weights": torch.zeros(1)}, 5, force=True) == folder / "epoch_5.pt"
    assert not list(folder.glob(".*"))  # no partial files left behind


def test_no_interval_keeps_best_and_latest_only(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run_dir, job = make_run(tmp_path)
    run = Run(run_dir, job)
    for epoch in range(1, 4):
        assert run.save_checkpoint({"epoch": epoch}, epoch) is None
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["latest.pt", "manifest.json"]


def test_numpy_state_is_saved_as_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    run_dir, job = make_run(tmp_path, checkpoint_interval=1)
    run = Run(run_dir, job)
    path = run.save_checkpoint({"w": np.arange(4, dtype=np.float32)}, 1, metric=0.5)
    assert path == run_dir / "checkpoints" / "epoch_1.safetensors"
    assert load_file(str(path))["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert (run_dir / "checkpoints" / "best.safetensors").is_file()


def test_metrics_are_logged_summarised_and_resumed(tmp_path: Path) -> None:
    run_dir, job = make_run(tmp_path)
    run = Run(run_dir, job)
    for step, (loss, accuracy) in enumerate([(1.0, 0.2), (float("nan"), 0.5), (0.3, 0.4)], start=1):
        run.log_metrics(step, loss=loss, val_accuracy=accuracy)
    run.report(epsilon_spent=1.5, note="dp")
    data = summary(run_dir)
    assert data["loss"] == [1.0, None, 0.3] and data["best_loss"] == 0.3 and data["final_loss"] == 0.3
    assert data["best_val_accuracy"] == 0.5  # higher is better for accuracy
    assert data["steps"]["loss"] == [1, 2, 3]
    assert (data["epsilon_spent"], data["note"]) == (1.5, "dp")
    lines = (run_dir / "metrics" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == [1.0, None, 0.3]
    resumed = Run(run_dir, job)
    resumed.log_metrics(4, loss=0.1)
    resumed.close()
    assert summary(run_dir)["loss"] == [1.0, None, 0.3, 0.1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda run: run.log_metrics(-1, loss=1.0), "step must be a whole number >= 0"),
        (lambda run: run.log_metrics(1), "log_metrics needs at least one value"),
        (lambda run: run.log_metrics(1, loss="low"), "metric loss must be a number"),
        (lambda run: run.save_checkpoint({}, True), "epoch must be a whole number >= 0"),
        (lambda run: run.save_checkpoint([1], 1), "save_checkpoint needs a mapping"),
        (lambda run: run.save_checkpoint({}, 1, metric="x"), "metric metric must be a number"),
        (lambda run: run.report(steps=1), "report name 'steps' is taken"),
        (lambda run: run.report(loss=1), "report name 'loss' is taken"),
        (lambda run: run.report(value=float("inf")), "is not plain JSON"),
        (lambda run: run.report(value=object()), "is not plain JSON"),
    ],
)
def test_bad_calls_are_refused_and_write_nothing(tmp_path: Path, call: Any, message: str) -> None:
    run_dir, job = make_run(tmp_path)
    run = Run(run_dir, job)
    run.log_metrics(0, loss=2.0)
    before = (run_dir / "metrics" / "metrics.jsonl").read_text()
    with pytest.raises(InvalidInputError, match=message):
        call(run)
    assert (run_dir / "metrics" / "metrics.jsonl").read_text() == before
    assert not (run_dir / "checkpoints").exists()


def test_only_rank_0_writes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run_dir, job = make_run(tmp_path, checkpoint_interval=1)
    run = Run(run_dir, job, rank=1, world_size=2)
    run.log_metrics(1, loss=1.0)
    assert run.save_checkpoint({"epoch": 1}, 1, metric=1.0) is None
    run.report(epsilon_spent=1.0)
    run.close()
    assert sorted(path.name for path in run_dir.iterdir()) == ["job.json"]


# -- check_supported ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "world_size", "message"),
    [
        (
            {"run": {"kind": "builtin", "trainer": "huge-lm"}},
            1,
            "job.json: field 'run.trainer': no built-in trainer 'huge-lm'; the built-in",
        ),
        ({"privacy_level": "dp"}, 1, "job.json: field 'dp': dp: privacy_level dp needs dp parameters"),
        ({"privacy_level": "dp", "dp": {"max_grad_norm": 1.0}}, 1, "field 'dp.delta': dp.delta: Field required"),
        ({"privacy_level": "dp", "dp": {**DP}}, 1, "dp needs exactly one of noise_multiplier or target_epsilon"),
        (
            {"privacy_level": "dp", "dp": {**DP, "noise_multiplier": 1.0, "target_epsilon": 2.0}},
            1,
            "dp needs exactly one of noise_multiplier or target_epsilon",
        ),
        (
            {"privacy_level": "dp", "dp": {**DP, "noise_multiplier": 1.0}, "quantize": "int8"}
            | {"quantization_mode": "quantization-aware"},
            1,
            "job.json: field 'quantization_mode': the built-in trainer tiny-classifier cannot combine DP-SGD with",
        ),
        (
            {"privacy_level": "dp", "dp": {**DP, "noise_multiplier": 1.0}},
            2,
            "field 'privacy_level': the built-in trainer tiny-classifier runs DP-SGD in one process only, not with 2",
        ),
        ({"privacy_level": "secure-agg"}, 1, "does no secure aggregation, and modelyard performs none itself"),
        ({"optimizer": "lamb"}, 1, "field 'optimizer': the built-in trainer tiny-classifier implements the"),
        ({"precision": "bf16"}, 1, "field 'precision': the built-in trainer tiny-classifier trains and saves fp32"),
        (
            {"quantize": "int4", "quantization_mode": "quantization-aware"},
            1,
            "field 'quantize': quantization-aware training in tiny-classifier produces int8, not int4",
        ),
        ({"hidden_size": 100_000}, 1, "field 'hidden_size': the built-in trainer tiny-classifier is a small example"),
        ({"epochs": 0}, 1, "job.json: field 'epochs': epochs: Input should be greater than or equal to 1"),
    ],
)
def test_unsupported_jobs_are_refused_before_training(
    tmp_path: Path, fields: dict[str, Any], world_size: int, message: str
) -> None:
    _, job = make_run(tmp_path, **fields)
    with pytest.raises(InvalidInputError, match=message):
        check_supported(job, world_size=world_size)


def test_tiny_lm_refusals(tmp_path: Path) -> None:
    _, job = make_run(tmp_path, "tiny-lm", max_seq_length=100_000)
    with pytest.raises(InvalidInputError, match="field 'max_seq_length': the built-in trainer tiny-lm takes"):
        check_supported(job)


def test_supported_jobs_pass(tmp_path: Path) -> None:
    _, job = make_run(tmp_path, "tiny-lm", optimizer="sgd", quantize="int8", quantization_mode="quantization-aware")
    check_supported(job, world_size=2)
    (tmp_path / "c").mkdir()
    _, command_job = make_run(tmp_path / "c", run={"kind": "command", "argv": ["python", "train.py"]})
    check_supported(command_job | {"privacy_level": "secure-agg"})  # a command's trainer is its own business


@pytest.mark.parametrize(
    ("module", "job"),
    [
        (tiny_classifier, {}),
        (tiny_classifier, {"input_size": [3, 4, 4], "hidden_size": 24, "num_layers": 3, "embedding_dim": 8}),
        (tiny_lm, {}),
        (tiny_lm, {"hidden_size": 48, "num_heads": 3, "num_layers": 2, "max_seq_length": 9}),
    ],
)
def test_parameter_count_matches_the_module(module: Any, job: dict[str, Any]) -> None:
    pytest.importorskip("torch")
    args = module.architecture(job)
    model = module.build(args)
    assert module.parameter_count(args) == sum(p.numel() for p in model.parameters())


# -- the trainers end to end -----------------------------------------------------------------------


def test_tiny_classifier_end_to_end(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from modelyard.training.builtin import load_model

    run_dir, _ = make_run(tmp_path, epochs=4, checkpoint_interval=3, optimizer="sgd", learning_rate=0.05)
    done = train(run_dir, "tiny-classifier")
    assert done.returncode == 0, done.stderr
    assert "epoch 4/4 loss" in done.stdout
    folder = run_dir / "checkpoints"
    names = sorted(path.name for path in folder.iterdir())
    # every 3 epochs, and the final epoch; best and latest; the final model
    assert names == ["best.pt", "epoch_3.pt", "epoch_4.pt", "latest.pt", "manifest.json", "model.pt"]
    checkpoint = torch.load(folder / "epoch_3.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and set(checkpoint["model_state_dict"]) == set(
        torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    )
    momentum = checkpoint["optimizer_state_dict"]["state"][0]["momentum_buffer"]  # SGD with momentum
    assert momentum.shape == checkpoint["model_state_dict"]["0.linear.weight"].shape
    data = summary(run_dir)
    assert len(data["loss"]) == 4 and data["loss"][-1] < data["loss"][0]
    assert data["best_val_loss"] == min(data["val_loss"])
    assert (data["trainer"], data["world_size"], data["privacy_level"]) == ("tiny-classifier", 1, "none")
    model = load_model(folder / "model.pt")
    (_, _), (inputs, labels) = tiny_classifier.make_data(tiny_classifier.architecture({}))
    accuracy = (model(inputs).argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.6  # 4 classes: chance is 0.25


def test_tiny_lm_quantization_aware_training_gives_an_int8_model(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from modelyard.training.builtin import load_model

    run_dir, _ = make_run(tmp_path, "tiny-lm", epochs=4, quantize="int8", quantization_mode="quantization-aware")
    done = train(run_dir, "tiny-lm")
    assert done.returncode == 0, done.stderr
    assert "saved checkpoints/model.pt (int8, quantization-aware training)" in done.stdout
    saved = torch.load(run_dir / "checkpoints" / "model.pt", weights_only=True)
    assert saved["architecture"]["quantized"] == "qat-int8"
    weight, _bias = saved["state_dict"]["head.linear._packed_params._packed_params"]
    assert weight.dtype == torch.qint8
    model = load_model(run_dir / "checkpoints" / "model.pt")
    assert isinstance(model.head.linear, torch.ao.nn.quantized.Linear)
    args = tiny_lm.architecture({})
    _, (inputs, targets) = tiny_lm.make_data(args)
    accuracy = (model(inputs).argmax(-1) == targets).float().mean().item()
    assert accuracy > 3 / args["vocab_size"]  # well above chance
    latest = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert any("fake_quant" in key for key in latest["model_state_dict"])  # trained with fake quantization
    assert summary(run_dir)["quantization_mode"] == "quantization-aware"


def test_dp_training_reports_the_epsilon_spent(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    dp = {**DP, "target_epsilon": 3.0}
    run_dir, _ = make_run(tmp_path, "tiny-lm", epochs=2, privacy_level="dp", dp=dp)
    done = train(run_dir, "tiny-lm")
    assert done.returncode == 0, done.stderr
    check_dp_summary(run_dir, dp)


def test_dp_with_a_noise_multiplier_in_process(tmp_path: Path) -> None:
    """The same trainer code called directly (no subprocess): the noise multiplier is used as given."""
    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    from modelyard.training.builtin.train import train as train_here

    dp = {**DP, "noise_multiplier": 1.1}
    run_dir, job = make_run(tmp_path, epochs=2, privacy_level="dp", dp=dp)
    train_here(tiny_classifier, Run(run_dir, job))
    check_dp_summary(run_dir, dp)


def check_dp_summary(run_dir: Path, dp: dict[str, float]) -> None:
    data = summary(run_dir)
    assert data["privacy_level"] == "dp" and data["delta"] == dp["delta"]
    assert data["epsilon_spent"] > 0 and data["epsilon"][-1] == pytest.approx(data["epsilon_spent"])
    assert data["epsilon"][0] < data["epsilon"][1]  # each epoch spends more
    if "target_epsilon" in dp:
        assert data["epsilon_spent"] <= dp["target_epsilon"] * 1.01
    else:
        assert data["noise_multiplier"] == dp["noise_multiplier"]
    assert (run_dir / "checkpoints" / "model.pt").is_file()


def test_ddp_with_two_processes_on_gloo(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    run_dir, _ = make_run(tmp_path, epochs=2, checkpoint_interval=1)
    done = train(run_dir, "tiny-classifier", ranks=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1/2 loss") == 1  # rank 0 alone reports and writes
    assert summary(run_dir)["world_size"] == 2
    names = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch_1.pt", "epoch_2.pt", "latest.pt", "manifest.json", "model.pt"]
    state = torch.load(run_dir / "checkpoints" / "model.pt", weights_only=True)["state_dict"]
    assert not any(key.startswith("module.") for key in state)  # the module's own names, not DDP's
    assert len((run_dir / "metrics" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"privacy_level": "dp"}, "privacy_level dp needs dp parameters"),
        (
            {"privacy_level": "dp", "dp": {**DP, "noise_multiplier": 1.0}, "quantize": "int8"}
            | {"quantization_mode": "quantization-aware"},
            "cannot combine DP-SGD with quantization-aware training",
        ),
    ],
)
def test_bad_job_exits_non_zero_before_training(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    run_dir, _ = make_run(tmp_path, **fields)
    done = train(run_dir, "tiny-classifier")
    assert done.returncode == 3
    assert message in done.stderr and done.stderr.startswith(f"error: {run_dir / 'job.json'}: field ")
    assert done.stdout == ""
    assert sorted(path.name for path in run_dir.iterdir()) == ["job.json"]


def test_unknown_trainer_name_exits_3(tmp_path: Path) -> None:
    run_dir, _ = make_run(tmp_path)
    done = train(run_dir, "tiny-gan")
    assert done.returncode == 3
    assert f"no built-in trainer 'tiny-gan'; the built-in trainers are {', '.join(TRAINERS)}" in done.stderr
