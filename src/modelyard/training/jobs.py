"""Job definitions: a learning form plus what to run, where, and under which limits.

`JobDefinition` is the one schema of a training job, published in the OpenAPI document
(`POST /api/v1/training/definitions`): the `LearningForm` fields, flat, and

* ``run``: ``{"kind": "builtin", "trainer": NAME}`` (a trainer built into the job runner) or
  ``{"kind": "command", "argv": [...], "workdir": "/abs/path", "env": {"NAME": "value"}}``;
* ``executor``: ``local`` (one process on this machine, the default) or ``torchrun`` (DDP through
  ``torch.distributed.run``: ``nproc_per_node`` processes on this machine, or on each of the fleet
  nodes ``nodes`` names, started over SSH and meeting at the first node's c10d rendezvous);
* ``pass_flags``: append the form's fields to the command as ``--flag value`` (off by default: a
  script that does not declare them would fail; the job file and environment carry them anyway);
* ``quantization_mode`` (seed 000 section 4): ``none``, ``post-training`` (quantize after
  training: the default for a quantized form) or ``quantization-aware`` (QAT). It must agree with
  the form: a quantized artifact needs post-training or quantization-aware, an unquantized one
  none;
* ``dp``: the differential-privacy parameters (epsilon, delta, max_grad_norm, noise_multiplier),
  required when privacy_level is dp and refused otherwise;
* ``timeout_seconds``: the job's wall-clock limit (default 24 h, at most 30 days);
* ``name``: an optional unique label.

`define_job` checks the form as `preview` does (the registry's vocabulary), and stores the
definition with the artifact name and training_config_hash it produces, who saved it and when.
Definitions are immutable; `modelyard.training.runner.run_job` runs one.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from modelyard.training.form import LearningForm, Preview, preview, validation_error

if TYPE_CHECKING:
    from modelyard.catalog.job_definitions import StoredJobDefinition
    from modelyard.registry import Registry

DEFAULT_TIMEOUT_SECONDS = 86_400
MAX_TIMEOUT_SECONDS = 30 * 86_400
QUANTIZATION_MODES: tuple[str, ...] = ("none", "post-training", "quantization-aware")
_NO_NUL = r"^[^\x00]*$"
_NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # as a fleet file's node names

QuantizationMode = Literal["none", "post-training", "quantization-aware"]
Executor = Literal["local", "torchrun"]
EXECUTORS: tuple[str, ...] = ("local", "torchrun")
MAX_NPROC_PER_NODE = 64
MAX_NODES = 64
NodeName = Annotated[str, Field(pattern=_NODE_NAME)]
Argument = Annotated[str, Field(min_length=1, max_length=131_072, pattern=_NO_NUL)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, Field(max_length=131_072, pattern=_NO_NUL)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BuiltinRun(_Strict):
    """Run a trainer built into modelyard's job runner."""

    kind: Literal["builtin"]
    trainer: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="The built-in trainer's name (lowercase letters, digits and '-'); the job runner lists them.",
        examples=["tiny-classifier", "tiny-lm"],
    )


class CommandRun(_Strict):
    """Run a command (no shell): argv[0] is the program, the form's values reach it from the runner."""

    kind: Literal["command"]
    argv: list[Argument] = Field(
        min_length=1,
        max_length=1000,
        description="The program and its arguments, 1 to 1000 non-empty strings without NUL; no shell.",
        examples=[["python", "train.py", "--config", "form.json"]],
    )
    workdir: str | None = Field(
        default=None,
        max_length=4096,
        pattern=r"^/[^\x00]*$",
        description="Absolute directory on the executor to run in (default: the runner's job directory).",
    )
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        max_length=200,
        description="Extra environment variables (names: letters, digits, '_', not starting with a digit).",
    )


Run = Annotated[BuiltinRun | CommandRun, Field(discriminator="kind")]


