"""Run a policy's checks on one version and build its report: seed 003's validation gate.

The caller supplies a `ValidationSubject` (the version's manifest and model entry, and callables
that re-hash, re-read, read and export its files), so nothing here depends on the store.
Built-in checks judge the files, the stored pickle scan and the manifest; metric checks compare
a metric, merged from the manifest, `metrics/training_metrics.json`, the chosen checkpoint and
the submitted results (highest precedence last), with a threshold; submitted results are judged,
never trusted. Command checks run a user's program on an exported copy in its own process group,
stdin closed, killed with its whole group at its timeout: a hang fails the check, never modelyard.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.digest import canonical_json
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.inspect.weights import suffix_of, weights_kind
from modelyard.lifecycle.commands import OUTPUT_TAIL_BYTES, run_command
from modelyard.lifecycle.policy import BuiltinCheck, CommandCheck, MetricThreshold, Policy
from modelyard.lifecycle.report import CheckKind, CheckResult, MetricValue, ValidationReport
from modelyard.loaders import parse_json
from modelyard.manifest import ArtifactManifest
from modelyard.modelconfig import BaseModelConfig, PickleFindingEntry

CHECKPOINT_FOLDER = "checkpoints"
TRAINING_METRICS_PATH = "metrics/training_metrics.json"
MAX_METRICS_FILE_BYTES = 16 * 1024 * 1024
MAX_LISTED_PROBLEMS = 100
# inspect/weights.py keeps at most this many findings in a stored scan: a list this long may be cut.
MAX_STORED_FINDINGS = 500
_VERDICT_RANK = {"none": 0, "safe": 0, "suspicious": 1, "unsafe": 2}


@dataclass(frozen=True)
class ValidationSubject:
    """What the checks need to know about one version, supplied by the caller.

    `checkpoint` names a file `checkpoints/<name>.*` of the version ("epoch_70", "best"), or is
    None. `submitted` are the validation results a caller passed in: stored and judged, never
    trusted. `verify_files` returns one problem text per missing or corrupt blob; `reinspect`
    reads every file again (InvalidModelFileError when one is unreadable); `read_file` returns a
    small file by its path; `export_to` writes the version's files into an empty directory."""

    ref: str
    manifest: ArtifactManifest
    model_config: BaseModelConfig | None
    checkpoint: str | None
    submitted: dict[str, Any]
    verify_files: Callable[[], list[str]]
    reinspect: Callable[[], BaseModelConfig]
    read_file: Callable[[str], bytes]
    export_to: Callable[[Path], None]
    # Where the exported copy goes (a directory the caller cleans up, also after a crash); the
    # system's temporary directory when None.
    scratch: Path | None = None


# -- checkpoints ---------------------------------------------------------------------------------


def checkpoint_paths(manifest: ArtifactManifest) -> list[str]:
    """The version's checkpoint files: weights files directly under `checkpoints/`."""
    return [entry.path for entry in manifest.files if _is_checkpoint_file(entry.path)]


def resolve_checkpoint(ref: str, manifest: ArtifactManifest, name: str) -> str:
    """The path of the checkpoint `name` ("epoch_70", "epoch_70.pt" or "checkpoints/epoch_70.pt"),
    or InvalidInputError listing the checkpoints the version has."""
    paths = checkpoint_paths(manifest)
    if not paths:
        raise InvalidInputError(
            f"{ref} has no checkpoint files under {CHECKPOINT_FOLDER}/; validate it without a checkpoint",
            field="checkpoint",
        )
    matches = [path for path in paths if name in (path, _file_name(path), _checkpoint_name(path))]
    if not matches:
        known = ", ".join(sorted({_checkpoint_name(path) for path in paths}))
        raise InvalidInputError(f"{ref} has no checkpoint {name!r}; its checkpoints are: {known}", field="checkpoint")
    if len(matches) > 1:
        files = ", ".join(_file_name(path) for path in matches)
        raise InvalidInputError(
            f"checkpoint {name!r} names several files of {ref} ({files}); give one file name, "
            f"e.g. {_file_name(matches[0])}",
            field="checkpoint",
        )
    return matches[0]


