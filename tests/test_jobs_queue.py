"""The training queue in the catalog and `modelyard worker`: real catalogs (SQLite and PostgreSQL),
real worker processes running real training commands through the job runner, killed for real.

A job's command is a small Python program run by `modelyard.training.runner.run_job` (confined
with bubblewrap where installed); the worker is the real `modelyard worker` in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from modelyard.access import Principal
from modelyard.catalog.db import create_catalog_engine, downgrade, upgrade
from modelyard.catalog.jobs import JobRecords
from modelyard.catalog.tables import Base
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from modelyard.register.flow import current_user
from modelyard.registry import Registry
from modelyard.training.form import preview
from modelyard.training.jobs import define_job, load_definition
from modelyard.training.queue import (
    Job,
    claim_next,
    count_jobs,
    heartbeat,
    job,
    list_jobs,
    read_log,
    reap_lost,
    request_cancel,
    submit_definition,
    submit_job,
)

FORM = {"component": "vision", "base_model": "vit-base16", "task": "embed", "batch_size": 8, "epochs": 2}
ARTIFACT = "vision-vit-base16-embed-v1"
WAIT = 180.0  # seconds a test waits for a worker on this shared, loaded machine

# The real `modelyard` CLI, with the jobs commands installed if cli/__init__.py does not yet.
_CLI = (
    "import modelyard.cli as cli, modelyard.cli.jobs as jobs\n"
    "if not any(group.name == 'jobs' for group in cli.app.registered_groups):\n"
    "    jobs.install(cli.app)\n"
    "cli.main()\n"
)


def command_job(script: str, **extra: Any) -> dict[str, Any]:
    """A job definition running `python -c script`."""
    return {**FORM, "run": {"kind": "command", "argv": [sys.executable, "-c", script]}, "timeout_seconds": 600, **extra}


def _env(home: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")} | {"MODELYARD_HOME": str(home)}


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_worker(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLI, "worker", *args],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    """Stop a worker we started (by its process id) and return what it printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    return process.stdout.read() if process.stdout else ""


