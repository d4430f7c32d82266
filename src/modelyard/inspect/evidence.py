"""What classification works from: the artifact's files, weights and hints (`Context`), what a
builder found (`Finding`), and helpers that pick the main weights among them."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.hints import Hints, hinted_type
from modelyard.inspect.tree import ModelTree
from modelyard.inspect.weights import WeightReading, WeightsReport

T = TypeVar("T")
MARKERS = ("adapter_config.json", "model_index.json", "modules.json", "config.json")
_CHECKPOINT_NAME = re.compile(
    r"^(best|latest|last|final|epoch[_-]?\d+|checkpoint[_-]?\d+|step[_-]?\d+|ckpt[_-]?\d+)(\b|_|\.|-)"
)


@dataclass
class Finding:
    """What one builder found: the class, its type-specific fields, and the weights it describes."""

    model_type: str
    fields: dict[str, Any]
    main: list[WeightReading]
    layout: str


@dataclass
class Context:
    tree: ModelTree
    paths: list[str]
    weights: WeightsReport
    hints: Hints
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pathset = set(self.paths)

    @contextmanager
    def open(self, path: str) -> Iterator[ByteSource]:
        if path not in self.sources:
            self.sources.append(path)
        with self.tree.open(path) as source:
            yield source

    def read(self, path: str, reader: Callable[[ByteSource], T]) -> T:
        with self.open(path) as source:
            return reader(source)

    def has(self, path: str) -> bool:
        return path in self.pathset


def model_root(paths: list[str]) -> str:
    """The folder of the shallowest marker file (config.json, ...): where a model folder starts."""
    marked = [p for p in paths if p.rpartition("/")[2] in MARKERS]
    if not marked:
        return ""
    shallowest = min(marked, key=lambda p: (p.count("/"), MARKERS.index(posixpath.basename(p)), p))
    return posixpath.dirname(shallowest)


# -- helpers ---------------------------------------------------------------------------------


def tensor_evidence(main: list[WeightReading]) -> Any:
    from modelyard.inspect.tensor_names import recognise

    shapes: dict[str, tuple[int, ...]] = {}
    for reading in main:
        shapes.update(reading.shapes)
    return recognise(shapes)


def hinted_model_type(ctx: Context) -> str | None:
    hinted = hinted_type(ctx.hints)
    return hinted.model_type if hinted else None


def hint_modality(ctx: Context) -> str | None:
    hinted = hinted_type(ctx.hints)
    return hinted.modality if hinted else None


def root_weights(ctx: Context, root: str) -> list[WeightReading]:
    """The weights of a model folder: the files directly in it (shards included), preferring
    safetensors over PyTorch .bin copies of the same weights."""
    direct = [r for r in ctx.weights.readings if posixpath.dirname(r.path) == root and r.shapes]
    safetensors = [r for r in direct if r.format == "safetensors"]
    return without_variants(safetensors or direct)


def without_variants(readings: list[WeightReading]) -> list[WeightReading]:
    """diffusers keeps `x.fp16.safetensors` beside `x.safetensors`: count each weight once."""
    names = {r.path for r in readings}
    kept = []
    for reading in readings:
        base = re.sub(r"\.(fp16|bf16|fp32|ema|non_ema)(\.[a-z]+)$", r"\2", reading.path)
        if base != reading.path and base in names:
            continue
        kept.append(reading)
    return kept


def pick_checkpoint(readings: list[WeightReading]) -> list[WeightReading]:
    """Seed 003's run layout keeps best, latest and epoch_N checkpoints: describe one of them
    (best, then latest, then the highest epoch or step), not their sum."""
    readings = _one_format_each(readings)
    named = {posixpath.basename(r.path).lower(): r for r in readings}
    checkpoints = [r for r in readings if _CHECKPOINT_NAME.match(posixpath.basename(r.path).lower())]
    if len(checkpoints) < 2 and len(readings) > 1 and not checkpoints:
        return readings  # several files of one model (shards, components)
    for preferred in ("best", "latest", "last", "final"):
        for name, reading in sorted(named.items()):
            if name.startswith(preferred) and reading in checkpoints:
                return [reading]
    if checkpoints:
        return [max(checkpoints, key=lambda r: [int(n) for n in re.findall(r"\d+", posixpath.basename(r.path))] or [0])]
    return readings[:1]


def _one_format_each(readings: list[WeightReading]) -> list[WeightReading]:
    """`model.pt` beside `model.safetensors` holds the same weights (a promoted version keeps
    both): count them once, preferring safetensors."""
    by_stem: dict[str, WeightReading] = {}
    for reading in readings:
        stem = reading.path.rsplit(".", 1)[0]
        kept = by_stem.get(stem)
        if kept is None or (reading.format == "safetensors" and kept.format != "safetensors"):
            by_stem[stem] = reading
    chosen = set(id(r) for r in by_stem.values())
    return [r for r in readings if id(r) in chosen]


def layout_of(main: list[WeightReading]) -> str:
    if any(_CHECKPOINT_NAME.match(posixpath.basename(r.path).lower()) for r in main):
        return "run"
    return "single-file" if len(main) == 1 else "files"
