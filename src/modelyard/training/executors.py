"""Executors: the command lines that start a training job.

* ``local``: one process on this machine, the user's command or
  ``python -m modelyard.training.builtin NAME``.
* ``torchrun``: ``python -m torch.distributed.run --nproc-per-node N`` around the same program.
  On this machine it is ``--standalone`` (a private rendezvous on a free port). With fleet nodes
  it runs once per node, over SSH for remote ones, every node meeting at a c10d rendezvous on the
  first node (``--rdzv-endpoint FIRST:29400``, the job id as ``--rdzv-id``). A command is started
  by torchrun as it is (``--no-python``), so ``python train.py`` and ``./train.sh`` both work.

Functions here only build argv lists; `modelyard.training.runner` starts and supervises them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import InvalidInputError

if TYPE_CHECKING:
    from modelyard.distribute.fleet import Fleet, Node
    from modelyard.training.jobs import JobDefinition

BUILTIN_MODULE = "modelyard.training.builtin"
RENDEZVOUS_PORT = 29400  # torch's default c10d port


@dataclass(frozen=True)
class Program:
    """What a job runs, before an executor wraps it: a built-in trainer or a command's argv."""

    trainer: str | None = None
    argv: tuple[str, ...] = ()

    def local_argv(self, python: str = sys.executable) -> list[str]:
        if self.trainer is not None:
            return [python, "-m", BUILTIN_MODULE, self.trainer]
        return list(self.argv)

    def torchrun_tail(self) -> list[str]:
        """What follows torchrun's own options."""
        if self.trainer is not None:
            return ["-m", BUILTIN_MODULE, self.trainer]
        return ["--no-python", *self.argv]


@dataclass(frozen=True)
class Launch:
    """One process the runner starts: on this machine (`node` None) or on a fleet node over SSH."""

    argv: list[str]
    node: Node | None = None

    @property
    def label(self) -> str:
        return self.node.name if self.node is not None else "local"


def torchrun_argv(python: str, nproc_per_node: int, rendezvous: list[str], program: Program) -> list[str]:
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc_per_node),
        *rendezvous,
        *program.torchrun_tail(),
    ]


def standalone_rendezvous() -> list[str]:
    return ["--standalone"]


def c10d_rendezvous(host: str, node_count: int, job_id: str, port: int = RENDEZVOUS_PORT) -> list[str]:
    return [
        "--nnodes",
        str(node_count),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"{host}:{port}",
        "--rdzv-id",
        job_id,
    ]


def plan_launches(
    definition: JobDefinition,
    program: Program,
    *,
    job_id: str,
    env: dict[str, str],
    fleet: Fleet | None,
) -> list[Launch]:
    """The processes that run the job: one for local and single-machine torchrun, one per node else."""
    if definition.executor == "local":
        return [Launch(program.local_argv())]
    if not definition.nodes:
        return [Launch(torchrun_argv(sys.executable, definition.nproc_per_node, standalone_rendezvous(), program))]
    if fleet is None:
        raise InvalidInputError("a job on fleet nodes needs the fleet file (fleet.yaml)", field="nodes")
    nodes = [fleet.node(name) for name in definition.nodes]
    rendezvous = c10d_rendezvous(rendezvous_host(nodes[0]), len(nodes), job_id)
    return [_node_launch(node, definition.nproc_per_node, rendezvous, program, env) for node in nodes]


def rendezvous_host(node: Node) -> str:
    """Where the other nodes reach the first node's rendezvous."""
    return socket.gethostname() if node.is_local else node.host


def _node_launch(node: Node, nproc: int, rendezvous: list[str], program: Program, env: dict[str, str]) -> Launch:
    if node.is_local:
        return Launch(torchrun_argv(sys.executable, nproc, rendezvous, program), node)
    from modelyard.distribute.transport import NodeConnection

    # The remote command gets the job's variables explicitly: ssh passes no environment.
    assignments = [f"{name}={value}" for name, value in sorted(env.items()) if name.startswith("MODELYARD_")]
    command = ["env", *assignments, *torchrun_argv(node.python, nproc, rendezvous, program)]
    return Launch(NodeConnection(node).command_argv(command), node)


def remote_copy_argv(node: Node, run_dir: Path, *, to_node: bool) -> list[str]:
    """rsync of the run directory to a remote node before the job (job.json, config.yaml) or back
    from the first node after it (the outputs rank 0 wrote)."""
    from modelyard.distribute.transport import NodeConnection

    ssh = shlex.join(NodeConnection(node).ssh_base())
    remote = f"{node.address()}:{shlex.quote(str(run_dir))}/"
    local = f"{run_dir}/"
    source, destination = (local, remote) if to_node else (remote, local)
    mkdir = ["--rsync-path", f"mkdir -p {shlex.quote(str(run_dir))} && rsync"] if to_node else []
    return ["rsync", "-a", "-e", ssh, *mkdir, source, destination]


def resolve_command(argv0: str, workdir: Path, path: str | None) -> str:
    """The program a command starts, checked before the job runs: a missing program is a clear
    error naming it, not a traceback from exec."""
    if "/" in argv0:
        candidate = workdir / argv0
        if not candidate.is_file():
            raise InvalidInputError(f"command {argv0!r} does not exist (looked in {workdir})", field="run.argv")
        if not os.access(candidate, os.X_OK):
            raise InvalidInputError(f"command {argv0!r} is not executable; chmod +x it", field="run.argv")
        return str(candidate)
    found = shutil.which(argv0, path=path)
    if found is None:
        raise InvalidInputError(f"command {argv0!r} is not found on PATH", field="run.argv")
    return found
