"""Starting the ComfyUI side for `./run.sh`: a real ComfyUI from COMFYUI_DIR (with our
custom_nodes and model paths), or, when nothing is configured, the stand-in.

Child processes are started without blocking the event loop and stopped on exit.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from proxy.settings import REPO_ROOT

log = logging.getLogger("proxy.launcher")

STANDIN_BANNER = """
======================================================================
  No ComfyUI configured (COMFYUI_URL / COMFYUI_DIR): starting the
  STAND-IN ComfyUI. Videos are SYNTHETIC TEST PATTERNS, not FastWAN
  output. Point the proxy at a real ComfyUI for real videos (README).
======================================================================
"""


class LaunchError(RuntimeError):
    """The ComfyUI side could not be started; the message says why and what to do."""


@dataclass
class ManagedProcess:
    name: str
    process: asyncio.subprocess.Process
    url: str
    # Its output and input folders (it was started here, so they are on this machine): the
    # proxy removes a job's files there once it has its own copy.
    output_dir: Path | None = None
    input_dir: Path | None = None

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in the child before exec: on Linux, SIGTERM it when the proxy dies, even by
    SIGKILL, so a ComfyUI or stand-in we started is never left running on its own."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` if nothing listens there, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise LaunchError("no free TCP port on 127.0.0.1")


def comfyui_python(comfyui_dir: Path) -> str:
    """ComfyUI brings its own PyTorch: prefer COMFYUI_PYTHON, then a venv inside its folder."""
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for candidate in (".venv/bin/python", "venv/bin/python", "python_embeded/python.exe"):
        path = comfyui_dir / candidate
        if path.exists():
            return str(path)
    return sys.executable


def extra_model_paths(data_dir: Path, models_dir: Path | None) -> Path:
    """ComfyUI's extra_model_paths.yaml: our custom_nodes, and MODELS_DIR when set."""
    lines = ["fastwan_proxy:", f"    custom_nodes: {REPO_ROOT / 'custom_nodes'}"]
    if models_dir is not None:
        lines.insert(1, f"    base_path: {models_dir}")
        for folder in ("diffusion_models", "text_encoders", "vae", "loras", "checkpoints"):
            lines.append(f"    {folder}: {folder}/")
    path = data_dir / "extra_model_paths.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


async def wait_http_ready(url: str, process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Poll /system_stats until ComfyUI answers, the process dies, or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.returncode is not None:
                raise LaunchError(f"ComfyUI exited with code {process.returncode} while starting")
            try:
                if (await client.get(f"{url}/system_stats")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise LaunchError(f"ComfyUI did not answer at {url} within {timeout_s:.0f} s")
            await asyncio.sleep(0.5)  # polling a starting process; bounded by the deadline


# `/system_stats` of a ComfyUI has these keys (../shared/comfyui-reference/protocol.md); our
# stand-in answers the same, and names itself here.
STANDIN_PYTORCH = "none (ComfyUI stand-in"


async def find_running_comfyui(url: str, timeout_s: float = 1.0) -> str | None:
    """`url` if a ComfyUI answers there (its `/system_stats` has `system` and `devices`),
    else None. Quick: nothing listening is refused at once, a stranger gets `timeout_s`."""
    if url.strip().lower() in ("", "off", "none", "0"):
        return None
    url = url.rstrip("/")
    # No proxy from the environment: this asks this machine, not whatever HTTP_PROXY names.
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
        try:
            response = await client.get(f"{url}/system_stats")
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            log.info("no ComfyUI answers at %s", url)
            return None
    system = body.get("system") if isinstance(body, dict) else None
    devices = body.get("devices") if isinstance(body, dict) else None
    if not isinstance(system, dict) or not isinstance(devices, list):
        log.info("%s answers, but not like a ComfyUI (no system/devices in /system_stats)", url)
        return None
    if str(system.get("pytorch_version", "")).startswith(STANDIN_PYTORCH):
        # Another proxy's stand-in: it dies with that proxy, so this one starts its own.
        log.info("the ComfyUI at %s is another proxy's stand-in; not using it", url)
        return None
    return url


async def launch_comfyui(
    comfyui_dir: Path,
    data_dir: Path,
    models_dir: Path | None,
    port: int = 8188,
    timeout_s: float = 300.0,
) -> ManagedProcess:
    main = comfyui_dir / "main.py"
    if not main.is_file():
        raise LaunchError(f"COMFYUI_DIR={comfyui_dir} has no main.py: is it a ComfyUI checkout?")
    port = free_port(port)
    config = extra_model_paths(data_dir, models_dir)
    cmd = [
        comfyui_python(comfyui_dir),
        str(main),
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--extra-model-paths-config",
        str(config),
    ]
    log.info("starting ComfyUI: %s", " ".join(cmd))
    process = await asyncio.create_subprocess_exec(
        *cmd, cwd=str(comfyui_dir), preexec_fn=die_with_parent
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_http_ready(url, process, timeout_s)
    except BaseException:
        await ManagedProcess("comfyui", process, url).stop()
        raise
    # Started without --output-directory / --input-directory: ComfyUI's defaults.
    return ManagedProcess("comfyui", process, url, comfyui_dir / "output", comfyui_dir / "input")


def standin_command(
    data_dir: Path,
    port: int,
    step_seconds: float,
    *,
    with_models: bool = True,
    profile: str | None = None,
    speed: float = 1.0,
) -> list[str]:
    """How to run the stand-in (from the repository root); it prints one READY line. With a
    timing `profile` (see `comfyui.standin.timing`), every node takes a GPU-like time divided
    by `speed`, and `step_seconds` is not used."""
    cmd = [
        sys.executable,
        "-m",
        "comfyui.standin",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--step-seconds",
        str(step_seconds),
    ]
    if with_models:
        cmd += ["--with-models", str(REPO_ROOT / "comfyui" / "models.json")]
    if profile is not None:
        cmd += ["--profile", profile, "--speed", str(speed)]
    return cmd


async def launch_standin(
    data_dir: Path,
    port: int = 8188,
    step_seconds: float = 0.25,
    timeout_s: float = 60.0,
    *,
    profile: str | None = None,
    speed: float = 1.0,
) -> ManagedProcess:
    sys.stderr.write(STANDIN_BANNER)
    cmd = standin_command(data_dir, free_port(port), step_seconds, profile=profile, speed=speed)
    process = await asyncio.create_subprocess_exec(
        *cmd, cwd=str(REPO_ROOT), stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise LaunchError(f"the stand-in did not start within {timeout_s:.0f} s") from None
    text = line.decode().strip()
    if not text.startswith("STANDIN READY "):
        await process.wait()
        raise LaunchError(f"the stand-in failed to start (exit {process.returncode}): {text}")
    url = text.removeprefix("STANDIN READY ").strip()
    return ManagedProcess("standin", process, url, data_dir / "output", data_dir / "input")
