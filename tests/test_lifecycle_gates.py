"""Validation gates: policy files parsed from real YAML and JSON, and `run_checks` on real run
directories (safetensors files, `torch.save` checkpoints with metrics, whole pickled modules, a
malicious pickle), real inspection, real subprocesses for command checks. Nothing is unpickled."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import write_safetensors
from modelyard.digest import sha256_file
from modelyard.errors import CorruptionError, InvalidInputError
from modelyard.inspect import inspect_path
from modelyard.lifecycle.checks import ValidationSubject, run_checks
from modelyard.lifecycle.commands import OUTPUT_TAIL_BYTES, run_command
from modelyard.lifecycle.policy import (
    DEFAULT_MANIFEST_FIELDS,
    CommandCheck,
    MetricThreshold,
    Policy,
    default_policy,
    load_policy,
    parse_policy,
)
from modelyard.lifecycle.report import ValidationReport
from modelyard.manifest import ArtifactManifest, FileEntry
from modelyard.modelconfig import BaseModelConfig, PickleScanSummary

torch = pytest.importorskip("torch")


class TinyNet(torch.nn.Module):  # type: ignore[misc]
    """Pickled whole by `torch.save(model)`, so the checkpoint names this module's class."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3, 4))


class Reduce:
    """Pickles as `func(*args)`: how malicious pickles are written. Never called, never loaded."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


TINY_NET = f"{TinyNet.__module__}.{TinyNet.__qualname__}"
OS_SYSTEM = f"{os.system.__module__}.system"

EXAMPLE_POLICY = """\
checks:
  - files_present                      # built-in, by name
  - readable
  - pickles
  - manifest_complete: {fields: [base_model, task, training_config_hash, precision]}
  - metric: "coverage > 0.95"
  - metric: {name: best_val_loss, op: "<", value: 0.4}
  - metric: "generalization_gap < 0.05"
  - metric: "entropy_utilization >= 0.8"
  - metric: "posterior_collapse_rate <= 0.01"
  - command: {name: eval-holdout, run: ["python", "eval.py", "{path}"], timeout: 600}
  - command: {name: smoke, run: "python -c 'print(1)' {path}"}
