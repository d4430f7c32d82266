"""The helper API for training scripts: `current_run()` and its `Run`.

A training job's process gets its run directory in ``MODELYARD_RUN_DIR`` and its job definition
(a ``job.json``) in ``MODELYARD_JOB_FILE``. `current_run()` reads both and returns the `Run` that
writes what seed 003 says a raw run holds:

* ``metrics/metrics.jsonl``: one JSON object per `Run.log_metrics` call (``step``, ``time`` and
  the values), appended as they come, so a killed run keeps what it logged;
* ``metrics/training_metrics.json``: the summary: each metric's curve (a list, in logging order,
  with its steps under ``steps``), ``best_<name>`` and ``final_<name>``, and every fact given to
  `Run.report` (``epsilon_spent``, ...). It is rewritten at each checkpoint, each report and when
  the process exits;
* ``checkpoints/epoch_N.pt`` every ``checkpoint_interval`` epochs (none without an interval),
  ``best.pt`` (lowest metric so far), ``latest.pt`` (the last save) and ``checkpoints/manifest.json``
  saying which epoch each of them is.

Under torchrun (``RANK``/``WORLD_SIZE`` set) only rank 0 writes; the other ranks' calls do nothing.
torch is imported only to save a checkpoint that holds more than numpy arrays, so scripts without
torch can use the rest.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.fsutil import write_text_atomically

__all__ = [
    "ENV_JOB_FILE",
    "ENV_PRIVACY_LEVEL",
    "ENV_QUANTIZATION_MODE",
    "ENV_RUN_DIR",
    "Run",
    "current_run",
]

ENV_RUN_DIR = "MODELYARD_RUN_DIR"
ENV_JOB_FILE = "MODELYARD_JOB_FILE"
ENV_PRIVACY_LEVEL = "MODELYARD_PRIVACY_LEVEL"
ENV_QUANTIZATION_MODE = "MODELYARD_QUANTIZATION_MODE"
CHECKPOINTS = "checkpoints"
METRICS = "metrics"
METRICS_LOG = "metrics.jsonl"
TRAINING_METRICS = "training_metrics.json"
CHECKPOINT_MANIFEST = "manifest.json"
MAX_JOB_FILE_BYTES = 4 * 1024 * 1024
# Metric names where a higher value is better; every other metric is best at its lowest.
HIGHER_IS_BETTER = ("acc", "accuracy", "auc", "bleu", "coverage", "f1", "iou", "map", "precision", "recall", "score")
_RESERVED = ("step", "steps", "time", "updated_at")


class Run:
    """One training run, as seen from inside the training process. Build it with `current_run()`."""

    def __init__(self, run_dir: Path, job: dict[str, Any], rank: int = 0, world_size: int = 1) -> None:
        self.run_dir = run_dir
        self.job = job
        self.rank = rank
        self.world_size = world_size
        self._curves: dict[str, list[tuple[int, float | None]]] = {}
        self._facts: dict[str, Any] = {}
        self._checkpoints: dict[str, Any] = {}
        self._dirty = False
        if self.is_main:
            self._resume()
            atexit.register(self.close)

    # -- what the job says ------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files."""
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINTS

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / METRICS

    @property
    def checkpoint_interval(self) -> int | None:
        """The job's checkpoint_interval in epochs; None means only best and latest are kept."""
        value = self.job.get("checkpoint_interval")
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None

    @property
    def privacy_level(self) -> str:
        return os.environ.get(ENV_PRIVACY_LEVEL) or str(self.job.get("privacy_level") or "none")

    @property
    def quantization_mode(self) -> str:
        return os.environ.get(ENV_QUANTIZATION_MODE) or str(self.job.get("quantization_mode") or "none")

    # -- metrics ----------------------------------------------------------------------------------

    def log_metrics(self, step: int, **values: float) -> None:
        """Record metric values at `step` (an epoch or a batch number, as the script counts).
        A value that is not finite (a diverged loss) is recorded as null and never counts as best."""
        _check_count("step", step)
        if not values:
            raise InvalidInputError("log_metrics needs at least one value, e.g. log_metrics(step, loss=0.5)")
        recorded = {name: _metric_value(name, value) for name, value in values.items()}
        if not self.is_main:
            return
        for name, value in recorded.items():
            self._curves.setdefault(name, []).append((step, value))
        line = json.dumps({"step": step, "time": _now(), **recorded}, allow_nan=False)
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        with (self.metrics_dir / METRICS_LOG).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self._dirty = True

    def report(self, **facts: Any) -> None:
        """Record facts about the whole run (``epsilon_spent=1.9``) in training_metrics.json."""
        for name, value in facts.items():
            if name in _RESERVED or name in self._summary_curves():
                raise InvalidInputError(f"report name {name!r} is taken by the metrics summary; choose another name")
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"report value {name}={value!r} is not plain JSON (a finite number, text, true/false, list or "
                    "mapping of them)"
                ) from None
        if not self.is_main:
            return
        self._facts.update(facts)
        self._dirty = True
        self.write_summary()

    def write_summary(self) -> Path | None:
        """Write metrics/training_metrics.json now (it is also written at each checkpoint, report and exit)."""
        if not self.is_main or not (self._curves or self._facts):
            return None
        summary: dict[str, Any] = dict(self._summary_curves())
        summary["steps"] = {name: [step for step, _ in points] for name, points in self._curves.items()}
        summary.update(self._facts)
        summary["updated_at"] = _now()
        path = self.metrics_dir / TRAINING_METRICS
        write_json(path, summary)
        self._dirty = False
        return path

    def close(self) -> None:
        """Write the summary if anything changed since it was last written (runs at exit by itself)."""
        if self._dirty:
            self.write_summary()

    def _summary_curves(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for name, points in self._curves.items():
            values = [value for _, value in points]
            finite = [value for value in values if value is not None]
            summary[name] = values
            if finite:
                summary[f"best_{name}"] = max(finite) if higher_is_better(name) else min(finite)
            if values and values[-1] is not None:
                summary[f"final_{name}"] = values[-1]
        return summary

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(
        self, state: Mapping[str, Any], epoch: int, *, metric: float | None = None, force: bool = False
    ) -> Path | None:
        """Save `state` (model and optimizer state dicts, ...) after `epoch`.

        It becomes ``latest``; ``best`` too when `metric` is the lowest so far; and
        ``epoch_<epoch>`` when `epoch` is a multiple of the job's checkpoint_interval, or `force`.
        Returns the ``epoch_<epoch>`` file, or None when none was written (or on a rank other
        than 0). A mapping of numpy arrays only is saved as ``.safetensors`` (no torch needed);
        anything else with ``torch.save`` as ``.pt``."""
        _check_count("epoch", epoch)
        score = None if metric is None else _metric_value("metric", metric)
        if not isinstance(state, Mapping):
            raise InvalidInputError(f"save_checkpoint needs a mapping (a dict of state), got {type(state).__name__}")
        if not self.is_main:
            return None
        interval = self.checkpoint_interval
        periodic = force or (interval is not None and epoch % interval == 0)
        best = self._checkpoints.get("best")
        improved = score is not None and (best is None or best.get("metric") is None or score < best["metric"])
        folder = self.checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".epoch_{epoch}.partial"
        written: Path | None = None
        try:
            suffix = _write_state(state, epoch, staged)
            if periodic:
                written = folder / f"epoch_{epoch}{suffix}"
                _link(staged, written)
                self._checkpoints.setdefault("periodic", [])
                if written.name not in self._checkpoints["periodic"]:
                    self._checkpoints["periodic"].append(written.name)
            if improved:
                _link(staged, folder / f"best{suffix}")
                self._checkpoints["best"] = {"file": f"best{suffix}", "epoch": epoch, "metric": score}
            _link(staged, folder / f"latest{suffix}")
            self._checkpoints["latest"] = {"file": f"latest{suffix}", "epoch": epoch, "metric": score}
        finally:
            staged.unlink(missing_ok=True)
        self._checkpoints["checkpoint_interval"] = interval
        write_json(folder / CHECKPOINT_MANIFEST, self._checkpoints)
        self.write_summary()
        return written

    # -- resuming ---------------------------------------------------------------------------------

    def _resume(self) -> None:
        """A script started again in the same run directory continues its curves and its best."""
        log = self.metrics_dir / METRICS_LOG
        if log.is_file():
            for line in log.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    record = json.loads(line)
                    for name, value in record.items():
                        if name not in ("step", "time"):
                            self._curves.setdefault(name, []).append((int(record["step"]), value))
        manifest = self.checkpoint_dir / CHECKPOINT_MANIFEST
        if manifest.is_file():
            with contextlib.suppress(ValueError):
                loaded = json.loads(manifest.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self._checkpoints = loaded


def higher_is_better(name: str) -> bool:
    """Whether a metric is best at its highest (accuracy, f1, ...) rather than its lowest (loss)."""
    words = name.lower().replace("-", "_").split("_")
    return any(word in HIGHER_IS_BETTER for word in words)


def current_run() -> Run:
    """The run this process trains for, from ``MODELYARD_RUN_DIR`` and ``MODELYARD_JOB_FILE``.

    The same `Run` is returned on every call within a process. Outside a training job (the
    variables not set) it raises InvalidInputError saying how to start one."""
    global _current
    run_dir_text = os.environ.get(ENV_RUN_DIR)
    if not run_dir_text:
        raise InvalidInputError(
            f"not inside a modelyard training run: {ENV_RUN_DIR} is not set; start the script through "
            "'modelyard train ... -- python script.py', which sets it and "
            f"{ENV_JOB_FILE}",
            field=ENV_RUN_DIR,
        )
    run_dir = Path(run_dir_text)
    job_file = os.environ.get(ENV_JOB_FILE) or ""
    rank, world_size = _rank("RANK", 0), _rank("WORLD_SIZE", 1)
    key = (str(run_dir), job_file, rank, world_size)
    if _current is not None and _current[0] == key:
        return _current[1]
    if not run_dir.is_dir():
        raise InvalidInputError(f"the run directory given in {ENV_RUN_DIR} does not exist", path=run_dir)
    run = Run(run_dir, read_job_file(job_file), rank, world_size)
    _current = (key, run)
    return run


_current: tuple[tuple[str, str, int, int], Run] | None = None


def read_job_file(job_file: str) -> dict[str, Any]:
    """The job definition the runner wrote (job.json), as a dict."""
    if not job_file:
        raise InvalidInputError(
            f"{ENV_JOB_FILE} is not set: the training run has no job definition", field=ENV_JOB_FILE
        )
    path = Path(job_file)
    try:
        if path.stat().st_size > MAX_JOB_FILE_BYTES:
            raise InvalidInputError(f"larger than {MAX_JOB_FILE_BYTES} bytes; not a job definition", path=path)
        job = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"the job file given in {ENV_JOB_FILE} does not exist", path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"not a JSON job definition ({exc})", path=path) from None
    if not isinstance(job, dict):
        raise InvalidInputError(f"a job definition is a JSON object, not {type(job).__name__}", path=path)
    return job


def _rank(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidInputError(f"{name}={text!r} is not a whole number", field=name) from None
    if value < 0 or (name == "WORLD_SIZE" and value < 1):
        raise InvalidInputError(f"{name}={text!r} is out of range", field=name)
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON whole or not at all, readable by all like the run's other files (not mkstemp's 0600)."""
    write_text_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    path.chmod(0o644)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a whole number >= 0, got {value!r}", field=name)


def _metric_value(name: str, value: object) -> float | None:
    """A float, or None for NaN and infinities. Anything float() takes counts (a 0-d tensor too)."""
    if isinstance(value, bool | str | bytes):
        raise InvalidInputError(f"metric {name} must be a number, got {value!r}", field=name)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInputError(f"metric {name} must be a number, got {value!r}", field=name) from None
    return number if math.isfinite(number) else None


def _write_state(state: Mapping[str, Any], epoch: int, target: Path) -> str:
    """Write `state` to `target`; the suffix the checkpoint's names take."""
    import numpy as np

    if state and all(isinstance(value, np.ndarray) for value in state.values()):
        from safetensors.numpy import save_file

        save_file(dict(state), str(target), metadata={"epoch": str(epoch)})
        return ".safetensors"
    try:
        import torch
    except ImportError:
        raise InvalidInputError(
            "saving a checkpoint that is not a mapping of numpy arrays needs torch; install the torch extra "
            "(pip install 'modelyard[torch]')"
        ) from None
    saved = dict(state)
    saved.setdefault("epoch", epoch)  # inspection reads the epoch from the checkpoint
    torch.save(saved, target)
    return ".pt"


def _link(source: Path, target: Path) -> None:
    """`target` becomes a name of `source`'s file (a copy where hard links fail), atomically."""
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        import shutil

        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
