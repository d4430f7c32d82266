"""`modelyard bundle NAME@REF... --out FILE` and `modelyard import bundle FILE`: versions, their
typed configurations, lineage and blobs in one tar file, for registries without network access.

`import` is the marketplace commands' sub-app; `add_import_command` registers `bundle` on it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelyard.cli._common import HomeOpt, JsonOpt, format_bytes, open_registry, plural, print_json, warn

if TYPE_CHECKING:
    from modelyard.distribute.bundle import ImportReport


def bundle_command(
    references: Annotated[
        list[str],
        typer.Argument(metavar="NAME@REF...", help="The versions to bundle: NAME@N, NAME@validated, NAME@1.0.0, ..."),
    ],
    out: Annotated[Path, typer.Option("--out", help="The bundle file to write (a tar; refused if it exists).")],
    gzip: Annotated[bool, typer.Option("--gzip", help="Compress the tar with gzip (weights barely shrink).")] = False,
    no_lineage: Annotated[
        bool, typer.Option("--no-lineage", help="Only the versions named, not the versions they were promoted from.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle file.")] = False,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Write versions (and their lineage) with their blobs to a bundle for an air-gapped registry."""
    from modelyard.distribute.bundle_write import write_bundle

    with open_registry(home) as registry:
        report = write_bundle(registry, references, out, with_lineage=not no_lineage, gzip=gzip, force=force)
    if json_output:
        print_json(
            {
                "path": str(report.path),
                "versions": list(report.versions),
                "requested": list(report.requested),
                "blobs": report.blobs,
                "blob_bytes": report.blob_bytes,
                "size": report.size,
                "gzip": report.gzip,
            }
        )
        return
    sys.stdout.write(
        f"wrote {report.path}: {plural(len(report.versions), 'version')}, {plural(report.blobs, 'blob')} "
        f"({format_bytes(report.blob_bytes)}), {format_bytes(report.size)} on disk\n"
    )
    for ref in report.versions:
        sys.stdout.write(f"  {ref}{'' if ref in report.requested else '  (lineage)'}\n")


def import_bundle_command(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="A bundle written by `modelyard bundle`.")],
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Import a bundle: every blob is checked against its digest before any version is registered."""
    from modelyard.distribute.bundle_import import import_bundle

    with open_registry(home) as registry:
        report = import_bundle(registry, path)
    for message in report.warnings:
        warn(message)
    if json_output:
        print_json(_import_json(report))
        return
    sys.stdout.write(
        f"imported {report.path.name}: {len(report.created)} created, {len(report.present)} already present "
        f"({plural(report.blobs, 'blob')} verified, {format_bytes(report.blob_bytes)})\n"
    )
    for version in report.versions:
        status = "created" if version.created else "already present"
        sys.stdout.write(f"  {version.ref:<40} {version.stage:<11} {status} (bundle {version.source_ref})\n")


def _import_json(report: ImportReport) -> dict[str, Any]:
    return {
        "path": str(report.path),
        "created": [v.ref for v in report.created],
        "present": [v.ref for v in report.present],
        "versions": [
            {
                "source_ref": v.source_ref,
                "ref": v.ref,
                "stage": v.stage,
                "created": v.created,
                "typed_config": v.typed_config,
            }
            for v in report.versions
        ],
        "blobs": report.blobs,
        "blob_bytes": report.blob_bytes,
        "warnings": list(report.warnings),
    }


def add_import_command(import_app: typer.Typer) -> None:
    """Register `bundle` on the `import` sub-app (`modelyard import bundle FILE`)."""
    import_app.command("bundle")(import_bundle_command)


def install(app: typer.Typer) -> None:
    app.command("bundle")(bundle_command)
