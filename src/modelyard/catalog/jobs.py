"""Job rows: the training queue that `modelyard worker` processes drain.

Claiming is one write transaction: the oldest queued row is picked (PostgreSQL: `FOR UPDATE SKIP
LOCKED`, so racing workers take different rows; SQLite: `BEGIN IMMEDIATE` serialises them) and
moved to running by an UPDATE that still requires `status = 'queued'`; a claim whose UPDATE
changed no row lost a race and looks again. So each job starts once, whatever the number of workers.

A running job carries a lease: its worker's heartbeat pushes `lease_expires_at` ahead. A job
whose lease expired has lost its worker (killed, or its machine gone): `reap` fails it with the
time of the last heartbeat. Nothing ever moves a job back to queued, so none runs twice.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from modelyard.catalog.tables import EventRow, JobRow
from modelyard.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from modelyard.catalog.catalog import Catalog

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
LOG_TAIL_LIMIT = 16_384  # characters of a log's tail kept in the row
_CLAIM_ATTEMPTS = 20


@dataclass(frozen=True)
class StoredJob:
    """A job as the catalog holds it (its definition as JSON text)."""

    id: int
    definition_json: str
    definition_id: int | None
    artifact_name: str
    training_config_hash: str
    submitted_by: str
    status: str
    worker: str | None
    attempt: int
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    lease_expires_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    message: str
    log_tail: str
    run_dir: str | None
    registered: tuple[str, ...]
    cancel_requested: bool
    cancel_requested_by: str | None


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learned: whether the job is still this worker's, and whether to cancel it."""

    ours: bool
    cancel_requested: bool


@dataclass(frozen=True)
class Outcome:
    """How a job ended, as its worker reports it."""

    status: str
    exit_code: int | None
    message: str
    log_tail: str
    registered: tuple[str, ...] = ()


