"""Shared set-up for the benchmarks: the stand-in and the proxy as processes on loopback
ports, the proxy's CPU and memory from /proc, an SSE reader that knows both event names,
ComfyUI driven directly (the baseline), and the PASS/MISS lines every benchmark prints."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

from proxy.launcher import free_port, standin_command
from proxy.settings import ENV_VARS, Settings
from proxy.testing import REPO_ROOT, ProxyServer, proxy_server

SMALL = {"width": 128, "height": 128, "length": 17, "steps": 8, "fps": 16}
PROFILE = "fastwan-h200"
WORKFLOW = "fastwan_t2v"


# --- sizes and job bodies ---------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int, int]:
    """`1280x704x121` -> (width, height, length)."""
    width, height, length = (int(part) for part in text.lower().split("x"))
    return width, height, length


def size_name(size: tuple[int, int, int]) -> str:
    return "x".join(str(n) for n in size)


def job_body(size: tuple[int, int, int], seed: int, prompt: str, **extra: Any) -> dict[str, Any]:
    """A FastWAN `/generate` body at `size` (8 steps, 24 fps: the workflow's defaults)."""
    width, height, length = size
    return {
        "prompt": prompt,
        "seed": seed,
        "width": width,
        "height": height,
        "length": length,
        **extra,
    }


# --- child processes and /proc ----------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included, live and ended), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def machine() -> str:
    """`2 x AMD EPYC ..., Python 3.11.9`, for the report lines."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {model}, Python {sys.version.split()[0]}"


@dataclass
class Child:
    """A server process of ours on a loopback port."""

    name: str
    url: str
    process: asyncio.subprocess.Process
    data_dir: Path
    record: Path | None = None  # the instrumented stand-in's JSON lines (`bench.standin_probe`)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def records(self) -> list[dict[str, Any]]:
        if self.record is None or not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]


async def stop_process(
    process: asyncio.subprocess.Process, timeout_s: float = 15.0, sig: int = signal.SIGTERM
) -> None:
    if process.returncode is not None:
        return
    process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()


def profile_supported() -> bool:
    """Whether the stand-in has timing profiles (`--profile`, `--speed`)."""
    from comfyui.standin.server import start_standin

    return "profile" in inspect.signature(start_standin).parameters


def profile_note(profile: str | None, speed: float) -> str:
    if profile is None:
        return "stand-in: no timing profile"
    if not profile_supported():
        return (
            f"stand-in: PROFILE {profile!r} MISSING (no --profile in this stand-in): "
            "jobs are as fast as the stand-in's own compute, the figures mean little"
        )
    return f"stand-in: profile {profile}, speed {speed:g} (GPU time / {speed:g})"


@asynccontextmanager
async def standin(
    data_dir: Path,
    *,
    profile: str | None = None,
    speed: float = 1.0,
    step_seconds: float = 0.0,
    record: bool = True,
    timeout_s: float = 60.0,
) -> AsyncIterator[Child]:
    """The stand-in ComfyUI as a process (instrumented: `bench.standin_probe`), with the
    timing profile when this stand-in has one."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    cmd = standin_command(data_dir, free_port(), step_seconds)
    cmd[1:3] = ["-m", "bench.standin_probe"]
    record_path = data_dir.parent / f"{data_dir.name}.record.jsonl" if record else None
    if record_path is not None:
        cmd += ["--record", str(record_path)]
    if profile is not None and profile_supported():
        cmd += ["--profile", profile, "--speed", str(speed)]
    cmd += ["--log-level", "WARNING"]
    process = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout_s)).decode().strip()
        if not line.startswith("STANDIN READY "):
            raise RuntimeError(f"the stand-in did not start: {line!r}")
        yield Child("stand-in", line.removeprefix("STANDIN READY "), process, data_dir, record_path)
    finally:
        await stop_process(process)


