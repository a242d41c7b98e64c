"""The real ComfyUI graph editor, served from the ``comfyui-frontend-package`` wheel.

ComfyUI 0.3.64 asks for ``comfyui-frontend-package==1.27.10``; the stand-in serves that
package's ``static`` folder the way ComfyUI does: ``index.html`` at ``/`` (no-cache), every other
file at its own path, registered after all routes so that a route always wins over a file. The
package is an optional dependency (the ``standin`` extra): without it ``/`` says how to install
it, and everything else still works.

Also the editor's read-only support routes, with ComfyUI's answers when no custom node and no
template package are installed: ``/i18n`` and ``/workflow_templates`` (``{}``),
``/templates/index.json`` (``[]``, the core template index that the
``comfyui-workflow-templates`` package would serve) and the ``/internal`` routes that the
editor's log panel reads (no logs are kept).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .paths import MODEL_FOLDERS

if TYPE_CHECKING:
    from .server import StandinServer

PACKAGE = "comfyui_frontend_package"
PACKAGE_VERSION = "1.27.10"
INSTALL_HINT = (
    "ComfyUI stand-in (synthetic test-pattern videos, not ComfyUI).\n"
    "\n"
    "The graph editor is not installed. It is ComfyUI's own frontend, the\n"
    f"comfyui-frontend-package=={PACKAGE_VERSION} wheel; install it with\n"
    "\n"
    '    pip install -e ".[standin]"\n'
    "\n"
    "(or pip install comfyui-frontend-package==1.27.10), then restart the stand-in.\n"
)
_NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}


def find_web_root() -> Path | None:
    """The package's ``static`` folder, or None when the package is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "index.html").is_file():
            return static
    return None


def frontend_routes(server: StandinServer, web_root: Path | None) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of the editor's support routes; each is also under /api."""

    async def i18n(request: web.Request) -> web.Response:
        return web.json_response({})

    async def workflow_templates(request: web.Request) -> web.Response:
        return web.json_response({})

    return [
        ("GET", "/i18n", i18n),
        ("GET", "/workflow_templates", workflow_templates),
    ]


def internal_routes(server: StandinServer) -> list[tuple[str, str, Any]]:
    """ComfyUI's ``/internal`` routes that the editor reads (no ``/api`` alias, as in ComfyUI)."""

    async def logs(request: web.Request) -> web.Response:
        return web.json_response("")

    async def raw_logs(request: web.Request) -> web.Response:
        return web.json_response({"entries": [], "size": {"cols": None, "rows": None}})

    async def subscribe_logs(request: web.Request) -> web.Response:
        await request.json()
        return web.Response(status=200)

    async def folder_paths(request: web.Request) -> web.Response:
        root = server.dirs.root
        paths = {
            key: [os.path.join(root, rel) for rel in dirs]
            for key, (dirs, _) in MODEL_FOLDERS.items()
        }
        return web.json_response(paths)

    return [
        ("GET", "/internal/logs", logs),
        ("GET", "/internal/logs/raw", raw_logs),
        ("PATCH", "/internal/logs/subscribe", subscribe_logs),
        ("GET", "/internal/folder_paths", folder_paths),
    ]


def add_static(app: web.Application, web_root: Path | None) -> None:
    """``/`` and the package's files; call it after every other route has been added."""
    index = web_root / "index.html" if web_root is not None else None

    async def root(request: web.Request) -> web.StreamResponse:
        if index is None:
            return web.Response(text=INSTALL_HINT)
        return web.FileResponse(index, headers=_NO_CACHE)

    app.router.add_get("/", root)
    if web_root is not None:
        favicon = web_root / "assets" / "favicon.ico"

        async def favicon_ico(request: web.Request) -> web.StreamResponse:
            # Browsers ask for /favicon.ico before the editor sets its own icon (ComfyUI: 404).
            return web.FileResponse(favicon)

        if favicon.is_file():
            app.router.add_get("/favicon.ico", favicon_ico)
        app.router.add_static("/", web_root)


async def templates_index(request: web.Request) -> web.Response:
    """No core templates: the ``comfyui-workflow-templates`` package is not installed."""
    return web.json_response([])


@web.middleware
async def cache_control_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """ComfyUI's: scripts and stylesheets are revalidated on every load."""
    response = await handler(request)
    if request.path.endswith((".js", ".css")):
        response.headers.setdefault("Cache-Control", "no-cache")
    return response
