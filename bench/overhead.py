"""What the proxy adds to one job: through the proxy (submit, follow SSE, download the MP4)
vs driving the same stand-in directly (POST /prompt, follow its websocket, GET /view)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path

import httpx

from bench.common import SMALL, direct_jobs, proxy_for, run_jobs
from proxy.testing import standin_process

ROUNDS = 5


async def direct(url: str, seed: int) -> float:
    """A job the way a careful script would drive ComfyUI itself."""
    run = await direct_jobs(url, [{"prompt": "direct", "seed": seed, **SMALL}])
    return run.wall_s


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
