"""Progress truth: does the bar move with time, and does the ETA tell the truth?

A sequence of jobs at mixed sizes, interleaved (each size `--rounds` times), one after the
other, on the stand-in with its GPU timing profile (FastWan2.2-5B on an H200, divided by
`--speed`), through the proxy (a process of its own), followed by one SSE client on
`/api/events`. The client keeps, per job, every progress value and ETA it was shown and when.

For every job after the first of its size (the proxy learns a size's node times from its
first run), with elapsed % = time since the job was first shown `running` over the time until
it was shown `completed`:

- the largest gap between the progress % shown and elapsed %, at every moment the display
  changes (the value just before and just after each event) [<= 10 points];
- the ETA's relative error at 10/25/50/75 % of the elapsed time: |ETA shown then - actual
  time left| / actual time left, where "shown" is the last `eta_s` received [<= 15 %].

Baselines from the same events: the bar a client gets from ComfyUI's own `progress` messages
(sampler step / steps, sticky), and an ETA a client extrapolates from the proxy's percent
(elapsed x (100 - p) / p).

    .venv/bin/python -m bench.progress [--speed 1] [--rounds 3] [--sizes 64x64x5,...]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PROFILE,
    SseEvent,
    Watcher,
    check,
    header,
    http,
    job_body,
    parse_size,
    profile_note,
    proxy_process,
    size_name,
    standin,
)

SIZES = "64x64x5,320x192x33,640x352x61,1280x704x121"
CHECKPOINTS = (0.10, 0.25, 0.50, 0.75)
GAP_TARGET = 10.0  # points
ETA_TARGET = 0.15  # relative


@dataclass
class Shown:
    """What the client was shown of one job, in arrival order."""

    size: tuple[int, int, int]
    events: list[SseEvent]

    def span(self) -> tuple[float, float]:
        running = [e.t for e in self.events if e.job.get("status") == "running"]
        completed = [e.t for e in self.events if e.job.get("status") == "completed"]
        if not running or not completed:
            raise RuntimeError("the job was never shown running and then completed")
        return running[0], completed[0]

    def series(self, value: str) -> list[tuple[float, float | None]]:
        """(time, value) of every event from running to completed."""
        t0, t1 = self.span()
        return [(e.t, e.job.get(value)) for e in self.events if t0 <= e.t <= t1]


def last_before(series: list[tuple[float, float | None]], t: float) -> tuple[float, float] | None:
    """The last (time, value) received at or before `t` with a value, if any."""
    found = None
    for when, value in series:
        if when > t:
            break
        if value is not None:
            found = (when, value)
    return found


def steps_only(events: list[tuple[float, dict]]) -> list[tuple[float, float]]:
    """The bar from ComfyUI's own step reports: step / steps, kept until the next one."""
    out, last = [], 0.0
    for t, job in events:
        if job.get("status") == "completed":
            last = 100.0
        elif job.get("step") and job.get("steps"):
            last = 100.0 * job["step"] / job["steps"]
        out.append((t, last))
    return out


def largest_gap(
    series: list[tuple[float, float]], t0: float, t1: float, *, stale: bool = True
) -> tuple[float, float]:
    """(largest |shown % - elapsed %|, elapsed % where it was), at every event: the value just
    after it, and (`stale`) the one shown until then."""
    worst, where, before = 0.0, 0.0, None
    for t, value in series:
        elapsed = 100.0 * (t - t0) / (t1 - t0)
        for shown in (before, value) if stale else (value,):
            if shown is not None and abs(shown - elapsed) > worst:
                worst, where = abs(shown - elapsed), elapsed
        before = value
    return worst, where


@dataclass
class EtaErrors:
    shown: list[float | None]  # the last eta_s received, as is (the target figure)
    counted_down: list[float | None]  # that eta_s less the time since it was received
    extrapolated: list[float | None]  # baseline: elapsed x (100 - p) / p


def eta_errors(shown: Shown) -> EtaErrors:
    """Relative ETA errors at each checkpoint of the elapsed time."""
    t0, t1 = shown.span()
    etas, percents = shown.series("eta_s"), shown.series("progress")
    out = EtaErrors([], [], [])

    def error(guess: float | None, left: float) -> float | None:
        return None if guess is None else abs(guess - left) / left

    for fraction in CHECKPOINTS:
        t = t0 + fraction * (t1 - t0)
        left = t1 - t
        received = last_before(etas, t)
        out.shown.append(error(received and received[1], left))
        out.counted_down.append(error(received and received[1] - (t - received[0]), left))
        p = last_before(percents, t)
        out.extrapolated.append(error((t - t0) * (100 - p[1]) / p[1] if p and p[1] else None, left))
    return out


def fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "   none"
    return f"{value * 100:6.1f}%" if pct else f"{value:6.1f}"


async def main(
    speed: float,
    rounds: int,
    sizes: list[tuple[int, int, int]],
    timeout_s: float,
    show_events: bool = False,
) -> None:
    order = [size for _ in range(rounds) for size in sizes]
    header(
        "bench.progress: progress % vs elapsed %, ETA error",
        profile_note(PROFILE, speed),
        f"{len(order)} jobs one after another, sizes interleaved: "
        + ", ".join(map(size_name, sizes)),
    )
    jobs: dict[str, Shown] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with (
            standin(root / "comfy", profile=PROFILE, speed=speed) as comfy,
            proxy_process([comfy.url], root / "data") as proxy,
            http(proxy.url) as client,
            Watcher(client, timeout_s=timeout_s * len(order)) as watch,
        ):
            for n, size in enumerate(order):
                job_id = await watch.submit(job_body(size, 1000 + n, f"progress {n}"))
                await watch.wait([job_id], timeout_s)
                jobs[job_id] = Shown(size, watch.events[job_id])
            timings = (await client.get("/api/workflows/fastwan_t2v/timings")).status_code
    report(jobs, timings, show_events)


