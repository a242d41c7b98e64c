"""HTTP side of one ComfyUI backend. httpx errors are translated here, and only here, into
the proxy's `ComfyError` tree (see `proxy.errors`)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx

from proxy.comfy.models import HistoryEntry, OutputFile, PromptAccepted, QueueState
from proxy.errors import (
    ComfyError,
    ComfyFileMissing,
    ComfyProtocolError,
    ComfyUnavailable,
    PromptRejected,
)

log = logging.getLogger("proxy.comfy")

CHUNK_BYTES = 1024 * 1024

# Loader inputs whose combo lists are the files in a models folder: a `value_not_in_list`
# there means the model file is missing, which deserves a more helpful message.
MODEL_FOLDERS = {
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "ckpt_name": "checkpoints",
}


def describe_rejection(body: dict[str, Any]) -> str:
    """One readable sentence per problem in ComfyUI's 400 answer to /prompt."""
    error = body.get("error") or {}
    node_errors = body.get("node_errors") or {}
    lines = []
    for node_id, info in node_errors.items():
        class_type = info.get("class_type", "?")
        for err in info.get("errors", []):
            extra = err.get("extra_info") or {}
            name = extra.get("input_name")
            where = f"node {node_id} ({class_type})" + (f" input '{name}'" if name else "")
            text = f"{where}: {err.get('message', '')}"
            if err.get("details"):
                text += f" ({err['details']})"
            if err.get("type") == "value_not_in_list" and name in MODEL_FOLDERS:
                text += (
                    f". The model file {extra.get('received_value')!r} is not in ComfyUI's "
                    f"models/{MODEL_FOLDERS[name]} folder: download it (see comfyui/models.json)"
                )
            lines.append(text)
    if not lines:
        message = error.get("message") or "the workflow was rejected"
        details = error.get("details")
        lines.append(f"{message}" + (f": {details}" if details else ""))
    return "ComfyUI rejected the workflow: " + "; ".join(lines)


