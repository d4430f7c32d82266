"""`modelyard export`: a version's files and manifest, as a directory or seed 000's upload ZIP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli._common import HomeOpt, QuietOpt, format_bytes, make_progress, open_registry_or_server, plural


def export_command(
    reference: Annotated[str, typer.Argument(metavar="NAME[@REF]", help="NAME, NAME@N or NAME@latest.")],
    to: Annotated[Path | None, typer.Option("--to", help="A new (or empty) directory to write the files into.")] = None,
    zip_path: Annotated[
        Path | None, typer.Option("--zip", help="Write the upload ZIP (files + artifact_manifest.json).")
    ] = None,
    home: HomeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a version: its files plus artifact_manifest.json, to --to DIR and/or --zip FILE."""
    with open_registry_or_server(home) as registry:
        result = registry.export(reference, to=to, zip_path=zip_path, progress=make_progress(quiet))
    size = f"{plural(result.files, 'file')}, {format_bytes(result.bytes)}"
    if result.directory is not None:
        sys.stdout.write(f"exported {result.ref} to {result.directory} ({size})\n")
    if result.zip_path is not None:
        sys.stdout.write(f"exported {result.ref} to {result.zip_path} ({size})\n")


def install(app: typer.Typer) -> None:
    app.command("export")(export_command)
