"""Shared fixtures: registry homes, a real PostgreSQL database per test, run directories built
from real files, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelyard.registry import Registry
from serverproc import server_fixture  # noqa: F401
from sshnodes import netns_ssh_nodes_fixture, ssh_client_key_fixture, ssh_nodes_fixture  # noqa: F401

PG_ADMIN_URL = os.environ.get("MODELYARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


# -- PostgreSQL -----------------------------------------------------------------------------


def _pg_admin():  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_admin():  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    engine = _pg_admin()
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - environment problem, reported loudly
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc}); run scripts/ensure-services")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"modelyard_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The catalog URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
    return str(request.getfixturevalue("pg_url"))


# -- registries -----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def registry(home: Path) -> Iterator[Registry]:
    """A registry on the embedded default: SQLite catalog and local store in a temporary home."""
    with Registry.open(home) as opened:
        yield opened


@pytest.fixture
def any_registry(home: Path, db_url: str) -> Iterator[Registry]:
    """The same, parametrised over SQLite and PostgreSQL catalogs."""
    with Registry.open(home, db_url=db_url) as opened:
        yield opened


# -- run directories ------------------------------------------------------------------------


def write_safetensors(path: Path, seed: int = 0, shape: tuple[int, ...] = (16, 8)) -> None:
    """A real safetensors file written by the official library."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "encoder.weight": rng.standard_normal(shape).astype(np.float32),
            "encoder.bias": np.zeros(shape[0], np.float32),
        },
        str(path),
        metadata={"format": "np"},
    )


@dataclass
class RunBuilder:
    root: Path

    def __call__(self, name: str = "v5_5_20251124", *, seed: int = 0, manifest: dict | None = None) -> Path:
        """A training output shaped like seed 003's raw example, with real files."""
        run = self.root / name
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "metrics").mkdir(exist_ok=True)
        write_safetensors(run / "checkpoints" / "best.safetensors", seed)
        write_safetensors(run / "checkpoints" / "latest.safetensors", seed + 1)
        (run / "checkpoints" / "manifest.json").write_text(json.dumps({"best": "best.safetensors"}))
        (run / "metrics" / "training_metrics.json").write_text(json.dumps({"best_val_loss": 0.38}))
        (run / "config.yaml").write_text("batch_size: 256\nepochs: 10\nlearning_rate: 1e-4\n")
        (run / "training.log").write_text("epoch 1 loss 0.9\nepoch 2 loss 0.5\n")
        (run / "README.md").write_text("# run\n")
        if manifest is not None:
            (run / "artifact_manifest.json").write_text(json.dumps(manifest))
        backdate(run)
        return run


def backdate(path: Path, seconds: float = 60.0) -> None:
    """Set mtimes into the past, as for outputs a training run wrote a while ago. (Files written
    within the stat cache's racy window are re-read on the next registration, by design.)"""
    when = time.time() - seconds
    targets = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for target in targets:
        os.utime(target, (when, when))


@pytest.fixture
def make_run(tmp_path: Path) -> RunBuilder:
    return RunBuilder(tmp_path / "runs")


# -- the CLI --------------------------------------------------------------------------------


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.stdout)


@pytest.fixture
def cli(home: Path) -> Callable[..., CliResult]:
    """Run the real `modelyard` CLI in a subprocess against the test's home."""

    def run(*args: str, env: dict[str, str] | None = None, check: bool = False, timeout: float = 120) -> CliResult:
        full_env = {**os.environ, "MODELYARD_HOME": str(home), **(env or {})}
        full_env.pop("MODELYARD_DB_URL", None) if env is None or "MODELYARD_DB_URL" not in env else None
        proc = subprocess.run(
            [sys.executable, "-m", "modelyard", *args],
            capture_output=True,
            text=True,
            env=full_env,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"modelyard {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return result

    return run