allowed_globals: [mypackage.model.Net]
require_distinct_approver: true
security_review: false
benchmark: {run: ["python", "bench.py", "{path}"], timeout: 1800}
"""


def write_policy(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- policies ------------------------------------------------------------------------------------


def test_the_example_policy_parses_into_typed_checks(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, EXAMPLE_POLICY))

    names = [check.check_name for check in policy.checks]
    assert names[:4] == ["files_present", "readable", "pickles", "manifest_complete"]
    assert names[4:9] == [
        "coverage > 0.95",
        "best_val_loss < 0.4",
        "generalization_gap < 0.05",
        "entropy_utilization >= 0.8",
        "posterior_collapse_rate <= 0.01",
    ]
    assert policy.checks[5] == MetricThreshold(name="best_val_loss", op="<", value=0.4)
    assert policy.checks[9] == CommandCheck(name="eval-holdout", run=["python", "eval.py", "{path}"], timeout=600)
    smoke = policy.checks[10]
    assert isinstance(smoke, CommandCheck)
    assert smoke.run == ["python", "-c", "print(1)", "{path}"]  # split like a shell would, never run by one
    assert smoke.timeout == 600  # the default
    assert policy.allowed_globals == ["mypackage.model.Net"]
    assert policy.require_distinct_approver is True and policy.security_review is False
    assert policy.benchmark is not None and policy.benchmark.timeout == 1800


def test_the_policy_hash_follows_meaning_not_spelling(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, EXAMPLE_POLICY))
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps(dict(reversed(list(policy.to_document().items()))), indent=4))

    assert load_policy(as_json).sha256 == policy.sha256
    assert parse_policy(policy.to_document()) == policy  # the normalised form loads back to itself
    stricter = EXAMPLE_POLICY.replace("coverage > 0.95", "coverage > 0.96")
    assert load_policy(write_policy(tmp_path, stricter, "stricter.yaml")).sha256 != policy.sha256


def test_the_default_policy_checks_files_pickles_and_the_manifest() -> None:
    policy = default_policy()
    assert [check.check_name for check in policy.checks] == [
        "files_present",
        "readable",
        "pickles",
        "manifest_complete",
    ]
    assert list(policy.checks[3].fields) == list(DEFAULT_MANIFEST_FIELDS)  # type: ignore[union-attr]
    assert policy.allowed_globals == [] and policy.benchmark is None


BAD_POLICIES = [
    ("checks: [files_present, file_readable]", "checks[1]", "unknown check 'file_readable'"),
    ("checks: [files_presnt]", "checks[0]", "did you mean 'files_present'?"),
    ("checks: [{metric: 'coverage 0.95'}]", "checks[0].metric", "malformed threshold 'coverage 0.95'"),
    ("checks: [{metric: 'coverage > high'}]", "checks[0].metric", "'high' is not a number"),
    ("checks: [{metric: 'coverage > nan'}]", "checks[0].metric", "'nan' is not a finite number"),
    ("checks: [{metric: '> 0.95'}]", "checks[0].metric", "malformed threshold"),
    (
        "checks: [readable, pickles, readable]",
        "checks[2]",
        "repeats the check 'readable' of checks[0]",
    ),
    (
        "checks: [readable, {metric: 'coverage => 0.95'}]",
        "checks[1].metric",
        "unknown operator '=>'; use one of >, >=, <, <=, ==, !=",
    ),
    ("checks: [{metric: {name: loss, op: '=<', value: 1}}]", "checks[0].metric.op", "unknown operator '=<'"),
    ("checks: [{metric: {name: loss, op: '<', value: '1'}}]", "checks[0].metric.value", "should be a valid number"),
    ("checks: [{metric: {name: loss, op: '<'}}]", "checks[0].metric.value", "missing"),
    ("checks: [{metric: {name: loss, op: '<', value: 1, unit: s}}]", "checks[0].metric.unit", "unknown key 'unit'"),
    ("checks: [{command: {name: e, run: [x], timeout: 0}}]", "checks[0].command.timeout", "positive number"),
    ("checks: [{command: {name: e, run: [x], timeout: -5}}]", "checks[0].command.timeout", "found -5"),
    ("checks: [{command: {name: e, run: [x], timeout: ten}}]", "checks[0].command.timeout", "valid number"),
    ("checks: [{command: {name: e, run: [x], timeout: true}}]", "checks[0].command.timeout", "found true"),
    ("checks: [{command: {name: e, run: []}}]", "checks[0].command.run", "empty command"),
    ("checks: [{command: {name: e, run: ''}}]", "checks[0].command.run", "empty command"),
    ("checks: [{command: {name: e, run: ['  ']}}]", "checks[0].command.run", "empty command"),
    ("checks: [{command: {name: e, run: [python, 3]}}]", "checks[0].command.run[1]", "should be a valid string"),
    ('checks: [{command: {name: e, run: "python \'eval.py"}}]', "checks[0].command.run", "No closing quotation"),
    ("checks: [{command: python eval.py}]", "checks[0].command", "expected a mapping"),
    ("checks: [{manifest_complete: {fields: [bse_model]}}]", "checks[0].manifest_complete.fields[0]", "base_model"),
    ("checks: [{manifest_complete: {fields: []}}]", "checks[0].manifest_complete.fields", "lists no field"),
    ("checks: [{pickles: {strict: true}}]", "checks[0].pickles", "takes no options"),
    ("checks: [{readable: 1, pickles: 2}]", "checks[0]", "one-key mapping"),
    ("checks: [files_present]\nchecks_extra: 1", "checks_extra", "unknown key 'checks_extra'"),
    ("chekcs: [files_present]", "chekcs", "did you mean 'checks'?"),
    ("security_review: true", "checks", "missing; list the checks"),
    ("checks: []", "checks", "non-empty list"),
    ("checks: [readable]\nallowed_globals: [Net]", "allowed_globals", "not a qualified 'module.name' global"),
    ("checks: [readable]\nsecurity_review: 'yes'", "security_review", "should be a valid boolean"),
    ("checks: [readable]\nbenchmark: {run: [bench], timeout: 0}", "benchmark.timeout", "positive number"),
    ("checks: [readable]\nbenchmark: {run: []}", "benchmark.run", "empty command"),
    ("- readable", "(top level)", "must be a mapping"),
    ("checks: [{manifest_complete: {field: [task]}}]", "checks[0].manifest_complete.field", "did you mean 'fields'?"),
    ("checks: [{metric: {name: a b, op: '<', value: 1}}]", "checks[0].metric.name", "a metric name is one word"),
    ("checks: [{command: {name: '', run: [x]}}]", "checks[0].command.name", "a check name is one line"),
    ("checks: [{command: {run: [x], shell: true}}]", "checks[0].command.shell", "unknown key 'shell'"),
    ("checks: [readable]\nbenchmark: python bench.py", "benchmark", "expected a mapping like {run:"),
    ("checks: [~]", "checks[0]", "a check is a name or a one-key mapping"),
    ("checks: [privacy_level]", "checks[0].privacy_level", "expected a mapping like {allowed: [dp]}"),
    ("checks: [{privacy_level: {allowed: []}}]", "checks[0].privacy_level.allowed", "lists no privacy level"),
    ("checks: [{privacy_level: {allowed: [dpp]}}]", "checks[0].privacy_level.allowed[0]", "did you mean 'dp'?"),
    ("checks: [{privacy_level: {levels: [dp]}}]", "checks[0].privacy_level", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "field_path", "cause"), BAD_POLICIES)
def test_a_bad_policy_names_the_file_the_field_and_the_cause(
    tmp_path: Path, text: str, field_path: str, cause: str
) -> None:
    path = write_policy(tmp_path, text + "\n")
    with pytest.raises(InvalidInputError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: field '{field_path}': "), message
    assert cause in message, message
    assert "\n" not in message


def test_a_policy_that_is_not_valid_yaml_or_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"policy\.yaml: invalid YAML at line 3 column 1: expected ',' or ']'"):
        load_policy(write_policy(tmp_path, "checks:\n  - [readable\n"))
    duplicate = write_policy(tmp_path, '{"checks": ["readable"], "checks": ["pickles"]}', "policy.json")
    with pytest.raises(InvalidInputError, match=r"policy\.json: duplicate key 'checks'"):
        load_policy(duplicate)


# -- run directories and subjects ----------------------------------------------------------------


def save_training_checkpoint(path: Path, **extra: Any) -> None:
    """A real training checkpoint: epoch, step, weights, optimizer-free, with metrics."""
    torch.manual_seed(0)
    torch.save({"epoch": 70, "global_step": 7000, "model_state_dict": TinyNet().state_dict(), **extra}, path)


def build_run(root: Path, *, training_metrics: str | None = '{"best_val_loss": 0.38}') -> Path:
    """A run shaped like seed 003's raw example: checkpoints, metrics, config, log, README."""
    run = root / "v5_5_20251124"
    (run / "checkpoints").mkdir(parents=True)
    write_safetensors(run / "checkpoints" / "best.safetensors", 0)
    write_safetensors(run / "checkpoints" / "latest.safetensors", 1)
    save_training_checkpoint(
        run / "checkpoints" / "epoch_70.pt",
        metrics={"coverage": 0.97, "entropy_utilization": 0.85},
        best_val_loss=0.31,
    )
    (run / "checkpoints" / "manifest.json").write_text('{"best": "best.safetensors"}')
    if training_metrics is not None:
        (run / "metrics").mkdir()
        (run / "metrics" / "training_metrics.json").write_text(training_metrics)
    (run / "config.yaml").write_text("batch_size: 256\nlearning_rate: 1e-4\n")
    (run / "training.log").write_text("epoch 1 loss 0.9\n")
    (run / "README.md").write_text("# run\n")
    return run


