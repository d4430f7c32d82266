"""The training queue over HTTP: submit jobs, list and read them, tail their logs, cancel them.

`POST /jobs` takes a `JobDefinition` (the learning form plus what to run) and queues it for
`modelyard worker` processes; `POST /training/definitions/{id}/jobs` queues a saved definition.
Submitting needs `jobs.submit`; reading needs `read`. Cancelling needs `jobs.submit` and the job
to be the caller's own, or `jobs.cancel.any` for anyone's (403 otherwise).

`GET /jobs/{id}/log?offset=N` answers the job's training.log from byte N as text, with
`X-Log-Next-Offset` (where the next read starts) and `X-Log-Complete: true` once the job has
ended and nothing is left: a client polls it to follow the log live.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse

from modelyard.access import Principal
from modelyard.server.security import RegistryDep, require
from modelyard.training.jobs import JobDefinition
from modelyard.training.queue import (
    LOG_CHUNK,
    MAX_PAGE,
    Job,
    JobPage,
    JobStatus,
    count_jobs,
    job,
    list_jobs,
    read_log,
    request_cancel,
    submit_definition,
    submit_job,
)

router = APIRouter(prefix="/api/v1", tags=["jobs"])
Reader = Annotated[Principal, Depends(require("read"))]
Submitter = Annotated[Principal, Depends(require("jobs.submit"))]
MAX_ID = 2**31 - 1
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="The job's id.")]
MAX_OFFSET = 2**62


@router.post("/jobs", response_model=Job, status_code=201, summary="Queue a training job for the workers")
def create_job(definition: JobDefinition, registry: RegistryDep, principal: Submitter) -> Job:
    with registry.acting_as(principal):
        return submit_job(registry, definition, submitted_by=principal.name)


@router.post(
    "/training/definitions/{definition_id}/jobs",
    response_model=Job,
    status_code=201,
    summary="Queue a training job from a saved job definition",
)
def run_definition(
    definition_id: Annotated[int, Path(ge=1, le=MAX_ID)], registry: RegistryDep, principal: Submitter
) -> Job:
    with registry.acting_as(principal):
        return submit_definition(registry, definition_id, submitted_by=principal.name)


@router.get("/jobs", response_model=JobPage, summary="List training jobs, newest first")
def get_jobs(
    registry: RegistryDep,
    _: Reader,
    status: JobStatus | None = None,
    submitted_by: Annotated[str | None, Query(max_length=200, description="only this submitter's jobs")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobPage:
    items = list_jobs(registry, status=status, submitted_by=submitted_by, limit=limit, offset=offset)
    total = count_jobs(registry, status=status, submitted_by=submitted_by)
    return JobPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=Job, summary="One training job")
def get_job(job_id: JobId, registry: RegistryDep, _: Reader) -> Job:
    return job(registry, job_id)


@router.get(
    "/jobs/{job_id}/log",
    response_class=PlainTextResponse,
    summary="A job's training.log from a byte offset (X-Log-Next-Offset says where to read next)",
    responses={200: {"content": {"text/plain": {}}, "description": "the log from the offset"}},
)
def get_job_log(
    job_id: JobId,
    registry: RegistryDep,
    _: Reader,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="the byte to start at")] = 0,
    limit: Annotated[int, Query(ge=1, le=LOG_CHUNK, description="at most this many bytes")] = LOG_CHUNK,
) -> PlainTextResponse:
    chunk = read_log(registry, job_id, offset, limit)
    headers = {
        "X-Log-Next-Offset": str(chunk.next_offset),
        "X-Log-Complete": "true" if chunk.complete else "false",
        "Cache-Control": "no-store",
    }
    return PlainTextResponse(chunk.text, headers=headers)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job (a queued one at once; a running one is stopped by its worker)",
)
def cancel_job(job_id: JobId, registry: RegistryDep, principal: Submitter) -> Job:
    with registry.acting_as(principal):
        return request_cancel(registry, job_id, principal)
