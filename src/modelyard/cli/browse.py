"""`modelyard list`, `modelyard show` and `modelyard schema`: reading the catalog."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modelyard.cli._common import RegistryAPI
    from modelyard.domain import VersionRecord, VersionSummary

from modelyard.cli._common import (
    HomeOpt,
    JsonOpt,
    NodeType,
    Stage,
    format_bytes,
    open_registry_or_server,
    print_json,
    print_table,
)


def list_command(
    component: Annotated[str | None, typer.Option(help="Only this component.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    node_type: Annotated[NodeType | None, typer.Option(help="Only this node type.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Only this base model.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only versions with this train data tag or model tag.")] = None,
    model_type: Annotated[
        str | None, typer.Option("--type", help="Only this model type: llm, image, vision, audio, embedding, ...")
    ] = None,
    architecture: Annotated[str | None, typer.Option(help="Only this architecture, e.g. LlamaForCausalLM.")] = None,
    family: Annotated[str | None, typer.Option(help="Only this model family, e.g. llama, vit, yolox.")] = None,
    quantization: Annotated[str | None, typer.Option(help="Only this quantization, e.g. Q4_K_M.")] = None,
    stage: Annotated[
        Stage | None, typer.Option(help="Only this stage (without --all-versions: each artifact's newest in it).")
    ] = None,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version, not only each artifact's latest.")
    ] = False,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List artifacts (their latest version) or, with --all-versions, every version."""
    from modelyard.domain import ListFilters

    filters = ListFilters(
        component=component,
        task=task,
        node_type=node_type.value if node_type else None,
        base_model=base_model,
        tag=tag,
        model_type=model_type,
        architecture=architecture,
        family=family,
        quantization=quantization,
        stage=stage.value if stage else None,
    )
    with open_registry_or_server(home) as registry:
        rows = registry.list(filters, all_versions=all_versions)
    if json_output:
        print_json(
            [
                {
                    "artifact_name": row.artifact_name,
                    "model_version": row.number,
                    "ref": row.ref,
                    "versions": row.version_count,
                    "component": row.component,
                    "task": row.task,
                    "node_type": row.node_type,
                    "base_model": row.base_model,
                    "precision": row.precision,
                    "quantized": row.quantized,
                    "train_data_tags": list(row.train_data_tags),
                    "model_type": row.model_type,
                    "architecture": row.architecture,
                    "family": row.family,
                    "quantization": row.quantization,
                    "parameter_count": row.parameter_count,
                    "pickle_verdict": row.pickle_verdict,
                    "stage": row.stage,
                    "semver": row.semver,
                    "forced": row.forced,
                    "status": row.status,
                    "files": row.file_count,
                    "size": row.total_size,
                    "created_at": row.created_at.isoformat(),
                    "registered_at": row.registered_at.isoformat(),
                }
                for row in rows
            ]
        )
        return
    if not rows:
        sys.stderr.write("no artifacts match\n")
        return
    print_table(
        [
            "NAME",
            "VERSION",
            "STAGE",
            "TYPE",
            "TASK",
            "BASE MODEL",
            "NODE TYPE",
            "PRECISION",
            "FILES",
            "SIZE",
            "REGISTERED",
        ],
        [
            [
                row.artifact_name,
                str(row.number) if all_versions else f"{row.number} of {row.version_count}",
                _stage_cell(row),
                row.model_type or "-",
                row.task or "-",
                row.base_model or "-",
                row.node_type or "-",
                (row.precision or "-") + (" (q)" if row.quantized and row.precision != "int8" else ""),
                str(row.file_count),
                format_bytes(row.total_size),
                row.registered_at.strftime("%Y-%m-%d %H:%M"),
            ]
            for row in rows
        ],
    )


def _stage_cell(row: VersionSummary) -> str:
    cell = row.stage + (f" {row.semver}" if row.semver else "")
    if row.forced:
        cell += " (forced)"
    if row.status:
        cell += f" ({row.status})"
    return cell


