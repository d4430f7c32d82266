"""`modelyard training`: preview a learning form, save job definitions, list and show them.

FILE is YAML 1.2 or JSON (by its .json suffix) holding the form's fields (seed 000 section 3);
`define` takes a job definition: the form's fields plus run, executor, quantization_mode, dp,
timeout_seconds and name. A bad field exits 3 with a message naming it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelyard.cli._common import HomeOpt, JsonOpt, open_registry, print_json, print_table

if TYPE_CHECKING:
    from modelyard.training.jobs import JobDefinitionRecord

training_app = typer.Typer(
    help="The learning form: preview the artifact it produces, save job definitions.", no_args_is_help=True
)
FileArg = Annotated[Path, typer.Argument(help="YAML or JSON file of the form's fields.", show_default=False)]


@training_app.command("preview")
def preview_command(file: FileArg, home: HomeOpt = None, json_output: JsonOpt = False) -> None:
    """Print the artifact name, manifest and training_config_hash a job run from the form produces."""
    from modelyard.loaders import load_mapping
    from modelyard.training.form import load_form, preview

    form = load_form(load_mapping(file, "learning form"), file)
    with open_registry(home) as registry:
        result = preview(form, registry)
    if json_output:
        print_json(result.model_dump(mode="json"))
        return
    sys.stdout.write(f"artifact_name: {result.artifact_name}\n")
    sys.stdout.write(f"training_config_hash: {result.training_config_hash}\n")
    sys.stdout.write("manifest:\n" + json.dumps(result.manifest, indent=2) + "\n")


@training_app.command("define")
def define_command(file: FileArg, home: HomeOpt = None, json_output: JsonOpt = False) -> None:
    """Save a job definition (the form plus run, executor, quantization_mode, dp, timeout_seconds); print its id."""
    from modelyard.loaders import load_mapping
    from modelyard.training.jobs import define_job, load_definition

    definition = load_definition(load_mapping(file, "job definition"), file)
    with open_registry(home) as registry:
        record = define_job(registry, definition)
    if json_output:
        print_json(_json(record))
        return
    label = f" ({record.name})" if record.name else ""
    sys.stdout.write(f"saved job definition {record.id}{label}: produces {record.artifact_name}\n")


@training_app.command("definitions")
def definitions_command(home: HomeOpt = None, json_output: JsonOpt = False) -> None:
    """List the saved job definitions, oldest first."""
    from modelyard.training.jobs import job_definitions

    with open_registry(home) as registry:
        records = job_definitions(registry)
    if json_output:
        print_json([_json(record) for record in records])
        return
    rows = [
        [
            str(r.id),
            r.name or "-",
            r.artifact_name,
            _run_label(r),
            r.definition.executor,
            r.created_by,
            f"{r.created_at:%Y-%m-%d %H:%M}",
        ]
        for r in records
    ]
    print_table(["ID", "NAME", "ARTIFACT", "RUN", "EXECUTOR", "BY", "CREATED"], rows)


@training_app.command("show")
def show_command(
    definition_id: Annotated[int, typer.Argument(min=1, help="The definition's id.", show_default=False)],
    home: HomeOpt = None,
) -> None:
    """Print one saved job definition as JSON."""
    from modelyard.training.jobs import job_definition

    with open_registry(home) as registry:
        record = job_definition(registry, definition_id)
    print_json(_json(record))


def _json(record: JobDefinitionRecord) -> object:
    return record.model_dump(mode="json")


def _run_label(record: JobDefinitionRecord) -> str:
    from modelyard.training.jobs import BuiltinRun

    run = record.definition.run
    return f"builtin:{run.trainer}" if isinstance(run, BuiltinRun) else f"command:{run.argv[0]}"


def install(app: typer.Typer) -> None:
    app.add_typer(training_app, name="training")
