"""ComfyUI's JSON routes: prompt, queue, interrupt, history, free, node and system info.

Shapes, status codes and quirks follow ComfyUI 0.3.64 (see protocol.md in the shared
reference): a 400 from ``/prompt`` sends nothing on the websocket; ``/queue``, ``/history``,
``/interrupt`` and ``/free`` answer 200 with an empty body; a body that is not JSON is a 500
everywhere except ``/interrupt``, which treats it as a global interrupt.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .editor_nodes import editor_only_info
from .paths import MODEL_FOLDERS, PT_EXTENSIONS
from .validation import validate_prompt

if TYPE_CHECKING:
    from .server import StandinServer

COMFYUI_VERSION = "0.3.64"
FRONTEND_VERSION = "1.27.10"
DEVICE_NAME = "standin (no GPU)"
# Folders that ComfyUI's /experiment/models leaves out.
_EXPERIMENT_HIDDEN = frozenset({"configs", "custom_nodes"})


def core_routes(server: StandinServer) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of the JSON routes; each is also served under /api."""
    queue = server.queue

    async def post_prompt(request: web.Request) -> web.Response:
        body = await request.json()
        if "number" in body:
            number: Any = float(body["number"])
        else:
            number = server.number
            if "front" in body and body["front"]:
                number = -number
            server.number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        result = validate_prompt(
            prompt, server.schemas, server.dirs, body.get("partial_execution_targets")
        )
        extra_data = body.get("extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            return web.json_response(
                {"error": result.error, "node_errors": result.node_errors}, status=400
            )
        queue.put((number, prompt_id, prompt, extra_data, result.outputs))
        if server.faults.prompt_delay_s > 0:
            await asyncio.sleep(server.faults.prompt_delay_s)
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
        )

    async def get_prompt(request: web.Request) -> web.Response:
        return web.json_response(server.queue_info())

    async def get_queue(request: web.Request) -> web.Response:
        running, pending = queue.current()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(request: web.Request) -> web.Response:
        body = await request.json()
        if "clear" in body and body["clear"]:
            queue.wipe_queue()
        if "delete" in body:
            for prompt_id in body["delete"]:
                queue.delete_queue_item(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        prompt_id = body.get("prompt_id")
        if prompt_id:
            if prompt_id in queue.running_prompt_ids():
                server.executor.interrupt.set()
        else:
            server.executor.interrupt.set()
        return web.Response(status=200)

    async def get_history(request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = request.query.get("offset")
        return web.json_response(
            queue.history(
                max_items=int(max_items) if max_items is not None else None,
                offset=int(offset) if offset is not None else -1,
            )
        )

    async def get_history_item(request: web.Request) -> web.Response:
        return web.json_response(queue.history_item(request.match_info["prompt_id"]))

    async def post_history(request: web.Request) -> web.Response:
        body = await request.json()
        if "clear" in body and body["clear"]:
            queue.wipe_history()
        if "delete" in body:
            for prompt_id in body["delete"]:
                queue.delete_history_item(prompt_id)
        return web.Response(status=200)

    async def post_free(request: web.Request) -> web.Response:
        body = await request.json()
        free_memory = body.get("free_memory", False)
        unload_models = body.get("unload_models", False)
        if unload_models:
            queue.set_flag("unload_models", unload_models)
        if free_memory:
            queue.set_flag("free_memory", free_memory)
        return web.Response(status=200)

    def all_info() -> dict[str, Any]:
        # The classes the stand-in runs, then those the graph editor needs to load at all.
        return {
            **server.schemas.all_info(),
            **editor_only_info(server.dirs, server.schemas),
        }

    async def object_info(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(all_info))

    async def object_info_node(request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        if name in server.schemas:
            return web.json_response({name: server.schemas.info(name)})
        extra = await asyncio.to_thread(editor_only_info, server.dirs, server.schemas)
        return web.json_response({name: extra[name]} if name in extra else {})

    async def system_stats(request: web.Request) -> web.Response:
        return web.json_response(_system_stats())

    async def features(request: web.Request) -> web.Response:
        return web.json_response(server.features())

    async def list_model_types(request: web.Request) -> web.Response:
        return web.json_response(list(MODEL_FOLDERS))

    async def get_models(request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(await asyncio.to_thread(server.dirs.filename_list, folder))

    async def embeddings(request: web.Request) -> web.Response:
        names = await asyncio.to_thread(server.dirs.filename_list, "embeddings")
        return web.json_response([os.path.splitext(name)[0] for name in names])

    async def extensions(request: web.Request) -> web.Response:
        # ComfyUI also lists the editor's own scripts (extensions/core/*.js), which the editor
        # skips; no custom node here has any, so the list is empty either way.
        return web.json_response([])

    async def experiment_model_folders(request: web.Request) -> web.Response:
        root = server.dirs.root
        return web.json_response(
            [
                {"name": name, "folders": [os.path.join(root, rel) for rel in dirs]}
                for name, (dirs, _) in MODEL_FOLDERS.items()
                if name not in _EXPERIMENT_HIDDEN
            ]
        )

    async def experiment_models(request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(await asyncio.to_thread(_model_file_infos, server, folder))

    return [
        ("POST", "/prompt", post_prompt),
        ("GET", "/prompt", get_prompt),
        ("GET", "/queue", get_queue),
        ("POST", "/queue", post_queue),
        ("POST", "/interrupt", post_interrupt),
        ("GET", "/history", get_history),
        ("GET", "/history/{prompt_id}", get_history_item),
        ("POST", "/history", post_history),
        ("POST", "/free", post_free),
        ("GET", "/object_info", object_info),
        ("GET", "/object_info/{node_class}", object_info_node),
        ("GET", "/system_stats", system_stats),
        ("GET", "/features", features),
        ("GET", "/models", list_model_types),
        ("GET", "/models/{folder}", get_models),
        ("GET", "/embeddings", embeddings),
        ("GET", "/extensions", extensions),
        ("GET", "/experiment/models", experiment_model_folders),
        ("GET", "/experiment/models/{folder}", experiment_models),
    ]


def _model_file_infos(server: StandinServer, folder: str) -> list[dict[str, Any]]:
    """``/experiment/models/{folder}``: each model file with the index of its directory."""
    dirs = MODEL_FOLDERS[folder][0]
    infos: list[dict[str, Any]] = []
    for index, rel in enumerate(dirs):
        base = os.path.join(server.dirs.root, rel)
        if not os.path.isdir(base):
            continue
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d != ".git" and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                # ComfyUI filters every folder by the model extensions here, even configs/.
                if os.path.splitext(name)[1].lower() not in PT_EXTENSIONS:
                    continue
                full_path = os.path.join(dirpath, name)
                stat = os.stat(full_path)
                infos.append(
                    {
                        "name": os.path.relpath(full_path, base),
                        "pathIndex": index,
                        "modified": stat.st_mtime,
                        "created": stat.st_ctime,
                        "size": stat.st_size,
                    }
                )
    return infos


def _memory_bytes() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _system_stats() -> dict[str, Any]:
    ram_total, ram_free = _memory_bytes()
    return {
        "system": {
            "os": sys.platform,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": FRONTEND_VERSION,
            "installed_templates_version": None,
            "required_templates_version": None,
            "python_version": sys.version,
            "pytorch_version": "none (ComfyUI stand-in, synthetic test-pattern videos)",
            "embedded_python": False,
            # --disable-api-nodes is true of the stand-in (it has no API nodes), and it keeps the
            # editor from asking api.comfy.org for release notes.
            "argv": [*sys.argv, "--disable-api-nodes"],
        },
        "devices": [
            {
                "name": DEVICE_NAME,
                "type": "cpu",
                "index": None,
                "vram_total": 0,
                "vram_free": 0,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        ],
    }