def _clean_environ() -> dict[str, str]:
    """This environment without any proxy setting (the shell's must not leak in)."""
    ours = set(ENV_VARS.values()) | {"COMFYUI_URL", "COMFYUI_URLS", "PORT", "PROXY_HOST"}
    return {k: v for k, v in os.environ.items() if k.upper() not in ours}


@asynccontextmanager
async def proxy_process(
    comfyui_urls: list[str],
    data_dir: Path,
    *,
    ready_path: str = "/ready",
    timeout_s: float = 60.0,
    sample: Path | None = None,
    **settings: Any,
) -> AsyncIterator[Child]:
    """`python -m proxy serve` on a free loopback port; `settings` become its environment
    (`backend_queue_depth=2` -> BACKEND_QUEUE_DEPTH=2). Ready once `ready_path` answers 200.
    With `sample`, run under `bench.sampler`, which writes its report there at exit."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    port = free_port()
    env = {
        **_clean_environ(),
        "COMFYUI_URL": ",".join(comfyui_urls),
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "PROXY_HOST": "127.0.0.1",
        "LOG_LEVEL": "warning",
        "COMFYUI_PROBE_URL": "off",
        **{ENV_VARS[k]: str(v) for k, v in settings.items()},
    }
    profiler = ["-m", "bench.sampler", str(sample)] if sample is not None else []
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *profiler,
        "-m",
        "proxy",
        "serve",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_up(url, process, ready_path, timeout_s)
        yield Child("proxy", url, process, data_dir)
    finally:
        # uvicorn re-raises the signal it stopped on: SIGINT ends in KeyboardInterrupt, which
        # `python -m proxy` catches, so the sampler still writes its report at exit.
        await stop_process(process, sig=signal.SIGINT if sample else signal.SIGTERM)


async def wait_up(
    url: str, process: asyncio.subprocess.Process, path: str, timeout_s: float = 60.0
) -> None:
    """Until `url + path` answers 200; fails when the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if (await client.get(path)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # a starting process; bounded by the deadline
    raise RuntimeError(f"{url}{path} did not answer 200 within {timeout_s:.0f} s")


def print_sample(path: Path, lines: int = 60) -> None:
    """The sampler's report (`bench.sampler`), as written when the proxy stopped."""
    if not path.exists():
        print(f"  (no sampler report at {path})")
        return
    print(f"-- where the proxy's main thread was busy ({path}):")
    print("\n".join(path.read_text().splitlines()[:lines]))


def http(url: str, timeout_s: float = 60.0, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=timeout_s, trust_env=False, **kw)


# --- the proxy in this process (older benchmarks) ---------------------------------------------


@asynccontextmanager
async def proxy_for(urls: list[str], data_dir: Path, **kw: object) -> AsyncIterator[ProxyServer]:
    async with proxy_server(Settings(data_dir=data_dir, comfyui_urls=urls, **kw)) as server:
        yield server


# --- server-sent events -----------------------------------------------------------------------


@dataclass
class SseEvent:
    name: str  # "job" (state changes, the whole job) or "progress" (progress only)
    data: dict[str, Any]
    t: float  # time.monotonic() when the event was complete on this side

    @property
    def job(self) -> dict[str, Any]:
        """The fields both names carry: id, status, progress, stage, step, steps, eta_s..."""
        return self.data["job"] if self.name == "job" else self.data


async def sse_events(lines: AsyncIterable[str | bytes]) -> AsyncIterator[SseEvent]:
    """Events from an SSE response's lines (httpx `aiter_lines()`, aiohttp `content`)."""
    name, data = "message", []
    async for raw in lines:
        line = (raw.decode() if isinstance(raw, bytes) else raw).rstrip("\r\n")
        if not line:
            if data:
                payload = json.loads("\n".join(data))
                yield SseEvent(name, payload, time.monotonic())
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


async def follow(
    client: httpx.AsyncClient,
    path: str,
    on_event: Callable[[SseEvent], bool],
    *,
    opened: asyncio.Event | None = None,
    timeout_s: float = 600.0,
) -> None:
    """Read the SSE stream at `path` until `on_event` returns True (bounded by `timeout_s`);
    `opened` is set once the response headers are in (the stream is subscribed)."""
    async with asyncio.timeout(timeout_s):
        async with client.stream("GET", path, timeout=httpx.Timeout(timeout_s)) as stream:
            stream.raise_for_status()
            if opened is not None:
                opened.set()
            async for event in sse_events(stream.aiter_lines()):
                if on_event(event):
                    return
    raise RuntimeError(f"the event stream {path} ended early")


async def submit(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/generate", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"POST /generate: HTTP {response.status_code} {response.text[:300]}")
    return str(response.json()["job_id"])


ENDED = ("completed", "failed", "stopped")


class Watcher:
    """One client of `/api/events`, subscribed before the first job is submitted, keeping
    every event per job id (a job's first events may arrive before its POST's answer).

        async with Watcher(client) as watch:
            job_id = await watch.submit(body)
            await watch.wait([job_id])          # completed, else RuntimeError
            watch.events[job_id]                # every SseEvent of that job, in order
    """

    def __init__(
        self, client: httpx.AsyncClient, path: str = "/api/events", timeout_s: float = 900.0
    ) -> None:
        self.client = client
        self.path = path
        self.timeout_s = timeout_s
        self.events: dict[str, list[SseEvent]] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def _ended_event(self, job_id: str) -> asyncio.Event:
        return self._ended.setdefault(job_id, asyncio.Event())

    def _on_event(self, event: SseEvent) -> bool:
        job_id = str(event.job.get("id", ""))
        self.events.setdefault(job_id, []).append(event)
        if event.job.get("status") in ENDED:
            self._ended_event(job_id).set()
        return False

    async def __aenter__(self) -> Watcher:
        opened = asyncio.Event()
        self._task = asyncio.create_task(
            follow(self.client, self.path, self._on_event, opened=opened, timeout_s=self.timeout_s)
        )
        done, _ = await asyncio.wait(
            [self._task, asyncio.ensure_future(opened.wait())],
            timeout=30,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._task in done or not opened.is_set():
            await self.__aexit__()
            raise RuntimeError(f"could not open {self.path}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, body: dict[str, Any]) -> str:
        return await submit(self.client, body)

    async def wait(self, ids: Iterable[str], timeout_s: float | None = None) -> None:
        """Until every job in `ids` has ended; RuntimeError unless each completed."""
        ids = list(ids)
        waits = [self._ended_event(i).wait() for i in ids]
        reader = self._task
        assert reader is not None
        gathered = asyncio.ensure_future(asyncio.gather(*waits))
        done, _ = await asyncio.wait(
            [gathered, reader],
            timeout=timeout_s or self.timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if gathered not in done:
            gathered.cancel()
            if reader in done:
                reader.result()  # its exception
                raise RuntimeError(f"{self.path} ended early")
            raise TimeoutError(f"jobs still running after {timeout_s or self.timeout_s:.0f} s")
        for job_id in ids:
            last = self.events[job_id][-1].job
            if last.get("status") != "completed":
                raise RuntimeError(f"job {job_id} {last.get('status')}: {last.get('error')}")


async def run_jobs(client: httpx.AsyncClient, count: int, prefix: str) -> float:
    """Submit `count` jobs at once; seconds until the last one has completed."""
    async with Watcher(client) as watch:
        start = time.perf_counter()
        ids = [
            await watch.submit({"prompt": f"{prefix} {i}", "seed": i, **SMALL})
            for i in range(count)
        ]
        await watch.wait(ids, 600)
        return time.perf_counter() - start


# --- ComfyUI driven directly (the baseline) ---------------------------------------------------


def comfy_graph(body: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The API-format graph the proxy would send for a `/generate` body."""
    from proxy.workflows import load_registry

    flow = load_registry(REPO_ROOT / "workflows").get(WORKFLOW)
    return flow.fill(flow.resolve(body), prefix)


@dataclass
class DirectRun:
    wall_s: float
    prompt_ids: list[str]
    started_at: float = 0.0  # time.time() at the first request
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # /view params


async def direct_jobs(
    url: str, bodies: list[dict[str, Any]], timeout_s: float = 600.0
) -> DirectRun:
    """Jobs the way a careful script drives ComfyUI itself: every prompt queued at once on
    one websocket, each output fetched through `/view` as soon as its prompt is done."""
    graphs = [comfy_graph(b, f"direct/{uuid.uuid4().hex[:8]}") for b in bodies]
    client_id = uuid.uuid4().hex
    prompt_ids = [str(uuid.uuid4()) for _ in graphs]
    run = DirectRun(0.0, prompt_ids, time.time())
    start = time.perf_counter()
    async with (
        asyncio.timeout(timeout_s),
        websockets.connect(url.replace("http", "ws", 1) + f"/ws?clientId={client_id}") as ws,
        http(url) as client,
    ):

        async def fetch(prompt_id: str) -> None:
            entry = (await client.get(f"/history/{prompt_id}")).json()[prompt_id]
            items = [item for ui in entry["outputs"].values() for item in ui.get("images", [])]
            run.outputs[prompt_id] = items
            for item in items:
                (await client.get("/view", params=item)).raise_for_status()

        for graph, prompt_id in zip(graphs, prompt_ids, strict=True):
            body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
            (await client.post("/prompt", json=body)).raise_for_status()
        pending, fetches = set(prompt_ids), []
        async for frame in ws:
            msg = json.loads(frame) if isinstance(frame, str) else {}
            data = msg.get("data", {})
            if msg.get("type") == "executing" and data.get("node") is None:
                if data.get("prompt_id") in pending:
                    pending.discard(data["prompt_id"])
                    fetches.append(asyncio.create_task(fetch(data["prompt_id"])))
                    if not pending:
                        break
            elif msg.get("type") == "execution_error":
                raise RuntimeError(f"ComfyUI: {data.get('exception_message')}")
        await asyncio.gather(*fetches)
    run.wall_s = time.perf_counter() - start
    return run


# --- what ComfyUI did (from the instrumented stand-in's record) -------------------------------


def execution_spans(records: Iterable[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """prompt_id -> (execution_start, execution_success) timestamps in ms, as `/history`'s
    `status.messages` give them."""
    spans: dict[str, tuple[int, int]] = {}
    for record in records:
        if record.get("kind") != "done":
            continue
        stamps = {name: data.get("timestamp") for name, data in record["messages"]}
        if "execution_start" in stamps and "execution_success" in stamps:
            spans[record["prompt_id"]] = (stamps["execution_start"], stamps["execution_success"])
    return spans


def idle_gaps_ms(spans: dict[str, tuple[int, int]], prompt_ids: Iterable[str]) -> list[int]:
    """ComfyUI's idle time between consecutive prompts: next start - previous success."""
    ordered = sorted(spans[p] for p in prompt_ids if p in spans)
    return [nxt[0] - prev[1] for prev, nxt in zip(ordered, ordered[1:], strict=False)]


# --- reporting --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(value: float, target: float, *, below: bool = True) -> str:
    """PASS when `value` is at most (below=True) or at least `target`."""
    if value != value:  # NaN
        return "MISS (no data)"
    return "PASS" if (value <= target if below else value >= target) else "MISS"


def check(
    label: str,
    value: float,
    target: float,
    unit: str = "",
    *,
    below: bool = True,
    digits: int = 3,
) -> str:
    """One figure with its target and PASS/MISS, printed and returned."""
    sign = "<=" if below else ">="
    line = (
        f"  {label}: {value:.{digits}f}{unit}  (target {sign} {target:g}{unit})  "
        f"{verdict(value, target, below=below)}"
    )
    print(line)
    return line


def header(title: str, *notes: str) -> None:
    print(f"== {title}  ({time.strftime('%Y-%m-%d %H:%M')}, {machine()})")
    for note in notes:
        print(f"   {note}")
