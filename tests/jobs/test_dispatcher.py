"""Every job ends, whatever fails: the dispatcher and the tracker against a scripted ComfyUI
(tests/jobs/fakes.py) and a real SQLite store. Every wait is bounded (WAIT_S) and follows the
job through the event bus; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest
from fastapi import FastAPI

from proxy.api.errors import install_error_handlers
from proxy.errors import ComfyProtocolError, ComfyUnavailable, NoBackend
from proxy.jobs.dispatcher import INTERNAL_ERROR
from proxy.jobs.models import Attempt, Job, JobStatus
from proxy.jobs.tracker import JobTracker
from tests.jobs.fakes import URL, WAIT_S, Harness

FAILED, QUEUED, COMPLETED = JobStatus.FAILED, JobStatus.QUEUED, JobStatus.COMPLETED


def status_is(status):
    return lambda fields: fields.get("status") is status


def tracebacks(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage() and r.exc_info]


async def test_a_database_error_in_the_loop_is_logged_backed_off_and_retried(tmp_path, caplog):
    async with Harness(tmp_path) as h:
        h.store.next_queued_failures = 3
        await h.start()
        job = await h.create()
        final = await h.ended(job.id)
        assert final.status is COMPLETED, final
        assert h.store.next_queued_failures == 0
        assert len(tracebacks(caplog, "the dispatch loop failed")) == 3
        assert h.dispatcher.running and h.dispatcher.loop_failures == 0
        # And it still dispatches afterwards.
        again = await h.ended((await h.create("again")).id)
        assert again.status is COMPLETED
    assert not h.dispatcher.running  # only cancellation (close) ends the loop


async def test_a_defect_in_the_loop_never_ends_it(tmp_path, monkeypatch, caplog):
    async with Harness(tmp_path) as h:
        await h.start()
        original = h.dispatcher._fill
        calls = 0

        async def broken():
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise RuntimeError("simulated defect in the loop")
            await original()

        monkeypatch.setattr(h.dispatcher, "_fill", broken)
        final = await h.ended((await h.create()).id)
        assert final.status is COMPLETED
        assert h.dispatcher.running
        assert tracebacks(caplog, "the dispatch loop failed")


async def _never_running(h: Harness) -> None:
    pass


@pytest.mark.parametrize("path", ["fail", "lost", "released", "internal", "away"])
async def test_a_database_error_while_recording_the_outcome_is_retried(
    tmp_path, monkeypatch, caplog, path
):
    async with Harness(tmp_path, backend_down_timeout_s=0.3) as h:
        expect, text = FAILED, None
        if path == "fail":  # ComfyUI answers an HTTP 500 to /prompt
            h.comfy.on_submit = _raise(ComfyProtocolError("ComfyUI failed on POST /prompt: 500"))
            h.writer.fail(status_is(FAILED), times=2)
            text = "answered unexpectedly"
        elif path == "lost":  # ComfyUI ran it, then had no history of it

            async def forgets(prompt_id):
                h.socket.emit(prompt_id, "execution_start")
                h.socket.emit(prompt_id, "executing", node=None)

            h.comfy.on_submit = forgets
            h.writer.fail(status_is(FAILED), times=2)
            text = "kept no history"
        elif path == "released":  # the first submit times out; the requeue write fails twice
            submit = _raise_once(ComfyUnavailable("did not answer POST /prompt in time"), h)
            h.comfy.on_submit = submit
            h.writer.fail(status_is(QUEUED), times=2)
            expect = COMPLETED
        elif path == "internal":  # a defect in the tracker
            monkeypatch.setattr(JobTracker, "_build_graph", _defect)
            h.writer.fail(status_is(FAILED), times=2)
            text = INTERNAL_ERROR
        else:  # the websocket drops mid-run and never comes back

            async def drops(prompt_id):
                h.socket.emit(prompt_id, "execution_start")
                await asyncio.sleep(0)  # let the tracker see it start before the drop
                h.socket.set_connected(False)

            h.comfy.on_submit = drops
            h.writer.fail(status_is(FAILED), times=2)
            text = "has not been usable for 0.3 s"
        await h.start()
        job = await h.create()
        final = await h.ended(job.id)
        assert final.status is expect, final
        if text is not None:
            assert text in final.error
        assert h.writer.raised == 2
        assert len(tracebacks(caplog, "could not record how it ended")) == 2
        assert not h.dispatcher._runners


async def test_a_handler_that_keeps_failing_falls_back_to_failing_the_job(tmp_path, caplog):
    async with Harness(tmp_path) as h:
        h.comfy.on_submit = _raise(ComfyUnavailable("did not answer POST /prompt in time"))
        h.writer.fail(status_is(QUEUED), times=None)  # the requeue never lands
        await h.start()
        final = await h.ended((await h.create()).id)
        assert final.status is FAILED
        assert final.error == INTERNAL_ERROR
        assert "Error" not in final.error  # no exception class reaches the job
        assert set(h.comfy.withdrawn) == set(h.comfy.submitted)  # nothing left in ComfyUI


async def test_a_prompt_that_hangs_while_the_socket_stays_up_fails_within_the_timeout(tmp_path):
    async with Harness(tmp_path, backend_down_timeout_s=0.5) as h:

        async def hangs(prompt_id):
            # What the HTTP client does with a POST that never answers: a timeout.
            never = asyncio.Event()
            try:
                await asyncio.wait_for(never.wait(), 0.05)
            except TimeoutError:
                raise ComfyUnavailable(
                    f"ComfyUI at {URL} did not answer POST /prompt in time (ReadTimeout)"
                ) from None

        h.comfy.on_submit = hangs
        await h.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        job = await h.create()
        seen = []

        def ended(j):
            seen.append(j.message)
            return j.status.finished

        final = await h.wait(job.id, ended)
        elapsed = loop.time() - began
        assert final.status is FAILED, final
        assert "has not been usable for 0.5 s" in final.error
        assert "did not answer POST /prompt in time" in final.error
        assert any("Waiting for a ComfyUI backend" in (m or "") for m in seen)
        assert len(h.comfy.submitted) >= 2  # it was released and tried again meanwhile
        assert elapsed < 0.5 + 2.0, elapsed  # the limit, plus one more cooldown and attempt
        assert sorted(h.comfy.withdrawn) == sorted(h.comfy.submitted)  # none may run late
        assert h.socket.connected


async def test_with_no_backend_queued_jobs_fail_and_new_ones_are_refused(tmp_path):
    async with Harness(tmp_path, connected=False, no_backend_timeout_s=0.3) as h:
        await h.start()
        waiting = await h.create("waits for nothing")
        final = await h.ended(waiting.id)
        assert final.status is FAILED
        since = h.dispatcher.no_backend_since
        assert since is not None
        assert f"No ComfyUI was reachable since {since.isoformat(timespec='seconds')}" in (
            final.error
        )
        assert URL in final.error and "NO_BACKEND_TIMEOUT_S" in final.error
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", final.error)

        with pytest.raises(NoBackend) as refused:
            await h.create("refused")
        assert refused.value.retry_after_s >= 1
        with pytest.raises(NoBackend):
            await h.jobs.start(final.id)
        pending = await h.create("not started", start=False)  # nothing queued: allowed

        # Through the one error handler every surface uses: 503 with Retry-After.
        app = FastAPI()
        install_error_handlers(app)

        @app.post("/jobs")
        async def create_job() -> dict:
            return (await h.create("over http")).model_dump(mode="json")

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
            r = await http.post("/jobs")
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert "No ComfyUI backend has been reachable since" in r.json()["error"]
        assert "NoBackend" not in r.text

        # A backend comes back: jobs are taken and run again.
        await h.backend_back()
        assert h.dispatcher.no_backend_since is None
        again = await h.ended((await h.jobs.start(pending.id)).id)
        assert again.status is COMPLETED
        assert (await h.ended((await h.jobs.start(final.id)).id)).status is COMPLETED


async def test_no_backend_timeout_zero_waits_forever(tmp_path):
    async with Harness(tmp_path, connected=False, no_backend_timeout_s=0.0) as h:
        await h.start()
        job = await h.create()
        # Several sweeps pass (0.05 s each) and the loop wakes on each: still waiting.
        swept = asyncio.Event()
        original = h.dispatcher._sweep
        rounds = 0

        async def counting():
            nonlocal rounds
            await original()
            rounds += 1
            if rounds >= 5:
                swept.set()

        h.dispatcher._sweep = counting
        await asyncio.wait_for(swept.wait(), WAIT_S)
        assert (await h.store.get(job.id)).status is QUEUED
        assert not h.dispatcher.refusing
        await h.backend_back()
        assert (await h.ended(job.id)).status is COMPLETED


async def test_a_stop_between_storing_outputs_and_recording_them_keeps_nothing(tmp_path):
    async with Harness(tmp_path) as h:
        runner: list[asyncio.Task] = []

        async def stop_lands(file, dest):
            # The outputs are on disk; a stop is recorded before the completion is.
            runner.append(asyncio.current_task())
            job = (await h.store.list())[0]
            await h.writer.update(job.id, expect=(JobStatus.RUNNING,), status=JobStatus.CANCELLED)

        h.comfy.on_download = stop_lands
        await h.start()
        job = await h.create()
        final = await h.ended(job.id)
        await asyncio.wait_for(runner[0], WAIT_S)  # the tracker has finished tidying up
        assert final.status is JobStatus.CANCELLED
        assert (await h.store.get(job.id)).outputs == []
        assert h.output_files() == []


async def test_a_failure_to_record_the_completion_keeps_no_output(tmp_path):
    async with Harness(tmp_path) as h:
        h.writer.fail(status_is(COMPLETED), times=1)
        await h.start()
        final = await h.ended((await h.create()).id)
        assert final.status is FAILED and final.error == INTERNAL_ERROR
        assert final.outputs == [] and h.output_files() == []


async def test_a_reattached_prompt_that_was_never_posted_is_requeued_and_run(tmp_path):
    async with Harness(tmp_path) as h:
        # The proxy recorded the prompt id, then stopped before the POST went out.
        job = await h.create(start=False)
        await h.store.update(
            job.id,
            status=QUEUED,
            backend=URL,
            prompt_id="never-posted",
            attempt=1,
            attempts=[Attempt(number=1, status=QUEUED, backend=URL, prompt_id="never-posted")],
        )
        await h.start()
        final = await h.ended(job.id)
        assert final.status is COMPLETED, final
        assert h.comfy.submitted == [final.prompt_id] and final.prompt_id != "never-posted"
        assert h.output_files() == [f"{job.id}.png"]


async def test_a_lost_running_job_on_the_only_backend_fails(tmp_path):
    async with Harness(tmp_path) as h:
        job = await h.create(start=False)
        await h.store.update(job.id, status=JobStatus.RUNNING, backend=URL, prompt_id="gone")
        await h.start()
        final = await h.ended(job.id)
        assert final.status is FAILED
        assert "no longer knows this job" in final.error
        assert h.comfy.submitted == []


async def test_the_sweep_reattaches_an_orphan(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="proxy.dispatcher")
    async with Harness(tmp_path) as h:
        await h.start()
        # A job in ComfyUI that nothing in this process follows (its runner vanished).
        h.comfy.entries["orphan-prompt"] = _entry("orphan-prompt")
        job = await h.create(start=False)
        await h.store.update(
            job.id, status=JobStatus.RUNNING, backend=URL, prompt_id="orphan-prompt"
        )
        final = await h.ended(job.id)
        assert final.status is COMPLETED, final
        assert final.prompt_id == "orphan-prompt" and h.comfy.submitted == []
        assert [o.filename for o in final.outputs] == [f"{job.id}.png"]
        assert any("re-attached" in r.getMessage() for r in caplog.records)


async def test_the_sweep_requeues_a_claimed_job_that_was_never_submitted(tmp_path):
    async with Harness(tmp_path) as h:
        await h.start()
        job = await h.create(start=False)
        await h.store.update(job.id, status=QUEUED, backend=URL)  # claimed, no runner
        final = await h.ended(job.id)
        assert final.status is COMPLETED
        assert h.comfy.submitted == [final.prompt_id]


async def test_a_release_is_counted_from_the_first_failure_across_claims(tmp_path):
    """The first-failure time is the dispatcher's per job: it survives the job going back to
    the proxy's queue and being claimed again, and is forgotten once the job ends."""
    async with Harness(tmp_path, backend_down_timeout_s=0.3) as h:
        h.comfy.on_submit = _raise(ComfyUnavailable("did not answer POST /prompt in time"))
        await h.start()
        job = await h.create()
        firsts = set()

        def watch(j):
            if j.status is QUEUED and j.id in h.dispatcher._down_since:
                firsts.add(h.dispatcher._down_since[j.id])
            return j.status.finished

        final = await h.wait(job.id, watch)
        assert final.status is FAILED
        assert len(firsts) == 1
        assert job.id not in h.dispatcher._down_since


