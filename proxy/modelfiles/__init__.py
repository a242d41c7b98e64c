"""Model files: the manifest, which files ComfyUI can see, and downloading the missing ones.

manifest   comfyui/models.json → `Manifest` of `ModelFile` (validated)
presence   ComfyUI's per-folder listings → present per file, ready/missing per workflow
store      the `model_downloads` table and `DownloadRecord`
transfer   one file: verify, resume, stream, check, rename
downloads  `DownloadManager`: tasks, records, restart recovery
"""

from proxy.modelfiles.downloads import DownloadManager, ModelsDirNotConfigured, target_dir
from proxy.modelfiles.manifest import (
    HuggingFaceSource,
    Manifest,
    ManifestError,
    ModelFile,
    UrlSource,
    load_manifest,
    parse_manifest,
)
from proxy.modelfiles.presence import PresenceReport, WorkflowReadiness, compute_presence
from proxy.modelfiles.store import DownloadRecord, DownloadStatus, model_downloads

__all__ = [
    "DownloadManager",
    "DownloadRecord",
    "DownloadStatus",
    "HuggingFaceSource",
    "Manifest",
    "ManifestError",
    "ModelFile",
    "ModelsDirNotConfigured",
    "PresenceReport",
    "UrlSource",
    "WorkflowReadiness",
    "compute_presence",
    "load_manifest",
    "model_downloads",
    "parse_manifest",
    "target_dir",
]