def manifest_for(run: Path, **fields: Any) -> ArtifactManifest:
    entries = []
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        digest, size = sha256_file(path)
        entries.append(FileEntry(path=path.relative_to(run).as_posix(), size=size, sha256=digest))
    values: dict[str, Any] = {
        "artifact_name": "encoder-v5",
        "model_version": 1,
        "created_at": datetime.now(UTC),
        "base_model": "vit-base",
        "task": "embedding",
        "precision": "fp32",
        "training_config_hash": "a" * 64,
        "files": entries,
        **fields,
    }
    return ArtifactManifest(**values)


@dataclass
class Calls:
    """What the checks asked of the version (the callables below are real, over the run folder)."""

    verify: int = 0
    reinspect: int = 0
    read: list[str] = field(default_factory=list)
    exports: list[Path] = field(default_factory=list)


def subject_for(
    run: Path,
    calls: Calls,
    *,
    checkpoint: str | None = None,
    submitted: dict[str, Any] | None = None,
    manifest: ArtifactManifest | None = None,
    model_config: BaseModelConfig | str | None = "inspect",
) -> ValidationSubject:
    manifest = manifest or manifest_for(run)
    config = inspect_path(run) if model_config == "inspect" else model_config
    assert config is None or isinstance(config, BaseModelConfig)

    def verify_files() -> list[str]:
        calls.verify += 1
        problems = []
        for entry in manifest.files:
            path = run / entry.path
            if not path.is_file():
                problems.append(f"{entry.path}: missing")
            elif sha256_file(path)[0] != entry.sha256:
                problems.append(f"{entry.path}: corrupt")
        return problems

    def reinspect() -> BaseModelConfig:
        calls.reinspect += 1
        return inspect_path(run)

    def read_file(path: str) -> bytes:
        calls.read.append(path)
        return (run / path).read_bytes()

    def export_to(directory: Path) -> None:
        assert directory.is_dir() and not any(directory.iterdir())
        calls.exports.append(directory)
        shutil.copytree(run, directory, dirs_exist_ok=True)

    return ValidationSubject(
        ref="encoder-v5@1",
        manifest=manifest,
        model_config=config,
        checkpoint=checkpoint,
        submitted=submitted or {},
        verify_files=verify_files,
        reinspect=reinspect,
        read_file=read_file,
        export_to=export_to,
    )


