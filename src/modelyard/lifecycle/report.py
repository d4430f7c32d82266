"""The validation report: what each check of a policy found for one version, as stored with it.

`ValidationReport` is a frozen pydantic model with a stable JSON form (`to_json` / `from_json`).
It keeps the policy it was judged by (normalised, and its hash), every check's verdict, detail,
duration and kept output, the metrics the thresholds used with the source each came from, the
validation results a caller submitted (stored, never trusted: the policy judged them), and the
suspicious pickle globals the policy allowed, so that each such approval is on record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from modelyard.errors import InvalidInputError

CheckKind = Literal["builtin", "metric", "command"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricValue(_Frozen):
    """A metric's value and where it came from: "manifest", "metrics/training_metrics.json",
    "checkpoint <path>" or "submitted"."""

    value: float
    source: str


class CheckResult(_Frozen):
    """One check's verdict. `detail` is one line saying why; `output` is the kept tail of a
    command's stdout and stderr (None for other checks); `data` holds what the check looked at."""

    name: str
    kind: CheckKind
    passed: bool
    duration_seconds: float = Field(ge=0)
    detail: str
    output: str | None = None
    data: dict[str, JsonValue] = Field(default_factory=dict)

    def summary_line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}  {self.name}: {self.detail} ({self.duration_seconds:.2f} s)"


class ValidationReport(_Frozen):
    """The outcome of running a policy's checks on one version (and checkpoint)."""

    ref: str
    checkpoint: str | None
    policy_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    policy: dict[str, JsonValue]
    passed: bool
    started_at: datetime
    finished_at: datetime
    checks: list[CheckResult] = Field(min_length=1)
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    submitted: dict[str, JsonValue] = Field(default_factory=dict)
    allowed_globals_used: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _passed_means_every_check_passed(self) -> ValidationReport:
        # A stored report is evidence for a promotion: it may not claim more than its checks show.
        if self.passed != all(check.passed for check in self.checks):
            raise ValueError("'passed' must be true exactly when every check passed")
        return self

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]

    def to_json(self) -> str:
        """The report as stored: indented JSON with a trailing newline."""
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "validation report") -> ValidationReport:
        """Read a stored report back; InvalidInputError naming `source` and the field if it is not one."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            error = exc.errors()[0]
            location = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = str(error["msg"]).removeprefix("Value error, ")
            raise InvalidInputError(message, path=source, field=location) from None

    def summary_lines(self) -> list[str]:
        """One line per check for the CLI: PASS/FAIL, name, detail, duration."""
        return [check.summary_line() for check in self.checks]
