"""What the proxy knows about each workflow beyond its parameters: `/api/workflows/...`."""

from typing import Any

from fastapi import APIRouter

from proxy.api.auth import Caller
from proxy.api.deps import ServicesDep

router = APIRouter(prefix="/api/workflows", tags=["workflows"])


@router.get("/{name}/timings", summary="What the proxy has learned of a workflow's node times")
async def timings(name: str, services: ServicesDep, caller: Caller) -> dict[str, Any]:
    """Per backend and size (width, height, length, steps): each node's measured duration
    (a moving average over `samples` runs; `@store` is the proxy's own storing of the
    outputs). The progress bar and ETA weigh nodes by these; an empty list means the
    workflow's fixed weights are still in use. Backend addresses are shown to admins."""
    flow = services.registry.get(name)
    entries = await services.timings.learned(flow.name)
    if not caller.admin:  # backend addresses are for admins (as at /api/backends)
        for entry in entries:
            entry.pop("backend")
    return {"workflow": flow.name, "timings": entries}
