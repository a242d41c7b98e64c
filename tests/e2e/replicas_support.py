"""Several proxies on one PostgreSQL schema, as real processes: `python -m proxy serve` per
replica (each its own DATA_DIR, its stderr in DATA_DIR/replica.log), three stand-in ComfyUIs
they share, outputs in moto's S3 server. Every wait is a poll of an HTTP endpoint with a
deadline; every process is stopped (SIGTERM, then SIGKILL) in teardown.

    async def test_x(cluster: Cluster) -> None:
        a = await cluster.start("a")
        b = await cluster.start("b")
        owners = await cluster.settled_owners()      # backend URL -> replica id, both agree
        ...
        cluster.runs_by_job()                        # job id -> the stand-ins' executions
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from proxy.launcher import free_port
from proxy.settings import ENV_VARS
from tests.conftest import fresh_postgres_schema
from tests.media.test_s3_store import CREDENTIALS, REGION, MotoS3, moto_running
from tests.support import REPO_ROOT, StandinProcess, standin_process

LEASE_TTL_S = 3.0
# What a takeover may take past the lease: the survivor's next renewal round (a third of
# the lease), its websocket connect and the re-attach, on a loaded 2-core VM.
TAKEOVER_MARGIN_S = 5.0
START_TIMEOUT_S = 60.0
WAIT_S = 90.0
BACKENDS = 3
# A job of a few sampler steps at the smallest size (the native API's names).
NATIVE = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4, "fps": 8}
ENDED = {"completed", "failed", "stopped"}
PREFIX = "fastwan/"  # the SaveVideo filename_prefix the proxy gives a job: fastwan/<job id>

T = TypeVar("T")


async def until(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, poll_s: float = 0.1
) -> T:
    """`probe()` again and again until it returns something other than None (or False);
    AssertionError naming `what` and the last value seen once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = await probe()
        except httpx.TransportError as exc:  # a replica starting or just killed
            value, last = None, exc
        else:
            last = value
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s (last seen: {last!r})")
        await asyncio.sleep(poll_s)  # a poll interval, bounded by the deadline


