"""One attempt to deliver a callback, and what its outcome makes of the outbox row.

A 2xx answer delivers it. Network errors, timeouts, 5xx and 429 are retried: after
`Retry-After` when the receiver says so, else after an exponential backoff with ±jitter
(WEBHOOK_RETRY_MIN_S doubling up to WEBHOOK_RETRY_MAX_S), until the delivery's horizon
(WEBHOOK_RETRY_HORIZON_S after its event; a last attempt is made at the horizon itself).
Any other answer fails it at once: a 4xx says the request will never be welcome, and a 3xx is
a redirect, which is not followed (a callback must not be steered to another host).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from proxy.webhooks.signing import Signer
from proxy.webhooks.store import LOG_SIZE, Delivery, DeliveryStatus

# Of a receiver's answer, only this much is kept (in `last_error` of a refusal).
SNIPPET_BYTES = 300
JITTER = 0.2


@dataclass(frozen=True)
class Backoff:
    min_s: float
    max_s: float
    jitter: float = JITTER

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """The wait after the `failures`-th failed attempt in a row."""
        doublings = min(max(failures - 1, 0), 60)
        base: float = min(self.max_s, self.min_s * 2.0**doublings)
        return min(self.max_s, base * rng.uniform(1 - self.jitter, 1 + self.jitter))


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    at: datetime
    duration_s: float
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    # A failure no retry can mend (a URL httpx refuses), though no answer came.
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.status_code is None:
            return not self.permanent  # the network, a timeout
        return self.status_code == 429 or self.status_code >= 500

    def log_entry(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": round(self.duration_s * 1000),
        }


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """A `Retry-After` header's wait: seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


async def _snippet(response: httpx.Response) -> str:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= SNIPPET_BYTES:
            break
    return data[:SNIPPET_BYTES].decode(errors="replace").strip()


def _refusal(response: httpx.Response, snippet: str) -> str:
    if 300 <= response.status_code < 400:
        where = response.headers.get("location", "?")
        return f"HTTP {response.status_code}: a redirect to {where} (redirects are not followed)"
    return f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")


async def attempt(
    client: httpx.AsyncClient, signer: Signer, delivery: Delivery, timeout_s: float, now: datetime
) -> Attempt:
    """POST the delivery once (signed now). Never raises for what the receiver or the network
    does: every such failure is in the returned Attempt."""
    headers = (await signer.sign(delivery.id, now, delivery.payload)).as_dict()
    started = time.monotonic()

    def done(**outcome: Any) -> Attempt:
        return Attempt(at=now, duration_s=time.monotonic() - started, **outcome)

    try:
        # httpx's timeout bounds each read; this bounds the whole exchange (a receiver that
        # trickles its answer byte by byte).
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "POST", delivery.target_url, content=delivery.payload.encode(), headers=headers
            ) as response:
                snippet = await _snippet(response)
    except (TimeoutError, httpx.TimeoutException):
        return done(error=f"timed out after {timeout_s:g} s")
    except httpx.InvalidURL as exc:
        return done(error=f"invalid URL: {exc}", permanent=True)
    except httpx.HTTPError as exc:
        return done(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    code = response.status_code
    if 200 <= code < 300:
        return done(status_code=code)
    wait = retry_after_s(response.headers.get("retry-after"), now)
    return done(status_code=code, error=_refusal(response, snippet), retry_after_s=wait)


def outcome_fields(
    delivery: Delivery, tried: Attempt, backoff: Backoff, rng: random.Random
) -> dict[str, Any]:
    """The outbox row's new values after `tried`."""
    log = [*delivery.attempt_log, tried.log_entry()][-LOG_SIZE:]
    fields: dict[str, Any] = {
        "attempts": delivery.attempts + 1,
        "last_status_code": tried.status_code,
        "last_error": tried.error,
        "attempt_log": log,
    }
    if tried.delivered:
        return {
            **fields,
            "status": DeliveryStatus.DELIVERED.value,
            "delivered_at": tried.at,
            "next_attempt_at": None,
        }
    if tried.retryable and tried.at < delivery.expires_at:
        failures = _failures_in_a_row(log)
        wait = tried.retry_after_s
        if wait is None:
            wait = backoff.delay_s(failures, rng)
        due = min(tried.at + timedelta(seconds=wait), delivery.expires_at)
        return {**fields, "status": DeliveryStatus.PENDING.value, "next_attempt_at": due}
    if tried.retryable:
        fields["last_error"] = f"{tried.error}; given up after {fields['attempts']} attempt(s)"
    return {**fields, "status": DeliveryStatus.FAILED.value, "next_attempt_at": None}


def _failures_in_a_row(log: list[dict[str, Any]]) -> int:
    count = 0
    for entry in reversed(log):
        code = entry.get("status_code")
        if code is not None and 200 <= code < 300:
            break
        count += 1
    return count
