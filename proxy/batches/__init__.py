"""Batches of jobs (seed 004) and scene sessions (seed 003): one store, one service."""

from proxy.batches.service import BatchService, ItemSpec, Tally, output_url
from proxy.batches.store import Batch, BatchItem, BatchStore, Scene, SceneSession, SceneVideo

__all__ = [
    "Batch",
    "BatchItem",
    "BatchService",
    "BatchStore",
    "ItemSpec",
    "Scene",
    "SceneSession",
    "SceneVideo",
    "Tally",
    "output_url",
]
