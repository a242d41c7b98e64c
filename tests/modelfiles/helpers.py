"""Helpers shared by the model-file tests: random blobs and manifest entries."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from typing import Any

from proxy.modelfiles.manifest import Manifest, parse_manifest

REPO = "test-org/test-repo"
HF_TOKEN = "hf_test_token_not_real"


@dataclass(frozen=True)
class Blob:
    data: bytes
    sha256: str


def make_blob(size: int = 300 * 1024, seed: int | None = None) -> Blob:
    data = os.urandom(size) if seed is None else _seeded(size, seed)
    return Blob(data=data, sha256=hashlib.sha256(data).hexdigest())


def _seeded(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def entry(
    model_id: str,
    *,
    folder: str = "vae",
    filename: str | None = None,
    blob: Blob | None = None,
    size: bool = True,
    sha: bool = True,
    source: dict[str, Any] | None = None,
    workflows: tuple[str, ...] = ("wf_a",),
) -> dict[str, Any]:
    filename = filename or f"{model_id}.safetensors"
    return {
        "id": model_id,
        "name": f"Test file {model_id}",
        "folder": folder,
        "filename": filename,
        "source": source or {"type": "huggingface", "repo": REPO, "path": f"files/{filename}"},
        "size_bytes": len(blob.data) if blob and size else None,
        "sha256": blob.sha256 if blob and sha else None,
        "workflows": list(workflows),
    }


def manifest_of(*entries: dict[str, Any]) -> Manifest:
    return parse_manifest({"models": list(entries)})
