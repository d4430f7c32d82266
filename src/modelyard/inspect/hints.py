"""What the registration says about an artifact, for when its files alone do not say enough.

Seed 000's fleet is mostly not Hugging Face folders: planners and controllers are bare PyTorch
checkpoints, schemas and pipelines are YAML, spiking encoders use layers no library names. The
manifest's component, task and node type, and the words of the artifact's name (`planner-rl-ppo-v1`,
`milvus-schema-v1`), type them instead. Files always win over hints when both speak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Hints:
    """Manifest fields an inspection may use: given by the user or the run's manifest."""

    artifact_name: str | None = None
    component: str | None = None
    task: str | None = None
    node_type: str | None = None
    base_model: str | None = None

    @property
    def words(self) -> set[str]:
        text = " ".join(v for v in (self.artifact_name, self.base_model, self.task) if v)
        return set(re.split(r"[^a-z0-9]+", text.lower())) - {""}


@dataclass(frozen=True)
class HintedType:
    model_type: str
    task: str | None
    family: str | None = None
    modality: str | None = None
    kind: str | None = None  # for config artifacts


# Name words -> (model type, task, family). Checked in order; the first word found wins.
_WORD_RULES: tuple[tuple[frozenset[str], HintedType], ...] = (
    (
        frozenset({"planner", "ppo", "sac", "dqn", "rl", "policy", "controller", "actor", "critic"}),
        HintedType("policy", "control"),
    ),
    (
        frozenset({"yolox", "yolo", "fasterrcnn", "rcnn", "detr", "detector", "detection"}),
        HintedType("vision", "detection"),
    ),
    (frozenset({"segformer", "segmentation", "maskrcnn"}), HintedType("vision", "segmentation")),
    (
        frozenset({"vit", "resnet50", "resnet", "convnext", "efficientnet", "dino", "dinov2"}),
        HintedType("vision", "embed"),
    ),
    (frozenset({"wav2vec2", "hubert", "wavlm", "whisper", "audio", "speech", "asr"}), HintedType("audio", "embed")),
    (
        frozenset({"sbert", "mpnet", "minilm", "bge", "e5", "sentence"}),
        HintedType("embedding", "embed", modality="text"),
    ),
    (frozenset({"gpt", "llama", "mistral", "qwen", "lm", "llm", "rag", "chat"}), HintedType("llm", "text-generation")),
    (frozenset({"snn", "dvs", "spiking"}), HintedType("embedding", "embed", family="snn", modality="event")),
    (frozenset({"ensemble", "multimodal", "clip", "llava"}), HintedType("multimodal", None)),
)
# Words that mark a non-model artifact of seed 000 section 1, and what kind it is.
_CONFIG_KINDS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"milvus", "qdrant", "faiss", "vector", "index"}), "vector-db-schema"),
    (frozenset({"schema"}), "schema"),
    (frozenset({"preproc", "preprocessing", "normalizer", "pipeline"}), "preprocessing-pipeline"),
    (frozenset({"monitoring", "prometheus", "grafana", "elk"}), "monitoring-config"),
    (frozenset({"auth", "rbac"}), "service-config"),
    (frozenset({"trainer", "ddp", "manager", "federator", "agg", "aggregator"}), "service-config"),
)
_CONFIG_NODE_TYPES = {"memory": "schema", "management": "service-config", "sensing": "preprocessing-pipeline"}


def hinted_type(hints: Hints) -> HintedType | None:
    """The type the manifest's fields and the name point to, when weights alone are not enough."""
    words = hints.words
    component = (hints.component or "").lower()
    task = (hints.task or "").lower()
    if hints.node_type == "decision":
        return HintedType("policy", "control")
    if component == "spiking":
        return (
            HintedType("embedding", "embed", family="snn", modality="event")
            if task == "embed"
            else HintedType("llm", "text-generation", family="snn")
        )
    if component == "vision":
        return HintedType("vision", _seed_task(task) or "embed")
    if component == "audio":
        return HintedType("audio", _seed_task(task) or "embed")
    if component == "text":
        if task in ("embed", ""):
            return HintedType("embedding", "embed", modality="text")
        return HintedType("llm", _seed_task(task) or "text-generation")
    if task == "lm-finetune":
        return HintedType("llm", "text-generation")
    if task == "detection":
        return HintedType("vision", "detection")
    for keywords, hinted in _WORD_RULES:
        if words & keywords:
            return hinted
    if task == "embed":
        return HintedType("embedding", "embed")
    return None


def config_kind(hints: Hints) -> str | None:
    """The kind of a weightless artifact the hints point to (a schema, a service config, ...)."""
    words = hints.words
    for keywords, kind in _CONFIG_KINDS:
        if words & keywords:
            return kind
    return _CONFIG_NODE_TYPES.get(hints.node_type or "")


def _seed_task(task: str) -> str | None:
    """Seed 000's form tasks in modelyard's task words."""
    return {"lm-finetune": "text-generation", "embed": "embed", "classification": "classification"}.get(task) or (
        task or None
    )