def _environ() -> dict[str, str]:
    """This environment without any setting of the proxy's or the store's (the shell's must
    not leak into a replica)."""
    ours = set(ENV_VARS.values()) | {"COMFYUI_URL", "PORT", "PROXY_HOST", "AWS_PROFILE"}
    ours |= {"AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    return {k: v for k, v in os.environ.items() if k.upper() not in ours}


@dataclass
class Replica:
    """One `python -m proxy serve` process."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    client: httpx.AsyncClient

    def log(self, lines: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text if lines is None else "\n".join(text.splitlines()[-lines:])

    def log_lines(self, *words: str) -> list[str]:
        """The log's lines holding every one of `words`."""
        return [line for line in self.log().splitlines() if all(w in line for w in words)]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no lease released, nothing written."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 10)
        await self.client.aclose()

    async def backends(self) -> list[dict[str, Any]]:
        r = await self.client.get("/api/backends")
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["backends"]
        return rows

    async def owners(self) -> dict[str, str | None]:
        """Backend URL -> the replica id this replica says owns it."""
        return {b["url"]: b.get("owner") for b in await self.backends()}

    async def job(self, job_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        return job

    async def create(self, prompt: str, **extra: Any) -> dict[str, Any]:
        r = await self.client.post("/api/jobs", json={"prompt": prompt, **NATIVE, **extra})
        assert r.status_code in (200, 201), r.text
        job: dict[str, Any] = r.json()
        return job

    async def jobs(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        r = await self.client.get("/api/jobs", params={"limit": 1000})
        assert r.status_code == 200, r.text
        wanted = set(ids)
        return {j["id"]: j for j in r.json()["jobs"] if j["id"] in wanted}


@dataclass
class Cluster:
    """Three stand-ins, one PostgreSQL schema, one bucket, and the replicas started on them."""

    root: Path
    standins: list[StandinProcess]
    database_url: str
    moto: MotoS3
    bucket: str
    replicas: dict[str, Replica] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.standins]

    def env(self, name: str, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
        return {
            **_environ(),
            "DATABASE_URL": self.database_url,
            "COMFYUI_URL": ",".join(self.urls),
            "COMFYUI_PROBE_URL": "off",
            "DATA_DIR": str(data_dir),
            "PORT": str(port),
            "PROXY_HOST": "127.0.0.1",
            "REPLICA_ID": name,
            "LEASE_TTL_S": f"{LEASE_TTL_S:g}",
            "OUTPUT_STORE": f"s3://{self.bucket}/outputs",
            "S3_ENDPOINT_URL": self.moto.url,
            # Through the replica, so that every download is served by the one asked.
            "S3_PROXY_DOWNLOADS": "1",
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
            "WS_RECONNECT_MAX_S": "0.5",
            "WEBHOOK_RETRY_MIN_S": "0.05",
            "WEBHOOK_RETRY_MAX_S": "0.2",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    async def start(self, name: str, *, ready: bool = False, **extra: str) -> Replica:
        """A replica named `name` (REPLICA_ID), once its /health answers 200 naming it (and,
        with `ready`, its /ready answers 200)."""
        data_dir = self.root / f"replica-{name}"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / "replica.log"
        port = free_port()
        with log_path.open("ab") as log:
            process = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "proxy", "serve"],
                cwd=REPO_ROOT,
                env=self.env(name, data_dir, port, **extra),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=url, timeout=30, trust_env=False)
        replica = Replica(name, url, process, data_dir, log_path, client)
        self.replicas[name] = replica

        async def up() -> bool:
            if not replica.alive:
                raise AssertionError(
                    f"replica {name} exited with {process.returncode}:\n{replica.log(40)}"
                )
            health = await client.get("/health")
            if health.status_code != 200:
                return False
            if not ready:
                return True
            return (await client.get("/ready")).status_code == 200

        await until(up, START_TIMEOUT_S, f"replica {name} at {url} healthy")
        return replica

    async def stop_all(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.replicas.values()))

    def live(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.alive]

    async def settled_owners(
        self,
        check: Callable[[dict[str, str | None]], bool] | None = None,
        timeout_s: float = 4 * LEASE_TTL_S + TAKEOVER_MARGIN_S,
        what: str = "every backend owned, the live replicas agreeing",
    ) -> dict[str, str]:
        """Backend URL -> owner, once every backend has an owner among the live replicas,
        every live replica says the same, and `check` (if given) holds."""
        live_ids = {r.name for r in self.live()}

        async def agreed() -> dict[str, str] | None:
            views = [await r.owners() for r in self.live()]
            first = views[0]
            if any(view != first for view in views[1:]):
                return None
            if set(first) != set(self.urls) or any(o not in live_ids for o in first.values()):
                return None
            if check is not None and not check(first):
                return None
            return {url: str(owner) for url, owner in first.items()}

        return await until(agreed, timeout_s, what, poll_s=0.2)

    async def spread_owners(self) -> dict[str, str]:
        """Owners once the backends are spread: no live replica holds more than
        ceil(backends / live replicas) of them."""
        share = math.ceil(len(self.urls) / len(self.live()))
        return await self.settled_owners(
            lambda owners: max(Counter(owners.values()).values()) <= share,
            what=f"the backends spread (at most {share} a replica)",
        )

    async def set_step_seconds(self, seconds: float) -> None:
        for standin in self.standins:
            await asyncio.to_thread(
                standin.control, "POST", "step_seconds", json={"seconds": seconds}
            )

    def executions(self) -> list[dict[str, Any]]:
        """Every prompt every stand-in's worker took (`GET /_standin/executed`), each with
        the stand-in's URL under "standin"."""
        runs: list[dict[str, Any]] = []
        for standin in self.standins:
            body = standin.control("GET", "executed").json()
            runs += [{**run, "standin": standin.url} for run in body["executed"]]
        return runs

    def runs_by_job(self) -> dict[str, list[dict[str, Any]]]:
        """Job id -> its executions on any stand-in (from the filename prefix)."""
        by_job: dict[str, list[dict[str, Any]]] = {}
        for run in self.executions():
            for prefix in run["filename_prefixes"]:
                if prefix.startswith(PREFIX):
                    by_job.setdefault(prefix.removeprefix(PREFIX), []).append(run)
        return by_job

    def logs(self, lines: int = 60) -> str:
        parts = [
            f"--- replica {r.name} ({r.log_path}, exit {r.process.poll()}):\n{r.log(lines)}"
            for r in self.replicas.values()
        ]
        return "\n".join(parts)

    async def wait_ended(
        self, replica: Replica, ids: list[str], timeout_s: float = WAIT_S
    ) -> dict[str, dict[str, Any]]:
        """Every job in `ids` as `replica` lists it, once each has ended."""

        async def ended() -> dict[str, dict[str, Any]] | None:
            jobs = await replica.jobs(ids)
            if len(jobs) == len(ids) and all(j["status"] in ENDED for j in jobs.values()):
                return jobs
            return None

        try:
            return await until(ended, timeout_s, f"{len(ids)} jobs ended", poll_s=0.2)
        except AssertionError as exc:
            jobs = await replica.jobs(ids)
            states = {i: (j["status"], j["backend"]) for i, j in jobs.items()}
            raise AssertionError(f"{exc}\njobs: {states}\n{self.logs()}") from None


def assert_ran_once(cluster: Cluster, ids: list[str]) -> None:
    """Each job in `ids` was executed by exactly one stand-in, exactly once, successfully."""
    runs = cluster.runs_by_job()
    counts = {job_id: len(runs.get(job_id, [])) for job_id in ids}
    twice = {
        job_id: [(r["standin"], r["prompt_id"], r["status"]) for r in runs[job_id]]
        for job_id, n in counts.items()
        if n > 1
    }
    never = [job_id for job_id, n in counts.items() if n == 0]
    assert not twice, f"jobs executed more than once: {twice}"
    assert not never, f"jobs never executed on any stand-in: {never}"
    failed = {i: runs[i][0]["status"] for i in ids if runs[i][0]["status"] != "success"}
    assert not failed, f"executions that did not succeed: {failed}"


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema in the local PostgreSQL, dropped once the replicas are gone (the
    cluster fixture depends on this one)."""
    async with fresh_postgres_schema() as url:
        yield url


@pytest.fixture
async def cluster(tmp_path: Path, pg_schema: str) -> AsyncIterator[Cluster]:
    """Three fast stand-ins (50 ms a sampler step), a fresh schema, a fresh bucket; the
    replicas a test starts are stopped before any of them goes, and their logs printed (shown
    with a failure)."""
    with ExitStack() as stack:
        moto = stack.enter_context(moto_running())
        standins = [
            stack.enter_context(standin_process(tmp_path / f"comfy{i}", step_seconds=0.05))
            for i in range(BACKENDS)
        ]
        made = Cluster(tmp_path, standins, pg_schema, moto, moto.bucket())
        try:
            yield made
        finally:
            await made.stop_all()
            print(made.logs(200))
