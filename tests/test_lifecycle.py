"""Seed 003's lifecycle end to end, as a user drives it: raw -> validated -> production.

Two paths cover it. With torch installed, a real tiny classifier is trained for a few epochs and
its checkpoints (weights, optimizer state, metrics) go through `ArtifactRepository`: register,
a policy that fails, the fix, validation, promotion to validated and twice to production, the
`artifacts/` tree against seed 003's, the model cards, the audit log, the lineage chain, prune and
gc. Without torch, safetensors checkpoints go through the same steps on SQLite and PostgreSQL, and
the real CLI in a subprocess covers everything else: refusals, bad policies, a hanging check, a
forced promotion and its two approvers, references and aliases, demotion, kill -9 in the middle of
a promotion, and attempts to change a promoted file through the layout directory (root only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, backdate, write_safetensors
from modelyard.digest import training_config_hash
from modelyard.domain import VersionRecord
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.lifecycle.policy import load_policy
from modelyard.lifecycle.promote import GateFailedError
from modelyard.lifecycle.report import ValidationReport
from modelyard.lifecycle.repository import ArtifactRepository
from modelyard.lifecycle.weights import torch_available
from modelyard.loaders import parse_yaml
from modelyard.registry import Registry

NAME = "tiny-mlp-classify-v1"
SESSION = "tiny_20251124"
SETPRIV_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
LAYOUT_MARKER = ".modelyard-version"

# What seed 003 shows in each stage's directory; the layout adds its manifest and marker.
SEED_RAW = {"checkpoints/manifest.json", "checkpoints/latest.pt", "checkpoints/best.pt", "config.yaml", "training.log"}
SEED_VALIDATED = {"model.pt", "config.yaml", "validation/test_results.json", "metadata.json", "README.md"}
SEED_PRODUCTION = {
    "model.pt",
    "config.yaml",
    "performance/benchmarks.json",
    "performance/resource_usage.json",
    "metadata.json",
    "CHANGELOG.md",
    "README.md",
}
LAYOUT_FILES = {"artifact_manifest.json", LAYOUT_MARKER}


# -- helpers --------------------------------------------------------------------------------


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "MODELYARD_HOME": str(home)}
    env.pop("MODELYARD_DB_URL", None)
    env.pop("MODELYARD_STORE_URL", None)
    env.update(extra or {})
    return env


def _as_user(name: str) -> dict[str, str]:
    """The OS user modelyard records (getpass reads LOGNAME first, then USER)."""
    return {"LOGNAME": name, "USER": name}


def _popen(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelyard", *args],
        env=_env(home, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> CliResult:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish within {timeout} s:\n{stderr}") from None
    return CliResult(proc.returncode, stdout, stderr)


def _cli(home: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    return _finish(_popen(home, *args, env=env))


def _cli_all(home: Path, commands: list[tuple[str, ...]], env: dict[str, str] | None = None) -> list[CliResult]:
    """Independent commands side by side, each a separate real process."""
    procs = [_popen(home, *args, env=env) for args in commands]
    return [_finish(proc) for proc in procs]


def _ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def _one_line_error(result: CliResult, exit_code: int, *needles: str) -> str:
    assert result.returncode == exit_code, f"exit {result.returncode}, wanted {exit_code}:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} is not in {lines[0]!r}"
    return lines[0]


def _listed(home: Path) -> dict[str, dict[str, Any]]:
    """`modelyard list --all-versions --json`, by ref."""
    result = _ok(_cli(home, "list", "--all-versions", "--json"))
    return {row["ref"]: row for row in result.json()}


def _refs(registry: Registry) -> list[str]:
    return sorted(row.ref for row in registry.list(all_versions=True))


def _tree(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _front_matter(readme: Path) -> dict[str, Any]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:80]
    yaml_text, _, _ = text[4:].partition("\n---\n")
    value = parse_yaml(yaml_text + "\n", readme)
    assert isinstance(value, dict)
    return value


def _model_index_metrics(front: dict[str, Any]) -> dict[str, float]:
    results = front["model-index"][0]["results"]
    return {m["name"]: m["value"] for result in results for m in result["metrics"]}


def _write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _events(registry: Registry, name: str = NAME) -> list[dict[str, Any]]:
    """The artifact's audit events, oldest first."""
    return list(reversed(registry.audit(name, limit=1000)))


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _, stderr = proc.communicate()
            raise AssertionError(f"the command ended (exit {proc.returncode}) before {what}:\n{stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    """The process no longer runs (it may linger as a zombie where PID 1 does not reap)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" in state.split()[1]


def _kill_group(pid_file: Path) -> None:
    """Kill a policy command's process group (it outlives a killed modelyard)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)


def _refusal(action: Callable[[], object], kind: type[Exception]) -> Exception | None:
    """The error `action` raised (None if it did not refuse)."""
    try:
        action()
    except kind as exc:
        return exc
    return None


# -- torch-free training sessions ------------------------------------------------------------

ST_CONFIG = {"model": {"hidden": 16}, "optimizer": "adam", "learning_rate": 0.001, "batch_size": 64, "epochs": 2}


def _safetensors_session(training: Path, session_id: str, seed: int) -> Path:
    """A training output with safetensors checkpoints; best and latest are epoch 2's bytes."""
    checkpoints = training / session_id / "checkpoints"
    write_safetensors(checkpoints / "epoch_1.safetensors", seed)
    write_safetensors(checkpoints / "epoch_2.safetensors", seed + 1)
    shutil.copyfile(checkpoints / "epoch_2.safetensors", checkpoints / "best.safetensors")
    shutil.copyfile(checkpoints / "epoch_2.safetensors", checkpoints / "latest.safetensors")
    (checkpoints / "manifest.json").write_text(json.dumps({"best": "best.safetensors", "epochs": [1, 2]}))
    (training / session_id / "training.log").write_text("epoch 1 loss 0.61\nepoch 2 loss 0.42\n")
    backdate(training / session_id)
    return checkpoints


def _register_session(
    repo: ArtifactRepository, training: Path, session_id: str, seed: int, **fields: Any
) -> VersionRecord:
    return repo.register_training_session(
        session_id=session_id,
        checkpoint_dir=_safetensors_session(training, session_id, seed),
        config=ST_CONFIG,
        metrics={"best_val_loss": 0.38, "coverage": 0.97},
        artifact_name=NAME,
        base_model="tiny-mlp",
        task="classification",
        **fields,
    )


@dataclass
class Promoted:
    raw: VersionRecord
    validated: list[VersionRecord] = field(default_factory=list)
    production: list[VersionRecord] = field(default_factory=list)


def _to_production(registry: Registry, repo: ArtifactRepository, training: Path, *, second: bool) -> Promoted:
    """A session promoted to 1.0.0 (epoch_2, approved by alice) and, with `second`, to 1.1.0
    (epoch_1, approved by bob)."""
    raw = _register_session(repo, training, SESSION, 0)
    promoted = Promoted(raw)
    plan = [("epoch_2", "alice", "1.0.0"), ("epoch_1", "bob", "1.1.0")][: 2 if second else 1]
    for checkpoint, approver, semver in plan:
        validated_id = repo.promote_to_validated(session_id=SESSION, checkpoint_name=checkpoint)
        repo.approve(validated_id, approved_by=approver, note=f"{checkpoint} reviewed")
        production_id = repo.promote_to_production(validated_id=validated_id, version=semver)
        promoted.validated.append(repo.validated(validated_id))
        promoted.production.append(registry.show(f"{NAME}@{semver}"))
        assert promoted.production[-1].label == production_id
    return promoted


@pytest.fixture
def repo(registry: Registry, tmp_path: Path) -> ArtifactRepository:
    return ArtifactRepository(tmp_path / "artifacts", registry=registry)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that `nobody` can traverse (pytest's tmp_path parents are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="modelyard-lifecycle-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder, _, _ in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o755)
        shutil.rmtree(path, ignore_errors=True)


# == 1. A real PyTorch training run, end to end ===================================================

TORCH_CONFIG = {
    "model": {"layers": [4, 16, 2], "activation": "relu"},
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "batch_size": 64,
    "epochs": 4,
    "seed": 0,
}
HOLDOUT_THRESHOLD = 0.85


@dataclass
class TrainingRun:
    checkpoint_dir: Path
    snapshots: dict[int, dict[str, Any]]  # epoch -> the model's state dict then (cloned tensors)
    val_loss: dict[int, float]
    val_accuracy: dict[int, float]
    holdout: tuple[Any, Any]


def _tiny_classifier() -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def _train(directory: Path, *, seed: int, epochs: int) -> TrainingRun:
    """Train a tiny classifier with torch and write what a training loop writes: one checkpoint
    per epoch (weights, optimizer state, epoch, metrics), best.pt, latest.pt, a checkpoint
    manifest, training.log and a README."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    def data(count: int) -> tuple[Any, Any]:
        x = torch.randn(count, 4, generator=generator)
        return x, ((x[:, 0] + 0.5 * x[:, 1]) > 0).long()

    (x, y), (x_val, y_val), holdout = data(256), data(128), data(128)
    model = _tiny_classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    checkpoints = directory / "checkpoints"
    checkpoints.mkdir(parents=True)
    snapshots: dict[int, dict[str, Any]] = {}
    val_loss: dict[int, float] = {}
    val_accuracy: dict[int, float] = {}
    log = []
    for epoch in range(1, epochs + 1):
        for start in range(0, len(x), 64):
            loss = torch.nn.functional.cross_entropy(model(x[start : start + 64]), y[start : start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            logits = model(x_val)
            val_loss[epoch] = float(torch.nn.functional.cross_entropy(logits, y_val))
            val_accuracy[epoch] = float((logits.argmax(1) == y_val).float().mean())
        snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save(
            {
                "epoch": epoch,
                "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(),
                "metrics": {"val_loss": val_loss[epoch], "val_accuracy": val_accuracy[epoch]},
            },
            checkpoints / f"epoch_{epoch}.pt",
        )
        log.append(f"epoch {epoch} val_loss {val_loss[epoch]:.4f} val_accuracy {val_accuracy[epoch]:.4f}")
    best = min(val_loss, key=val_loss.__getitem__)
    shutil.copyfile(checkpoints / f"epoch_{best}.pt", checkpoints / "best.pt")
    shutil.copyfile(checkpoints / f"epoch_{epochs}.pt", checkpoints / "latest.pt")
    (checkpoints / "manifest.json").write_text(json.dumps({"best": f"epoch_{best}", "latest": f"epoch_{epochs}"}))
    (directory / "training.log").write_text("\n".join(log) + "\n")
    (directory / "README.md").write_text(f"# {directory.name}\n\nA tiny classifier, {epochs} epochs.\n")
    backdate(directory)
    return TrainingRun(checkpoints, snapshots, val_loss, val_accuracy, holdout)


def _accuracy(state_dict: dict[str, Any], data: tuple[Any, Any]) -> float:
    import torch

    model = _tiny_classifier()
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return float((model(data[0]).argmax(1) == data[1]).float().mean())


@dataclass
class TorchJourney:
    home: Path
    root: Path  # the layout: artifacts/
    registry: Registry
    repo: ArtifactRepository
    run: TrainingRun
    policy: Path
    threshold: float
    exploratory: VersionRecord  # an earlier session, never promoted
    raw: VersionRecord
    failing: ValidationReport
    gate_refusal: Exception | None
    refs_after_refusal: list[str]
    passing: ValidationReport
    holdout_accuracy: dict[int, float]
    validated_ids: list[str]
    unapproved: Exception | None
    refs_after_unapproved: list[str]
    production_ids: list[str]
    benchmarks: dict[str, Any]
    later: VersionRecord  # a newer session, registered last
    validated: list[VersionRecord] = field(default_factory=list)
    production: list[VersionRecord] = field(default_factory=list)


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchJourney]:
    """One tiny training run through every step of seed 003, by its Python API."""
    torch = pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("torch-journey")
    home = base / "home"
    exploratory_run = _train(base / "training" / "tiny_20251123", seed=7, epochs=1)
    run = _train(base / "training" / SESSION, seed=0, epochs=4)
    early, good = run.val_accuracy[1], min(run.val_accuracy[3], run.val_accuracy[4])
    assert early < good, f"the tiny model did not learn: {run.val_accuracy}"
    threshold = round((early + good) / 2, 4)
    policy = _write_policy(
        base / "policy.yaml",
        f"""\
checks:
  - files_present
  - readable
  - pickles
  - manifest_complete: {{fields: [base_model, task, training_config_hash, precision]}}
  - metric: "val_accuracy >= {threshold}"          # the checkpoint's own metrics
  - metric: "holdout_accuracy >= {HOLDOUT_THRESHOLD}"   # our holdout evaluation, submitted
""",
    )
    registry = Registry.open(home)
    repo = ArtifactRepository(base / "artifacts", registry=registry)
    fields = {"artifact_name": NAME, "base_model": "tiny-mlp", "task": "classification", "license": "apache-2.0"}
    metrics = {"best_val_loss": min(run.val_loss.values()), "coverage": 0.99}
    exploratory = repo.register_training_session(
        session_id="tiny_20251123",
        checkpoint_dir=exploratory_run.checkpoint_dir,
        config={**TORCH_CONFIG, "epochs": 1, "seed": 7},
        metrics={"coverage": 0.9},
        **fields,
    )
    raw = repo.register_training_session(
        session_id=SESSION, checkpoint_dir=run.checkpoint_dir, config=TORCH_CONFIG, metrics=metrics, **fields
    )
    # A first try: the first epoch's checkpoint, no holdout evaluation yet. Both gates fail.
    failing = repo.validate(SESSION, "epoch_1", policy=policy)
    gate_refusal = _refusal(
        lambda: repo.promote_to_validated(session_id=SESSION, checkpoint_name="epoch_1", policy=policy), GateFailedError
    )
    refs_after_refusal = _refs(registry)
    # The fix: a later checkpoint, and the holdout evaluation run and submitted.
    holdout = {epoch: _accuracy(run.snapshots[epoch], run.holdout) for epoch in (3, 4)}
    passing = repo.validate(SESSION, "epoch_3", {"holdout_accuracy": holdout[3]}, policy=policy)
    validated_ids = [
        repo.promote_to_validated(
            session_id=SESSION,
            checkpoint_name="epoch_3",
            validation_results={"holdout_accuracy": holdout[3]},
            policy=policy,
        )
    ]
    unapproved = _refusal(
        lambda: repo.promote_to_production(validated_id=validated_ids[0], version="1.0.0"), GateFailedError
    )
    refs_after_unapproved = _refs(registry)
    repo.approve(validated_ids[0], approved_by="alice", note="holdout accuracy reviewed")
    benchmarks = _benchmark(run.snapshots[3], torch)
    bench_file = base / "benchmarks.json"
    bench_file.write_text(json.dumps(benchmarks))
    production_ids = [
        repo.promote_to_production(
            validated_id=validated_ids[0],
            version="1.0.0",
            deployment_config={"replicas": 2, "env": {"LOG_LEVEL": "info"}},
            benchmarks=bench_file,
        )
    ]
    # A second production version, from the last epoch's checkpoint, approved by bob.
    validated_ids.append(
        repo.promote_to_validated(
            session_id=SESSION,
            checkpoint_name="epoch_4",
            validation_results={"holdout_accuracy": holdout[4]},
            policy=policy,
        )
    )
    production_ids.append(repo.promote_to_production(validated_id=validated_ids[1], version="1.1.0", approved_by="bob"))
    later_run = _train(base / "training" / "tiny_20251125", seed=11, epochs=1)
    later = repo.register_training_session(
        session_id="tiny_20251125", checkpoint_dir=later_run.checkpoint_dir, config=TORCH_CONFIG, **fields
    )
    journey = TorchJourney(
        home=home,
        root=base / "artifacts",
        registry=registry,
        repo=repo,
        run=run,
        policy=policy,
        threshold=threshold,
        exploratory=exploratory,
        raw=raw,
        failing=failing,
        gate_refusal=gate_refusal,
        refs_after_refusal=refs_after_refusal,
        passing=passing,
        holdout_accuracy=holdout,
        validated_ids=validated_ids,
        unapproved=unapproved,
        refs_after_unapproved=refs_after_unapproved,
        production_ids=production_ids,
        benchmarks=benchmarks,
        later=later,
        validated=[repo.validated(vid) for vid in validated_ids],
        production=[registry.show(f"{NAME}@{semver}") for semver in ("1.0.0", "1.1.0")],
    )
    try:
        yield journey
    finally:
        registry.close()


def _benchmark(state_dict: dict[str, Any], torch: Any) -> dict[str, Any]:
    """A real (tiny) latency benchmark, as a user would hand it in with --benchmarks."""
    model = _tiny_classifier()
    model.load_state_dict(state_dict)
    batch = torch.randn(32, 4)
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(50):
            model(batch)
    per_batch = (time.perf_counter() - started) / 50
    return {"batch_size": 32, "latency_ms_per_batch": round(per_batch * 1000, 4), "device": "cpu"}


def test_torch_a_failing_policy_refuses_the_promotion_until_the_fix(journey: TorchJourney) -> None:
    assert (journey.exploratory.ref, journey.raw.ref) == (f"{NAME}@1", f"{NAME}@2")
    assert (journey.raw.stage, journey.raw.label) == ("raw", SESSION)
    assert journey.raw.manifest.training_config_hash == training_config_hash(TORCH_CONFIG)

    failing = journey.failing
    assert not failing.passed and failing.checkpoint == "epoch_1"
    failed = {check.name: check.detail for check in failing.failed_checks}
    assert set(failed) == {f"val_accuracy >= {journey.threshold:g}", f"holdout_accuracy >= {HOLDOUT_THRESHOLD:g}"}
    assert "from checkpoint checkpoints/epoch_1.pt" in failed[f"val_accuracy >= {journey.threshold:g}"]
    assert "metric 'holdout_accuracy' not found" in failed[f"holdout_accuracy >= {HOLDOUT_THRESHOLD:g}"]

    refusal = journey.gate_refusal
    assert isinstance(refusal, GateFailedError), "promoting a checkpoint that failed its gates was not refused"
    assert f"{journey.raw.ref} did not pass its gates" in str(refusal) and "val_accuracy" in str(refusal)
    assert journey.refs_after_refusal == [f"{NAME}@1", f"{NAME}@2"]  # nothing half-promoted

    passing = journey.passing
    assert passing.passed and passing.checkpoint == "epoch_3"
    assert passing.metrics["val_accuracy"].source == "checkpoint checkpoints/epoch_3.pt"
    assert passing.metrics["val_accuracy"].value == journey.run.val_accuracy[3]
    assert passing.metrics["holdout_accuracy"].source == "submitted"
    assert passing.policy_sha256 == load_policy(journey.policy).sha256
    # Every run of the gates is on record: the failing one, the refused promotion's, the passing ones.
    stored = journey.registry.catalog.lifecycle.reports(journey.raw)
    assert [(r.checkpoint, r.passed) for r in stored] == [
        ("epoch_1", False),
        ("epoch_1", False),
        ("epoch_3", True),
        ("epoch_3", True),
        ("epoch_4", True),
    ]
    assert journey.validated_ids == [f"{SESSION}_epoch_3_validated", f"{SESSION}_epoch_4_validated"]
    assert journey.production_ids == [f"{SESSION}_prod_v1.0.0", f"{SESSION}_prod_v1.1.0"]
    assert [v.stage for v in journey.validated] == ["validated", "validated"]
    assert [(v.stage, v.semver) for v in journey.production] == [("production", "1.0.0"), ("production", "1.1.0")]


def test_torch_production_without_an_approval_is_refused_saying_how_to_approve(journey: TorchJourney) -> None:
    refusal = journey.unapproved
    assert isinstance(refusal, GateFailedError), "production promotion without an approval was not refused"
    message = str(refusal)
    assert "--approved-by" in message and "modelyard approve" in message
    assert journey.validated[0].ref in message
    # exploratory session, raw, validated: no production version was made
    assert journey.refs_after_unapproved == [journey.exploratory.ref, journey.raw.ref, journey.validated[0].ref]


def test_torch_a_production_version_number_is_never_reused(journey: TorchJourney) -> None:
    before = _refs(journey.registry)
    for semver in ("1.0.0", "1.1.0"):
        with pytest.raises(ConflictError, match=rf"{NAME} {semver} already exists .*never reused"):
            journey.repo.promote_to_production(validated_id=journey.validated_ids[1], version=semver)
    assert _refs(journey.registry) == before


def test_torch_the_layout_tree_is_seed_003s(journey: TorchJourney) -> None:
    root = journey.root
    assert sorted(p.name for p in root.iterdir()) == ["production", "raw", "validated"]
    assert sorted(p.name for p in (root / "raw").iterdir()) == ["tiny_20251123", SESSION, "tiny_20251125"]
    assert sorted(p.name for p in (root / "validated").iterdir()) == journey.validated_ids
    assert sorted(p.name for p in (root / "production").iterdir()) == journey.production_ids

    raw = _tree(root / "raw" / SESSION)
    epochs = {f"checkpoints/epoch_{n}.pt" for n in range(1, 5)}
    assert raw >= SEED_RAW
    assert raw == SEED_RAW | epochs | {"metrics/training_metrics.json", "README.md"} | LAYOUT_FILES
    for name in ("best.pt", "latest.pt", "manifest.json", "epoch_2.pt"):
        assert (root / "raw" / SESSION / "checkpoints" / name).read_bytes() == (
            journey.run.checkpoint_dir / name
        ).read_bytes()

    for validated_id in journey.validated_ids:
        tree = _tree(root / "validated" / validated_id)
        assert tree >= SEED_VALIDATED
        assert tree == SEED_VALIDATED | {"model.safetensors", "validation/metrics.json"} | LAYOUT_FILES

    for production_id in journey.production_ids:
        directory = root / "production" / production_id
        tree = _tree(directory)
        assert tree >= SEED_PRODUCTION
        assert {"deployment/docker/Dockerfile", "deployment/kubernetes/deployment.yaml"} <= tree
        top = {path.split("/")[0] for path in tree}
        assert top == {p.split("/")[0] for p in SEED_PRODUCTION} | {"model.safetensors", "deployment"} | LAYOUT_FILES

    # Each directory says which version it shows, and holds that version's bytes.
    shown = {
        (root / "validated" / journey.validated_ids[0] / LAYOUT_MARKER).read_text().strip(): journey.validated[0],
        (root / "production" / journey.production_ids[1] / LAYOUT_MARKER).read_text().strip(): journey.production[1],
    }
    assert set(shown) == {journey.validated[0].ref, journey.production[1].ref}
    directory = root / "production" / journey.production_ids[1]
    for entry in journey.production[1].manifest.files:
        assert _sha256(directory / entry.path) == entry.sha256, entry.path


def test_torch_validated_weights_are_the_checkpoints_state_dict_only(journey: TorchJourney) -> None:
    import torch
    from safetensors.torch import load_file

    for validated_id, epoch in zip(journey.validated_ids, (3, 4), strict=True):
        directory = journey.root / "validated" / validated_id
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        expected = journey.run.snapshots[epoch]
        assert set(state) == set(expected) == set(_tiny_classifier().state_dict())
        for key, tensor in expected.items():
            assert torch.equal(state[key], tensor), f"{validated_id}: {key} differs from epoch {epoch}'s weights"
        assert not {"optimizer_state_dict", "epoch", "metrics"} & set(state)
        safetensors = load_file(str(directory / "model.safetensors"))
        assert set(safetensors) == set(expected)
        assert all(torch.equal(safetensors[key], tensor) for key, tensor in expected.items())
        # The clean weights are the model: they reproduce the holdout accuracy that was submitted.
        assert _accuracy(state, journey.run.holdout) == journey.holdout_accuracy[epoch]
        metadata = json.loads((directory / "metadata.json").read_text())
        assert metadata["weights"]["files"] == ["model.pt", "model.safetensors"]
        assert set(metadata["weights"]["stripped_keys"]) == {"epoch", "optimizer_state_dict", "metrics"}
        assert metadata["weights"]["parameter_count"] == sum(t.numel() for t in expected.values())
    # Production ships the validated weights unchanged.
    for validated_id, production_id in zip(journey.validated_ids, journey.production_ids, strict=True):
        for name in ("model.pt", "model.safetensors"):
            assert (journey.root / "production" / production_id / name).read_bytes() == (
                journey.root / "validated" / validated_id / name
            ).read_bytes()


def test_torch_the_validated_tree_records_config_report_and_metadata(journey: TorchJourney) -> None:
    directory = journey.root / "validated" / journey.validated_ids[0]
    assert parse_yaml((directory / "config.yaml").read_text()) == TORCH_CONFIG
    report = ValidationReport.from_json((directory / "validation" / "test_results.json").read_text())
    assert report.passed and report.checkpoint == "epoch_3" and report.ref == journey.raw.ref
    assert report.policy_sha256 == load_policy(journey.policy).sha256
    assert report.submitted == {"holdout_accuracy": journey.holdout_accuracy[3]}
    assert {check.name for check in report.checks} >= {
        "files_present",
        "pickles",
        f"val_accuracy >= {journey.threshold:g}",
    }
    metrics = json.loads((directory / "validation" / "metrics.json").read_text())
    assert metrics == {"val_accuracy": journey.run.val_accuracy[3], "holdout_accuracy": journey.holdout_accuracy[3]}
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["stage"] == "validated" and metadata["validated_id"] == journey.validated_ids[0]
    assert metadata["session_id"] == SESSION and metadata["checkpoint"] == "epoch_3"
    assert metadata["derived_from"] == journey.raw.ref
    assert metadata["training_config_hash"] == training_config_hash(TORCH_CONFIG)
    assert metadata["policy_sha256"] == report.policy_sha256
    assert metadata["forced"] is False and metadata["force_reason"] is None
    manifest = journey.validated[0].manifest
    assert (manifest.stage, manifest.derived_from, manifest.checkpoint) == ("validated", journey.raw.ref, "epoch_3")
    assert manifest.license == "apache-2.0" and manifest.base_model == "tiny-mlp"  # inherited from raw


def test_torch_model_cards_have_front_matter_that_parses(journey: TorchJourney) -> None:
    config_hash = training_config_hash(TORCH_CONFIG)
    validated = journey.root / "validated" / journey.validated_ids[0] / "README.md"
    front = _front_matter(validated)
    assert front["base_model"] == "tiny-mlp" and front["license"] == "apache-2.0"
    assert set(front["tags"]) >= {"modelyard", "validated"}
    metrics = _model_index_metrics(front)
    assert metrics["val_accuracy"] == journey.run.val_accuracy[3]
    assert metrics["holdout_accuracy"] == journey.holdout_accuracy[3]
    body = validated.read_text()
    assert f"`{SESSION}`" in body and config_hash in body and journey.raw.ref in body
    assert "| Check | Result | Detail |" in body and f"val_accuracy >= {journey.threshold:g} | pass" in body

    production = journey.root / "production" / journey.production_ids[0] / "README.md"
    front = _front_matter(production)
    assert front["base_model"] == "tiny-mlp" and set(front["tags"]) >= {"modelyard", "production"}
    assert _model_index_metrics(front)["holdout_accuracy"] == journey.holdout_accuracy[3]
    body = production.read_text()
    assert f"{NAME}@1.0.0" in body and config_hash in body
    chain = f"`{journey.raw.ref}` → `{journey.validated[0].ref}` → `{NAME}@1.0.0`"
    assert chain in body


def test_torch_a_validated_model_card_keeps_naming_its_own_version(journey: TorchJourney) -> None:
    """A version is immutable, so its card must not point at a reference that moves: once a second
    validated version exists, the first one's card must still name (and export) the first one."""
    card = (journey.root / "validated" / journey.validated_ids[0] / "README.md").read_text()
    title = next(line for line in card.splitlines() if ", stage: **validated**" in line)
    own_ref = title.split("`")[1]
    exported = next(line for line in card.splitlines() if line.startswith("modelyard export "))
    assert journey.registry.show(own_ref).ref == journey.validated[0].ref, (
        f"the card of {journey.validated[0].ref} names {own_ref}, which is now {journey.registry.show(own_ref).ref}"
    )
    assert journey.registry.show(exported.split()[2]).ref == journey.validated[0].ref, exported


def test_torch_the_production_tree_holds_benchmarks_resources_deployment_and_changelog(
    journey: TorchJourney,
) -> None:
    first = journey.root / "production" / journey.production_ids[0]
    assert json.loads((first / "performance" / "benchmarks.json").read_text()) == journey.benchmarks
    usage = json.loads((first / "performance" / "resource_usage.json").read_text())
    size = (first / "model.safetensors").stat().st_size
    assert usage["files"] == {"model.safetensors": size} and usage["total_bytes"] == size
    assert usage["peak_rss_bytes"] >= usage["baseline_rss_bytes"] > 0 and usage["load_seconds"] >= 0

    dockerfile = (first / "deployment" / "docker" / "Dockerfile").read_text()
    assert 'COPY ["model.safetensors", "/model/model.safetensors"]' in dockerfile
    documents = [
        parse_yaml(doc) for doc in (first / "deployment/kubernetes/deployment.yaml").read_text().split("\n---\n")
    ]
    deployment = next(doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LOG_LEVEL", "value": "info"} in container.get("env", [])
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.0"

    metadata = json.loads((first / "metadata.json").read_text())
    assert metadata["stage"] == "production" and metadata["semantic_version"] == "1.0.0"
    assert metadata["production_id"] == journey.production_ids[0] and metadata["approved_by"] == ["alice"]
    assert metadata["derived_from"] == journey.validated[0].ref
    assert metadata["lineage"] == [journey.validated[0].ref, journey.raw.ref]
    assert parse_yaml((first / "config.yaml").read_text()) == TORCH_CONFIG

    # The second production version's changelog holds both entries, newest first.
    changelog = (journey.root / "production" / journey.production_ids[1] / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n")
    newer, older = changelog.index("## 1.1.0 ("), changelog.index("## 1.0.0 (")
    assert newer < older
    assert f"From {journey.validated[1].ref} (checkpoint epoch_4" in changelog[newer:older]
    assert "Approved by bob" in changelog[newer:older]
    assert f"From {journey.validated[0].ref} (checkpoint epoch_3" in changelog[older:]
    assert "Approved by alice" in changelog[older:]
    assert changelog.count("## ") == 2
    assert (first / "CHANGELOG.md").read_text().count("## ") == 1


def test_torch_stage_semver_and_alias_references_resolve(journey: TorchJourney) -> None:
    registry = journey.registry
    assert registry.show(f"{NAME}@validated").ref == journey.validated[1].ref
    assert registry.show(f"{NAME}@production").ref == journey.production[1].ref
    assert registry.show(f"{NAME}@1.0.0").ref == journey.production[0].ref
    assert registry.show(f"{NAME}@raw").ref == journey.later.ref
    assert registry.show(f"{NAME}@latest").ref == journey.later.ref
    with pytest.raises(NotFoundError, match="no production version 2.0.0; its production versions are 1.0.0, 1.1.0"):
        registry.show(f"{NAME}@2.0.0")


def test_torch_lineage_prints_production_validated_raw_and_the_training_session(journey: TorchJourney) -> None:
    text, as_json = _cli_all(journey.home, [("lineage", f"{NAME}@production"), ("lineage", f"{NAME}@1.0.0", "--json")])
    lines = _ok(text).stdout.splitlines()
    assert len(lines) == 3, text.stdout
    production, validated, raw = journey.production[1], journey.validated[1], journey.raw
    assert lines[0].startswith(f"{production.ref} [production] {journey.production_ids[1]}: production 1.1.0")
    assert lines[1].startswith(f"  <- {validated.ref} [validated] {journey.validated_ids[1]}")
    assert "validated from checkpoint epoch_4" in lines[1] and "FORCED" not in lines[1]
    assert lines[2].startswith(f"    <- {raw.ref} [raw] {SESSION}")
    assert f"training session {SESSION}" in lines[2]
    assert f"training_config_hash {training_config_hash(TORCH_CONFIG)}" in lines[2]
    steps = _ok(as_json).json()
    assert [(s["ref"], s["stage"], s["label"]) for s in steps] == [
        (journey.production[0].ref, "production", journey.production_ids[0]),
        (journey.validated[0].ref, "validated", journey.validated_ids[0]),
        (raw.ref, "raw", SESSION),
    ]


def test_torch_the_audit_log_lists_every_step_with_who(journey: TorchJourney) -> None:
    table, as_json = _cli_all(
        journey.home, [("audit", NAME, "--limit", "200"), ("audit", NAME, "--json", "--limit", "200")]
    )
    events = list(reversed(_ok(as_json).json()))
    steps = [(e["action"], e["actor"], e["version_number"]) for e in events]
    me = journey.raw.registered_by
    raw, v1, v2 = journey.raw.number, journey.validated[0].number, journey.validated[1].number
    p1, p2 = journey.production[0].number, journey.production[1].number
    assert steps == [
        ("register", me, journey.exploratory.number),
        ("register", me, raw),
        ("validate", me, raw),  # the failing validation
        ("validate", me, raw),  # the refused promotion's gates
        ("validate", me, raw),
        ("validate", me, raw),
        ("promote:validated", me, v1),
        ("approve", "alice", v1),
        ("promote:production", me, p1),
        ("validate", me, raw),
        ("promote:validated", me, v2),
        ("approve", "bob", v2),
        ("promote:production", me, p2),
        ("register", me, journey.later.number),
    ]
    by_action = {e["action"]: e for e in events}
    assert by_action["approve"]["details"]["os_user"] == me
    first_production = next(e for e in events if e["action"] == "promote:production")
    assert first_production["details"]["derived_from"] == journey.validated[0].ref
    assert first_production["details"]["semantic_version"] == "1.0.0"
    failed = [e for e in events if e["action"] == "validate" and not e["details"]["passed"]]
    assert [e["details"]["checkpoint"] for e in failed] == ["epoch_1", "epoch_1"]

    rows = [line.split() for line in _ok(table).stdout.splitlines()[1:]]
    listed = [(row[2], row[3], row[4]) for row in rows]  # WHO, WHAT, VERSION
    assert ("alice", "approve", journey.validated[0].ref) in listed
    assert (me, "promote:validated", journey.validated[1].ref) in listed
    assert (me, "promote:production", journey.production[1].ref) in listed
    assert (me, "register", journey.raw.ref) in listed


def test_torch_the_audit_log_says_why_an_approval_was_given(journey: TorchJourney) -> None:
    """`approve --note` is the approver's why: the audit table's WHY column must show it."""
    table = _ok(_cli(journey.home, "audit", journey.validated[0].ref)).stdout
    approve = next(line for line in table.splitlines() if " approve " in line)
    assert "holdout accuracy reviewed" in approve, table


def test_torch_prune_keeps_promoted_sessions_and_gc_frees_the_rest(journey: TorchJourney) -> None:
    """Last in the journey: it removes the exploratory session."""
    home, registry = journey.home, journey.registry
    others = {f.sha256 for row in registry.list(all_versions=True) if row.ref != journey.exploratory.ref
              for f in registry.show(row.ref).manifest.files}  # fmt: skip
    only_exploratory = {f.sha256: f.size for f in journey.exploratory.manifest.files if f.sha256 not in others}
    assert only_exploratory, "the exploratory session shares every blob"
    before = _refs(registry)

    dry = _ok(_cli(home, "prune", NAME, "--keep-last", "1"))
    assert f"would remove {journey.exploratory.ref} (" in dry.stdout
    assert f"kept {journey.raw.ref}: a promoted version was derived from it" in dry.stdout
    assert f"kept {journey.later.ref}: one of the newest 1" in dry.stdout
    assert "dry run: add --yes" in dry.stdout
    assert _refs(registry) == before

    removed = _ok(_cli(home, "prune", NAME, "--keep-last", "1", "--yes", "--json")).json()
    assert removed["dry_run"] is False and removed["removed"] == [journey.exploratory.ref]
    assert {k["ref"]: k["why"] for k in removed["kept"]} == {
        journey.raw.ref: "a promoted version was derived from it",
        journey.later.ref: "one of the newest 1",
    }
    assert _refs(registry) == sorted(set(before) - {journey.exploratory.ref})
    with pytest.raises(NotFoundError):
        registry.show(journey.exploratory.ref)
    prune_event = registry.audit(NAME, limit=1)[0]
    assert (prune_event["action"], prune_event["version_number"]) == ("prune", journey.exploratory.number)
    assert prune_event["details"]["reason"] == "prune --keep-last 1"

    layout = journey.repo.sync()
    assert "raw/tiny_20251123" in layout.removed and not (journey.root / "raw" / "tiny_20251123").exists()

    collected = _ok(_cli(home, "gc", "--grace", "0s", "--json")).json()
    assert sorted(collected["removed"]) == sorted(only_exploratory)
    assert collected["bytes"] == sum(only_exploratory.values())
    objects = home / "store" / "objects" / "sha256"
    assert not any((objects / digest[:2] / digest).exists() for digest in only_exploratory)
    verified = _ok(_cli(home, "verify", "--json")).json()
    assert verified["ok"] is True and verified["versions"] == len(before) - 1


# == 2. Without torch: safetensors checkpoints, on SQLite and PostgreSQL ============================


def test_the_key_flow_on_safetensors_checkpoints_on_each_catalog(any_registry: Registry, tmp_path: Path) -> None:
    registry = any_registry
    repo = ArtifactRepository(tmp_path / "artifacts", registry=registry)
    training = tmp_path / "training"
    policy = _write_policy(
        tmp_path / "policy.json",
        json.dumps(
            {
                "checks": [
                    "files_present",
                    "readable",
                    "pickles",
                    {"manifest_complete": {"fields": ["base_model", "task", "license", "training_config_hash"]}},
                    {"metric": "coverage >= 0.95"},
                ]
            }
        ),
    )
    # Registered without a license: the policy fails, and promotion is refused.
    first = _register_session(repo, training, SESSION, 0)
    failing = repo.validate(SESSION, "epoch_2", policy=policy)
    assert [c.name for c in failing.failed_checks] == ["manifest_complete"]
    assert "license" in failing.failed_checks[0].detail
    with pytest.raises(GateFailedError, match="did not pass its gates: manifest_complete"):
        repo.promote_to_validated(session_id=SESSION, checkpoint_name="epoch_2", policy=policy)
    with pytest.raises(
        InvalidInputError, match="has no checkpoint 'epoch_7'; its checkpoints are: best, epoch_1, epoch_2, latest"
    ):
        repo.promote_to_validated(session_id=SESSION, checkpoint_name="epoch_7", policy=policy)
    assert _refs(registry) == [first.ref]
    # The fix: register the session again with its license.
    raw = _register_session(repo, training, SESSION, 0, license="mit")
    assert (raw.number, raw.label) == (2, SESSION)
    assert repo.validate(SESSION, "epoch_2", policy=policy).passed
    validated_id = repo.promote_to_validated(session_id=SESSION, checkpoint_name="epoch_2", policy=policy)
    assert validated_id == f"{SESSION}_epoch_2_validated"
    validated = repo.validated(validated_id)
    assert (validated.stage, validated.manifest.derived_from, validated.forced) == ("validated", raw.ref, False)
    directory = tmp_path / "artifacts" / "validated" / validated_id
    assert (directory / "model.safetensors").read_bytes() == (
        training / SESSION / "checkpoints" / "epoch_2.safetensors"
    ).read_bytes()
    expected = SEED_VALIDATED | {"model.safetensors", "validation/metrics.json"} | LAYOUT_FILES
    assert _tree(directory) == (expected if torch_available() else expected - {"model.pt"})
    assert _front_matter(directory / "README.md")["license"] == "mit"

    with pytest.raises(GateFailedError, match="--approved-by NAME"):
        repo.promote_to_production(validated_id=validated_id, version="1.0.0")
    repo.approve(validated_id, approved_by="alice", note="ok")
    assert repo.promote_to_production(validated_id=validated_id, version="1.0.0") == f"{SESSION}_prod_v1.0.0"
    second_id = repo.promote_to_validated(session_id=SESSION, checkpoint_name="epoch_1", policy=policy)
    with pytest.raises(ConflictError, match="never reused"):
        repo.promote_to_production(validated_id=second_id, version="1.0.0", approved_by="bob")
    assert repo.promote_to_production(validated_id=second_id, version="1.1.0", approved_by="bob")

    production = registry.show(f"{NAME}@1.1.0")
    assert registry.show(f"{NAME}@validated").label == second_id
    assert registry.show(f"{NAME}@production").ref == production.ref
    assert registry.show(f"{NAME}@1.0.0").label == f"{SESSION}_prod_v1.0.0"
    assert registry.set_alias(f"{NAME}@1.0.0", "champion", approved_by="alice", reason="first") is None
    assert registry.show(f"{NAME}@champion").semver == "1.0.0"
    moved_from = registry.set_alias(f"{NAME}@1.1.0", "champion", approved_by="bob", reason="better holdout")
    assert moved_from == f"{NAME}@{registry.show(f'{NAME}@1.0.0').number}"
    assert registry.show(f"{NAME}@champion").ref == production.ref
    for reserved in ("latest", "raw", "validated", "production"):
        with pytest.raises(InvalidInputError, match="is reserved"):
            registry.set_alias(f"{NAME}@1.0.0", reserved, approved_by="alice")
    registry.set_status(f"{NAME}@production", "demoted", reason="latency regression")
    assert registry.show(f"{NAME}@production").semver == "1.0.0"
    registry.set_status(production.ref, "restored", reason="fixed upstream")
    assert registry.show(f"{NAME}@production").semver == "1.1.0"

    chain = registry.lineage(f"{NAME}@production")
    assert [(s.stage, s.label) for s in chain] == [
        ("production", f"{SESSION}_prod_v1.1.0"),
        ("validated", second_id),
        ("raw", SESSION),
    ]
    assert chain[2].ref == raw.ref and f"training_config_hash {training_config_hash(ST_CONFIG)}" in chain[2].detail
    actions = [(e["action"], e["actor"]) for e in _events(registry)]
    me = raw.registered_by
    for step in [
        ("register", me),
        ("validate", me),
        ("promote:validated", me),
        ("approve", "alice"),
        ("promote:production", me),
        ("approve", "bob"),
        ("alias:set", "alice"),
        ("alias:move", "bob"),
        ("demoted", me),
        ("restored", me),
    ]:
        assert step in actions, step
    move = next(e for e in _events(registry) if e["action"] == "alias:move")
    assert move["details"] == {"alias": "champion", "from": moved_from, "reason": "better holdout"}

    dry = registry.prune(NAME, keep_last=1)
    assert dry.dry_run and [v.ref for v in dry.removed] == [first.ref]
    assert dict(dry.kept) == {raw.ref: "one of the newest 1"}
    assert len(_refs(registry)) == 6
    done = registry.prune(NAME, keep_last=1, dry_run=False)
    assert [v.ref for v in done.removed] == [first.ref] and first.ref not in _refs(registry)
    assert registry.verify(quarantine=False).ok

    root = tmp_path / "artifacts"
    repo.sync()
    assert sorted(p.name for p in (root / "production").iterdir()) == [
        f"{SESSION}_prod_v1.0.0",
        f"{SESSION}_prod_v1.1.0",
    ]
    assert sorted(p.name for p in (root / "validated").iterdir()) == sorted([validated_id, second_id])
    assert sorted(p.name for p in (root / "raw").iterdir()) == [SESSION]
    assert (root / "raw" / SESSION / LAYOUT_MARKER).read_text().strip() == raw.ref


# == 3. The CLI: refusals and bad input ===========================================================


def test_cli_refuses_failed_gates_unknown_checkpoints_unapproved_and_reused_versions(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    promoted = _to_production(registry, repo, tmp_path / "training", second=False)
    raw = promoted.raw.ref
    strict = _write_policy(tmp_path / "strict.yaml", 'checks:\n  - files_present\n  - metric: "coverage > 0.99"\n')
    # A second validated version, not yet approved.
    validated = registry.promote(raw, "validated", checkpoint="epoch_1")
    before = _listed(home)
    gate, missing, validate_missing, unapproved, reused, raw_approval = _cli_all(
        home,
        [
            ("promote", raw, "--to", "validated", "--checkpoint", "epoch_1", "--policy", str(strict)),
            ("promote", raw, "--to", "validated", "--checkpoint", "epoch_70"),
            ("validate", raw, "--checkpoint", "epoch_70.pt"),
            ("promote", validated.ref, "--to", "production", "--version", "1.1.0"),
            ("promote", validated.ref, "--to", "production", "--version", "1.0.0", "--approved-by", "bob"),
            ("approve", raw, "--approved-by", "alice"),
        ],
    )
    _one_line_error(gate, 5, f"{raw} did not pass its gates: coverage > 0.99", "coverage = 0.97", "--force --reason")
    _one_line_error(missing, 3, "field 'checkpoint'", "no checkpoint 'epoch_70'", "best, epoch_1, epoch_2, latest")
    _one_line_error(validate_missing, 3, "field 'checkpoint'", "no checkpoint 'epoch_70.pt'", "epoch_2, latest")
    message = _one_line_error(unapproved, 5, "needs a manual approval", "--approved-by NAME")
    assert f"modelyard approve {validated.ref} --approved-by NAME" in message
    _one_line_error(reused, 5, f"{NAME} 1.0.0 already exists ({promoted.production[0].ref})", "never reused")
    _one_line_error(raw_approval, 3, "approvals are for validated versions")
    shown, listed = _cli_all(home, [("show", raw), ("list", "--all-versions", "--json")])
    assert "gates                 FAILED checkpoint epoch_1" in _ok(shown).stdout  # the refused gate's report
    assert {row["ref"]: row for row in _ok(listed).json()} == before


def test_cli_a_bad_policy_file_is_refused_naming_the_file_and_field(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    raw = _register_session(repo, tmp_path / "training", SESSION, 0)
    cases = {
        "unknown-check.yaml": (
            "checks:\n  - files_present\n  - coverage_check\n",
            ["field 'checks[1]'", "unknown check 'coverage_check'", "known: files_present"],
        ),
        "no-operator.yaml": ("checks:\n  - metric: coverage\n", ["field 'checks[0].metric'", "malformed threshold"]),
        "not-a-number.yaml": ("checks:\n  - metric: 'coverage > high'\n", ["'high' is not a number"]),
        "operator.yaml": ("checks:\n  - metric: 'coverage >> 0.95'\n", ["unknown operator '>>'"]),
        "text-value.json": (
            json.dumps({"checks": [{"metric": {"name": "coverage", "op": ">", "value": "0.95"}}]}),
            ["field 'checks[0].metric.value'", "should be a valid number"],
        ),
        "typo.yaml": ("checks: [files_present]\nrequire_distinct_approvers: true\n", ["unknown key 'require_distinct"]),
    }
    commands: list[tuple[str, ...]] = []
    for index, (file_name, (text, _)) in enumerate(cases.items()):
        path = _write_policy(tmp_path / file_name, text)
        if index % 2 == 0:
            commands.append(("validate", raw.ref, "--policy", str(path)))
        else:
            commands.append(("promote", raw.ref, "--to", "validated", "--policy", str(path), "--checkpoint", "best"))
    commands.append(("promote", raw.ref, "--to", "validated", "--policy", str(tmp_path / "unknown-check.yaml")))
    results = _cli_all(home, commands)
    expected = [*cases.items(), ("unknown-check.yaml", cases["unknown-check.yaml"])]
    for result, (file_name, (_, needles)) in zip(results, expected, strict=True):
        _one_line_error(result, 3, f"{tmp_path / file_name}: ", *needles)
    assert _refs(registry) == [raw.ref]
    assert registry.catalog.lifecycle.reports(raw) == []  # no report for a policy that did not load


def test_cli_a_hanging_check_is_killed_at_its_timeout(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    raw = _register_session(repo, tmp_path / "training", SESSION, 0)
    pids = tmp_path / "pids"
    pids.mkdir()
    policy = _write_policy(
        tmp_path / "hang.yaml",
        f"""\
checks:
  - files_present
  - command:
      name: hanging-eval
      run: ["sh", "-c", "sleep 300 & echo $! > {pids}/$$; wait"]
      timeout: 1.5
""",
    )
    started = time.monotonic()
    try:
        validated, promoted = _cli_all(
            home,
            [
                ("validate", raw.ref, "--policy", str(policy), "--checkpoint", "epoch_2"),
                ("promote", raw.ref, "--to", "validated", "--policy", str(policy), "--checkpoint", "epoch_2"),
            ],
        )
        elapsed = time.monotonic() - started
        assert validated.returncode == 1, validated.stderr
        assert "FAIL  hanging-eval: timed out after 1.5 s; its process group was killed" in validated.stdout
        assert "PASS  files_present" in validated.stdout and validated.stdout.rstrip().endswith("FAILED: 1 check")
        _one_line_error(promoted, 5, "did not pass its gates: hanging-eval (timed out after 1.5 s")
        assert elapsed < 20, f"the hanging check held modelyard for {elapsed:.1f} s"
        sleepers = [int(p.read_text()) for p in pids.iterdir()]
        assert len(sleepers) == 2
        assert all(_gone(pid) for pid in sleepers), "the check's background process survived its timeout"
    finally:
        for pid_file in pids.iterdir():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert _refs(registry) == [raw.ref]
    reports = registry.catalog.lifecycle.reports(raw)
    assert [r.passed for r in reports] == [False, False]
    stored = ValidationReport.from_json(reports[0].report_json)
    hang = next(c for c in stored.checks if c.name == "hanging-eval")
    assert hang.data["timed_out"] is True and hang.duration_seconds < 10


# == 4. Forced promotions, approvers, references, demotion ===========================================


def test_cli_a_forced_promotion_is_marked_and_needs_two_distinct_approvers(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    raw = _register_session(repo, tmp_path / "training", SESSION, 0).ref
    (home / "config.toml").write_text('[lifecycle]\nadmins = ["alice"]\n')
    strict = _write_policy(tmp_path / "strict.yaml", 'checks:\n  - files_present\n  - metric: "coverage > 0.99"\n')
    force = ("promote", raw, "--to", "validated", "--checkpoint", "epoch_2", "--policy", str(strict), "--force")
    procs = [
        _popen(home, *force, "--reason", "offline eval", env=_as_user("mallory")),
        _popen(home, *force, env=_as_user("alice")),
        _popen(home, *force, "--reason", "  ", env=_as_user("alice")),
    ]
    not_admin, no_reason, blank_reason = [_finish(proc) for proc in procs]
    _one_line_error(not_admin, 11, "--force is for admins (alice)", "mallory is not one")
    for refused in (no_reason, blank_reason):
        _one_line_error(refused, 3, "field 'reason'", "--force needs --reason")
    assert _refs(registry) == [raw]

    reason = "coverage measured offline: 0.995"
    forced = _ok(_cli(home, *force, "--reason", reason, "--json", env=_as_user("alice")))
    ref = forced.json()["ref"]
    assert forced.json() == {
        "ref": ref,
        "stage": "validated",
        "label": f"{SESSION}_epoch_2_validated",
        "semver": None,
        "forced": True,
    }
    promote = ("promote", ref, "--to", "production", "--version", "1.0.0")
    shown, listed, lineage, one = _cli_all(
        home,
        [("show", ref), ("list", "--all-versions", "--json"), ("lineage", ref), (*promote, "--approved-by", "carol")],
    )
    assert f"forced                yes: promoted past failed gates (see 'modelyard audit {ref}')" in _ok(shown).stdout
    rows = {row["ref"]: row for row in _ok(listed).json()}
    assert rows[ref]["forced"] is True and rows[ref]["stage"] == "validated" and rows[raw]["forced"] is False
    assert "validated from checkpoint epoch_2 (FORCED)" in _ok(lineage).stdout
    _one_line_error(one, 5, "validated by force", "second, distinct approver", "approvals so far: carol")
    force_event = next(e for e in _events(registry) if e["action"] == "force")
    assert (force_event["actor"], force_event["version_number"]) == ("alice", 1)
    assert force_event["details"]["reason"] == reason
    assert force_event["details"]["failed_checks"] == ["coverage > 0.99"]
    metadata = json.loads(_read_file(registry, ref, "metadata.json"))
    assert metadata["forced"] is True and metadata["force_reason"] == reason

    # The same approver twice is still one approver.
    _one_line_error(_cli(home, *promote, "--approved-by", "carol"), 5, "approvals so far: carol")
    assert _refs(registry) == sorted([raw, ref])
    production = _ok(_cli(home, *promote, "--approved-by", "dave", "--json")).json()
    assert (production["stage"], production["semver"]) == ("production", "1.0.0")
    metadata = json.loads(_read_file(registry, production["ref"], "metadata.json"))
    assert metadata["approved_by"] == ["carol", "dave"] and metadata["forced_upstream"] is True


def _read_file(registry: Registry, reference: str, path: str) -> str:
    version = registry.show(reference)
    entry = next(f for f in version.manifest.files if f.path == path)
    with registry.store.open(entry.sha256) as handle:
        return handle.read().decode()


def test_cli_require_distinct_approver_refuses_the_validator_and_the_promoter(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _register_session(repo, tmp_path / "training", SESSION, 0).ref
    policy = _write_policy(tmp_path / "p.yaml", "checks: [files_present, pickles]\nrequire_distinct_approver: true\n")
    with monkeypatch.context() as patched:  # carol, the validator, runs this promotion
        patched.setenv("LOGNAME", "carol")
        validated = registry.promote(raw, "validated", policy=policy).ref
    assert registry.show(validated).registered_by == "carol"
    registry.approve(validated, approved_by="carol")
    promote = ("promote", validated, "--to", "production", "--version", "1.0.0", "--policy", str(policy))
    by_promoter, by_validator = _cli_all(home, [(*promote, "--approved-by", "dave"), promote], env=_as_user("dave"))
    for refused in (by_promoter, by_validator):
        _one_line_error(
            refused, 5, "the policy requires an approver other than the promoter (dave)", "validator (carol)"
        )
    assert len(_refs(registry)) == 2
    result = _ok(_cli(home, *promote, "--approved-by", "erin", "--json", env=_as_user("dave"))).json()
    assert result["semver"] == "1.0.0"
    metadata = json.loads(_read_file(registry, result["ref"], "metadata.json"))
    assert metadata["promoted_by"] == "dave" and metadata["approved_by"] == ["carol", "dave", "erin"]


def test_cli_references_aliases_and_demotion(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    promoted = _to_production(registry, repo, tmp_path / "training", second=True)
    v1, v2 = promoted.validated
    p1, p2 = promoted.production
    first = _cli_all(
        home,
        [
            *[("show", f"{NAME}@{ref}", "--json") for ref in ("validated", "production", "1.0.0")],
            ("alias", "set", f"{NAME}@1.0.0", "champion", "--approved-by", "alice", "--reason", "first release"),
            ("alias", "set", p2.ref, "latest", "--approved-by", "bob"),
            ("alias", "set", p2.ref, "production", "--approved-by", "bob"),
            ("alias", "set", p2.ref, "2.0.0", "--approved-by", "bob"),
            ("demote", f"{NAME}@1.0.0"),  # no --reason
            ("demote", v1.ref, "--reason", "superseded by epoch_1"),
        ],
    )
    resolved = [json.loads(_ok(r).stdout)["model_version"] for r in first[:3]]
    assert resolved == [v2.number, p2.number, p1.number]
    assert _ok(first[3]).stdout.strip() == f"{NAME}@champion -> {p1.ref}"
    for refused in first[4:6]:
        _one_line_error(refused, 3, "field 'alias'", "is reserved")
    _one_line_error(first[6], 3, "field 'alias'", "must start with a lowercase letter")
    assert first[7].returncode == 2 and "--reason" in first[7].stderr  # a usage error
    _ok(first[8])

    moved, demoted, demoted_validated = _cli_all(
        home,
        [
            ("alias", "set", p2.ref, "champion", "--approved-by", "bob", "--reason", "better latency"),
            ("demote", f"{NAME}@production", "--reason", "p99 latency regression"),
            ("promote", v1.ref, "--to", "production", "--version", "1.2.0", "--approved-by", "carol"),
        ],
    )
    assert _ok(moved).stdout.strip() == f"{NAME}@champion -> {p2.ref} (was {p1.ref})"
    assert _ok(demoted).stdout.strip() == f"demoted {p2.ref}"
    _one_line_error(demoted_validated, 5, "was demoted or deprecated")

    champion, aliases, production, listed, reuse = _cli_all(
        home,
        [
            ("show", f"{NAME}@champion", "--json"),
            ("alias", "list", NAME, "--json"),
            ("show", f"{NAME}@production", "--json"),
            ("list", "--all-versions", "--json"),
            ("promote", v2.ref, "--to", "production", "--version", "1.1.0", "--approved-by", "carol"),
        ],
    )
    assert json.loads(_ok(champion).stdout)["model_version"] == p2.number
    assert [(a["alias"], a["ref"], a["set_by"]) for a in _ok(aliases).json()] == [("champion", p2.ref, "bob")]
    assert json.loads(_ok(production).stdout)["model_version"] == p1.number  # the previous production version
    rows = {row["ref"]: row for row in _ok(listed).json()}
    assert (rows[p2.ref]["status"], rows[v1.ref]["status"], rows[p1.ref]["status"]) == ("demoted", "demoted", None)
    _one_line_error(reuse, 5, "1.1.0 already exists", "never reused")  # a demoted number stays taken
    events = _events(registry)
    move = next(e for e in events if e["action"] == "alias:move")
    assert (move["actor"], move["version_number"]) == ("bob", p2.number)
    assert move["details"] == {"alias": "champion", "from": p1.ref, "reason": "better latency"}
    demotion = [e for e in events if e["action"] == "demoted"]
    assert [(e["version_number"], e["details"]["reason"]) for e in demotion] == [
        (v1.number, "superseded by epoch_1"),
        (p2.number, "p99 latency regression"),
    ]

    restored, removed = _cli_all(
        home,
        [
            ("restore", p2.ref, "--reason", "the regression was the load balancer"),
            ("alias", "rm", NAME, "champion", "--approved-by", "alice", "--reason", "retired"),
        ],
    )
    _ok(restored)
    assert registry.show(f"{NAME}@production").ref == p2.ref
    assert _ok(removed).stdout.strip() == f"removed {NAME}@champion (it pointed at {p2.ref})"
    assert {e["action"] for e in _events(registry)[-2:]} == {"restored", "alias:remove"}
    with pytest.raises(NotFoundError, match="unknown reference 'champion'"):
        registry.show(f"{NAME}@champion")
    # With every validated version demoted or deprecated, NAME@validated names none.
    assert _ok(_cli(home, "deprecate", v2.ref, "--reason", "dataset license withdrawn")).stdout.strip() == (
        f"deprecated {v2.ref}"
    )
    _one_line_error(_cli(home, "show", f"{NAME}@validated"), 4, "has no validated version", "demoted or deprecated")
    assert _events(registry)[-1]["action"] == "deprecated"


def test_cli_two_simultaneous_promotions_to_one_version_number_give_one_production_version(
    any_registry: Registry, db_url: str, tmp_path: Path, home: Path
) -> None:
    """Both pass the early "is 1.0.0 free?" check (a barrier in the benchmark, which runs while the
    tree is built, makes sure of it); the catalog lets one in and the other must fail cleanly."""
    registry = any_registry
    repo = ArtifactRepository(tmp_path / "artifacts", registry=registry)
    _register_session(repo, tmp_path / "training", SESSION, 0)
    candidates = []
    for checkpoint in ("epoch_1", "epoch_2"):
        validated_id = repo.promote_to_validated(session_id=SESSION, checkpoint_name=checkpoint)
        repo.approve(validated_id, approved_by="alice")
        candidates.append(repo.validated(validated_id).ref)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    wait_for_both = f'touch {barrier}/$$; while [ "$(ls {barrier} | wc -l)" -lt 2 ]; do sleep 0.05; done; echo "{{}}"'
    policy = _write_policy(
        tmp_path / "bench.json",
        json.dumps({"checks": ["files_present"], "benchmark": {"run": ["sh", "-c", wait_for_both], "timeout": 30}}),
    )
    env = {"MODELYARD_DB_URL": db_url}
    procs = [
        _popen(home, "promote", ref, "--to", "production", "--version", "1.0.0", "--policy", str(policy), env=env)
        for ref in candidates
    ]
    results = [_finish(proc) for proc in procs]
    assert len(list(barrier.iterdir())) == 2, [r.stderr for r in results]
    assert sorted(r.returncode for r in results) == [0, 5], [r.stderr[-600:] for r in results]
    loser = next(r for r in results if r.returncode != 0)
    _one_line_error(loser, 5, f"{NAME} 1.0.0 already exists", "never reused")
    production = [row for row in registry.list(all_versions=True) if row.stage == "production"]
    assert [row.semver for row in production] == ["1.0.0"]
    assert list((home / "tmp").glob("promote-*")) == []


def test_cli_list_by_stage_shows_each_artifacts_versions_in_that_stage(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    promoted = _to_production(registry, repo, tmp_path / "training", second=False)
    validated, production, everything = _cli_all(
        home,
        [
            ("list", "--stage", "validated", "--json"),
            ("list", "--stage", "production", "--json"),
            ("list", "--stage", "validated", "--all-versions", "--json"),
        ],
    )
    assert [(r["ref"], r["stage"]) for r in _ok(everything).json()] == [(promoted.validated[0].ref, "validated")]
    assert [(r["ref"], r["semver"]) for r in _ok(production).json()] == [(promoted.production[0].ref, "1.0.0")]
    # The artifact's newest version is in production, but it does have a validated version.
    assert [(r["ref"], r["stage"]) for r in _ok(validated).json()] == [(promoted.validated[0].ref, "validated")], (
        "list --stage validated does not show the artifact's validated version"
    )


def test_cli_list_refuses_an_unknown_stage(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    _register_session(repo, tmp_path / "training", SESSION, 0)
    known = _ok(_cli(home, "list", "--stage", "raw", "--json")).json()
    assert [row["stage"] for row in known] == ["raw"]
    typo = _cli(home, "list", "--stage", "prodution")
    assert typo.returncode in (2, 3), (
        f"an unknown stage was accepted (exit {typo.returncode}): {typo.stdout}{typo.stderr}"
    )
    assert "prodution" in typo.stderr and "production" in typo.stderr


# == 5. Prune and gc over the CLI ==================================================================


def test_cli_prune_is_a_dry_run_keeps_what_matters_and_gc_frees_the_bytes(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    training = tmp_path / "training"
    sessions = [_register_session(repo, training, f"sweep_{n}", 10 * n) for n in range(1, 6)]
    promoted = registry.promote(sessions[1].ref, "validated", checkpoint="epoch_2")
    registry.set_alias(sessions[2].ref, "baseline", approved_by="alice", reason="reference run")
    doomed = [sessions[0], sessions[3]]  # not promoted, not aliased, not the newest
    others = {
        f.sha256 for v in registry.versions(NAME) if v.ref not in {d.ref for d in doomed} for f in v.manifest.files
    }
    freed = {f.sha256: f.size for d in doomed for f in d.manifest.files if f.sha256 not in others}
    assert freed
    before = _refs(registry)

    dry, dry_json, young = _cli_all(
        home,
        [
            ("prune", NAME, "--keep-last", "1"),
            ("prune", NAME, "--keep-last", "1", "--json"),
            ("prune", NAME, "--keep-last", "1", "--older-than", "1h", "--yes", "--json"),
        ],
    )
    assert _ok(young).json()["removed"] == []  # every session is younger than an hour
    assert {k["ref"]: k["why"] for k in young.json()["kept"]}[doomed[0].ref] == "younger than --older-than"
    lines = _ok(dry).stdout.splitlines()
    assert [line.split(" (")[0] for line in lines if line.startswith(f"would remove {NAME}@")] == [
        f"would remove {d.ref}" for d in doomed
    ]
    assert f"kept {sessions[1].ref}: a promoted version was derived from it" in lines
    assert f"kept {sessions[2].ref}: alias 'baseline' points at it" in lines
    assert f"kept {sessions[4].ref}: one of the newest 1" in lines
    assert lines[-1] == "would remove 2 raw versions (dry run: add --yes to remove them, then run modelyard gc)"
    report = _ok(dry_json).json()
    assert report["dry_run"] is True and report["bytes_at_most"] == sum(d.manifest.total_size for d in doomed)
    assert _refs(registry) == before

    _ok(_cli(home, "prune", NAME, "--keep-last", "1", "--yes"))
    assert _refs(registry) == sorted(set(before) - {d.ref for d in doomed})
    assert promoted.ref in _refs(registry)
    prunes = [e for e in _events(registry) if e["action"] == "prune"]
    assert sorted(e["version_number"] for e in prunes) == sorted(d.number for d in doomed)
    collected = _ok(_cli(home, "gc", "--grace", "0s", "--json")).json()
    assert sorted(collected["removed"]) == sorted(freed) and collected["bytes"] == sum(freed.values())
    again, verified = _cli_all(home, [("prune", NAME, "--keep-last", "1", "--json"), ("verify", "--json")])
    assert _ok(again).json()["removed"] == []
    assert _ok(verified).json()["ok"] is True


# == 6. kill -9 in the middle of a promotion ======================================================


@pytest.mark.slow
def test_sigkill_during_promotions_leaves_the_previous_stage_and_nothing_half_built(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    raw = _register_session(repo, tmp_path / "training", SESSION, 0)
    layout = tmp_path / "layout"
    scratch = tmp_path / "scratch"  # TMPDIR of the killed processes: their temporary exports land here
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    started, pid_file = tmp_path / "started", tmp_path / "check.pid"
    slow = _write_policy(
        tmp_path / "slow.yaml",
        f"""\
checks:
  - files_present
  - command: {{name: slow-eval, run: ["sh", "-c", "echo $$ > {pid_file}; touch {started}; sleep 60"], timeout: 120}}
""",
    )
    # 1. Killed while a gate runs: raw stays raw, no validated version appears anywhere.
    proc = _popen(
        home, "promote", raw.ref, "--to", "validated", "--checkpoint", "epoch_2", "--policy", str(slow), env=env
    )
    try:
        _wait_for(started.exists, proc, "the slow check to start")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _finish(proc) if proc.poll() is None else proc.communicate()
        _kill_group(pid_file)
    listing, missing = _cli_all(home, [("list", "--all-versions", "--json"), ("show", f"{NAME}@validated")])
    assert [(row["ref"], row["stage"]) for row in _ok(listing).json()] == [(raw.ref, "raw")]
    _one_line_error(missing, 4, f"{NAME} has no validated version")
    registry.layout(layout)
    assert sorted(p.name for p in (layout / "validated").iterdir()) == []
    assert sorted(p.name for p in (layout / "raw").iterdir()) == [SESSION]
    assert not any(e["action"].startswith("promote:") for e in _events(registry))

    # A new promotion still works.
    fast = _write_policy(tmp_path / "fast.yaml", "checks: [files_present, readable, pickles]\n")
    validated = _ok(
        _cli(home, "promote", raw.ref, "--to", "validated", "--checkpoint", "epoch_2", "--policy", str(fast), "--json")
    ).json()
    assert validated["ref"] == f"{NAME}@2" and validated["label"] == f"{SESSION}_epoch_2_validated"
    registry.approve(validated["ref"], approved_by="alice")

    # 2. Killed while the production tree is being built (the policy's benchmark runs inside it).
    started.unlink()
    bench = _write_policy(
        tmp_path / "bench.yaml",
        f"""\
checks: [files_present]
benchmark: {{run: ["sh", "-c", "echo $$ > {pid_file}; touch {started}; sleep 60; echo {{}}"], timeout: 120}}
""",
    )
    args = ("promote", validated["ref"], "--to", "production", "--version", "1.0.0", "--policy", str(bench))
    proc = _popen(home, *args, env=env)
    try:
        _wait_for(started.exists, proc, "the benchmark to start")
        half_built = list((home / "tmp").glob("promote-production-*"))
        assert half_built, "no staging directory while the production tree was being built"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _finish(proc) if proc.poll() is None else proc.communicate()
        _kill_group(pid_file)
    listing, production, by_semver = _cli_all(
        home,
        [("list", "--all-versions", "--json"), ("show", f"{NAME}@production"), ("show", f"{NAME}@1.0.0")],
    )
    rows = [(row["ref"], row["stage"]) for row in _ok(listing).json()]
    assert rows == [(validated["ref"], "validated"), (raw.ref, "raw")]
    _one_line_error(production, 4, f"{NAME} has no production version")
    _one_line_error(by_semver, 4, f"{NAME} has no production version 1.0.0")
    registry.layout(layout)
    assert sorted(p.name for p in (layout / "production").iterdir()) == []
    assert [p.name for p in (layout / "validated").iterdir()] == [f"{SESSION}_epoch_2_validated"]

    # The next promotion succeeds with the same version number, and clears the stale staging tree
    # once it is old enough that no live promotion can own it.
    for stale in half_built:
        backdate(stale, 25 * 3600)
        os.utime(stale, (time.time() - 25 * 3600,) * 2)
    bench_file = tmp_path / "benchmarks.json"
    bench_file.write_text(json.dumps({"latency_ms": 1.5}))
    done = _ok(_cli(home, *args[:6], "--benchmarks", str(bench_file), "--json")).json()
    assert (done["stage"], done["semver"]) == ("production", "1.0.0")
    assert not any(stale.exists() for stale in half_built)
    assert list((home / "tmp").glob("promote-*")) == []
    registry.layout(layout)
    assert [p.name for p in (layout / "production").iterdir()] == [f"{SESSION}_prod_v1.0.0"]
    assert [e["action"] for e in _events(registry) if e["action"].startswith("promote:")] == [
        "promote:validated",
        "promote:production",
    ]
    verified = registry.verify(quarantine=False)
    assert verified.ok and verified.versions == 3


def test_a_killed_validation_does_not_leave_its_exported_copy_behind(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    """A command check runs on an exported copy of every file of the version (for a real run,
    gigabytes of checkpoints). kill -9 cannot clean it up, so the next run that opens a scratch
    directory removes every one whose owner is gone (its lock is free)."""
    raw = _register_session(repo, tmp_path / "training", SESSION, 0)
    started, pid_file = tmp_path / "started", tmp_path / "check.pid"
    slow = _write_policy(
        tmp_path / "slow.yaml",
        f"""\
checks:
  - command: {{name: slow-eval, run: ["sh", "-c", "echo $$ > {pid_file}; touch {started}; sleep 60"], timeout: 120}}
""",
    )
    proc = _popen(home, "validate", raw.ref, "--policy", str(slow))
    try:
        _wait_for(started.exists, proc, "the slow check to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _finish(proc) if proc.poll() is None else proc.communicate()
        _kill_group(pid_file)
    exported = list((home / "tmp").glob("validate-*"))
    assert exported and all(list(p.rglob("best.safetensors")) for p in exported), exported
    quick = _write_policy(tmp_path / "quick.yaml", 'checks:\n  - command: {name: ok, run: ["true"], timeout: 30}\n')
    _ok(_cli(home, "validate", raw.ref, "--policy", str(quick)))
    leftovers = sorted(p.name for p in (home / "tmp").iterdir())
    assert leftovers == [], f"the export of {raw.ref} from a killed validation is still there: {leftovers}"


# == 7. The layout directory cannot change stored content ==========================================

_TAMPER = r"""
import json, os, sys
target = sys.argv[1]
folder = os.path.dirname(target)
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
attempt("open for writing", lambda: open(target, "r+b").close())
attempt("open for appending", lambda: open(target, "ab").close())
attempt("truncate", lambda: os.truncate(target, 0))
attempt("unlink", lambda: os.unlink(target))
attempt("rename", lambda: os.rename(target, target + ".moved"))
attempt("chmod", lambda: os.chmod(target, 0o666))
attempt("create beside it", lambda: open(os.path.join(folder, "intruder"), "xb").close())
attempt("replace the directory", lambda: os.rename(folder, folder + ".old"))
print(json.dumps(results))
"""


@pytest.mark.root
def test_a_promoted_file_cannot_be_overwritten_through_the_layout(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs a write attempt as the nobody user and edits a 0444 file as root")
    home, root = shared_dir / "home", shared_dir / "artifacts"
    with Registry.open(home) as registry:
        repo = ArtifactRepository(root, registry=registry)
        promoted = _to_production(registry, repo, shared_dir / "training", second=False)
    production = promoted.production[0]
    target = root / "production" / f"{SESSION}_prod_v1.0.0" / "model.safetensors"
    digest = next(f.sha256 for f in production.manifest.files if f.path == "model.safetensors")
    assert _sha256(target) == digest

    tamper = subprocess.run(
        [*SETPRIV_NOBODY, sys.executable, "-c", _TAMPER, str(target)], capture_output=True, text=True, cwd="/"
    )
    assert tamper.returncode == 0, tamper.stderr
    results = json.loads(tamper.stdout)
    assert len(results) == 8 and all(r.startswith("PermissionError") for r in results.values()), results
    assert _sha256(target) == digest and not (target.parent / "intruder").exists()
    assert _ok(_cli(home, "verify", "--json")).json()["ok"] is True

    # Root ignores the 0444 mode: the layout's file is the stored blob, and verify reports it.
    with target.open("r+b") as handle:
        handle.seek(8)
        original = handle.read(8)
        handle.seek(8)
        handle.write(bytes(b ^ 0xFF for b in original))
    verified = _cli(home, "verify", "--json", "--no-quarantine")
    assert verified.returncode == 6, verified.stdout + verified.stderr
    problems = verified.json()["problems"]
    assert [(p["sha256"], p["status"]) for p in problems] == [(digest, "corrupt")]
    assert f"{production.ref}:model.safetensors" in problems[0]["used_by"]
    assert f"{promoted.validated[0].ref}:model.safetensors" in problems[0]["used_by"]
    text = _cli(home, "verify", "--no-quarantine")
    assert text.returncode == 6 and f"corrupt: sha256:{digest} used by " in text.stdout


def test_layout_rebuilds_files_removed_or_replaced_in_its_directories(
    registry: Registry, repo: ArtifactRepository, tmp_path: Path, home: Path
) -> None:
    """`modelyard layout DIR` rebuilds the view at any time: a file removed or replaced in a
    version's directory (by its owner, who may change the directory) comes back as stored."""
    promoted = _to_production(registry, repo, tmp_path / "training", second=False)
    root = tmp_path / "artifacts"
    directory = root / "production" / f"{SESSION}_prod_v1.0.0"
    expected = {f.path: f.sha256 for f in promoted.production[0].manifest.files}
    (directory / "model.safetensors").unlink()
    (directory / "config.yaml").unlink()
    (directory / "config.yaml").write_text("learning_rate: 1000\n")
    result = _ok(_cli(home, "layout", str(root)))
    assert f"wrote {directory}" in result.stdout, result.stdout
    for path in ("model.safetensors", "config.yaml"):
        assert (directory / path).is_file() and _sha256(directory / path) == expected[path], path


def test_a_model_directory_without_checkpoints_is_promoted_whole_to_production(
    registry: Registry, tmp_path: Path
) -> None:
    """A PEFT adapter (seed 004's artifact) has no checkpoints/: its files are the model and must
    reach production unchanged, tokenizer files included, and no training state with them."""
    from model_builders import peft_folder
    from modelyard.register.metadata import RegisterOptions

    adapter = peft_folder(tmp_path / "grammar-lora")
    (adapter / "optimizer.pt").write_bytes(b"\x80\x02}q\x00.")  # an empty pickled dict: training state
    (adapter / "train.yaml").write_text("learning_rate: 1e-4\n")
    options = RegisterOptions(artifact_name="grammar-lora-v1", task="lm-finetune", config=adapter / "train.yaml")
    raw = registry.register(adapter, options).version
    validated = registry.promote(raw.ref, "validated")
    registry.approve(validated.ref, approved_by="reviewer")
    production = registry.promote(validated.ref, "production", version="1.0.0")
    raw_bytes = {f.path: f.sha256 for f in raw.manifest.files}
    for version in (validated, production):
        paths = {f.path: f.sha256 for f in registry.show(version.ref).manifest.files}
        for name in (
            "adapter_config.json",
            "adapter_model.safetensors",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ):
            assert paths.get(name) == raw_bytes[name], f"{version.ref} lost or changed {name}"
        assert "optimizer.pt" not in paths
    config = registry.model_config(production.ref)
    assert config is not None and config.model_type == "adapter"
