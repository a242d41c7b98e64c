"""The long-lived things the lifespan owns, handed to routes through one dependency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request

from proxy.db import Database
from proxy.jobs.backends import BackendPool
from proxy.jobs.bus import EventBus
from proxy.jobs.dispatcher import Dispatcher
from proxy.jobs.service import JobService
from proxy.media.storage import OutputStore
from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry


@dataclass
class Services:
    settings: Settings
    db: Database
    http: httpx.AsyncClient
    registry: WorkflowRegistry
    bus: EventBus
    pool: BackendPool
    dispatcher: Dispatcher
    jobs: JobService
    outputs: OutputStore
    extras: dict[str, Any] = field(default_factory=dict)


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]
