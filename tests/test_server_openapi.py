"""The OpenAPI document: committed in docs/openapi.json, served by the app, and honoured by the
live server (schemathesis, bounded examples, an admin key).

Each operation gets `MAX_EXAMPLES` generated requests (valid and invalid ones) against one real
server whose catalog holds a registered version; half of the generated artifact names, refs and
paths are replaced by that version's, so the success paths are exercised too. Checks: no 5xx; a
success body matches its documented schema and content type; an error body is the one error
shape; the status is documented or one of the errors any endpoint may answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from conftest import write_safetensors
from modelyard.server.openapi import DEFAULT_PATH, REGENERATE, document, render
from serverproc import ServerProcess, free_port

MAX_EXAMPLES = 25
ARTIFACT = "tiny-llm-v1"
WEIGHTS = "model.safetensors"
# Answers any endpoint may give besides the ones it documents (FastAPI documents 200 and 422);
# 405 answers the unsupported methods schemathesis also tries.
COMMON_ERRORS = frozenset({400, 401, 403, 404, 405, 409, 413, 416, 422})
# Operations that reach outside the server (SSH to fleet nodes): not fuzzed here.
NOT_FUZZED = ("/api/v1/deployments/push", "/api/v1/deployments/verify", "/api/v1/deployments/rollback")


def test_the_committed_document_is_the_apps() -> None:
    committed = DEFAULT_PATH.read_text(encoding="utf-8") if DEFAULT_PATH.exists() else ""
    assert committed == render(document()), f"{DEFAULT_PATH} is out of date: run {REGENERATE} and commit it"


def test_the_server_serves_the_same_document(live: Live) -> None:
    served = httpx.get(live.server.url + "/api/v1/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


# -- schemathesis -----------------------------------------------------------------------------------


class Live:
    """The server the fuzzed requests go to, with an admin key and one registered version."""

    def __init__(self, server: ServerProcess, key: str, sha256: str) -> None:
        self.server = server
        self.headers = server.auth(key)
        self.sha256 = sha256


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("openapi")
    server = ServerProcess(home=base / "home", port=free_port())
    server.home.mkdir()
    run = base / ARTIFACT
    write_safetensors(run / WEIGHTS, shape=(64, 32))
    (run / "config.json").write_text('{"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4}')
    server.cli("register", str(run), "--artifact-name", ARTIFACT, "-q")
    key = server.key("admin")
    server.start()
    try:
        yield Live(server, key, hashlib.sha256((run / WEIGHTS).read_bytes()).hexdigest())
    finally:
        server.stop()


schema = schemathesis.openapi.from_dict(document()).exclude(path=list(NOT_FUZZED))
_live_sha256: dict[str, str] = {}


@schema.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any]) -> dict[str, Any]:
    """Half of the generated names, refs, paths and digests become the registered version's."""
    if not path_parameters:
        return path_parameters
    known = {"name": ARTIFACT, "ref": "latest", "path": WEIGHTS, "sha256": _live_sha256.get("weights", "")}
    for parameter, value in list(path_parameters.items()):
        if parameter in known and known[parameter] and len(str(value)) % 2 == 0:
            path_parameters[parameter] = known[parameter]
    return path_parameters


@schemathesis.check
def success_matches_its_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    if 200 <= response.status_code < 300:
        content_type_conformance(ctx, response, case)
        response_schema_conformance(ctx, response, case)
    return None


@schemathesis.check
def errors_have_one_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400 and case.method != "HEAD":
        body = json.loads(response.content)
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict) and {"code", "message", "details"} <= error.keys(), (
            f"{response.status_code} without the error body: {response.content[:300]!r}"
        )
    return None


@schemathesis.check
def status_is_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    documented = {int(code) for code in case.operation.definition.raw.get("responses", {}) if code.isdigit()}
    status = response.status_code
    assert status in documented or status in COMMON_ERRORS or status == 304, (
        f"{case.method} {case.path} answered {status}, documented: {sorted(documented)}"
    )
    return None


CHECKS = [not_a_server_error, success_matches_its_schema, errors_have_one_shape, status_is_documented]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_live_server_honours_the_document(case: Any, live: Live) -> None:
    _live_sha256["weights"] = live.sha256
    case.call_and_validate(base_url=live.server.url, headers=live.headers, checks=CHECKS, timeout=30)


def test_the_fuzzed_server_logged_no_trace(live: Live) -> None:
    """Runs after the fuzzing: a 500 writes a trace to the log; so would a crash in a stream."""
    log = live.server.log_tail(limit=1 << 20)
    assert "Traceback" not in log, log[-3000:]
