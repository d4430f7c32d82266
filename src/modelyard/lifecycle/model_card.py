"""The model card (`README.md`) of a promoted version, in the Hugging Face model-card format.

A card is YAML front matter between `---` lines (the Hub's metadata keys: license, base_model,
tags, datasets, pipeline_tag, language, library_name, model-index) followed by Markdown: what the
model is, how it was trained, its metrics and validation results, where it came from, and how to
load it. The front matter is emitted by hand in block style with every string double-quoted, so
values YAML would otherwise reinterpret (`no`, `on`, `other: x`, `1e-4`, `null`) stay strings for
every YAML reader, 1.1 and 1.2 alike.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError

__all__ = ["MODEL_CARD", "ModelCardInput", "block_yaml", "front_matter", "pipeline_tag_for", "write_model_card"]

MODEL_CARD = "README.md"
MAX_CONFIG_ROWS = 200  # a card lists a huge training config only in part; config.yaml has it all

# modelyard tasks (seed 000 purposes and inspection's tasks) -> Hub pipeline tags, where the
# task alone decides. "embed" and "classification" also depend on the modality.
_PIPELINE_TAGS = {
    "text-generation": "text-generation",
    "lm-finetune": "text-generation",
    "text2text-generation": "text2text-generation",
    "summarization": "summarization",
    "translation": "translation",
    "fill-mask": "fill-mask",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "multiple-choice": "multiple-choice",
    "detection": "object-detection",
    "segmentation": "image-segmentation",
    "depth-estimation": "depth-estimation",
    "keypoint-detection": "keypoint-detection",
    "speech-recognition": "automatic-speech-recognition",
    "audio-classification": "audio-classification",
    "speaker-verification": "audio-classification",
    "text-to-speech": "text-to-speech",
    "text-to-audio": "text-to-audio",
    "audio-generation": "text-to-audio",
    "text-to-image": "text-to-image",
    "image-to-image": "image-to-image",
    "image-generation": "unconditional-image-generation",
    "text-to-video": "text-to-video",
    "image-to-video": "image-to-video",
    "image-text-to-text": "image-text-to-text",
    "image-to-text": "image-to-text",
    "visual-question-answering": "visual-question-answering",
    "document-question-answering": "document-question-answering",
    "zero-shot-classification": "zero-shot-image-classification",
    "reinforcement-learning": "reinforcement-learning",
    "robotics": "robotics",
}
_CLASSIFICATION_TAGS = {
    "llm": "text-classification",
    "embedding": "text-classification",
    "audio": "audio-classification",
    "video": "video-classification",
    "vision": "image-classification",
    "image": "image-classification",
    "multimodal": "zero-shot-image-classification",
}
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ModelCardInput:
    """Everything a card says. `validation` holds (check name, passed, detail); `lineage` the refs
    the version descends from, oldest first (raw ref, then validated ref, ...). `files` are the
    weights files of the version, for the "how to load it" section."""

    artifact_name: str
    ref: str
    stage: str
    description: str | None = None
    license: str | None = None
    base_model: str | None = None
    tags: Sequence[str] = ()
    datasets: Sequence[str] = ()
    pipeline_tag: str | None = None
    languages: Sequence[str] = ()
    library_name: str | None = None
    training_config: Mapping[str, Any] = field(default_factory=dict)
    training_config_hash: str | None = None
    session_id: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    validation: Sequence[tuple[str, bool, str]] = ()
    lineage: Sequence[str] = ()
    files: Sequence[str] = ()


def pipeline_tag_for(task: str | None, model_type: str | None = None) -> str | None:
    """The Hub pipeline tag for a modelyard task (None when there is no fitting one)."""
    if task is None:
        return None
    if task == "embed":
        return "image-feature-extraction" if model_type in ("vision", "image") else "feature-extraction"
    if task == "classification":
        return _CLASSIFICATION_TAGS.get(model_type or "")  # a tabular or policy classifier has no Hub tag
    return _PIPELINE_TAGS.get(task)


def write_model_card(out_dir: Path, card: ModelCardInput) -> Path:
    """Write `out_dir/README.md` and return its path."""
    text = "---\n" + front_matter(card) + "---\n\n" + _body(card)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_CARD
    temporary = path.with_name(f".{MODEL_CARD}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


# -- front matter ---------------------------------------------------------------------------------


def front_matter(card: ModelCardInput) -> str:
    """The YAML between the `---` lines: only the keys that are known."""
    metadata: dict[str, Any] = {}
    for key, value in (
        ("license", card.license),
        ("base_model", card.base_model),
        ("tags", list(card.tags)),
        ("datasets", list(card.datasets)),
        ("pipeline_tag", card.pipeline_tag),
        ("language", list(card.languages)),
        ("library_name", card.library_name),
    ):
        if value:
            metadata[key] = value
    metrics = _checked_metrics(card.metrics)
    if metrics:
        metadata["model-index"] = [{"name": card.artifact_name, "results": [_result(card, metrics)]}]
    return block_yaml(metadata)


def block_yaml(mapping: Mapping[str, Any]) -> str:
    """A mapping of JSON values as block-style YAML with every string double-quoted: read back
    identically by YAML 1.1 readers (PyYAML, go-yaml, js-yaml) and YAML 1.2 readers."""
    return "".join(line + "\n" for line in _yaml_block(mapping, 0))


def _checked_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    checked: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInputError(
                f"must be a finite number for the model card, got {value!r}", field=f"metrics.{name}"
            )
        checked[name] = value
    return checked


def _result(card: ModelCardInput, metrics: Mapping[str, float]) -> dict[str, Any]:
    """One model-index result: the Hub requires a task, a dataset and the metrics."""
    dataset = card.datasets[0] if card.datasets else "validation"
    return {
        "task": {"type": card.pipeline_tag or "other"},
        "dataset": {"name": dataset, "type": dataset},
        "metrics": [{"name": name, "type": name, "value": value} for name, value in metrics.items()],
    }


def _yaml_block(value: Mapping[str, Any] | Sequence[Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, child in value.items():
            if _is_nonempty_collection(child):
                lines.append(f"{pad}{_yaml_key(key)}:")
                lines.extend(_yaml_block(child, indent + 2))
            else:
                lines.append(f"{pad}{_yaml_key(key)}: {_yaml_scalar(child)}")
        return lines
    for item in value:
        if isinstance(item, Mapping) and item:
            nested = _yaml_block(item, indent + 2)
            lines.append(f"{pad}- {nested[0][indent + 2 :]}")  # the first key shares the dash's line
            lines.extend(nested[1:])
        else:
            lines.append(f"{pad}- {_yaml_scalar(item)}")
    return lines


def _is_nonempty_collection(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(value) > 0


def _yaml_key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) and key.lower() not in _YAML_WORDS else _quoted(key)


# Plain scalars YAML 1.1 readers (PyYAML, the Hub's js-yaml) turn into booleans or null.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _yaml_scalar(value: Any) -> str:
    """A scalar in a form every YAML reader reads back as the same JSON value. Strings are
    double-quoted JSON strings (a subset of YAML's double-quoted style); nested lists that are not
    emitted as blocks are JSON flow collections, also valid YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, Mapping | list | tuple):
        return "{}" if isinstance(value, Mapping) else "[]" if not value else json.dumps(list(value))
    return _quoted(str(value))


