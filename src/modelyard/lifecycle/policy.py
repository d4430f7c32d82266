"""Validation policies: the gates a version must pass to become validated, and the rules for
promoting it to production, read from a YAML 1.2 or JSON file.

    checks:
      - files_present                               # built-in checks, by name
      - manifest_complete: {fields: [base_model, task]}
      - metric: "coverage > 0.95"                   # a threshold on a named metric
      - metric: {name: best_val_loss, op: "<", value: 0.4}
      - command: {name: eval-holdout, run: ["python", "eval.py", "{path}"], timeout: 600}
    allowed_globals: [mypackage.model.Net]          # audited exceptions for suspicious pickle globals
    require_distinct_approver: true
    security_review: false
    benchmark: {run: ["python", "bench.py", "{path}"], timeout: 1800}

`load_policy` reads such a file into a `Policy` (frozen pydantic models, unknown keys refused);
every error names the file and the field path (`checks[3].metric`) and the cause.
`Policy.to_document()` is the normalised policy (loading it again gives the same policy) and
`Policy.sha256` its RFC 8785 hash, which a validation report records.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from modelyard.digest import canonical_sha256
from modelyard.errors import InvalidInputError
from modelyard.loaders import load_document
from modelyard.manifest import known_field_names
from modelyard.names import PRIVACY_LEVELS

BuiltinName = Literal["files_present", "readable", "pickles", "manifest_complete", "privacy_level"]
BUILTIN_CHECKS: tuple[str, ...] = ("files_present", "readable", "pickles", "manifest_complete", "privacy_level")
CHECK_KINDS: tuple[str, ...] = (*BUILTIN_CHECKS, "metric", "command")
Operator = Literal[">", ">=", "<", "<=", "==", "!="]
OPERATORS: tuple[str, ...] = (">", ">=", "<", "<=", "==", "!=")
DEFAULT_MANIFEST_FIELDS: tuple[str, ...] = ("base_model", "task", "training_config_hash", "precision")
DEFAULT_COMMAND_TIMEOUT = 600.0
DEFAULT_BENCHMARK_TIMEOUT = 1800.0
PATH_PLACEHOLDER = "{path}"
MAX_CHECK_NAME = 100

# "<metric> <op> <number>": the metric is anything up to the first operator character.
_THRESHOLD = re.compile(r"^\s*(?P<name>[^\s<>=!]+)\s*(?P<op>[<>=!]+)\s*(?P<value>\S+)\s*$")
_OPERATOR_HINT = "use one of " + ", ".join(OPERATORS)
_ModelT = TypeVar("_ModelT", bound=BaseModel)
_TOP_LEVEL_KEYS = ("checks", "allowed_globals", "require_distinct_approver", "security_review", "benchmark")


class _Frozen(BaseModel):
    # strict: a policy is a gate, so "0.5" is not a number and "yes" is not true.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BuiltinCheck(_Frozen):
    """A check modelyard implements itself. `fields` is used by manifest_complete only, `allowed`
    (the privacy levels a version may have) by privacy_level only."""

    kind: Literal["builtin"] = "builtin"
    name: BuiltinName
    fields: list[str] = Field(default_factory=list)
    allowed: list[str] = Field(default_factory=list)

    @property
    def check_name(self) -> str:
        return self.name


class MetricThreshold(_Frozen):
    """`metric op value`, e.g. coverage > 0.95: passes when the metric's value satisfies it."""

    kind: Literal["metric"] = "metric"
    name: str
    op: Operator
    value: float

    @field_validator("name")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if not value or len(value) > MAX_CHECK_NAME or any(character.isspace() for character in value):
            raise ValueError(f"a metric name is one word of at most {MAX_CHECK_NAME} characters, found {value!r}")
        return value

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"threshold {value} is not a finite number")
        return value

    @property
    def check_name(self) -> str:
        return f"{self.name} {self.op} {_number_text(self.value)}"

    def holds(self, actual: float) -> bool:
        """Does `actual` satisfy the threshold?"""
        comparisons = {
            ">": actual > self.value,
            ">=": actual >= self.value,
            "<": actual < self.value,
            "<=": actual <= self.value,
            "==": actual == self.value,
            "!=": actual != self.value,
        }
        return comparisons[self.op]


