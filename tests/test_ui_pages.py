"""The web UI over plain HTTP (no browser): logging in, CSRF tokens on every form, what a request
without a session gets, error pages and security headers, against a real `modelyard serve`."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import httpx
import pytest

from conftest import RunBuilder
from modelyard.access import ROLES
from modelyard.digest import training_config_hash
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry
from serverproc import ServerProcess, free_port

NAME = "vision-vit-base16-embed-v1"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]*)"')
VISION_FORM = {"component": "vision", "base_model": "vit-base16", "task": "embed", "batch_size": "256", "epochs": "10"}


@dataclass
class Site:
    """The running server and one API key per role."""

    server: ServerProcess
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module", name="site")
def site_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server whose registry holds one validated version (NAME@2), with one key per role."""
    work = tmp_path_factory.mktemp("ui-pages")
    process = ServerProcess(home=work / "home", port=free_port())
    process.home.mkdir()
    training = {"batch_size": 256, "epochs": 10}
    manifest = {"training_config": training, "training_config_hash": training_config_hash(training)}
    with Registry.open(process.home) as registry:
        run = RunBuilder(work / "runs")("vision", manifest=manifest)
        registry.register(run, RegisterOptions(artifact_name=NAME, base_model="vit-base16", task="embed"))
        registry.promote(f"{NAME}@1", "validated")
        keys = {role: registry.create_key(f"{role}-user", role)[1] for role in ROLES}
    process.start()
    try:
        yield Site(process, keys)
    finally:
        process.stop()


def _client(site: Site) -> httpx.Client:
    return httpx.Client(base_url=site.url, timeout=30, follow_redirects=False)


def _token(page: httpx.Response) -> str:
    found = CSRF_INPUT.search(page.text)
    assert found, f"no CSRF token in {page.url}"
    return found.group(1)


