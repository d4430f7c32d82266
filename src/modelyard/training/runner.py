"""Running a training job: run directory, environment, supervision, registration.

`run_job(registry, definition)`:

1. checks the job exactly as the form does (`preview`: the artifact name, manifest and
   training_config_hash come from that one function) and asks a built-in trainer whether it can
   run the combination, before anything is created;
2. makes the run directory as seed 003's raw example lays it out: ``checkpoints/``, ``metrics/``,
   ``config.yaml`` (the form's training settings), ``training.log``, ``README.md``, plus
   ``job.json`` (the definition with ``artifact_name`` and ``training_config_hash``) and
   ``artifact_manifest.json`` (the preview's manifest);
3. starts the command through its executor (confined with bubblewrap where available) with
   ``MODELYARD_RUN_DIR``, ``MODELYARD_JOB_FILE``, ``MODELYARD_PRIVACY_LEVEL``,
   ``MODELYARD_QUANTIZATION_MODE`` (and ``MODELYARD_SECURE_AGG=1`` for secure-agg) in its
   environment; stdout and stderr go to training.log and, line by line, to `on_output`;
4. stops it at the timeout or on `cancel` (SIGTERM to its whole process group, SIGKILL after a
   grace period);
5. on success registers the run directory as a raw artifact; with post-training quantization it
   registers the float model, quantizes it to int8 and registers that as a second artifact
   derived from the first. A failed, cancelled or timed-out run registers nothing and keeps its log.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.names import MANIFEST_FILENAME
from modelyard.register.metadata import RegisterOptions
from modelyard.training.confine import Confinement, confinement
from modelyard.training.executors import Launch, Program, plan_launches, remote_copy_argv, resolve_command
from modelyard.training.form import LearningForm, Preview, preview
from modelyard.training.jobs import BuiltinRun, CommandRun, JobDefinition

if TYPE_CHECKING:
    from modelyard.distribute.fleet import Fleet
    from modelyard.domain import Registration
    from modelyard.registry import Registry

JobStatus = Literal["succeeded", "failed", "cancelled", "timed_out"]
JOB_FILENAME = "job.json"
LOG_FILENAME = "training.log"
LOG_TAIL_LINES = 40
KILL_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.1
_MAX_LINE = 65_536
_LOW_SPACE_BYTES = 64 * 1024
_LIST_FLAGS = {"train_data_tags": "--train-data-tag", "augmentations": "--augmentation"}

OutputCallback = Callable[[str], None]


class Registrar(Protocol):
    """What the runner needs of a registry: `Registry`, or a client of a remote one."""

    def register(self, path: Path, options: RegisterOptions) -> Registration: ...


@dataclass(frozen=True)
class JobResult:
    """How a job ended. `registered` holds NAME@N of each version it made (none unless succeeded)."""

    status: JobStatus
    exit_code: int | None
    run_dir: Path
    message: str
    log_tail: str
    registered: list[str] = field(default_factory=list)
    job_id: str = ""
    confined: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def run_job(
    registry: Registrar,
    definition: JobDefinition,
    *,
    job_id: str | None = None,
    run_dir: Path | None = None,
    on_output: OutputCallback | None = None,
    cancel: threading.Event | None = None,
    pass_flags: bool = False,
    fleet: Fleet | None = None,
    kill_grace: float = KILL_GRACE_SECONDS,
) -> JobResult:
    """Run one job to its end; see the module docstring. Raises InvalidInputError (naming the
    field) when the job is refused before it starts; every fault after that is a JobResult."""
    local_registry = _local_registry(registry)
    checked = preview(definition.form(), local_registry)
    _check_supported(definition, checked)
    job_id = job_id or new_job_id(checked.artifact_name)
    run_dir = _create_run_dir(run_dir or default_run_dir(registry, job_id))
    float_preview = _float_preview(definition, local_registry)
    write_run_files(run_dir, definition, checked, float_preview or checked, job_id)
    env = job_environment(definition, run_dir)
    with JobLog(run_dir / LOG_FILENAME, on_output) as log:
        try:
            if definition.nodes and fleet is None and local_registry is not None:
                fleet = local_registry.fleet()
            launches = _launches(definition, run_dir, env, job_id, fleet, pass_flags or definition.pass_flags)
            _copy_to_nodes(launches, run_dir)
        except ModelyardError as exc:
            log.line(f"modelyard: {exc.render()}")
            return _ended(log, run_dir, job_id, "failed", None, f"the job could not start: {exc.render()}")
        confine = confinement(run_dir, _workdir(definition, run_dir))
        log.line(f"modelyard: job {job_id}: {confine.note}")
        outcome = _supervise(launches, env, _workdir(definition, run_dir), confine, log, definition, cancel, kill_grace)
        if outcome.status == "succeeded" and any(launch.node and not launch.node.is_local for launch in launches):
            outcome = _fetch_from_first_node(launches, run_dir, log, outcome)
        if outcome.status != "succeeded":
            return _ended(log, run_dir, job_id, outcome.status, outcome.exit_code, outcome.message, confine.active)
        try:
            registered = register_outputs(registry, definition, checked, float_preview, run_dir, job_id, log)
        except (ModelyardError, OSError) as exc:
            text = exc.render() if isinstance(exc, ModelyardError) else _os_error(exc)
            log.line(f"modelyard: registering the run failed: {text}")
            message = f"the run succeeded but registering it failed: {text}"
            return _ended(log, run_dir, job_id, "failed", 0, message, confine.active)
        log.line(f"modelyard: registered {', '.join(registered)}")
        message = f"registered {', '.join(registered)}"
        return _ended(log, run_dir, job_id, "succeeded", 0, message, confine.active, registered)


# -- before the run --------------------------------------------------------------------------------


def _local_registry(registry: Registrar) -> Registry | None:
    """The registry itself when it is a local one: its vocabulary and next version number shape
    the preview. A remote client's server checks the vocabulary again when it registers."""
    from modelyard.registry import Registry

    return registry if isinstance(registry, Registry) else None


