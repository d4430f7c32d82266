"""The learning form page (seed 000 section 3): its fields, read from `LearningForm` and
`JobDefinition`, and the form's text values turned into their types.

The mapping from form to artifact name, manifest and training_config_hash is
`modelyard.training.form.preview`, and saving a definition is `modelyard.training.jobs.define_job`,
both called as they are: this module only renders the fields (labels, descriptions and ranges
come from the pydantic models) and converts what a browser posts (every value a string) into the
JSON a client would send (the models validate strictly).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelyard.access import Principal
from modelyard.errors import ModelyardError
from modelyard.registry import Registry
from modelyard.training.builtin import TRAINERS
from modelyard.training.form import LearningForm, Preview, form_choices, preview
from modelyard.training.jobs import (
    QUANTIZATION_MODES,
    BuiltinRun,
    CommandRun,
    DifferentialPrivacy,
    JobDefinition,
    JobDefinitionRecord,
    define_job,
    job_definitions,
    load_definition,
)

# The form's sections, in seed 000's order, and each field's label.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Artifact", ("component", "base_model", "task", "major_version", "node_type")),
    ("Architecture (model_config)", ("embedding_dim", "hidden_size", "num_layers", "num_heads")),
    ("Input (input_spec)", ("max_seq_length", "sample_rate", "input_size")),
    ("Training (training_config)", ("batch_size", "learning_rate", "optimizer", "epochs", "weight_decay")),
    ("Precision and quantization", ("precision", "quantize")),
    (
        "Checkpoints, data and privacy",
        ("checkpoint_interval", "augmentations", "preprocessing_profile", "train_data_tags", "privacy_level"),
    ),
)
LABELS = {
    "component": "Component",
    "base_model": "Base model",
    "task": "Task",
    "major_version": "Major version",
    "node_type": "Node type",
    "embedding_dim": "Embedding dimension",
    "hidden_size": "Hidden size",
    "num_layers": "Layers",
    "num_heads": "Attention heads",
    "max_seq_length": "Max sequence length",
    "sample_rate": "Sample rate (Hz)",
    "input_size": "Input size",
    "batch_size": "Batch size",
    "learning_rate": "Learning rate",
    "optimizer": "Optimizer",
    "epochs": "Epochs",
    "weight_decay": "Weight decay",
    "precision": "Precision",
    "quantize": "Quantize",
    "checkpoint_interval": "Checkpoint interval (epochs)",
    "augmentations": "Augmentations",
    "preprocessing_profile": "Preprocessing profile",
    "train_data_tags": "Training data tags",
    "privacy_level": "Privacy level",
}
LIST_FIELDS = ("augmentations", "train_data_tags")
BLANKS: dict[str, str | None] = {
    "component": "choose…",
    "task": "choose…",
    "quantize": "no (unless precision is int8)",
    "privacy_level": None,
}
BASE_MODEL_SUGGESTIONS = ("vit-base16", "resnet50", "wav2vec2-base", "hubert-large", "gpt-small-v1", "gpt-medium-v1")
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class FormField:
    """One input of the page."""

    name: str
    label: str
    description: str
    kind: str  # text, number, select, list
    required: bool
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group label or "", values)
    minimum: float | None = None
    maximum: float | None = None
    step: str = "1"
    suggestions: tuple[str, ...] = ()
    blank: str | None = "—"  # a select's empty choice (None: there is none)


@dataclass(frozen=True)
class Section:
    title: str
    fields: tuple[FormField, ...]


@dataclass
class PreviewResult:
    """The live preview: the `Preview`, or why there is none yet."""

    preview: Preview | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (field, message)
    missing: list[str] = field(default_factory=list)


def sections(registry: Registry) -> list[Section]:
    """The form's fields with their labels, descriptions, ranges and the registry's choices."""
    choices = form_choices(registry)
    schema = LearningForm.model_json_schema()["properties"]
    select: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
        "component": (
            ("Modality (first part of the name)", tuple(choices.components)),
            ("Node role", tuple(choices.node_roles)),
        ),
        "task": (("", tuple(choices.tasks)),),
        "node_type": (("", tuple(choices.node_roles)),),
        "optimizer": (("", tuple(choices.optimizers)),),
        "precision": (("", tuple(choices.precisions)),),
        "quantize": (("", tuple(choices.quantizations)),),
        "privacy_level": (("", tuple(choices.privacy_levels)),),
    }
    result = []
    for title, names in SECTIONS:
        built = []
        for name in names:
            info = LearningForm.model_fields[name]
            number = _number_schema(schema[name])
            if name in select:
                kind = "select"
            elif name in LIST_FIELDS or name == "input_size":
                kind = "list" if name in LIST_FIELDS else "text"
            else:
                kind = "number" if number is not None and name != "input_size" else "text"
            built.append(
                FormField(
                    name=name,
                    label=LABELS.get(name, name),
                    description=info.description or "",
                    kind=kind,
                    required=info.is_required(),
                    choices=select.get(name, ()),
                    minimum=_bound(number, "minimum", "exclusiveMinimum"),
                    maximum=_bound(number, "maximum", "exclusiveMaximum"),
                    step="1" if number is not None and number.get("type") == "integer" else "any",
                    suggestions=BASE_MODEL_SUGGESTIONS if name == "base_model" else (),
                    blank=BLANKS.get(name, "—"),
                )
            )
        result.append(Section(title, tuple(built)))
    return result


def _number_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") in ("integer", "number"):
            return dict(option)
    return None


def _bound(number: dict[str, Any] | None, inclusive: str, exclusive: str) -> float | None:
    if number is None:
        return None
    value = number.get(inclusive, number.get(exclusive))
    return float(value) if value is not None else None


def initial_values(params: Mapping[str, str]) -> dict[str, str]:
    """The form's starting values: the model's defaults, then any given in the page's query."""
    values = {"major_version": "1", "privacy_level": "none"}
    values.update({key: value for key, value in params.items() if key in LearningForm.model_fields})
    return values


