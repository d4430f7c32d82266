"""Prometheus metrics at `/metrics`: the server's HTTP traffic and the catalog's figures.

Traffic is counted by a pure ASGI middleware (it never buffers a response, so a streamed download
stays streamed): requests by method, route template and status, a latency histogram, and the
bytes of request and response bodies. Labels carry the route *template*
(`/api/v1/artifacts/{name}/versions/{ref}`), never the raw path, so the number of series stays
bounded whatever clients ask for; a request no route matches is `unmatched`.

With several workers (`modelyard serve --workers N` sets PROMETHEUS_MULTIPROC_DIR) each process
writes its figures to its own files in that directory and a scrape, whichever worker answers it,
adds up every worker's (prometheus_client's multiprocess mode). A worker that exits, or dies,
keeps its counts; its live gauge (requests in progress) is dropped (`mark_process_dead`), at its
shutdown or, if it was killed, at the next scrape.

The catalog's figures (versions by stage, registrations, promotions, deployments by status) are
read from the database at scrape time, so they are right however many workers there are and
whoever wrote to the catalog (the CLI included). Registrations and promotions are counted from the
append-only audit log, so they never go down when versions are pruned.

`/metrics` needs no API key: Prometheus scrapers rarely carry one, and the page holds only counts
(no artifact, node or key names; the route templates are public in the OpenAPI document).
Set `MODELYARD_SERVER_METRICS_REQUIRE_KEY=1` to require a key with the `read` permission.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
ENV_REQUIRE_KEY = "MODELYARD_SERVER_METRICS_REQUIRE_KEY"
METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
STAGES = ("raw", "validated", "production")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live(?:all|sum|max|min|mostrecent)_(\d+)\.db$")

# Created once per process (a worker imports this module once); in multiprocess mode their values
# live in the worker's files under PROMETHEUS_MULTIPROC_DIR.
REQUESTS = Counter(
    "modelyard_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"),
)
LATENCY = Histogram(
    "modelyard_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ("method", "route"),
    buckets=_LATENCY_BUCKETS,
)
BYTES_IN = Counter(
    "modelyard_http_request_body_bytes", "Bytes of request bodies received (uploads).", ("method", "route")
)
BYTES_OUT = Counter(
    "modelyard_http_response_body_bytes", "Bytes of response bodies sent (downloads).", ("method", "route")
)
IN_PROGRESS = Gauge(
    "modelyard_http_requests_in_progress", "Requests being answered now, all live workers.", multiprocess_mode="livesum"
)


def install(app: FastAPI) -> None:
    """Count the app's traffic, serve `/metrics`, and tidy this worker's live gauges at shutdown."""
    app.add_middleware(MetricsMiddleware)
    dependencies: list[Any] = []
    if os.environ.get(ENV_REQUIRE_KEY) == "1":
        from modelyard.server.security import require

        dependencies.append(Depends(require("read")))

    def metrics(request: Request) -> Response:
        return Response(render(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        METRICS_PATH, metrics, methods=["GET"], include_in_schema=False, dependencies=dependencies, name="metrics"
    )
    _mark_dead_at_shutdown(app)


def render(registry: Any) -> bytes:
    """The text exposition: every worker's traffic (or this process's) and the catalog's figures."""
    directory = os.environ.get(ENV_MULTIPROC_DIR)
    if directory:
        forget_dead_workers(Path(directory))
        traffic = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(traffic, path=directory)  # type: ignore[no-untyped-call]
    else:
        traffic = REGISTRY
    catalog = CollectorRegistry(auto_describe=True)
    catalog.register(CatalogCollector(registry))
    return generate_latest(traffic) + generate_latest(catalog)


# -- traffic ---------------------------------------------------------------------------------------


class MetricsMiddleware:
    """Pure ASGI: wraps `receive` and `send` to count body bytes and see the status; the messages
    pass through untouched. A request's figures are written once, right before its last body
    message goes out (so a client that has its answer finds it counted), or when the app ends
    without one (an exception, a client gone mid-download)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # unless a response starts: an exception escaping the app becomes a 500
        received = 0
        sent = 0
        recorded = False

        def record() -> None:
            nonlocal recorded
            recorded = True
            requests, latency, bytes_in, bytes_out = self._metrics_for(scope, root_path, status)
            requests.inc()
            latency.observe(time.perf_counter() - started)
            if received:
                bytes_in.inc(received)
            if sent:
                bytes_out.inc(sent)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False) and not recorded:
                    record()
            elif kind == "http.response.start":
                status = message["status"]
            await send(message)

        IN_PROGRESS.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            IN_PROGRESS.dec()
            if not recorded:
                record()

    def _metrics_for(self, scope: Scope, root_path: str, status: int) -> tuple[Any, Any, Any, Any]:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = route_template(scope, root_path)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # once per (method, route, status): the label lookups are not free
            children = (
                REQUESTS.labels(method, route, str(status)),
                LATENCY.labels(method, route),
                BYTES_IN.labels(method, route),
                BYTES_OUT.labels(method, route),
            )
            self._children[key] = children
        return children


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that answered as OpenAPI writes it (`/api/v1/artifacts/{name}`,
    `.../files/{path}` for `{path:path}`), with the paths of the mounts it sits under; `unmatched`
    when no route did (a 404 or a redirect)."""
    route = scope.get("route")
    path = getattr(route, "path_format", None)
    if not isinstance(path, str):
        return UNMATCHED
    mounted = str(scope.get("root_path", ""))[len(root_path) :]  # Mount adds its path to root_path
    if isinstance(route, Mount):
        return f"{mounted}/{{path}}"
    return mounted + path