def policy_of(*checks: Any, **options: Any) -> Policy:
    return parse_policy({"checks": list(checks), **options}, "test policy")


def by_name(report: ValidationReport) -> dict[str, Any]:
    return {check.name: check for check in report.checks}


# -- built-in checks -----------------------------------------------------------------------------


def test_a_clean_run_passes_the_default_policy(tmp_path: Path) -> None:
    calls = Calls()
    report = run_checks(default_policy(), subject_for(build_run(tmp_path), calls))

    assert report.passed, report.summary_lines()
    assert [check.kind for check in report.checks] == ["builtin"] * 4
    assert all(check.duration_seconds >= 0 for check in report.checks)
    assert report.policy_sha256 == default_policy().sha256
    assert report.policy == default_policy().to_document()
    assert (calls.verify, calls.reinspect, calls.exports) == (1, 1, [])  # nothing exported without a command


def test_missing_and_corrupt_files_fail_files_present_and_readable(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    subject = subject_for(run, Calls())
    (run / "training.log").unlink()
    best = run / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:40])  # truncated inside its header

    checks = by_name(run_checks(policy_of("files_present", "readable"), subject))

    assert not checks["files_present"].passed
    assert checks["files_present"].detail.startswith("2 of 8 files missing or corrupt")
    assert checks["files_present"].data["problems"] == [
        "checkpoints/best.safetensors: corrupt",
        "training.log: missing",
    ]
    assert not checks["readable"].passed
    assert "best.safetensors" in checks["readable"].detail and "unreadable" in checks["readable"].detail


