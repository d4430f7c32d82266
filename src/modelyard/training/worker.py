"""`modelyard worker`: claim queued training jobs and run them, one at a time.

Each pass reaps the jobs of lost workers, claims the oldest queued job (each job starts once,
however many workers race) and runs it with `modelyard.training.runner.run_job` in its run
directory `<home>/runs/job-<id>`. While it runs, a heartbeat thread extends the job's lease
(every quarter of `lost_after`), stores the log's tail, and sets the job's cancel event when a
user asked to cancel it or the job stopped being ours. SIGTERM or SIGINT stops the worker: the
current job is interrupted and recorded as failed ("interrupted"), never left running or
queued again. A worker killed outright (SIGKILL, power loss) stops beating: the next worker's
reaping fails its job with "worker lost (last heartbeat ...)".

Several workers share one catalog (and, to serve live logs, the registry home); give each a
distinct `--name` (the default, host-pid, is).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelyard.errors import ModelyardError
from modelyard.training.queue import Job, Outcome, claim_next, finish, heartbeat, job, reap_lost

if TYPE_CHECKING:
    from modelyard.registry import Registry
    from modelyard.training.jobs import JobDefinition

log = logging.getLogger("modelyard.worker")

DEFAULT_POLL_INTERVAL = 2.0
DEFAULT_LOST_AFTER = 60.0
TAIL_LINES = 40
RESULT_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


class JobResult(Protocol):
    """What `run_job` returns (modelyard.training.runner.JobResult)."""

    @property
    def status(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def message(self) -> str: ...
    @property
    def log_tail(self) -> str: ...
    @property
    def registered(self) -> Sequence[str]: ...


class JobRunner(Protocol):
    """`modelyard.training.runner.run_job`'s signature."""

    def __call__(
        self,
        registry: Any,
        definition: JobDefinition,
        *,
        job_id: str | None = ...,
        run_dir: Path | None = ...,
        on_output: Callable[[str], None] | None = ...,
        cancel: threading.Event | None = ...,
        pass_flags: bool = ...,
    ) -> JobResult: ...


@dataclass(frozen=True)
class WorkerOptions:
    name: str
    poll_interval: float = DEFAULT_POLL_INTERVAL
    lost_after: float = DEFAULT_LOST_AFTER
    once: bool = False
    runs_dir: Path | None = None  # default: <home>/runs

    @property
    def heartbeat_interval(self) -> float:
        return max(0.1, min(10.0, self.lost_after / 4))


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def default_runner() -> JobRunner:
    from modelyard.training.runner import run_job

    runner: JobRunner = run_job
    return runner


