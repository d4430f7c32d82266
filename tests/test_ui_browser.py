"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright, against a real
`modelyard serve` subprocess whose registry holds a few real versions, a deployment to a local node
and one key per role.

The learning form is checked live, as a user types (htmx), against seed 000's two mapping examples.
Every page is photographed under test-output/ui/ for review.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from conftest import RunBuilder, write_safetensors
from modelyard.access import ROLES
from modelyard.digest import training_config_hash
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry
from serverproc import ServerProcess, free_port

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-output" / "ui"
VISION = "vision-vit-base16-embed-v1"
LLM = "tiny-llm-v1"
AUDIO = "audio-wav2vec2-base-embed-v1"
FILLERS = 28  # with the three above: 31 artifacts, two catalog pages of 25
NODE = "edge1"
WAIT_MS = 20_000  # how long an expectation may wait for the page (the machine is shared and slow)
expect.set_options(timeout=WAIT_MS)

# Seed 000 section 3's examples: what the user enters, and what the seed says comes out.
VISION_INPUT = {
    "component": "vision",
    "base_model": "vit-base16",
    "task": "embed",
    "embedding_dim": "768",
    "precision": "fp16",
    "batch_size": "256",
    "epochs": "10",
}
VISION_MANIFEST: dict[str, Any] = {
    "base_model": "vit-base16",
    "task": "embed",
    "embedding_dim": 768,
    "precision": "fp16",
    "training_config_hash": training_config_hash({"batch_size": 256, "epochs": 10}),
}
GPT_INPUT = {
    "component": "inference",
    "base_model": "gpt-small-v1",
    "task": "lm-finetune",
    "max_seq_length": "1024",
    "learning_rate": "2e-5",
    "epochs": "3",
    "quantize": "int8",
}
GPT_HASH = training_config_hash({"learning_rate": 2e-5, "epochs": 3})
GPT_MANIFEST: dict[str, Any] = {
    "quantized": True,
    "precision": "int8",
    "input_spec": {"max_seq_length": 1024},
    "training_config_hash": GPT_HASH,
}


