"""Training jobs over real HTTP: `/api/v1/jobs` on a `modelyard serve` subprocess, a real
`modelyard worker` on the same registry home, the web UI's job pages (plain HTTP for the forms and
their CSRF checks, headless Chromium for the live log tail).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serverproc import ServerProcess
from test_jobs_queue import _CLI, WAIT, command_job, stop

API = "/api/v1"
ARTIFACT = "vision-vit-base16-embed-v1"
CHROMIUM = "/usr/bin/chromium"


def _worker(server: ServerProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLI, "worker", "--poll-interval", "0.2", *args],
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        stop(process)


def _until(server: ServerProcess, key: str, job_id: int, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        body: dict[str, Any] = httpx.get(f"{server.url}{API}/jobs/{job_id}", headers=server.auth(key)).json()
        if body["status"] == wanted:
            return body
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not become {wanted}")


def test_a_job_submitted_over_http_runs_and_its_log_is_read_by_offset(
    server: ServerProcess, workers: list[Any]
) -> None:
    trainer = server.key("trainer", name="tina")
    viewer = server.key("viewer", name="vic")
    script = "print('step 1', flush=True)\nprint('step 2', flush=True)\n"
    created = httpx.post(server.url + API + "/jobs", json=command_job(script), headers=server.auth(trainer))
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["id"], body["status"], body["submitted_by"], body["artifact_name"]) == (1, "queued", "tina", ARTIFACT)
    listed = httpx.get(server.url + API + "/jobs", headers=server.auth(viewer)).json()
    assert listed["total"] == 1 and [j["id"] for j in listed["items"]] == [1]
    queued = httpx.get(server.url + API + "/jobs?status=queued&submitted_by=tina", headers=server.auth(viewer))
    assert queued.json()["total"] == 1
    assert httpx.get(server.url + API + "/jobs?status=running", headers=server.auth(viewer)).json()["total"] == 0

    workers.append(_worker(server, "--name", "http-worker"))
    done = _until(server, viewer, 1, "succeeded")
    assert done["registered"] == [f"{ARTIFACT}@1"] and done["worker"] == "http-worker" and done["attempt"] == 1
    version = httpx.get(f"{server.url}{API}/artifacts/{ARTIFACT}/versions/1", headers=server.auth(viewer)).json()
    assert version["manifest"]["training_config_hash"] == done["training_config_hash"]

    whole = httpx.get(f"{server.url}{API}/jobs/1/log", headers=server.auth(viewer))
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/plain")
    assert "step 1\nstep 2\n" in whole.text and whole.headers["x-log-complete"] == "true"
    size = len(whole.content)
    assert int(whole.headers["x-log-next-offset"]) == size
    start = whole.content.index(b"step 2")
    part = httpx.get(f"{server.url}{API}/jobs/1/log?offset={start}", headers=server.auth(viewer))
    assert part.text.startswith("step 2\n") and int(part.headers["x-log-next-offset"]) == size
    past = httpx.get(f"{server.url}{API}/jobs/1/log?offset={size + 100}", headers=server.auth(viewer))
    assert past.text == "" and past.headers["x-log-next-offset"] == str(size + 100)


def test_trainers_cancel_their_own_jobs_and_only_admins_anyone_s(server: ServerProcess) -> None:
    alice, bob = server.key("trainer", name="alice"), server.key("trainer", name="bob")
    viewer, admin = server.key("viewer", name="vera"), server.key("admin", name="ada")

    def submit(key: str) -> int:
        response = httpx.post(server.url + API + "/jobs", json=command_job("print(1)"), headers=server.auth(key))
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def cancel(job_id: int, key: str) -> httpx.Response:
        return httpx.post(f"{server.url}{API}/jobs/{job_id}/cancel", headers=server.auth(key))

    first, second = submit(alice), submit(alice)
    refused = cancel(first, bob)
    assert refused.status_code == 403 and "'jobs.cancel.any'" in refused.json()["error"]["message"]
    refused = cancel(first, viewer)
    assert refused.status_code == 403 and "'jobs.submit'" in refused.json()["error"]["message"]
    assert httpx.post(f"{server.url}{API}/jobs/{first}/cancel").status_code == 401
    still = httpx.get(f"{server.url}{API}/jobs/{first}", headers=server.auth(viewer)).json()
    assert still["status"] == "queued" and still["cancel_requested"] is False

    own = cancel(first, alice)
    assert own.status_code == 200 and own.json()["status"] == "cancelled"
    assert own.json()["message"] == "cancelled by alice before it started"
    anyones = cancel(second, admin)
    assert anyones.status_code == 200 and anyones.json()["cancel_requested_by"] == "ada"
    again = cancel(second, admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert cancel(99, admin).status_code == 404


def test_bad_input_is_a_422_naming_the_field_and_nothing_is_queued(server: ServerProcess) -> None:
    trainer = server.auth(server.key("trainer"))

    def field_of(response: httpx.Response) -> str:
        assert response.status_code == 422, response.text
        return str(response.json()["error"]["details"]["field"])

    post = server.url + API + "/jobs"
    assert field_of(httpx.post(post, json=command_job("1", colour="blue"), headers=trainer)) == "colour"
    assert field_of(httpx.post(post, json=command_job("1", batch_size=0), headers=trainer)) == "batch_size"
    assert field_of(httpx.post(post, json=command_job("1", epochs="3"), headers=trainer)) == "epochs"
    assert field_of(httpx.post(post, json=command_job("1", timeout_seconds=0), headers=trainer)) == "timeout_seconds"
    assert field_of(httpx.post(post, json=command_job("1", task="segmentation"), headers=trainer)) == "task"
    no_run = {key: value for key, value in command_job("1").items() if key != "run"}
    assert field_of(httpx.post(post, json=no_run, headers=trainer)) == "run"
    dp = command_job("1", privacy_level="dp")
    assert field_of(httpx.post(post, json=dp, headers=trainer)) == "dp"
    assert field_of(httpx.get(post + "?status=done", headers=trainer)) == "query.status"
    assert field_of(httpx.get(post + "?limit=0", headers=trainer)) == "query.limit"
    assert field_of(httpx.get(post + "/0", headers=trainer)) == "path.job_id"
    assert field_of(httpx.get(post + "/x/log", headers=trainer)) == "path.job_id"
    assert field_of(httpx.get(post + "/1/log?offset=-1", headers=trainer)) == "query.offset"
    assert httpx.get(post + "/1", headers=trainer).status_code == 404
    assert httpx.get(post, headers=trainer).json()["total"] == 0


def test_a_saved_definition_is_queued_by_id(server: ServerProcess) -> None:
    trainer = server.auth(server.key("trainer", name="tom"))
    saved = httpx.post(
        server.url + API + "/training/definitions", json=command_job("print(1)", name="nightly"), headers=trainer
    )
    assert saved.status_code == 201, saved.text
    queued = httpx.post(f"{server.url}{API}/training/definitions/{saved.json()['id']}/jobs", headers=trainer)
    assert queued.status_code == 201, queued.text
    body = queued.json()
    assert body["definition_id"] == saved.json()["id"] and body["submitted_by"] == "tom"
    assert body["definition"]["name"] == "nightly" and body["artifact_name"] == saved.json()["artifact_name"]
    assert httpx.post(f"{server.url}{API}/training/definitions/9/jobs", headers=trainer).status_code == 404


# -- the web UI ------------------------------------------------------------------------------------------


def _ui_client(server: ServerProcess, key: str) -> httpx.Client:
    """A client logged in through the login form (its CSRF nonce cookie and token)."""
    client = httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=60)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    logged_in = client.post("/login", data={"key": key, "csrf_token": token[1], "next": "/jobs"})
    assert logged_in.status_code == 303, logged_in.text
    return client


def _csrf(page: str) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    return token[1]


def test_the_job_pages_list_show_run_and_cancel_with_csrf(server: ServerProcess) -> None:
    trainer_key, other_key = server.key("trainer", name="tess"), server.key("trainer", name="otto")
    saved = httpx.post(
        server.url + API + "/training/definitions", json=command_job("print(1)"), headers=server.auth(trainer_key)
    )
    assert saved.status_code == 201
    with (
        contextlib.closing(_ui_client(server, trainer_key)) as tess,
        contextlib.closing(_ui_client(server, other_key)) as otto,
    ):
        listing = tess.get("/jobs")
        assert listing.status_code == 200 and "Run a saved job definition" in listing.text
        forged = tess.post("/jobs/run", data={"definition_id": "1", "csrf_token": "forged"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        run = tess.post("/jobs/run", data={"definition_id": "1", "csrf_token": _csrf(listing.text)})
        assert run.status_code == 303 and run.headers["location"] == "/jobs/1?done=submitted"
        page = tess.get("/jobs/1?done=submitted")
        assert page.status_code == 200 and "Job queued" in page.text and ARTIFACT in page.text
        assert 'action="/jobs/1/cancel"' in page.text and '<button type="submit">Cancel job</button>' in page.text
        assert 'hx-get="/ui/jobs/1/log?offset=0"' in page.text

        theirs = otto.get("/jobs/1")  # another trainer sees why the button is disabled
        assert "only tess (who submitted it) or an admin may cancel it" in theirs.text
        refused = otto.post("/jobs/1/cancel", data={"csrf_token": _csrf(theirs.text)})
        assert refused.status_code == 403 and "jobs.cancel.any" in refused.text

        bad = tess.post("/jobs/run", data={"definition_id": "zero", "csrf_token": _csrf(listing.text)})
        assert bad.status_code == 422 and "definition_id" in bad.text
        assert tess.get("/jobs?status=done").status_code == 422
        assert tess.get("/jobs/77").status_code == 404

        cancelled = tess.post("/jobs/1/cancel", data={"csrf_token": _csrf(page.text)})
        assert cancelled.status_code == 303 and cancelled.headers["location"] == "/jobs/1?done=cancelled"
        ended = tess.get("/jobs/1")
        assert 'data-testid="status">cancelled<' in ended.text and 'action="/jobs/1/cancel"' not in ended.text
        fragment = tess.get("/ui/jobs/1/log?offset=0", headers={"hx-request": "true"})
        assert fragment.status_code == 200 and 'data-testid="log-done"' in fragment.text
        assert 'id="job-facts" hx-swap-oob="true"' in fragment.text
        assert "cancelled" in tess.get("/jobs?status=cancelled").text
    anonymous = httpx.get(server.url + "/jobs", headers={"accept": "text/html"})
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


def test_the_job_page_follows_the_log_live_in_a_browser(server: ServerProcess, workers: list[Any]) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    key = server.key("trainer", name="live")
    # The job prints a line, then waits for a file the test creates once the page shows that line.
    script = (
        "import os, pathlib, time\n"
        "run = pathlib.Path(os.environ['MODELYARD_RUN_DIR'])\n"
        "print('first line', flush=True)\n"
        "while not (run / 'go').exists():\n"
        "    time.sleep(0.1)\n"
        "print('second line', flush=True)\n"
    )
    created = httpx.post(server.url + API + "/jobs", json=command_job(script), headers=server.auth(key))
    assert created.status_code == 201
    workers.append(_worker(server, "--name", "live-worker"))
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT * 1000)
            page.goto(server.url + "/login")
            page.fill("#key", key)
            page.click("form[action='/login'] button[type=submit]")
            page.goto(server.url + "/jobs/1")
            expect = playwright_api.expect
            expect(page.get_by_test_id("log")).to_contain_text("first line", timeout=WAIT * 1000)
            expect(page.get_by_test_id("status")).to_have_text("running")
            run_dir = httpx.get(f"{server.url}{API}/jobs/1", headers=server.auth(key)).json()["run_dir"]
            (Path(run_dir) / "go").write_text("")
            expect(page.get_by_test_id("log")).to_contain_text("second line", timeout=WAIT * 1000)
            expect(page.get_by_test_id("status")).to_have_text("succeeded", timeout=WAIT * 1000)
            expect(page.get_by_test_id("registered")).to_contain_text(f"{ARTIFACT}@1")
            expect(page.get_by_test_id("log-done")).to_be_attached()
            assert page.get_by_test_id("log").inner_text().count("first line") == 1  # appended, not repeated
        finally:
            browser.close()
