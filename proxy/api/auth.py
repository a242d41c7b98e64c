"""Authentication on every surface: one dependency (`authenticate`) that every route of the
API depends on, the few routes that stay open, and the web UI's login and logout.

A request is let in by an API key in a header, by the session cookie, or (a GET of a
download) by a signed URL (`proxy.api.links`); a cookie-borne
request that changes something must come from this origin (a page elsewhere cannot make the
browser send it: SameSite=Strict, and Origin / Sec-Fetch-Site are checked besides).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, WebSocket, WebSocketException
from pydantic import Field
from starlette.requests import HTTPConnection

from proxy.api.surface import SurfaceBody
from proxy.auth import ANONYMOUS, HOW_TO_SEND, Forbidden, Principal, Unauthorized
from proxy.services import services_of

SESSION_COOKIE = "fastwan_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes anyone may call: liveness and readiness probes, and what the UI needs to log in.
# Logout too: it must be able to clear a cookie that no longer verifies.
OPEN_PATHS = frozenset({"/health", "/ready", "/api/auth/login", "/api/auth/logout", "/api/auth/me"})
# Websocket close code for a missing or unknown key (4000-4999 are the application's).
CLOSE_UNAUTHORIZED = 4401


def _presented_key(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("x-api-key")
    if header:
        return header.strip()
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _address(connection: HTTPConnection) -> str:
    return f"addr:{connection.client.host if connection.client else 'unknown'}"


def _same_origin(connection: HTTPConnection) -> bool:
    """Whether a browser says this request comes from a page of ours."""
    site = connection.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    # Behind a reverse proxy the public host is in X-Forwarded-Host (a page on another site
    # cannot add that header to a form post, nor to a fetch without our CORS consent).
    hosts = {connection.headers.get("host", ""), connection.headers.get("x-forwarded-host", "")}
    return origin.split("://", 1)[-1].rstrip("/") in hosts - {""}


def _route_path(connection: HTTPConnection) -> str | None:
    route = connection.scope.get("route")
    return getattr(route, "path", None)


def wants_html(connection: HTTPConnection) -> bool:
    """Browsers ask for text/html first; curl, requests and n8n send */* or JSON."""
    return "text/html" in connection.headers.get("accept", "")


async def _refuse(connection: HTTPConnection, message: str) -> Exception:
    if isinstance(connection, WebSocket):
        # Accepted first, so the client reads the close code (a refused handshake would only
        # say "403" and could not be told from any other refusal).
        await connection.accept()
        return WebSocketException(code=CLOSE_UNAUTHORIZED, reason=message[:120])
    return Unauthorized(message)


async def authenticate(connection: HTTPConnection) -> Principal:
    """The caller of this request; 401 (each surface in its own error shape, a websocket
    closed with 4401) without a valid key or session where keys are configured."""
    auth = services_of(connection).auth
    if not auth.keys.enabled:
        return Principal(ANONYMOUS.name, admin=True, via="open", owner=_address(connection))
    presented = _presented_key(connection)
    if presented is not None:
        principal = auth.keys.lookup(presented)
        if principal is None:
            raise await _refuse(connection, "Unknown API key: " + HOW_TO_SEND)
        return principal
    cookie = connection.cookies.get(SESSION_COOKIE)
    principal = auth.sessions.verify(cookie) if cookie else None
    if principal is not None:
        method = connection.scope.get("method", "GET")
        if connection.scope["type"] == "websocket" or method not in SAFE_METHODS:
            if not _same_origin(connection):
                raise Forbidden("Refused: a request from another site with this site's session")
        return principal
    sig = connection.query_params.get("sig")
    if sig is not None and connection.scope.get("method") in ("GET", "HEAD"):
        # A signed download URL: this one path, until it expires (proxy.api.links).
        expires = connection.query_params.get("expires", "")
        return auth.urls.verify(connection.scope["path"], expires, sig)
    path = _route_path(connection)
    if path in OPEN_PATHS or (path == "/" and wants_html(connection)):
        return Principal("guest", admin=False, via="open", owner="guest")
    what = "Your session has expired" if cookie else "An API key is required"
    raise await _refuse(connection, f"{what}: {HOW_TO_SEND}")


Caller = Annotated[Principal, Depends(authenticate)]


async def require_admin(caller: Caller) -> Principal:
    if not caller.admin:
        raise Forbidden("Only an admin key may do this (ADMIN_API_KEYS)")
    return caller


Admin = Annotated[Principal, Depends(require_admin)]

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Login(SurfaceBody):
    key: str = Field(min_length=1, max_length=1024, description="An API key")


@router.post("/login", summary="Log the web UI in with an API key (sets a session cookie)")
async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    """Exchanges a key for an HttpOnly, SameSite=Strict session cookie."""
    auth = services_of(request).auth
    if not _same_origin(request):
        raise Forbidden("Log in from this site's own page")
    principal = auth.keys.lookup(body.key.strip())
    if principal is None:
        raise Unauthorized("Unknown API key")
    response.set_cookie(
        SESSION_COOKIE,
        auth.sessions.issue(principal),
        max_age=int(auth.sessions.ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return {"name": principal.name, "admin": principal.admin}


@router.post("/logout", summary="End the web UI's session")
async def logout(request: Request, response: Response) -> dict[str, Any]:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return {"logged_out": True}


@router.get("/me", summary="Who this request is, and whether keys are required")
async def me(request: Request, caller: Caller) -> dict[str, Any]:
    required = services_of(request).auth.keys.enabled
    known = caller.via in ("key", "session") or not required
    return {
        "auth_required": required,
        "authenticated": known,
        "name": caller.name if known else None,
        "admin": caller.admin if known else False,
        "via": caller.via,
    }
