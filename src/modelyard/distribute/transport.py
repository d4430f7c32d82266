"""Reaching a node: commands over `ssh`, files with `rsync` over the same ssh, or both locally for a
node whose host is `local`. Host keys are checked strictly against the fleet file's known_hosts
(an unknown key is refused, never trusted), authentication is by key only (BatchMode), and every
call has a timeout after which its whole process group is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelyard.distribute.fleet import Node
from modelyard.errors import RemoteError

TIMEOUT_EXIT = 124  # coreutils timeout's status when it stopped the command
SSH_FAILURE = 255  # ssh's own exit status: the connection, not the remote command, failed
CONNECT_TIMEOUT = 10
# A node that stops answering mid-transfer is noticed after about 15 s, not never.
_KEEPALIVE = ("-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3")
_PROGRESS = re.compile(rb"^\s*([\d,]+)\s+\d+%")


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def tail(self, limit: int = 600) -> str:
        """The last lines of the output, for a status reason."""
        combined = (self.stdout + b"\n" + self.stderr).decode("utf-8", "replace").strip()
        return combined[-limit:]


class NodeConnection:
    """Commands and transfers to one node."""

    def __init__(self, node: Node, *, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        self.node = node
        self.connect_timeout = connect_timeout
        self._control_dir: str | None = None

    # -- one shared connection --------------------------------------------------------------------

    def __enter__(self) -> NodeConnection:
        self.open_shared()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_shared()

    def open_shared(self) -> None:
        """Open one SSH master connection that later calls (and rsync) ride on: a push makes a
        handful of calls per node, and a handshake each would cost more than an up-to-date check.
        Failing to open it is not an error here; the next call reports why the node is unreachable."""
        if self.node.is_local or self._control_dir is not None:
            return
        import tempfile

        self._control_dir = tempfile.mkdtemp(prefix="myd-ssh-")  # short: socket paths are limited to ~100 bytes
        argv = [*self.ssh_base(), "-M", "-N", "-f", "-o", "ControlPersist=300", self.node.address()]
        # -f: ssh backgrounds itself once authenticated; its stdio must not hold our pipes open.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=self.connect_timeout + 5,
                check=False,
            )

    def close_shared(self) -> None:
        if self._control_dir is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [*self.ssh_base(), "-O", "exit", self.node.address()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        import shutil

        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    # -- ssh --------------------------------------------------------------------------------------

    def ssh_base(self) -> list[str]:
        """ssh and its options, without the destination and the command."""
        node = self.node
        argv = [
            "ssh",
            "-p",
            str(node.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={node.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "LogLevel=ERROR",
            *_KEEPALIVE,
        ]
        if node.identity_file:
            argv += ["-i", node.identity_file, "-o", "IdentitiesOnly=yes"]
        if self._control_dir is not None:
            # ride on the shared connection while it lives; without it, ssh connects afresh
            argv += ["-o", f"ControlPath={self._control_dir}/%C", "-o", "ControlMaster=no"]
        return argv

    def command_argv(self, command: Sequence[str]) -> list[str]:
        """The argv that runs `command` on the node (quoted for its shell when remote)."""
        if self.node.is_local:
            return list(command)
        return [*self.ssh_base(), self.node.address(), "--", shlex.join(command)]

    def shell_argv(self, script: str) -> list[str]:
        """The argv that runs a shell command line (the fleet file's activate/health) on the node."""
        if self.node.is_local:
            return ["/bin/sh", "-c", script]
        return [*self.ssh_base(), self.node.address(), "--", script]

    def run(self, command: Sequence[str], *, input: bytes | None = None, timeout: float = 120) -> Completed:
        return run_process(self.command_argv(command), input=input, timeout=timeout)

    def run_shell(self, script: str, *, timeout: float) -> Completed:
        """Run a command line (activate, health) with a deadline enforced on the node as well: a
        hung command must not outlive the call (coreutils `timeout` where the node has it)."""
        if not self.node.is_local:
            seconds = max(1, int(timeout))
            quoted = shlex.quote(script)
            script = (
                f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {seconds} sh -c {quoted}; "
                f"else exec sh -c {quoted}; fi"
            )
            completed = run_process(self.shell_argv(script), input=None, timeout=timeout)
            if completed.returncode == TIMEOUT_EXIT and completed.seconds >= seconds - 0.5:
                return dataclasses.replace(completed, timed_out=True)  # the node's `timeout` fired first
            return completed
        return run_process(self.shell_argv(script), input=None, timeout=timeout)

    def check(self, completed: Completed, what: str) -> Completed:
        """Raise RemoteError when ssh itself failed (unreachable, refused key, unknown host key)."""
        if completed.timed_out:
            raise RemoteError(f"{what} on node {self.node.name} timed out after {completed.seconds:.0f} s")
        if completed.returncode == SSH_FAILURE and not self.node.is_local:
            raise RemoteError(
                f"cannot reach node {self.node.name} ({self.node.address()}:{self.node.port}): {ssh_problem(completed)}"
            )
        return completed

    # -- rsync ------------------------------------------------------------------------------------

    def rsync_to(
        self,
        source_dir: Path,
        destination: str,
        *,
        timeout: float = 24 * 3600,
        on_bytes: Callable[[int], None] | None = None,
        checksum: bool = False,
        compress: bool = False,
    ) -> Completed:
        """Copy a directory's contents into `destination` on the node (seed 004's template,
        `rsync -a --partial`: an interrupted file resumes; files already in place with the same
        size and mtime are not sent). `compress` is
        seed 004's -z (worth it on slow links only: weights compress poorly)."""
        argv = [
            "rsync",
            "-a",
            "--partial",
            "--timeout=60",  # an rsync that hears nothing for a minute gives up (a cut-off node)
            "--info=progress2",
            "--no-inc-recursive",
        ]
        if checksum:
            argv.append("--checksum")  # compare contents, not size and mtime: a repair
        if compress:
            argv.append("--compress")
        if not self.node.is_local:
            argv += ["-e", shlex.join(self.ssh_base())]
        target = destination.rstrip("/") + "/"
        argv += [str(source_dir).rstrip("/") + "/", target if self.node.is_local else f"{self.node.address()}:{target}"]
        return run_process(argv, input=None, timeout=timeout, on_stdout_line=_progress_reader(on_bytes))

    def rsync_from(
        self,
        source_dir: str,
        files_from: Path,
        destination: Path,
        *,
        timeout: float = 24 * 3600,
        on_bytes: Callable[[int], None] | None = None,
        delta: bool = False,
    ) -> Completed:
        """Fetch the files `files_from` lists (paths relative to `source_dir` on the node) into
        `destination`, keeping partial files so that a retry resumes. With `delta`, files already
        in `destination` are the basis of rsync's delta transfer even when their size and mtime
        match (a damaged copy): only the blocks that differ travel."""
        argv = [
            "rsync",
            "-a",
            "--partial",
            "--timeout=60",
            "--info=progress2",
            "--no-inc-recursive",
            f"--files-from={files_from}",
        ]
        if delta:
            argv += ["--ignore-times", "--no-whole-file", "--stats"]
        if not self.node.is_local:
            argv += ["-e", shlex.join(self.ssh_base())]
        source = source_dir.rstrip("/") + "/"
        argv += [source if self.node.is_local else f"{self.node.address()}:{source}", str(destination) + "/"]
        return run_process(argv, input=None, timeout=timeout, on_stdout_line=_progress_reader(on_bytes))


def ssh_problem(completed: Completed) -> str:
    """ssh's reason in a few words: the last non-empty stderr line."""
    lines = [line.strip() for line in completed.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"ssh exited {completed.returncode}"


def _progress_reader(on_bytes: Callable[[int], None] | None) -> Callable[[bytes], None] | None:
    """rsync --info=progress2 prints the bytes done so far; report the growth."""
    if on_bytes is None:
        return None
    state = {"done": 0}

    def read(line: bytes) -> None:
        match = _PROGRESS.match(line)
        if match:
            done = int(match.group(1).replace(b",", b""))
            if done > state["done"]:
                on_bytes(done - state["done"])
                state["done"] = done

    return read


def run_process(
    argv: list[str],
    *,
    input: bytes | None,
    timeout: float,
    on_stdout_line: Callable[[bytes], None] | None = None,
) -> Completed:
    """Run a command in its own process group; at the timeout, kill the whole group."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise RemoteError(f"{argv[0]} is not installed here (needed to reach the fleet)") from None
    if on_stdout_line is None:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stdout, stderr = _drain_after_kill(process)
            timed_out = True
        return Completed(argv, process.returncode, stdout, stderr, timed_out, time.monotonic() - started)
    return _stream(process, argv, input, timeout, on_stdout_line, started)


def _stream(
    process: subprocess.Popen[bytes],
    argv: list[str],
    input: bytes | None,
    timeout: float,
    on_line: Callable[[bytes], None],
    started: float,
) -> Completed:
    """Read stdout as it comes (rsync's progress: lines end in \\r), keeping stderr apart."""
    import threading

    errors: list[bytes] = []
    reader = threading.Thread(
        target=lambda: errors.append(process.stderr.read() if process.stderr else b""), daemon=True
    )
    reader.start()
    if input is not None and process.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(input)
        process.stdin.close()
    kept = bytearray()
    deadline = started + timeout
    timed_out = False
    assert process.stdout is not None
    buffer = b""
    while True:
        if time.monotonic() > deadline:
            _kill_group(process)
            timed_out = True
            break
        chunk = process.stdout.read1(65536) if hasattr(process.stdout, "read1") else process.stdout.read(65536)
        if not chunk:
            break
        kept += chunk
        del kept[: max(0, len(kept) - 65536)]
        buffer += chunk
        *lines, buffer = re.split(rb"[\r\n]", buffer)
        for line in lines:
            on_line(line)
    process.wait()
    reader.join(timeout=5)
    return Completed(argv, process.returncode, bytes(kept), b"".join(errors), timed_out, time.monotonic() - started)


def _drain_after_kill(process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """What a killed command had written. Its pipes may outlive it (an SSH master connection
    holds a multiplexed session's descriptors until the remote command ends): read for a moment,
    then close them rather than wait."""
    try:
        return process.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        process.wait()
        return b"", b""


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