def wait_for(what: str, check: Any, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(home: Path, job_id: int) -> str:
    with Registry.open(home) as registry:
        return job(registry, job_id).status


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes a test starts; each is stopped by its own id at the end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        stop(process)


# -- the catalog ------------------------------------------------------------------------------------------


def test_migration_0007_builds_the_jobs_table_as_declared_and_goes_down_again(db_url: str) -> None:
    engine = create_catalog_engine(db_url)
    try:
        upgrade(engine, "head")
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert "jobs" in sa.inspect(engine).get_table_names()
        downgrade(engine, "0006")
        assert "jobs" not in sa.inspect(engine).get_table_names()
        assert "job_definitions" in sa.inspect(engine).get_table_names()
        upgrade(engine, "head")
        assert "jobs" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_jobs_are_submitted_listed_read_and_cancelled(any_registry: Registry) -> None:
    first = submit_job(any_registry, load_definition(command_job("print(1)")))
    checked = preview(load_definition(FORM | {"run": {"kind": "builtin", "trainer": "x"}}).form(), any_registry)
    assert (first.id, first.status, first.attempt, first.worker) == (1, "queued", 0, None)
    assert first.artifact_name == ARTIFACT == checked.artifact_name
    assert first.training_config_hash == checked.training_config_hash  # the form's one function
    assert first.submitted_by == current_user() and first.created_at.tzinfo is not None
    saved = define_job(any_registry, load_definition(command_job("print(2)", name="nightly")))
    second = submit_definition(any_registry, saved.id, submitted_by="alice")
    assert (second.id, second.definition_id, second.submitted_by) == (2, saved.id, "alice")
    assert second.definition == saved.definition

    assert [j.id for j in list_jobs(any_registry)] == [2, 1]  # newest first
    assert [j.id for j in list_jobs(any_registry, submitted_by="alice")] == [2]
    assert [j.id for j in list_jobs(any_registry, limit=1, offset=1)] == [1]
    assert count_jobs(any_registry, status="queued") == 2 and count_jobs(any_registry, status="running") == 0

    trainer, admin = Principal("bob", "trainer"), Principal("root", "admin")
    with pytest.raises(PermissionDeniedError) as refused:  # bob may not cancel alice's job
        request_cancel(any_registry, 2, trainer)
    assert "'jobs.cancel.any'" in refused.value.message and job(any_registry, 2).status == "queued"
    cancelled = request_cancel(any_registry, 2, admin)
    assert cancelled.status == "cancelled" and cancelled.message == "cancelled by root before it started"
    assert cancelled.finished_at is not None
    with pytest.raises(ConflictError):  # it has ended: nothing to cancel
        request_cancel(any_registry, 2, admin)
    own = request_cancel(any_registry, 1)  # the CLI's user cancels their own job
    assert own.status == "cancelled" and own.cancel_requested_by == current_user()
    actions = [e["action"] for e in any_registry.events() if str(e["action"]).startswith("job.")]
    assert sorted(actions) == ["job.cancel", "job.cancel", "job.submit", "job.submit"]
    assert claim_next(any_registry, "w1", any_registry.settings.home / "runs", 30) is None  # nothing queued


def test_bad_input_is_refused_naming_the_field_and_nothing_is_queued(any_registry: Registry) -> None:
    with pytest.raises(InvalidInputError) as refused:
        submit_job(any_registry, load_definition(command_job("1", task="segmentation")))
    assert refused.value.field == "task"
    with pytest.raises(InvalidInputError) as refused:
        load_definition(command_job("1", batch_size=0))
    assert refused.value.field == "batch_size"
    with pytest.raises(InvalidInputError) as refused:
        load_definition(command_job("1", colour="blue"))
    assert refused.value.field == "colour"
    with pytest.raises(InvalidInputError) as refused:
        list_jobs(any_registry, status="done")
    assert refused.value.field == "status"
    with pytest.raises(InvalidInputError) as refused:
        list_jobs(any_registry, limit=0)
    assert refused.value.field == "limit"
    with pytest.raises(NotFoundError):
        job(any_registry, 7)
    with pytest.raises(NotFoundError):
        submit_definition(any_registry, 3)
    with pytest.raises(NotFoundError):
        request_cancel(any_registry, 7)
    with pytest.raises(InvalidInputError):
        read_log(any_registry, 1, -1)
    assert count_jobs(any_registry) == 0


def test_racing_claims_take_each_job_exactly_once(any_registry: Registry) -> None:
    jobs = 24
    for number in range(jobs):
        submit_job(any_registry, load_definition(command_job(f"print({number})")))
    claimed: dict[str, list[int]] = {f"w{n}": [] for n in range(6)}
    runs = any_registry.settings.home / "runs"
    start = threading.Barrier(len(claimed))

    def drain(worker: str) -> None:
        start.wait()
        while (taken := claim_next(any_registry, worker, runs, 60)) is not None:
            claimed[worker].append(taken.id)

    threads = [threading.Thread(target=drain, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    taken = sorted(i for ids in claimed.values() for i in ids)
    assert taken == list(range(1, jobs + 1))  # every job, none twice
    for found in list_jobs(any_registry, limit=jobs):
        assert found.status == "running" and found.attempt == 1 and found.run_dir == str(runs / f"job-{found.id}")
        assert found.id in claimed[str(found.worker)]


def test_an_expired_lease_fails_the_job_as_worker_lost_and_it_is_not_run_again(any_registry: Registry) -> None:
    submit_job(any_registry, load_definition(command_job("print(1)")))
    runs = any_registry.settings.home / "runs"
    running = claim_next(any_registry, "gone", runs, 0.2)
    assert running is not None
    assert heartbeat(any_registry, running.id, "someone-else", 0.2).ours is False
    assert reap_lost(any_registry) == []  # the lease has not run out yet
    wait_for("the lease to expire", lambda: reap_lost(any_registry), timeout=30)
    lost = job(any_registry, running.id)
    assert lost.status == "failed" and lost.message.startswith("worker lost (last heartbeat ")
    assert "from gone" in lost.message and lost.attempt == 1 and lost.finished_at is not None
    assert claim_next(any_registry, "next", runs, 30) is None  # never queued again
    beat = heartbeat(any_registry, running.id, "gone", 30)  # the lost worker, if it comes back, is told
    assert beat.ours is False and beat.cancel_requested is True
    assert JobRecords(any_registry.catalog).get(running.id).status == "failed"


# -- real workers ------------------------------------------------------------------------------------------


def _definition_file(tmp_path: Path, data: dict[str, Any], name: str = "job.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_a_worker_runs_a_submitted_job_to_completion_and_registers_it(home: Path, tmp_path: Path) -> None:
    script = (
        "import os, pathlib\n"
        "run = pathlib.Path(os.environ['MODELYARD_RUN_DIR'])\n"
        "(run / 'checkpoints' / 'best.txt').write_text('weights')\n"
        "print('epoch 1 loss 0.5', flush=True)\n"
        "print('épochs done ✓', flush=True)\n"
    )
    submitted = cli(home, "jobs", "submit", str(_definition_file(tmp_path, command_job(script))))
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout == f"queued job 1: trains {ARTIFACT}\n"
    listed = cli(home, "jobs", "list")
    assert listed.returncode == 0 and "queued" in listed.stdout and ARTIFACT in listed.stdout

    ran = cli(home, "worker", "--once", "--name", "w-once", "--poll-interval", "0.2")
    assert ran.returncode == 0, ran.stderr
    assert "job 1: succeeded" in ran.stdout and "stopped after 1 job(s)" in ran.stdout

    shown = json.loads(cli(home, "jobs", "show", "1", "--json").stdout)
    assert shown["status"] == "succeeded" and shown["exit_code"] == 0 and shown["attempt"] == 1
    assert shown["worker"] == "w-once" and shown["registered"] == [f"{ARTIFACT}@1"]
    assert shown["run_dir"] == str(home / "runs" / "job-1") and "epoch 1 loss 0.5" in shown["log_tail"]
    with Registry.open(home) as registry:
        version = registry.show(f"{ARTIFACT}@1")
        assert version.manifest.training_config_hash == shown["training_config_hash"]
        assert "checkpoints/best.txt" in {f.path for f in version.manifest.files}
    logs = cli(home, "jobs", "logs", "1")
    assert logs.returncode == 0 and "epoch 1 loss 0.5\népochs done ✓\n" in logs.stdout
    followed = cli(home, "jobs", "logs", "1", "--follow")  # an ended job: prints it all and returns
    assert followed.returncode == 0 and followed.stdout == logs.stdout
    text = cli(home, "jobs", "show", "1")
    assert "status:               succeeded" in text.stdout and f"{ARTIFACT}@1" in text.stdout
    assert cli(home, "jobs", "cancel", "1").returncode == 5  # it has ended


def test_a_failing_job_says_so_with_its_log_and_registers_nothing(home: Path, tmp_path: Path) -> None:
    script = "import sys\nprint('loading data', flush=True)\nsys.exit('CUDA out of memory')\n"
    assert cli(home, "jobs", "submit", str(_definition_file(tmp_path, command_job(script)))).returncode == 0
    ran = cli(home, "worker", "--once")
    assert ran.returncode == 0, ran.stderr
    shown = json.loads(cli(home, "jobs", "show", "1", "--json").stdout)
    assert shown["status"] == "failed" and shown["exit_code"] == 1 and shown["registered"] == []
    assert "CUDA out of memory" in shown["log_tail"] and "CUDA out of memory" in shown["message"]
    with Registry.open(home) as registry:
        assert registry.count() == 0
    assert cli(home, "jobs", "list", "--status", "failed", "--json").stdout.count('"id"') == 1


def test_the_cli_refuses_bad_input_naming_the_field(home: Path, tmp_path: Path) -> None:
    bad = cli(home, "jobs", "submit", str(_definition_file(tmp_path, command_job("1", learning_rate=-1.0))))
    assert bad.returncode == 3 and "field 'learning_rate'" in bad.stderr
    unknown = cli(home, "jobs", "submit", str(_definition_file(tmp_path, command_job("1", gpus=2), "u.json")))
    assert unknown.returncode == 3 and "field 'gpus'" in unknown.stderr
    neither = cli(home, "jobs", "submit")
    assert neither.returncode == 3 and "FILE or --definition" in neither.stderr
    assert cli(home, "jobs", "submit", "--definition", "4").returncode == 4
    status = cli(home, "jobs", "list", "--status", "done")
    assert status.returncode == 3 and "field 'status'" in status.stderr
    assert cli(home, "jobs", "show", "3").returncode == 4
    assert cli(home, "jobs", "logs", "3").returncode == 4
    assert cli(home, "worker", "--poll-interval", "0").returncode == 2  # below the option's range
    assert cli(home, "jobs", "list", "--json").stdout.strip() == "[]"


def test_two_workers_racing_run_each_job_exactly_once(home: Path, tmp_path: Path, workers: list[Any]) -> None:
    jobs = 6
    script = (
        "import os, pathlib\n"
        "run = pathlib.Path(os.environ['MODELYARD_RUN_DIR'])\n"
        "with open(run / 'checkpoints' / 'ran.txt', 'a') as out:\n"
        "    out.write(run.name + '\\n')\n"
    )
    with Registry.open(home) as registry:
        for _ in range(jobs):
            submit_job(registry, load_definition(command_job(script)))
    workers += [start_worker(home, "--name", f"w{n}", "--poll-interval", "0.2") for n in range(2)]
    wait_for("every job to end", lambda: all(status_of(home, i) == "succeeded" for i in range(1, jobs + 1)))
    with Registry.open(home) as registry:
        ended = list_jobs(registry)
        starts = [e for e in registry.events(limit=500) if e["action"] == "job.start"]
    assert len(starts) == jobs  # one start per job
    registered = set()
    for found in ended:
        assert found.attempt == 1 and found.worker in ("w0", "w1")
        assert (Path(str(found.run_dir)) / "checkpoints" / "ran.txt").read_text() == f"job-{found.id}\n"
        registered.update(found.registered)
    assert registered == {f"{ARTIFACT}@{n}" for n in range(1, jobs + 1)}


def test_cancelling_a_running_job_stops_it(home: Path, tmp_path: Path, workers: list[Any]) -> None:
    script = "import time\nprint('training', flush=True)\ntime.sleep(600)\n"
    with Registry.open(home) as registry:
        submit_job(registry, load_definition(command_job(script)))
    workers.append(start_worker(home, "--name", "w-cancel", "--poll-interval", "0.2", "--lost-after", "2"))
    wait_for("the job to print", lambda: "training" in _log(home, 1))
    asked = cli(home, "jobs", "cancel", "1")
    assert asked.returncode == 0 and "cancel requested" in asked.stdout
    wait_for("the job to be cancelled", lambda: status_of(home, 1) == "cancelled")
    with Registry.open(home) as registry:
        ended = job(registry, 1)
        assert registry.count() == 0
    assert ended.message == f"cancelled by {current_user()}" and ended.registered == []
    assert workers[0].poll() is None  # the worker carries on with the next job


def test_sigterm_interrupts_the_current_job_and_records_it_failed(home: Path, workers: list[Any]) -> None:
    script = "import time\nprint('training', flush=True)\ntime.sleep(600)\n"
    with Registry.open(home) as registry:
        submit_job(registry, load_definition(command_job(script)))
    worker = start_worker(home, "--name", "w-term", "--poll-interval", "0.2")
    workers.append(worker)
    wait_for("the job to print", lambda: "training" in _log(home, 1))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=WAIT) == 0
    with Registry.open(home) as registry:
        ended = job(registry, 1)
    assert ended.status == "failed"
    assert ended.message == "interrupted: worker w-term stopped (SIGTERM) while the job ran"


def test_a_worker_killed_mid_job_leaves_it_failed_as_worker_lost_never_rerun(home: Path, workers: list[Any]) -> None:
    token = uuid.uuid4().hex
    script = f"import time\nprint('training', flush=True)\ntime.sleep(600)  # {token}\n"
    with Registry.open(home) as registry:
        submit_job(registry, load_definition(command_job(script)))
    doomed = start_worker(home, "--name", "doomed", "--poll-interval", "0.2", "--lost-after", "2")
    workers.append(doomed)
    wait_for("a heartbeat to carry the log's tail", lambda: "training" in _job(home, 1).log_tail)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    _end_orphans(token)  # a job outside bubblewrap outlives its worker: end it ourselves

    assert status_of(home, 1) == "running"  # until another worker looks
    survivor = start_worker(home, "--name", "survivor", "--poll-interval", "0.2", "--lost-after", "2")
    workers.append(survivor)
    wait_for("the lost job to be reaped", lambda: status_of(home, 1) == "failed")
    with Registry.open(home) as registry:
        lost = job(registry, 1)
        starts = [e for e in registry.events() if e["action"] == "job.start"]
        assert registry.count() == 0
    assert lost.message.startswith("worker lost (last heartbeat ") and "from doomed" in lost.message
    assert lost.attempt == 1 and lost.worker == "doomed" and len(starts) == 1
    assert "training" in lost.log_tail  # the heartbeats carried the log's tail
    assert "job 1: worker lost" in stop(survivor)


def _job(home: Path, job_id: int) -> Job:
    with Registry.open(home) as registry:
        return job(registry, job_id)


def _log(home: Path, job_id: int) -> str:
    with Registry.open(home) as registry:
        return read_log(registry, job_id).text


def _end_orphans(token: str) -> None:
    """Kill, by process id, any process whose command line carries this test's token."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
