"""`modelyard register PATH`: a training output becomes the next immutable version of an artifact."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli._common import (
    HomeOpt,
    JsonOpt,
    NodeType,
    Precision,
    PrivacyLevel,
    QuietOpt,
    format_bytes,
    make_progress,
    open_registry_or_server,
    plural,
    print_json,
    warn,
)

LINK_HELP = (
    "Reflink (copy-on-write) or hardlink files into the store instead of copying them; the store "
    "must be on the same filesystem, else files are copied. A HARDLINKED file shares its inode "
    "with the stored blob: it becomes read-only, and editing it in place changes the stored bytes "
    "(`modelyard verify` reports that). Write new files rather than editing registered ones."
)


def register_command(
    path: Annotated[Path, typer.Argument(help="A training output directory, or a single file.", show_default=False)],
    artifact_name: Annotated[
        str | None,
        typer.Option(help="Name, e.g. vision-vit-base16-embed-v1 (default: generated, seed 000 form 2)."),
    ] = None,
    precision: Annotated[Precision | None, typer.Option(help="Numeric precision of the weights.")] = None,
    quantize: Annotated[
        bool, typer.Option("--quantize", help="The artifact is quantized (precision int8 unless given).")
    ] = False,
    privacy_level: Annotated[PrivacyLevel | None, typer.Option(help="Privacy applied in training.")] = None,
    node_type: Annotated[NodeType | None, typer.Option(help="The node type that serves it (seed 000 §1).")] = None,
    component: Annotated[str | None, typer.Option(help="vision, audio, text, spiking, or a node role.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Pre-trained base, e.g. vit-base16.")] = None,
    task: Annotated[str | None, typer.Option(help="embed, classification, lm-finetune, detection, ...")] = None,
    embedding_dim: Annotated[int | None, typer.Option(help="Embedding dimension.", min=1)] = None,
    train_data_tag: Annotated[list[str] | None, typer.Option(help="A dataset used in training (repeatable).")] = None,
    license: Annotated[str | None, typer.Option(help="License identifier, e.g. apache-2.0.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Training config (YAML 1.2 or JSON): becomes training_config.")
    ] = None,
    metrics: Annotated[Path | None, typer.Option(help="Metrics (JSON or YAML mapping).")] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Glob of files or directories to leave out (repeatable).")
    ] = None,
    link: Annotated[bool, typer.Option("--link", help=LINK_HELP)] = False,
    no_inspect: Annotated[
        bool,
        typer.Option(
            "--no-inspect",
            help="Do not read model headers: no typed model entry, no pickle scan, no manifest fields from the files.",
        ),
    ] = False,
    home: HomeOpt = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Register PATH as a new immutable version (or find the identical existing one)."""
    from modelyard.errors import InvalidInputError
    from modelyard.register.metadata import RegisterOptions

    options = RegisterOptions(
        artifact_name=artifact_name,
        precision=precision.value if precision else None,
        quantize=quantize,
        privacy_level=privacy_level.value if privacy_level else None,
        node_type=node_type.value if node_type else None,
        component=component,
        base_model=base_model,
        task=task,
        embedding_dim=embedding_dim,
        train_data_tags=train_data_tag or (),
        license=license,
        config=config,
        metrics=metrics,
        exclude=exclude or (),
        inspect=not no_inspect,
    )
    is_upload_zip = path.is_file() and path.suffix.lower() == ".zip"
    if is_upload_zip and link:
        raise InvalidInputError("--link cannot link files out of a ZIP; drop --link", field="--link", path=path)
    progress = make_progress(quiet or json_output)
    with open_registry_or_server(home) as registry:
        if is_upload_zip:  # seed 000's upload ZIP: the run directory inside, with its manifest
            result = registry.register_zip(path, options, progress=progress)
        else:
            result = registry.register(path, options, link=link, progress=progress)
    for message in result.warnings:
        warn(message)
    if json_output:
        print_json(
            {
                "ref": result.version.ref,
                "artifact_name": result.version.artifact_name,
                "model_version": result.version.number,
                "created": result.created,
                "files_total": result.files_total,
                "bytes_total": result.bytes_total,
                "files_read": result.files_read,
                "bytes_read": result.bytes_read,
                "bytes_added": result.bytes_added,
                "methods": result.methods,
                "warnings": list(result.warnings),
            }
        )
        return
    size = f"{plural(result.files_total, 'file')}, {format_bytes(result.bytes_total)}"
    if result.created:
        how = ", ".join(f"{count} {method}" for method, count in sorted(result.methods.items()))
        sys.stdout.write(f"registered {result.version.ref} ({size}; {format_bytes(result.bytes_added)} new; {how})\n")
    else:
        read = "nothing read" if result.files_read == 0 else f"{format_bytes(result.bytes_read)} read"
        sys.stdout.write(f"unchanged: {result.version.ref} already holds these files ({size}; {read})\n")


def install(app: typer.Typer) -> None:
    app.command("register")(register_command)
