"""The permission table, endpoint by endpoint, over real HTTP.

Every route of the app under /api/v1 is listed from `create_app(...)` itself, and each one's
permission is read from its dependencies (`security.require` names them `require_<permission>`;
a gate whose permission depends on a body field says so with `field` and `permissions`). A route
that declares none fails the test. Then every route is called with every role's key: 403 naming
the permission exactly when `PERMISSIONS` says the role lacks it, otherwise neither 401 nor 403
(the inputs then fail validation or name nothing that exists: the gate runs before either).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from modelyard.access import PERMISSIONS, ROLES
from modelyard.config import Settings
from modelyard.server.app import create_app
from serverproc import ServerProcess, free_port

API = "/api/v1"
# Values for path parameters: well formed, naming nothing that exists.
PATH_VALUES = {"name": "nope-v1", "ref": "1", "alias": "champion", "path": "x.bin", "sha256": "0" * 64}
PERMISSION_OF_DEPENDENCY = {f"require_{permission.replace('.', '_')}": permission for permission in PERMISSIONS}


@dataclass(frozen=True)
class Call:
    """One request to one route, and the permission its gate checks for it."""

    method: str
    path: str
    url: str
    permission: str
    body: dict[str, Any] | None

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.body or ''}".strip()


def _gates(dependant: Dependant) -> list[Any]:
    """The permission gates among a route's dependencies, however deep."""
    found = []
    for dependency in dependant.dependencies:
        call = dependency.call
        if getattr(call, "__name__", "") in PERMISSION_OF_DEPENDENCY or hasattr(call, "permissions"):
            found.append(call)
        found += _gates(dependency)
    return found


def _calls_of(route: APIRoute, path: str, methods: set[str]) -> list[Call]:
    gates = _gates(route.dependant)
    assert gates, f"{sorted(methods)} {path} declares no permission: add Depends(require('...'))"
    gate = gates[0]
    url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path)
    calls = []
    for method in sorted(methods):
        body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
        if hasattr(gate, "permissions"):  # the permission depends on a body field: one call per value
            for value, permission in gate.permissions.items():
                assert permission in PERMISSIONS, f"{path}: {permission!r} is not in PERMISSIONS"
                calls.append(Call(method, path, url, permission, {gate.field: value}))
        else:
            calls.append(Call(method, path, url, PERMISSION_OF_DEPENDENCY[gate.__name__], body))
    return calls


def _api_calls(home: Path) -> list[Call]:
    app = create_app(Settings.load(home=home))
    calls = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or ""
        if isinstance(route, APIRoute) and path.startswith(API + "/"):
            calls += _calls_of(route, path, set(context.methods or ()))
    return calls


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, with one key per role (`server.keys`)."""
    process = ServerProcess(home=tmp_path_factory.mktemp("permissions") / "home", port=free_port())
    process.home.mkdir()
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> dict[str, str]:
    """role -> key: the admin's from the CLI, the others from POST /api/v1/keys with it."""
    admin = server.key("admin", name="ada")
    made = {"admin": admin}
    for role in ROLES:
        if role != "admin":
            response = httpx.post(
                server.url + API + "/keys", json={"name": f"{role}-key", "role": role}, headers=server.auth(admin)
            )
            assert response.status_code == 201, response.text
            made[role] = response.json()["key"]
    return made


