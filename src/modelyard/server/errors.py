"""One error body for every failure: `{"error": {"code", "message", "details"}}`.

modelyard's own errors carry their HTTP status (`modelyard.errors`); FastAPI's request validation
becomes 422 `invalid_input` naming the field; anything unexpected is a 500 with a request id and
no stack trace (the trace goes to the server log, never a key or a secret).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelyard.errors import ModelyardError

log = logging.getLogger("modelyard.server")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_input",
    429: "too_many_requests",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelyardError, _modelyard_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


async def _modelyard_error(request: Request, exc: ModelyardError) -> JSONResponse:
    details: dict[str, Any] = dict(exc.details)
    if exc.field:
        details["field"] = exc.field
    if exc.path:
        details["path"] = exc.path
    return error_response(exc.http_status, exc.code, exc.render(), details)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [_problem(error) for error in exc.errors()]
    first = problems[0] if problems else {"field": "(request)", "message": "invalid request"}
    message = f"field '{first['field']}': {first['message']}"
    return error_response(422, "invalid_input", message, {"field": first["field"], "problems": problems})


def _problem(error: dict[str, Any]) -> dict[str, str]:
    location = error.get("loc", ())
    if error.get("type") == "json_invalid":  # the location's last part is a byte offset, not a field
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return {"field": "body", "message": f"malformed JSON body at position {location[-1]}: {reason}"}
    field = ".".join(str(part) for part in location if part != "body") or "(request)"
    return {"field": field, "message": str(error.get("msg", ""))}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    response = error_response(exc.status_code, code, message)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = secrets.token_hex(6)
    log.error("request %s %s failed (id %s)", request.method, request.url.path, request_id, exc_info=exc)
    return error_response(500, "internal", f"internal error (request id {request_id}; see the server log)")
