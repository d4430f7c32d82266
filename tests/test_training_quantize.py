"""Post-training int8 quantization of real runs: a built-in trainer's run (trained here, for real)
and a TorchScript model saved with torch.jit.save; the int8 file is smaller, its outputs stay
close to the float model's on fixed inputs, and runs it cannot quantize are refused by name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import InvalidInputError
from modelyard.training.quantize import post_training_int8
from modelyard.training.run_api import Run

torch = pytest.importorskip("torch")


def trained_run(tmp_path: Path, trainer: Any, **fields: Any) -> Path:
    """A finished run of a built-in trainer, trained in this process."""
    from modelyard.training.builtin.train import train

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    job = {"epochs": 2, "run": {"kind": "builtin", "trainer": trainer.NAME}, **fields}
    (run_dir / "job.json").write_text(json.dumps(job))
    (run_dir / "config.yaml").write_text("epochs: 2\n")
    train(trainer, Run(run_dir, job))
    return run_dir


def test_builtin_run_quantizes_smaller_and_close(tmp_path: Path) -> None:
    from modelyard.training.builtin import load_model, tiny_lm

    run_dir = trained_run(tmp_path, tiny_lm, hidden_size=64)
    out = tmp_path / "int8"
    result = post_training_int8(run_dir, out)
    assert (result.kind, result.source, result.output) == (
        "builtin",
        "checkpoints/model.pt",
        "checkpoints/model_int8.pt",
    )
    assert result.quantized_modules == 5  # qkv, proj, up, down, head
    assert result.int8_bytes < 0.5 * result.float_bytes
    assert 0 < result.max_abs_diff < 0.1 * result.float_output_max_abs
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()) == [
        "README.md",
        "checkpoints/model_int8.pt",
        "config.yaml",
        "metrics/quantization.json",
        "metrics/training_metrics.json",
    ]
    # The training this model comes from, and the int8 model's own figures for validation gates.
    metrics = json.loads((out / "metrics" / "training_metrics.json").read_text())
    trained = json.loads((run_dir / "metrics" / "training_metrics.json").read_text())
    assert {key: metrics[key] for key in trained} == trained
    assert metrics["max_abs_diff"] == result.max_abs_diff and metrics["size_ratio"] == round(result.size_ratio, 6)
    assert result.int8_val_accuracy is not None and metrics["quantized_val_accuracy"] == result.int8_val_accuracy
    assert abs(result.int8_val_accuracy - (result.float_val_accuracy or 0)) < 0.1
    # Stored as plain tensors (int8 weights with their scales), never packed script objects.
    saved = torch.load(out / "checkpoints" / "model_int8.pt", weights_only=True)["state_dict"]
    assert all(isinstance(value, torch.Tensor) for value in saved.values())
    assert saved["head.linear.weight"].dtype == torch.int8 and "head.linear.weight_scale" in saved
    report = json.loads((out / "metrics" / "quantization.json").read_text())
    assert report["float_bytes"] == (run_dir / "checkpoints" / "model.pt").stat().st_size
    assert report["int8_bytes"] == (out / "checkpoints" / "model_int8.pt").stat().st_size
    assert report["max_abs_diff"] == result.max_abs_diff and report["dtype"] == "qint8"
    # The saved int8 model, loaded again, is the quantized one: close to float, not equal to it.
    float_model = load_model(run_dir / "checkpoints" / "model.pt")
    int8_model = load_model(out / "checkpoints" / "model_int8.pt")
    assert isinstance(int8_model.head.linear, torch.ao.nn.quantized.dynamic.Linear)
    _, (inputs, _) = tiny_lm.make_data(tiny_lm.architecture({"hidden_size": 64}))
    with torch.no_grad():
        difference = (float_model(inputs[:32]) - int8_model(inputs[:32])).abs().max().item()
    assert difference == pytest.approx(result.max_abs_diff)


def test_torchscript_run_quantizes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8)).eval()
    torch.jit.save(torch.jit.script(model), str(run_dir / "checkpoints" / "model.ts"))
    result = post_training_int8(run_dir, tmp_path / "int8")
    assert (result.kind, result.source, result.input_shape) == ("torchscript", "checkpoints/model.ts", (32, 64))
    assert result.int8_bytes < 0.6 * result.float_bytes
    assert 0 < result.max_abs_diff < 0.1 * result.float_output_max_abs
    quantized = torch.jit.load(str(tmp_path / "int8" / "checkpoints" / "model_int8.pt"))
    inputs = torch.randn(4, 64)
    with torch.no_grad():
        assert (quantized(inputs) - model(inputs)).abs().max().item() < 0.1 * model(inputs).abs().max().item()
    assert not (tmp_path / "int8" / "config.yaml").exists()  # the run had none


def _plain_state_dict(path: Path) -> None:
    torch.save({"weight": torch.zeros(2, 2)}, path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a model at all")


def _qat_model(path: Path) -> None:
    torch.save({"architecture": {"trainer": "tiny-lm", "args": {}, "quantized": "qat-int8"}, "state_dict": {}}, path)


def _unknown_trainer(path: Path) -> None:
    torch.save({"architecture": {"trainer": "resnet", "args": {}}, "state_dict": {}}, path)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "run: no checkpoints/model.pt or checkpoints/model.ts to quantize; post-training int8 supports"),
        (_plain_state_dict, "model.pt: not a built-in trainer's model file: it has no 'architecture' and"),
        (_garbage, "model.pt: not a torch.save or torch.jit.save archive; supported: a built-in trainer's"),
        (_qat_model, "model.pt: already quantized (qat-int8); post-training int8 takes a float model"),
        (_unknown_trainer, "model.pt: architecture names no built-in trainer (tiny-classifier, tiny-lm): 'resnet'"),
    ],
)
def test_runs_it_cannot_quantize_are_refused(tmp_path: Path, write: Any, message: str) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    if write is not None:
        write(run_dir / "checkpoints" / "model.pt")
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        post_training_int8(run_dir, tmp_path / "int8")
    assert not (tmp_path / "int8").exists()  # nothing written


def test_missing_run_and_busy_output_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="nowhere: the run directory does not exist"):
        post_training_int8(tmp_path / "nowhere", tmp_path / "int8")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 4)), str(run_dir / "checkpoints" / "model.ts"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="busy: the output directory is not empty"):
        post_training_int8(run_dir, busy)
    assert [path.name for path in busy.iterdir()] == ["keep.txt"]
