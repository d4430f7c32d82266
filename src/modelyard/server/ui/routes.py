"""The web UI's pages: catalog, artifact, version (with promotion), fleet, learning form, login.

Server-rendered Jinja2 with htmx for the live parts (the catalog's filters, the learning form's
preview); every page also works as a plain form without JavaScript. Each handler calls the Python
API (`Registry`, `modelyard.training.form`) in process: no registry logic lives here.

`install(app)` is called by `modelyard.server.app` when this module exists.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, get_args

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from modelyard.distribute.report import current_deployments, status_markdown, status_matrix
from modelyard.domain import ListFilters, VersionRecord
from modelyard.errors import InvalidInputError, ModelyardError, PermissionDeniedError
from modelyard.manifest import NodeType
from modelyard.modelconfig import MODEL_TYPES
from modelyard.names import STAGES
from modelyard.registry import Registry
from modelyard.server.security import SESSION_COOKIE
from modelyard.server.ui import learning
from modelyard.server.ui.sessions import LOGIN_COOKIE, LOGIN_SECONDS, Sessions, load_or_create_secret, new_nonce
from modelyard.server.ui.web import (
    CSRF_FIELD,
    STATIC_DIR,
    Pager,
    Viewer,
    acting,
    current_viewer,
    install_error_pages,
    posted_form,
    redirect,
    registry_of,
    render,
    require,
    safe_next,
    sessions_of,
    url_with,
)

router = APIRouter(include_in_schema=False)

CATALOG_FILTERS = ("q", "type", "stage", "node_type", "base_model", "tag")
DONE_MESSAGES = {
    "validate": "Validation ran; its report is below.",
    "validated": "Promoted to validated: this is the new validated version.",
    "approve": "Approval recorded.",
    "production": "Promoted to production: this is the new production version.",
    "alias": "Alias set.",
    "alias-removed": "Alias removed.",
}


def install(app: FastAPI) -> None:
    """Add the UI to the server: sessions (`app.state.sessions`), pages, static files, error pages."""
    settings = app.state.settings
    secret = load_or_create_secret(settings.home)

    def lookup(key_digest: str) -> Any:
        registry: Registry = app.state.registry
        return registry.catalog.keys.principal(key_digest)

    app.state.sessions = Sessions(secret, lookup)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(router)
    install_error_pages(app)


# -- login, logout -------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request) -> Response:
    return _login_form(request, None, 200)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    key = str(form.get("key") or "").strip()
    sessions = sessions_of(request)
    if not sessions.check_login_csrf(request.cookies.get(LOGIN_COOKIE), str(form.get(CSRF_FIELD) or "")):
        raise PermissionDeniedError(
            "the login form's CSRF token is missing or has expired; reload the login page and try again"
        )
    next_path = safe_next(str(form.get("next") or "/"))
    if not key:
        return _login_form(request, "enter an API key (modelyard keys create --name NAME --role ROLE)", 422, next_path)
    opened = await run_in_threadpool(sessions.open, key, registry_of(request).authenticate)
    if opened is None:
        return _login_form(request, "unknown or revoked API key", 401, next_path)
    token, _principal = opened
    response = redirect(next_path)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=sessions.lifetime,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _login_form(request: Request, error: str | None, status: int, next_path: str | None = None) -> Response:
    nonce = new_nonce()
    context = {
        "error": error,
        "ended": request.query_params.get("ended") == "1",
        "next": safe_next(next_path or request.query_params.get("next")),
        "login_csrf": sessions_of(request).login_csrf_token(nonce),
    }
    response = render(request, "login.html", None, context, status)
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_SECONDS,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/logout")
def logout_page(request: Request) -> Response:
    viewer = current_viewer(request, allow_anonymous=False)
    return render(request, "logout.html", viewer)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await posted_form(request, None)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- catalog -------------------------------------------------------------------------------------------


@router.get("/")
def catalog_page(request: Request) -> Response:
    viewer = current_viewer(request)
    return render(request, "catalog.html", viewer, _catalog(request))


@router.get("/ui/catalog")
def catalog_results(request: Request) -> Response:
    viewer = current_viewer(request)
    response = render(request, "_catalog_results.html", viewer, _catalog(request))
    response.headers["HX-Push-Url"] = url_with("/", dict(request.query_params))  # the page's own URL
    return response


def _catalog(request: Request) -> dict[str, Any]:
    registry = registry_of(request)
    chosen = {name: (request.query_params.get(name) or "").strip() for name in CATALOG_FILTERS}
    _check_choice(chosen, "type", MODEL_TYPES)
    _check_choice(chosen, "stage", STAGES)
    _check_choice(chosen, "node_type", get_args(NodeType))
    filters = ListFilters(
        search=chosen["q"] or None,
        model_type=chosen["type"] or None,
        stage=chosen["stage"] or None,
        node_type=chosen["node_type"] or None,
        base_model=chosen["base_model"] or None,
        tag=chosen["tag"] or None,
    )
    total = registry.count(filters)
    pager = Pager.of(request, total, path="/")
    items = registry.list(filters, limit=pager.size, offset=pager.offset)
    return {
        "items": items,
        "total": total,
        "pager": pager,
        "chosen": chosen,
        "model_types": MODEL_TYPES,
        "stages": STAGES,
        "node_types": get_args(NodeType),
    }


def _check_choice(chosen: dict[str, str], name: str, allowed: tuple[str, ...]) -> None:
    """A select's value from a hand-written URL: an unknown one is refused, not silently matched by nothing."""
    value = chosen[name]
    if value and value not in allowed:
        raise InvalidInputError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}", field=name)


