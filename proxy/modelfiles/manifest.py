"""The model manifest (`comfyui/models.json`): every file a shipped workflow needs.

Each entry names the ComfyUI models sub-folder, the file name ComfyUI will list, where to
fetch it (a Hugging Face repo + path, or a plain URL), and its size and sha256 when known.
Loading validates the whole file and reports every problem at once, with its location.
"""

from __future__ import annotations

import json
import re
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from proxy.errors import NotFound, ProxyError
from proxy.settings import REPO_ROOT

DEFAULT_MANIFEST_PATH = REPO_ROOT / "comfyui" / "models.json"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOOPBACK_NAMES = {"localhost"}


class ManifestError(ProxyError):
    """comfyui/models.json is missing or malformed; the message says where and why."""

    status_code = 500


def _single_name(value: str, what: str) -> str:
    """A bare file or folder name: no separators, no `..`, nothing that escapes a folder."""
    if not value or value.strip() != value:
        raise ValueError(f"{what} must be a non-empty name without surrounding spaces")
    if "/" in value or "\\" in value:
        raise ValueError(f"{what} {value!r} must not contain a path separator")
    if value == "." or ".." in value:
        raise ValueError(f"{what} {value!r} must not contain '..'")
    if "\x00" in value or ":" in value:
        raise ValueError(f"{what} {value!r} contains a forbidden character")
    return value


class HuggingFaceSource(BaseModel):
    """A file in a Hugging Face repository, fetched through its `resolve` route."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["huggingface"]
    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$", description="owner/name")
    path: str = Field(min_length=1, description="path of the file inside the repository")
    revision: str = Field("main", min_length=1, description="branch, tag or commit")

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"path {value!r} must be a plain relative path inside the repo")
        return value


class UrlSource(BaseModel):
    """A file at a plain URL (https; http only for loopback hosts, e.g. a local mirror)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["url"]
    url: str

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError(f"url {value!r} has no host")
        if parts.scheme == "https":
            return value
        if parts.scheme == "http" and _is_loopback(parts.hostname):
            return value
        raise ValueError(f"url {value!r} must use https (http is accepted for loopback only)")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


Source = Annotated[HuggingFaceSource | UrlSource, Field(discriminator="type")]


class ModelFile(BaseModel):
    """One file a workflow needs, where it goes, and how to get and check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]*$")
    name: str = Field(min_length=1)
    folder: str = Field(description="ComfyUI models sub-folder, e.g. `vae`")
    filename: str = Field(description="the name ComfyUI lists and workflows reference")
    source: Source
    size_bytes: int | None = Field(None, ge=0)
    approx_size: str | None = None
    sha256: str | None = None
    workflows: list[str] = Field(default_factory=list)

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return _single_name(value, "folder")

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        return _single_name(value, "filename")

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return value


class Manifest(BaseModel):
    """The whole manifest: entries in file order, looked up by id or workflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    comment: str | None = None
    models: list[ModelFile]

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        seen_ids: set[str] = set()
        seen_files: set[tuple[str, str]] = set()
        for entry in self.models:
            if entry.id in seen_ids:
                raise ValueError(f"model id {entry.id!r} appears twice")
            seen_ids.add(entry.id)
            key = (entry.folder, entry.filename)
            if key in seen_files:
                raise ValueError(f"{entry.folder}/{entry.filename} is listed twice")
            seen_files.add(key)
        return self

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.models]

    @property
    def workflows(self) -> list[str]:
        """Every workflow named by some entry, in first-seen order."""
        names: dict[str, None] = {}
        for entry in self.models:
            names.update(dict.fromkeys(entry.workflows))
        return list(names)

    def get(self, model_id: str) -> ModelFile:
        """The entry with this id; `NotFound` listing the known ids otherwise."""
        for entry in self.models:
            if entry.id == model_id:
                return entry
        known = ", ".join(self.ids) or "(none)"
        raise NotFound(
            f"No model file {model_id!r} in the manifest. Known ids: {known}", known_ids=self.ids
        )

    def required_for(self, workflow_name: str) -> list[ModelFile]:
        """The entries a workflow needs (empty when the manifest does not name it)."""
        return [m for m in self.models if workflow_name in m.workflows]


def parse_manifest(data: object, *, source: str = "models.json") -> Manifest:
    """Validate already-decoded JSON; `ManifestError` lists every problem with its location."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _location(data, err.get("loc", ()))
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise ManifestError(
            f"Invalid model manifest {source}: " + "; ".join(problems), problems=problems
        ) from None


def load_manifest(path: Path | str = DEFAULT_MANIFEST_PATH) -> Manifest:
    """Read and validate a manifest file (small, read once at start-up)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"Cannot read the model manifest {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"The model manifest {path} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    return parse_manifest(data, source=str(path))


def _location(data: object, loc: tuple[int | str, ...]) -> str:
    """`("models", 2, "filename")` → `models[2] (id 'vae').filename`."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str) and out.count("[") == 1:
                out += f" (id {node['id']!r})"
        else:
            # Discriminated unions add the tag as a location part; it reads as noise.
            if part in ("huggingface", "url") and out.endswith("source"):
                continue
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "manifest"
