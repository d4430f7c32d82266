"""`modelyard demo`: the end-to-end walk on the embedded default (SQLite + local store)."""

from __future__ import annotations

import sys

import typer

from modelyard.cli._common import HomeOpt, open_registry


def demo_command(home: HomeOpt = None) -> None:
    """Train the built-in model from a learning form, register it and its int8 model, validate,
    promote and approve them, deploy to a local fleet, verify, and print the status matrix."""
    from modelyard.demo import run_demo

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")

    with open_registry(home) as registry:
        run_demo(registry, say)


def install(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