class DifferentialPrivacy(_Strict):
    """DP-SGD parameters for privacy_level dp (seed 000 section 4): the clipping norm, δ, and
    exactly one of a noise multiplier or a target ε (from which the trainer derives the noise)."""

    max_grad_norm: float = Field(
        gt=0, le=1000, allow_inf_nan=False, description="Per-sample gradient clipping norm, above 0, at most 1000."
    )
    delta: float = Field(gt=0, lt=1, allow_inf_nan=False, description="δ, above 0 and below 1 (well below 1/N).")
    noise_multiplier: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        description="Noise multiplier, above 0, at most 1000; give this or target_epsilon, not both.",
    )
    target_epsilon: float | None = Field(
        default=None,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="The privacy budget ε to spend, above 0, at most 100; give this or noise_multiplier, not both.",
    )

    @model_validator(mode="after")
    def _exactly_one_noise_source(self) -> DifferentialPrivacy:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("dp needs exactly one of noise_multiplier or target_epsilon")
        return self


class JobDefinition(LearningForm):
    """A training job: the learning form's fields, what to run, where, and its limits."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "gpt-small-int8",
                    "component": "inference",
                    "base_model": "gpt-small-v1",
                    "task": "lm-finetune",
                    "max_seq_length": 1024,
                    "learning_rate": 2e-5,
                    "epochs": 3,
                    "quantize": "int8",
                    "quantization_mode": "quantization-aware",
                    "run": {"kind": "builtin", "trainer": "tiny-lm"},
                    "executor": "local",
                    "timeout_seconds": 7200,
                }
            ]
        },
    )

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$",
        description="An optional unique label for the definition (letters, digits, '.', '_', '@', '-'; at most 100).",
    )
    run: Run = Field(description="What to run: a built-in trainer or a command.")
    executor: Executor = Field(
        default="local",
        description=(
            "How the job runs: local (one process on this machine) or torchrun (DDP: nproc_per_node processes on "
            "this machine, or on each fleet node of nodes)."
        ),
    )
    nproc_per_node: int = Field(
        default=1,
        ge=1,
        le=MAX_NPROC_PER_NODE,
        description=f"Processes per node for the torchrun executor, 1 to {MAX_NPROC_PER_NODE}; local runs one.",
    )
    nodes: list[NodeName] = Field(
        default_factory=list,
        max_length=MAX_NODES,
        description=(
            "Fleet node names (the fleet file's) for a multi-node torchrun job, each once; the first hosts the c10d "
            "rendezvous. Empty: this machine."
        ),
    )
    pass_flags: bool = Field(
        default=False,
        description=(
            "Append the form's fields to the command as --flag value (a list field repeats its singular flag). "
            "Off by default: the job file (MODELYARD_JOB_FILE) carries them."
        ),
    )
    quantization_mode: QuantizationMode | None = Field(
        default=None,
        validate_default=True,
        description=(
            "none, post-training (quantize after training) or quantization-aware (QAT); must agree with quantize "
            "and precision. Default: post-training for a quantized form, else none."
        ),
    )
    dp: DifferentialPrivacy | None = Field(
        default=None,
        validate_default=True,
        description="Differential-privacy parameters: required when privacy_level is dp, refused otherwise.",
    )
    timeout_seconds: int = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description=f"Wall-clock limit in seconds, 1 to {MAX_TIMEOUT_SECONDS} (30 days); default 86400 (24 h).",
    )

    @field_validator("quantization_mode")
    @classmethod
    def _agrees_with_quantize(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "quantize" not in info.data or "precision" not in info.data:
            return value  # the form's own error says what is wrong
        quantize, precision = info.data["quantize"], info.data["precision"]
        quantized = quantize not in (None, False) or precision == "int8"
        if value is None:
            return "post-training" if quantized else "none"
        if quantized and value == "none":
            raise ValueError(
                "quantization_mode none contradicts a quantized form (quantize or precision int8); "
                "use post-training or quantization-aware"
            )
        if not quantized and value != "none":
            raise ValueError(
                f"quantization_mode {value} needs a quantized form: set quantize (true or a quantization name)"
            )
        return value

    @field_validator("dp")
    @classmethod
    def _required_for_dp(cls, value: DifferentialPrivacy | None, info: ValidationInfo) -> DifferentialPrivacy | None:
        privacy_level = info.data.get("privacy_level")
        if privacy_level == "dp" and value is None:
            raise ValueError(
                "privacy_level dp needs dp parameters: {max_grad_norm, delta, noise_multiplier or target_epsilon}"
            )
        if privacy_level is not None and privacy_level != "dp" and value is not None:
            raise ValueError(f"dp parameters apply only with privacy_level dp, not {privacy_level}")
        return value

    @field_validator("nproc_per_node")
    @classmethod
    def _several_processes_need_torchrun(cls, value: int, info: ValidationInfo) -> int:
        if value != 1 and info.data.get("executor") == "local":
            raise ValueError("nproc_per_node above 1 needs executor torchrun (local runs one process)")
        return value

    @field_validator("nodes")
    @classmethod
    def _nodes_need_torchrun(cls, value: builtins.list[str], info: ValidationInfo) -> builtins.list[str]:
        if value and info.data.get("executor") == "local":
            raise ValueError("nodes needs executor torchrun (a local job runs on this machine)")
        if len(set(value)) != len(value):
            raise ValueError("nodes lists a node twice")
        return value

    def form(self) -> LearningForm:
        """The learning form part alone."""
        return LearningForm.model_validate(self.model_dump(include=set(LearningForm.model_fields)))


class JobDefinitionRecord(BaseModel):
    """A saved job definition."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="The definition's number, from 1.")
    name: str | None
    artifact_name: str = Field(description="The artifact name its jobs produce (the preview's, when it was saved).")
    training_config_hash: str
    created_by: str
    created_at: datetime
    definition: JobDefinition