def show_command(
    reference: Annotated[str, typer.Argument(metavar="NAME[@REF]", help="NAME, NAME@N or NAME@latest.")],
    home: HomeOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the manifest object as JSON.")] = False,
    model: Annotated[
        bool, typer.Option("--model", help="With --json: print the typed model configuration instead.")
    ] = False,
) -> None:
    """Show a version: its manifest, its typed model configuration and its files."""
    from modelyard.cli.models import render_config

    with open_registry_or_server(home) as registry:
        version = registry.show(reference)
        config = registry.model_config(version.ref)
        lifecycle = _lifecycle_lines(registry, version) if not json_output else []
    manifest = version.manifest
    if json_output:
        if model:
            sys.stdout.write(config.model_dump_json(indent=2) + "\n" if config is not None else "null\n")
        else:
            sys.stdout.write(manifest.to_json())
        return
    out = sys.stdout.write
    out(f"{version.ref}\n")
    out(f"  registered            {version.registered_at:%Y-%m-%d %H:%M:%S}Z by {version.registered_by}\n")
    if version.source_path:
        out(f"  from                  {version.source_path}\n")
    for line in lifecycle:
        out(f"  {line}\n")
    data = manifest.model_dump(mode="json", by_alias=True)
    for key in (
        "created_at",
        "component",
        "base_model",
        "task",
        "embedding_dim",
        "precision",
        "quantized",
        "node_type",
        "privacy_level",
        "license",
        "train_data_tags",
        "training_config_hash",
        "run_name",
    ):
        value = data.get(key)
        if value not in (None, [], {}):
            shown = ", ".join(value) if isinstance(value, list) else value
            out(f"  {key:<21} {shown}\n")
    for key in (
        "model_config",
        "input_spec",
        "training_config",
        "checkpoint_policy",
        "data_prep_profile",
        "metrics",
    ):
        value = {k: v for k, v in (data.get(key) or {}).items() if v not in (None, [])}
        if value:
            shown = ", ".join(f"{k}={v}" for k, v in value.items())
            out(f"  {key:<21} {shown}\n")
    if config is not None:
        out("model:\n")
        out("\n".join(render_config(config)) + "\n")
    else:
        out(f"model: not inspected (run 'modelyard reinspect {version.ref}')\n")
    out(f"files ({len(manifest.files)}, {format_bytes(manifest.total_size)}):\n")
    print_table(
        ["  SIZE", "SHA256", "PATH"],
        [[f"  {format_bytes(f.size)}", f.sha256[:16], f.path] for f in manifest.files],
    )


def _lifecycle_lines(registry: RegistryAPI, version: VersionRecord) -> list[str]:
    """Stage, lineage, status, aliases, approvals and the latest gate report (seed 003)."""
    stage = version.stage + (f" {version.semver}" if version.semver else "")
    lines = [f"{'stage':<21} {stage}" + (f" ({version.label})" if version.label else "")]
    if version.forced:
        lines.append(f"{'forced':<21} yes: promoted past failed gates (see 'modelyard audit {version.ref}')")
    history = registry.status_history(version.ref)
    if history and history[-1].status != "restored":
        last = history[-1]
        lines.append(f"{'status':<21} {last.status} by {last.actor} at {last.at:%Y-%m-%d %H:%M}Z: {last.reason}")
    chain = registry.lineage(version.ref)
    if len(chain) > 1:
        lines.append(f"{'lineage':<21} " + " <- ".join(f"{step.ref} [{step.stage}]" for step in chain))
    aliases = [entry.alias for entry in registry.aliases(version.artifact_name) if entry.version == version.ref]
    if aliases:
        lines.append(f"{'aliases':<21} {', '.join(aliases)}")
    approvals = registry.approvals(version.ref)
    if approvals:
        lines.append(f"{'approved by':<21} " + ", ".join(f"{a.approved_by} ({a.at:%Y-%m-%d})" for a in approvals))
    reports = registry.reports(version.ref)
    if reports:
        last_report = reports[-1]
        verdict = "passed" if last_report.passed else "FAILED"
        where = f" checkpoint {last_report.checkpoint}" if last_report.checkpoint else ""
        lines.append(
            f"{'gates':<21} {verdict}{where} (report {last_report.id}, {last_report.created_at:%Y-%m-%d %H:%M}Z)"
        )
    return lines


def schema_command() -> None:
    """Print the JSON Schema of artifact_manifest.json."""
    from modelyard.manifest import json_schema_text

    sys.stdout.write(json_schema_text())


def install(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("show")(show_command)
    app.command("schema")(schema_command)
