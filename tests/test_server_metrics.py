"""`modelyard serve --workers 2` over real HTTP: /metrics adds up every worker, counts body bytes
and reads the catalog at scrape time; /healthz and /readyz; registrations while the server runs;
HTTPS with a self-signed certificate."""

from __future__ import annotations

import collections
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunBuilder, write_safetensors
from modelyard.registry import Registry
from serverproc import ServerProcess, free_port

ARTIFACT = "tiny-llm-v1"
WEIGHTS = "model.safetensors"
SHOW_ROUTE = "/api/v1/artifacts/{name}/versions/{ref}"
DOWNLOAD_ROUTE = "/api/v1/artifacts/{name}/versions/{ref}/files/{path}"
REQUESTS = "modelyard_http_requests_total"


# -- helpers --------------------------------------------------------------------------------------


@dataclass
class Server(ServerProcess):
    """A server with extra environment variables (the fixture's strips MODELYARD_*)."""

    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


def start_server(
    tmp_path: Path, *args: str, scheme: str = "http", extra_env: dict[str, str] | None = None, config: str = ""
) -> Server:
    server = Server(
        home=tmp_path / "server-home", port=free_port(), extra_args=list(args), scheme=scheme, extra_env=extra_env or {}
    )
    server.home.mkdir()
    if config:
        (server.home / "config.toml").write_text(config)
    return server


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    """A server with two workers on a catalog holding ARTIFACT@1 (1 MiB of weights)."""
    server = start_server(tmp_path, "--workers", "2")
    register(server, tmp_path)
    server.start()
    yield server
    server.stop()


def register(server: ServerProcess, tmp_path: Path, name: str = ARTIFACT) -> Path:
    run = tmp_path / name
    write_safetensors(run / WEIGHTS, shape=(512, 512))
    (run / "config.json").write_text('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}')
    server.cli("register", str(run), "--artifact-name", name, "-q")
    return run


