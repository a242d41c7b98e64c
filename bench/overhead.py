"""What the proxy adds to one job: through the proxy (submit, follow SSE, download the MP4)
vs driving the same stand-in directly (POST /prompt, follow its websocket, GET /view)."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

from bench.common import SMALL, proxy_for, run_jobs
from proxy.testing import REPO_ROOT, standin_process
from proxy.workflows import load_registry

ROUNDS = 5


async def direct(url: str, seed: int) -> float:
    """A job the way a careful script would drive ComfyUI itself."""
    flow = load_registry(REPO_ROOT / "workflows").get("fastwan_t2v")
    graph = flow.fill(flow.resolve({"prompt": "direct", "seed": seed, **SMALL}), f"direct/{seed}")
    client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
    start = time.perf_counter()
    async with (
        websockets.connect(url.replace("http", "ws") + f"/ws?clientId={client_id}") as ws,
        httpx.AsyncClient(base_url=url) as http,
    ):
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        (await http.post("/prompt", json=body)).raise_for_status()
        async for frame in ws:
            msg = json.loads(frame) if isinstance(frame, str) else {}
            data = msg.get("data", {})
            if (
                msg.get("type") == "executing"
                and data.get("node") is None
                and data.get("prompt_id") == prompt_id
            ):
                break
        entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
        for ui in entry["outputs"].values():
            for item in ui.get("images", []):
                (await http.get("/view", params=item)).raise_for_status()
    return time.perf_counter() - start


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with standin_process(root / "comfy", step_seconds=0) as standin:
            await direct(standin.url, 10_000)  # warm-up
            base = [await direct(standin.url, 10_001 + i) for i in range(ROUNDS)]
            async with proxy_for([standin.url], root / "data") as proxy:
                async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as client:
                    await run_jobs(client, 1, "warm-up")
                    via = [await run_jobs(client, 1, f"proxy {i}") for i in range(ROUNDS)]
    b, v = statistics.median(base), statistics.median(via)
    print(f"one {SMALL['width']}x{SMALL['height']}x{SMALL['length']} job, median of {ROUNDS}")
    print(f"  direct to ComfyUI (baseline): {b * 1000:7.1f} ms")
    print(f"  through the proxy           : {v * 1000:7.1f} ms  (stores the MP4, probes it)")
    print(f"  ratio proxy/direct          : {v / b:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
