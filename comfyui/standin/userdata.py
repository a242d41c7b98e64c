"""The graph editor's per-user storage: ``/users``, ``/settings``, ``/userdata``, ``/v2/userdata``.

Files live under ``<data_dir>/user/default/`` as in ComfyUI (``workflows/``, the settings file
``comfy.settings.json``, ...). The stand-in is single-user, like ComfyUI without
``--multi-user``: every request is user ``default`` and the ``comfy-user`` header is ignored.

Answers follow ComfyUI 0.3.64 (``app/user_manager.py``, ``app/app_settings.py``):

- a path that leaves ``user/default`` is 403 (``/userdata``) or 400 (``/v2/userdata``);
- ``POST /userdata/{file}?overwrite=false`` on an existing file is 409; anything but ``false``
  overwrites; the answer is the path relative to the user folder, or with ``full_info=true``
  ``{"path", "size", "modified", "created"}`` (times in ms);
- resolving a path creates its parent folder, as ComfyUI's ``get_request_user_filepath`` does.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a reader never
sees half a workflow, and the settings' read-modify-write is serialised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import uuid
from typing import TYPE_CHECKING, Any
from urllib import parse

from aiohttp import web

if TYPE_CHECKING:
    from .server import StandinServer

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
# ComfyUI reserves names starting with this for system users, never served over HTTP.
SYSTEM_USER_PREFIX = "__"
_INVALID_NAME = 'Invalid filename. Please avoid special characters like :\\/*?"<>|'
# What a first start leaves in user/default, so the editor's first load is clean: ComfyUI
# answers 404 to the folders' listings and to user.css until something is saved there, and
# frontend 1.27.10 throws on a first load while applying its default canvas navigation mode
# (it sets these two settings before registering them). The values are the ones it sets.
FIRST_RUN_FOLDERS = ("workflows", "subgraphs")
FIRST_RUN_FILES = {"user.css": b"", "comfy.templates.json": b"[]"}
FIRST_RUN_SETTINGS: dict[str, Any] = {
    "Comfy.Canvas.LeftMouseClickBehavior": "panning",
    "Comfy.Canvas.MouseWheelScroll": "zoom",
}


class UserStore:
    """Paths and files of ``<data_dir>/user``; every method is blocking (run it in a thread)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.users: dict[str, str] = {DEFAULT_USER: DEFAULT_USER}

    @property
    def user_root(self) -> str:
        return os.path.join(self.root, DEFAULT_USER)

    def seed(self) -> None:
        """Create what a first start leaves in ``user/default``; existing files are kept."""
        for folder in FIRST_RUN_FOLDERS:
            os.makedirs(os.path.join(self.user_root, folder), exist_ok=True)
        for name, content in FIRST_RUN_FILES.items():
            path = os.path.join(self.user_root, name)
            if not os.path.exists(path):
                self.write(path, content)
        if not os.path.exists(self.settings_path()):
            self.write_settings(FIRST_RUN_SETTINGS)

    def resolve(self, file: str | None, *, create_dir: bool = True) -> str | None:
        """Absolute path of ``file`` inside the user folder, or None when it would leave it."""
        path = self.user_root
        if file is not None:
            if "%" in file:
                file = parse.unquote(file)
            if "\x00" in file:
                return None
            path = os.path.abspath(os.path.join(self.user_root, file))
            if os.path.commonpath((self.user_root, path)) != self.user_root:
                return None
        parent = os.path.dirname(path)
        if create_dir:
            os.makedirs(parent, exist_ok=True)
        return path

    def file_info(self, path: str, relative_to: str) -> dict[str, Any]:
        stat = os.stat(path)
        return {
            "path": os.path.relpath(path, relative_to).replace(os.sep, "/"),
            "size": stat.st_size,
            "modified": int(stat.st_mtime * 1000),
            "created": int(stat.st_ctime * 1000),
        }

    def answer_for(self, path: str, full_info: bool) -> Any:
        if full_info:
            return self.file_info(path, self.user_root)
        return os.path.relpath(path, self.user_root).replace(os.sep, "/")

    # --- listing ---------------------------------------------------------------------------

    def list_dir(self, path: str, *, recurse: bool, full_info: bool, split: bool) -> list[Any]:
        """The files under ``path`` (not hidden ones, as ComfyUI's glob skips them)."""
        found: list[str] = []
        if recurse:
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(
                    os.path.join(dirpath, name) for name in sorted(filenames) if name[0] != "."
                )
        elif os.path.isdir(path):
            found = [
                os.path.join(path, name)
                for name in sorted(os.listdir(path))
                if name[0] != "." and os.path.isfile(os.path.join(path, name))
            ]
        results: list[Any] = []
        for full_path in found:
            if full_info:
                results.append(self.file_info(full_path, path))
                continue
            rel = os.path.relpath(full_path, path).replace(os.sep, "/")
            results.append([rel, *rel.split("/")] if split else rel)
        return results

    def list_tree(self, target: str) -> list[dict[str, Any]]:
        """Every folder and file under ``target``, folders first, then by name (``/v2``)."""
        results: list[dict[str, Any]] = []
        for dirpath, dirnames, filenames in os.walk(target):
            for name in dirnames:
                rel = os.path.relpath(os.path.join(dirpath, name), self.user_root)
                path = rel.replace(os.sep, "/")
                results.append({"name": name, "path": path, "type": "directory"})
            for name in filenames:
                full_path = os.path.join(dirpath, name)
                entry: dict[str, Any] = {
                    "name": name,
                    "path": os.path.relpath(full_path, self.user_root).replace(os.sep, "/"),
                    "type": "file",
                }
                try:
                    stat = os.stat(full_path)
                    entry["size"] = stat.st_size
                    entry["modified"] = stat.st_mtime
                except OSError as exc:
                    log.warning("could not stat %s: %s", full_path, exc)
                results.append(entry)
        results.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return results

    # --- files -----------------------------------------------------------------------------

    def write(self, path: str, body: bytes) -> None:
        """Replace ``path`` with ``body`` atomically."""
        fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
            os.replace(tmp_path, path)
        except BaseException:
            os.unlink(tmp_path)
            raise

    # --- settings and users ----------------------------------------------------------------

    def settings_path(self) -> str:
        path = self.resolve(SETTINGS_FILE)
        assert path is not None
        return path

    def read_settings(self) -> dict[str, Any]:
        path = self.settings_path()
        if not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as handle:
            settings: dict[str, Any] = json.load(handle)
        return settings

    def write_settings(self, settings: dict[str, Any]) -> None:
        self.write(self.settings_path(), json.dumps(settings, indent=4).encode("utf-8"))

    def add_user(self, name: str) -> str:
        name = name.strip()
        if not name:
            raise ValueError("username not provided")
        user_id = re.sub("[^a-zA-Z0-9-_]+", "-", name)
        if name.startswith(SYSTEM_USER_PREFIX) or user_id.startswith(SYSTEM_USER_PREFIX):
            raise ValueError("System User prefix not allowed")
        user_id = f"{user_id}_{uuid.uuid4()}"
        self.users[user_id] = name
        os.makedirs(self.root, exist_ok=True)
        self.write(os.path.join(self.root, "users.json"), json.dumps(self.users).encode("utf-8"))
        return user_id