def _logged_in(site: Site, role: str) -> httpx.Client:
    client = _client(site)
    login_page = client.get("/login")
    answer = client.post("/login", data={"key": site.keys[role], "csrf_token": _token(login_page), "next": "/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    assert "modelyard_session" in client.cookies
    return client


def _approvals(site: Site) -> list[object]:
    response = httpx.get(
        site.url + f"/api/v1/artifacts/{NAME}/versions/2/approvals", headers=site.server.auth(site.keys["viewer"])
    )
    assert response.status_code == 200
    approvals: list[object] = response.json()
    return approvals


def _definitions(site: Site) -> int:
    response = httpx.get(site.url + "/api/v1/training/definitions", headers=site.server.auth(site.keys["viewer"]))
    assert response.status_code == 200
    return len(response.json())


def _message(response: httpx.Response) -> str:
    found = re.search(r'data-testid="error-message">([^<]*)<', response.text)
    assert found, response.text[:500]
    return html.unescape(found.group(1))


# -- logging in ------------------------------------------------------------------------------------------


def test_the_login_form_refuses_a_missing_wrong_or_unbound_csrf_token(site: Site) -> None:
    key = site.keys["viewer"]
    with _client(site) as client:
        token = _token(client.get("/login"))
        for fields in ({"key": key}, {"key": key, "csrf_token": "0" * 64}, {"key": key, "csrf_token": token + "x"}):
            refused = client.post("/login", data=fields)
            assert refused.status_code == 403 and "CSRF token" in _message(refused)
            assert "modelyard_session" not in client.cookies
    with _client(site) as stranger:  # a token copied from another browser: no login cookie to match
        refused = stranger.post("/login", data={"key": key, "csrf_token": token})
        assert refused.status_code == 403 and "modelyard_session" not in stranger.cookies


def test_the_login_form_names_a_missing_or_unknown_key_and_never_leaves_the_site(site: Site) -> None:
    with _client(site) as client:
        empty = client.post("/login", data={"key": " ", "csrf_token": _token(client.get("/login"))})
        assert empty.status_code == 422 and "enter an API key" in empty.text
        wrong = client.post("/login", data={"key": "myd_nope", "csrf_token": _token(client.get("/login"))})
        assert wrong.status_code == 401 and "unknown or revoked API key" in wrong.text
        assert "modelyard_session" not in client.cookies
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            fields = {"key": site.keys["viewer"], "csrf_token": _token(client.get("/login")), "next": target}
            answer = client.post("/login", data=fields)
            assert answer.status_code == 303 and answer.headers["location"] == "/", target


# -- CSRF on every form ------------------------------------------------------------------------------------


def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    approve = f"/artifacts/{NAME}/versions/2/approve"
    with closing(_logged_in(site, "approver")) as client, closing(_logged_in(site, "approver")) as other:
        own = _token(client.get(f"/artifacts/{NAME}/versions/2"))
        others = _token(other.get(f"/artifacts/{NAME}/versions/2"))
        assert own != others  # a token belongs to one session, not to the key
        for token in (None, "", "f" * 64, others):
            fields = {"note": "forged"} if token is None else {"note": "forged", "csrf_token": token}
            refused = client.post(approve, data=fields)
            assert refused.status_code == 403, (token, refused.status_code)
            assert "CSRF token is missing or does not match your session" in _message(refused)
        assert _approvals(site) == []
        accepted = client.post(approve, data={"note": "real", "csrf_token": own})  # the same form, with its token
        assert accepted.status_code == 303 and accepted.headers["location"].endswith("?done=approve#approvals")
        assert [a["approved_by"] for a in _approvals(site)] == ["approver-user"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("role", "path", "fields"),
    [
        ("trainer", "/train", {**VISION_FORM, "run_kind": "builtin", "trainer": "tiny-classifier"}),
        ("viewer", "/ui/train/preview", VISION_FORM),
        ("approver", f"/artifacts/{NAME}/versions/2/alias", {"alias": "champion"}),
        ("approver", f"/artifacts/{NAME}/versions/2/promote", {"to": "production", "semver": "1.0.0"}),
        ("trainer", f"/artifacts/{NAME}/versions/1/validate", {}),
        ("approver", f"/artifacts/{NAME}/aliases/champion/remove", {}),
        ("viewer", "/logout", {}),
    ],
)
def test_every_form_wants_the_csrf_token(site: Site, role: str, path: str, fields: dict[str, str]) -> None:
    definitions = _definitions(site)
    with closing(_logged_in(site, role)) as client:
        refused = client.post(path, data={**fields, "csrf_token": "not-the-token"})
        assert refused.status_code == 403 and "CSRF token" in _message(refused)
        assert client.get("/").status_code == 200  # still logged in: a refused logout ended nothing
    assert _definitions(site) == definitions
    version = httpx.get(
        site.url + f"/api/v1/artifacts/{NAME}/versions/production", headers=site.server.auth(site.keys["viewer"])
    )
    assert version.status_code == 404  # nothing was promoted


# -- without a session --------------------------------------------------------------------------------------


def test_without_a_session_pages_redirect_to_login_and_forms_change_nothing(site: Site) -> None:
    approvals = _approvals(site)
    with _client(site) as client:
        page = client.get(f"/artifacts/{NAME}?page=2")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fartifacts%2F" + NAME + "%3Fpage%3D2"
        posted = client.post(f"/artifacts/{NAME}/versions/2/approve", data={"note": "x", "csrf_token": "x"})
        assert posted.status_code == 303 and posted.headers["location"] == "/login"
        # htmx is told to send the browser to log in, and back to the page it shows (not the partial).
        shown = {"HX-Request": "true", "HX-Current-URL": site.url + "/?q=vit&page=2"}
        partial = client.get("/ui/catalog?q=vit&page=2", headers=shown)
        assert partial.status_code == 401 and partial.headers["hx-redirect"] == "/login?next=%2F%3Fq%3Dvit%26page%3D2"
        elsewhere = {"HX-Request": "true", "HX-Current-URL": "https://evil.example//evil.example/x"}
        preview = client.post("/ui/train/preview", data={"csrf_token": "x"}, headers=elsewhere)
        assert preview.status_code == 401 and preview.headers["hx-redirect"] == "/login?next=%2F"
        client.cookies.set("modelyard_session", "forged.token")
        forged = client.get("/fleet")
        assert forged.status_code == 303 and forged.headers["location"] == "/login?next=%2Ffleet&ended=1"
    assert _approvals(site) == approvals


# -- what every page carries --------------------------------------------------------------------------------


def test_pages_send_security_headers_and_api_paths_keep_json_errors(site: Site) -> None:
    with closing(_logged_in(site, "viewer")) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        missing = client.get("/artifacts/nope-v1")
        assert missing.status_code == 404 and "nope-v1" in _message(missing)
        assert "Traceback" not in missing.text
    api = httpx.get(site.url + "/api/v1/artifacts/nope-v1", headers=site.server.auth(site.keys["viewer"]))
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "field"), [("stage=gold", "stage"), ("type=toaster", "type"), ("node_type=kitchen", "node_type")]
)
def test_an_unknown_catalog_filter_is_refused_naming_it(site: Site, query: str, field: str) -> None:
    with closing(_logged_in(site, "viewer")) as client:
        for path in ("/", "/ui/catalog"):
            refused = client.get(f"{path}?{query}")
            assert refused.status_code == 422
            message = _message(refused)
            assert f"unknown {field} " in message and "use one of" in message
