"""Readiness: whether this proxy can take and run jobs now (for load balancers and
orchestrators; liveness is `GET /health`)."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from proxy.api.deps import ServicesDep
from proxy.services import Services

router = APIRouter(tags=["health"])


def run_problems(services: Services) -> list[str]:
    """Why jobs cannot run now, as far as the process itself knows: the seeds' health
    bodies say "degraded" when there is any. No database query: health is polled often and
    must stay cheap (readiness asks the database too)."""
    reasons: list[str] = []
    if not services.dispatcher.running:
        reasons.append("the dispatcher is not running")
    health = services.pool.health()
    if not health.up:
        reasons.append(f"no ComfyUI backend is up (0 of {health.total})")
    return reasons


@router.get("/ready", summary="Ready to take jobs (200), or why not (503)")
async def ready(services: ServicesDep) -> JSONResponse:
    """200 when the database answers, the dispatcher runs and at least one ComfyUI backend is
    up; otherwise 503 with the reasons."""
    reasons: list[str] = []
    try:
        async with services.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        reasons.append(f"the database does not answer ({type(exc).__name__})")
    reasons += run_problems(services)
    health = services.pool.health()
    body: dict[str, Any] = {
        "ready": not reasons,
        "reasons": reasons,
        "backends_up": health.up,
        "backends": health.total,
        "replica": services.replica,
    }
    return JSONResponse(body, status_code=503 if reasons else 200)