class ComfyClient:
    """Typed calls to one ComfyUI. The shared `httpx.AsyncClient` is owned by the lifespan."""

    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

    def __repr__(self) -> str:
        return f"ComfyClient({self.base_url!r})"

    @asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ComfyUnavailable(
                f"ComfyUI at {self.base_url} did not answer {what} in time ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise ComfyUnavailable(
                f"ComfyUI at {self.base_url} cannot be reached "
                f"({what}: {exc or type(exc).__name__}). Is it running? Check COMFYUI_URL."
            ) from exc

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with self._guard(f"{method} {path}"):
            response = await self.http.request(method, self.base_url + path, **kwargs)
        if response.status_code >= 500:
            raise ComfyProtocolError(
                f"ComfyUI at {self.base_url} failed on {method} {path}: "
                f"HTTP {response.status_code} {response.text[:300]}"
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        # ComfyUI emits NaN/Infinity literals; Python's json accepts them.
        try:
            return json.loads(response.content) if response.content else None
        except ValueError as exc:
            raise ComfyProtocolError(
                f"ComfyUI answered {response.request.url.path} with something that is not JSON"
            ) from exc

    async def submit(
        self,
        graph: dict[str, Any],
        *,
        client_id: str,
        prompt_id: str | None = None,
        front: bool = False,
        extra_data: dict[str, Any] | None = None,
    ) -> PromptAccepted:
        """POST /prompt with our own prompt_id (events may beat the HTTP answer)."""
        body: dict[str, Any] = {
            "prompt": graph,
            "client_id": client_id,
            "prompt_id": prompt_id or str(uuid.uuid4()),
        }
        if front:
            body["front"] = True
        if extra_data:
            body["extra_data"] = extra_data
        response = await self._request("POST", "/prompt", json=body)
        data = self._json(response)
        if response.status_code == 400 and isinstance(data, dict):
            raise PromptRejected(
                describe_rejection(data), data.get("error") or {}, data.get("node_errors") or {}
            )
        if response.status_code != 200 or not isinstance(data, dict):
            raise ComfyProtocolError(
                "unexpected answer to POST /prompt: "
                f"HTTP {response.status_code} {response.text[:300]}"
            )
        return PromptAccepted.model_validate(data)

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished entry, or None while ComfyUI has none (unknown or not done)."""
        response = await self._request("GET", f"/history/{prompt_id}")
        data = self._json(response) or {}
        entry = data.get(prompt_id)
        return HistoryEntry.parse(prompt_id, entry) if entry else None

    async def queue(self) -> QueueState:
        data = self._json(await self._request("GET", "/queue")) or {}

        def ids(items: list[Any]) -> list[str]:
            ordered = sorted(items, key=lambda item: (item[0], item[1]))
            return [str(item[1]) for item in ordered]

        return QueueState(
            running=ids(data.get("queue_running") or []),
            pending=ids(data.get("queue_pending") or []),
        )

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        await self._request("POST", "/queue", json={"delete": prompt_ids})

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt this prompt only if it is the one running (never another client's)."""
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def delete_history(self, prompt_ids: list[str]) -> None:
        await self._request("POST", "/history", json={"delete": prompt_ids})

    async def system_stats(self) -> dict[str, Any]:
        data = self._json(await self._request("GET", "/system_stats"))
        if not isinstance(data, dict):
            raise ComfyProtocolError("GET /system_stats did not return an object")
        return data

    async def object_info(self) -> dict[str, Any]:
        """GET /object_info: every node class ComfyUI has, with its inputs and outputs."""
        data = self._json(await self._request("GET", "/object_info"))
        if not isinstance(data, dict):
            raise ComfyProtocolError("GET /object_info did not return an object")
        return data

    async def list_userdata(self, directory: str) -> list[dict[str, Any]]:
        """The files under one folder of ComfyUI's user data (`workflows`, say), each with
        its `path` (relative to the folder), `size` and `modified` (ms); [] when none."""
        response = await self._request(
            "GET", "/userdata", params={"dir": directory, "recurse": "true", "full_info": "true"}
        )
        if response.status_code == 404:  # the folder does not exist yet: nothing saved
            return []
        data = self._json(response)
        if response.status_code != 200 or not isinstance(data, list):
            raise ComfyProtocolError(
                f"GET /userdata?dir={directory} answered HTTP {response.status_code}"
            )
        return [item for item in data if isinstance(item, dict) and "path" in item]

    async def read_userdata(self, path: str) -> bytes | None:
        """One file of ComfyUI's user data (`workflows/my_flow.json`), or None if missing."""
        response = await self._request("GET", "/userdata/" + quote(path, safe=""))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ComfyProtocolError(f"GET /userdata/{path} answered HTTP {response.status_code}")
        return response.content

    async def list_models(self, folder: str) -> list[str] | None:
        """File names ComfyUI sees in a models folder (None if it has no such folder)."""
        response = await self._request("GET", f"/models/{folder}")
        if response.status_code == 404:
            return None
        data = self._json(response)
        return [str(x) for x in data] if isinstance(data, list) else []

    async def upload(self, path: Path, name: str, *, overwrite: bool = False) -> str:
        """Upload a file to ComfyUI's input folder; returns the name ComfyUI chose."""
        # Read in a worker thread that a cancellation waits for (nothing is left open).
        content = await anyio.to_thread.run_sync(path.read_bytes)
        files = {"image": (name, content, "application/octet-stream")}
        data = {"overwrite": "true"} if overwrite else {}
        response = await self._request("POST", "/upload/image", files=files, data=data)
        body = self._json(response) if response.status_code == 200 else None
        if not isinstance(body, dict) or "name" not in body:
            raise ComfyError(
                f"ComfyUI refused the upload of {name!r} (HTTP {response.status_code})"
            )
        subfolder = body.get("subfolder") or ""
        return f"{subfolder}/{body['name']}" if subfolder else str(body["name"])

    async def download(self, file: OutputFile, dest: Path) -> int:
        """Stream one output through /view to `dest` (via a .part file); returns its size."""
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        part = dest.with_name(dest.name + ".part")
        size = 0
        async with self._guard(f"GET /view {file.filename}"):
            async with self.http.stream("GET", self.base_url + "/view", params=params) as resp:
                if resp.status_code != 200:
                    raise ComfyFileMissing(
                        f"ComfyUI at {self.base_url} has no output {file.subfolder}/{file.filename}"
                        f" (HTTP {resp.status_code})"
                    )
                try:
                    # Opened here, not in a thread: a cancelled threaded open leaks the file.
                    async with anyio.wrap_file(open(part, "wb")) as out:  # noqa: ASYNC230
                        async for chunk in resp.aiter_bytes(CHUNK_BYTES):
                            await out.write(chunk)
                            size += len(chunk)
                except BaseException:
                    await anyio.Path(part).unlink(missing_ok=True)
                    raise
        await anyio.Path(part).rename(dest)
        return size
