"""`modelyard inspect`, `compat` and `reinspect`: the typed model catalog (seed 002)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelyard.cli._common import HomeOpt, JsonOpt, open_registry, open_registry_or_server, print_json, print_table

if TYPE_CHECKING:
    from modelyard.modelconfig import BaseModelConfig

# Fields shown in the summary header, in this order; the rest of a config follows.
_HEADER_FIELDS = ("model_type", "task", "format", "layout", "parameter_count", "dtype")
# Long or structural fields left out of the human summary (they are in --json).
_HIDDEN_FIELDS = {"files", "weights", "sources", "warnings", "pickle_scan", "training", "generation", "rope_scaling"}


def inspect_command(
    path: Annotated[Path, typer.Argument(help="A model file or folder (nothing is registered).", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the typed configuration as JSON.")] = False,
    component: Annotated[str | None, typer.Option(help="Hint when the files do not say: vision, audio, ...")] = None,
    task: Annotated[str | None, typer.Option(help="Hint: embed, classification, detection, ...")] = None,
    node_type: Annotated[str | None, typer.Option(help="Hint: the node type that serves it.")] = None,
    artifact_name: Annotated[str | None, typer.Option(help="Hint: the name it would get.")] = None,
) -> None:
    """Inspect a model file or folder without loading weights: print its typed configuration."""
    from modelyard.inspect import Hints, inspect_path

    hints = None
    if any((component, task, node_type, artifact_name)):
        hints = Hints(artifact_name=artifact_name, component=component, task=task, node_type=node_type)
    config = inspect_path(path, hints)
    if json_output:
        sys.stdout.write(config.model_dump_json(indent=2) + "\n")
        return
    sys.stdout.write("\n".join(render_config(config)) + "\n")


def compat_command(
    reference: Annotated[str, typer.Argument(metavar="NAME[@REF]", help="NAME, NAME@N or NAME@latest.")],
    runtime: Annotated[str | None, typer.Option(help="Only this runtime (e.g. vllm, llama-cpp).")] = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Which runtimes can serve a version, each with the reason (exit 1 if --runtime says no)."""
    with open_registry_or_server(home) as registry:
        answers = registry.compat(reference, runtime)
    if json_output:
        print_json([{"runtime": a.runtime, "compatible": a.compatible, "reason": a.reason} for a in answers])
    else:
        print_table(["RUNTIME", "OK", "WHY"], [[a.runtime, "yes" if a.compatible else "no", a.reason] for a in answers])
    if runtime is not None and not answers[0].compatible:
        raise typer.Exit(1)


def reinspect_command(
    target: Annotated[
        str | None, typer.Argument(metavar="[NAME[@REF]]", help="One version, one artifact, or all.")
    ] = None,
    outdated: Annotated[
        bool, typer.Option("--outdated", help="Only versions inspected by an older modelyard, or never.")
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Inspect stored versions again from their blobs and update their model entries (audited)."""
    with open_registry(home) as registry:
        redone = registry.reinspect(target, outdated_only=outdated)
        for version in redone:
            config = registry.model_config(version.ref)
            kind = f"{config.model_type} ({config.format})" if config else "-"
            sys.stdout.write(f"inspected {version.ref}: {kind}\n")
    if not redone:
        sys.stderr.write("nothing to inspect\n")


def render_config(config: BaseModelConfig) -> list[str]:
    """A readable summary of a typed configuration: header, type-specific fields, verdicts."""
    data = config.model_dump(mode="json")
    lines = [f"  {'model_type':<22} {config.model_type}" + (f" ({config.task})" if config.task else "")]
    lines.append(f"  {'format':<22} {config.format}, {config.layout} layout")
    if config.parameter_count is not None:
        lines.append(
            f"  {'parameters':<22} {_count(config.parameter_count)}" + (f" ({config.dtype})" if config.dtype else "")
        )
    for key, value in data.items():
        if key in _HEADER_FIELDS or key in _HIDDEN_FIELDS or value in (None, [], {}, "", False, 0):
            continue
        shown = _tokenizer(value) if key == "tokenizer" else _show(value)
        if shown:
            lines.append(f"  {key:<22} {shown}")
    for weights in config.weights:
        if weights.inputs or weights.outputs:
            ins = ", ".join(_io(io) for io in weights.inputs)
            outs = ", ".join(_io(io) for io in weights.outputs)
            opset = f" (opset {weights.opset})" if weights.opset else ""
            lines.append(f"  {'graph':<22} {weights.path}{opset}: {ins} -> {outs}")
    lines.append(f"  {'files':<22} {len(config.files)} ({len(config.weights)} weights)")
    lines.append(f"  {'pickle scan':<22} {_pickles(config)}")
    compatible = [c.runtime for c in config.compatibility() if c.compatible]
    lines.append(f"  {'runtimes':<22} {', '.join(compatible) or 'none known'}")
    lines.extend(f"  warning: {warning}" for warning in config.warnings)
    return lines


def _io(io: Any) -> str:
    shape = "[" + ", ".join("?" if d is None else str(d) for d in io.shape) + "]" if io.shape is not None else ""
    return f"{io.name}{shape} {io.dtype or ''}".rstrip()


def _tokenizer(tokenizer: dict[str, Any]) -> str:
    """Special tokens, and whether there is a chat template (templates are long: not printed)."""
    parts = [
        f"{name.removesuffix('_token')} {tokenizer[name]!r}"
        for name in ("bos_token", "eos_token", "pad_token", "unk_token")
        if tokenizer.get(name)
    ]
    template = tokenizer.get("chat_template")
    if template:
        named = sorted(tokenizer.get("chat_templates") or {})
        parts.append(f"chat template ({len(template)} chars" + (f"; also {', '.join(named)})" if named else ")"))
    for key in ("tokenizer_model", "tokenizer_class", "vocab_size"):
        if tokenizer.get(key):
            parts.append(f"{key.removeprefix('tokenizer_')} {tokenizer[key]}")
    return ", ".join(parts)


def _pickles(config: BaseModelConfig) -> str:
    scan = config.pickle_scan
    if scan.verdict == "none":
        return "no pickles"
    if scan.verdict == "safe":
        return f"safe ({scan.files_scanned} file(s) of plain tensors)"
    worst = [f for f in scan.findings if f.severity == scan.verdict][:3]
    named = ", ".join(f"{f.module}.{f.name} in {f.file}" for f in worst)
    return f"{scan.verdict.upper()}: {named}"


def _count(value: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return str(value)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        parts = [f"{k}={_show(v)}" for k, v in value.items() if v not in (None, [], {}, "")]
        text = ", ".join(parts)
    elif isinstance(value, list):
        text = ", ".join(_show(v) for v in value)
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= 100 else text[:97] + "..."


def install(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
    app.command("compat")(compat_command)
    app.command("reinspect")(reinspect_command)
