"""`modelyard demo`: a short end-to-end walk on the embedded default (SQLite + local store)."""

from __future__ import annotations

import sys

import typer

from modelyard.cli._common import HomeOpt, open_registry


def demo_command(home: HomeOpt = None) -> None:
    """Generate a small training output, register it (twice), show, verify, export it, and take it
    through validation to a production release."""
    from modelyard.demo import run_demo

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")

    with open_registry(home) as registry:
        run_demo(registry, say)


def install(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
