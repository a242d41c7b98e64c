"""Back-to-back jobs on one GPU: does it idle between jobs?

Baseline: queue depth 1 (the next job is submitted only after the previous one finished, as a
naive proxy does). Measured: depth 2 (the next job already waits in ComfyUI's queue).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx

from bench.common import proxy_for, run_jobs
from proxy.testing import standin_process

JOBS = 6
STEP_S = 0.05


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with standin_process(root / "comfy", step_seconds=STEP_S) as standin:
            results = {}
            for depth in (1, 2):
                async with proxy_for(
                    [standin.url], root / f"data{depth}", backend_queue_depth=depth
                ) as proxy:
                    async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as client:
                        await run_jobs(client, 1, f"warm-up {depth}")
                        results[depth] = await run_jobs(client, JOBS, f"depth {depth}")
    base, piped = results[1], results[2]
    print(f"{JOBS} jobs, {STEP_S}s per sampler step, one stand-in GPU")
    print(f"  depth 1 (baseline): {base:6.2f} s  ({base / JOBS:.2f} s/job)")
    print(f"  depth 2           : {piped:6.2f} s  ({piped / JOBS:.2f} s/job)")
    print(f"  ratio depth2/depth1: {piped / base:.3f}  (below 1 = less GPU idle time)")


if __name__ == "__main__":
    asyncio.run(main())
