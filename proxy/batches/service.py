"""Batches of jobs and the scene sessions built on them.

A batch is created in one call (every job validated first, then created and queued, so the
dispatcher spreads them over the backends), read in prompt order, and deleted with its jobs.
A scenes batch belongs to a scene session: one job per scene; regenerating a scene puts a new
job in the scene's place; when every scene has finished, the session's `scene_videos` are
written (by a bus watcher owned by this service, and again on reads, which is idempotent), and
the finished scenes can be joined into one video that is cached by the jobs it was made from.

Nothing here keeps job state in memory: every answer is read from the stores.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from proxy.auth import Principal
from proxy.batches.store import (
    Batch,
    BatchItem,
    BatchStore,
    Scene,
    SceneSession,
    SceneVideo,
    utcnow,
)
from proxy.errors import Conflict, InvalidInput, NotFound
from proxy.jobs.bus import EventBus
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.service import JobService
from proxy.media.join import JoinResult, join_stored
from proxy.media.storage import OutputStore, StoredFile
from proxy.media.zipstream import ZipEntry, ZipPlan, plan_zip
from proxy.settings import Settings

log = logging.getLogger("proxy.batches")

MAX_SCENES = 16
MAX_SCENARIO_CHARS = 40
# Joined videos are stored as final_<batch id>_<digest>.mp4; outputs begin with their job id.
FINAL_PREFIX = "final_"
JOB_ID_CHARS = 36
# How often a compare-and-set write is retried after losing to another writer.
CAS_ROUNDS = 8


@dataclass(frozen=True)
class ItemSpec:
    """One job to create in a batch: its prompt and its label (a scenario name, say)."""

    prompt: str
    label: str | None = None


@dataclass(frozen=True)
class Tally:
    """How far a batch is, in the core's words."""

    total: int
    completed: int
    failed: int  # failed, cancelled, or deleted from under the batch

    @property
    def finished(self) -> bool:
        return self.completed + self.failed == self.total

    @property
    def outcome(self) -> str:
        """ "running" until every job has finished, then "completed", "failed" or "partial";
        each surface translates these into its own words."""
        if not self.finished:
            return "running"
        if self.completed == self.total:
            return "completed"
        if self.failed == self.total:
            return "failed"
        return "partial"

    @classmethod
    def of(cls, jobs: list[Job | None]) -> Tally:
        completed = sum(1 for j in jobs if j is not None and j.status is JobStatus.COMPLETED)
        failed = sum(
            1 for j in jobs if j is None or j.status in (JobStatus.FAILED, JobStatus.CANCELLED)
        )
        return cls(total=len(jobs), completed=completed, failed=failed)


def output_url(job: Job) -> str | None:
    """`/outputs/<file>` of a completed job's video (the seed-003 URL)."""
    if job.status is not JobStatus.COMPLETED or job.video is None:
        return None
    return f"/outputs/{job.video.filename}"