def _is_checkpoint_file(path: str) -> bool:
    folder, _, name = path.rpartition("/")
    return folder == CHECKPOINT_FOLDER and suffix_of(name) != "" and weights_kind(name, None) is not None


def _file_name(path: str) -> str:
    return path.rpartition("/")[2]


def _checkpoint_name(path: str) -> str:
    """`checkpoints/epoch_70.pt` -> `epoch_70`."""
    name = _file_name(path)
    return name[: len(name) - len(suffix_of(name))]


# -- metrics -------------------------------------------------------------------------------------


class _Unreadable(Exception):
    """A metrics source that exists but cannot be read; the message says why."""


@dataclass
class MetricTable:
    """Every metric found, each with its candidates best first (highest precedence wins)."""

    candidates: dict[str, list[MetricValue]] = field(default_factory=dict)
    looked_at: list[str] = field(default_factory=list)  # the sources, lowest precedence first
    unreadable: dict[str, str] = field(default_factory=dict)  # source -> why it could not be read

    def add_source(self, source: str, read: Callable[[], dict[str, float]]) -> None:
        """Add a source of higher precedence than every one added before."""
        self.looked_at.append(source)
        try:
            values = read()
        except _Unreadable as exc:
            self.unreadable[source] = str(exc)
            return
        for name, value in values.items():
            self.candidates.setdefault(name, []).insert(0, MetricValue(value=value, source=source))

    def lookup(self, name: str) -> MetricValue | None:
        found = self.candidates.get(name)
        return found[0] if found else None

    def unreadable_above(self, source: str | None) -> list[str]:
        """Why the sources that would outrank `source` (every source, for None) are unreadable:
        a value from below one of them may be one it overrides."""
        rank = self.looked_at.index(source) if source is not None else -1
        return [why for name, why in self.unreadable.items() if self.looked_at.index(name) > rank]


def collect_metrics(subject: ValidationSubject, checkpoint_path: str | None) -> MetricTable:
    """Merge the metrics of a version, lowest precedence first: manifest, training metrics file,
    the checkpoint's own metrics, submitted results."""
    table = MetricTable()
    table.add_source("manifest", lambda: flatten_numbers(subject.manifest.metrics))
    if any(entry.path == TRAINING_METRICS_PATH for entry in subject.manifest.files):
        table.add_source(TRAINING_METRICS_PATH, lambda: _training_metrics(subject))
    if checkpoint_path is not None:
        table.add_source(f"checkpoint {checkpoint_path}", lambda: _checkpoint_metrics(subject, checkpoint_path))
    table.add_source("submitted", lambda: flatten_numbers(subject.submitted))
    return table