def _check_supported(definition: JobDefinition, checked: Preview) -> None:
    """A built-in trainer refuses combinations it cannot run (its check raises InvalidInputError)."""
    if not isinstance(definition.run, BuiltinRun):
        return
    import importlib
    import importlib.util

    if importlib.util.find_spec("modelyard.training.builtin") is None:
        raise InvalidInputError("this modelyard has no built-in trainers", field="run.trainer")
    builtin = importlib.import_module("modelyard.training.builtin")
    check = getattr(builtin, "check_supported", None)
    if check is not None:
        world_size = definition.nproc_per_node * max(1, len(definition.nodes))
        check(job_document(definition, checked), world_size=world_size)


def new_job_id(artifact_name: str) -> str:
    """A unique, readable id: the artifact name, the UTC time and a random suffix."""
    return f"{artifact_name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def default_run_dir(registry: Registrar, job_id: str) -> Path:
    """``<registry home>/runs/<job id>``; for a remote registry, ``./runs/<job id>``."""
    local = _local_registry(registry)
    root = local.settings.home / "runs" if local is not None else Path.cwd() / "runs"
    return root / job_id


def _create_run_dir(run_dir: Path) -> Path:
    run_dir = run_dir.absolute()
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise InvalidInputError(
            "the run directory exists and is not empty; give a new one (runs never share a directory)",
            path=run_dir,
        )
    try:
        for sub in ("checkpoints", "metrics"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create the run directory: {_os_error(exc)}", path=run_dir) from None
    return run_dir


def _float_preview(definition: JobDefinition, registry: Registry | None) -> Preview | None:
    """For post-training quantization: the preview of the float model the run trains (the same
    form, unquantized); None otherwise."""
    if definition.quantization_mode != "post-training":
        return None
    values = definition.form().model_dump()
    values["quantize"] = False
    if values.get("precision") in (None, "int8"):
        # The model quantized after training is trained in float; the built-in trainers train in
        # fp32 (they refuse fp16/bf16), and a command's float precision is unknown here.
        values["precision"] = "fp32" if isinstance(definition.run, BuiltinRun) else None
    return preview(LearningForm.model_validate(values), registry)


def job_document(definition: JobDefinition, checked: Preview) -> dict[str, Any]:
    """job.json: the definition plus the artifact name and training_config_hash the form shows."""
    document: dict[str, Any] = definition.model_dump(mode="json")
    document["artifact_name"] = checked.artifact_name
    document["training_config_hash"] = checked.training_config_hash
    return document


def write_run_files(run_dir: Path, definition: JobDefinition, checked: Preview, trained: Preview, job_id: str) -> None:
    """job.json, config.yaml, README.md and the manifest of what the run itself trains."""
    _write(run_dir / JOB_FILENAME, json.dumps(job_document(definition, checked), indent=2) + "\n")
    _write(run_dir / "config.yaml", _yaml(checked.manifest.get("training_config", {})))
    _write(run_dir / MANIFEST_FILENAME, json.dumps(_run_manifest(trained.manifest), indent=2) + "\n")
    _write(run_dir / "README.md", _readme(definition, checked, job_id))


def _run_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    # The registry numbers the version when it registers it; the preview's number is a guess.
    return {key: value for key, value in manifest.items() if key != "model_version"}


def _yaml(value: dict[str, Any]) -> str:
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(value, buffer)
    return buffer.getvalue()


def _readme(definition: JobDefinition, checked: Preview, job_id: str) -> str:
    run = definition.run
    what = f"built-in trainer {run.trainer}" if isinstance(run, BuiltinRun) else f"`{' '.join(run.argv)}`"
    return (
        f"# Training run {job_id}\n\n"
        f"- artifact: {checked.artifact_name}\n"
        f"- training_config_hash: {checked.training_config_hash}\n"
        f"- runs: {what} ({definition.executor} executor)\n"
        f"- started: {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n\n"
        "Files: checkpoints/, metrics/, config.yaml (training settings), training.log (stdout and stderr), "
        "job.json (the job definition), artifact_manifest.json.\n"
    )


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot write the run directory: {_os_error(exc)}", path=path) from None


def job_environment(definition: JobDefinition, run_dir: Path) -> dict[str, str]:
    """The variables the training command receives (on top of the runner's own environment)."""
    env = dict(definition.run.env) if isinstance(definition.run, CommandRun) else {}
    env.update(
        MODELYARD_RUN_DIR=str(run_dir),
        MODELYARD_JOB_FILE=str(run_dir / JOB_FILENAME),
        MODELYARD_PRIVACY_LEVEL=definition.privacy_level,
        MODELYARD_QUANTIZATION_MODE=definition.quantization_mode or "none",
        PYTHONUNBUFFERED="1",  # the log and the live view get lines as they are printed
    )
    if definition.privacy_level == "secure-agg":
        env["MODELYARD_SECURE_AGG"] = "1"
    return env


def form_flags(form: LearningForm) -> list[str]:
    """The form's fields as flags: ``--name value``; a true bool alone; a list field repeats its
    singular flag; input_size as ``3,224,224``. Unset fields are left out."""
    argv: list[str] = []
    for name in LearningForm.model_fields:
        value = getattr(form, name)
        if value is None or value is False or value == []:
            continue
        flag = "--" + name.replace("_", "-")
        if name in _LIST_FLAGS:
            for item in value:
                argv += [_LIST_FLAGS[name], str(item)]
        elif value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, ",".join(str(item) for item in value)]
        else:
            argv += [flag, str(value)]
    return argv