class BatchService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: BatchStore,
        jobs: JobService,
        bus: EventBus,
        outputs: OutputStore,
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.bus = bus
        self.outputs = outputs
        self._watcher: asyncio.Task[None] | None = None
        # Joining decodes and encodes video: one at a time per process.
        self._join_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following job changes (to record the videos of finished scene batches)."""
        ready = asyncio.Event()
        self._watcher = asyncio.create_task(self._watch(ready), name="batches:watch")
        await ready.wait()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self, ready: asyncio.Event) -> None:
        async with self.bus.subscribe() as queue:
            ready.set()
            while True:
                event = await queue.get()
                job = event.job
                # A job another replica ended is that replica's to record.
                if not event.local or job.batch_id is None or event.kind == "deleted":
                    continue
                if not job.status.finished:
                    continue
                try:
                    batch = await self.store.get_batch(job.batch_id)
                    if batch is not None and batch.session_id is not None:
                        await self.sync_session(batch)
                except SQLAlchemyError as exc:
                    # The next read of the batch or the session repeats the same sync.
                    log.warning("batch %s: could not record scene videos: %s", job.batch_id, exc)
                except Exception:  # a bug here must not end the watching for everyone
                    log.exception("batch %s: recording scene videos failed", job.batch_id)

    # -- batches ---------------------------------------------------------------------------

    async def create(
        self,
        kind: str,
        items: list[ItemSpec],
        values: dict[str, Any],
        *,
        surface: str,
        client_key: str | None = None,
        session_id: str | None = None,
        workflow: str | None = None,
        item_field: str = "prompts",
        max_active: int | None = None,
    ) -> tuple[Batch, list[Job]]:
        """Validate every item, then create and queue one job per item, in order."""
        if not items:
            raise InvalidInput(item_field, "give at least one prompt")
        flow = self.jobs.registry.get(workflow or self.settings.default_workflow)
        for index, item in enumerate(items):
            self._check(flow.resolve, {**values, "prompt": item.prompt}, f"{item_field}.{index}")
        self.jobs.require_backend()  # before the batch is recorded: nothing half-made
        # The batch is recorded before its jobs exist, so no job event ever names a batch
        # that cannot be read yet.
        now = utcnow()
        job_ids = [str(uuid.uuid4()) for _ in items]
        batch = Batch(
            id=str(uuid.uuid4()),
            kind=kind,
            surface=surface,
            workflow=flow.name,
            params=values,
            items=[
                BatchItem(job_id=job_id, prompt=item.prompt, label=item.label)
                for job_id, item in zip(job_ids, items, strict=True)
            ],
            session_id=session_id,
            client_key=client_key,
            created_at=now,
            updated_at=now,
        )
        async with self.jobs.admitting(client_key, max_active, adding=len(items)):
            return await self._insert(batch, flow.name, items, job_ids, values, surface)

    async def _insert(
        self,
        batch: Batch,
        workflow: str,
        items: builtins.list[ItemSpec],
        job_ids: builtins.list[str],
        values: dict[str, Any],
        surface: str,
    ) -> tuple[Batch, builtins.list[Job]]:
        await self.store.insert_batch(batch)
        created: builtins.list[Job] = []
        try:
            for job_id, item in zip(job_ids, items, strict=True):
                created.append(
                    await self.jobs.create(
                        workflow,
                        {**values, "prompt": item.prompt},
                        surface=surface,
                        client_key=batch.client_key,
                        batch_id=batch.id,
                        label=item.label,
                        job_id=job_id,
                    )
                )
        except BaseException:
            for job in created:
                with suppress(NotFound):
                    await self.jobs.delete(job.id)
            await self.store.delete_batch(batch.id)
            raise
        log.info("batch %s (%s): %d jobs", batch.id, batch.kind, len(created))
        return batch, created

    @staticmethod
    def _check(resolve: Any, values: dict[str, Any], prompt_field: str) -> None:
        try:
            resolve(values, {})
        except InvalidInput as exc:
            if exc.field == "prompt":
                raise InvalidInput(prompt_field, exc.message.removeprefix("prompt: ")) from None
            raise

    async def get(self, batch_id: str, caller: Principal | None = None) -> Batch:
        """The batch; NotFound also when `caller` may not see it."""
        batch = await self.store.get_batch(batch_id)
        if batch is None or (caller is not None and not caller.can_see(batch.client_key)):
            raise NotFound(f"no batch with id {batch_id!r}", status="not_found")
        return batch

    async def jobs_of(self, batch: Batch) -> list[Job | None]:
        """The batch's current jobs in item order (None where a job was deleted)."""
        by_id = {job.id: job for job in await self.jobs.list(batch_id=batch.id)}
        return [by_id.get(job_id) for job_id in batch.job_ids]

    async def list(
        self,
        *,
        kind: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        caller: Principal | None = None,
    ) -> builtins.list[Batch]:
        scope = caller.scope if caller is not None else None
        return await self.store.list_batches(
            kind=kind, client_key=scope, limit=limit, offset=offset
        )

    async def count(self, *, kind: str | None = None, caller: Principal | None = None) -> int:
        scope = caller.scope if caller is not None else None
        return await self.store.count_batches(kind=kind, client_key=scope)

    async def delete(self, batch_id: str, caller: Principal | None = None) -> tuple[Batch, int]:
        """Stop and delete every job of the batch (replaced ones too), its joined video and
        its record; a session that pointed at it forgets its videos. Returns the batch and
        how many jobs were deleted."""
        batch = await self.get(batch_id, caller)
        deleted = 0
        for job in await self.jobs.list(batch_id=batch_id):
            with suppress(NotFound):
                await self.jobs.delete(job.id)
                deleted += 1
        if batch.final:
            await self.outputs.delete([batch.final["filename"]])
        await self.store.delete_batch(batch_id)
        if batch.session_id is not None:
            for _ in range(CAS_ROUNDS):
                session = await self.store.get_session(batch.session_id)
                if session is None or session.batch_id != batch_id:
                    break
                if await self.store.update_session(session, batch_id=None, scene_videos=[]):
                    break
        log.info("batch %s deleted with %d jobs", batch_id, deleted)
        return batch, deleted

    async def _replace_item(self, batch: Batch, index: int, item: BatchItem) -> tuple[Batch, str]:
        """Put `item` at `index`; returns the batch and the job id it replaced."""
        for _ in range(CAS_ROUNDS):
            items = list(batch.items)
            old = items[index].job_id
            items[index] = item
            updated = await self.store.update_batch(batch, items=items)
            if updated is not None:
                return updated, old
            batch = await self.get(batch.id)
        raise Conflict(f"batch {batch.id} keeps changing; try again")

    # -- scene sessions --------------------------------------------------------------------

    def _check_session(self, scenes: builtins.list[Scene], params: dict[str, Any]) -> None:
        if len(scenes) > MAX_SCENES:
            raise InvalidInput("scenes", f"at most {MAX_SCENES} scenes (got {len(scenes)})")
        if "prompt" in params:
            raise InvalidInput("params.prompt", "each scene's description is its prompt")
        seen: set[str] = set()
        flow = self.jobs.registry.get(self.settings.default_workflow)
        for index, scene in enumerate(scenes):
            name = scene.scenario
            if not name.strip() or len(name) > MAX_SCENARIO_CHARS:
                raise InvalidInput(
                    f"scenes.{index}.scenario", f"1 to {MAX_SCENARIO_CHARS} characters"
                )
            if name in seen:
                raise InvalidInput(f"scenes.{index}.scenario", f"{name!r} appears twice")
            seen.add(name)
            values = {**params, "prompt": scene.description}
            self._check(flow.resolve, values, f"scenes.{index}.description")
        if not scenes:
            flow.resolve({**params, "prompt": "-"}, {})  # the shared parameters alone

    async def create_session(
        self,
        scenes: builtins.list[Scene],
        params: dict[str, Any] | None = None,
        caller: Principal | None = None,
    ) -> SceneSession:
        params = dict(params or {})
        self._check_session(scenes, params)
        now = utcnow()
        session = SceneSession(
            id=str(uuid.uuid4()),
            scenes=scenes,
            params=params,
            client_key=caller.owner if caller is not None else None,
            created_at=now,
            updated_at=now,
        )
        await self.store.insert_session(session)
        return session

    async def save_scene_session(
        self, scenes: builtins.list[dict[str, Any]], caller: Principal | None = None
    ) -> str:
        """For the prompt tools: store drafted scenes as a new session; returns its id."""
        session = await self.create_session([Scene.model_validate(s) for s in scenes], None, caller)
        return session.id

    async def get_session(self, session_id: str, caller: Principal | None = None) -> SceneSession:
        """The session; NotFound also when `caller` may not see it."""
        session = await self.store.get_session(session_id)
        if session is None or (caller is not None and not caller.can_see(session.client_key)):
            raise NotFound(f"no session with id {session_id!r}")
        if session.batch_id is not None:
            batch = await self.store.get_batch(session.batch_id)
            if batch is not None:
                session = await self.sync_session(batch) or session
        return session

    async def generate_scenes(
        self, session_id: str, caller: Principal, *, max_active: int | None = None
    ) -> Batch:
        """One job per scene, all queued at once; the session points at the new batch."""
        session = await self.get_session(session_id, caller)
        if not session.scenes:
            raise InvalidInput("session_id", f"session {session_id} has no scene descriptions yet")
        batch, _ = await self.create(
            "scenes",
            [ItemSpec(prompt=s.description, label=s.scenario) for s in session.scenes],
            session.params,
            surface="scenes",
            client_key=caller.owner,
            session_id=session.id,
            item_field="scenes",
            max_active=max_active,
        )
        for _ in range(CAS_ROUNDS):
            if await self.store.update_session(session, batch_id=batch.id):
                return batch
            session = await self.get_session(session_id, caller)
        raise Conflict(f"session {session_id} keeps changing; try again")

    async def regenerate_scene(
        self, session_id: str, scenario: str, caller: Principal, *, max_active: int | None = None
    ) -> tuple[Batch, Job]:
        """A new job for one scene, in that scene's place in the session's batch."""
        session = await self.get_session(session_id, caller)
        scene = session.scene(scenario)
        if scene is None:
            names = ", ".join(s.scenario for s in session.scenes) or "none"
            raise InvalidInput(
                "scenario", f"no scene {scenario!r} in this session (scenes: {names})"
            )
        if session.batch_id is None:
            raise Conflict(
                f"session {session_id} has no generated scenes yet; call generate-scenes first"
            )
        batch = await self.get(session.batch_id, caller)
        index = next((i for i, item in enumerate(batch.items) if item.label == scenario), None)
        if index is None:
            raise Conflict(f"scene {scenario!r} was not part of batch {batch.id}")
        job = await self.jobs.create(
            batch.workflow,
            {**batch.params, "prompt": scene.description},
            surface=batch.surface,
            client_key=caller.owner,
            batch_id=batch.id,
            label=scenario,
            max_active=max_active,
        )
        batch, old = await self._replace_item(
            batch, index, BatchItem(job_id=job.id, prompt=scene.description, label=scenario)
        )
        # The replaced job stays (its video may still be in scene_videos) but stops working.
        with suppress(NotFound):
            await self.jobs.stop(old)
        log.info(
            "batch %s: scene %s regenerated as job %s (was %s)", batch.id, scenario, job.id, old
        )
        return batch, job

    async def sync_session(
        self, batch: Batch, jobs: builtins.list[Job | None] | None = None
    ) -> SceneSession | None:
        """Once every job of `batch` has finished, record its videos on its session (if the
        session still points at it). Idempotent; returns the session as stored."""
        if batch.session_id is None:
            return None
        jobs = jobs if jobs is not None else await self.jobs_of(batch)
        if not Tally.of(jobs).finished:
            return None
        videos = [
            SceneVideo(scenario=item.label or str(i), video_url=url, job_id=job.id)
            for i, (item, job) in enumerate(zip(batch.items, jobs, strict=True))
            if job is not None and (url := output_url(job)) is not None
        ]
        for _ in range(CAS_ROUNDS):
            session = await self.store.get_session(batch.session_id)
            if session is None or session.batch_id != batch.id or session.scene_videos == videos:
                return session
            updated = await self.store.update_session(session, scene_videos=videos)
            if updated is not None:
                return updated
        return None

    # -- the joined video ------------------------------------------------------------------

    async def stored_output(self, filename: str, caller: Principal) -> StoredFile:
        """A stored output by its file name, for a caller who may see the job (or, for a
        joined video, the batch) that made it. Outputs are named after their job
        (`<job id>.mp4`, `<job id>_<n>.png`) and joined videos after their batch."""
        stored = await self.outputs.open(filename)
        if caller.admin:
            return stored
        try:
            if filename.startswith(FINAL_PREFIX):
                await self.get(filename.removeprefix(FINAL_PREFIX).rsplit("_", 1)[0], caller)
            else:
                await self.jobs.get(filename.split(".", 1)[0][:JOB_ID_CHARS], caller)
        except NotFound:
            raise NotFound(f"no output named {filename!r}") from None
        return stored

    async def zip_plan(
        self, batch_id: str, caller: Principal | None = None
    ) -> tuple[Batch, Tally, ZipPlan | None]:
        """Every finished video of the batch, in item order, as `job_<n>_<job_id>.mp4`
        (None while none has finished). A video lost from storage is left out (and logged)
        rather than holding back the others."""
        batch = await self.get(batch_id, caller)
        jobs = await self.jobs_of(batch)
        entries = []
        for index, job in enumerate(jobs):
            if job is None or job.finished_video is None:
                continue
            try:
                stored = await self.outputs.open_output(job.finished_video, f"job {job.id}")
            except NotFound as exc:
                log.warning("batch %s: %s; left out of the zip", batch_id, exc.message)
                continue
            entries.append(ZipEntry(f"job_{index}_{job.id}.mp4", stored))
        plan = await plan_zip(entries) if entries else None
        return batch, Tally.of(jobs), plan

    async def final_video(
        self, batch_id: str, caller: Principal | None = None
    ) -> tuple[StoredFile, dict[str, Any]]:
        """The finished scenes joined in scene order (built once per set of finished jobs)."""
        batch = await self.get(batch_id, caller)
        jobs = await self.jobs_of(batch)
        waiting = [
            item.label or item.job_id
            for item, job in zip(batch.items, jobs, strict=True)
            if job is not None and not job.status.finished
        ]
        if waiting:
            raise Conflict(
                f"scenes still generating: {', '.join(waiting)}; join them once they finish",
                status="generating",
            )
        done = [j for j in jobs if j is not None and output_url(j) is not None]
        if not done:
            raise Conflict(
                "no scene of this batch finished successfully; nothing to join", status="failed"
            )
        ids = [job.id for job in done]
        digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:12]
        name = f"{FINAL_PREFIX}{batch.id}_{digest}.mp4"
        async with self._join_lock:
            batch = await self.get(batch_id)
            if batch.final and batch.final.get("filename") == name:
                with suppress(NotFound):  # else lost from storage: joined again
                    return await self.outputs.open(name, "video/mp4"), batch.final
            parts = [job.video.filename for job in done if job.video]
            result: JoinResult = await join_stored(self.outputs, parts, name)
            final = {
                "filename": name,
                "jobs": ids,
                "mode": result.mode,
                "frames": result.frames,
                "width": result.width,
                "height": result.height,
                "fps": result.fps,
            }
            for _ in range(CAS_ROUNDS):
                previous = batch.final
                if await self.store.update_batch(batch, final=final) is not None:
                    if previous and previous.get("filename") != name:
                        await self.outputs.discard([previous["filename"]])
                    break
                batch = await self.get(batch_id)
            log.info(
                "batch %s: joined %d scenes (%s, %d frames)",
                batch_id,
                len(parts),
                result.mode,
                result.frames,
            )
            return await self.outputs.open(name, "video/mp4"), final
