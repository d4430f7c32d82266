"""What every page of the web UI shares: templates, who is looking, CSRF-checked forms, pagination
and error pages.

Pages read the session cookie themselves: without a session a page redirects to /login (an htmx
partial answers 401 with `HX-Redirect`), and every POST must carry the session's CSRF token
before its permission (`modelyard.access.PERMISSIONS`) is even looked at.
"""

from __future__ import annotations

import inspect
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelyard.access import PERMISSIONS, Principal
from modelyard.errors import AuthenticationError, ModelyardError, PermissionDeniedError
from modelyard.registry import Registry
from modelyard.server.security import ANONYMOUS, SESSION_COOKIE
from modelyard.server.ui.sessions import Sessions

log = logging.getLogger("modelyard.server.ui")

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
STATIC_DIR = Path(__file__).parent / "static"
PAGE_SIZE = 25
CSRF_FIELD = "csrf_token"
# Paths the UI owns: their errors render as pages, not as the API's JSON bodies.
UI_PREFIXES = ("/login", "/logout", "/artifacts", "/fleet", "/train", "/jobs", "/ui/")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

T = TypeVar("T")


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page: the principal, their session token and its CSRF token (both
    None for anonymous readers)."""

    principal: Principal
    token: str | None = None
    csrf: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.token is not None

    def can(self, permission: str) -> bool:
        return self.signed_in and self.principal.can(permission)

    def why_not(self, permission: str) -> str | None:
        """None when the viewer may; else the reason, for a disabled button."""
        if self.can(permission):
            return None
        holders = " or ".join(sorted(PERMISSIONS[permission]))
        who = "anonymous readers" if not self.signed_in else f"you are a {self.principal.role}"
        return f"needs the {holders} role ({who})"


class LoginRequired(Exception):
    """No session (or one that ended): the handler sends the browser to /login."""

    def __init__(self, next_path: str, ended: bool) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.ended = ended


# -- who is looking ----------------------------------------------------------------------------------


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def current_viewer(request: Request, *, allow_anonymous: bool = True) -> Viewer:
    """The session's viewer; anonymous when the server allows anonymous reads; else LoginRequired."""
    sessions = sessions_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        principal = sessions.principal(token)
        if principal is not None:
            return Viewer(principal, token, sessions.csrf_token(token))
        raise LoginRequired(_here(request), ended=True)
    if allow_anonymous and request.app.state.anonymous_read:
        return Viewer(ANONYMOUS)
    raise LoginRequired(_here(request), ended=False)


async def posted_form(request: Request, permission: str | None) -> tuple[Viewer, dict[str, str]]:
    """A POSTed form's fields, once the session, its CSRF token and the permission are checked."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    viewer = current_viewer(request, allow_anonymous=False)
    assert viewer.token is not None
    if not sessions_of(request).check_csrf(viewer.token, fields.get(CSRF_FIELD)):
        raise PermissionDeniedError(
            "this form's CSRF token is missing or does not match your session; "
            "reload the page and submit the form again"
        )
    if permission is not None:
        require(viewer, permission)
    return viewer, fields


def require(viewer: Viewer, permission: str) -> None:
    """PermissionDeniedError (a 403 page) unless the viewer's role holds `permission`."""
    if not viewer.principal.can(permission):
        principal = viewer.principal
        raise PermissionDeniedError(
            f"{principal.name} ({principal.role}) may not do this: it needs the '{permission}' permission, "
            f"which the {' or '.join(sorted(PERMISSIONS[permission]))} role holds"
        )


async def acting(request: Request, principal: Principal, work: Callable[[Registry], T]) -> T:
    """Run registry work in a worker thread, acting for `principal` (audit events name them)."""
    registry = registry_of(request)

    def run() -> T:
        with registry.acting_as(principal):
            return work(registry)

    return await run_in_threadpool(run)


