"""The learning form of seed 000 section 3 and its preview: artifact name, manifest, training_config_hash.

`LearningForm` holds the form's fields, each with its range or choices (the descriptions are the
ones the OpenAPI document and the web UI show). `preview(form)` says what a training job run
from it will register; `POST /api/v1/training/preview` and `modelyard training preview` return
exactly this, so a program gets the same answer as the page.

The artifact name, ``[<component>-]<base-model>-<task>[-<quantization>]-v<major>`` (seed 000
section 2, built by `modelyard.names.format_name`):

1. component: a modality (vision, audio, text, spiking, and the registry's ``[vocabulary]
   components``) is the name's first part; a node role (sensing, encoder, inference, decision,
   memory, learning, aggregation, management) is not part of the name. Either way the manifest
   keeps it as ``component``; a node role is also the manifest's ``node_type``.
2. base model: `slug(base_model)` (lowercase; runs of other characters become '-'), whole,
   including a major of its own: ``gpt-small-v1`` stays ``gpt-small-v1``. The manifest keeps
   ``base_model`` as typed (``meta-llama/Llama-3.2-3B``).
3. purpose: the task, word for word (embed, classification, detection, lm-finetune, or any
   purpose of the registry's vocabulary).
4. quantization: present exactly when the artifact is quantized. ``quantize`` may be a
   quantization name (int8, int4, fp8, nf4, or a ``[vocabulary] quant_suffixes`` word: the suffix
   is that name), ``true`` (int8, as `modelyard register --quantize`), ``false`` or absent (then
   ``precision: int8`` alone still means an int8-quantized artifact: seed 000 maps precision to
   the ``quantized`` flag). The preview shows the final, quantized name.
5. major: ``major_version`` (default 1). Training the same form again is not a new major: the
   registry makes it the next version NAME@N of the same name. Raising the major (an
   incompatible new generation) is the user's decision; no registry moves it.

So ``component=vision, base_model=vit-base16, task=embed`` gives ``vision-vit-base16-embed-v1``,
and ``component=inference, base_model=gpt-small-v1, task=lm-finetune, quantize=int8`` gives
``gpt-small-v1-lm-finetune-int8-v1``. A base model whose slug would make the name read back
differently (``vision-transformer`` under a node role reads as component vision) is refused,
naming ``base_model``.

Precision and quantization: a quantized artifact's precision is its quantization, so
``precision`` must then be empty or equal to it; ``quantize: false`` with ``precision: int8``, and
``quantize`` with fp32/fp16/bf16, are refused naming ``quantize``. The manifest's precision is
the given one, else int8 for an int8 quantization, else absent (int4/fp8/nf4 are not manifest
precisions; the name carries them).

The manifest (every key the form determines; keys of unset fields are left out, sub-objects hold
only the given keys): schema_version, artifact_name, model_version, component, node_type,
base_model, task, embedding_dim, quantized, precision, training_config (batch_size,
learning_rate, optimizer, epochs, weight_decay: the seed's training settings, those given),
training_config_hash, train_data_tags, privacy_level, model_config (hidden_size, num_layers,
num_heads), input_spec (max_seq_length, sample_rate, input_size), checkpoint_policy
(checkpoint_interval, in epochs), data_prep_profile (augmentations, preprocessing_profile). It
validates as an `ArtifactManifest` once created_at and the file list are added.

training_config_hash is `modelyard.digest.training_config_hash(training_config)`: RFC 8785 JSON
normalisation, then SHA-256; ``1e-4`` and ``0.0001`` are one number and give one hash. Only the
training settings enter it, so two forms that train alike share a hash whatever their names.

With a registry, the vocabulary is the registry's (config.toml), and ``model_version`` is the
number the next registration under the name will get (1 for a new name): a prediction, since
another registration may come first. Without one, the seed's vocabulary and model_version 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from modelyard.digest import training_config_hash
from modelyard.errors import InvalidInputError
from modelyard.names import (
    MODALITY_COMPONENTS,
    NODE_TYPES,
    PRECISIONS,
    PRIVACY_LEVELS,
    SEED_PURPOSES,
    SEED_QUANT_SUFFIXES,
    Vocabulary,
    format_name,
    slug,
)

if TYPE_CHECKING:
    from modelyard.registry import Registry

# The ranges of the form's numbers: generous for real models, small enough to catch a typo.
MAX_DIM = 1_048_576
MAX_LAYERS = 4096
MAX_SEQ_LENGTH = 16_777_216
MAX_SAMPLE_RATE = 1_536_000
MAX_BATCH_SIZE = 1_048_576
MAX_LEARNING_RATE = 10.0
MAX_EPOCHS = 100_000
MAX_MAJOR = 999
MAX_LIST_ITEMS = 100
OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "sgd", "adafactor", "lamb", "lion", "rmsprop")
SEED_TASKS: tuple[str, ...] = ("embed", "classification", "lm-finetune", "detection")
_OTHER_PURPOSES = tuple(purpose for purpose in SEED_PURPOSES if purpose not in SEED_TASKS)
DEFAULT_QUANTIZATION = "int8"
_WORD = r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$"
_NAME_PART = r"^[A-Za-z0-9][A-Za-z0-9_.:=+-]{0,99}$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"

Optimizer = Literal["adamw", "adam", "sgd", "adafactor", "lamb", "lion", "rmsprop"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
PrivacyLevel = Literal["none", "dp", "secure-agg"]
NodeType = Literal["sensing", "encoder", "inference", "decision", "memory", "learning", "aggregation", "management"]
Dimension = Annotated[int, Field(ge=1, le=MAX_DIM)]
DataTag = Annotated[str, Field(min_length=1, max_length=200, pattern=_NO_CONTROL)]
Augmentation = Annotated[str, Field(pattern=_NAME_PART)]


def _choices(words: tuple[str, ...]) -> str:
    return ", ".join(words)


class LearningForm(BaseModel):
    """The learning form of seed 000 section 3: what to train, and how."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "component": "vision",
                    "base_model": "vit-base16",
                    "task": "embed",
                    "embedding_dim": 768,
                    "precision": "fp16",
                    "quantize": False,
                    "batch_size": 256,
                    "epochs": 10,
                },
                {
                    "component": "inference",
                    "base_model": "gpt-small-v1",
                    "task": "lm-finetune",
                    "max_seq_length": 1024,
                    "learning_rate": 2e-5,
                    "epochs": 3,
                    "quantize": "int8",
                },
            ]
        },
    )

    component: str = Field(
        max_length=63,
        pattern=_WORD,
        description=(
            f"A modality ({_choices(MODALITY_COMPONENTS)}, or a word the registry's [vocabulary] components adds): "
            f"the artifact name's first part. Or a node role ({_choices(NODE_TYPES)}): not part of the name, "
            "recorded as the manifest's node_type. Either way the manifest's component."
        ),
        examples=["vision", "inference"],
    )
    base_model: str = Field(
        min_length=1,
        max_length=200,
        pattern=_NO_CONTROL,
        description=(
            "The pre-trained base (vit-base16, wav2vec2-base, gpt-small-v1, meta-llama/Llama-3.2-3B): the manifest's "
            "base_model as typed; lowercased with other characters as '-' it is the name's base-model part, whole "
            "(gpt-small-v1 keeps its -v1)."
        ),
        examples=["vit-base16", "gpt-small-v1"],
    )
    task: str = Field(
        max_length=63,
        pattern=_WORD,
        description=(
            f"The task: {_choices(SEED_TASKS)} (also {_choices(_OTHER_PURPOSES)} "
            "and the registry's [vocabulary] purposes). The manifest's task and the name's purpose, word for word."
        ),
        examples=list(SEED_TASKS),
    )
    major_version: int = Field(
        default=1,
        ge=1,
        le=MAX_MAJOR,
        description=(
            f"The name's -v<major>, 1 to {MAX_MAJOR}. Retraining keeps the major (the registry numbers the new "
            "version NAME@N); raise it only for an incompatible generation."
        ),
    )
    node_type: NodeType | None = Field(
        default=None,
        description=(
            f"The manifest's node_type ({_choices(NODE_TYPES)}). Implied by a node-role component; with a modality "
            "component it is left out unless given here."
        ),
    )
    embedding_dim: Dimension | None = Field(
        default=None, description=f"Embedding dimension, 1 to {MAX_DIM}: the manifest's embedding_dim."
    )
    hidden_size: Dimension | None = Field(
        default=None, description=f"Hidden size, 1 to {MAX_DIM}: model_config.hidden_size."
    )
    num_layers: int | None = Field(
        default=None, ge=1, le=MAX_LAYERS, description=f"Number of layers, 1 to {MAX_LAYERS}: model_config.num_layers."
    )
    num_heads: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LAYERS,
        description=(
            f"Attention heads, 1 to {MAX_LAYERS}, dividing hidden_size when both are given: model_config.num_heads."
        ),
    )
    max_seq_length: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SEQ_LENGTH,
        description=f"Longest input sequence in tokens, 1 to {MAX_SEQ_LENGTH}: input_spec.max_seq_length.",
    )
    sample_rate: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SAMPLE_RATE,
        description=f"Audio sample rate in Hz, 1 to {MAX_SAMPLE_RATE}: input_spec.sample_rate.",
    )
    input_size: Dimension | Annotated[list[Dimension], Field(min_length=1, max_length=5)] | None = Field(
        default=None,
        description=(
            f"Input size: one number (224) or up to 5 dimensions ([3, 224, 224]), each 1 to {MAX_DIM}: "
            "input_spec.input_size."
        ),
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description=f"Batch size, 1 to {MAX_BATCH_SIZE}: training_config.batch_size.",
    )
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=MAX_LEARNING_RATE,
        allow_inf_nan=False,
        description=(
            f"Learning rate, above 0 and at most {MAX_LEARNING_RATE:g} (2e-5 and 0.00002 are the same number and "
            "hash alike): training_config.learning_rate."
        ),
    )
    optimizer: Optimizer | None = Field(
        default=None, description=f"Optimizer, one of {_choices(OPTIMIZERS)}: training_config.optimizer."
    )
    epochs: int | None = Field(
        default=None, ge=1, le=MAX_EPOCHS, description=f"Epochs, 1 to {MAX_EPOCHS}: training_config.epochs."
    )
    weight_decay: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Weight decay, 0 to 1: training_config.weight_decay.",
    )
    precision: Precision | None = Field(
        default=None,
        description=(
            f"The artifact's precision, one of {_choices(PRECISIONS)}: the manifest's precision; int8 means a "
            "quantized artifact (quantized: true, name suffix -int8)."
        ),
    )
    quantize: bool | Annotated[str, Field(max_length=63, pattern=_WORD)] | None = Field(
        default=None,
        description=(
            f"Quantize after training: false, true (= int8) or a quantization name ({_choices(SEED_QUANT_SUFFIXES)}, "
            "or a [vocabulary] quant_suffixes word). Sets quantized: true and appends -<name> to the artifact "
            "name. A quantized artifact's precision is empty or its quantization."
        ),
        examples=[False, True, "int8"],
    )
    checkpoint_interval: int | None = Field(
        default=None,
        ge=1,
        le=MAX_EPOCHS,
        description=(
            "Save a checkpoint every N epochs (besides best and latest), 1 to epochs: "
            "checkpoint_policy.checkpoint_interval."
        ),
    )
    augmentations: list[Augmentation] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description=(
            f"Data augmentations in the order applied (random-crop, hflip, specaugment), at most {MAX_LIST_ITEMS}, "
            "each once: data_prep_profile.augmentations."
        ),
    )
    preprocessing_profile: str | None = Field(
        default=None,
        pattern=_NAME_PART,
        description="A named preprocessing profile (imagenet-224): data_prep_profile.preprocessing_profile.",
    )
    train_data_tags: list[DataTag] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description=f"The datasets trained on (imagenet-1k), at most {MAX_LIST_ITEMS}, each once: train_data_tags.",
    )
    privacy_level: PrivacyLevel = Field(
        default="none",
        description=(
            f"{_choices(PRIVACY_LEVELS)}: differential privacy or secure aggregation for the training job; "
            "the manifest's privacy_level."
        ),
    )

    @field_validator("base_model")
    @classmethod
    def _usable_base_model(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("base_model has leading or trailing spaces")
        if not slug(value):
            raise ValueError(f"base_model {value!r} has no letters or digits to name the artifact by")
        return value

    @field_validator("input_size", "quantize", mode="wrap")
    @classmethod
    def _one_message(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """A union's error as one message at the field (not one per member of the union)."""
        try:
            return handler(value)
        except ValidationError:
            if info.field_name == "input_size":
                raise ValueError(
                    f"input_size must be a whole number 1 to {MAX_DIM} or a list of 1 to 5 of them, got {value!r}"
                ) from None
            raise ValueError(
                f"quantize must be true, false or a quantization name such as int8, got {value!r}"
            ) from None

    @field_validator("num_heads")
    @classmethod
    def _heads_divide_hidden_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        hidden_size = info.data.get("hidden_size")
        if value is not None and hidden_size is not None and hidden_size % value:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {value}")
        return value

    @field_validator("quantize")
    @classmethod
    def _agrees_with_precision(cls, value: bool | str | None, info: ValidationInfo) -> bool | str | None:
        precision = info.data.get("precision")
        if value is False and precision == "int8":
            raise ValueError("quantize false contradicts precision int8 (an int8 artifact is quantized); drop one")
        quantization = DEFAULT_QUANTIZATION if value is True else value
        if isinstance(quantization, str) and precision is not None and precision != quantization:
            raise ValueError(
                f"quantize {value!r} contradicts precision {precision}: a quantized artifact's precision is its "
                f"quantization ({quantization}); leave precision empty"
                + (" or set it to int8" if quantization == "int8" else "")
            )
        return value

    @field_validator("checkpoint_interval")
    @classmethod
    def _within_epochs(cls, value: int | None, info: ValidationInfo) -> int | None:
        epochs = info.data.get("epochs")
        if value is not None and epochs is not None and value > epochs:
            raise ValueError(
                f"checkpoint_interval {value} exceeds epochs {epochs}: no periodic checkpoint would be saved"
            )
        return value

    @field_validator("augmentations", "train_data_tags")
    @classmethod
    def _each_once(cls, value: list[str], info: ValidationInfo) -> list[str]:
        seen: set[str] = set()
        for item in value:
            if item in seen:
                raise ValueError(f"{info.field_name} lists {item!r} twice")
            seen.add(item)
        return value

    # -- what the form determines -----------------------------------------------------------------

    @property
    def quantization(self) -> str | None:
        """The quantization the job applies (the name's suffix), or None for an unquantized artifact."""
        if isinstance(self.quantize, str):
            return self.quantize
        if self.quantize is True or self.precision == "int8":
            return DEFAULT_QUANTIZATION
        return None

    def training_config(self) -> dict[str, Any]:
        """The training settings given (seed 000: batch_size, learning_rate, optimizer, epochs, weight_decay)."""
        values = {
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer,
            "epochs": self.epochs,
            "weight_decay": self.weight_decay,
        }
        return {key: value for key, value in values.items() if value is not None}


class Preview(BaseModel):
    """What a training job run from a learning form will register."""

    model_config = ConfigDict(frozen=True)

    artifact_name: str = Field(description="The final artifact name (quantized jobs: with the quantization suffix).")
    manifest: dict[str, Any] = Field(
        description="The artifact manifest the form determines (created_at and the files come from the run)."
    )
    training_config_hash: str = Field(description="SHA-256 of the RFC 8785 form of the manifest's training_config.")


class FormChoices(BaseModel):
    """The choices of the form's selection fields on one registry (its vocabulary included)."""

    model_config = ConfigDict(frozen=True)

    components: list[str] = Field(description="Modalities: the artifact name's first part.")
    node_roles: list[str] = Field(description="Node roles: also valid components, never part of the name.")
    tasks: list[str]
    quantizations: list[str]
    precisions: list[str]
    optimizers: list[str]
    privacy_levels: list[str]


def form_choices(registry: Registry | None = None) -> FormChoices:
    vocabulary = registry.settings.vocabulary if registry is not None else Vocabulary()
    return FormChoices(
        components=list(vocabulary.components),
        node_roles=list(NODE_TYPES),
        tasks=list(vocabulary.purposes),
        quantizations=list(vocabulary.quant_suffixes),
        precisions=list(PRECISIONS),
        optimizers=list(OPTIMIZERS),
        privacy_levels=list(PRIVACY_LEVELS),
    )


def preview(form: LearningForm, registry: Registry | None = None) -> Preview:
    """The artifact name, manifest and training_config_hash a job run from `form` produces.

    Raises InvalidInputError naming the field when a choice is not in the vocabulary or the
    name could not be read back."""
    vocabulary = registry.settings.vocabulary if registry is not None else Vocabulary()
    _check_choices(form, vocabulary)
    quantization = form.quantization
    name = _artifact_name(form, quantization, vocabulary)
    training_config = form.training_config()
    config_hash = training_config_hash(training_config)
    node_type = form.component if form.component in NODE_TYPES else form.node_type
    precision = form.precision or ("int8" if quantization == "int8" else None)
    manifest: dict[str, Any] = {
        "schema_version": _schema_version(),
        "artifact_name": name,
        "model_version": _next_version(registry, name),
        "component": form.component,
        "node_type": node_type,
        "base_model": form.base_model,
        "task": form.task,
        "embedding_dim": form.embedding_dim,
        "quantized": quantization is not None,
        "precision": precision,
        "training_config": training_config,
        "training_config_hash": config_hash,
        "train_data_tags": list(form.train_data_tags),
        "privacy_level": form.privacy_level,
        "model_config": _given(hidden_size=form.hidden_size, num_layers=form.num_layers, num_heads=form.num_heads),
        "input_spec": _given(
            max_seq_length=form.max_seq_length,
            sample_rate=form.sample_rate,
            input_size=list(form.input_size) if isinstance(form.input_size, list) else form.input_size,
        ),
        "checkpoint_policy": _given(checkpoint_interval=form.checkpoint_interval),
        "data_prep_profile": _given(
            augmentations=list(form.augmentations) or None, preprocessing_profile=form.preprocessing_profile
        ),
    }
    manifest = {key: value for key, value in manifest.items() if value is not None}
    _check_manifest(manifest)
    return Preview(artifact_name=name, manifest=manifest, training_config_hash=config_hash)


def _check_choices(form: LearningForm, vocabulary: Vocabulary) -> None:
    if form.component not in vocabulary.components and form.component not in NODE_TYPES:
        raise InvalidInputError(
            f"component {form.component!r} is neither a modality ({_choices(vocabulary.components)}) nor a node role "
            f"({_choices(NODE_TYPES)}); add a modality under [vocabulary] components in the registry's config.toml",
            field="component",
        )
    if form.component in NODE_TYPES and form.node_type not in (None, form.component):
        raise InvalidInputError(
            f"node_type {form.node_type} contradicts component {form.component}, a node role; drop node_type",
            field="node_type",
        )
    if form.task not in vocabulary.purposes:
        raise InvalidInputError(
            f"task {form.task!r} is not one of {_choices(vocabulary.purposes)}; add it under [vocabulary] purposes "
            "in the registry's config.toml",
            field="task",
        )
    if isinstance(form.quantize, str) and form.quantize not in vocabulary.quant_suffixes:
        raise InvalidInputError(
            f"quantize {form.quantize!r} is not a quantization ({_choices(vocabulary.quant_suffixes)}); add it under "
            "[vocabulary] quant_suffixes in the registry's config.toml",
            field="quantize",
        )


def _artifact_name(form: LearningForm, quantization: str | None, vocabulary: Vocabulary) -> str:
    try:
        return format_name(
            base_model=form.base_model,
            purpose=form.task,
            component=form.component,
            quant=quantization,
            major=form.major_version,
            vocabulary=vocabulary,
        )
    except InvalidInputError as exc:
        if exc.field != "artifact_name":
            raise
        # The base model's slug makes the name too long or read back differently.
        message = exc.message.replace("; give --artifact-name explicitly", "")
        raise InvalidInputError(f"{message}; choose another base_model spelling", field="base_model") from None


def _given(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _schema_version() -> int:
    from modelyard.manifest import SCHEMA_VERSION

    return SCHEMA_VERSION


def _next_version(registry: Registry | None, name: str) -> int:
    if registry is None:
        return 1
    from modelyard.catalog.job_definitions import next_version_number

    return next_version_number(registry.catalog, name)


def _check_manifest(manifest: dict[str, Any]) -> None:
    """The preview must be a manifest: validate it with the time and an empty file list added."""
    from modelyard.manifest import ArtifactManifest, format_validation_error

    try:
        ArtifactManifest.model_validate({**manifest, "created_at": datetime.now(UTC), "files": []})
    except ValidationError as exc:
        raise format_validation_error(exc, "learning form") from None


# -- reading forms from files and plain dicts ------------------------------------------------------


def validation_error(exc: ValidationError, source: str | Path, model: type[BaseModel]) -> InvalidInputError:
    """One line naming the source, each bad field and its cause; `field` is the first bad field."""
    problems = []
    first_field: str | None = None
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        first_field = first_field or location
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            guess = difflib.get_close_matches(str(error["loc"][-1]), list(model.model_fields), n=1)
            message = "unknown field" + (f"; did you mean '{guess[0]}'?" if guess else "")
        problems.append(f"{location}: {message}")
    more = len(exc.errors()) - len(problems)
    if more > 0:
        problems.append(f"and {more} more")
    return InvalidInputError("; ".join(problems), path=source, field=first_field)


def load_form(data: Mapping[str, Any], source: str | Path = "learning form") -> LearningForm:
    """Validate plain values (a parsed YAML or JSON file) as a LearningForm; InvalidInputError names the field."""
    try:
        return LearningForm.model_validate(dict(data))
    except ValidationError as exc:
        raise validation_error(exc, source, LearningForm) from None