def trace(n: int, shown: Shown) -> None:
    """Every event of one job: time since running, elapsed %, name, status, %, stage, ETA."""
    t0, t1 = shown.span()
    for e in shown.events:
        job = e.job
        print(
            f"    job {n} {e.t - t0:+7.3f}s {100 * (e.t - t0) / (t1 - t0):6.1f}% {e.name:<8} "
            f"{job.get('status'):<9} {job.get('progress')!s:>5} {job.get('stage')!s:<16} "
            f"step {job.get('step')}/{job.get('steps')} eta {job.get('eta_s')}"
        )


def worst(values: list[float | None], missing: float = float("inf")) -> float:
    """The largest error; a missing ETA counts as `missing` (infinitely wrong, or NaN to
    leave it out)."""
    errors = [missing if v is None else v for v in values]
    return max((e for e in errors if e == e), default=float("nan"))


def report(jobs: dict[str, Shown], timings_status: int, show_events: bool = False) -> None:
    print(
        f"{'job':>3} {'size':>13} {'run s':>6} {'events':>6} | largest gap, points: "
        f"{'shown':>5} {'@elapsed':>8} {'at events':>9} {'steps-only':>10} | ETA error at "
        + " ".join(f"{int(c * 100):>5}%" for c in CHECKPOINTS)
        + " | worst counted down, extrapolated"
    )
    seen: set[tuple[int, int, int]] = set()
    scored: dict[str, list[float]] = {
        k: [] for k in ("gap", "model", "naive", "eta", "down", "ext")
    }
    by_size: dict[tuple[int, int, int], tuple[float, float]] = {}
    for n, shown in enumerate(jobs.values()):
        first = shown.size not in seen
        seen.add(shown.size)
        t0, t1 = shown.span()
        progress = [(t, v or 0.0) for t, v in shown.series("progress")]
        gap, where = largest_gap(progress, t0, t1)
        model, _ = largest_gap(progress, t0, t1, stale=False)
        in_run = [(e.t, e.job) for e in shown.events if t0 <= e.t <= t1]
        naive, _ = largest_gap(steps_only(in_run), t0, t1)
        eta = eta_errors(shown)
        print(
            f"{n:3d} {size_name(shown.size):>13} {t1 - t0:6.2f} {len(progress):6d} | "
            f"{'':>21}{gap:5.1f} {where:7.0f}% {model:9.1f} {naive:10.1f} | {'':>12}"
            + " ".join(fmt(e) for e in eta.shown)
            + f" | {fmt(worst(eta.counted_down))} {fmt(worst(eta.extrapolated, float('nan')))}"
            + ("  (first of its size: learns, not scored)" if first else "")
        )
        if show_events:
            trace(n, shown)
        if first:
            continue
        for key, value in (
            ("gap", gap),
            ("model", model),
            ("naive", naive),
            ("eta", worst(eta.shown)),
            ("down", worst(eta.counted_down)),
            ("ext", worst(eta.extrapolated, missing=float("nan"))),
        ):
            scored[key].append(value)
        g, e = by_size.get(shown.size, (0.0, 0.0))
        by_size[shown.size] = (max(g, gap), max(e, worst(eta.shown)))
    if timings_status != 200:
        print(f"  (GET /api/workflows/fastwan_t2v/timings: HTTP {timings_status})")
    if not scored["gap"]:
        print("  no scored job (every size ran once): use --rounds 2 or more")
        return
    print(
        "worst by size: "
        + ", ".join(
            f"{size_name(size)} gap {g:.1f} / ETA {e * 100:.1f} %"
            for size, (g, e) in by_size.items()
        )
    )
    print(f"worst over {len(scored['gap'])} scored jobs:")
    gap, eta = max(scored["gap"]), max(scored["eta"])
    check("largest gap, progress % shown - elapsed %", gap, GAP_TARGET, " points", digits=1)
    check("largest ETA relative error, as shown", eta * 100, ETA_TARGET * 100, " %", digits=1)
    naive, ext = max(scored["naive"]), worst(scored["ext"], float("nan"))
    print(
        f"  the model alone (value at each event; ETA counted down since received): "
        f"gap {max(scored['model']):.1f} points, ETA {max(scored['down']) * 100:.1f} %"
    )
    print(
        f"  baseline, ComfyUI's step reports alone: gap {naive:.1f} points "
        f"(proxy/baseline {gap / naive if naive else float('nan'):.2f})"
    )
    print(
        f"  baseline, ETA extrapolated from the percent: {ext * 100:.1f} % "
        f"(proxy/baseline {eta / ext if ext else float('nan'):.2f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=1.0, help="stand-in: GPU time / speed")
    parser.add_argument("--rounds", type=int, default=3, help="jobs per size (the first learns)")
    parser.add_argument("--sizes", default=SIZES, help="WxHxL, comma-separated")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a job may take")
    parser.add_argument("--events", action="store_true", help="print every event of every job")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    asyncio.run(main(args.speed, args.rounds, sizes, args.timeout, args.events))
