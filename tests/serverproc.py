"""A real modelyard server for the tests: `modelyard serve` in a subprocess on a free loopback
port, with its own registry home; stopped by process id at the end of the test.

    def test_list(server):
        key = server.key("admin")
        response = httpx.get(server.url + "/api/v1/artifacts", headers=server.auth(key))
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        env["MODELYARD_HOME"] = str(self.home)
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The local CLI on the server's home (keys, register, ...)."""
        return subprocess.run(
            [sys.executable, "-m", "modelyard", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def key(self, role: str, name: str | None = None) -> str:
        """A new API key with this role (named after the role unless `name`)."""
        created = self.cli("keys", "create", "--name", name or f"{role}-{time.monotonic_ns()}", "--role", role)
        return created.stdout.strip().splitlines()[-1]

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def start(self) -> None:
        self.log_path = self.home / "server.log"
        log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "modelyard", "serve", "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            [*argv, *self.extra_args], env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1, verify=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz within {READY_TIMEOUT} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, limit: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-limit:]


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running server on an empty registry home (register with `server.cli("register", ...)`)."""
    server = ServerProcess(home=tmp_path / "server-home", port=free_port())
    server.home.mkdir()
    server.start()
    yield server
    server.stop()