class JobRecords:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(
        self,
        *,
        definition_json: str,
        definition_id: int | None,
        artifact_name: str,
        training_config_hash: str,
        actor: str,
    ) -> StoredJob:
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            row = JobRow(
                definition_json=definition_json,
                definition_id=definition_id,
                artifact_name=artifact_name,
                training_config_hash=training_config_hash,
                submitted_by=actor,
                status="queued",
                attempt=0,
                created_at=now,
                message="",
                log_tail="",
                registered_json="[]",
                cancel_requested=False,
            )
            session.add(row)
            session.flush()
            session.add(_event(now, actor, "job.submit", row, {"definition_id": definition_id}))
            return _stored(row)

    def get(self, job_id: int) -> StoredJob:
        with self.catalog._read() as session:
            return _stored(_row(session, job_id))

    def list(
        self, *, status: str | None = None, submitted_by: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[StoredJob]:
        """Newest first."""
        query = _filtered(select(JobRow), status, submitted_by).order_by(JobRow.id.desc()).limit(limit).offset(offset)
        with self.catalog._read() as session:
            return [_stored(row) for row in session.scalars(query)]

    def count(self, *, status: str | None = None, submitted_by: str | None = None) -> int:
        query = _filtered(select(func.count(JobRow.id)), status, submitted_by)
        with self.catalog._read() as session:
            return int(session.scalar(query) or 0)

    def cancel(self, job_id: int, actor: str) -> StoredJob:
        """A queued job is cancelled at once; a running one is flagged for its worker to stop."""
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            row = _row(session, job_id, lock=True)
            if row.status in FINAL_STATUSES:
                raise ConflictError(f"job {job_id} already ended ({row.status}); there is nothing to cancel")
            if row.status == "queued":
                row.status = "cancelled"
                row.finished_at = now
                row.message = f"cancelled by {actor} before it started"
            row.cancel_requested = True
            row.cancel_requested_by = actor
            session.add(_event(now, actor, "job.cancel", row, {"status": row.status}))
            session.flush()
            return _stored(row)

    def claim(self, worker: str, lease_seconds: float, run_dir_of: Callable[[int], str]) -> StoredJob | None:
        """Move the oldest queued job to running for `worker`; None when the queue is empty."""
        for _ in range(_CLAIM_ATTEMPTS):
            now = datetime.now(UTC)
            with self.catalog._write() as session:
                pick = select(JobRow.id).where(JobRow.status == "queued").order_by(JobRow.id).limit(1)
                if session.get_bind().dialect.name == "postgresql":
                    pick = pick.with_for_update(skip_locked=True)
                job_id = session.scalar(pick)
                if job_id is None:
                    return None
                claimed = session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == "queued")
                    .values(
                        status="running",
                        worker=worker,
                        attempt=JobRow.attempt + 1,
                        started_at=now,
                        heartbeat_at=now,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        run_dir=run_dir_of(job_id),
                    )
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(claimed) != 1:
                    continue  # another worker took it between our read and our write
                row = _row(session, job_id)
                session.refresh(row)
                session.add(_event(now, worker, "job.start", row, {"worker": worker, "attempt": row.attempt}))
                return _stored(row)
        return None

    def heartbeat(self, job_id: int, worker: str, lease_seconds: float, log_tail: str | None = None) -> Beat:
        now = datetime.now(UTC)
        values: dict[str, Any] = {"heartbeat_at": now, "lease_expires_at": now + timedelta(seconds=lease_seconds)}
        if log_tail is not None:
            values["log_tail"] = log_tail[-LOG_TAIL_LIMIT:]
        with self.catalog._write() as session:
            beat = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running", JobRow.worker == worker)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(beat) != 1:
                return Beat(ours=False, cancel_requested=True)
            requested = session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id))
            return Beat(ours=True, cancel_requested=bool(requested))

    def finish(self, job_id: int, worker: str, outcome: Outcome) -> bool:
        """Record how the job ended; False when it was no longer this worker's (reaped meanwhile)."""
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            done = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running", JobRow.worker == worker)
                .values(
                    status=outcome.status,
                    finished_at=now,
                    exit_code=outcome.exit_code,
                    message=outcome.message,
                    log_tail=outcome.log_tail[-LOG_TAIL_LIMIT:],
                    registered_json=json.dumps(list(outcome.registered)),
                    lease_expires_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            if _rowcount(done) != 1:
                return False
            row = _row(session, job_id)
            session.refresh(row)
            details = {"status": outcome.status, "exit_code": outcome.exit_code, "registered": list(outcome.registered)}
            session.add(_event(now, worker, "job.finish", row, details))
            return True

    def reap(self) -> builtins.list[StoredJob]:
        """Fail every running job whose lease expired: its worker is gone."""
        now = datetime.now(UTC)
        expired = (JobRow.status == "running", JobRow.lease_expires_at < now)
        with self.catalog._read() as session:  # idle workers look often: no write lock unless needed
            if session.scalar(select(JobRow.id).where(*expired).limit(1)) is None:
                return []
        reaped = []
        with self.catalog._write() as session:
            lost = select(JobRow).where(*expired)
            for row in session.scalars(lost).all():
                beat = _utc(row.heartbeat_at) if row.heartbeat_at is not None else None
                last = f"{beat:%Y-%m-%d %H:%M:%S} UTC" if beat is not None else "never"
                row.status = "failed"
                row.finished_at = now
                row.lease_expires_at = None
                row.message = (
                    f"worker lost (last heartbeat {last} from {row.worker}); the job was not run again: submit it anew"
                )
                session.add(_event(now, "modelyard-worker", "job.lost", row, {"worker": row.worker}))
                session.flush()
                reaped.append(_stored(row))
        return reaped


def _filtered(query: Any, status: str | None, submitted_by: str | None) -> Any:
    if status is not None:
        query = query.where(JobRow.status == status)
    if submitted_by is not None:
        query = query.where(JobRow.submitted_by == submitted_by)
    return query


def _row(session: Session, job_id: int, *, lock: bool = False) -> JobRow:
    query = select(JobRow).where(JobRow.id == job_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalars(query).first()
    if row is None:
        raise NotFoundError(f"no job {job_id} (modelyard jobs list shows them)", field="id")
    return row


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _event(at: datetime, actor: str, action: str, row: JobRow, details: dict[str, Any]) -> EventRow:
    return EventRow(
        at=at,
        actor=actor,
        action=action,
        artifact_name=row.artifact_name,
        version_number=None,
        details_json=json.dumps({"job": row.id, **details}, sort_keys=True),
    )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _maybe_utc(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


def _stored(row: JobRow) -> StoredJob:
    return StoredJob(
        id=row.id,
        definition_json=row.definition_json,
        definition_id=row.definition_id,
        artifact_name=row.artifact_name,
        training_config_hash=row.training_config_hash,
        submitted_by=row.submitted_by,
        status=row.status,
        worker=row.worker,
        attempt=row.attempt,
        created_at=_utc(row.created_at),
        started_at=_maybe_utc(row.started_at),
        heartbeat_at=_maybe_utc(row.heartbeat_at),
        lease_expires_at=_maybe_utc(row.lease_expires_at),
        finished_at=_maybe_utc(row.finished_at),
        exit_code=row.exit_code,
        message=row.message,
        log_tail=row.log_tail,
        run_dir=row.run_dir,
        registered=tuple(json.loads(row.registered_json or "[]")),
        cancel_requested=row.cancel_requested,
        cancel_requested_by=row.cancel_requested_by,
    )