def scrape(server: ServerProcess, **request: object) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One scrape of /metrics on a new connection: (sample name, labels) -> value."""
    response = httpx.get(server.url + "/metrics", **request)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(figures: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return figures.get((name, frozenset(labels.items())), 0.0)


def per_worker(server: ServerProcess, name: str, **labels: str) -> dict[int, float]:
    """One figure as each worker wrote it to its own file in the multiprocess directory."""
    counts: dict[int, float] = {}
    for path in sorted((server.home / "tmp" / "metrics").glob("counter_*.db")):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            figures = {
                (s.name, frozenset(s.labels.items())): s.value for family in registry.collect() for s in family.samples
            }
        counts[int(path.stem.split("_")[1])] = value(figures, name, **labels)
    return counts


def served_by_both(server: ServerProcess, url: str, headers: dict[str, str], name: str, **labels: str) -> int:
    """Requests on new connections until both workers have answered some; how many were made."""
    made = 0
    while made < 600:
        for _ in range(20):
            assert httpx.get(url, headers=headers).status_code == 200
            made += 1
        if len([n for n in per_worker(server, name, **labels).values() if n > 0]) >= 2:
            return made
    raise AssertionError(f"{made} requests on new connections all went to one worker: {per_worker(server, name)}")


# -- traffic, across workers ------------------------------------------------------------------------


def test_requests_through_both_workers_are_counted_whichever_worker_answers_the_scrape(two_workers: Server) -> None:
    server = two_workers
    headers = server.auth(server.key("viewer"))
    url = f"{server.url}/api/v1/artifacts/{ARTIFACT}/versions/1"
    made = served_by_both(server, url, headers, REQUESTS, method="GET", route=SHOW_ROUTE, status="200")
    workers = per_worker(server, REQUESTS, method="GET", route=SHOW_ROUTE, status="200")
    assert sum(workers.values()) == made and len([n for n in workers.values() if n]) == 2

    scrapes = 0
    while (
        len([n for n in per_worker(server, REQUESTS, route="/metrics", method="GET", status="200").values() if n]) < 2
    ):
        figures = scrape(server)
        scrapes += 1
        assert value(figures, REQUESTS, method="GET", route=SHOW_ROUTE, status="200") == made
        count = value(figures, "modelyard_http_request_duration_seconds_count", method="GET", route=SHOW_ROUTE)
        assert count == made
        assert scrapes < 100, "every scrape went to the same worker"

    for name in ("nope-v1", "other-v1", "third-v1"):  # raw paths never become labels
        assert httpx.get(f"{server.url}/api/v1/artifacts/{name}/versions/7", headers=headers).status_code == 404
    assert httpx.get(server.url + "/no/such/page").status_code == 404
    text = httpx.get(server.url + "/metrics").text
    assert value(samples(text), REQUESTS, method="GET", route=SHOW_ROUTE, status="404") == 3
    assert value(samples(text), REQUESTS, method="GET", route="unmatched", status="404") == 1
    assert "nope-v1" not in text and "/no/such/page" not in text and ARTIFACT not in text


def test_body_bytes_move_by_what_was_sent_and_received(two_workers: Server, tmp_path: Path) -> None:
    server = two_workers
    headers = server.auth(server.key("admin"))
    size = (tmp_path / ARTIFACT / WEIGHTS).stat().st_size
    url = f"{server.url}/api/v1/artifacts/{ARTIFACT}/versions/1/files/{WEIGHTS}"
    labels = {"method": "GET", "route": DOWNLOAD_ROUTE}
    before = scrape(server)
    for _ in range(3):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 200 and len(response.content) == size
    assert httpx.get(url, headers={**headers, "Range": "bytes=0-99"}).status_code == 206
    assert httpx.head(url, headers=headers).status_code == 200  # headers only: no body bytes
    after = scrape(server)
    sent = "modelyard_http_response_body_bytes_total"
    assert value(after, sent, **labels) - value(before, sent, **labels) == 3 * size + 100
    assert value(after, sent, method="HEAD", route=DOWNLOAD_ROUTE) == 0
    assert value(after, REQUESTS, method="HEAD", route=DOWNLOAD_ROUTE, status="200") == 1

    # Bytes in: a request body the app reads (any operation taking a JSON body; the body is read
    # before the endpoint answers, whatever it answers).
    openapi = httpx.get(server.url + "/api/v1/openapi.json").json()
    posts = sorted(
        path
        for path, operations in openapi["paths"].items()
        if "requestBody" in operations.get("post", {})
        and "application/json" in operations["post"]["requestBody"].get("content", {})
    )
    if not posts:
        pytest.skip("no operation takes a JSON body yet")
    template = posts[0]
    body = json.dumps({"padding": "x" * 5000}).encode()
    target = template.replace("{name}", "nope-v1").replace("{ref}", "1").replace("{alias}", "a")
    target = target.replace("{", "").replace("}", "")
    response = httpx.post(server.url + target, content=body, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    received = value(scrape(server), "modelyard_http_request_body_bytes_total", method="POST", route=template)
    assert received == len(body), (template, response.status_code)


def test_a_killed_worker_keeps_its_counts_and_its_live_gauge_goes(two_workers: Server) -> None:
    server = two_workers
    headers = server.auth(server.key("viewer"))
    url = f"{server.url}/api/v1/artifacts/{ARTIFACT}/versions/latest"
    made = served_by_both(server, url, headers, REQUESTS, method="GET", route=SHOW_ROUTE, status="200")
    directory = server.home / "tmp" / "metrics"
    victim = min(
        pid for pid, n in per_worker(server, REQUESTS, method="GET", route=SHOW_ROUTE, status="200").items() if n
    )
    assert (directory / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (directory / f"gauge_livesum_{victim}.db").exists():  # the next scrape drops it
        assert time.monotonic() < deadline, "the dead worker's live gauge is still counted"
        try:
            figures = scrape(server, timeout=5)
        except httpx.HTTPError:
            time.sleep(0.2)  # the connection went to the dying worker
            continue
        assert value(figures, REQUESTS, method="GET", route=SHOW_ROUTE, status="200") == made
        assert value(figures, "modelyard_http_requests_in_progress") >= 1  # this scrape
    figures = scrape(server)
    assert value(figures, REQUESTS, method="GET", route=SHOW_ROUTE, status="200") == made  # its counts stay
    assert value(figures, "modelyard_http_requests_in_progress") == 1
    assert httpx.get(url, headers=headers).status_code == 200


def test_a_stopped_server_leaves_no_live_gauges(two_workers: Server) -> None:
    server = two_workers
    assert httpx.get(server.url + "/metrics").status_code == 200
    directory = server.home / "tmp" / "metrics"
    assert list(directory.glob("gauge_livesum_*.db"))
    server.stop()
    assert not list(directory.glob("gauge_livesum_*.db"))  # each worker marked itself dead at shutdown
    assert list(directory.glob("counter_*.db"))


# -- the catalog's figures ----------------------------------------------------------------------------


def test_catalog_figures_are_read_from_the_catalog_at_scrape_time(two_workers: Server, tmp_path: Path) -> None:
    server = two_workers
    assert value(scrape(server), "modelyard_registrations_total") == 1
    make_run = RunBuilder(tmp_path / "runs")
    with Registry.open(server.home) as registry:  # another process writes while the server runs
        first = registry.register(make_run("v5_5_20251124", seed=1)).version
        registry.register(make_run("v5_6_20251125", seed=2))
        registry.promote(first.ref, "validated", force=True, reason="metrics test: the gates are not under test")
        for node, status in (("edge-1", "activated"), ("edge-2", "activated"), ("edge-3", "failed")):
            registry.record_pull(
                {
                    "node": node,
                    "target_name": "embedder",
                    "version_dir": f"v{first.number}",
                    "artifact_name": first.artifact_name,
                    "version_number": first.number,
                    "serving_path": "/srv/models/embedder",
                    "status": status,
                }
            )
        stages = collections.Counter(v.stage for v in registry.list(all_versions=True))
        deployments = collections.Counter(d.status for d in registry.deployments())
        events = collections.Counter(str(e["action"]) for e in registry.audit(limit=1000))
    assert stages == {"raw": 3, "validated": 1} and deployments == {"activated": 2, "failed": 1}
    for _ in range(4):  # whichever worker answers
        figures = scrape(server)
        assert value(figures, "modelyard_catalog_up") == 1
        for stage in ("raw", "validated", "production"):
            assert value(figures, "modelyard_versions", stage=stage) == stages[stage], stage
        assert value(figures, "modelyard_registrations_total") == events["register"] == 3
        assert value(figures, "modelyard_promotions_total", to="validated") == events["promote:validated"] == 1
        assert value(figures, "modelyard_promotions_total", to="production") == 0
        for status in ("activated", "failed", "pending", "rolled_back"):
            assert value(figures, "modelyard_deployments", status=status) == deployments[status], status


def test_concurrent_registrations_while_two_workers_serve_leave_a_consistent_catalog(
    two_workers: Server, tmp_path: Path
) -> None:
    server = two_workers
    headers = server.auth(server.key("viewer"))
    runs = []
    for index in range(8):
        run = tmp_path / f"shared-{index}"
        write_safetensors(run / WEIGHTS, seed=100 + index)
        runs.append(run)
    stop = threading.Event()
    answers: list[int] = []

    def read_all_the_while() -> None:
        while not stop.is_set():
            answers.append(httpx.get(server.url + "/api/v1/artifacts?all_versions=true", headers=headers).status_code)

    reader = threading.Thread(target=read_all_the_while)
    reader.start()
    try:
        processes = [
            subprocess.Popen(
                ["sh", "-c", " && ".join(_cli_line(run) for run in runs[i::2])],
                env=server.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for process in processes:
            _, err = process.communicate(timeout=180)
            assert process.returncode == 0, err
    finally:
        stop.set()
        reader.join()
    assert answers and set(answers) == {200}

    artifact = httpx.get(server.url + "/api/v1/artifacts/shared-llm-v1", headers=headers).json()
    numbers = sorted(v["number"] for v in artifact["versions"])
    assert numbers == list(range(1, 9))
    digests = set()
    for number in numbers:
        files = httpx.get(f"{server.url}/api/v1/artifacts/shared-llm-v1/versions/{number}/files", headers=headers)
        digests.add(next(f["sha256"] for f in files.json() if f["path"] == WEIGHTS))
    assert len(digests) == 8  # eight distinct registrations, none lost or doubled
    assert server.cli("verify").returncode == 0
    for _ in range(3):
        assert value(scrape(server), "modelyard_registrations_total") == 1 + 8


def _cli_line(run: Path) -> str:
    argv = [sys.executable, "-m", "modelyard", "register", str(run), "--artifact-name", "shared-llm-v1", "-q"]
    return shlex.join(argv)


# -- access, health and readiness ------------------------------------------------------------------


def test_metrics_needs_no_key_unless_the_server_requires_one(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"MODELYARD_SERVER_METRICS_REQUIRE_KEY": "1"})
    server.start()
    try:
        refused = httpx.get(server.url + "/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
        figures = scrape(server, headers=server.auth(server.key("viewer")))
        assert value(figures, REQUESTS, method="GET", route="/metrics", status="401") == 1
    finally:
        server.stop()


@pytest.mark.postgres
def test_readyz_follows_the_catalog_and_healthz_the_process(tmp_path: Path, pg_url: str, pg_admin: sa.Engine) -> None:
    server = start_server(tmp_path, "--workers", "2", config=f'[catalog]\nurl = "{pg_url}"\n')
    register(server, tmp_path)
    server.start()
    try:
        for _ in range(4):
            ready = httpx.get(server.url + "/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready", "versions": 1}
        assert value(scrape(server), "modelyard_versions", stage="raw") == 1

        database = pg_url.rsplit("/", 1)[1]
        with pg_admin.connect() as connection:  # the catalog goes away under the running server
            connection.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        for _ in range(4):
            gone = httpx.get(server.url + "/readyz", timeout=30)
            assert gone.status_code == 503
            assert (
                gone.json()["error"]["code"] == "not_ready" and "catalog unreachable" in gone.json()["error"]["message"]
            )
            assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        figures = scrape(server, timeout=30)
        assert value(figures, "modelyard_catalog_up") == 0
        assert value(figures, REQUESTS, method="GET", route="/readyz", status="503") == 4
        assert ("modelyard_versions", frozenset({("stage", "raw")})) not in figures
    finally:
        server.stop()


# -- HTTPS -----------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    args = ("--workers", "2", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    server = start_server(tmp_path, *args, scheme="https")
    register(server, tmp_path)
    server.start()
    try:
        headers = server.auth(server.key("viewer"))
        assert server.url.startswith("https://")
        for _ in range(4):
            shown = httpx.get(f"{server.url}/api/v1/artifacts/{ARTIFACT}/versions/1", headers=headers, verify=str(cert))
            assert shown.status_code == 200 and shown.json()["ref"] == f"{ARTIFACT}@1"
        figures = scrape(server, verify=str(cert))
        assert value(figures, REQUESTS, method="GET", route=SHOW_ROUTE, status="200") == 4
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.url + "/healthz")  # not a certificate the system trusts
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/healthz")  # plain HTTP to the TLS port
    finally:
        server.stop()


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    server = start_server(tmp_path)
    refused = server.cli("serve", "--port", str(server.port), "--ssl-certfile", str(cert), check=False)
    assert refused.returncode == 3, refused.stderr
    assert "--ssl-keyfile" in refused.stderr
    missing = server.cli(
        "serve", "--port", str(server.port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "no.pem"),
        check=False,
    )  # fmt: skip
    assert missing.returncode == 3 and "no.pem" in missing.stderr