def _here(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


def safe_next(value: str | None) -> str:
    """Only a local path to go back to after logging in (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


# -- rendering ---------------------------------------------------------------------------------------


def render(
    request: Request,
    template: str,
    viewer: Viewer | None,
    context: Mapping[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    values = {"viewer": viewer, "path": request.url.path, **(context or {})}
    response = TEMPLATES.TemplateResponse(request, template, values, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(url: str) -> Response:
    response = RedirectResponse(url, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def url_with(path: str, params: Mapping[str, Any]) -> str:
    kept = {key: value for key, value in params.items() if value not in (None, "")}
    return f"{quote(path)}?{urlencode(kept)}" if kept else quote(path)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def when(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed.strftime("%Y-%m-%d %H:%M UTC")
    return value.strftime("%Y-%m-%d %H:%M UTC")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


TEMPLATES.env.filters["size"] = human_size
TEMPLATES.env.filters["when"] = when
TEMPLATES.env.filters["pretty"] = pretty_json
TEMPLATES.env.globals["url_with"] = url_with
TEMPLATES.env.globals["CSRF_FIELD"] = CSRF_FIELD


# -- pagination -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pager:
    """One page of a long list: `number` counts from 1; `total` is None when unknown (the audit
    log is read one row past the page to tell whether another follows)."""

    number: int
    size: int
    total: int | None
    has_next: bool
    path: str
    params: Mapping[str, Any]
    param: str = "page"

    @classmethod
    def of(
        cls,
        request: Request,
        total: int | None,
        *,
        param: str = "page",
        size: int = PAGE_SIZE,
        has_next: bool | None = None,
        path: str | None = None,
    ) -> Pager:
        number = page_number(request, param)
        more = has_next if has_next is not None else total is not None and number * size < total
        return cls(number, size, total, more, path or request.url.path, dict(request.query_params), param)

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def pages(self) -> int | None:
        return None if self.total is None else max(1, -(-self.total // self.size))

    def url(self, number: int) -> str:
        return url_with(self.path, {**self.params, self.param: number if number > 1 else None})


def page_number(request: Request, param: str = "page") -> int:
    try:
        return max(1, min(int(request.query_params.get(param, "1")), 1_000_000))
    except ValueError:
        return 1


# -- errors as pages --------------------------------------------------------------------------------

_TITLES = {
    400: "Bad request",
    401: "Log in first",
    403: "Not allowed",
    404: "Not found",
    409: "Refused",
    413: "Too large",
    422: "Invalid input",
    500: "Internal error",
    503: "Unavailable",
}

Handler = Callable[[Request, Any], Awaitable[Response] | Response]


def is_page_request(request: Request) -> bool:
    path = request.url.path
    if path == "/" or path.startswith(UI_PREFIXES):
        return True
    return not path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int, message: str) -> Response:
    viewer = _viewer_or_none(request)
    context = {"title": _TITLES.get(status, "Error"), "status": status, "message": message}
    return render(request, "error.html", viewer, context, status_code=status)


def _viewer_or_none(request: Request) -> Viewer | None:
    try:
        return current_viewer(request)
    except (LoginRequired, ModelyardError):
        return None
    except Exception:  # the catalog itself is failing: the error page still renders
        return None


def install_error_pages(app: FastAPI) -> None:
    """UI paths render errors as pages (the message, never a stack trace); the API keeps its
    JSON bodies: each handler the app had is kept for every other path."""
    app.add_exception_handler(LoginRequired, _login_required)  # type: ignore[arg-type]
    for kind in (ModelyardError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _page_or(app.exception_handlers.get(kind)))


def _login_required(request: Request, exc: LoginRequired) -> Response:
    ended = "1" if exc.ended else None  # the login page shows its "session ended" notice for ended=1
    if request.headers.get("hx-request"):
        # A partial (/ui/catalog, the form's preview) is no page to come back to: the page showing it is.
        url = url_with("/login", {"next": _page_of(request.headers.get("hx-current-url")), "ended": ended})
        response = Response(status_code=401, headers={"HX-Redirect": url})
    else:
        url = url_with("/login", {"next": exc.next_path if request.method == "GET" else None, "ended": ended})
        response = redirect(url)
    if exc.ended:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _page_of(url: str | None) -> str | None:
    """The local path and query of the URL htmx says the browser shows (never another site)."""
    if not url:
        return None
    parts = urlsplit(url)
    path = f"{parts.path}?{parts.query}" if parts.query else parts.path
    return safe_next(path) if path.startswith("/") else None


def _page_or(original: Handler | None) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        if is_page_request(request) or original is None:
            return _as_page(request, exc)
        answer = original(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handle


def _as_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, AuthenticationError):
        return error_page(request, 401, exc.render())
    if isinstance(exc, ModelyardError):
        return error_page(request, exc.http_status, exc.render())
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()
        )
        return error_page(request, 422, problems or "invalid request")
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        return error_page(request, exc.status_code, detail)
    request_id = secrets.token_hex(6)
    log.error("page %s %s failed (id %s)", request.method, request.url.path, request_id, exc_info=exc)
    return error_page(request, 500, f"internal error (request id {request_id}; see the server log)")
