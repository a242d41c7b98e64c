"""One place that maps the proxy's exception tree (and request validation) to HTTP answers.

Every error body carries `error` (a sentence a person can act on) and `detail` (the same, in
FastAPI's usual key), plus `field` when one request field is at fault, so scripts, n8n nodes
and the seed-002 clients (which read `error`) all find the message.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.errors import PromptRejected, ProxyError, TooManyJobs

log = logging.getLogger("proxy.api")


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "detail": message, **extra}


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "width")` → `width`; nested locations are dotted."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form", "header")]
    return ".".join(parts) or "body"


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    fields = []
    for err in errors:
        name = field_name(err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        fields.append({"field": name, "message": msg})
    text = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return f"Invalid request: {text}", fields


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProxyError)
    async def _proxy_error(_request: Request, exc: ProxyError) -> JSONResponse:
        extra: dict[str, Any] = {k: v for k, v in exc.detail.items() if v is not None}
        headers = {}
        if isinstance(exc, TooManyJobs):
            headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, PromptRejected):
            extra = {"node_errors": exc.node_errors, "comfy_error": exc.error}
        if exc.status_code >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return JSONResponse(
            error_body(exc.message, **extra), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, fields = validation_message(list(exc.errors()))
        first = fields[0]["field"] if fields else None
        return JSONResponse(error_body(message, field=first, fields=fields), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(error_body(message), status_code=exc.status_code, headers=exc.headers)