def form_data(values: Mapping[str, str]) -> dict[str, Any]:
    """The posted text values as the JSON a client would send: numbers as numbers, lists split on
    commas, quantize's true/false as booleans; empty fields are left out (their defaults apply)."""
    schema = LearningForm.model_json_schema()["properties"]
    data: dict[str, Any] = {}
    for name in LearningForm.model_fields:
        text = (values.get(name) or "").strip()
        if not text:
            continue
        number = _number_schema(schema[name])
        if name in LIST_FIELDS:
            data[name] = [part.strip() for part in text.split(",") if part.strip()]
        elif name == "input_size":
            parts = [part for part in re.split(r"[\s,x×]+", text) if part]
            numbers = [_as_number(part, integer=True) for part in parts]
            data[name] = numbers[0] if len(numbers) == 1 and "," not in text else numbers
        elif name == "quantize":
            data[name] = {"true": True, "false": False}.get(text.lower(), text)
        elif number is not None:
            data[name] = _as_number(text, integer=number.get("type") == "integer")
        else:
            data[name] = values.get(name)
    return data


def _as_number(text: str, *, integer: bool) -> Any:
    """The number the text spells; the text itself when it spells none (the form's validation
    then names the field)."""
    if integer:
        return int(text) if _INTEGER.match(text) else text
    try:
        return float(text)
    except ValueError:
        return text


def preview_of(registry: Registry, values: Mapping[str, str]) -> PreviewResult:
    """What `training.form.preview` says about the posted values (or why it cannot say yet)."""
    try:
        form = LearningForm.model_validate(form_data(values))
    except ValidationError as exc:
        result = PreviewResult()
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"][:1]) or "(form)"
            if error["type"] == "missing":
                result.missing.append(name)
            else:
                result.problems.append((name, str(error["msg"]).removeprefix("Value error, ")))
        return result
    try:
        return PreviewResult(preview=preview(form, registry))
    except ModelyardError as exc:
        return PreviewResult(problems=[(exc.field or "(form)", exc.message)])


# -- the job definition: the form plus what to run, where, and its limits ---------------------------

JOB_SECTION = "Job definition"
DP_FIELDS = ("max_grad_norm", "delta", "noise_multiplier", "target_epsilon")
DEFINITIONS_SHOWN = 10


@dataclass(frozen=True)
class SaveResult:
    """What saving a job definition did: the record, or the message saying why not."""

    ok: bool
    message: str
    record: JobDefinitionRecord | None = None


