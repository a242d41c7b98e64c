"""Job callbacks: a job's deliveries (every event sent to every target, with its attempts),
sending one again, and the signing secret receivers verify with (admins only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from proxy.api.auth import Admin, Caller
from proxy.api.deps import ServicesDep
from proxy.webhooks import WebhookService

router = APIRouter(prefix="/api", tags=["webhooks"])


async def get_webhooks(services: ServicesDep) -> WebhookService:
    return services.webhooks


WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]


@router.get("/jobs/{job_id}/webhooks", summary="A job's callback deliveries, newest first")
async def list_deliveries(
    job_id: str,
    services: ServicesDep,
    webhooks: WebhooksDep,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> dict[str, Any]:
    """Each delivery: its event, target URL, status (pending, delivered, failed), attempts,
    last status code and error, every attempt's outcome, and when it is tried next."""
    await services.jobs.get(job_id, caller)
    rows = await webhooks.deliveries(job_id, limit=limit, offset=offset)
    return {
        "deliveries": [row.view() for row in rows],
        "total": await webhooks.count(job_id),
        "limit": limit,
        "offset": offset,
    }


@router.post(
    "/jobs/{job_id}/webhooks/{delivery_id}/retry", summary="Send one callback delivery again"
)
async def retry_delivery(
    job_id: str, delivery_id: str, services: ServicesDep, webhooks: WebhooksDep, caller: Caller
) -> dict[str, Any]:
    """The delivery, pending and due now (same id and body; retried for another
    WEBHOOK_RETRY_HORIZON_S if it fails again)."""
    await services.jobs.get(job_id, caller)
    return (await webhooks.retry(job_id, delivery_id)).view()


@router.get("/webhooks/secret", summary="The secret callbacks are signed with (admins)")
async def signing_secret(webhooks: WebhooksDep, _admin: Admin) -> dict[str, Any]:
    """`whsec_...`, for a receiver's `standardwebhooks.Webhook(secret).verify(body, headers)`:
    WEBHOOK_SECRET, or the one the proxy made and keeps in its data folder."""
    return {
        "secret": await webhooks.signer.secret(),
        "source": "WEBHOOK_SECRET" if webhooks.signer.configured else "generated",
    }