def _request(server: ServerProcess, call: Call, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(call.method, server.url + call.url, json=call.body, headers=headers, timeout=60)


def test_every_api_route_declares_a_known_permission(server: ServerProcess) -> None:
    calls = _api_calls(server.home)
    paths = {call.path for call in calls}
    # the noun groups of issue 6 are all there (other routers add to them)
    for expected in (
        "/api/v1/artifacts/{name}/versions/{ref}/promote",
        "/api/v1/artifacts/{name}/aliases/{alias}",
        "/api/v1/audit",
        "/api/v1/deployments/push",
        "/api/v1/fleet",
        "/api/v1/keys/{name}",
    ):
        assert expected in paths
    assert all(call.permission in PERMISSIONS for call in calls)
    by_route = {(call.method, call.path): call.permission for call in calls}
    assert by_route[("POST", "/api/v1/keys")] == "keys"
    assert by_route[("PUT", "/api/v1/artifacts/{name}/aliases/{alias}")] == "alias"
    assert by_route[("GET", "/api/v1/deployments")] == "read"


def test_each_role_is_refused_exactly_what_the_table_denies_it(server: ServerProcess, keys: dict[str, str]) -> None:
    calls = _api_calls(server.home)
    wrong = []
    for call in calls:
        for role in ROLES:
            response = _request(server, call, server.auth(keys[role]))
            allowed = role in PERMISSIONS[call.permission]
            if allowed and response.status_code in (401, 403):
                wrong.append(f"{role}: {call} -> {response.status_code} {response.text[:200]}")
            elif not allowed:
                if response.status_code != 403:
                    wrong.append(f"{role}: {call} -> {response.status_code}, wanted 403")
                elif call.method != "HEAD":
                    error = response.json()["error"]
                    if error["code"] != "forbidden" or f"'{call.permission}'" not in error["message"]:
                        wrong.append(f"{role}: {call} -> {error}")
    assert not wrong, "\n".join(wrong)


def test_a_promotion_needs_the_permission_of_its_stage_and_force_the_admins(
    server: ServerProcess, keys: dict[str, str]
) -> None:
    url = server.url + API + "/artifacts/nope-v1/versions/1/promote"

    def promote(role: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(url, json=body, headers=server.auth(keys[role]))

    for role in ("viewer", "deployer"):  # neither stage: refused before the body is even read
        refused = promote(role, {})
        assert refused.status_code == 403
        assert "'promote.validated' or 'promote.production'" in refused.json()["error"]["message"]
    assert promote("approver", {"to": "validated"}).status_code == 403
    assert promote("trainer", {"to": "production", "version": "1.0.0"}).status_code == 403
    forced = promote("trainer", {"to": "validated", "force": True, "reason": "r"})
    assert forced.status_code == 403 and "'force'" in forced.json()["error"]["message"]
    assert promote("approver", {"to": "production", "version": "1.0.0"}).status_code == 404
    assert promote("admin", {"to": "validated", "force": True, "reason": "r"}).status_code == 404
    unknown = promote("trainer", {"to": "gold"})
    assert unknown.status_code == 422 and unknown.json()["error"]["details"]["field"] == "to"


def test_every_route_wants_a_key_and_a_revoked_key_is_refused(server: ServerProcess, keys: dict[str, str]) -> None:
    for call in _api_calls(server.home):
        missing = _request(server, call, {})
        assert missing.status_code == 401, f"{call}: {missing.status_code}"
        if call.method != "HEAD":
            assert missing.json()["error"]["code"] == "unauthenticated"
    admin = server.auth(keys["admin"])
    created = httpx.post(server.url + API + "/keys", json={"name": "short-lived", "role": "viewer"}, headers=admin)
    key = created.json()["key"]
    assert httpx.get(server.url + API + "/audit", headers=server.auth(key)).status_code == 200
    assert httpx.delete(server.url + API + "/keys/short-lived", headers=admin).status_code == 200
    revoked = httpx.get(server.url + API + "/audit", headers=server.auth(key))
    assert revoked.status_code == 401 and revoked.json()["error"]["message"] == "unknown or revoked API key"


def test_keys_over_http_show_the_secret_once_and_refuse_bad_input(server: ServerProcess, keys: dict[str, str]) -> None:
    admin = server.auth(keys["admin"])
    url = server.url + API + "/keys"
    created = httpx.post(url, json={"name": "ci-bot", "role": "trainer"}, headers=admin)
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    body = created.json()
    secret = body["key"]
    assert secret.startswith("myd_") and body["prefix"] == secret[:8] and body["created_by"] == "ada"
    listed = httpx.get(url, headers=admin)
    assert secret not in listed.text
    entry = next(k for k in listed.json() if k["name"] == "ci-bot")
    assert entry == {k: v for k, v in body.items() if k != "key"}
    assert secret not in (server.log_tail(100_000))

    before = httpx.get(url, headers=admin).json()
    duplicate = httpx.post(url, json={"name": "ci-bot", "role": "viewer"}, headers=admin)
    assert duplicate.status_code == 409 and "ci-bot" in duplicate.json()["error"]["message"]
    bad_role = httpx.post(url, json={"name": "x", "role": "root"}, headers=admin)
    assert bad_role.status_code == 422 and "unknown role 'root'" in bad_role.json()["error"]["message"]
    bad_name = httpx.post(url, json={"name": "a b", "role": "viewer"}, headers=admin)
    assert bad_name.status_code == 422 and "key name 'a b'" in bad_name.json()["error"]["message"]
    missing_role = httpx.post(url, json={"name": "x"}, headers=admin)
    assert missing_role.status_code == 422 and missing_role.json()["error"]["details"]["field"] == "role"
    extra = httpx.post(url, json={"name": "x", "role": "viewer", "key": "myd_mine"}, headers=admin)
    assert extra.status_code == 422 and extra.json()["error"]["details"]["field"] == "key"
    unknown = httpx.delete(url + "/nobody", headers=admin)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]["message"]
    assert httpx.get(url, headers=admin).json() == before  # nothing changed


@pytest.fixture(scope="module")
def anonymous_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        home=tmp_path_factory.mktemp("anonymous") / "home", port=free_port(), extra_args=["--anonymous-read"]
    )
    process.home.mkdir()
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_anonymous_read_is_off_by_default(server: ServerProcess) -> None:
    response = httpx.get(server.url + API + "/artifacts")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"


def test_with_anonymous_read_reads_need_no_key(anonymous_server: ServerProcess) -> None:
    for path in ("/artifacts", "/audit", "/deployments"):
        response = httpx.get(anonymous_server.url + API + path)
        assert response.status_code == 200, f"{path}: {response.text}"
    assert httpx.get(anonymous_server.url + API + "/keys").status_code in (401, 403)  # keys are not reading


def test_with_anonymous_read_writes_without_a_key_are_401(anonymous_server: ServerProcess) -> None:
    writes = [call for call in _api_calls(anonymous_server.home) if call.permission != "read"]
    assert writes
    for call in writes:
        response = _request(anonymous_server, call, {})
        assert response.status_code == 401, f"{call}: {response.status_code}"
        assert response.json()["error"]["code"] == "unauthenticated"
