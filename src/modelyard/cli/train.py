"""`modelyard train`: run a training job from the learning form's flags, a saved job file, or a built-in trainer.

    modelyard train --component vision --base-model vit-base16 --task embed --epochs 3 -- python train.py
    modelyard train job.yaml
    modelyard train --builtin tiny-classifier --component vision --base-model tiny-cnn --task classification

Every learning-form field is a flag of the same name with dashes; list fields take a repeatable
singular flag (--train-data-tag, --augmentation). A job file (YAML 1.2 or JSON, a JobDefinition
as `modelyard training define` takes) comes first when given; flags then override its fields.
The job is checked exactly as the form and `modelyard training preview` check it (the same
`preview` function) before anything runs.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

import typer

from modelyard.cli._common import HomeOpt, JsonOpt, open_registry_or_server, print_json
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.training.form import LearningForm

if TYPE_CHECKING:
    from modelyard.training.jobs import JobDefinition
    from modelyard.training.runner import JobResult

JOB_FILE_SUFFIXES = (".yaml", ".yml", ".json")
LIST_FLAGS = {"train_data_tags": "train-data-tag", "augmentations": "augmentation"}
DP_FIELDS = ("max_grad_norm", "delta", "noise_multiplier", "target_epsilon")
# Flags the form's own fields cannot express directly as typed options: parsed here.
_TEXT_FIELDS = {
    "quantize": "true, false or a quantization name (int8, int4, fp8, nf4).",
    "input_size": "One number (224) or dimensions separated by commas (3,224,224).",
}


class TrainingFailedError(ModelyardError):
    """A training job that failed, timed out or was cancelled (exit status 1)."""

    code = "training_failed"


def _form_option_type(name: str) -> Any:
    """The typed option for a form field: int, float or text; a list field takes repeated text."""
    if name in LIST_FLAGS:
        return list[str] | None
    if name in _TEXT_FIELDS:
        return str | None
    return _scalar(LearningForm.model_fields[name].annotation) | None


def _scalar(annotation: Any) -> type:
    if annotation in (int, float, str):
        return typing.cast(type, annotation)
    if get_origin(annotation) is typing.Literal:
        return str
    for argument in get_args(annotation):
        if argument is not type(None):
            return _scalar(argument)
    return str


def _form_parameters() -> list[inspect.Parameter]:
    parameters = []
    for name, info in LearningForm.model_fields.items():
        flag = "--" + LIST_FLAGS.get(name, name.replace("_", "-"))
        help_text = _TEXT_FIELDS.get(name, "") + " " + (info.description or "")
        if name in LIST_FLAGS:
            help_text = "Repeatable. " + help_text
        option = typer.Option(flag, help=help_text.strip(), show_default=False, rich_help_panel="Learning form")
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[_form_option_type(name), option],
            )
        )
    return parameters


def train_command(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="A job file (.yaml, .yml, .json) and/or, after --, the command to run (no shell).",
            show_default=False,
        ),
    ] = None,
    *,
    builtin: Annotated[
        str | None, typer.Option("--builtin", help="Run this built-in trainer (tiny-classifier, tiny-lm).")
    ] = None,
    executor: Annotated[
        str | None, typer.Option("--executor", help="local (default: one process) or torchrun (DDP).")
    ] = None,
    nproc_per_node: Annotated[
        int | None, typer.Option("--nproc-per-node", help="Processes per node for torchrun, 1 to 64.")
    ] = None,
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node", help="Repeatable. A fleet node of a multi-node torchrun job; the first hosts rendezvous."
        ),
    ] = None,
    timeout: Annotated[
        int | None, typer.Option("--timeout", help="Wall-clock limit in seconds (default 86400).")
    ] = None,
    quantization_mode: Annotated[
        str | None,
        typer.Option("--quantization-mode", help="none, post-training or quantization-aware (as the form allows)."),
    ] = None,
    dp_max_grad_norm: Annotated[
        float | None, typer.Option("--dp-max-grad-norm", help="DP: per-sample gradient clipping norm.")
    ] = None,
    dp_delta: Annotated[float | None, typer.Option("--dp-delta", help="DP: delta, above 0 and below 1.")] = None,
    dp_noise_multiplier: Annotated[
        float | None, typer.Option("--dp-noise-multiplier", help="DP: noise multiplier (or --dp-target-epsilon).")
    ] = None,
    dp_target_epsilon: Annotated[
        float | None, typer.Option("--dp-target-epsilon", help="DP: the epsilon to spend (or --dp-noise-multiplier).")
    ] = None,
    pass_flags: Annotated[
        bool, typer.Option("--pass-flags", help="Append the form's fields to the command as --flag value.")
    ] = False,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="The run directory (new or empty). Default: <home>/runs/<job id>.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the artifact name, manifest and training_config_hash; run nothing.")
    ] = False,
    json_output: JsonOpt = False,
    home: HomeOpt = None,
    **form_values: Any,
) -> None:
    """Run a training job and register its outputs as a raw artifact."""
    job_file, command = _split_args(args or [])
    data: dict[str, Any] = {}
    if job_file is not None:
        from modelyard.loaders import load_mapping

        data = dict(load_mapping(job_file, "job definition"))
    data.update(_form_overrides(form_values))
    job_values = {
        "executor": executor,
        "nproc_per_node": nproc_per_node,
        "nodes": node or None,
        "timeout_seconds": timeout,
        "quantization_mode": quantization_mode,
    }
    data.update({key: value for key, value in job_values.items() if value is not None})
    _apply_dp(
        data, dict(zip(DP_FIELDS, (dp_max_grad_norm, dp_delta, dp_noise_multiplier, dp_target_epsilon), strict=True))
    )
    _apply_run(data, builtin, command)
    definition = _definition(data, job_file)
    with open_registry_or_server(home) as registry:
        if dry_run:
            _print_preview(definition, registry, json_output)
            return
        result = _run(registry, definition, run_dir, pass_flags, json_output)
    _report(result, json_output)


def _with_form_flags(function: Any) -> None:
    """Typer reads a command's options from its signature: replace **form_values with one
    keyword parameter per form field (the module's string annotations evaluated first)."""
    signature = inspect.signature(function, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    function.__signature__ = signature.replace(parameters=[*fixed, *_form_parameters()])


_with_form_flags(train_command)


def _split_args(args: list[str]) -> tuple[Path | None, list[str]]:
    """The job file (a first argument ending in .yaml/.yml/.json) and the command after it."""
    if args and args[0].lower().endswith(JOB_FILE_SUFFIXES):
        return Path(args[0]), args[1:]
    return None, args


def _form_overrides(values: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or (name in LIST_FLAGS and not value):
            continue
        if name == "quantize":
            value = _quantize_value(value)
        elif name == "input_size":
            value = _input_size_value(value)
        overrides[name] = list(value) if isinstance(value, (list, tuple)) else value
    return overrides


def _quantize_value(text: str) -> bool | str:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    return lowered


def _input_size_value(text: str) -> int | list[int]:
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise InvalidInputError(
            f"--input-size {text!r} must be a number (224) or numbers separated by commas (3,224,224)",
            field="input_size",
        ) from None
    return numbers[0] if len(numbers) == 1 and "," not in text else numbers


def _apply_dp(data: dict[str, Any], flags: dict[str, float | None]) -> None:
    given = {key: value for key, value in flags.items() if value is not None}
    if given:
        existing = data.get("dp")
        data["dp"] = {**(existing if isinstance(existing, dict) else {}), **given}


def _apply_run(data: dict[str, Any], builtin: str | None, command: list[str]) -> None:
    if builtin is not None and command:
        raise InvalidInputError("give --builtin NAME or a command after --, not both", field="run")
    if builtin is not None:
        data["run"] = {"kind": "builtin", "trainer": builtin}
    elif command:
        data["run"] = {"kind": "command", "argv": command, "workdir": os.getcwd()}
    elif "run" not in data:
        raise InvalidInputError(
            "nothing to run: give --builtin NAME, a command after -- (modelyard train ... -- python train.py), "
            "or a job file with run",
            field="run",
        )


def _definition(data: dict[str, Any], job_file: Path | None) -> JobDefinition:
    from modelyard.training.jobs import load_definition

    return load_definition(data, job_file if job_file is not None else "command line")


def _print_preview(definition: JobDefinition, registry: Any, json_output: bool) -> None:
    from modelyard.training.form import preview

    result = preview(definition.form(), registry)
    if json_output:
        print_json(result.model_dump(mode="json"))
        return
    sys.stdout.write(f"artifact_name: {result.artifact_name}\n")
    sys.stdout.write(f"training_config_hash: {result.training_config_hash}\n")
    sys.stdout.write("manifest:\n" + json.dumps(result.manifest, indent=2) + "\n")


def _run(registry: Any, definition: JobDefinition, run_dir: Path | None, pass_flags: bool, quiet: bool) -> JobResult:
    from modelyard.training.runner import cancel_on_interrupt, run_job

    # Live output: stdout normally; stderr with --json, whose stdout is the result alone.
    stream = sys.stderr if quiet else sys.stdout

    def show(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    cancel = threading.Event()
    with cancel_on_interrupt(cancel):
        return run_job(registry, definition, run_dir=run_dir, on_output=show, cancel=cancel, pass_flags=pass_flags)


def _report(result: JobResult, json_output: bool) -> None:
    if json_output:
        print_json(
            {
                "status": result.status,
                "exit_code": result.exit_code,
                "job_id": result.job_id,
                "run_dir": str(result.run_dir),
                "message": result.message,
                "registered": result.registered,
                "confined": result.confined,
                "log_tail": result.log_tail,
            }
        )
    elif result.ok:
        for ref in result.registered:
            sys.stdout.write(f"registered {ref}\n")
    if not result.ok:
        if not json_output:
            sys.stderr.write(f"--- last lines of {result.run_dir / 'training.log'} ---\n{result.log_tail}\n")
        raise TrainingFailedError(f"job {result.job_id} {result.status.replace('_', ' ')}: {result.message}")


def install(app: typer.Typer) -> None:
    app.command("train")(train_command)


def _main() -> None:
    """`python -m modelyard.cli.train`: the command alone, with the CLI's error handling."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    install(app)

    @app.callback()
    def _root() -> None:
        """modelyard train."""

    try:
        app(["train", *sys.argv[1:]], prog_name="modelyard")
    except ModelyardError as exc:
        sys.stderr.write(f"error: {exc.render()}\n")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    _main()
