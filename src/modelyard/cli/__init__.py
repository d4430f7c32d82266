"""The `modelyard` command line: a thin layer over `modelyard.Registry`.

Commands live one module per noun group; each parses its flags, calls one Registry method and
prints. Heavy libraries load inside commands, so `modelyard --version` starts fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from modelyard import __version__
from modelyard.cli import (
    browse,
    bundle,
    demo,
    deploy,
    jobs,
    lifecycle,
    maintenance,
    marketplace,
    models,
    register,
    server,
    train,
    training,
    transfer,
)

app = typer.Typer(
    name="modelyard",
    help="A registry for model artifacts: register training outputs as immutable, content-addressed versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"modelyard {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """modelyard: content-addressed, versioned model artifacts."""


register.install(app)
browse.install(app)
models.install(app)
marketplace.install(app)
lifecycle.install(app)
transfer.install(app)
deploy.install(app)
bundle.install(app)
server.install(app)
train.install(app)
training.install(app)
jobs.install(app)
maintenance.install(app)
demo.install(app)


def main() -> None:
    """Console entry point: run the app, turning modelyard errors into one line and an exit code."""
    from modelyard.errors import ModelyardError

    try:
        app()
    except ModelyardError as exc:
        sys.stderr.write(f"error: {exc.render()}\n")
        sys.exit(exc.exit_code)