@dataclass
class Site:
    """The running server and one API key per role."""

    server: ServerProcess
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, path: str, role: str = "viewer") -> Any:
        response = httpx.get(self.url + "/api/v1" + path, headers=self.server.auth(self.keys[role]), timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


# -- the registry, the server and the browser ----------------------------------------------------------


def _populate(home: Path, work: Path) -> dict[str, str]:
    """Real versions through the Python API: a validated vision model, an LLM deployed to a local node,
    a validated audio model, and fillers enough for two catalog pages; one key per role."""
    runs = RunBuilder(work / "runs")
    with Registry.open(home) as registry:
        vision = RegisterOptions(
            artifact_name=VISION,
            component="vision",
            base_model="vit-base16",
            task="embed",
            embedding_dim=768,
            precision="fp16",
            node_type="encoder",
            train_data_tags=["imagenet-1k"],
        )
        registry.register(runs("vision", seed=1, manifest=_trained({"batch_size": 256, "epochs": 10})), vision)
        registry.promote(f"{VISION}@1", "validated")
        audio = RegisterOptions(artifact_name=AUDIO, component="audio", base_model="wav2vec2-base", task="embed")
        registry.register(runs("audio", seed=2, manifest=_trained({"batch_size": 64, "epochs": 5})), audio)
        registry.promote(f"{AUDIO}@1", "validated")
        registry.register(_llm_run(work / "llm"), RegisterOptions(node_type="inference", base_model="gpt-small-v1"))
        for number in range(FILLERS):
            filler = work / "fillers" / f"f{number}"
            write_safetensors(filler / "model.safetensors", seed=100 + number, shape=(4, 4))
            registry.register(filler, RegisterOptions(artifact_name=f"filler-{number:02d}-v1", inspect=False))
        _deploy(registry, home, work)
        return {role: registry.create_key(f"{role}-user", role)[1] for role in ROLES}


def _trained(training: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's manifest its training script writes."""
    return {"training_config": training, "training_config_hash": training_config_hash(training)}


def _llm_run(run: Path) -> Path:
    write_safetensors(run / "model.safetensors", seed=7, shape=(64, 32))
    config = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2}
    (run / "config.json").write_text(json.dumps(config))
    manifest = {"artifact_name": LLM, "train_data_tags": ["wiki-ko"]}
    (run / "artifact_manifest.json").write_text(json.dumps(manifest))
    return run


def _deploy(registry: Registry, home: Path, work: Path) -> None:
    """The LLM pushed to a `host: local` node: a real deployment record for the fleet matrix."""
    fleet = {"nodes": [{"name": NODE, "host": "local", "node_type": "inference", "models_root": str(work / NODE)}]}
    (home / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    plan = registry.plan_deployment([f"{LLM}@1={NODE}"], fleet=registry.fleet(), require_stage="any")
    report = registry.push(plan)
    assert report.ok, report


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("ui")
    home = work / "home"
    home.mkdir()
    keys = _populate(home, work)
    server = ServerProcess(home=home, port=free_port())
    server.start()
    try:
        yield Site(server, keys)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Session:
    """A browser context logged in (or not) with one key; it records every request it makes."""

    context: BrowserContext
    page: Page
    requests: list[str]
    console_errors: list[str]


def _session(browser: Browser, site: Site, role: str | None, **options: Any) -> Session:
    context = browser.new_context(**options)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    session = Session(context, page, requests, errors)
    if role is not None:
        _log_in(page, site, site.keys[role])
    return session


def _log_in(page: Page, site: Site, key: str) -> None:
    page.goto(site.url + "/login")
    page.fill("#key", key)
    page.click("form[action='/login'] button[type=submit]")
    expect(page.get_by_test_id("principal")).to_be_visible()


@pytest.fixture
def sessions(browser: Browser, site: Site) -> Iterator[list[Session]]:
    """Sessions a test opens (with `_session`), closed after it."""
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.context.close()


def _open(sessions: list[Session], browser: Browser, site: Site, role: str | None, **options: Any) -> Page:
    session = _session(browser, site, role, **options)
    sessions.append(session)
    return session.page


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _csrf(page: Page) -> str:
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token, "the page carries no CSRF token"
    return token


def _catalog_names(page: Page) -> list[str]:
    return page.locator("#results td[data-label=Artifact] a").all_inner_texts()


# -- logging in ------------------------------------------------------------------------------------------


def test_a_key_logs_in_to_a_session_cookie_that_never_holds_the_key(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, None)
    page.goto(site.url + f"/artifacts/{VISION}")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fartifacts%2F" + VISION))
    _shot(page, "login")

    page.fill("#key", "myd_" + "x" * 43)
    page.click("form[action='/login'] button[type=submit]")
    expect(page.get_by_test_id("login-error")).to_have_text("unknown or revoked API key")
    assert not [c for c in page.context.cookies() if c["name"] == "modelyard_session"]

    page.fill("#key", site.keys["viewer"])
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(site.url + f"/artifacts/{VISION}")  # back where the user was going
    expect(page.get_by_test_id("principal")).to_contain_text("viewer-user")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "modelyard_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert site.keys["viewer"] not in cookie["value"]

    page.click("header button:has-text('Log out')")
    expect(page).to_have_url(site.url + "/login")
    page.goto(site.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))


def test_revoking_the_key_ends_its_browser_session(browser: Browser, site: Site, sessions: list[Session]) -> None:
    key = site.server.key("viewer", name="short-lived")
    page = _open(sessions, browser, site, None)
    _log_in(page, site, key)
    revoked = httpx.delete(site.url + "/api/v1/keys/short-lived", headers=site.server.auth(site.keys["admin"]))
    assert revoked.status_code == 200, revoked.text
    page.goto(site.url + "/fleet")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ffleet&ended=1"))
    expect(page.get_by_role("status")).to_contain_text("Your session ended")


def test_a_session_ending_while_the_user_types_sends_them_to_log_in_and_back(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    key = site.server.key("viewer", name="typist")
    page = _open(sessions, browser, site, None)
    _log_in(page, site, key)
    page.goto(site.url + "/?stage=validated")
    revoked = httpx.delete(site.url + "/api/v1/keys/typist", headers=site.server.auth(site.keys["admin"]))
    assert revoked.status_code == 200, revoked.text
    page.locator("#q").press_sequentially("vision", delay=20)  # the live search finds the session gone
    expect(page).to_have_url(re.compile(r"/login\?next=%2F%3Fstage%3Dvalidated&ended=1$"))
    page.fill("#key", site.keys["viewer"])
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(site.url + "/?stage=validated")  # the page, not the partial it was updating
    expect(page.get_by_test_id("result-count")).to_have_text("2 artifacts")


# -- the catalog -------------------------------------------------------------------------------------------


def test_the_catalog_searches_and_filters_live(browser: Browser, site: Site, sessions: list[Session]) -> None:
    page = _open(sessions, browser, site, "viewer")
    page.goto(site.url + "/")
    count = page.get_by_test_id("result-count")
    expect(count).to_have_text(f"{FILLERS + 3} artifacts")

    page.locator("#q").press_sequentially("TINY", delay=40)  # the search is case-insensitive
    expect(count).to_have_text("1 artifact")
    assert _catalog_names(page) == [LLM]
    expect(page).to_have_url(site.url + "/?q=TINY")  # htmx pushed the page's own URL
    _shot(page, "catalog-search")

    choices = [
        ("select", "#type", "llm", [LLM]),
        ("select", "#type", "vision", [VISION]),
        ("select", "#stage", "validated", [AUDIO, VISION]),
        ("select", "#node_type", "encoder", [VISION]),
        ("text", "#base_model", "gpt-small-v1", [LLM]),
        ("text", "#tag", "imagenet-1k", [VISION]),
        ("text", "#tag", "wiki-ko", [LLM]),
    ]
    for kind, selector, value, expected in choices:
        page.goto(site.url + "/")
        expect(count).to_have_text(f"{FILLERS + 3} artifacts")
        if kind == "select":
            page.select_option(selector, value)
        else:
            page.fill(selector, value)
            page.press(selector, "Enter")
        expect(count).to_have_text(f"{len(expected)} artifact{'' if len(expected) == 1 else 's'}")
        assert _catalog_names(page) == expected, (selector, value)
        page.reload()  # the pushed URL renders the same filtered page
        assert _catalog_names(page) == expected
        expect(page.locator(selector)).to_have_value(value)

    page.goto(site.url + "/?stage=production&tag=imagenet-1k")
    expect(page.locator(".empty")).to_have_text("No artifact matches these filters.")
    page.goto(site.url + "/?stage=gold")
    expect(page.get_by_test_id("error-message")).to_contain_text("gold")
    _shot(page, "catalog-bad-filter")


def test_a_long_catalog_paginates_and_keeps_its_filter(browser: Browser, site: Site, sessions: list[Session]) -> None:
    page = _open(sessions, browser, site, "viewer")
    page.goto(site.url + "/")
    first = _catalog_names(page)
    assert len(first) == 25
    expect(page.locator(".pager span")).to_have_text("page 1 of 2")
    _shot(page, "catalog")
    page.click("a[rel=next]")
    expect(page).to_have_url(site.url + "/?page=2")
    second = _catalog_names(page)
    assert len(second) == FILLERS + 3 - 25 and not set(first) & set(second)
    assert first + second == sorted(first + second)  # by name, nothing skipped or repeated
    page.click("a[rel=prev]")
    assert _catalog_names(page) == first

    page.fill("#q", "filler")
    expect(page.get_by_test_id("result-count")).to_have_text(f"{FILLERS} artifacts")
    # The search may fire again (input, then change) on a loaded machine: let every swap land first.
    page.wait_for_load_state("networkidle")
    page.click("a[rel=next]")
    expect(page).to_have_url(site.url + "/?q=filler&page=2")
    assert _catalog_names(page) == [f"filler-{n:02d}-v1" for n in range(25, FILLERS)]


# -- an artifact and its versions -------------------------------------------------------------------------


def test_the_artifact_and_version_pages_show_what_the_catalog_knows(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "viewer")
    page.goto(site.url + "/")
    page.fill("#q", "vision")
    page.click(f"#results a:text-is('{VISION}')")
    expect(page).to_have_url(site.url + f"/artifacts/{VISION}")
    versions = page.locator("#versions td[data-label=Version]").all_inner_texts()
    assert versions[-2:] == [f"{VISION}@2", f"{VISION}@1"]
    expect(page.locator("#audit")).to_contain_text("promote:validated")
    _shot(page, "artifact")

    page.click(f"#versions a:text-is('{VISION}@2')")
    expect(page.get_by_test_id("stage")).to_have_text("validated")
    manifest = page.locator("#manifest")
    for key, value in [("base_model", "vit-base16"), ("task", "embed"), ("embedding_dim", "768")]:
        expect(manifest.locator(f"dd[data-field={key}]")).to_have_text(value)
    expect(manifest.locator("dd[data-field=train_data_tags]")).to_have_text("imagenet-1k")
    expect(page.locator("#config")).to_contain_text("vision")
    files = page.locator("#files td[data-label=Path]").all_inner_texts()
    assert "model.safetensors" in files and "validation/test_results.json" in files
    expect(page.locator("#compat tr.yes td[data-label=Runtime]")).to_have_text(["pytorch"])
    expect(page.locator("#lineage li.current")).to_contain_text(f"{VISION}@2")
    _shot(page, "version-validated")

    # A file link downloads through the session (no key in the browser), with its digest as the ETag.
    row = page.locator("#files tr", has=page.locator("a:text-is('model.safetensors')"))
    link = row.locator("a")
    digest = row.locator("td[data-label='SHA-256']").get_attribute("title")
    download = page.request.get(site.url + str(link.get_attribute("href")))
    assert download.status == 200 and download.headers["etag"] == f'"{digest}"'

    page.click(f"#lineage a:text-is('{VISION}@1')")
    expect(page.get_by_test_id("stage")).to_have_text("raw")
    report = page.locator("#reports details.report").first
    expect(report.locator(".verdict")).to_have_text("passed")
    expect(report).to_contain_text("manifest_complete")
    expect(page.locator("#lineage li.child")).to_contain_text(f"{VISION}@2")
    _shot(page, "version-raw")

    page.goto(site.url + f"/artifacts/{LLM}/versions/1")
    expect(page.locator("#config")).to_contain_text("llama")
    deployed = page.locator("#deployments tbody tr")
    expect(deployed).to_have_count(1)
    expect(deployed.locator("td[data-label=Node]")).to_have_text(NODE)
    expect(deployed.locator(".dstatus")).to_have_text("activated")
    expect(page.locator("#audit")).to_contain_text("deploy.activated")
    _shot(page, "version-deployed")

    page.goto(site.url + "/artifacts/no-such-model-v1")
    expect(page.get_by_test_id("error-message")).to_contain_text("no-such-model-v1")
    _shot(page, "not-found")


# -- the learning form ---------------------------------------------------------------------------------------


def _fill_form(page: Page, values: dict[str, str]) -> None:
    """Enter the values as a user would: choose from selects, type into inputs key by key."""
    for name, value in values.items():
        field = page.locator(f"#f-{name}")
        if field.evaluate("element => element.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.press_sequentially(value, delay=20)


def _preview_manifest(page: Page) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(page.get_by_test_id("manifest").inner_text())
    return manifest


def _api_preview(site: Site, form: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        site.url + "/api/v1/training/preview", json=form, headers=site.server.auth(site.keys["trainer"]), timeout=30
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _overflow(page: Page) -> tuple[int, int]:
    """The page's scroll width and the window's width: equal unless the page scrolls sideways."""
    widths = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    return int(widths[0]), int(widths[1])


def _check_example(page: Page, site: Site, name: str, expected: dict[str, Any], api_form: dict[str, Any]) -> None:
    # The last field typed changes the hash, so a preview showing the expected hash saw every field.
    expect(page.get_by_test_id("config-hash")).to_have_text(expected["training_config_hash"])
    expect(page.get_by_test_id("artifact-name")).to_have_text(name)
    scroll_width, width = _overflow(page)
    assert scroll_width <= width, f"the preview widens the page to {scroll_width} px"
    manifest = _preview_manifest(page)
    for key, value in expected.items():
        assert manifest.get(key) == value, f"{key}: {manifest.get(key)!r} != {value!r}"
    assert manifest["artifact_name"] == name
    api = _api_preview(site, api_form)  # programs get the same answer as the page
    assert (api["artifact_name"], api["manifest"], api["training_config_hash"]) == (
        name,
        manifest,
        expected["training_config_hash"],
    )


def test_the_learning_form_previews_seed_000s_examples_as_the_user_types(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "trainer")
    page.goto(site.url + "/train")
    expect(page.get_by_test_id("missing")).to_contain_text("component")
    _fill_form(page, {"component": "vision", "base_model": "vit-base16"})
    expect(page.get_by_test_id("missing")).to_have_text("Fill in task to see the artifact name.")
    _fill_form(page, {key: value for key, value in VISION_INPUT.items() if key not in ("component", "base_model")})
    api_form = {**VISION_INPUT, "embedding_dim": 768, "batch_size": 256, "epochs": 10}
    _check_example(page, site, VISION, VISION_MANIFEST, {**api_form, "quantize": False})
    _shot(page, "train-vision")

    page.goto(site.url + "/train")
    _fill_form(page, GPT_INPUT)
    api_form = {**GPT_INPUT, "max_seq_length": 1024, "learning_rate": 2e-5, "epochs": 3}
    _check_example(page, site, "gpt-small-v1-lm-finetune-int8-v1", GPT_MANIFEST, api_form)
    _shot(page, "train-gpt-int8")

    # Changing a field changes the preview live: without quantization the name loses its -int8.
    page.select_option("#f-quantize", "")
    expect(page.get_by_test_id("artifact-name")).to_have_text("gpt-small-v1-lm-finetune-v1")


def test_the_learning_form_names_a_field_out_of_range_and_saves_nothing(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "trainer")
    before = len(site.api("/training/definitions"))
    page.goto(site.url + "/train")
    _fill_form(page, {**VISION_INPUT, "epochs": "0"})
    problems = page.locator("#preview .problems")
    expect(problems).to_contain_text("epochs")
    expect(page.get_by_test_id("artifact-name")).to_have_count(0)
    _shot(page, "train-out-of-range")
    page.click("button:has-text('Save job definition')")
    expect(page.get_by_test_id("save-error")).to_contain_text("epochs")
    assert len(site.api("/training/definitions")) == before


def test_the_learning_form_saves_a_job_definition(browser: Browser, site: Site, sessions: list[Session]) -> None:
    page = _open(sessions, browser, site, "trainer")
    page.goto(site.url + "/train")
    _fill_form(page, {**GPT_INPUT, "name": "gpt-int8-nightly"})
    page.locator("#f-timeout_seconds").fill("3600")  # replaces the default, 86400
    expect(page.get_by_test_id("artifact-name")).to_have_text("gpt-small-v1-lm-finetune-int8-v1")
    page.click("button:has-text('Save job definition')")
    saved = page.get_by_test_id("saved")
    expect(saved).to_contain_text("gpt-small-v1-lm-finetune-int8-v1")
    expect(saved).to_contain_text(GPT_HASH)
    expect(page.locator("#definitions")).to_contain_text("gpt-int8-nightly")
    _shot(page, "train-saved")
    (record,) = [d for d in site.api("/training/definitions") if d["name"] == "gpt-int8-nightly"]
    assert record["artifact_name"] == "gpt-small-v1-lm-finetune-int8-v1"
    assert record["training_config_hash"] == GPT_HASH
    assert record["created_by"] == "trainer-user"
    definition = record["definition"]
    assert definition["timeout_seconds"] == 3600 and definition["run"] == {
        "kind": "builtin",
        "trainer": "tiny-classifier",
    }
    assert definition["quantize"] == "int8" and definition["max_seq_length"] == 1024


def test_a_viewer_cannot_save_a_job_definition(browser: Browser, site: Site, sessions: list[Session]) -> None:
    page = _open(sessions, browser, site, "viewer")
    before = len(site.api("/training/definitions"))
    page.goto(site.url + "/train")
    _fill_form(page, VISION_INPUT)
    expect(page.get_by_test_id("artifact-name")).to_have_text(VISION)  # the preview is a read
    save = page.locator("button:has-text('Save job definition')")
    expect(save).to_be_disabled()
    expect(page.locator("#save-why")).to_contain_text("needs the admin or trainer role")
    fields: dict[str, str | float | bool] = {**VISION_INPUT, "run_kind": "builtin", "trainer": "tiny-classifier"}
    forced = page.request.post(site.url + "/train", form={**fields, "csrf_token": _csrf(page)})
    assert forced.status == 403 and "jobs.submit" in forced.text()
    assert len(site.api("/training/definitions")) == before


# -- promotion, approval and aliases ---------------------------------------------------------------------


def test_an_approver_approves_and_promotes_to_production_then_moves_champion(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "approver")
    page.goto(site.url + f"/artifacts/{VISION}/versions/validated")
    expect(page.get_by_test_id("stage")).to_have_text("validated")
    page.fill("#approve-note", "eval set looks good")
    page.click("button:has-text('Approve')")
    expect(page.get_by_test_id("done")).to_have_text("Approval recorded.")
    expect(page.get_by_test_id("approval")).to_contain_text("approver-user")
    expect(page.get_by_test_id("approval")).to_contain_text("eval set looks good")
    _shot(page, "version-approved")

    page.fill("#semver", "1.0.0")
    page.click("button:has-text('Promote to production')")
    expect(page.get_by_test_id("done")).to_have_text("Promoted to production: this is the new production version.")
    expect(page).to_have_url(re.compile(rf"/artifacts/{VISION}/versions/3\?done=production$"))
    expect(page.get_by_test_id("stage")).to_have_text("production")
    _shot(page, "version-production")
    production = site.api(f"/artifacts/{VISION}/versions/production")
    assert production["ref"] == f"{VISION}@3" and production["semantic_version"] == "1.0.0"
    approvals = site.api(f"/artifacts/{VISION}/versions/2/approvals")
    assert [a["approved_by"] for a in approvals] == ["approver-user"]  # the key's owner

    page.fill("#alias", "champion")
    page.fill("#alias-reason", "best of the quarter")
    page.click("button:has-text('Set alias')")
    expect(page.get_by_test_id("done")).to_have_text("Alias set.")
    assert [(a["alias"], a["ref"]) for a in site.api(f"/artifacts/{VISION}/aliases")] == [("champion", f"{VISION}@3")]

    # `production` is no free alias: it moves only by promotion, even for an approver.
    page.fill("#alias", "production")
    page.click("button:has-text('Set alias')")
    expect(page.get_by_test_id("error-message")).to_contain_text("'production' is reserved")
    assert site.api(f"/artifacts/{VISION}/versions/production")["ref"] == f"{VISION}@3"
    _shot(page, "alias-reserved")

    page.goto(site.url + f"/artifacts/{VISION}")
    page.click("button:has-text('Remove champion')")
    expect(page.get_by_role("status")).to_have_text("Alias removed.")
    assert site.api(f"/artifacts/{VISION}/aliases") == []


def test_production_needs_an_approval_on_record_and_a_semantic_version(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "approver")
    page.goto(site.url + f"/artifacts/{AUDIO}/versions/2")
    page.fill("#semver", "1.0.0")
    page.click("button:has-text('Promote to production')")
    expect(page.get_by_test_id("error-message")).to_contain_text("approv")
    _shot(page, "promote-unapproved")
    page.goto(site.url + f"/artifacts/{AUDIO}/versions/2")
    forced = page.request.post(
        site.url + f"/artifacts/{AUDIO}/versions/2/promote", form={"to": "production", "csrf_token": _csrf(page)}
    )
    assert forced.status == 422 and "semantic version" in forced.text()
    assert [v["stage"] for v in site.api(f"/artifacts/{AUDIO}")["versions"]] == ["validated", "raw"]


@pytest.mark.parametrize("role", ["trainer", "viewer"])
def test_without_the_role_promotion_and_alias_controls_are_disabled_and_refused(
    browser: Browser, site: Site, sessions: list[Session], role: str
) -> None:
    approver = site.server.auth(site.keys["approver"])
    moved = httpx.put(site.url + f"/api/v1/artifacts/{AUDIO}/aliases/champion", json={"version": "2"}, headers=approver)
    assert moved.status_code == 200, moved.text
    page = _open(sessions, browser, site, role)
    base = f"/artifacts/{AUDIO}/versions/2"
    page.goto(site.url + base)
    for label in ("Approve", "Promote to production", "Set alias"):
        expect(page.locator(f"button:has-text('{label}')")).to_be_disabled()
    expect(page.locator("#promote-production-why")).to_contain_text(
        f"needs the admin or approver role (you are a {role})"
    )
    _shot(page, f"version-as-{role}")
    token = _csrf(page)
    hand_crafted = [
        (base + "/approve", {"note": "sneaky"}, "approve"),
        (base + "/promote", {"to": "production", "semver": "9.0.0"}, "promote.production"),
        (base + "/alias", {"alias": "champion"}, "alias"),
        (f"/artifacts/{AUDIO}/aliases/champion/remove", {}, "alias"),
        (base + "/alias", {"alias": "production"}, "alias"),
    ]
    for path, form, permission in hand_crafted:
        response = page.request.post(site.url + path, form={**form, "csrf_token": token}, max_redirects=0)
        assert response.status == 403, (path, response.status)
        assert f"'{permission}' permission" in html.unescape(response.text())
    page.goto(site.url + f"/artifacts/{AUDIO}")
    expect(page.locator("button:has-text('Remove champion')")).to_be_disabled()
    assert site.api(f"/artifacts/{AUDIO}/versions/2/approvals") == []
    assert [v["stage"] for v in site.api(f"/artifacts/{AUDIO}")["versions"]] == ["validated", "raw"]
    assert [(a["alias"], a["ref"]) for a in site.api(f"/artifacts/{AUDIO}/aliases")] == [("champion", f"{AUDIO}@2")]


def test_a_trainer_validates_a_raw_version_and_a_failing_gate_refuses_its_promotion(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "trainer")
    page.goto(site.url + f"/artifacts/{LLM}/versions/1")
    page.click("button:has-text('Validate')")
    expect(page.get_by_test_id("done")).to_have_text("Validation ran; its report is below.")
    report = page.locator("#reports details.report").first
    expect(report).to_contain_text("by trainer-user")
    expect(report.locator(".verdict")).to_have_text("FAILED")  # its manifest has no training_config_hash
    expect(report).to_contain_text("training_config_hash")
    _shot(page, "version-failed-report")
    page.click("button:has-text('Promote to validated')")
    expect(page.get_by_test_id("error-message")).to_contain_text("did not pass its gates")
    assert [v["stage"] for v in site.api(f"/artifacts/{LLM}")["versions"]] == ["raw"]


# -- the fleet -------------------------------------------------------------------------------------------------


def test_the_fleet_page_shows_the_artifacts_by_nodes_matrix(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "viewer")
    page.goto(site.url + "/")
    page.click("nav a:text-is('Fleet')")
    matrix = page.get_by_test_id("matrix")
    expect(matrix.locator("thead th")).to_have_text(["Artifact", NODE])
    row = matrix.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("th")).to_have_text(LLM)
    cell = row.locator(f"td[data-label={NODE}]")
    expect(cell.locator(".dstatus")).to_have_text("activated")
    expect(cell.locator(".check-passed")).to_have_count(4)  # files_present, load, sha256, sizes
    expect(page.get_by_test_id("checklist")).to_contain_text(f"{LLM} → {NODE} (activated)")
    _shot(page, "fleet")
    cell.locator(f"a:text-is('{LLM}@1')").click()
    expect(page).to_have_url(site.url + f"/artifacts/{LLM}/versions/1")


# -- phones, and no CDN ------------------------------------------------------------------------------------


PAGES = {
    "catalog": "/",
    "artifact": f"/artifacts/{VISION}",
    "version": f"/artifacts/{VISION}/versions/2",
    "version-deployed": f"/artifacts/{LLM}/versions/1",
    "fleet": "/fleet",
    "train": "/train",
}


def test_pages_fit_a_phone_screen_without_sideways_scrolling(
    browser: Browser, site: Site, sessions: list[Session]
) -> None:
    page = _open(sessions, browser, site, "approver", viewport={"width": 390, "height": 844}, is_mobile=True)
    for name, path in PAGES.items():
        page.goto(site.url + path)
        scroll_width, width = _overflow(page)
        _shot(page, f"phone-{name}")
        assert width == 390 and scroll_width <= width, f"{path} is {scroll_width} px wide on a 390 px screen"
    # A table row is a card: each cell's value flows beside its label, on one line when it fits.
    page.goto(site.url + "/fleet")
    cell = page.locator(f"[data-testid=matrix] td[data-label={NODE}]")
    status, link = cell.locator(".dstatus").bounding_box(), cell.locator("a").bounding_box()
    assert status and link and abs(status["y"] - link["y"]) < status["height"], (status, link)


def test_pages_load_nothing_from_outside_the_server(browser: Browser, site: Site, sessions: list[Session]) -> None:
    page = _open(sessions, browser, site, "trainer")
    session = sessions[-1]
    for path in PAGES.values():
        page.goto(site.url + path)
        assert page.evaluate("typeof htmx") == "object", f"htmx did not load on {path}"
    assert page.url.endswith("/train")  # the last page: its live preview is an htmx request
    _fill_form(page, {"component": "vision", "base_model": "vit-base16", "task": "embed"})
    expect(page.get_by_test_id("artifact-name")).to_have_text(VISION)
    page.goto(site.url + "/")
    page.fill("#q", "tiny")
    expect(page.get_by_test_id("result-count")).to_have_text("1 artifact")  # an htmx request too
    assert session.requests and all(url.startswith(site.url + "/") for url in session.requests), [
        url for url in session.requests if not url.startswith(site.url + "/")
    ]
    assert any(url.endswith("/ui/static/htmx.min.js") for url in session.requests)
    assert any("/ui/catalog?" in url for url in session.requests)
    assert any(url.endswith("/ui/train/preview") for url in session.requests)
    assert session.console_errors == []  # no blocked script or style (CSP), no missing resource
