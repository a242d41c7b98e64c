"""The proxy's own exception tree. Lower-library errors are translated where they occur
(`proxy.comfy.client`), and `proxy.api.errors` maps this tree to HTTP status codes.

    ProxyError
    ├── NotFound                     404: no such job, batch, file, session
    ├── Conflict                     409: the job is not in a state that allows this
    ├── InvalidInput                 422: a request field is wrong (names the field)
    ├── TooManyJobs                  429: the client already has its maximum of active jobs
    ├── PayloadTooLarge              413: an upload over the limit
    ├── NoBackend                    503: no ComfyUI reachable for NO_BACKEND_TIMEOUT_S
    ├── LLMError                     502/503: prompt tools model missing or misbehaving
    └── ComfyError                   502/503: anything that went wrong talking to ComfyUI
        ├── ComfyUnavailable         503: the backend cannot be reached
        ├── ComfyProtocolError       502: the backend answered something we cannot read
        ├── PromptRejected           ComfyUI's 400 for /prompt: carries `error` and `node_errors`
        └── ComfyFileMissing         the output named in history cannot be fetched
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any


class ProxyError(Exception):
    """Base of every error the proxy raises on purpose."""

    status_code = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(ProxyError):
    status_code = 404


class Conflict(ProxyError):
    status_code = 409


class InvalidInput(ProxyError):
    """A request field is wrong; `field` names it (dotted path for nested ones)."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)
        self.field = field


class TooManyJobs(ProxyError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class PayloadTooLarge(ProxyError):
    status_code = 413


class NoBackend(ProxyError):
    """No ComfyUI has been reachable for NO_BACKEND_TIMEOUT_S: new jobs are refused (rather
    than queued into limbo) until one is back; `retry_after_s` says when to ask again."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class LLMError(ProxyError):
    status_code = 502


class LLMNotConfigured(LLMError):
    status_code = 503


class ComfyError(ProxyError):
    status_code = 502


class ComfyUnavailable(ComfyError):
    status_code = 503


class ComfyProtocolError(ComfyError):
    status_code = 502


class ComfyFileMissing(ComfyError):
    status_code = 502


class PromptRejected(ComfyError):
    """ComfyUI refused the graph (HTTP 400 from /prompt)."""

    status_code = 502

    def __init__(self, message: str, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        super().__init__(message, error=error, node_errors=node_errors)
        self.error = error
        self.node_errors = node_errors


def storage_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk is full: a file write (ENOSPC, EDQUOT), or SQLite's
    SQLITE_FULL through SQLAlchemy."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    orig = getattr(exc, "orig", exc)  # SQLAlchemy's DBAPIError wraps the driver's error
    return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