def _workdir(definition: JobDefinition, run_dir: Path) -> Path:
    run = definition.run
    return Path(run.workdir) if isinstance(run, CommandRun) and run.workdir else run_dir


def _launches(
    definition: JobDefinition, run_dir: Path, env: dict[str, str], job_id: str, fleet: Fleet | None, pass_flags: bool
) -> list[Launch]:
    run = definition.run
    if isinstance(run, BuiltinRun):
        program = Program(trainer=run.trainer)  # built-in trainers read job.json, never flags
    else:
        workdir = _workdir(definition, run_dir)
        if not workdir.is_dir():
            raise InvalidInputError("the working directory does not exist", path=workdir, field="run.workdir")
        argv = list(run.argv)
        if not definition.nodes:
            resolve_command(argv[0], workdir, {**os.environ, **env}.get("PATH"))
        program = Program(argv=tuple(argv + (form_flags(definition.form()) if pass_flags else [])))
    return plan_launches(definition, program, job_id=job_id, env=env, fleet=fleet)


# -- the run ---------------------------------------------------------------------------------------


class JobLog:
    """training.log, the live callback and the last lines, fed by one reader thread per process.

    A write that fails (the disk is full) does not stop the job by itself: the failure is kept,
    the runner stops the job, and the lines still reach the callback and the tail."""

    def __init__(self, path: Path, on_output: OutputCallback | None) -> None:
        self.path = path
        self.on_output = on_output
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.write_error: OSError | None = None
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def __enter__(self) -> JobLog:
        try:
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            self.write_error = exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()

    def line(self, text: str) -> None:
        with self._lock:
            self.tail.append(text)
            if self._file is not None and self.write_error is None:
                try:
                    self._file.write(text + "\n")
                    self._file.flush()
                except OSError as exc:
                    self.write_error = exc
            if self.on_output is not None:
                with contextlib.suppress(Exception):  # a broken viewer must not break the job
                    self.on_output(text)

    def tail_text(self) -> str:
        with self._lock:
            return "\n".join(self.tail)


