"""What every command shares: the --home/--quiet/--json options, opening the registry, output
helpers, and the one place where ModelyardError becomes a message and an exit code."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelyard.names import NODE_TYPES, PRECISIONS, PRIVACY_LEVELS, STAGES

if TYPE_CHECKING:
    from modelyard.client import RemoteRegistry
    from modelyard.progress import Progress
    from modelyard.registry import Registry

    # What a command that also runs against a server works with.
    RegistryAPI = Registry | RemoteRegistry

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Registry home (store, catalog, config.toml). Default: $MODELYARD_HOME, else ~/.modelyard.",
        show_default=False,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; only results and errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

Precision = StrEnum("Precision", {p: p for p in PRECISIONS})  # type: ignore[misc]
PrivacyLevel = StrEnum("PrivacyLevel", {p: p for p in PRIVACY_LEVELS})  # type: ignore[misc]
NodeType = StrEnum("NodeType", {n: n for n in NODE_TYPES})  # type: ignore[misc]
Stage = StrEnum("Stage", {s: s for s in STAGES})  # type: ignore[misc]


def open_registry(home: Path | None) -> Registry:
    """The registry home on this machine: for commands that work on its files (layout, gc, ...)
    or that a server does not offer."""
    from modelyard.registry import Registry

    return Registry.open(home)


def open_registry_or_server(home: Path | None) -> RegistryAPI:
    """For commands that also run against a server: the server at $MODELYARD_URL (with
    $MODELYARD_API_KEY) when that is set and no --home is given, else the local registry home."""
    from modelyard.client import RemoteRegistry, remote_configured

    if home is None and remote_configured():
        return RemoteRegistry.from_environment()
    return open_registry(home)


def make_progress(quiet: bool) -> Progress:
    """A rich progress bar on a terminal; silence otherwise or with --quiet."""
    from modelyard.progress import NullProgress

    if quiet or not sys.stderr.isatty():
        return NullProgress()
    from modelyard.cli._progress import RichProgress

    return RichProgress()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def plural(count: int, word: str) -> str:
    """'1 file', '2 files'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Plain aligned columns: readable on a terminal, easy to cut and grep in a pipe."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        line = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")
