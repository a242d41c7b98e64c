"""The signing secret, and the headers that carry a signed callback.

Callbacks are signed as Standard Webhooks do it (the `standardwebhooks` package): HMAC-SHA256
over `<webhook-id>.<webhook-timestamp>.<body>` with the secret, sent as `webhook-signature:
v1,<base64>`; a receiver checks it with that package's `Webhook(secret).verify(body, headers)`.
The timestamp is the attempt's, so a retry hours later still passes the receiver's 5-minute
window; the id and the body are the same on every attempt.

The secret is WEBHOOK_SECRET (`whsec_<base64>`), or one made on first use and kept in the data
folder (`webhook-secret`, owner-only), so callbacks stay verifiable across restarts. Admins
read it at `GET /api/webhooks/secret`; the log names only the file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio.to_thread
from standardwebhooks import Webhook

from proxy import __version__

log = logging.getLogger("proxy.webhooks")

SECRET_FILE = "webhook-secret"
PREFIX = "whsec_"
USER_AGENT = f"fastwan-proxy/{__version__} (webhooks)"


class SecretError(ValueError):
    """WEBHOOK_SECRET (or the kept secret file) is not a usable signing secret."""


def parse_secret(value: str, where: str) -> Webhook:
    """The signer for `value`; SecretError naming `where` when it is not a secret."""
    body = value.strip().removeprefix(PREFIX).rstrip("=")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where} is not base64 after its {PREFIX} prefix") from None
    if len(key) < 16:
        raise SecretError(f"{where} holds {len(key)} bytes; use 24 to 64 random bytes")
    return Webhook(value.strip())


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _read_or_create(path: Path) -> tuple[str, bool]:
    """The secret kept at `path`, made (owner-only) if there is none; and whether it was
    made now. Blocking: run in a worker thread."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    value = new_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by someone else: theirs counts
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value, True


@dataclass(frozen=True)
class SignedHeaders:
    id: str
    timestamp: datetime
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            "webhook-id": self.id,
            "webhook-timestamp": str(int(self.timestamp.timestamp())),
            "webhook-signature": self.signature,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }


class Signer:
    """Holds the secret (configured, or kept in the data folder and made on first use)."""

    def __init__(self, configured: str | None, data_dir: Path) -> None:
        self.configured = configured
        self.path = data_dir / SECRET_FILE
        self._secret: str | None = None
        self._webhook: Webhook | None = None
        self._lock = asyncio.Lock()
        if configured:
            self._webhook = parse_secret(configured, "WEBHOOK_SECRET")
            self._secret = configured.strip()

    async def kept_locally(self) -> str:
        """The secret of the data folder (made now if there is none), configured or not."""
        value, _ = await anyio.to_thread.run_sync(_read_or_create, self.path)
        return value

    def use(self, value: str, where: str) -> None:
        """Sign with `value` (replicas share one, kept in the database) unless a secret is
        configured."""
        if self.configured:
            return
        self._webhook = parse_secret(value, where)
        self._secret = value.strip()

    async def secret(self) -> str:
        """The secret receivers verify with (made and kept now if there is none yet)."""
        await self._load()
        assert self._secret is not None
        return self._secret

    async def sign(self, msg_id: str, timestamp: datetime, body: str) -> SignedHeaders:
        await self._load()
        assert self._webhook is not None
        return SignedHeaders(msg_id, timestamp, self._webhook.sign(msg_id, timestamp, body))

    async def _load(self) -> None:
        if self._webhook is not None:
            return
        async with self._lock:
            if self._webhook is not None:
                return
            value, made = await anyio.to_thread.run_sync(_read_or_create, self.path)
            webhook = parse_secret(value, str(self.path))
            if made:
                log.info(
                    "webhooks: made a signing secret, kept in %s (WEBHOOK_SECRET unset; admins "
                    "read it at GET /api/webhooks/secret)",
                    self.path,
                )
            else:
                log.info("webhooks: signing with the secret kept in %s", self.path)
            self._secret, self._webhook = value, webhook