@dataclass
class _Outcome:
    status: JobStatus
    exit_code: int | None
    message: str


@dataclass
class _Running:
    launch: Launch
    process: subprocess.Popen[bytes]
    reader: threading.Thread


def _supervise(
    launches: list[Launch],
    env: dict[str, str],
    workdir: Path,
    confine: Confinement,
    log: JobLog,
    definition: JobDefinition,
    cancel: threading.Event | None,
    kill_grace: float,
) -> _Outcome:
    full_env = {**os.environ, **env}
    prefix = len(launches) > 1
    running: list[_Running] = []
    try:
        for launch in launches:
            argv = confine.wrap(launch.argv) if launch.node is None or launch.node.is_local else launch.argv
            running.append(_start(launch, argv, full_env, workdir, log, prefix))
    except OSError as exc:
        _stop(running, kill_grace)
        return _Outcome("failed", None, f"the command could not start: {_os_error(exc)}")
    try:
        return _wait(running, log, definition.timeout_seconds, cancel, kill_grace)
    finally:
        _stop(running, kill_grace)
        for item in running:
            item.reader.join(timeout=5)


def _start(launch: Launch, argv: list[str], env: dict[str, str], workdir: Path, log: JobLog, prefix: bool) -> _Running:
    process = subprocess.Popen(
        argv,
        cwd=workdir if launch.node is None or launch.node.is_local else None,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the timeout and cancel stop all of it
    )
    label = f"[{launch.label}] " if prefix else ""
    reader = threading.Thread(target=_read_lines, args=(process, log, label), daemon=True)
    reader.start()
    return _Running(launch, process, reader)


def _read_lines(process: subprocess.Popen[bytes], log: JobLog, label: str) -> None:
    assert process.stdout is not None
    with process.stdout:
        for raw in iter(lambda: process.stdout.readline(_MAX_LINE) if process.stdout else b"", b""):
            log.line(label + raw.decode("utf-8", "replace").rstrip("\r\n"))