def job_section() -> Section:
    """The job fields: name, run (a built-in trainer or a command), executor, quantization mode,
    differential-privacy parameters and the time limit."""
    fields = JobDefinition.model_fields
    dp = DifferentialPrivacy.model_fields
    built = [
        FormField("name", "Definition name", fields["name"].description or "", "text", False),
        FormField(
            "run_kind",
            "Run",
            "A trainer built into the job runner, or a command (no shell).",
            "select",
            True,
            (("", ("builtin", "command")),),
            blank=None,
        ),
        FormField(
            "trainer",
            "Built-in trainer",
            BuiltinRun.model_fields["trainer"].description or "",
            "select",
            False,
            (("", tuple(TRAINERS)),),
            blank=None,
        ),
        FormField(
            "argv",
            "Command",
            (CommandRun.model_fields["argv"].description or "") + " Split like a shell line (quotes group words).",
            "text",
            False,
        ),
        FormField("workdir", "Working directory", CommandRun.model_fields["workdir"].description or "", "text", False),
        FormField(
            "executor",
            "Executor",
            fields["executor"].description or "",
            "select",
            False,
            (("", ("local", "torchrun")),),
            blank=None,
        ),
        FormField(
            "nproc_per_node",
            "Processes per node",
            fields["nproc_per_node"].description or "",
            "number",
            False,
            minimum=1,
            maximum=64,
        ),
        FormField("nodes", "Fleet nodes", fields["nodes"].description or "", "list", False),
        FormField(
            "quantization_mode",
            "Quantization mode",
            fields["quantization_mode"].description or "",
            "select",
            False,
            (("", QUANTIZATION_MODES),),
            blank="default (post-training when quantized, else none)",
        ),
        *(
            FormField(f"dp_{name}", f"DP {name}", dp[name].description or "", "number", False, step="any")
            for name in DP_FIELDS
        ),
        FormField("timeout_seconds", "Timeout (seconds)", fields["timeout_seconds"].description or "", "number", False),
    ]
    return Section(JOB_SECTION, tuple(built))


def job_initial_values() -> dict[str, str]:
    return {"run_kind": "builtin", "trainer": "tiny-classifier", "executor": "local", "timeout_seconds": "86400"}


def job_data(values: Mapping[str, str]) -> dict[str, Any]:
    """A JobDefinition's JSON from the posted values: the form's fields and the job's."""
    import shlex

    data = form_data(values)

    def text(name: str) -> str:
        return (values.get(name) or "").strip()

    if text("name"):
        data["name"] = text("name")
    kind = text("run_kind") or "builtin"
    if kind == "command":
        try:
            argv: Any = shlex.split(text("argv"))
        except ValueError:
            argv = text("argv")  # unbalanced quotes: the definition's validation names the field
        run: dict[str, Any] = {"kind": "command", "argv": argv}
        if text("workdir"):
            run["workdir"] = text("workdir")
    else:
        run = {"kind": kind, "trainer": text("trainer")}
    data["run"] = run
    if text("executor"):
        data["executor"] = text("executor")
    if text("nproc_per_node"):
        data["nproc_per_node"] = _as_number(text("nproc_per_node"), integer=True)
    nodes = [node.strip() for node in text("nodes").replace("\n", ",").split(",") if node.strip()]
    if nodes:
        data["nodes"] = nodes
    if text("quantization_mode"):
        data["quantization_mode"] = text("quantization_mode")
    dp = {name: _as_number(text(f"dp_{name}"), integer=False) for name in DP_FIELDS if text(f"dp_{name}")}
    if dp:
        data["dp"] = dp
    if text("timeout_seconds"):
        data["timeout_seconds"] = _as_number(text("timeout_seconds"), integer=True)
    return data


def save_definition(registry: Registry, values: Mapping[str, str], principal: Principal) -> SaveResult:
    """Save the posted job definition with `define_job` (as POST /api/v1/training/definitions)."""
    try:
        definition = load_definition(job_data(values), "job definition")
        record = define_job(registry, definition, created_by=principal.name)
    except ModelyardError as exc:
        return SaveResult(False, f"not saved: {exc.render()}")
    label = f" ({record.name})" if record.name else ""
    return SaveResult(
        True,
        f"Saved job definition #{record.id}{label}: it trains {record.artifact_name} "
        f"(training_config_hash {record.training_config_hash}).",
        record,
    )


def recent_definitions(registry: Registry) -> list[JobDefinitionRecord]:
    """The newest saved definitions, newest first."""
    return list(reversed(job_definitions(registry)))[:DEFINITIONS_SHOWN]
