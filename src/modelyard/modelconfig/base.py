"""What every typed model configuration shares (seed 002's `ModelConfig` trait, in Python).

A configuration is a frozen pydantic model whose `model_type` names its modality. Common fields
say what the files are (format, layout, parameter count, dtype, the weights files read, the
pickle scan); each subclass adds what its kind of model needs for inference. Two behaviours come
from seed 002: `is_compatible_with(runtime)` (answered by the runtime table in `runtimes.py`,
so that adding a runtime touches one place) and `inference_params()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

ModelType = Literal[
    "llm", "image", "audio", "video", "vision", "embedding", "adapter", "multimodal", "policy", "config", "unknown"
]
MODEL_TYPES: tuple[str, ...] = (
    "llm",
    "image",
    "audio",
    "video",
    "vision",
    "embedding",
    "adapter",
    "multimodal",
    "policy",
    "config",
    "unknown",
)
PickleVerdict = Literal["safe", "suspicious", "unsafe", "none"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class TensorIO(_Frozen):
    """A graph input or output (ONNX): name, element type and shape (ints, or names for dynamic
    dimensions such as "batch")."""

    name: str
    dtype: str | None = None
    shape: list[int | str | None] | None = None


class WeightsFile(_Frozen):
    """One weights file, as its header describes it."""

    path: str
    format: str  # safetensors, gguf, pytorch, torchscript, pickle, onnx
    size: int
    component: str | None = None  # a diffusers component folder (unet, vae, ...), a shard set, ...
    tensor_count: int | None = None
    parameter_count: int | None = None
    dtypes: dict[str, int] = Field(default_factory=dict)  # elements per dtype ("bf16", "q4_k", ...)
    quantization: str | None = None
    opset: int | None = None  # ONNX: the ai.onnx opset
    producer: str | None = None  # ONNX: the exporter (pytorch 2.5, tf2onnx 1.16, ...)
    inputs: list[TensorIO] = Field(default_factory=list)  # ONNX graph inputs
    outputs: list[TensorIO] = Field(default_factory=list)  # ONNX graph outputs
    # PyTorch training checkpoints: what the pickle holds besides the weights.
    epoch: int | None = None
    global_step: int | None = None
    has_optimizer_state: bool | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    contents: dict[str, str] = Field(default_factory=dict)  # top-level key -> kind
    metadata_keys: list[str] = Field(default_factory=list)  # safetensors __metadata__ / GGUF keys (names only)


class PickleFindingEntry(_Frozen):
    """A global a pickle names that is not on the allow-list of plain tensor checkpoints."""

    file: str
    member: str | None = None
    module: str
    name: str
    severity: Literal["unsafe", "suspicious", "allowed"]
    reason: str


class PickleScanSummary(_Frozen):
    """The verdict over every pickle of an artifact: `none` when it holds no pickle at all."""

    verdict: PickleVerdict = "none"
    files_scanned: int = 0
    findings: list[PickleFindingEntry] = Field(default_factory=list)


class InferenceParams(_Frozen):
    """Seed 002's inference parameters: generic fields plus a type-specific bag."""

    context_length: int | None = None
    batch_size: int | None = None
    additional: dict[str, JsonValue] = Field(default_factory=dict)


@dataclass(frozen=True)
class Compatibility:
    """Whether a runtime can serve an artifact, and why (or why not)."""

    runtime: str
    compatible: bool
    reason: str


@dataclass(frozen=True)
class CatalogFields:
    """The columns `list` filters on, read off any configuration."""

    model_type: str
    task: str | None
    format: str
    architecture: str | None
    family: str | None
    base_model: str | None
    quantization: str | None
    parameter_count: int | None
    dtype: str | None
    tags: tuple[str, ...]
    license: str | None
    author: str | None


class BaseModelConfig(_Frozen):
    """Fields every configuration has; subclasses set `model_type` and add their own."""

    model_type: ModelType
    task: str | None = None
    format: str = "none"  # the main weights format: safetensors, gguf, pytorch, torchscript, onnx, none
    layout: str = "files"  # huggingface, diffusers, peft, sentence-transformers, single-file, run, files
    parameter_count: int | None = None
    dtype: str | None = None  # the dtype holding most parameters: f32, bf16, f16, int8, q4_k_m, ...
    author: str | None = None
    files: list[str] = Field(default_factory=list)
    weights: list[WeightsFile] = Field(default_factory=list)
    pickle_scan: PickleScanSummary = Field(default_factory=PickleScanSummary)
    sources: list[str] = Field(default_factory=list)  # the files inspection read
    warnings: list[str] = Field(default_factory=list)

    # -- seed 002's trait -------------------------------------------------------------------

    def is_compatible_with(self, runtime: str) -> Compatibility:
        """Can `runtime` serve this artifact? Yes or no, with the reason."""
        from modelyard.modelconfig.runtimes import check_runtime

        return check_runtime(self, runtime)

    def compatibility(self) -> list[Compatibility]:
        """The answer for every known runtime."""
        from modelyard.modelconfig.runtimes import RUNTIMES

        return [self.is_compatible_with(runtime) for runtime in RUNTIMES]

    def inference_params(self) -> InferenceParams:
        return InferenceParams()

    # -- what the catalog keeps in columns ------------------------------------------------------

    def catalog_fields(self) -> CatalogFields:
        return CatalogFields(
            model_type=self.model_type,
            task=self.task,
            format=self.format,
            architecture=_text(self, "architecture"),
            family=_text(self, "model_family"),
            base_model=_text(self, "base_model"),
            quantization=_text(self, "quantization"),
            parameter_count=self.parameter_count,
            dtype=self.dtype,
            tags=tuple(getattr(self, "tags", ()) or ()),
            license=_text(self, "license"),
            author=self.author,
        )

    @property
    def weights_formats(self) -> set[str]:
        return {w.format for w in self.weights}

    def has_file(self, name: str) -> bool:
        """True when the artifact holds a file with this name (at any depth)."""
        return any(path == name or path.endswith("/" + name) for path in self.files)


def _text(config: BaseModelConfig, attribute: str) -> str | None:
    value: Any = getattr(config, attribute, None)
    return value if isinstance(value, str) and value else None