# -- helpers -------------------------------------------------------------------------------


def _raise(exc):
    async def submit(prompt_id):
        raise exc

    return submit


def _raise_once(exc, h: Harness):
    async def submit(prompt_id):
        if len(h.comfy.submitted) == 1:
            raise exc
        await h.comfy.run_now(prompt_id)

    return submit


async def _defect(self, *, upload):
    raise RuntimeError("simulated defect")


def _entry(prompt_id):
    from tests.jobs.fakes import success_entry

    return success_entry(prompt_id)


def test_storage_full_is_recognised_in_file_and_database_errors():
    import errno
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from proxy.jobs.dispatcher import storage_full

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert storage_full(OperationalError("INSERT", {}, full))
    assert storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not storage_full(OperationalError("INSERT", {}, sqlite3.OperationalError("locked")))
    assert not storage_full(RuntimeError("no"))


# -- replicas: a backend gained, lost, and jobs another replica changes ---------------------------


async def running_job(h: Harness) -> Job:
    """A job that ComfyUI started and keeps running (until the test says otherwise)."""
    started = asyncio.Event()

    async def runs_until_told(prompt_id: str) -> None:
        h.comfy.running.append(prompt_id)
        h.socket.emit(prompt_id, "execution_start")
        started.set()

    h.comfy.on_submit = runs_until_told
    await h.start()
    job = await h.create()
    async with asyncio.timeout(WAIT_S):
        await started.wait()
    return job


