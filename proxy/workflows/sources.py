"""Where the served workflows come from while the proxy runs: the folder, hot reloaded; the
node schemas the connected ComfyUI reports; and the workflows saved in its graph editor.

    sources = WorkflowSources(registry, settings, pool)
    await sources.start()        # watch WORKFLOWS_DIR, follow COMFY_WORKFLOWS
    await sources.backend_connected(backend)   # ask its /object_info; reload when it changed
    await sources.import_workflow("my_flow.json", None, overwrite=False)   # from /userdata

A reload reads the whole folder in a worker thread and hands it to `WorkflowRegistry.replace`,
which keeps a broken template's last good version serving. The object_info used is the bundled
reference (ComfyUI 0.3.64) overlaid with what the backends answered, kept in
DATA_DIR/object_info.json so a restart without a backend still knows their custom nodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import watchfiles

from proxy.errors import ComfyError, ComfyUnavailable, Conflict, InvalidInput, NotFound
from proxy.workflows.marked import MarkError
from proxy.workflows.registry import (
    WorkflowRegistry,
    known_object_info,
    load_registry,
    workflow_from,
)

if TYPE_CHECKING:
    from proxy.jobs.backends import Backend, BackendPool
    from proxy.settings import Settings

log = logging.getLogger("proxy.workflows")

# What a served workflow may be called: its endpoint is /api/workflows/<name>/jobs.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
USER_FOLDER = "workflows"  # the graph editor saves into this folder of ComfyUI's user data


def workflow_name(saved_path: str) -> str:
    """The served name of a saved workflow: `My Flow.json` → `my_flow`."""
    stem = saved_path.removesuffix(".json")
    return re.sub(r"[^a-z0-9_-]+", "_", stem.lower()).strip("_-")[:64]


def _write_atomically(path: Path, content: bytes) -> bool:
    """Replace `path` with `content` (never half-written); False when it held that already."""
    if path.is_file() and path.read_bytes() == content:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class ObjectInfo:
    """The node schemas workflows are typed from: the bundled reference, overlaid with every
    backend's answer (kept on disk)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.reported: dict[str, Any] = {}

    def load(self) -> None:
        """Read the kept answers (blocking; at start, in a worker thread)."""
        try:
            data = json.loads(self.cache.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring the kept node schemas %s: %s", self.cache.name, exc)
            return
        if isinstance(data, dict):
            self.reported = data

    def effective(self) -> dict[str, Any]:
        return known_object_info(self.reported)

    def merge(self, answer: Mapping[str, Any]) -> bool:
        """Take one backend's /object_info; whether anything changed (then it is kept)."""
        changed = {k: v for k, v in answer.items() if self.reported.get(k) != v}
        if not changed:
            return False
        self.reported.update(changed)
        _write_atomically(self.cache, json.dumps(self.reported).encode())
        return True


class WorkflowSources:
    def __init__(
        self, registry: WorkflowRegistry, settings: Settings, pool: BackendPool | None = None
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.directory = settings.workflows_dir
        self.pool = pool
        self.object_info = ObjectInfo(settings.data_dir / "object_info.json")
        self._merging = asyncio.Lock()
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        # Followed saved workflows: (modified, size) last imported, and why an import failed.
        self._seen: dict[str, tuple[Any, Any]] = {}
        self._import_problems: dict[str, list[str]] = {}

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.object_info.load)
        if self.object_info.reported:
            await self.reload("kept node schemas")
        if self.settings.workflows_watch:
            self._spawn(self._watch(), "workflows:watch")
        if self.settings.comfy_workflows and self.pool is not None:
            self._spawn(self._follow_saved(), "workflows:comfy")

    async def close(self) -> None:
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reloading -------------------------------------------------------------------------

    async def reload(self, why: str) -> list[str]:
        """Read the folder again and serve what it holds now; the names that changed."""
        async with self._reloading:
            info = self.object_info.effective()
            loaded = await asyncio.to_thread(load_registry, self.directory, info)
            for name, problems in self._import_problems.items():
                loaded.broken[name] = loaded.broken.get(name, []) + problems
            changed = self.registry.replace(loaded)
        for name in changed:
            if name in self.registry.broken:
                kept = (
                    " (its last good version still serves)"
                    if name in self.registry.workflows
                    else ""
                )
                log.error("workflow %s: %s%s", name, "; ".join(self.registry.broken[name]), kept)
            elif name in self.registry.workflows:
                log.info("workflow %s loaded (%s)", name, why)
            else:
                log.info("workflow %s removed (%s)", name, why)
        return changed

    async def _watch(self) -> None:
        """Reload on every change of a template or sidecar in the folder."""
        if not await asyncio.to_thread(self.directory.is_dir):
            log.warning("not watching %s: no such folder", self.directory)
            return

        def relevant(_change: watchfiles.Change, path: str) -> bool:
            name = os.path.basename(path)
            return name.endswith(".json") and not name.startswith(".")

        async for changes in watchfiles.awatch(
            self.directory,
            watch_filter=relevant,
            debounce=300,
            step=50,
            stop_event=self._stop,
            recursive=False,
        ):
            files = ", ".join(sorted({os.path.basename(p) for _, p in changes}))
            try:
                await self.reload(f"changed: {files}")
            except OSError as exc:  # the folder itself went away: keep serving what loaded
                log.error("workflows folder %s cannot be read: %s", self.directory, exc)

    async def backend_connected(self, backend: Backend) -> None:
        """Ask a (re)connected backend for its node schemas; reload when they changed (a
        restart of ComfyUI may bring custom nodes or new model files)."""
        try:
            answer = await backend.client.object_info()
        except ComfyError as exc:
            log.warning("node schemas of %s not read: %s", backend.name, exc)
            return
        # One merge at a time: a second one (another backend, a reconnection) must not find
        # nothing new and go on while the first is still writing what it took.
        async with self._merging:
            changed = await asyncio.to_thread(self.object_info.merge, answer)
        if changed:
            await self.reload(f"node schemas of {backend.name}")

    def on_backend_connected(self, backend: Backend) -> None:
        """`backend_connected` in the background (socket callbacks must not wait on it)."""
        if not self._stop.is_set():
            self._spawn(self.backend_connected(backend), f"object_info:{backend.name}")

    # -- ComfyUI's saved workflows ---------------------------------------------------------

    def _backend(self) -> Backend:
        if self.pool is None:
            raise ComfyUnavailable("no ComfyUI is configured")
        return self.pool.preferred()

    async def import_workflow(
        self, path: str, name: str | None, *, overwrite: bool
    ) -> dict[str, Any]:
        """Copy a workflow saved in ComfyUI (`workflows/<path>` of its user data, UI or API
        format) into WORKFLOWS_DIR as `<name>.json`, once it is known to load; serve it."""
        path = path.strip().removeprefix(f"{USER_FOLDER}/")
        if not path or ".." in path.split("/") or path.startswith("/"):
            raise InvalidInput(
                "path", "name a file in ComfyUI's workflows folder, like my_flow.json"
            )
        if not path.endswith(".json"):
            path += ".json"
        served = name if name is not None else workflow_name(path)
        if not NAME.fullmatch(served):
            raise InvalidInput(
                "name",
                f"{served!r} cannot name a workflow: use lowercase letters, digits, _ and -",
            )
        backend = self._backend()
        content = await backend.client.read_userdata(f"{USER_FOLDER}/{path}")
        if content is None:
            raise NotFound(f"ComfyUI at {backend.name} has no saved workflow {path!r}")
        target = self.directory / f"{served}.json"
        if not overwrite and await asyncio.to_thread(target.exists):
            raise Conflict(
                f"a workflow {served!r} is already in the workflows folder; "
                'send "overwrite": true to replace it'
            )
        problems = await asyncio.to_thread(self._check, served, content)
        if problems:
            raise InvalidInput("path", f"{path} cannot be served: {'; '.join(problems)}")
        await asyncio.to_thread(_write_atomically, target, content)
        self._import_problems.pop(served, None)
        await self.reload(f"imported from ComfyUI: {path}")
        workflow = self.registry.workflows.get(served)
        if workflow is None:  # written, then changed or removed before the reload read it
            raise Conflict(f"{served!r} changed while it was imported; import it again")
        return {"name": served, "file": target.name, "source": path, **workflow.describe()}

    def _check(self, name: str, content: bytes) -> list[str]:
        """Why `content` would not load as the workflow `name` ([] when it would)."""
        try:
            graph = json.loads(content)
        except ValueError as exc:
            return [f"not JSON ({exc})"]
        sidecar_path = self.directory / f"{name}.params.json"
        try:
            sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else None
        except (OSError, ValueError) as exc:
            return [f"its sidecar {sidecar_path.name} cannot be read: {exc}"]
        try:
            found = workflow_from(
                name, graph, sidecar, self.object_info.effective(), source=f"{name}.json"
            )
        except MarkError as exc:
            return exc.problems
        if found is None:
            return [
                "it marks no parameters: title a node `$prompt` or `Sampler $seed=seed`, or "
                "use our ApiInput nodes"
            ]
        return []

    def _followed(self, saved: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        wanted = set(self.settings.comfy_workflows)
        return [
            item
            for item in saved
            if str(item["path"]).endswith(".json")
            and (
                "*" in wanted
                or str(item["path"]).removesuffix(".json") in wanted
                or workflow_name(str(item["path"])) in wanted
            )
        ]

    async def _follow_saved(self) -> None:
        """Import each followed saved workflow whenever it changes in ComfyUI."""
        while not self._stop.is_set():
            try:
                await self.sync_saved()
            except ComfyError as exc:
                log.debug("saved workflows not read: %s", exc)
            try:
                async with asyncio.timeout(self.settings.comfy_workflows_poll_s):
                    await self._stop.wait()
            except TimeoutError:
                continue

    async def sync_saved(self) -> list[str]:
        """One look at ComfyUI's saved workflows: import the followed ones that changed; the
        names imported."""
        backend = self._backend()
        imported = []
        every = "*" in self.settings.comfy_workflows
        for item in self._followed(await backend.client.list_userdata(USER_FOLDER)):
            path = str(item["path"])
            stamp = (item.get("modified"), item.get("size"))
            if self._seen.get(path) == stamp:
                continue
            self._seen[path] = stamp
            name = workflow_name(path)
            try:
                await self.import_workflow(path, name, overwrite=True)
            except (InvalidInput, Conflict, NotFound) as exc:
                if every and "marks no parameters" in exc.message:
                    log.info("saved workflow %s marks no parameters: not followed", path)
                    continue
                log.error("saved workflow %s not imported: %s", path, exc)
                self._import_problems[name] = [f"ComfyUI's saved {path}: {exc}"]
                await self.reload(f"import of {path} failed")
                continue
            imported.append(name)
        return imported
