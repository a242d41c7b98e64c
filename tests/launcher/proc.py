"""`python -m proxy ...` as a real child process, for the tests of what only the command line
does (the single-process lock, `up`'s choice of ComfyUI, stopping on a signal)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from proxy.launcher import free_port
from proxy.settings import REPO_ROOT

READY = "Application startup complete"


def proxy_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment minus whatever the shell says about ComfyUI and the database, plus a
    free port, `data_dir`, and `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COMFYUI_URL", "COMFYUI_DIR", "DATABASE_URL", "COMFYUI_PROBE_URL")
    }
    env.update(PORT=str(free_port()), DATA_DIR=str(data_dir), PROXY_HOST="127.0.0.1")
    env.update(extra)
    return env


def nowhere() -> str:
    """A ComfyUI URL on which nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class Proxy:
    process: asyncio.subprocess.Process
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def text(self) -> str:
        return "".join(self.log)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Read stderr until uvicorn says the app has started."""
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await self.process.stderr.readline()).decode()
                assert line, f"the proxy exited before it was ready:\n{self.text}"
                self.log.append(line)
                if READY in line:
                    return

    async def finish(self, timeout_s: float = 30.0) -> int:
        """Wait for the exit, collecting the rest of stderr; the exit code."""
        assert self.process.stderr is not None
        rest = await asyncio.wait_for(self.process.stderr.read(), timeout_s)
        self.log.append(rest.decode())
        return await asyncio.wait_for(self.process.wait(), timeout_s)


@asynccontextmanager
async def running_proxy(command: str, env: dict[str, str], *args: str) -> AsyncIterator[Proxy]:
    """`python -m proxy <command>`; stopped with SIGINT (then killed) if still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        command,
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    proxy = Proxy(process, int(env["PORT"]))
    try:
        yield proxy
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await proxy.finish(20)
            except TimeoutError:
                process.kill()
                await process.wait()
