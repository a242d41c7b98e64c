"""HTTP surfaces, assembled in one place: the native API and one thin router per seed."""

from fastapi import APIRouter

from proxy.api import (  # batches & scenes (wiring)
    batches,
    events,
    fastwan,
    modelfiles,
    native,
    portal,
    prompts,
    scenes,
    wan21,
)


def build_router() -> APIRouter:
    router = APIRouter()
    router.include_router(native.router)
    router.include_router(events.router)
    router.include_router(fastwan.router)
    router.include_router(prompts.router)
    router.include_router(modelfiles.router)
    router.include_router(wan21.router)
    # -- batches & scenes (wiring) --
    router.include_router(batches.router)
    router.include_router(portal.router)
    router.include_router(scenes.router)
    # -- end batches & scenes --
    return router
