"""PEFT adapters: adapter_config.json, cross-checked against the adapter's tensors (section 4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource, read_json_object
from modelyard.inspect._fields import opt_bool, opt_dict, opt_float, opt_int, opt_str

# peft/utils/peft_types.py; a newer PEFT may add more, which is flagged, not refused.
PEFT_TYPES = frozenset(
    {
        "LORA", "ADALORA", "IA3", "LOHA", "LOKR", "OFT", "BOFT", "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING",
        "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT", "POLY", "LN_TUNING", "VERA", "FOURIERFT", "XLORA", "HRA",
        "VBLORA", "CPT", "BONE", "RANDLORA", "SHIRA", "C3A", "ROAD", "MISS", "WAVEFT", "DELORA", "OSF",
        "GRALORA", "TRAINABLE_TOKENS",
    }
)  # fmt: skip
TASK_TYPES = frozenset({"CAUSAL_LM", "SEQ_2_SEQ_LM", "SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"})
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class PeftAdapter:
    peft_type: str
    task_type: str | None
    base_model: str | None
    revision: str | None
    r: int | None
    alpha: float | None
    dropout: float | None
    target_modules: list[str] | str | None
    bias: str | None
    use_dora: bool
    use_rslora: bool
    modules_to_save: list[str]
    rank_pattern: dict[str, Any]
    peft_version: str | None
    warnings: tuple[str, ...] = field(default=())


def read_adapter_config(source: ByteSource) -> PeftAdapter:
    raw = read_json_object(source)
    name = source.name
    warnings: list[str] = []
    peft_type = opt_str(raw, "peft_type", name)
    if peft_type is None:
        raise InvalidModelFileError(
            "missing: every PEFT adapter config names its peft_type", path=name, field="peft_type"
        )
    if peft_type not in PEFT_TYPES:
        warnings.append(f"{name}: peft_type {peft_type!r} is not one this modelyard knows")
    task_type = opt_str(raw, "task_type", name)
    if task_type is not None and task_type not in TASK_TYPES:
        warnings.append(f"{name}: task_type {task_type!r} is not a PEFT task type")
    return PeftAdapter(
        peft_type=peft_type,
        task_type=task_type,
        base_model=opt_str(raw, "base_model_name_or_path", name),
        revision=opt_str(raw, "revision", name),
        r=opt_int(raw, "r", name, maximum=1_000_000),
        alpha=opt_float(raw, "lora_alpha", name),
        dropout=opt_float(raw, "lora_dropout", name),
        target_modules=_target_modules(raw, name),
        bias=opt_str(raw, "bias", name),
        use_dora=bool(opt_bool(raw, "use_dora", name)),
        use_rslora=bool(opt_bool(raw, "use_rslora", name)),
        modules_to_save=_str_list_or_empty(raw, "modules_to_save", name),
        rank_pattern=opt_dict(raw, "rank_pattern", name) or {},
        peft_version=opt_str(raw, "peft_version", name),
        warnings=tuple(warnings),
    )


def _target_modules(raw: dict[str, Any], name: str) -> list[str] | str | None:
    """A list of module names, or one string: a regex or "all-linear"."""
    value = raw.get("target_modules")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return sorted(value)  # PEFT saves a set: its order means nothing
    raise InvalidModelFileError("expected a list of module names or a string", path=name, field="target_modules")


def _str_list_or_empty(raw: dict[str, Any], key: str, name: str) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise InvalidModelFileError("expected a list of module names", path=name, field=key)


def check_lora_tensors(adapter: PeftAdapter, shapes: Mapping[str, tuple[int, ...]], weights_name: str) -> list[str]:
    """Warnings where the tensors disagree with the config: unpaired A/B, or ranks other than r."""
    if adapter.peft_type != "LORA":
        return []
    warnings: list[str] = []
    a_names = {name.replace(".lora_A.", ".lora_X.") for name in shapes if ".lora_A." in name}
    b_names = {name.replace(".lora_B.", ".lora_X.") for name in shapes if ".lora_B." in name}
    unpaired = sorted(a_names ^ b_names)
    if unpaired:
        warnings.append(f"{weights_name}: {len(unpaired)} LoRA tensor(s) without a partner, e.g. {unpaired[0]}")
    ranks = {shape[0] for name, shape in shapes.items() if ".lora_A." in name and len(shape) == 2}
    if any(len(shape) < 2 for name, shape in shapes.items() if ".lora_A." in name):
        warnings.append(f"{weights_name}: 1-D or empty lora_A tensors (an ungathered ZeRO-3/FSDP save?)")
    if adapter.r is not None and ranks and ranks != {adapter.r} and not adapter.rank_pattern:
        warnings.append(f"{weights_name}: lora_A ranks {sorted(ranks)} differ from r = {adapter.r}")
    return warnings
