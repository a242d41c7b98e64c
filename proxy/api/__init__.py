"""HTTP surfaces, assembled in one place: the native API and one thin router per seed."""

from fastapi import APIRouter

from proxy.api import events, fastwan, modelfiles, native, prompts


def build_router() -> APIRouter:
    router = APIRouter()
    router.include_router(native.router)
    router.include_router(events.router)
    router.include_router(fastwan.router)
    router.include_router(prompts.router)
    router.include_router(modelfiles.router)
    return router