class _CommandFields(_Frozen):
    """A program to run: argv (no shell; `{path}` becomes the exported artifact directory)."""

    run: list[str]
    timeout: float

    @field_validator("run", mode="before")
    @classmethod
    def _split_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot split the command line: {exc}") from None
        return value

    @field_validator("run")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value or not value[0].strip():
            raise ValueError("empty command; give the program and its arguments, e.g. ['python', 'eval.py', '{path}']")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"timeout must be a positive number of seconds, found {_number_text(value)}")
        return value


class CommandCheck(_CommandFields):
    """A user program that judges the exported artifact: exit status 0 passes."""

    kind: Literal["command"] = "command"
    name: str
    timeout: float = DEFAULT_COMMAND_TIMEOUT

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.strip() or len(value) > MAX_CHECK_NAME or "\n" in value or "\r" in value:
            raise ValueError(f"a check name is one line of 1 to {MAX_CHECK_NAME} characters, found {value!r}")
        return value

    @property
    def check_name(self) -> str:
        return self.name


class BenchmarkCommand(_CommandFields):
    """The production benchmark: a program that writes its results as JSON on stdout."""

    timeout: float = DEFAULT_BENCHMARK_TIMEOUT


Check = Annotated[BuiltinCheck | MetricThreshold | CommandCheck, Field(discriminator="kind")]


class Policy(_Frozen):
    """A parsed policy. Build one with `load_policy`, `parse_policy` or `default_policy`."""

    checks: list[Check] = Field(min_length=1)
    allowed_globals: list[str] = Field(default_factory=list)
    require_distinct_approver: bool = False
    security_review: bool = False
    benchmark: BenchmarkCommand | None = None

    @field_validator("allowed_globals")
    @classmethod
    def _qualified_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[^\s.]+(\.[^\s.]+)+", name):
                raise ValueError(f"{name!r} is not a qualified 'module.name' global, e.g. mypackage.model.Net")
        return sorted(set(value))  # an allow-list: order and repeats carry no meaning

    def to_document(self) -> dict[str, JsonValue]:
        """The normalised policy, in the file's own form: loading it again gives this policy."""
        document: dict[str, JsonValue] = {
            "checks": [_check_document(check) for check in self.checks],
            "allowed_globals": list(self.allowed_globals),
            "require_distinct_approver": self.require_distinct_approver,
            "security_review": self.security_review,
            "benchmark": None,
        }
        if self.benchmark is not None:
            document["benchmark"] = {"run": list(self.benchmark.run), "timeout": self.benchmark.timeout}
        return document

    @property
    def sha256(self) -> str:
        """RFC 8785 SHA-256 of the normalised policy: which policy a report was judged by."""
        return canonical_sha256(self.to_document(), field="policy")


class _Problem(Exception):
    """A policy error at a field path, turned into InvalidInputError naming the file."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file (JSON for `.json`, else YAML 1.2)."""
    return parse_policy(load_document(path), path)


def default_policy() -> Policy:
    """The checks every version can pass without a policy file: its blobs intact, every file
    readable, no unsafe or unaudited pickle, and the manifest fields a model card needs."""
    return parse_policy(
        {"checks": ["files_present", "readable", "pickles", {"manifest_complete": {}}]},
        "the default policy",
    )


def parse_policy(document: JsonValue, source: str | Path = "policy") -> Policy:
    """Validate a policy already read into JSON values; errors name `source` and the field."""
    try:
        return _parse_document(document)
    except _Problem as problem:
        raise InvalidInputError(problem.message, path=source, field=problem.field) from None


# -- parsing -----------------------------------------------------------------------------------