def _wait(
    running: list[_Running], log: JobLog, timeout: float, cancel: threading.Event | None, kill_grace: float
) -> _Outcome:
    deadline = time.monotonic() + timeout
    while True:
        codes = [item.process.poll() for item in running]
        failed = next((c for c in codes if c not in (None, 0)), None)
        if failed is not None:
            _stop(running, kill_grace)
            return _Outcome("failed", failed, _exit_message(failed))
        if all(code == 0 for code in codes):
            return _Outcome("succeeded", 0, "the command finished")
        if log.write_error is not None:
            _stop(running, kill_grace)
            return _Outcome("failed", None, f"training.log could not be written: {_os_error(log.write_error)}")
        if cancel is not None and cancel.is_set():
            _stop(running, kill_grace)
            return _Outcome("cancelled", _code(running), "cancelled; the job was stopped")
        if time.monotonic() > deadline:
            _stop(running, kill_grace)
            return _Outcome("timed_out", _code(running), f"timed out after {timeout:g} s; the job was stopped")
        if cancel is not None:
            cancel.wait(_POLL_SECONDS)
        else:
            time.sleep(_POLL_SECONDS)


def _code(running: list[_Running]) -> int | None:
    return next((item.process.returncode for item in running if item.process.returncode is not None), None)


def _exit_message(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"the command was killed by {signal.Signals(-code).name}"
        return f"the command was killed by signal {-code}"
    return f"the command exited with status {code}"


def _stop(running: list[_Running], kill_grace: float) -> None:
    """SIGTERM to each process group, SIGKILL to what is left after the grace period. Also run
    after a normal exit: helpers the command left behind must not outlive the job."""
    alive = [item for item in running if item.process.poll() is None]
    for item in alive:
        _signal_group(item.process, signal.SIGTERM)
    end = time.monotonic() + kill_grace
    for item in alive:
        with contextlib.suppress(subprocess.TimeoutExpired):
            item.process.wait(timeout=max(0.0, end - time.monotonic()))
    for item in running:
        _signal_group(item.process, signal.SIGKILL)
        item.process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _copy_to_nodes(launches: list[Launch], run_dir: Path) -> None:
    """Remote nodes get the run directory (job.json, config.yaml) at the same path first."""
    from modelyard.errors import RemoteError

    for launch in launches:
        if launch.node is None or launch.node.is_local:
            continue
        argv = remote_copy_argv(launch.node, run_dir, to_node=True)
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        if completed.returncode != 0:
            raise RemoteError(
                f"copying the run directory to {launch.node.name} failed: {completed.stderr.strip()[-300:]}"
            )


def _fetch_from_first_node(launches: list[Launch], run_dir: Path, log: JobLog, outcome: _Outcome) -> _Outcome:
    """Rank 0 (on the first node) writes the outputs; copy them into the local run directory."""
    first = launches[0].node
    if first is None or first.is_local:
        return outcome
    completed = subprocess.run(
        remote_copy_argv(first, run_dir, to_node=False), capture_output=True, text=True, timeout=24 * 3600, check=False
    )
    if completed.returncode != 0:
        log.line(f"modelyard: copying the outputs from {first.name} failed: {completed.stderr.strip()[-300:]}")
        return _Outcome("failed", 0, f"the outputs could not be copied back from {first.name}")
    return outcome


def _ended(
    log: JobLog,
    run_dir: Path,
    job_id: str,
    status: JobStatus,
    exit_code: int | None,
    message: str,
    confined: bool = False,
    registered: list[str] | None = None,
) -> JobResult:
    if status != "succeeded":
        message = _failure_message(message, run_dir, log)
        log.line(f"modelyard: job {job_id} {status.replace('_', ' ')}: {message}")
    return JobResult(
        status=status,
        exit_code=exit_code,
        run_dir=run_dir,
        message=message,
        log_tail=log.tail_text(),
        registered=registered or [],
        job_id=job_id,
        confined=confined,
    )


def _failure_message(message: str, run_dir: Path, log: JobLog) -> str:
    """The cause, with the disk named when it is full and the log's last line."""
    full = _disk_full(run_dir) or (log.write_error is not None and log.write_error.errno == errno.ENOSPC)
    if full:
        message += f"; no space left on the run directory's filesystem ({run_dir})"
    last = next((line for line in reversed(log.tail) if line.strip() and not line.startswith("modelyard:")), "")
    return f"{message}; the log ends: {last.strip()}" if last else message


def _disk_full(run_dir: Path) -> bool:
    try:
        usage = os.statvfs(run_dir)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize < _LOW_SPACE_BYTES


def _os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


# -- after a successful run ------------------------------------------------------------------------


def register_outputs(
    registry: Registrar,
    definition: JobDefinition,
    checked: Preview,
    float_preview: Preview | None,
    run_dir: Path,
    job_id: str,
    log: JobLog,
) -> list[str]:
    """Register the run directory; with post-training quantization also its int8 counterpart."""
    trained = float_preview or checked
    _finish_manifest(run_dir, trained)
    log.line(f"modelyard: registering {run_dir} as {trained.artifact_name}")
    first = _register(registry, run_dir, RegisterOptions(source_label=f"training job {job_id}"))
    refs = [first.version.ref]
    if float_preview is not None:
        refs.append(_quantize_and_register(registry, checked, run_dir, first.version.ref, job_id, log))
    return refs


def _quantization_metrics(result: Any) -> dict[str, Any]:
    """The quantization step's numbers worth comparing across versions, where it reports them."""
    names = ("size_ratio", "max_abs_diff")
    return {f"int8_{name}": getattr(result, name) for name in names if isinstance(getattr(result, name, None), float)}


def _finish_manifest(run_dir: Path, trained: Preview, metrics: dict[str, Any] | None = None) -> None:
    """artifact_manifest.json as registered: what the script added (metrics, say) under the
    preview's fields, which always win: the name and hash are the ones the form showed."""
    path = run_dir / MANIFEST_FILENAME
    written: dict[str, Any] = {}
    if path.is_file() and not path.is_symlink():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
            written = loaded if isinstance(loaded, dict) else {}
    written.pop("files", None)  # the registry lists the files it stores
    merged = {**written, **_run_manifest(trained.manifest)}
    if metrics:
        merged["metrics"] = {**(merged.get("metrics") or {}), **metrics}
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a symlink planted here must not redirect the write
    path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")


def _quantize_and_register(
    registry: Registrar, checked: Preview, run_dir: Path, float_ref: str, job_id: str, log: JobLog
) -> str:
    import importlib

    from modelyard.domain import Lifecycle

    # The quantization step loads torch: only a post-training job pays for it.
    post_training_int8: Callable[[Path, Path], Any] = importlib.import_module(
        "modelyard.training.quantize"
    ).post_training_int8

    out_dir = run_dir.with_name(run_dir.name + "-int8")
    log.line(f"modelyard: post-training int8 quantization of {float_ref} into {out_dir}")
    if out_dir.exists():
        raise InvalidInputError("the quantized output directory already exists", path=out_dir)
    result = post_training_int8(run_dir, out_dir)
    _finish_manifest(out_dir, checked, _quantization_metrics(result))
    options = RegisterOptions(
        source_label=f"training job {job_id} (post-training int8)",
        lifecycle=Lifecycle(stage="raw", derived_from=float_ref),
    )
    return _register(registry, out_dir, options).version.ref


def _register(registry: Registrar, run_dir: Path, options: RegisterOptions) -> Registration:
    """Register a run directory: in place on a local registry; on a server, as seed 000's upload
    ZIP (the run with its manifest inside) through the server's ZIP upload."""
    from modelyard.register.zipped import write_upload_zip

    upload = getattr(registry, "register_zip", None)
    if _local_registry(registry) is not None or upload is None:
        return registry.register(run_dir, options)
    zip_path = run_dir.with_name(run_dir.name + ".zip")
    try:
        registration: Registration = upload(write_upload_zip(run_dir, zip_path), options)
    finally:
        zip_path.unlink(missing_ok=True)
    return registration


@contextlib.contextmanager
def cancel_on_interrupt(cancel: threading.Event) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM set `cancel` instead of killing the runner, so the job is
    stopped, its log closed and its status reported."""
    handler = lambda *_: cancel.set()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
