"""Who is asking, and what they may see.

    API_KEYS=alice:k1,k2        user keys: `name:key`, or a bare key (named by its hash)
    ADMIN_API_KEYS=ops:k3       admin keys: everything, and the admin-only routes

A request names its key as `Authorization: Bearer <key>` or `X-API-Key: <key>` (what curl,
n8n and Zapier send), or carries the web UI's session cookie, which `POST /api/auth/login`
gives for a key. Keys are compared in constant time and never stored or logged: work is
recorded under the key's name (`Principal.owner`). With no key configured the proxy is open
and every caller is the same anonymous admin, as the seeds' examples expect.

The session cookie is `<name>.<expires>.<signature>`, signed with a secret kept in the data
folder; the signature covers a fingerprint of the key, so rotating or removing a key ends its
sessions.

A signed URL (`<path>?expires=<unix time>&sig=<name>.<signature>`) lets one GET of one path in
until it expires, as the key it was made for: what a tool that fetches a URL without headers
(Zapier's file fields, a browser's <video>) is given. It is signed like a session, so rotating
or removing that key ends its URLs too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from proxy.errors import ProxyError


class Unauthorized(ProxyError):
    status_code = 401


class Forbidden(ProxyError):
    status_code = 403


HOW_TO_SEND = (
    "send your API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
    "(the web UI asks for it once)"
)


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    name: str  # the key's name; "anonymous" on an open proxy
    admin: bool
    # "key" (a header), "session" (the web UI's cookie), "signed" (a signed URL) or "open"
    # (no keys configured).
    via: str
    # What this caller's work is recorded under: `key:<name>`, or on an open proxy the
    # client's address (so per-client limits still tell callers apart).
    owner: str = ""

    def __post_init__(self) -> None:
        if not self.owner:
            object.__setattr__(self, "owner", f"key:{self.name}")

    def can_see(self, owner: str | None) -> bool:
        return self.admin or owner == self.owner

    @property
    def scope(self) -> str | None:
        """The owner to filter lists by; None: everything (an admin, or an open proxy)."""
        return None if self.admin else self.owner


ANONYMOUS = Principal(name="anonymous", admin=True, via="open", owner="anonymous")


@dataclass(frozen=True)
class _Key:
    name: str
    secret: bytes
    admin: bool

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:16]


def _parse(entry: str, admin: bool) -> _Key:
    name, sep, key = entry.partition(":")
    if not sep:
        # A bare key is named by its hash: recognisable in logs, useless to an attacker.
        key, name = entry, f"key-{hashlib.sha256(entry.encode()).hexdigest()[:8]}"
    if not key or not name:
        raise ValueError(f"an API key entry is empty (give name:key or a key): {entry[:4]}…")
    return _Key(name=name.strip(), secret=key.strip().encode(), admin=admin)


class KeyRing:
    """The configured keys."""

    def __init__(self, user: list[str], admin: list[str]) -> None:
        keys = [_parse(e, False) for e in user] + [_parse(e, True) for e in admin]
        names = [k.name for k in keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"API key names must be unique: {', '.join(duplicates)}")
        self._keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def lookup(self, presented: str) -> Principal | None:
        """The principal of a presented key. Every key is compared, in constant time, so the
        answer's timing says nothing about which key came close."""
        candidate = presented.encode()
        found: _Key | None = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key.secret):
                found = key
        if found is None:
            return None
        return Principal(name=found.name, admin=found.admin, via="key")

    def by_name(self, name: str) -> _Key | None:
        return next((k for k in self._keys if k.name == name), None)


class Sessions:
    """The web UI's signed session cookies."""

    def __init__(self, keys: KeyRing, secret: bytes, ttl_s: float) -> None:
        self.keys = keys
        self._secret = secret
        self.ttl_s = ttl_s

    def rekey(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, key: _Key, expires: int) -> str:
        message = f"{key.name}.{expires}.{key.fingerprint}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, principal: Principal) -> str:
        key = self.keys.by_name(principal.name)
        if key is None:
            raise Unauthorized("unknown key")
        expires = int(time.time() + self.ttl_s)
        return f"{key.name}.{expires}.{self._sign(key, expires)}"

    def verify(self, cookie: str) -> Principal | None:
        parts = cookie.rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        name, expires_text, signature = parts
        key = self.keys.by_name(name)
        if key is None or int(expires_text) < time.time():
            return None
        if not hmac.compare_digest(signature, self._sign(key, int(expires_text))):
            return None
        return Principal(name=key.name, admin=key.admin, via="session")


