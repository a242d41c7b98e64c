"""Which manifest files ComfyUI can see, and which workflows are ready to run.

Pure functions: the caller fetches the per-folder listings (ComfyUI's `GET /models/{folder}`)
and hands them in, so this module does no I/O and is trivially testable. A folder missing
from the listing (not fetched, or the fetch failed) makes its entries *unknown* (`None`),
which is different from *absent* (`False`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel

from proxy.modelfiles.manifest import Manifest

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