# -- an artifact ----------------------------------------------------------------------------------------


@router.get("/artifacts/{name}")
def artifact_page(name: str, request: Request) -> Response:
    viewer = current_viewer(request)
    registry = registry_of(request)
    filters = ListFilters(name=name)
    total = registry.count(filters, all_versions=True)
    if total == 0:
        registry.versions(name)  # NotFoundError naming the artifact
    pager = Pager.of(request, total)
    versions = registry.list(filters, all_versions=True, limit=pager.size, offset=pager.offset)
    events, events_pager = _events(request, registry, name)
    context = {
        "name": name,
        "versions": versions,
        "pager": pager,
        "aliases": registry.aliases(name),
        "deployments": current_deployments(registry.deployments(name)),
        "events": events,
        "events_pager": events_pager,
        "done": DONE_MESSAGES.get(request.query_params.get("done", "")),
    }
    return render(request, "artifact.html", viewer, context)


def _events(request: Request, registry: Registry, target: str) -> tuple[list[dict[str, object]], Pager]:
    """One page of the audit log (newest first), read one row past the page to see if more follow."""
    number = Pager.of(request, None, param="events").number
    size = 20
    rows = registry.audit(target, limit=number * size + 1)
    page = rows[(number - 1) * size : number * size]
    return page, Pager.of(request, None, param="events", size=size, has_next=len(rows) > number * size)


# -- a version -----------------------------------------------------------------------------------------


@router.get("/artifacts/{name}/versions/{ref}")
def version_page(name: str, ref: str, request: Request) -> Response:
    viewer = current_viewer(request)
    registry = registry_of(request)
    version = registry.show(f"{name}@{ref}")
    manifest = json.loads(version.manifest_json)
    files = version.manifest.files
    files_pager = Pager.of(request, len(files), param="files", size=50)
    config = registry.model_config(version.ref)
    compat, compat_note = _compat(registry, version.ref)
    lifecycle = registry.catalog.lifecycle
    events, events_pager = _events(request, registry, version.ref)
    context = {
        "version": version,
        "manifest": manifest,
        "manifest_json": version.manifest.to_json(),
        "files": files[files_pager.offset : files_pager.offset + files_pager.size],
        "files_pager": files_pager,
        "config": config.model_dump(mode="json") if config is not None else None,
        "compat": compat,
        "compat_note": compat_note,
        "lineage": registry.lineage(version.ref),
        "children": lifecycle.children(version),
        "reports": [_report(stored) for stored in reversed(lifecycle.reports(version))],
        "approvals": lifecycle.approvals(version),
        "status": lifecycle.status(version),
        "aliases": [a for a in registry.aliases(name) if a.version == version.ref],
        "deployments": [d for d in registry.deployments(name) if d.version_number == version.number],
        "events": events,
        "events_pager": events_pager,
        "checkpoints": _checkpoints(version),
        "done": DONE_MESSAGES.get(request.query_params.get("done", "")),
        "base": f"/artifacts/{name}/versions/{version.number}",
    }
    return render(request, "version.html", viewer, context)


def _compat(registry: Registry, ref: str) -> tuple[list[Any], str | None]:
    try:
        return registry.compat(ref), None
    except ModelyardError as exc:
        return [], exc.render()


def _report(stored: Any) -> dict[str, Any]:
    report = json.loads(stored.report_json)
    return {
        "id": stored.id,
        "checkpoint": stored.checkpoint,
        "passed": stored.passed,
        "actor": stored.actor,
        "created_at": stored.created_at,
        "checks": report.get("checks", []),
    }


def _checkpoints(version: VersionRecord) -> list[str]:
    from modelyard.lifecycle.checks import checkpoint_paths

    names = {posixpath.basename(path).split(".", 1)[0] for path in checkpoint_paths(version.manifest)}
    return sorted(names)


@router.post("/artifacts/{name}/versions/{ref}/validate")
async def validate(name: str, ref: str, request: Request) -> Response:
    viewer, fields = await posted_form(request, "validate")
    checkpoint = fields.get("checkpoint") or None
    outcome = await acting(request, viewer.principal, lambda r: r.validate(f"{name}@{ref}", checkpoint=checkpoint))
    return redirect(f"{_version_url(outcome.version)}?done=validate#reports")


