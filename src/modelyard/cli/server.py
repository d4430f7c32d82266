"""`modelyard serve` (the registry server) and `modelyard keys` (its API keys)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli._common import HomeOpt, JsonOpt, open_registry_or_server, print_json, print_table

keys_app = typer.Typer(help="API keys of the server: create (printed once), list, revoke.", no_args_is_help=True)


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8600,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (one catalog, one store).")] = 1,
    anonymous_read: Annotated[
        bool, typer.Option("--anonymous-read", help="Let requests without a key read (trusted networks only).")
    ] = False,
    ssl_certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="Serve HTTPS with this certificate.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="The certificate's private key.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
    home: HomeOpt = None,
) -> None:
    """Run the registry server: REST API under /api/v1, web UI at /, /metrics, /healthz, /readyz."""
    import uvicorn

    from modelyard.config import Settings
    from modelyard.errors import InvalidInputError
    from modelyard.server.app import ENV_ANONYMOUS_READ, ENV_HOME

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise InvalidInputError("give both --ssl-certfile and --ssl-keyfile, or neither", field="--ssl-keyfile")
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            raise InvalidInputError("no such file", path=path)
    settings = Settings.load(home=home)
    os.environ[ENV_HOME] = str(settings.home)  # the workers build their app from the environment
    os.environ[ENV_ANONYMOUS_READ] = "1" if anonymous_read else "0"
    from modelyard.registry import Registry

    with Registry(settings) as registry:
        registry.catalog  # migrate once, before the workers start  # noqa: B018
    _prepare_metrics_directory(settings.home, workers)
    uvicorn.run(
        "modelyard.server.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        proxy_headers=False,
        server_header=False,
    )


def _prepare_metrics_directory(home: Path, workers: int) -> None:
    """prometheus_client's multiprocess mode: each worker writes its figures under one directory,
    emptied at start (stale files of a previous run would be counted)."""
    import shutil

    directory = home / "tmp" / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(directory))
    os.environ["MODELYARD_SERVER_WORKERS"] = str(workers)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Whose key: a person or a service (unique).")],
    role: Annotated[str, typer.Option("--role", help="viewer, trainer, deployer, approver or admin.")],
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Create a key; the key itself is printed alone on the last line (it is not stored, only its SHA-256)."""
    with open_registry_or_server(home) as registry:
        record, secret = registry.create_key(name, role)
    if json_output:
        print_json({"name": record.name, "role": record.role, "prefix": record.prefix, "key": secret})
        return
    sys.stdout.write(f"created key {record.name} ({record.role}); it is shown only now:\n{secret}\n")


@keys_app.command("list")
def keys_list(home: HomeOpt = None, json_output: JsonOpt = False) -> None:
    """The keys (never the secrets): name, role, prefix, created, revoked."""
    with open_registry_or_server(home) as registry:
        keys = registry.keys()
    if json_output:
        print_json(
            [
                {
                    "name": k.name,
                    "role": k.role,
                    "prefix": k.prefix,
                    "created_at": k.created_at.isoformat(),
                    "created_by": k.created_by,
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in keys
            ]
        )
        return
    rows = [
        [
            k.name,
            k.role,
            k.prefix + "...",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        ]
        for k in keys
    ]
    print_table(["NAME", "ROLE", "KEY", "CREATED", "REVOKED"], rows)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")], home: HomeOpt = None, json_output: JsonOpt = False
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    with open_registry_or_server(home) as registry:
        record = registry.revoke_key(name)
    if json_output:
        print_json({"name": record.name, "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None})
        return
    sys.stdout.write(f"revoked key {record.name} ({record.role})\n")


def install(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.add_typer(keys_app, name="keys")