async def test_a_lost_backend_is_let_go_without_ending_its_jobs_and_a_gained_one_reattached(
    tmp_path,
):
    async with Harness(tmp_path) as h:
        job = await running_job(h)
        # Another replica takes the backend over: this one stops following, the job goes on.
        h.backend.mine = False
        await h.dispatcher.drop(h.backend)
        assert h.dispatcher._runners == {} and not h.backend.inflight
        current = await h.store.get(job.id)
        assert current is not None and current.status in (QUEUED, JobStatus.RUNNING)
        assert current.backend == URL and current.prompt_id is not None
        h.dispatcher.wake()
        await h.dispatcher._sweep()  # not ours: left to the replica that drives it
        assert h.dispatcher._runners == {}
        # The backend is ours again: its job is re-attached (not submitted again) and ends.
        prompt_id = current.prompt_id
        h.comfy.running.remove(prompt_id)
        await h.comfy.run_now(prompt_id)
        h.backend.mine = True
        h.dispatcher.adopt(h.backend)
        final = await h.ended(job.id)
        assert final.status is COMPLETED, final
        assert h.comfy.submitted == [prompt_id]


async def test_a_job_another_replica_stops_is_followed_no_more(tmp_path):
    async with Harness(tmp_path) as h:
        job = await running_job(h)
        ((task, _backend),) = h.dispatcher._runners.values()
        # What the relay hands on when another replica wrote the stop.
        stopped = await h.store.update(job.id, status=JobStatus.CANCELLED)
        assert stopped is not None
        h.dispatcher.on_remote("updated", stopped)
        assert job.id not in h.dispatcher._runners and not h.backend.inflight
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await h.store.get(job.id)).status is JobStatus.CANCELLED


async def test_a_backend_lost_while_a_job_is_claimed_gets_no_runner_here(tmp_path):
    async with Harness(tmp_path) as h:
        job = await h.create(start=False)
        h.backend.mine = False
        h.dispatcher._spawn(h.backend, job)
        assert h.dispatcher._runners == {} and not h.backend.inflight