def flatten_numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers in nested mappings, named by their keys joined with dots. Booleans are
    not numbers (so `"passed": true` is no metric); lists are skipped."""
    numbers: dict[str, float] = {}
    if isinstance(value, dict):
        for key, child in value.items():
            numbers.update(flatten_numbers(child, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, int | float) and not isinstance(value, bool) and prefix:
        with contextlib.suppress(OverflowError):
            number = float(value)
            if math.isfinite(number):
                numbers[prefix] = number
    return numbers


def _training_metrics(subject: ValidationSubject) -> dict[str, float]:
    where = f"{subject.ref}:{TRAINING_METRICS_PATH}"
    size = next(entry.size for entry in subject.manifest.files if entry.path == TRAINING_METRICS_PATH)
    if size > MAX_METRICS_FILE_BYTES:
        raise _Unreadable(f"{where}: larger than {MAX_METRICS_FILE_BYTES} bytes")
    try:
        text = subject.read_file(TRAINING_METRICS_PATH).decode("utf-8-sig")
        return flatten_numbers(parse_json(text, where))
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except ModelyardError as exc:
        raise _Unreadable(exc.render()) from None


def _checkpoint_metrics(subject: ValidationSubject, path: str) -> dict[str, float]:
    """The checkpoint's metrics as inspection recorded them. Those under a `metrics` key are also
    known by their short names (`metrics.coverage` as `coverage`), unless the top level has one."""
    if subject.model_config is None:
        raise _Unreadable(f"{subject.ref}:{path}: no model entry; run 'modelyard reinspect {subject.ref}'")
    weights = next((w for w in subject.model_config.weights if w.path == path), None)
    if weights is None:
        return {}
    numbers = dict(weights.metrics)
    for name, value in weights.metrics.items():
        short = name.removeprefix("metrics.")
        if short != name:
            numbers.setdefault(short, value)
    if weights.epoch is not None:
        numbers["epoch"] = float(weights.epoch)
    if weights.global_step is not None:
        numbers["global_step"] = float(weights.global_step)
    return numbers


# -- the run -------------------------------------------------------------------------------------


@dataclass
class _Verdict:
    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    output: str | None = None


def run_checks(policy: Policy, subject: ValidationSubject) -> ValidationReport:
    """Run every check of `policy` on `subject`, in order, and return the report. A checkpoint
    name that does not exist, or submitted results that are not JSON, raise InvalidInputError
    before any check runs."""
    started_at = datetime.now(UTC)
    checkpoint_path = None
    if subject.checkpoint is not None:
        checkpoint_path = resolve_checkpoint(subject.ref, subject.manifest, subject.checkpoint)
    # Stored in the report as plain JSON; NaN or objects are refused before any check runs.
    submitted = json.loads(canonical_json(subject.submitted, field="validation_results"))
    with _Validation(policy, subject, checkpoint_path) as validation:
        results = [validation.run(check) for check in policy.checks]
    return ValidationReport(
        ref=subject.ref,
        checkpoint=subject.checkpoint,
        policy_sha256=policy.sha256,
        policy=policy.to_document(),
        passed=all(result.passed for result in results),
        started_at=started_at,
        finished_at=datetime.now(UTC),
        checks=results,
        metrics=validation.metrics_used,
        submitted=submitted,
        allowed_globals_used=sorted(validation.allowed_globals_used),
    )


class _Validation:
    """The state of one run: the merged metrics (read once), the exported copy (made at most
    once, when a command needs it, and removed at the end), the pickle globals allowed."""

    def __init__(self, policy: Policy, subject: ValidationSubject, checkpoint_path: str | None) -> None:
        self.policy = policy
        self.subject = subject
        self.checkpoint_path = checkpoint_path
        self.metrics_used: dict[str, MetricValue] = {}
        self.allowed_globals_used: set[str] = set()
        self._metrics: MetricTable | None = None
        self._temporary: Path | None = None
        self._export_error: str | None = None

    def __enter__(self) -> _Validation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._temporary is not None:
            _remove_tree(self._temporary)

    def run(self, check: BuiltinCheck | MetricThreshold | CommandCheck) -> CheckResult:
        started = time.monotonic()
        kind: CheckKind
        if isinstance(check, MetricThreshold):
            kind, verdict = "metric", self.metric(check)
        elif isinstance(check, CommandCheck):
            kind, verdict = "command", self.command(check)
        elif check.name == "manifest_complete":
            kind, verdict = "builtin", self.manifest_complete(check.fields)
        elif check.name == "privacy_level":
            kind, verdict = "builtin", self.privacy_level(check.allowed)
        else:
            kind, verdict = "builtin", self.builtins[check.name]()
        return CheckResult(
            name=check.check_name,
            kind=kind,
            passed=verdict.passed,
            duration_seconds=time.monotonic() - started,
            detail=verdict.detail,
            output=verdict.output,
            data=verdict.data,
        )

    # -- built-ins ---------------------------------------------------------------------------------

    @property
    def builtins(self) -> dict[str, Callable[[], _Verdict]]:
        return {"files_present": self.files_present, "readable": self.readable, "pickles": self.pickles}

    def files_present(self) -> _Verdict:
        count = len(self.subject.manifest.files)
        try:
            problems = self.subject.verify_files()
        except ModelyardError as exc:
            return _Verdict(False, f"cannot verify the files: {exc.render()}")
        if not problems:
            return _Verdict(True, f"all {count} files present and intact")
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        detail = f"{len(problems)} of {count} files missing or corrupt: {shown}"
        return _Verdict(False, detail, {"problems": problems[:MAX_LISTED_PROBLEMS]})

    def readable(self) -> _Verdict:
        stored = self.subject.model_config
        if stored is None:
            return self._no_model_entry()
        try:
            config = self.subject.reinspect()
        except ModelyardError as exc:
            return _Verdict(False, f"unreadable: {exc.render()}")
        data = {"model_type": config.model_type, "format": config.format, "pickle_verdict": config.pickle_scan.verdict}
        now, then = config.pickle_scan.verdict, stored.pickle_scan.verdict
        if _VERDICT_RANK[now] > _VERDICT_RANK[then]:
            detail = (
                f"read again, the pickles are {now} but the stored model entry says {then}; "
                f"run 'modelyard reinspect {self.subject.ref}'"
            )
            return _Verdict(False, detail, data)
        detail = f"all {len(self.subject.manifest.files)} files read again ({config.model_type}, {config.format})"
        return _Verdict(True, detail, data)

    def pickles(self) -> _Verdict:
        config = self.subject.model_config
        if config is None:
            return self._no_model_entry()
        scan = config.pickle_scan
        if scan.verdict == "none":
            return _Verdict(True, "no pickle files", {"verdict": "none"})
        unsafe = [f for f in scan.findings if f.severity == "unsafe"]
        suspicious = [f for f in scan.findings if f.severity != "unsafe"]
        allowed = [f for f in suspicious if _qualified(f) in self.policy.allowed_globals]
        refused = [f for f in suspicious if f not in allowed]
        data = {
            "verdict": scan.verdict,
            "files_scanned": scan.files_scanned,
            "unsafe": _finding_texts(unsafe),
            "suspicious": _finding_texts(refused),
            "allowed": _finding_texts(allowed),
        }
        if unsafe or scan.verdict == "unsafe":
            shown = ", ".join(_finding_texts(unsafe)[:5]) or "(not listed in the stored scan)"
            return _Verdict(False, f"unsafe pickle globals: {shown}; never load these files", data)
        if refused:
            shown = ", ".join(_finding_texts(refused)[:5])
            detail = (
                f"suspicious pickle globals not in the policy's allowed_globals: {shown}; audit the code "
                "they import and list them in allowed_globals, or save the weights as safetensors"
            )
            return _Verdict(False, detail, data)
        if len(scan.findings) >= MAX_STORED_FINDINGS:
            detail = (
                f"the stored scan lists only its first {MAX_STORED_FINDINGS} findings; cannot confirm all are allowed"
            )
            return _Verdict(False, detail, data)
        self.allowed_globals_used.update(_qualified(f) for f in allowed)
        if allowed:
            names = ", ".join(sorted({_qualified(f) for f in allowed}))
            return _Verdict(
                True, f"{scan.files_scanned} pickles scanned; suspicious globals allowed by policy: {names}", data
            )
        return _Verdict(True, f"{scan.files_scanned} pickles scanned; only plain tensor globals", data)

    def manifest_complete(self, fields: list[str]) -> _Verdict:
        values = self.subject.manifest.model_dump(mode="json", by_alias=True)
        missing = [name for name in fields if values.get(name) in (None, "", [], {})]
        if missing:
            detail = (
                f"manifest fields not set: {', '.join(missing)}; set them in the run's artifact_manifest.json "
                "(or with register options) and register again"
            )
            return _Verdict(False, detail, {"missing": missing})
        return _Verdict(True, f"set: {', '.join(fields)}", {"fields": fields})

    def privacy_level(self, allowed: list[str]) -> _Verdict:
        level = self.subject.manifest.privacy_level
        if level not in allowed:
            detail = (
                f"privacy_level is {level or 'not set'}; the policy requires one of {', '.join(allowed)} "
                "(train with privacy_level dp or secure-agg, seed 000 section 4)"
            )
            return _Verdict(False, detail, {"privacy_level": level, "allowed": allowed})
        return _Verdict(True, f"privacy_level {level}", {"privacy_level": level})

    def _no_model_entry(self) -> _Verdict:
        ref = self.subject.ref
        return _Verdict(
            False, f"{ref} has no model entry (registered without inspection); run 'modelyard reinspect {ref}'"
        )

    # -- metrics -------------------------------------------------------------------------------

    def metric(self, check: MetricThreshold) -> _Verdict:
        if self._metrics is None:
            self._metrics = collect_metrics(self.subject, self.checkpoint_path)
        table = self._metrics
        found = table.lookup(check.name)
        blocked = table.unreadable_above(found.source if found else None)
        if found is None or blocked:
            return _metric_unavailable(check, found, blocked, table)
        self.metrics_used[check.name] = found
        value = _number(found.value)
        threshold = f"{check.op} {_number(check.value)}"
        data = {
            "value": found.value,
            "source": found.source,
            "overridden": [c.model_dump() for c in table.candidates[check.name][1:]],
        }
        if check.holds(found.value):
            return _Verdict(True, f"{check.name} = {value} (from {found.source}) {threshold}", data)
        return _Verdict(False, f"{check.name} = {value} (from {found.source}), needs {threshold}", data)

    # -- commands ------------------------------------------------------------------------------

    def command(self, check: CommandCheck) -> _Verdict:
        artifact_dir = self._exported()
        if artifact_dir is None:
            return _Verdict(False, f"cannot export {self.subject.ref} for the command: {self._export_error}")
        checkpoint_file = artifact_dir / self.checkpoint_path if self.checkpoint_path else None
        outcome = run_command(
            check.run,
            timeout=check.timeout,
            artifact_dir=artifact_dir,
            checkpoint_file=checkpoint_file,
            ref=self.subject.ref,
        )
        detail = outcome.describe(check.timeout)
        if outcome.truncated:
            detail += f" (output cut to its last {OUTPUT_TAIL_BYTES // 1024} KiB)"
        data = {"argv": outcome.argv, "returncode": outcome.returncode, "timed_out": outcome.timed_out}
        return _Verdict(outcome.passed, detail, data, outcome.output)

    def _exported(self) -> Path | None:
        """The exported copy, made on first use; None (with `_export_error`) if it failed."""
        if self._temporary is None:
            self._temporary = Path(tempfile.mkdtemp(prefix="modelyard-validate-", dir=self.subject.scratch))
            artifact_dir = self._temporary / "artifact"
            artifact_dir.mkdir()
            try:
                self.subject.export_to(artifact_dir)
            except ModelyardError as exc:
                self._export_error = exc.render()
        if self._export_error is not None:
            return None
        return self._temporary / "artifact"


def _metric_unavailable(
    check: MetricThreshold, found: MetricValue | None, blocked: list[str], table: MetricTable
) -> _Verdict:
    unreadable = "; ".join(blocked)
    if found is None:
        detail = f"metric {check.name!r} not found; looked in: {', '.join(table.looked_at)}"
        if blocked:
            detail += f" (unreadable: {unreadable})"
    else:
        detail = (
            f"cannot judge {check.name} = {_number(found.value)} (from {found.source}): "
            f"a source that would override it is unreadable: {unreadable}"
        )
    return _Verdict(False, detail, {"looked_at": table.looked_at, "unreadable": table.unreadable})


def _qualified(finding: PickleFindingEntry) -> str:
    return f"{finding.module}.{finding.name}"


def _finding_texts(findings: list[PickleFindingEntry]) -> list[str]:
    return [f"{_qualified(f)} in {f.file}" for f in findings]


def _number(value: float) -> str:
    return f"{value:.12g}"  # 0.97, not 0.96999999999999997; 7000, not 7000.0


def _remove_tree(root: Path) -> None:
    """Remove the exported copy, even where a command made files or folders read-only."""
    for folder, _, _ in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
    shutil.rmtree(root, ignore_errors=True)
