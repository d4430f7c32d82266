"""Confining a training command with bubblewrap (Debian's `bubblewrap` package, `bwrap`).

Inside the sandbox the whole filesystem is visible read-only; only the run directory, /tmp and a
private /dev/shm (torch's shared-memory tensors between DDP workers) are writable, so a script
that writes anywhere else gets "Read-only file system". The network is left as it is: torchrun's
rendezvous and a multi-node job need it. The sandbox has its own PID namespace, so when the runner
kills `bwrap` every process the job started goes with it, even one that left the process group.

Without a usable `bwrap` (not installed, or the kernel refuses the namespaces it needs) jobs run
unconfined; `Confinement.note` says so and the runner writes that line into training.log.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

WRITABLE_SYSTEM_DIRS = ("/tmp",)


@dataclass(frozen=True)
class Confinement:
    """How a job's command will be confined: the bwrap prefix, or none and why."""

    prefix: tuple[str, ...]
    note: str

    @property
    def active(self) -> bool:
        return bool(self.prefix)

    def wrap(self, argv: list[str]) -> list[str]:
        return [*self.prefix, "--", *argv] if self.prefix else list(argv)


def confinement(run_dir: Path, workdir: Path) -> Confinement:
    """The confinement for a job writing into `run_dir` and starting in `workdir`."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Confinement((), "not confined: bubblewrap (bwrap) is not installed; the job can write anywhere it may")
    problem = _sandbox_problem(bwrap)
    if problem:
        return Confinement((), f"not confined: bubblewrap cannot create a sandbox here ({problem})")
    return Confinement(
        tuple(bwrap_prefix(bwrap, run_dir, workdir)),
        f"confined with bubblewrap: writable only {run_dir}, {', '.join(WRITABLE_SYSTEM_DIRS)} and /dev/shm",
    )


def bwrap_prefix(bwrap: str, run_dir: Path, workdir: Path) -> list[str]:
    """bwrap's options: read-only root, fresh /dev and /proc, then the writable directories.

    Later mounts win, so the run directory stays writable even when it lies under a read-only path."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/dev/shm"]
    for directory in WRITABLE_SYSTEM_DIRS:
        if Path(directory).is_dir():
            argv += ["--bind", directory, directory]
    real_run_dir = str(run_dir.resolve())
    argv += ["--bind", real_run_dir, real_run_dir]
    argv += ["--unshare-pid", "--die-with-parent", "--chdir", str(workdir.resolve())]
    return argv


@functools.cache
def _sandbox_problem(bwrap: str) -> str:
    """Empty when bwrap can create a sandbox here; else its complaint (checked once per process)."""
    try:
        probe = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if probe.returncode != 0:
        return probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit status {probe.returncode}"
    return ""
