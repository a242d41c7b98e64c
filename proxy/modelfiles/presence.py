"""Which manifest files ComfyUI can see, and which workflows are ready to run.

`compute_presence` is a pure function of the per-folder listings (ComfyUI's
`GET /models/{folder}`), so it is trivially testable; `ModelPresence` is the one provider the
API asks, which fetches those listings from the backends. A folder missing from the listing
(not fetched, or the fetch failed) makes its entries *unknown* (`None`), which is different
from *absent* (`False`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from proxy.errors import ProxyError
from proxy.modelfiles.manifest import Manifest

log = logging.getLogger("proxy.modelfiles")

FolderListing = Mapping[str, Iterable[str]]


class WorkflowReadiness(BaseModel):
    """Whether every file a workflow needs is present (`None` when unknown)."""

    workflow: str
    ready: bool | None
    missing: list[str]
    unknown: list[str]


class PresenceReport(BaseModel):
    """Presence per manifest id and readiness per workflow."""

    known: bool
    models: dict[str, bool | None]
    workflows: dict[str, WorkflowReadiness]


def compute_presence(manifest: Manifest, listing: FolderListing | None) -> PresenceReport:
    """Match manifest entries against ComfyUI's file names, exactly as workflows name them."""
    folders = {folder: set(names) for folder, names in (listing or {}).items()}
    models: dict[str, bool | None] = {}
    for entry in manifest.models:
        names = folders.get(entry.folder)
        models[entry.id] = None if names is None else entry.filename in names

    workflows: dict[str, WorkflowReadiness] = {}
    for name in manifest.workflows:
        missing: list[str] = []
        unknown: list[str] = []
        for entry in manifest.required_for(name):
            state = models[entry.id]
            if state is False:
                missing.append(entry.filename)
            elif state is None:
                unknown.append(entry.filename)
        ready = False if missing else (None if unknown else True)
        workflows[name] = WorkflowReadiness(
            workflow=name, ready=ready, missing=missing, unknown=unknown
        )
    return PresenceReport(known=listing is not None, models=models, workflows=workflows)


class ModelPresence:
    """What ComfyUI has of the manifest's files, asked when needed (never guessed)."""

    def __init__(
        self, manifest: Manifest, fetch: Callable[[list[str]], Awaitable[dict[str, list[str]]]]
    ) -> None:
        self.manifest = manifest
        self._fetch = fetch

    async def listing(self) -> dict[str, list[str]] | None:
        """ComfyUI's file names per folder the manifest uses; None when it cannot be asked."""
        folders = sorted({m.folder for m in self.manifest.models})
        try:
            return await self._fetch(folders)
        except ProxyError as exc:
            log.warning("model presence unknown: %s", exc.message)
            return None

    async def report(self) -> PresenceReport:
        return compute_presence(self.manifest, await self.listing())

    async def readiness(self) -> dict[str, dict[str, Any]]:
        """Per workflow: whether every model file it needs is present, and which are not."""
        report = await self.report()
        result = {}
        for name in self.manifest.workflows:
            ready = report.workflows[name]
            result[name] = {
                "ready": ready.ready,
                "missing": ready.missing,
                "files": [
                    {
                        "id": m.id,
                        "filename": m.filename,
                        "folder": m.folder,
                        "present": report.models.get(m.id),
                        "approx_size": m.approx_size,
                    }
                    for m in self.manifest.required_for(name)
                ],
            }
        return result