def user_routes(server: StandinServer, store: UserStore) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of the user, settings and userdata routes; also under /api."""
    settings_lock = asyncio.Lock()

    def resolve(file: str | None, *, create_dir: bool = True) -> Any:
        return asyncio.to_thread(store.resolve, file, create_dir=create_dir)

    async def param_path(request: web.Request, param: str, *, must_exist: bool) -> Any:
        """The resolved path of a match_info parameter, or the error response to return."""
        file = request.match_info.get(param)
        if not file:
            return web.Response(status=400)
        path = await resolve(file)
        if path is None:
            return web.Response(status=403)
        if must_exist and not await asyncio.to_thread(os.path.exists, path):
            return web.Response(status=404)
        return path

    async def legacy_user_css(request: web.Request) -> web.StreamResponse:
        # index.html also links /user.css (ComfyUI: a 404 from the static folder).
        path = os.path.join(store.user_root, "user.css")
        if not await asyncio.to_thread(os.path.isfile, path):
            return web.Response(text="", content_type="text/css")
        return web.FileResponse(path, headers={"Content-Type": "text/css"})

    async def get_users(request: web.Request) -> web.Response:
        migrated = await asyncio.to_thread(os.path.exists, store.user_root)
        return web.json_response({"storage": "server", "migrated": migrated})

    async def post_users(request: web.Request) -> web.Response:
        body = await request.json()
        username = body["username"]
        if username in store.users.values():
            return web.json_response({"error": "Duplicate username."}, status=400)
        try:
            user_id = await asyncio.to_thread(store.add_user, username)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(user_id)

    async def get_settings(request: web.Request) -> web.Response:
        async with settings_lock:
            return web.json_response(await asyncio.to_thread(store.read_settings))

    async def get_setting(request: web.Request) -> web.Response:
        async with settings_lock:
            settings = await asyncio.to_thread(store.read_settings)
        return web.json_response(settings.get(request.match_info["id"]))

    async def post_settings(request: web.Request) -> web.Response:
        new_settings = await request.json()
        async with settings_lock:
            settings = await asyncio.to_thread(store.read_settings)
            await asyncio.to_thread(store.write_settings, {**settings, **new_settings})
        return web.Response(status=200)

    async def post_setting(request: web.Request) -> web.Response:
        value = await request.json()
        async with settings_lock:
            settings = await asyncio.to_thread(store.read_settings)
            settings[request.match_info["id"]] = value
            await asyncio.to_thread(store.write_settings, settings)
        return web.Response(status=200)

    async def list_userdata(request: web.Request) -> web.Response:
        directory = request.query.get("dir", "")
        if not directory:
            return web.Response(status=400, text="Directory not provided")
        path = await resolve(directory)
        if not path:
            return web.Response(status=403, text="Invalid directory")
        if not await asyncio.to_thread(os.path.exists, path):
            return web.Response(status=404, text="Directory not found")
        results = await asyncio.to_thread(
            store.list_dir,
            path,
            recurse=request.query.get("recurse", "").lower() == "true",
            full_info=request.query.get("full_info", "").lower() == "true",
            split=request.query.get("split", "").lower() == "true",
        )
        return web.json_response(results)

    async def list_userdata_v2(request: web.Request) -> web.Response:
        rel = parse.unquote(request.query.get("path", ""))
        base = store.user_root
        target = await resolve(rel, create_dir=False) if rel else base
        if not target:
            return web.Response(status=400, text="Invalid path requested")
        if not await asyncio.to_thread(os.path.exists, target):
            if target == base:
                return web.json_response([])
            return web.Response(status=404, text="Requested path not found")
        if not await asyncio.to_thread(os.path.isdir, target):
            return web.Response(status=400, text="Requested path is not a directory")
        try:
            results = await asyncio.to_thread(store.list_tree, target)
        except OSError as exc:
            log.error("error listing %s: %s", target, exc)
            return web.Response(status=500, text="Error reading directory contents")
        return web.json_response(results)

    async def get_userdata(request: web.Request) -> web.StreamResponse:
        path = await param_path(request, "file", must_exist=True)
        if not isinstance(path, str):
            return path
        if not await asyncio.to_thread(os.path.isfile, path):
            return web.Response(status=404)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": content_type})

    async def post_userdata(request: web.Request) -> web.Response:
        path = await param_path(request, "file", must_exist=False)
        if not isinstance(path, str):
            return path
        overwrite = request.query.get("overwrite", "true") != "false"
        full_info = request.query.get("full_info", "false").lower() == "true"
        if not overwrite and await asyncio.to_thread(os.path.exists, path):
            return web.Response(status=409, text="File already exists")
        body = await request.read()
        try:
            await asyncio.to_thread(store.write, path, body)
        except OSError as exc:
            log.warning("error saving file %r: %s", path, exc)
            return web.Response(status=400, reason=_INVALID_NAME)
        return web.json_response(await asyncio.to_thread(store.answer_for, path, full_info))

    async def delete_userdata(request: web.Request) -> web.Response:
        path = await param_path(request, "file", must_exist=True)
        if not isinstance(path, str):
            return path
        try:
            await asyncio.to_thread(os.remove, path)
        except IsADirectoryError:
            return web.Response(status=400)
        return web.Response(status=204)

    async def move_userdata(request: web.Request) -> web.Response:
        source = await param_path(request, "file", must_exist=True)
        if not isinstance(source, str):
            return source
        dest = await param_path(request, "dest", must_exist=False)
        if not isinstance(dest, str):
            return dest
        overwrite = request.query.get("overwrite", "true") != "false"
        full_info = request.query.get("full_info", "false").lower() == "true"
        if not overwrite and await asyncio.to_thread(os.path.exists, dest):
            return web.Response(status=409, text="File already exists")
        log.info("moving %r -> %r", source, dest)
        await asyncio.to_thread(shutil.move, source, dest)
        return web.json_response(await asyncio.to_thread(store.answer_for, dest, full_info))

    return [
        ("GET", "/user.css", legacy_user_css),
        ("GET", "/users", get_users),
        ("POST", "/users", post_users),
        ("GET", "/settings", get_settings),
        ("GET", "/settings/{id}", get_setting),
        ("POST", "/settings", post_settings),
        ("POST", "/settings/{id}", post_setting),
        ("GET", "/userdata", list_userdata),
        ("GET", "/v2/userdata", list_userdata_v2),
        ("GET", "/userdata/{file}", get_userdata),
        ("POST", "/userdata/{file}", post_userdata),
        ("DELETE", "/userdata/{file}", delete_userdata),
        ("POST", "/userdata/{file}/move/{dest}", move_userdata),
    ]