@router.post("/artifacts/{name}/versions/{ref}/promote")
async def promote(name: str, ref: str, request: Request) -> Response:
    viewer, fields = await posted_form(request, None)
    to = fields.get("to") or ""
    if to not in ("validated", "production"):
        raise InvalidInputError(f"cannot promote to {to!r}; use validated or production", field="to")
    require(viewer, f"promote.{to}")
    reference = f"{name}@{ref}"
    if to == "validated":
        checkpoint = fields.get("checkpoint") or None
        promoted = await acting(request, viewer.principal, lambda r: r.promote(reference, to, checkpoint=checkpoint))
    else:
        semver = (fields.get("semver") or "").strip()
        if not semver:
            raise InvalidInputError("production promotion needs a semantic version, e.g. 1.0.0", field="semver")
        promoted = await acting(request, viewer.principal, lambda r: r.promote(reference, to, version=semver))
    return redirect(f"{_version_url(promoted)}?done={to}")


@router.post("/artifacts/{name}/versions/{ref}/approve")
async def approve(name: str, ref: str, request: Request) -> Response:
    viewer, fields = await posted_form(request, "approve")
    note = (fields.get("note") or "").strip() or None
    who = viewer.principal.name
    version = await acting(request, viewer.principal, lambda r: r.approve(f"{name}@{ref}", approved_by=who, note=note))
    return redirect(f"{_version_url(version)}?done=approve#approvals")


@router.post("/artifacts/{name}/versions/{ref}/alias")
async def set_alias(name: str, ref: str, request: Request) -> Response:
    viewer, fields = await posted_form(request, "alias")
    alias = (fields.get("alias") or "").strip()
    reason = (fields.get("reason") or "").strip() or None
    who = viewer.principal.name

    def move(registry: Registry) -> VersionRecord:
        registry.set_alias(f"{name}@{ref}", alias, approved_by=who, reason=reason)
        return registry.show(f"{name}@{ref}")

    version = await acting(request, viewer.principal, move)
    return redirect(f"{_version_url(version)}?done=alias")


@router.post("/artifacts/{name}/aliases/{alias}/remove")
async def remove_alias(name: str, alias: str, request: Request) -> Response:
    viewer, fields = await posted_form(request, "alias")
    reason = (fields.get("reason") or "").strip() or None
    who = viewer.principal.name
    await acting(request, viewer.principal, lambda r: r.remove_alias(name, alias, approved_by=who, reason=reason))
    return redirect(url_with(f"/artifacts/{name}", {"done": "alias-removed"}))


def _version_url(version: VersionRecord) -> str:
    from urllib.parse import quote

    return f"/artifacts/{quote(version.artifact_name)}/versions/{version.number}"


# -- fleet ------------------------------------------------------------------------------------------------


@router.get("/fleet")
def fleet_page(request: Request) -> Response:
    viewer = current_viewer(request)
    registry = registry_of(request)
    rows = registry.deployments()
    matrix = status_matrix(rows)
    artifacts = matrix["artifacts"]
    pager = Pager.of(request, len(artifacts))
    context = {
        "nodes": matrix["nodes"],
        "artifacts": artifacts[pager.offset : pager.offset + pager.size],
        "pager": pager,
        "checklist": status_markdown(registry, rows) if rows else None,
    }
    return render(request, "fleet.html", viewer, context)


# -- the learning form (seed 000 section 3) ---------------------------------------------------------------


@router.get("/train")
def train_page(request: Request) -> Response:
    viewer = current_viewer(request)
    registry = registry_of(request)
    values = {**learning.job_initial_values(), **learning.initial_values(request.query_params)}
    return render(request, "train.html", viewer, _train_context(registry, values, None))


@router.post("/ui/train/preview")
async def train_preview(request: Request) -> Response:
    viewer, fields = await posted_form(request, None)
    result = await run_in_threadpool(learning.preview_of, registry_of(request), fields)
    return render(request, "_train_preview.html", viewer, {"preview": result})


@router.post("/train")
async def save_definition(request: Request) -> Response:
    viewer, fields = await posted_form(request, "jobs.submit")
    principal = viewer.principal
    saved = await acting(request, principal, lambda r: learning.save_definition(r, fields, principal))
    context = await run_in_threadpool(_train_context, registry_of(request), fields, saved)
    return render(request, "train.html", viewer, context, 201 if saved.ok else 422)


def _train_context(registry: Registry, values: dict[str, str], saved: learning.SaveResult | None) -> dict[str, Any]:
    return {
        "sections": [*learning.sections(registry), learning.job_section()],
        "values": values,
        "preview": learning.preview_of(registry, values),
        "saved": saved,
        "definitions": learning.recent_definitions(registry),
    }


__all__ = ["Viewer", "install"]