def _quoted(text: str) -> str:
    escaped = json.dumps(text, ensure_ascii=False)
    # JSON leaves line and paragraph separators (and other non-printables above U+007F) raw;
    # YAML 1.1 readers break lines at some of them, so escape them all.
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in escaped)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


# -- Markdown body --------------------------------------------------------------------------------


def _body(card: ModelCardInput) -> str:
    sections = [
        _title(card),
        _training(card),
        _metrics(card),
        _validation(card),
        _lineage(card),
        _how_to_load(card),
    ]
    return "\n".join(section for section in sections if section)


def _title(card: ModelCardInput) -> str:
    lines = [f"# {_inline(card.artifact_name)}", "", f"`{card.ref}`, stage: **{_inline(card.stage)}**", ""]
    if card.description:
        lines += [card.description.strip(), ""]
    return "\n".join(lines)


def _training(card: ModelCardInput) -> str:
    lines = ["## Training", ""]
    if card.session_id:
        lines.append(f"- Training session: `{_inline(card.session_id)}`")
    if card.training_config_hash:
        lines.append(f"- Training config hash: `{_inline(card.training_config_hash)}`")
    if card.base_model:
        lines.append(f"- Base model: `{_inline(card.base_model)}`")
    if card.datasets:
        lines.append(f"- Datasets: {', '.join(_inline(d) for d in card.datasets)}")
    rows = list(_flattened(card.training_config))
    if rows:
        if len(lines) > 2:
            lines.append("")  # a blank line between the list above and the table
        lines += ["| Setting | Value |", "| --- | --- |"]
        lines += [f"| `{_cell(key)}` | {_cell(value)} |" for key, value in rows[:MAX_CONFIG_ROWS]]
        if len(rows) > MAX_CONFIG_ROWS:
            lines += ["", f"({len(rows) - MAX_CONFIG_ROWS} more settings in `config.yaml`.)"]
    if len(lines) == 2:
        return ""
    return "\n".join([*lines, ""])


def _flattened(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted setting names and their values as text, nested mappings expanded."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flattened(value, f"{name}.")
        else:
            yield name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _metrics(card: ModelCardInput) -> str:
    if not card.metrics:
        return ""
    lines = ["## Metrics", "", "| Metric | Value |", "| --- | --- |"]
    lines += [f"| {_cell(name)} | {_number(value)} |" for name, value in card.metrics.items()]
    return "\n".join([*lines, ""])


def _validation(card: ModelCardInput) -> str:
    if not card.validation:
        return ""
    lines = ["## Validation", "", "| Check | Result | Detail |", "| --- | --- | --- |"]
    lines += [
        f"| {_cell(name)} | {'pass' if passed else 'FAIL'} | {_cell(detail)} |"
        for name, passed, detail in card.validation
    ]
    return "\n".join([*lines, ""])


def _lineage(card: ModelCardInput) -> str:
    if not card.lineage:
        return ""
    chain = " → ".join(f"`{_inline(ref)}`" for ref in [*card.lineage, card.ref] if ref)
    return "\n".join(["## Lineage", "", chain, ""])


def _how_to_load(card: ModelCardInput) -> str:
    lines = [
        "## How to load it",
        "",
        "```bash",
        f"modelyard export {card.ref} --to ./{_slug(card.artifact_name)}",
        "```",
    ]
    files = set(card.files)
    if "model.safetensors" in files:
        lines += [
            "",
            "```python",
            "from safetensors.torch import load_file",
            "",
            'state_dict = load_file("model.safetensors")',
        ]
        lines += ["model.load_state_dict(state_dict)  # model: the architecture it was trained as", "```"]
    elif "model.pt" in files:
        lines += ["", "```python", "import torch", ""]
        lines += ['state_dict = torch.load("model.pt", map_location="cpu", weights_only=True)']
        lines += ["model.load_state_dict(state_dict)  # model: the architecture it was trained as", "```"]
    return "\n".join([*lines, ""])


def _number(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, line breaks as <br>."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _inline(text: str) -> str:
    return " ".join(text.split()).replace("`", "'")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
