"""The training job queue in the catalog: submit, list, read, cancel; claim, heartbeat, finish, reap.

The server (`POST /api/v1/jobs`), the web UI and `modelyard jobs submit` queue jobs; `modelyard
worker` processes claim them one at a time (each job starts once, however many workers race),
run them with `modelyard.training.runner.run_job`, keep a heartbeat while they run and record
how they ended. A job whose worker stopped beating (killed, machine gone) is failed by the next
worker's reaping with "worker lost": it is never lost and never silently run twice.

A job's live log is `training.log` in its run directory, which the worker picks under the
registry home (`<home>/runs/job-<id>`): the server reads it by byte offset, so a server and its
workers share the registry home in the default setup. Workers elsewhere still report the log's
tail with every heartbeat (`log_tail`).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.access import Principal, current_principal
from modelyard.catalog.jobs import FINAL_STATUSES, JOB_STATUSES, Beat, JobRecords, Outcome, StoredJob
from modelyard.errors import InvalidInputError, PermissionDeniedError
from modelyard.training.form import Preview, preview
from modelyard.training.jobs import JobDefinition, job_definition

if TYPE_CHECKING:
    from modelyard.registry import Registry

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
LOG_NAME = "training.log"
LOG_CHUNK = 256 * 1024  # bytes one read of the log returns at most
MAX_PAGE = 500

__all__ = [
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "Beat",
    "Job",
    "JobPage",
    "LogChunk",
    "Outcome",
    "claim_next",
    "count_jobs",
    "finish",
    "heartbeat",
    "job",
    "list_jobs",
    "log_tail_offset",
    "read_log",
    "reap_lost",
    "request_cancel",
    "submit_definition",
    "submit_job",
]


class Job(BaseModel):
    """A queued, running or finished training job."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="The job's number, from 1.")
    status: JobStatus
    artifact_name: str = Field(description="The artifact the job registers when it succeeds (its preview's name).")
    training_config_hash: str
    submitted_by: str = Field(description="Who submitted it: an API key's name, or the OS user of the CLI.")
    definition_id: int | None = Field(description="The saved job definition it was submitted from, if any.")
    worker: str | None = Field(description="The worker that claimed it.")
    attempt: int = Field(description="How many times a worker started it: 0 or 1 (a job never runs twice).")
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None = Field(description="Its worker's last sign of life while it runs.")
    finished_at: datetime | None
    exit_code: int | None
    message: str = Field(description="How it ended (or why it failed), in one line.")
    log_tail: str = Field(description="The last lines of training.log (refreshed by each heartbeat while running).")
    run_dir: str | None = Field(description="Its run directory on the worker's machine.")
    registered: builtins.list[str] = Field(description="The versions it registered, as NAME@N.")
    cancel_requested: bool
    cancel_requested_by: str | None
    definition: JobDefinition

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class JobPage(BaseModel):
    items: builtins.list[Job]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class LogChunk:
    """Part of a job's training.log: the text from `offset`, and where the next read starts.
    `complete` once the job has ended and everything was read."""

    text: str
    offset: int
    next_offset: int
    complete: bool


# -- submitting and reading ------------------------------------------------------------------------------


def submit_job(
    registry: Registry, definition: JobDefinition, *, submitted_by: str | None = None, definition_id: int | None = None
) -> Job:
    """Queue a job after checking its form against the registry (as `preview` does: the same
    artifact name and training_config_hash the form shows). Who submits it: `submitted_by`, else
    whom the registry acts for (the server's caller, else the OS user)."""
    checked = preview(definition.form(), registry)
    _check_supported(definition, checked)
    stored = JobRecords(registry.catalog).add(
        definition_json=definition.model_dump_json(),
        definition_id=definition_id,
        artifact_name=checked.artifact_name,
        training_config_hash=checked.training_config_hash,
        actor=submitted_by or registry._actor(),
    )
    return _job(stored)


def submit_definition(registry: Registry, definition_id: int, *, submitted_by: str | None = None) -> Job:
    """Queue a job from a saved definition (NotFoundError when there is none with this id)."""
    saved = job_definition(registry, definition_id)
    return submit_job(registry, saved.definition, submitted_by=submitted_by, definition_id=saved.id)


def job(registry: Registry, job_id: int) -> Job:
    """One job; NotFoundError naming it when there is none."""
    return _job(JobRecords(registry.catalog).get(job_id))


