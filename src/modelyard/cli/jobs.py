"""`modelyard jobs` (submit, list, show, logs, cancel) and `modelyard worker`: the training queue.

Jobs queue in the registry's catalog; `modelyard worker` processes (any number, on any machine
that reaches the catalog) run them. `jobs submit FILE` takes a job definition (YAML 1.2 or JSON,
as `modelyard training define`); a bad field exits 3 naming it and nothing is queued.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelyard.cli._common import HomeOpt, JsonOpt, open_registry, print_json, print_table
from modelyard.errors import InvalidInputError

if TYPE_CHECKING:
    from modelyard.training.queue import Job

jobs_app = typer.Typer(
    help="Training jobs queued for `modelyard worker`: submit, list, show, logs, cancel.", no_args_is_help=True
)
JobIdArg = Annotated[int, typer.Argument(min=1, help="The job's id.", show_default=False)]
FOLLOW_INTERVAL = 0.5


@jobs_app.command("submit")
def submit_command(
    file: Annotated[Path | None, typer.Argument(help="YAML or JSON job definition file.", show_default=False)] = None,
    definition: Annotated[
        int | None, typer.Option("--definition", min=1, help="Submit a saved job definition by id instead of FILE.")
    ] = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Queue a training job from a job definition file (or a saved definition); print its id."""
    from modelyard.loaders import load_mapping
    from modelyard.training.jobs import load_definition
    from modelyard.training.queue import submit_definition, submit_job

    if (file is None) == (definition is None):
        raise InvalidInputError("give a job definition FILE or --definition ID (one of them)", field="FILE")
    with open_registry(home) as registry:
        if file is not None:
            queued = submit_job(registry, load_definition(load_mapping(file, "job definition"), file))
        else:
            assert definition is not None
            queued = submit_definition(registry, definition)
    if json_output:
        print_json(queued.model_dump(mode="json"))
        return
    sys.stdout.write(f"queued job {queued.id}: trains {queued.artifact_name}\n")


@jobs_app.command("list")
def list_command(
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only jobs in this status: queued, running, succeeded, failed, ..."),
    ] = None,
    submitted_by: Annotated[str | None, typer.Option("--submitted-by", help="Only jobs this user submitted.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many (newest first).")] = 50,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    from modelyard.training.queue import list_jobs

    with open_registry(home) as registry:
        found = list_jobs(registry, status=status, submitted_by=submitted_by, limit=limit)
    if json_output:
        print_json([item.model_dump(mode="json") for item in found])
        return
    rows = [
        [str(j.id), j.status, j.artifact_name, j.submitted_by, j.worker or "-", f"{j.created_at:%Y-%m-%d %H:%M}"]
        for j in found
    ]
    print_table(["ID", "STATUS", "ARTIFACT", "BY", "WORKER", "SUBMITTED"], rows)


@jobs_app.command("show")
def show_command(job_id: JobIdArg, home: HomeOpt = None, json_output: JsonOpt = False) -> None:
    """Print one job: status, times, message, registered versions and the log's tail."""
    from modelyard.training.queue import job

    with open_registry(home) as registry:
        found = job(registry, job_id)
    if json_output:
        print_json(found.model_dump(mode="json"))
        return
    _print_job(found)


@jobs_app.command("logs")
def logs_command(
    job_id: JobIdArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output until the job ends.")
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Print the job's training.log (read from its run directory under the registry home)."""
    from modelyard.training.queue import read_log

    offset = 0
    with open_registry(home) as registry:
        while True:
            chunk = read_log(registry, job_id, offset)
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            offset = chunk.next_offset
            if not follow or chunk.complete:
                return
            if chunk.next_offset == chunk.offset:
                time.sleep(FOLLOW_INTERVAL)


@jobs_app.command("cancel")
def cancel_command(job_id: JobIdArg, home: HomeOpt = None, json_output: JsonOpt = False) -> None:
    """Cancel a job: a queued one at once, a running one by asking its worker to stop it."""
    from modelyard.training.queue import request_cancel

    with open_registry(home) as registry:
        cancelled = request_cancel(registry, job_id)
    if json_output:
        print_json(cancelled.model_dump(mode="json"))
        return
    if cancelled.status == "cancelled":
        sys.stdout.write(f"job {cancelled.id}: cancelled\n")
    else:
        sys.stdout.write(f"job {cancelled.id}: cancel requested; its worker ({cancelled.worker}) stops it\n")


def worker_command(
    once: Annotated[bool, typer.Option("--once", help="Run at most one job, then exit.")] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.05, max=3600, help="Seconds between looks at an empty queue.")
    ] = 2.0,
    name: Annotated[
        str | None, typer.Option("--name", help="This worker's name, unique among workers (default: host-pid).")
    ] = None,
    lost_after: Annotated[
        float,
        typer.Option(
            "--lost-after", min=0.5, max=86400, help="Seconds without a heartbeat after which a job's worker is lost."
        ),
    ] = 60.0,
    home: HomeOpt = None,
) -> None:
    """Run queued training jobs one at a time until stopped (SIGTERM/SIGINT interrupt the current one)."""
    from modelyard.training.worker import Worker, WorkerOptions, default_name

    worker_name = name or default_name()
    if not worker_name.strip() or len(worker_name) > 200:
        raise InvalidInputError("a worker name is 1 to 200 characters", field="--name")
    options = WorkerOptions(name=worker_name, poll_interval=poll_interval, lost_after=lost_after, once=once)
    with open_registry(home) as registry:
        worker = Worker(registry, options, say=_say)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _frame: worker.request_stop(signal.Signals(number).name))
        _say(f"worker {worker_name}: waiting for jobs in {registry.settings.home}")
        ran = worker.run()
    _say(f"worker {worker_name}: stopped after {ran} job(s)")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _print_job(found: Job) -> None:
    fields = [
        ("job", str(found.id)),
        ("status", found.status + (" (cancel requested)" if found.cancel_requested and not found.finished else "")),
        ("artifact", found.artifact_name),
        ("training_config_hash", found.training_config_hash),
        ("submitted by", found.submitted_by),
        ("submitted", f"{found.created_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("worker", found.worker or "-"),
        ("started", f"{found.started_at:%Y-%m-%d %H:%M:%S} UTC" if found.started_at else "-"),
        ("finished", f"{found.finished_at:%Y-%m-%d %H:%M:%S} UTC" if found.finished_at else "-"),
        ("exit code", "-" if found.exit_code is None else str(found.exit_code)),
        ("run dir", found.run_dir or "-"),
        ("registered", ", ".join(found.registered) or "-"),
        ("message", found.message or "-"),
    ]
    for label, value in fields:
        sys.stdout.write(f"{label + ':':<22}{value}\n")
    if found.log_tail:
        sys.stdout.write("log tail:\n" + found.log_tail.rstrip("\n") + "\n")


def install(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.command("worker")(worker_command)
