"""Running a user's program on an exported artifact: a validation gate's command check, a policy's
benchmark. The program gets the artifact's directory, its own process group and a closed stdin;
at its timeout the whole group gets SIGTERM, then SIGKILL: a hang fails the check, never modelyard.
Only the tail of its output is kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from modelyard.lifecycle.policy import PATH_PLACEHOLDER

OUTPUT_TAIL_BYTES = 64 * 1024
KILL_GRACE_SECONDS = 2.0  # after SIGTERM, before SIGKILL
READER_JOIN_SECONDS = 5.0


@dataclass(frozen=True)
class CommandOutcome:
    """How a command ended. `returncode` is None when it could not start (`error` says why), and
    negative when a signal killed it. `output` is the kept tail of stdout (with stderr merged
    in, unless it was kept apart in `stderr`)."""

    argv: list[str]
    returncode: int | None
    timed_out: bool
    output: str
    stderr: str | None
    truncated: bool
    duration_seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self, timeout: float) -> str:
        if self.error is not None:
            return self.error
        if self.timed_out:
            return f"timed out after {timeout:g} s; its process group was killed"
        assert self.returncode is not None
        if self.returncode < 0:
            return f"killed by signal {signal.Signals(-self.returncode).name}"
        return f"exited with status {self.returncode}"


class _TailReader(threading.Thread):
    """Drains a pipe, keeping only its last `limit` bytes (a chatty command costs no memory)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(daemon=True)  # a grandchild that escaped the group may hold the pipe open
        self.stream = stream
        self.limit = limit
        self.tail = bytearray()
        self.truncated = False

    def run(self) -> None:
        descriptor = self.stream.fileno()
        while chunk := os.read(descriptor, 65536):
            self.tail += chunk
            if len(self.tail) > self.limit:
                del self.tail[: len(self.tail) - self.limit]
                self.truncated = True

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", errors="replace")


def run_command(
    run: Sequence[str],
    *,
    timeout: float,
    artifact_dir: Path,
    checkpoint_file: Path | None = None,
    ref: str | None = None,
    merge_stderr: bool = True,
    output_limit: int = OUTPUT_TAIL_BYTES,
) -> CommandOutcome:
    """Run a policy command (no shell) with `{path}` replaced by `artifact_dir`, in a new process
    group, stdin closed, MODELYARD_ARTIFACT_DIR / MODELYARD_CHECKPOINT / MODELYARD_REF set and
    the caller's working directory. At `timeout` the group gets SIGTERM, then SIGKILL; whatever
    is left of the group when the command ends is killed too."""
    argv = [argument.replace(PATH_PLACEHOLDER, str(artifact_dir)) for argument in run]
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            env=_command_environment(artifact_dir, checkpoint_file, ref),
            start_new_session=True,
        )
    except OSError as exc:
        error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        return CommandOutcome(argv, None, False, "", None, False, time.monotonic() - started, error)
    assert process.stdout is not None
    readers = [_TailReader(process.stdout, output_limit)]
    if process.stderr is not None:
        readers.append(_TailReader(process.stderr, output_limit))
    for reader in readers:
        reader.start()
    try:
        timed_out = not _wait_unreaped(process, started + timeout)
        if timed_out:
            _signal_group(process.pid, signal.SIGTERM)
            _wait_unreaped(process, time.monotonic() + KILL_GRACE_SECONDS)
    finally:  # also on Ctrl-C: the group is in its own session, out of the terminal's reach
        # The leader is a zombie until reaped, so its group id cannot have been reused yet.
        _signal_group(process.pid, signal.SIGKILL)
        returncode = process.wait()
    for reader in readers:
        reader.join(READER_JOIN_SECONDS)
        if not reader.is_alive():  # else a process that left the group still holds the pipe
            reader.stream.close()
    duration = time.monotonic() - started
    stderr = readers[1].text() if len(readers) > 1 else None
    truncated = any(reader.truncated for reader in readers)
    return CommandOutcome(argv, returncode, timed_out, readers[0].text(), stderr, truncated, duration)


def _command_environment(artifact_dir: Path, checkpoint_file: Path | None, ref: str | None) -> dict[str, str]:
    environment = dict(os.environ)
    environment["MODELYARD_ARTIFACT_DIR"] = str(artifact_dir)
    # Never inherit these: a stale value from the caller's shell would name the wrong files.
    environment.pop("MODELYARD_CHECKPOINT", None)
    environment.pop("MODELYARD_REF", None)
    if checkpoint_file is not None:
        environment["MODELYARD_CHECKPOINT"] = str(checkpoint_file)
    if ref is not None:
        environment["MODELYARD_REF"] = ref
    return environment


def _wait_unreaped(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until the process exits or the deadline passes; True if it exited. It is left
    unreaped, so that its process group can still be signalled safely."""
    delay = 0.001
    while not _has_exited(process):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    return True


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: poll() reaps, a tiny pgid-reuse window
        return process.poll() is not None
    try:
        state = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return state is not None


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)