def _parse_document(document: JsonValue) -> Policy:
    if not isinstance(document, dict):
        raise _Problem("(top level)", f"a policy must be a mapping with a 'checks' list, found {_describe(document)}")
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            raise _Problem(key, _unknown("key", key, _TOP_LEVEL_KEYS))
    if "checks" not in document:
        raise _Problem("checks", "missing; list the checks to run, e.g. [files_present, readable, pickles]")
    raw_checks = document["checks"]
    if not isinstance(raw_checks, list) or not raw_checks:
        raise _Problem("checks", f"must be a non-empty list of checks, found {_describe(raw_checks)}")
    checks = [_parse_check(entry, f"checks[{index}]") for index, entry in enumerate(raw_checks)]
    _refuse_repeated_names(checks)
    fields: dict[str, Any] = {**document, "checks": checks}
    benchmark = document.get("benchmark")
    if isinstance(benchmark, dict):
        fields["benchmark"] = _validate(BenchmarkCommand, benchmark, "benchmark")
    elif benchmark is not None:
        example = "{run: [python, bench.py, '{path}'], timeout: 1800}"
        raise _Problem("benchmark", f"expected a mapping like {example}, found {_describe(benchmark)}")
    return _validate(Policy, fields, "")


def _parse_check(entry: JsonValue, field: str) -> BuiltinCheck | MetricThreshold | CommandCheck:
    if isinstance(entry, str):
        kind, options = entry, None
    elif isinstance(entry, dict) and len(entry) == 1:
        ((kind, options),) = entry.items()
    else:
        example = "{metric: 'coverage > 0.95'}"
        raise _Problem(field, f"a check is a name or a one-key mapping like {example}, found {_describe(entry)}")
    if kind not in CHECK_KINDS:
        raise _Problem(field, _unknown("check", kind, CHECK_KINDS))
    if kind == "metric":
        return _parse_metric(options, f"{field}.metric")
    if kind == "command":
        return _parse_command(options, f"{field}.command")
    return _parse_builtin(kind, options, f"{field}.{kind}")


def _parse_builtin(name: str, options: JsonValue, field: str) -> BuiltinCheck:
    if name == "privacy_level":
        return _parse_privacy_level(options, field)
    if name != "manifest_complete":
        if options not in (None, {}):
            raise _Problem(field, f"the {name} check takes no options, found {_describe(options)}")
        return _validate(BuiltinCheck, {"name": name}, field)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise _Problem(field, f"expected a mapping like {{fields: [base_model, task]}}, found {_describe(options)}")
    for key in options:
        if key != "fields":
            raise _Problem(f"{field}.{key}", _unknown("key", key, ["fields"]))
    fields = options.get("fields", list(DEFAULT_MANIFEST_FIELDS))
    check = _validate(BuiltinCheck, {**options, "name": name, "fields": fields}, field)
    if not check.fields:
        raise _Problem(f"{field}.fields", "lists no field; name the manifest fields that must be set")
    known = known_field_names()
    for index, manifest_field in enumerate(check.fields):
        if manifest_field not in known:
            raise _Problem(f"{field}.fields[{index}]", _unknown("manifest field", manifest_field, known))
    return check


def _parse_metric(options: JsonValue, field: str) -> MetricThreshold:
    if isinstance(options, str):
        return _threshold_from_text(options, field)
    if isinstance(options, dict):
        op = options.get("op")
        if isinstance(op, str) and op not in OPERATORS:
            raise _Problem(f"{field}.op", f"unknown operator {op!r}; {_OPERATOR_HINT}")
        return _validate(MetricThreshold, options, field)
    raise _Problem(field, f"expected 'name op value' text or {{name, op, value}}, found {_describe(options)}")


def _threshold_from_text(text: str, field: str) -> MetricThreshold:
    match = _THRESHOLD.match(text)
    if match is None:
        raise _Problem(field, f"malformed threshold {text!r}; write '<metric> <op> <number>', e.g. 'coverage > 0.95'")
    name, op, value_text = match.group("name", "op", "value")
    if op not in OPERATORS:
        raise _Problem(field, f"unknown operator {op!r}; {_OPERATOR_HINT}")
    try:
        value = float(value_text)
    except ValueError:
        raise _Problem(field, f"malformed threshold {text!r}: {value_text!r} is not a number") from None
    if not math.isfinite(value):
        raise _Problem(field, f"malformed threshold {text!r}: {value_text!r} is not a finite number")
    return _validate(MetricThreshold, {"name": name, "op": op, "value": value}, field)


