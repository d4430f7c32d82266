"""The web UI's training jobs: the queue (/jobs, paginated, with Run buttons for saved job
definitions) and one job (/jobs/{id}: status, its live log, and a cancel form).

The log follows itself with htmx: the page polls `/ui/jobs/{id}/log?offset=N` every two seconds;
each answer appends the new lines, refreshes the status and facts, and replaces the poller with
one at the next offset (none once the job has ended and its log is read). Without JavaScript
the page shows the log as it was when loaded. Forms carry the session's CSRF token; running a
definition needs `jobs.submit`, cancelling needs it and the job to be one's own (or
`jobs.cancel.any`).

`install(app)` is called by `modelyard.server.app` when this module exists.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from modelyard.errors import InvalidInputError
from modelyard.server.ui.web import Pager, Viewer, acting, current_viewer, posted_form, redirect, registry_of, render
from modelyard.training.jobs import job_definitions
from modelyard.training.queue import (
    JOB_STATUSES,
    Job,
    LogChunk,
    count_jobs,
    job,
    list_jobs,
    log_tail_offset,
    read_log,
    request_cancel,
    submit_definition,
)

router = APIRouter(include_in_schema=False)

POLL_SECONDS = 2
TAIL_BYTES = 64 * 1024  # how much of a long log the page shows when it loads
DEFINITIONS_SHOWN = 10
MAX_ID = 2**31 - 1
# Status -> the badge style the UI's stylesheet already has.
BADGES = {
    "queued": "pending",
    "running": "verifying",
    "succeeded": "activated",
    "failed": "failed",
    "cancelled": "rolled_back",
    "timed_out": "failed",
}
DONE = {
    "submitted": "Job queued: a worker (modelyard worker) will run it.",
    "cancelled": "Job cancelled.",
    "cancel-requested": "Cancel requested: its worker stops the job.",
}


def install(app: FastAPI) -> None:
    app.include_router(router)


@router.get("/jobs")
def jobs_page(request: Request) -> Response:
    viewer = current_viewer(request)
    registry = registry_of(request)
    status = (request.query_params.get("status") or "").strip() or None
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInputError(f"unknown job status {status!r}; use one of {', '.join(JOB_STATUSES)}", field="status")
    total = count_jobs(registry, status=status)
    pager = Pager.of(request, total)
    context = {
        "jobs": list_jobs(registry, status=status, limit=pager.size, offset=pager.offset),
        "total": total,
        "pager": pager,
        "statuses": JOB_STATUSES,
        "chosen": status or "",
        "definitions": list(reversed(job_definitions(registry)))[:DEFINITIONS_SHOWN],
        "badges": BADGES,
    }
    return render(request, "jobs.html", viewer, context)


@router.post("/jobs/run")
async def run_definition(request: Request) -> Response:
    viewer, fields = await posted_form(request, "jobs.submit")
    definition_id = _id(fields.get("definition_id"), "definition_id")
    who = viewer.principal.name
    queued = await acting(request, viewer.principal, lambda r: submit_definition(r, definition_id, submitted_by=who))
    return redirect(f"/jobs/{queued.id}?done=submitted")


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request) -> Response:
    viewer = current_viewer(request)
    registry = registry_of(request)
    number = _id(job_id, "id")
    current = job(registry, number)
    chunk = read_log(registry, number, log_tail_offset(registry, number, TAIL_BYTES))
    context = {**_live(viewer, current, chunk), "done": DONE.get(request.query_params.get("done", ""))}
    return render(request, "job.html", viewer, context)


@router.get("/ui/jobs/{job_id}/log")
def job_log(job_id: str, request: Request) -> Response:
    """The poller's answer: new log text, the refreshed status and facts, the next poller."""
    viewer = current_viewer(request)
    registry = registry_of(request)
    number = _id(job_id, "id")
    offset = _offset(request.query_params.get("offset"))
    chunk = read_log(registry, number, offset)
    return render(request, "_job_live.html", viewer, _live(viewer, job(registry, number), chunk))


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> Response:
    viewer, _fields = await posted_form(request, "jobs.submit")
    number = _id(job_id, "id")
    principal = viewer.principal
    cancelled = await acting(request, principal, lambda r: request_cancel(r, number, principal))
    return redirect(f"/jobs/{cancelled.id}?done={'cancelled' if cancelled.finished else 'cancel-requested'}")


def _live(viewer: Viewer, current: Job, chunk: LogChunk) -> dict[str, Any]:
    return {
        "job": current,
        "chunk": chunk,
        "badges": BADGES,
        "poll_seconds": POLL_SECONDS,
        "cancel_refusal": _cancel_refusal(viewer, current),
    }


def _cancel_refusal(viewer: Viewer, current: Job) -> str | None:
    """None when the viewer may cancel the job; else why not (shown beside a disabled button)."""
    if not viewer.can("jobs.submit"):
        return viewer.why_not("jobs.submit")
    if current.submitted_by != viewer.principal.name and not viewer.can("jobs.cancel.any"):
        return f"only {current.submitted_by} (who submitted it) or an admin may cancel it"
    return None


def _id(text: str | None, field: str) -> int:
    value = (text or "").strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_ID:
        raise InvalidInputError(f"{field} must be a whole number from 1, not {value!r}", field=field)
    return int(value)


def _offset(text: str | None) -> int:
    value = (text or "0").strip()
    if not value.isdigit() or int(value) > 2**62:
        raise InvalidInputError(f"offset must be a whole number from 0, not {value!r}", field="offset")
    return int(value)