def list_jobs(
    registry: Registry,
    *,
    status: str | None = None,
    submitted_by: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> builtins.list[Job]:
    """Jobs newest first, optionally of one status or submitter."""
    _check_listing(status, limit, offset)
    records = JobRecords(registry.catalog)
    return [_job(s) for s in records.list(status=status, submitted_by=submitted_by, limit=limit, offset=offset)]


def count_jobs(registry: Registry, *, status: str | None = None, submitted_by: str | None = None) -> int:
    _check_listing(status, 1, 0)
    return JobRecords(registry.catalog).count(status=status, submitted_by=submitted_by)


def request_cancel(registry: Registry, job_id: int, principal: Principal | None = None) -> Job:
    """Cancel a job: a queued one at once, a running one by asking its worker (which stops it and
    records `cancelled`). Its submitter may; others need `jobs.cancel.any` (server) or to be a
    local admin (`[lifecycle] admins`, the CLI)."""
    records = JobRecords(registry.catalog)
    target = records.get(job_id)
    who = principal or current_principal.get()
    if who is not None:
        if target.submitted_by != who.name and not who.can("jobs.cancel.any"):
            raise PermissionDeniedError(
                f"{who.name} ({who.role}) may not cancel job {job_id} of {target.submitted_by}: "
                "that needs the 'jobs.cancel.any' permission"
            )
        actor = who.name
    else:
        actor = registry._actor()
        if target.submitted_by != actor:
            registry._require_admin(f"cancelling job {job_id} of {target.submitted_by}")
    return _job(records.cancel(job_id, actor))


def read_log(registry: Registry, job_id: int, offset: int = 0, limit: int = LOG_CHUNK) -> LogChunk:
    """The job's training.log from byte `offset` (at most `limit` bytes, ending at a line's end
    while the job runs, so a live tail never splits a line or a character)."""
    if offset < 0:
        raise InvalidInputError(f"offset must be 0 or more, not {offset}", field="offset")
    current = job(registry, job_id)
    path = _log_path(current)
    data = b""
    if path is not None and path.is_file():
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
    at_end = len(data) < limit
    if not (current.finished and at_end):
        data = _whole_lines(data, limit)
    text = data.decode("utf-8", errors="replace")
    return LogChunk(text, offset, offset + len(data), current.finished and at_end)


def log_tail_offset(registry: Registry, job_id: int, keep: int) -> int:
    """Where to start reading to get about the last `keep` bytes of the log, at a line's start."""
    path = _log_path(job(registry, job_id))
    if path is None or not path.is_file():
        return 0
    size = path.stat().st_size
    if size <= keep:
        return 0
    with path.open("rb") as handle:
        handle.seek(size - keep)
        skipped = handle.readline()  # the rest of a line cut in the middle
    return size - keep + len(skipped)


def _log_path(current: Job) -> Path | None:
    return Path(current.run_dir) / LOG_NAME if current.run_dir else None


def _whole_lines(data: bytes, limit: int) -> bytes:
    end = data.rfind(b"\n")
    if end < 0:  # no line's end yet: wait for it, unless the line alone fills a whole read
        return data if len(data) >= limit else b""
    return data[: end + 1]


# -- what workers do ---------------------------------------------------------------------------------------


def claim_next(registry: Registry, worker_id: str, runs_dir: Path, lease_seconds: float) -> Job | None:
    """The oldest queued job, now running for `worker_id` with run directory `runs_dir/job-<id>`;
    None when nothing is queued. Safe to call from any number of workers at once."""
    stored = JobRecords(registry.catalog).claim(worker_id, lease_seconds, lambda i: str(runs_dir / f"job-{i}"))
    return _job(stored) if stored is not None else None


def heartbeat(
    registry: Registry, job_id: int, worker_id: str, lease_seconds: float, log_tail: str | None = None
) -> Beat:
    """Extend the job's lease; says whether it is still ours and whether a cancel was asked for."""
    return JobRecords(registry.catalog).heartbeat(job_id, worker_id, lease_seconds, log_tail)


def finish(registry: Registry, job_id: int, worker_id: str, outcome: Outcome) -> bool:
    """Record the outcome; False when the job was reaped meanwhile (its record then stands)."""
    return JobRecords(registry.catalog).finish(job_id, worker_id, outcome)


def reap_lost(registry: Registry) -> builtins.list[Job]:
    """Fail the running jobs whose worker's lease expired ("worker lost (last heartbeat ...)")."""
    return [_job(stored) for stored in JobRecords(registry.catalog).reap()]


# -- helpers ------------------------------------------------------------------------------------------------


def _check_listing(status: str | None, limit: int, offset: int) -> None:
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInputError(f"unknown job status {status!r}; use one of {', '.join(JOB_STATUSES)}", field="status")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be 1 to {MAX_PAGE}, not {limit}", field="limit")
    if offset < 0:
        raise InvalidInputError(f"offset must be 0 or more, not {offset}", field="offset")


def _check_supported(definition: JobDefinition, checked: Preview) -> None:
    """Refuse, before queueing, a combination the built-in trainer says it cannot run (when the
    built-in trainers are installed here; the worker's runner checks again before it starts)."""
    import importlib
    import importlib.util

    if definition.run.kind != "builtin":
        return
    for module in ("modelyard.training.builtin", "modelyard.training.runner"):
        if importlib.util.find_spec(module) is None:
            return
    check = getattr(importlib.import_module("modelyard.training.builtin"), "check_supported", None)
    if check is not None:
        from modelyard.training.runner import job_document

        check(job_document(definition, checked))


def _job(stored: StoredJob) -> Job:
    return Job(
        id=stored.id,
        status=stored.status,
        artifact_name=stored.artifact_name,
        training_config_hash=stored.training_config_hash,
        submitted_by=stored.submitted_by,
        definition_id=stored.definition_id,
        worker=stored.worker,
        attempt=stored.attempt,
        created_at=stored.created_at,
        started_at=stored.started_at,
        heartbeat_at=stored.heartbeat_at,
        finished_at=stored.finished_at,
        exit_code=stored.exit_code,
        message=stored.message,
        log_tail=stored.log_tail,
        run_dir=stored.run_dir,
        registered=list(stored.registered),
        cancel_requested=stored.cancel_requested,
        cancel_requested_by=stored.cancel_requested_by,
        definition=JobDefinition.model_validate_json(stored.definition_json),
    )
