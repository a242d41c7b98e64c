"""Absolute and signed URLs in answers and callbacks.

Every video and status URL an answer carries is absolute: under PUBLIC_URL when it is
set, else under the address the request came to as its client sent it. Behind a reverse proxy
that address is in X-Forwarded-Proto / -Host, believed only from TRUSTED_PROXIES
(`ForwardedHeaders` puts them in place for the whole app, so the origin check of the web UI's
session and these URLs agree). A callback has no request: its URLs are under PUBLIC_URL, else
under the address of the request that asked for it.

With keys configured, an answer that carries a video's URL also carries a signed one
(`signed_url`, `signed_url_expires_at`): it fetches the video without headers until it expires
(SIGNED_URL_TTL_S), for tools that only take a URL (Zapier's file fields, an n8n download).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.api.auth import Caller
from proxy.auth import Principal, SignedUrls
from proxy.jobs.store import iso_utc
from proxy.services import services_of

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _first(value: bytes) -> str:
    return value.decode("latin-1").split(",")[0].strip()


class ForwardedHeaders:
    """The request as its client sent it, when a trusted reverse proxy says so: the scheme
    from X-Forwarded-Proto, the Host from X-Forwarded-Host, the client's address from
    X-Forwarded-For (the nearest address that is not a trusted proxy). From any other peer
    these headers change nothing."""

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app = app
        self.networks: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] not in ("http", "websocket") or not client or not self.networks:
            await self.app(scope, receive, send)
            return
        if not self._trusted(client[0]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scope = dict(scope)
        proto = _first(headers.get(b"x-forwarded-proto", b""))
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"
        host = headers.get(b"x-forwarded-host")
        if host and _first(host):
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"] + [
                (b"host", _first(host).encode("latin-1"))
            ]
        chain = headers.get(b"x-forwarded-for")
        if chain:
            hops = [hop.strip() for hop in chain.decode("latin-1").split(",") if hop.strip()]
            while hops and self._trusted(hops[-1]):
                hops.pop()
            if hops:
                scope["client"] = (hops[-1], 0)
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Links:
    """How one answer (or one callback) writes URLs."""

    base: str  # scheme://host[:port][/prefix], no trailing slash
    # None: no keys configured, nothing to sign (and no signed fields in answers).
    urls: SignedUrls | None = None
    caller: Principal | None = None

    def url(self, path: str) -> str:
        return self.base + path

    def maybe(self, path: str | None) -> str | None:
        return None if path is None else self.base + path

    def signed(self, path: str | None, owner: str | None, prefix: str = "") -> dict[str, Any]:
        """`signed_url` and `signed_url_expires_at` (after `prefix`) of a download, signed
        for the job's owner (else the caller); nothing at all when no keys are configured."""
        if self.urls is None:
            return {}
        signed = None
        if path is not None:
            if owner and owner.startswith("key:"):
                signed = self.urls.issue(path, owner.removeprefix("key:"))
            if signed is None and self.caller is not None and self.caller.via != "open":
                signed = self.urls.issue(path, self.caller.name)
        if signed is None:
            return {f"{prefix}signed_url": None, f"{prefix}signed_url_expires_at": None}
        return {
            f"{prefix}signed_url": self.base + signed.url,
            f"{prefix}signed_url_expires_at": iso_utc(
                datetime.fromtimestamp(signed.expires_at, UTC)
            ),
        }


def request_base(connection: HTTPConnection) -> str:
    """PUBLIC_URL, else the address this request came to (http/https, even on a websocket)."""
    public = services_of(connection).settings.public_url
    if public:
        return public
    base = str(connection.base_url).rstrip("/")
    if base.startswith("ws"):
        base = "http" + base.removeprefix("ws")
    return base


async def links_of(connection: HTTPConnection, caller: Caller) -> Links:
    auth = services_of(connection).auth
    return Links(request_base(connection), auth.urls if auth.keys.enabled else None, caller)


LinksDep = Annotated[Links, Depends(links_of)]