def load_definition(data: Mapping[str, Any], source: str | Path = "job definition") -> JobDefinition:
    """Validate plain values (a parsed YAML or JSON file) as a JobDefinition; InvalidInputError names the field."""
    try:
        return JobDefinition.model_validate(dict(data))
    except ValidationError as exc:
        raise validation_error(exc, source, JobDefinition) from None


def define_job(registry: Registry, definition: JobDefinition, created_by: str | None = None) -> JobDefinitionRecord:
    """Save a definition after checking its form against the registry (as `preview` does).

    `created_by` defaults to whom the registry acts for (the server's caller, else the OS user)."""
    from modelyard.catalog.job_definitions import JobDefinitionRecords

    checked: Preview = preview(definition.form(), registry)
    stored = JobDefinitionRecords(registry.catalog).add(
        name=definition.name,
        artifact_name=checked.artifact_name,
        training_config_hash=checked.training_config_hash,
        definition_json=definition.model_dump_json(),
        actor=created_by or _actor(),
    )
    return _record(stored)


def job_definitions(registry: Registry) -> builtins.list[JobDefinitionRecord]:
    """Every saved definition, oldest first."""
    from modelyard.catalog.job_definitions import JobDefinitionRecords

    return [_record(stored) for stored in JobDefinitionRecords(registry.catalog).list()]


def job_definition(registry: Registry, definition_id: int) -> JobDefinitionRecord:
    """One saved definition; NotFoundError when there is none with this id."""
    from modelyard.catalog.job_definitions import JobDefinitionRecords

    return _record(JobDefinitionRecords(registry.catalog).get(definition_id))


def _record(stored: StoredJobDefinition) -> JobDefinitionRecord:
    return JobDefinitionRecord(
        id=stored.id,
        name=stored.name,
        artifact_name=stored.artifact_name,
        training_config_hash=stored.training_config_hash,
        created_by=stored.created_by,
        created_at=stored.created_at,
        definition=JobDefinition.model_validate_json(stored.definition_json),
    )


def _actor() -> str:
    from modelyard.access import current_principal
    from modelyard.register.flow import current_user

    principal = current_principal.get()
    return principal.name if principal is not None else current_user()
