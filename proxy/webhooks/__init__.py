"""Job callbacks (webhooks): signed POSTs of job events, through a durable outbox.

    service.py   WebhookService: job events → outbox rows; what the surfaces and routes call
    targets.py   event names, and which URLs may be targets (WEBHOOK_ALLOWED_HOSTS)
    store.py     the tables: per-job targets, and the outbox of deliveries
    outbox.py    the worker that sends due deliveries and records each outcome
    delivery.py  one attempt, and the retry policy (backoff, Retry-After, the horizon)
    signing.py   Standard Webhooks signatures, and the secret (WEBHOOK_SECRET or kept)

A payload is `{"type": "job.completed", "timestamp": "<ISO 8601>", "data": <the job as the
native API shows it>}`, the same body on every attempt under the same `webhook-id`.
"""

from proxy.webhooks.service import WebhookConfigError, WebhookService
from proxy.webhooks.store import Delivery, DeliveryStatus
from proxy.webhooks.targets import EVENTS, OPTIONAL, TERMINAL

__all__ = [
    "EVENTS",
    "OPTIONAL",
    "TERMINAL",
    "Delivery",
    "DeliveryStatus",
    "WebhookConfigError",
    "WebhookService",
]
