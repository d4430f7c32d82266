"""`modelyard import hf` and `modelyard import civitai`: marketplace metadata into the catalog.

Without --into they print the typed configuration the answer maps to; with --into NAME@REF they
check that version's files against the answer's hashes and merge the metadata into its model
entry (audited). --from-file reads a saved answer, for machines that cannot reach the service.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelyard.cli._common import HomeOpt, JsonOpt, open_registry, plural, print_json, warn
from modelyard.cli.bundle import add_import_command

if TYPE_CHECKING:
    from modelyard.marketplace import MarketplaceImport
    from modelyard.marketplace.apply import ImportResult
    from modelyard.registry import Registry

import_app = typer.Typer(
    help="Import marketplace metadata (Hugging Face Hub, CivitAI) into a model entry, or a bundle of versions.",
    no_args_is_help=True,
)

IntoOpt = Annotated[
    str | None,
    typer.Option(
        "--into",
        metavar="NAME@REF",
        help="Merge into this version's model entry (after checking its files' hashes). Default: only print.",
    ),
]


@import_app.command("hf")
def import_hf_command(
    repo_id: Annotated[str, typer.Argument(metavar="REPO_ID", help="A Hub repository, e.g. meta-llama/Llama-3.2-1B.")],
    into: IntoOpt = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="A saved answer of GET /api/models/REPO_ID?blobs=true (no network)."),
    ] = None,
    revision: Annotated[str | None, typer.Option(help="A branch, tag or commit (default: main).")] = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Import a Hugging Face Hub repository's model info (HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE apply)."""
    with open_registry(home) as registry:
        imported, warnings = registry.fetch_hf(repo_id, revision=revision, from_file=from_file)
        for message in warnings:
            warn(message)
        _finish(registry, imported, into, json_output)


@import_app.command("civitai")
def import_civitai_command(
    version_id: Annotated[
        str | None,
        typer.Argument(metavar="[VERSION_ID]", help="A model version id (or a model page URL with modelVersionId=)."),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="A saved answer of GET /api/v1/model-versions/VERSION_ID (no network)."),
    ] = None,
    into: IntoOpt = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Import a CivitAI model version (CIVITAI_API_TOKEN is sent when set)."""
    with open_registry(home) as registry:
        _finish(registry, registry.fetch_civitai(version_id, from_file=from_file), into, json_output)


def _finish(registry: Registry, imported: MarketplaceImport, into: str | None, json_output: bool) -> None:
    """Print the mapped configuration, or merge it into a version and print what happened."""
    if into is None:
        _print_imported(imported, json_output)
        return
    result = registry.import_metadata(into, imported)
    if json_output:
        print_json(
            {
                "ref": result.version,
                "source": result.source,
                "verified": result.verified,
                "unmatched": result.unmatched,
                "config": result.config.model_dump(mode="json"),
            }
        )
        return
    _print_result(imported, result)


def _print_imported(imported: MarketplaceImport, json_output: bool) -> None:
    from modelyard.cli.models import render_config

    if json_output:
        print_json(imported.config.model_dump(mode="json"))
        return
    lines = [f"{imported.source} {imported.source_id}" + (f": {imported.title}" if imported.title else "")]
    lines.extend(render_config(imported.config))
    stated = len(imported.hashes)
    lines.append(f"  {'stated hashes':<22} {plural(stated, 'file')} (checked against the version with --into)")
    sys.stdout.write("\n".join(lines) + "\n")


def _print_result(imported: MarketplaceImport, result: ImportResult) -> None:
    from modelyard.cli.models import render_config

    lines = [f"imported {result.source} {imported.source_id} into {result.version}"]
    if result.verified:
        lines.append(f"  verified (sha256)      {', '.join(result.verified)}")
    else:
        lines.append("  verified (sha256)      none: the answer states no digest for a file of this version")
    if result.unmatched:
        lines.append(f"  not in the version     {_shortened(result.unmatched)}")
    lines.append(f"  merged                 {', '.join(result.changed) or 'nothing new'}")
    lines.extend(render_config(result.config))
    sys.stdout.write("\n".join(lines) + "\n")


def _shortened(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def install(app: typer.Typer) -> None:
    add_import_command(import_app)
    app.add_typer(import_app, name="import")