def test_an_incomplete_manifest_fails_naming_the_missing_fields(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    subject = subject_for(run, Calls(), manifest=manifest_for(run, precision=None, task=""))
    check = run_checks(default_policy(), subject).checks[3]
    assert not check.passed
    assert check.detail.startswith("manifest fields not set: task, precision;")
    assert check.data == {"missing": ["task", "precision"]}

    only_base = policy_of({"manifest_complete": {"fields": ["base_model"]}})
    assert run_checks(only_base, subject).passed


def test_a_privacy_gate_requires_the_manifests_privacy_level(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    private_only = policy_of({"privacy_level": {"allowed": ["dp", "secure-agg"]}})
    plain = run_checks(private_only, subject_for(run, Calls(), manifest=manifest_for(run, privacy_level="none")))
    assert not plain.passed
    assert plain.checks[0].detail.startswith("privacy_level is none; the policy requires one of dp, secure-agg")
    private = run_checks(private_only, subject_for(run, Calls(), manifest=manifest_for(run, privacy_level="dp")))
    assert private.passed and private.checks[0].data == {"privacy_level": "dp"}
    assert private_only.to_document()["checks"] == [{"privacy_level": {"allowed": ["dp", "secure-agg"]}}]


def test_a_version_without_a_model_entry_fails_readable_and_pickles(tmp_path: Path) -> None:
    calls = Calls()
    report = run_checks(default_policy(), subject_for(build_run(tmp_path), calls, model_config=None))
    checks = by_name(report)
    for name in ("readable", "pickles"):
        assert not checks[name].passed
        assert "has no model entry" in checks[name].detail
        assert "run 'modelyard reinspect encoder-v5@1'" in checks[name].detail
    assert calls.reinspect == 0
    assert checks["files_present"].passed and not report.passed


# -- pickles -------------------------------------------------------------------------------------


def test_a_whole_pickled_model_fails_unless_its_class_is_allowed(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    torch.save(TinyNet(), run / "checkpoints" / "whole.pt")
    subject = subject_for(run, Calls())
    assert subject.model_config is not None and subject.model_config.pickle_scan.verdict == "suspicious"

    refused = run_checks(policy_of("pickles"), subject)
    (check,) = refused.checks
    assert not refused.passed
    assert f"not in the policy's allowed_globals: {TINY_NET} in checkpoints/whole.pt" in check.detail
    assert refused.allowed_globals_used == []

    allowed = run_checks(policy_of("pickles", allowed_globals=[TINY_NET, "other.module.Thing"]), subject)
    assert allowed.passed, allowed.summary_lines()
    assert allowed.allowed_globals_used == [TINY_NET]  # the audited exception is on record; unused ones are not
    assert TINY_NET in allowed.checks[0].detail
    assert allowed.checks[0].data["allowed"] == [f"{TINY_NET} in checkpoints/whole.pt"]


def test_an_unsafe_pickle_fails_even_when_listed_as_allowed(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    torch.save({"w": torch.zeros(2), "x": Reduce(os.system, "echo pwned")}, run / "checkpoints" / "evil.pt")
    subject = subject_for(run, Calls())

    report = run_checks(policy_of("pickles", allowed_globals=[OS_SYSTEM]), subject)

    (check,) = report.checks
    assert not report.passed
    assert check.detail.startswith(f"unsafe pickle globals: {OS_SYSTEM} in checkpoints/evil.pt")
    assert report.allowed_globals_used == []


def test_a_stale_model_entry_that_understates_the_pickles_fails_readable(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    torch.save({"w": torch.zeros(2), "x": Reduce(os.system, "echo pwned")}, run / "checkpoints" / "evil.pt")
    inspected = inspect_path(run)
    stale = inspected.model_copy(update={"pickle_scan": PickleScanSummary(verdict="safe", files_scanned=2)})

    checks = by_name(run_checks(policy_of("readable", "pickles"), subject_for(run, Calls(), model_config=stale)))

    assert checks["pickles"].passed  # judged on the stored entry, as the policy says ...
    assert not checks["readable"].passed  # ... which re-reading the files shows to be out of date
    assert checks["readable"].detail == (
        "read again, the pickles are unsafe but the stored model entry says safe; "
        "run 'modelyard reinspect encoder-v5@1'"
    )


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_merge_by_precedence_and_record_their_source(tmp_path: Path) -> None:
    run = build_run(tmp_path, training_metrics='{"coverage": 0.6, "best_val_loss": 0.38, "gen": {"gap": 0.03}}')
    manifest = manifest_for(run, metrics={"coverage": 0.5, "posterior_collapse_rate": 0.0, "best_val_loss": 0.9})
    subject = subject_for(run, Calls(), checkpoint="epoch_70", manifest=manifest, submitted={"best_val_loss": 0.2})
    policy = policy_of(
        {"metric": "posterior_collapse_rate <= 0.01"},
        {"metric": "gen.gap < 0.05"},
        {"metric": "coverage > 0.95"},
        {"metric": "entropy_utilization >= 0.8"},
        {"metric": "epoch == 70"},
        {"metric": {"name": "best_val_loss", "op": "<", "value": 0.25}},
    )

    report = run_checks(policy, subject)

    assert report.passed, report.summary_lines()
    sources = {name: (value.value, value.source) for name, value in report.metrics.items()}
    assert sources == {
        "posterior_collapse_rate": (0.0, "manifest"),
        "gen.gap": (0.03, "metrics/training_metrics.json"),
        "coverage": (0.97, "checkpoint checkpoints/epoch_70.pt"),
        "entropy_utilization": (0.85, "checkpoint checkpoints/epoch_70.pt"),
        "epoch": (70.0, "checkpoint checkpoints/epoch_70.pt"),
        "best_val_loss": (0.2, "submitted"),
    }
    loss = by_name(report)["best_val_loss < 0.25"]
    assert loss.detail == "best_val_loss = 0.2 (from submitted) < 0.25"
    assert [c["source"] for c in loss.data["overridden"]] == [
        "checkpoint checkpoints/epoch_70.pt",
        "metrics/training_metrics.json",
        "manifest",
    ]

    without_checkpoint = run_checks(policy, subject_for(run, Calls(), manifest=manifest))
    coverage = by_name(without_checkpoint)["coverage > 0.95"]
    assert not coverage.passed
    assert coverage.detail == "coverage = 0.6 (from metrics/training_metrics.json), needs > 0.95"


SOURCES = ["manifest", "metrics/training_metrics.json", "checkpoint checkpoints/epoch_70.pt", "submitted"]


@pytest.mark.parametrize("source", SOURCES)
def test_a_threshold_passes_or_fails_on_a_metric_from_each_source(tmp_path: Path, source: str) -> None:
    run = build_run(tmp_path, training_metrics='{"score": 0.5}' if source == SOURCES[1] else "{}")
    if source == SOURCES[2]:
        save_training_checkpoint(run / "checkpoints" / "epoch_70.pt", metrics={"score": 0.5})
    manifest = manifest_for(run, metrics={"score": 0.5} if source == "manifest" else {})
    submitted = {"score": 0.5} if source == "submitted" else {}
    subject = subject_for(run, Calls(), checkpoint="epoch_70", manifest=manifest, submitted=submitted)

    report = run_checks(policy_of({"metric": "score > 0.9"}, {"metric": "score < 0.9"}), subject)

    failing, passing = report.checks
    assert not failing.passed and passing.passed
    assert failing.detail == f"score = 0.5 (from {source}), needs > 0.9"
    assert report.metrics["score"].source == source


def test_submitted_results_claiming_to_pass_are_judged_by_the_policy(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    submitted = {"passed": True, "coverage_report": {"coverage": 0.5, "passed": True}, "notes": "all good"}
    policy = policy_of({"metric": "coverage_report.coverage > 0.95"}, {"metric": "passed == 1"})

    report = run_checks(policy, subject_for(run, Calls(), submitted=submitted))

    coverage, passed = report.checks
    assert not report.passed
    assert coverage.detail == "coverage_report.coverage = 0.5 (from submitted), needs > 0.95"
    assert not passed.passed and passed.detail.startswith("metric 'passed' not found")  # a boolean is no metric
    assert report.submitted == submitted  # stored as given, for the record


def test_a_missing_metric_names_the_metric_and_the_sources_looked_at(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    report = run_checks(policy_of({"metric": "coverage > 0.95"}), subject_for(run, Calls(), checkpoint="best"))
    (check,) = report.checks
    assert not check.passed
    assert check.detail == (
        "metric 'coverage' not found; looked in: manifest, metrics/training_metrics.json, "
        "checkpoint checkpoints/best.safetensors, submitted"
    )


def test_an_unreadable_metrics_file_fails_what_it_could_have_overridden(tmp_path: Path) -> None:
    run = build_run(tmp_path, training_metrics='{"coverage": 0.99,}')
    manifest = manifest_for(run, metrics={"coverage": 0.99})
    subject = subject_for(run, Calls(), manifest=manifest, submitted={"gap": 0.01})

    report = run_checks(policy_of({"metric": "coverage > 0.95"}, {"metric": "gap < 0.05"}), subject)

    coverage, gap = report.checks
    assert not coverage.passed
    assert coverage.detail.startswith(
        "cannot judge coverage = 0.99 (from manifest): a source that would override it is unreadable: "
        "encoder-v5@1:metrics/training_metrics.json: invalid JSON at line 1"
    )
    assert gap.passed  # submitted results outrank the broken file

    (missing,) = run_checks(policy_of({"metric": "absent > 0"}), subject).checks
    assert missing.detail.startswith("metric 'absent' not found; looked in: manifest, metrics/training_metrics.json")
    assert "(unreadable: encoder-v5@1:metrics/training_metrics.json: invalid JSON" in missing.detail


def test_checkpoint_metrics_without_a_model_entry_block_what_they_could_override(tmp_path: Path) -> None:
    run = build_run(tmp_path, training_metrics='{"coverage": 0.99}')
    subject = subject_for(run, Calls(), checkpoint="epoch_70", model_config=None)
    (check,) = run_checks(policy_of({"metric": "coverage > 0.95"}), subject).checks
    assert not check.passed
    assert check.detail == (
        "cannot judge coverage = 0.99 (from metrics/training_metrics.json): a source that would override it is "
        "unreadable: encoder-v5@1:checkpoints/epoch_70.pt: no model entry; run 'modelyard reinspect encoder-v5@1'"
    )


def test_submitted_results_that_are_not_json_are_refused_before_any_check(tmp_path: Path) -> None:
    calls = Calls()
    subject = subject_for(build_run(tmp_path), calls, submitted={"coverage": float("nan")})
    with pytest.raises(InvalidInputError, match=r"field 'validation_results': cannot be written as canonical JSON"):
        run_checks(default_policy(), subject)
    assert calls.verify == 0


# -- checkpoints ---------------------------------------------------------------------------------


def test_an_unknown_checkpoint_lists_the_ones_that_exist_before_any_check(tmp_path: Path) -> None:
    calls = Calls()
    subject = subject_for(build_run(tmp_path), calls, checkpoint="epoch_7")
    with pytest.raises(InvalidInputError) as caught:
        run_checks(default_policy(), subject)
    assert str(caught.value) == (
        "field 'checkpoint': encoder-v5@1 has no checkpoint 'epoch_7'; its checkpoints are: best, epoch_70, latest"
    )
    assert calls == Calls()  # nothing was verified, read, inspected or exported


def test_a_checkpoint_by_file_name_and_a_version_without_checkpoints(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    report = run_checks(policy_of({"metric": "epoch == 70"}), subject_for(run, Calls(), checkpoint="epoch_70.pt"))
    assert report.passed and report.checkpoint == "epoch_70.pt"

    shutil.rmtree(run / "checkpoints")
    with pytest.raises(InvalidInputError, match=r"encoder-v5@1 has no checkpoint files under checkpoints/"):
        run_checks(default_policy(), subject_for(run, Calls(), checkpoint="best"))


# -- commands ------------------------------------------------------------------------------------


def python_command(name: str, script: str, timeout: float = 60) -> dict[str, Any]:
    return {
        "command": {"name": name, "run": [sys.executable, "-c", textwrap.dedent(script), "{path}"], "timeout": timeout}
    }


CHECKS_THE_EXPORT = """
    import os, sys
    path = sys.argv[1]
    assert os.environ["MODELYARD_ARTIFACT_DIR"] == path
    assert os.environ["MODELYARD_CHECKPOINT"] == os.path.join(path, "checkpoints", "epoch_70.pt")
    assert os.environ["MODELYARD_REF"] == "encoder-v5@1"
    assert os.path.isfile(os.path.join(path, "checkpoints", "epoch_70.pt"))
    assert sys.stdin.read() == ""
    print("holdout ok")
"""


def test_commands_run_on_one_export_that_is_removed_afterwards(tmp_path: Path) -> None:
    calls = Calls()
    policy = policy_of(python_command("eval-holdout", CHECKS_THE_EXPORT), python_command("again", CHECKS_THE_EXPORT))

    report = run_checks(policy, subject_for(build_run(tmp_path), calls, checkpoint="epoch_70"))

    assert report.passed, report.summary_lines()
    first = report.checks[0]
    assert (first.kind, first.detail, first.output) == ("command", "exited with status 0", "holdout ok\n")
    assert first.data["returncode"] == 0 and first.data["argv"][-1] == str(calls.exports[0])
    assert len(calls.exports) == 1  # exported once, for both commands
    assert not calls.exports[0].parent.exists()


def test_a_failing_command_fails_its_check_and_keeps_its_output(tmp_path: Path) -> None:
    script = """
        import sys
        print("evaluating", flush=True)
        print("holdout accuracy 0.41 is below 0.9", file=sys.stderr)
        sys.exit(3)
    """
    report = run_checks(policy_of(python_command("eval-holdout", script)), subject_for(build_run(tmp_path), Calls()))
    (check,) = report.checks
    assert not report.passed
    assert check.detail == "exited with status 3"
    assert check.output == "evaluating\nholdout accuracy 0.41 is below 0.9\n"


def test_a_chatty_command_keeps_the_last_64_kib(tmp_path: Path) -> None:
    script = """
        import sys
        for _ in range(3000):
            sys.stdout.write("x" * 99 + "\\n")
        sys.stdout.write("THE END\\n")
    """
    report = run_checks(policy_of(python_command("chatty", script)), subject_for(build_run(tmp_path), Calls()))
    (check,) = report.checks
    assert check.passed
    assert check.output is not None and len(check.output.encode()) == OUTPUT_TAIL_BYTES
    assert check.output.endswith("x\nTHE END\n")
    assert check.detail == "exited with status 0 (output cut to its last 64 KiB)"


def test_a_command_that_cannot_start_fails_its_check(tmp_path: Path) -> None:
    policy = policy_of({"command": {"name": "missing", "run": [str(tmp_path / "no-such-program"), "{path}"]}})
    (check,) = run_checks(policy, subject_for(build_run(tmp_path), Calls())).checks
    assert not check.passed
    assert check.detail == f"cannot start '{tmp_path / 'no-such-program'}': No such file or directory"


def test_a_failed_export_fails_every_command_without_retrying(tmp_path: Path) -> None:
    attempts: list[Path] = []

    def corrupt_export(directory: Path) -> None:
        attempts.append(directory)
        raise CorruptionError("stored bytes of config.yaml no longer match", path="encoder-v5@1:config.yaml")

    subject = replace(subject_for(build_run(tmp_path), Calls()), export_to=corrupt_export)
    policy = policy_of("files_present", python_command("one", "pass"), python_command("two", "pass"))

    files, one, two = run_checks(policy, subject).checks

    assert files.passed and not one.passed and not two.passed
    assert one.detail == (
        "cannot export encoder-v5@1 for the command: "
        "encoder-v5@1:config.yaml: stored bytes of config.yaml no longer match"
    )
    assert two.detail == one.detail
    assert len(attempts) == 1 and not attempts[0].parent.exists()


def test_run_command_keeps_stdout_apart_for_a_benchmark(tmp_path: Path) -> None:
    script = "import json, sys; print('warming up', file=sys.stderr); print(json.dumps({'p50_ms': 4.2}))"
    outcome = run_command(
        [sys.executable, "-c", script, "{path}"], timeout=60, artifact_dir=tmp_path, merge_stderr=False
    )
    assert outcome.passed and outcome.argv[-1] == str(tmp_path)
    assert json.loads(outcome.output) == {"p50_ms": 4.2}
    assert outcome.stderr == "warming up\n"


HANGS_AND_IGNORES_SIGTERM = """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(os.getpgid(0), child.pid, flush=True)
    time.sleep(120)
"""


def live_processes() -> dict[int, int]:
    """Every live (not zombie) process and its process group, read from /proc."""
    groups = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # state, ppid, pgrp, ...
        except OSError:
            continue  # exited while we looked
        if fields[0] != "Z":
            groups[int(stat.parent.name)] = int(fields[2])
    return groups


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_a_hanging_command_is_killed_with_its_process_group_at_its_timeout(tmp_path: Path) -> None:
    policy = policy_of(python_command("hangs", HANGS_AND_IGNORES_SIGTERM, timeout=1))
    started = time.monotonic()

    (check,) = run_checks(policy, subject_for(build_run(tmp_path), Calls())).checks

    assert time.monotonic() - started < 15
    assert not check.passed
    assert check.detail == "timed out after 1 s; its process group was killed"
    assert check.data["timed_out"] is True and check.data["returncode"] == -9
    assert check.output is not None
    group, grandchild = (int(word) for word in check.output.split())
    alive = live_processes()
    assert grandchild not in alive
    assert group not in alive.values()


# -- the report ----------------------------------------------------------------------------------


def test_the_report_round_trips_through_json_and_refuses_a_false_pass(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    torch.save(TinyNet(), run / "checkpoints" / "whole.pt")
    policy = policy_of(
        "files_present",
        "pickles",
        {"metric": "coverage > 0.95"},
        python_command("fails", "import sys; print('no'); sys.exit(1)"),
        allowed_globals=[TINY_NET],
    )
    report = run_checks(policy, subject_for(run, Calls(), checkpoint="epoch_70", submitted={"passed": True}))

    text = report.to_json()
    assert ValidationReport.from_json(text) == report
    stored = json.loads(text)
    assert stored["passed"] is False and stored["allowed_globals_used"] == [TINY_NET]
    assert stored["metrics"] == {"coverage": {"value": 0.97, "source": "checkpoint checkpoints/epoch_70.pt"}}
    lines = report.summary_lines()
    assert [line.split("  ")[0] for line in lines] == ["PASS", "PASS", "PASS", "FAIL"]
    assert lines[3].startswith("FAIL  fails: exited with status 1 (") and lines[3].endswith(" s)")

    stored["passed"] = True
    with pytest.raises(InvalidInputError, match=r"report\.json: field '\(top level\)': 'passed' must be true exactly"):
        ValidationReport.from_json(json.dumps(stored), "report.json")


def test_callables_are_not_asked_for_what_the_policy_does_not_need(tmp_path: Path) -> None:
    calls = Calls()
    report = run_checks(policy_of({"metric": "best_val_loss < 0.4"}), subject_for(build_run(tmp_path), calls))
    assert report.passed
    assert calls == Calls(read=["metrics/training_metrics.json"])