class Worker:
    """Claims and runs jobs until stopped (or after one, with `once`)."""

    def __init__(
        self,
        registry: Registry,
        options: WorkerOptions,
        runner: JobRunner | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.options = options
        self.runner = runner
        self.say = say or (lambda line: None)
        self.stopping = threading.Event()
        self._stop_reason: str | None = None
        self._cancel: threading.Event | None = None

    @property
    def runs_dir(self) -> Path:
        return self.options.runs_dir or self.registry.settings.home / "runs"

    def request_stop(self, reason: str) -> None:
        """Stop after (interrupting) the current job; safe to call from a signal handler."""
        self._stop_reason = reason
        self.stopping.set()
        if self._cancel is not None:
            self._cancel.set()

    def run(self) -> int:
        """Work until stopped; returns how many jobs this worker ran."""
        ran = 0
        while not self.stopping.is_set():
            if self.run_one() is not None:
                ran += 1
            elif not self.options.once:
                self.stopping.wait(self.options.poll_interval)
            if self.options.once:
                break
        return ran

    def run_one(self) -> Job | None:
        """Reap lost jobs, then claim and run the oldest queued one; None when nothing is queued."""
        for lost in reap_lost(self.registry):
            self.say(f"job {lost.id}: {lost.message}")
        claimed = claim_next(self.registry, self.options.name, self.runs_dir, self.options.lost_after)
        if claimed is None:
            return None
        self.say(f"job {claimed.id}: running {claimed.artifact_name} in {claimed.run_dir}")
        outcome = self.execute(claimed)
        recorded = finish(self.registry, claimed.id, self.options.name, outcome)
        ended = job(self.registry, claimed.id)
        if not recorded:
            log.warning("job %s was no longer this worker's when it ended: %s", claimed.id, ended.message)
        self.say(f"job {ended.id}: {ended.status}: {ended.message}")
        return ended

    def execute(self, claimed: Job) -> Outcome:
        """Run the job with a heartbeat beside it; every way it can end becomes an Outcome."""
        cancel = threading.Event()
        self._cancel = cancel
        if self.stopping.is_set():
            cancel.set()
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        lost = threading.Event()  # set when a heartbeat finds the job is no longer ours
        done = threading.Event()
        beating = threading.Thread(
            target=self._beat, args=(claimed.id, tail, cancel, lost, done), name=f"heartbeat-{claimed.id}", daemon=True
        )
        beating.start()
        try:
            outcome = self._run(claimed, tail, cancel)
        finally:
            done.set()
            beating.join()
            self._cancel = None
        return self._explained(claimed, outcome, lost)

    def _run(self, claimed: Job, tail: deque[str], cancel: threading.Event) -> Outcome:
        definition = claimed.definition
        assert claimed.run_dir is not None  # every claim sets it
        try:
            runner = self.runner or default_runner()
            result = runner(
                self.registry,
                definition,
                job_id=f"job-{claimed.id}",
                run_dir=Path(claimed.run_dir),
                on_output=lambda text: tail.extend(text.splitlines()),
                cancel=cancel,
                pass_flags=bool(getattr(definition, "pass_flags", False)),
            )
        except ModelyardError as exc:
            return Outcome("failed", None, exc.render(), "\n".join(tail))
        except ImportError as exc:
            return Outcome("failed", None, f"the job runner is not available on this worker: {exc}", "")
        except Exception as exc:  # the job's record must say it failed, whatever broke
            log.exception("job %s: the runner failed", claimed.id)
            return Outcome(
                "failed", None, f"internal error in the worker: {type(exc).__name__}: {exc}", "\n".join(tail)
            )
        status = result.status if result.status in RESULT_STATUSES else "failed"
        log_tail = result.log_tail or "\n".join(tail)
        return Outcome(status, result.exit_code, result.message, log_tail, tuple(result.registered))

    def _explained(self, claimed: Job, outcome: Outcome, lost: threading.Event) -> Outcome:
        """A cancelled run says who cancelled it; one the worker's own stop interrupted is failed."""
        if outcome.status != "cancelled" or lost.is_set():
            return outcome
        if self._stop_reason is not None:
            message = f"interrupted: worker {self.options.name} stopped ({self._stop_reason}) while the job ran"
            return Outcome("failed", outcome.exit_code, message, outcome.log_tail, outcome.registered)
        by = job(self.registry, claimed.id).cancel_requested_by
        message = f"cancelled by {by}" if by else (outcome.message or "cancelled")
        return Outcome("cancelled", outcome.exit_code, message, outcome.log_tail, outcome.registered)

    def _beat(
        self,
        job_id: int,
        tail: deque[str],
        cancel: threading.Event,
        lost: threading.Event,
        done: threading.Event,
    ) -> None:
        while not done.wait(self.options.heartbeat_interval):
            try:
                beat = heartbeat(self.registry, job_id, self.options.name, self.options.lost_after, "\n".join(tail))
            except ModelyardError as exc:  # the catalog is unreachable: retry; the lease tells the rest
                log.warning("job %s: heartbeat failed: %s", job_id, exc.render())
                continue
            if not beat.ours:
                lost.set()
            if beat.cancel_requested:
                cancel.set()
