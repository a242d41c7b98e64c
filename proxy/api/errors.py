"""One place that maps the proxy's exception tree (and request validation) to HTTP answers.

Every error body carries `error` (a sentence a person can act on) and `detail` (the same, in
FastAPI's usual key), plus `field` when one request field is at fault, so scripts, n8n nodes
and the seed-002 clients (which read `error`) all find the message. Bad input is a 422, or
whatever the route's surface answers instead (`SeedRoute`: the Wan2.1 server's 400). Anything
unexpected is a 500 that says where the details are, never a traceback or a class name.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.api.auth import authenticate
from proxy.auth import Unauthorized
from proxy.errors import (
    InvalidInput,
    PromptRejected,
    ProxyError,
    storage_full,
)

log = logging.getLogger("proxy.api")

INTERNAL_ERROR = "Internal server error (the details are in the proxy's log)"
DATABASE_BUSY = (
    "The proxy's database is busy (every connection is in use): try again in a few seconds. "
    "If this persists, raise DB_POOL_SIZE / DB_MAX_OVERFLOW or poll less often"
)
# Seconds a client is asked to wait after a 503 for a busy database.
DATABASE_BUSY_RETRY_S = 2
STORAGE_FULL = (
    "The proxy's storage is full: free space in its data folder (DATA_DIR, OUTPUT_DIR), "
    "then try again"
)


class SeedRoute(APIRoute):
    """A route of a surface whose seed answers bad input with 400, not 422."""

    validation_status = 400


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "detail": message, **extra}


def field_name(loc: tuple[Any, ...] | list[Any], kind: str | None = None) -> str:
    """`("body", "width")` → `width`; nested locations are dotted. A body that is not JSON
    is the body's fault (its loc holds the offset of the error)."""
    if kind == "json_invalid":
        return "body"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form", "header")]
    return ".".join(parts) or "body"


def _problem(err: dict[str, Any]) -> str:
    kind = err.get("type")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of this request"
    if kind == "json_invalid":
        return "is not valid JSON"
    return str(err.get("msg", "invalid value")).removeprefix("Value error, ")


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    fields = [
        {"field": field_name(err.get("loc", ()), err.get("type")), "message": _problem(err)}
        for err in errors
    ]
    text = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return f"Invalid request: {text}", fields


def _validation_status(request: Request) -> int:
    return int(getattr(request.scope.get("route"), "validation_status", 422))


def install_error_handlers(
    app: FastAPI, on_database_error: Callable[[], None] = lambda: None
) -> None:
    """`on_database_error` is told of each SQLAlchemy error an answer reports (the app's
    metrics count them, so a failing database shows before anyone reads the log)."""

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        extra: dict[str, Any] = {k: v for k, v in exc.detail.items() if v is not None}
        headers = {}
        status = exc.status_code
        message = exc.message
        if isinstance(exc, InvalidInput):
            status = _validation_status(request)
            message = f"Invalid request: {exc.message}"
        retry_after = getattr(exc, "retry_after_s", None)  # TooManyJobs, NoBackend, a store
        if isinstance(retry_after, int | float) and status in (429, 503):
            headers["Retry-After"] = str(max(1, round(retry_after)))
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="fastwan-proxy"'

        if isinstance(exc, PromptRejected):
            extra = {"node_errors": exc.node_errors, "comfy_error": exc.error}
        if status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return JSONResponse(error_body(message, **extra), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI reads a declared body before the route's dependencies run: a caller without
        # a key learns that it needs one, not what is wrong with its body.
        check = request.app.dependency_overrides.get(authenticate, authenticate)
        try:
            checked = check(request) if check is authenticate else check()
            if inspect.isawaitable(checked):
                await checked
        except ProxyError as refused:
            return await _proxy_error(request, refused)
        message, fields = validation_message(list(exc.errors()))
        first = fields[0]["field"] if fields else None
        return JSONResponse(
            error_body(message, field=first, fields=fields),
            status_code=_validation_status(request),
        )

    # Its own handler, not a branch of `_unexpected`: a handler for `Exception` runs in
    # Starlette's outermost middleware, which re-raises after answering (a traceback per
    # request); this one answers and is done. No connection came free within
    # DB_POOL_TIMEOUT_S: the client can simply try again, so it is told to.
    @app.exception_handler(PoolTimeout)
    async def _database_busy(request: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("%s %s: database pool exhausted: %s", request.method, request.url.path, exc)
        on_database_error()
        return JSONResponse(
            error_body(DATABASE_BUSY),
            status_code=503,
            headers={"Retry-After": str(DATABASE_BUSY_RETRY_S)},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(error_body(message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, SQLAlchemyError):
            on_database_error()
        if storage_full(exc):
            log.error("%s %s: the storage is full: %s", request.method, request.url.path, exc)
            return JSONResponse(error_body(STORAGE_FULL), status_code=507)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(INTERNAL_ERROR), status_code=500)
