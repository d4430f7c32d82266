"""The FastAPI application: one Registry per process, the API routers, the UI, health and metrics.

`modelyard serve` runs it under uvicorn. With `--workers N` each worker process builds its own
app from the environment (`app_from_environment`, a uvicorn factory): the catalog and the store
are made for several processes (SQLite in WAL mode with write locks, or PostgreSQL; atomic
renames in the store).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from modelyard import __version__
from modelyard.config import Settings
from modelyard.registry import Registry
from modelyard.server.errors import error_body, install_error_handlers

API_PREFIX = "/api/v1"
ENV_HOME = "MODELYARD_HOME"
ENV_DB_URL = "MODELYARD_DB_URL"
ENV_ANONYMOUS_READ = "MODELYARD_SERVER_ANONYMOUS_READ"


def create_app(settings: Settings, *, anonymous_read: bool = False) -> FastAPI:
    """The server's app on a registry's settings. `anonymous_read` lets requests without a key
    read (a trusted network only; off by default)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry(settings)
        registry.catalog  # open the catalog (and migrate it) before the first request  # noqa: B018
        app.state.registry = registry
        try:
            yield
        finally:
            registry.close()

    app = FastAPI(
        title="modelyard",
        version=__version__,
        description="A registry for model artifacts: register, inspect, promote and distribute.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.anonymous_read = anonymous_read
    install_error_handlers(app)
    _include_routers(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Any:
        registry: Registry = app.state.registry
        try:
            registry.catalog.count_versions()
        except Exception as exc:  # the catalog is unreachable: not ready, say why without a trace
            return JSONResponse(error_body("not_ready", f"catalog unreachable: {type(exc).__name__}"), 503)
        return {"status": "ready", "versions": registry.catalog.count_versions()}

    return app


def _include_routers(app: FastAPI) -> None:
    """The API routers (one module per noun group), the web UI and the metrics."""
    from modelyard.server import metrics
    from modelyard.server.api import admin, artifacts, fleet, jobs, lifecycle, training, transfer, uploads
    from modelyard.server.ui import jobs as ui_jobs
    from modelyard.server.ui import routes as ui_routes

    for module in (artifacts, uploads, lifecycle, fleet, admin, training, transfer, jobs):
        app.include_router(module.router)
    ui_routes.install(app)
    ui_jobs.install(app)
    metrics.install(app)


def app_from_environment() -> FastAPI:
    """The uvicorn factory for `modelyard serve --workers N`: settings from the environment."""
    home = os.environ.get(ENV_HOME)
    settings = Settings.load(home=Path(home) if home else None, db_url=os.environ.get(ENV_DB_URL) or None)
    return create_app(settings, anonymous_read=os.environ.get(ENV_ANONYMOUS_READ) == "1")