# -- workers ---------------------------------------------------------------------------------------


def _mark_dead_at_shutdown(app: FastAPI) -> None:
    """Wrap the app's lifespan: when this worker shuts down, its live gauges stop counting."""
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(inner: Any) -> AsyncIterator[Any]:
        try:
            async with original(inner) as state:
                yield state
        finally:
            directory = os.environ.get(ENV_MULTIPROC_DIR)
            if directory:
                mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]

    app.router.lifespan_context = lifespan


def forget_dead_workers(directory: Path) -> list[int]:
    """`mark_process_dead` for every worker whose live gauge files remain but whose process is
    gone (killed: it had no shutdown). Returns their process ids."""
    dead: list[int] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return dead
    for name in names:
        match = _LIVE_GAUGE_FILE.match(name)
        if match is not None and not process_alive(int(match[1])):
            pid = int(match[1])
            mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
            dead.append(pid)
    return dead


def process_alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not: it is dead and waits for its parent)."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (proc / str(pid) / "stat").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: keep its figures
    return stat.rpartition(b")")[2].split()[:1] != [b"Z"]


# -- the catalog -----------------------------------------------------------------------------------


class CatalogCollector(Collector):
    """Figures read from the catalog at scrape time (a few aggregate queries)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def describe(self) -> Iterable[Metric]:
        return []  # nothing known before collecting: no duplicate-name check at registration

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            figures = catalog_figures(self.registry)
        except Exception:  # the catalog is unreachable: say so, and let the traffic figures through
            yield GaugeMetricFamily("modelyard_catalog_up", "1 when the catalog answered this scrape.", value=0)
            return
        yield GaugeMetricFamily("modelyard_catalog_up", "1 when the catalog answered this scrape.", value=1)
        versions = GaugeMetricFamily("modelyard_versions", "Versions in the catalog, by stage.", labels=["stage"])
        for stage, count in figures.versions_by_stage.items():
            versions.add_metric([stage], count)
        yield versions
        yield CounterMetricFamily(
            "modelyard_registrations", "Versions registered (audit log: register events).", value=figures.registrations
        )
        promotions = CounterMetricFamily(
            "modelyard_promotions", "Promotions (audit log: promote events), by target stage.", labels=["to"]
        )
        for stage, count in figures.promotions_by_stage.items():
            promotions.add_metric([stage], count)
        yield promotions
        deployments = GaugeMetricFamily(
            "modelyard_deployments", "Deployments known to the catalog, by status.", labels=["status"]
        )
        for status, count in figures.deployments_by_status.items():
            deployments.add_metric([status], count)
        yield deployments
        yield GaugeMetricFamily(
            "modelyard_catalog_scrape_seconds",
            "Time the catalog queries of this scrape took.",
            value=time.perf_counter() - started,
        )


class CatalogFigures:
    """Counts read from the catalog in one read transaction."""

    def __init__(
        self,
        versions_by_stage: dict[str, int],
        registrations: int,
        promotions_by_stage: dict[str, int],
        deployments_by_status: dict[str, int],
    ) -> None:
        self.versions_by_stage = versions_by_stage
        self.registrations = registrations
        self.promotions_by_stage = promotions_by_stage
        self.deployments_by_status = deployments_by_status


def catalog_figures(registry: Any) -> CatalogFigures:
    """Versions by stage, register and promote events, deployments by status (zeros included)."""
    from sqlalchemy import func, or_, select
    from sqlalchemy.orm import Session

    from modelyard.catalog.deployments import DEPLOYMENT_STATUSES
    from modelyard.catalog.tables import DeploymentRow, EventRow, VersionRow

    versions = dict.fromkeys(STAGES, 0)
    promotions = dict.fromkeys(STAGES[1:], 0)
    deployments = dict.fromkeys(DEPLOYMENT_STATUSES, 0)
    registrations = 0
    with Session(registry.catalog.engine) as session, session.begin():
        for stage, count in session.execute(select(VersionRow.stage, func.count()).group_by(VersionRow.stage)):
            versions[stage] = int(count)
        events = (
            select(EventRow.action, func.count())
            .where(or_(EventRow.action == "register", EventRow.action.like("promote:%")))
            .group_by(EventRow.action)
        )
        for action, count in session.execute(events):
            if action == "register":
                registrations = int(count)
            else:
                promotions[action.removeprefix("promote:")] = int(count)
        for status, count in session.execute(select(DeploymentRow.status, func.count()).group_by(DeploymentRow.status)):
            deployments[status] = int(count)
    return CatalogFigures(versions, registrations, promotions, deployments)
