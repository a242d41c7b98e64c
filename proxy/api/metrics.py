"""`GET /metrics`: Prometheus metrics (every metric is described in `proxy.metrics`).

Admin-only when keys are configured: backend URLs and per-workflow load are operators'
business, not every user's."""

from fastapi import APIRouter, Request, Response

from proxy.api.auth import Admin
from proxy.api.deps import ServicesDep

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (admin keys only, when keys are set)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, services: ServicesDep, _caller: Admin) -> Response:
    """Jobs by status and workflow, queue depth, backends, job and stage durations, HTTP
    requests by route, database errors."""
    await services.metrics.refresh(services.db)
    body, content_type = services.metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
