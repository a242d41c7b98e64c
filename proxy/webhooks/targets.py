"""Where callbacks may go, and which events a target asks for.

A target is an http(s) URL with a host and no credentials in it (a user name or password in
a callback URL ends up in logs and in the listing of deliveries); with WEBHOOK_ALLOWED_HOSTS
set, a caller's target must be on one of those hosts (`*.example.com` allows the subdomains
of example.com). The operator's own WEBHOOK_URL is checked for its shape only.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from proxy.errors import InvalidInput

STARTED = "job.started"
PROGRESS = "job.progress"
COMPLETED = "job.completed"
FAILED = "job.failed"
CANCELLED = "job.cancelled"

# Sent to every target, whatever it asks for.
TERMINAL = (COMPLETED, FAILED, CANCELLED)
# What a target may add.
OPTIONAL = (STARTED, PROGRESS)
EVENTS = (STARTED, PROGRESS, *TERMINAL)

MAX_URL_LENGTH = 2048


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a callback target, or None. Its host is not checked here."""
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    if any(c.isspace() for c in url):
        return "must not contain spaces"
    return None


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether `host` is one of `allowed` (case-insensitive; `*.domain` for its subdomains)."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def extra_events(events: Iterable[str] | None, field: str) -> tuple[str, ...]:
    """The optional events asked for (terminal ones are always sent); InvalidInput naming
    `field` for an event name that does not exist."""
    chosen: list[str] = []
    for event in events or ():
        if event not in EVENTS:
            raise InvalidInput(field, f"unknown event {event!r}; use any of {', '.join(EVENTS)}")
        if event in OPTIONAL and event not in chosen:
            chosen.append(event)
    return tuple(chosen)


def check_url(url: str, field: str, allowed_hosts: Iterable[str]) -> None:
    """InvalidInput naming `field` unless `url` is a target a caller may name."""
    problem = url_problem(url)
    if problem is not None:
        raise InvalidInput(field, problem)
    allowed = list(allowed_hosts)
    host = urlsplit(url).hostname or ""
    if allowed and not host_allowed(host, allowed):
        raise InvalidInput(
            field, f"host {host!r} is not one of the allowed hosts (WEBHOOK_ALLOWED_HOSTS)"
        )