def _parse_command(options: JsonValue, field: str) -> CommandCheck:
    if not isinstance(options, dict):
        example = "{name: eval, run: [python, eval.py, '{path}']}"
        raise _Problem(field, f"expected a mapping like {example}, found {_describe(options)}")
    fields = dict(options)
    if "name" not in fields:
        fields["name"] = _default_command_name(options.get("run"))
    return _validate(CommandCheck, fields, field)


def _default_command_name(run: JsonValue) -> str:
    """A command without a name is named after its program (`python` for `python eval.py`)."""
    words = run if isinstance(run, list) else (run.split() if isinstance(run, str) else [])
    first = words[0] if words and isinstance(words[0], str) else ""
    return os.path.basename(first) or "command"


def _refuse_repeated_names(checks: list[BuiltinCheck | MetricThreshold | CommandCheck]) -> None:
    seen: dict[str, int] = {}
    for index, check in enumerate(checks):
        if check.check_name in seen:
            raise _Problem(
                f"checks[{index}]",
                f"repeats the check {check.check_name!r} of checks[{seen[check.check_name]}]; "
                "give each check once (commands by distinct names)",
            )
        seen[check.check_name] = index


def _validate(model: type[_ModelT], data: dict[str, Any], field: str) -> _ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = _join_location(field, error["loc"])
        raise _Problem(location or "(top level)", _pydantic_message(error, model)) from None


def _join_location(prefix: str, location: tuple[int | str, ...]) -> str:
    text = prefix
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part not in ("builtin", "metric", "command"):  # union tags pydantic adds to the path
            text = f"{text}.{part}" if text else str(part)
    return text


def _pydantic_message(error: Any, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        names = [name for name in model.model_fields if name != "kind"]
        return _unknown("key", str(error["loc"][-1]), names)
    if kind == "missing":
        return "missing"
    if kind == "literal_error" and error["loc"][-1:] == ("op",):
        return f"unknown operator {error['input']!r}; {_OPERATOR_HINT}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind != "value_error":
        message = f"{message.replace('Input should', 'should')}, found {_describe(error['input'])}"
    return message


def _unknown(what: str, given: str, known: tuple[str, ...] | list[str]) -> str:
    guess = difflib.get_close_matches(given, list(known), n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return f"unknown {what} {given!r}; {hint}known: {', '.join(known)}"


def _describe(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "true" if value is True else ("false" if value is False else "nothing (null)")
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, int | float):
        return f"the number {_number_text(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def _parse_privacy_level(options: JsonValue, field: str) -> BuiltinCheck:
    """`privacy_level: {allowed: [dp, secure-agg]}`: the version's manifest privacy_level must be one of them."""
    example = "{allowed: [dp]}"
    if not isinstance(options, dict) or set(options) != {"allowed"}:
        raise _Problem(field, f"expected a mapping like {example}, found {_describe(options)}")
    allowed = options["allowed"]
    if not isinstance(allowed, list) or not allowed:
        raise _Problem(f"{field}.allowed", f"lists no privacy level; e.g. {example}")
    for index, level in enumerate(allowed):
        if not isinstance(level, str) or level not in PRIVACY_LEVELS:
            raise _Problem(f"{field}.allowed[{index}]", _unknown("privacy level", str(level), PRIVACY_LEVELS))
    return _validate(BuiltinCheck, {"name": "privacy_level", "allowed": allowed}, field)


def _check_document(check: BuiltinCheck | MetricThreshold | CommandCheck) -> JsonValue:
    if isinstance(check, MetricThreshold):
        return {"metric": {"name": check.name, "op": check.op, "value": check.value}}
    if isinstance(check, CommandCheck):
        return {"command": {"name": check.name, "run": list(check.run), "timeout": check.timeout}}
    if check.name == "manifest_complete":
        return {"manifest_complete": {"fields": list(check.fields)}}
    if check.name == "privacy_level":
        return {"privacy_level": {"allowed": list(check.allowed)}}
    return check.name