@dataclass(frozen=True)
class SignedUrl:
    url: str  # the path with its `expires` and `sig` query
    expires_at: int  # unix time


class SignedUrls:
    """Download URLs that carry their own expiring proof (`expires`, `sig`)."""

    def __init__(self, keys: KeyRing, secret: bytes, ttl_s: float) -> None:
        self.keys = keys
        # Another use of the session secret: a purpose prefix keeps the two apart.
        self._secret = b"signed-url:" + secret
        self.ttl_s = ttl_s

    def rekey(self, secret: bytes) -> None:
        self._secret = b"signed-url:" + secret

    def _sign(self, key: _Key, path: str, expires: int) -> str:
        message = f"{path}\n{expires}\n{key.name}\n{key.fingerprint}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, path: str, key_name: str, now: float | None = None) -> SignedUrl | None:
        """`path` signed for the key named `key_name`; None when no such key is configured."""
        key = self.keys.by_name(key_name)
        if key is None:
            return None
        expires = int((time.time() if now is None else now) + self.ttl_s)
        sig = f"{key.name}.{self._sign(key, path, expires)}"
        return SignedUrl(f"{path}?{urlencode({'expires': expires, 'sig': sig})}", expires)

    def verify(self, path: str, expires: str, sig: str) -> Principal:
        """The principal a signed URL lets in; Unauthorized saying why it does not."""
        name, _, signature = sig.rpartition(".")
        key = self.keys.by_name(name) if name else None
        if key is None or not expires.isdigit():
            raise Unauthorized("This download link is not valid: " + HOW_TO_SEND)
        if not hmac.compare_digest(signature, self._sign(key, path, int(expires))):
            raise Unauthorized("This download link is not valid: " + HOW_TO_SEND)
        if int(expires) < time.time():
            raise Unauthorized(
                "This download link has expired: read the job's status again for a fresh one"
            )
        return Principal(name=key.name, admin=key.admin, via="signed")


def session_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, else one kept in the data folder (made once, owner-only)."""
    if configured:
        return configured.encode()
    path = data_dir / "session-secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        value = secrets.token_hex(32).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as handle:
            path.chmod(0o600)
            handle.write(value)
        return value


@dataclass(frozen=True)
class Auth:
    """The keys and the sessions, built once from the settings (a bad entry fails the start)."""

    keys: KeyRing
    sessions: Sessions
    urls: SignedUrls

    def rekey(self, secret: bytes) -> None:
        """Sign with another secret from now on (replicas share one kept in the database)."""
        self.sessions.rekey(secret)
        self.urls.rekey(secret)

    @classmethod
    def from_settings(
        cls,
        api_keys: list[str],
        admin_keys: list[str],
        secret: bytes,
        ttl_s: float,
        url_ttl_s: float = 24 * 3600,
    ) -> Auth:
        keys = KeyRing(api_keys, admin_keys)
        return cls(
            keys=keys,
            sessions=Sessions(keys, secret, ttl_s),
            urls=SignedUrls(keys, secret, url_ttl_s),
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class ExposureRefused(RuntimeError):
    """Serving this address without keys would open the GPUs to the network."""


def exposure_notice(host: str, keys_configured: bool, allow_no_auth: bool) -> str:
    """What to tell the operator at start about who can reach the proxy; raises
    ExposureRefused for a non-loopback address without keys (unless ALLOW_NO_AUTH=1)."""
    if keys_configured:
        return f"API keys required on every route (listening on {host})"
    if is_loopback(host):
        return (
            f"no API_KEYS configured: listening on {host} only, open to this machine's users. "
            "Set API_KEYS to serve other machines."
        )
    if not allow_no_auth:
        raise ExposureRefused(
            f"Refusing to listen on {host} without API keys: anyone who can reach it could use "
            "the GPUs, read every video and delete jobs. Set API_KEYS (and ADMIN_API_KEYS), or "
            "listen on 127.0.0.1, or set ALLOW_NO_AUTH=1 to accept the risk."
        )
    return (
        f"WARNING: listening on {host} with NO authentication (ALLOW_NO_AUTH=1): anyone who "
        "can reach this address can use it. Set API_KEYS to require keys."
    )
