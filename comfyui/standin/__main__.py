"""Command line: ``python -m comfyui.standin --host H --port P --data-dir D --step-seconds S``.

``--profile fastwan-h200 --speed 20`` makes every node take a GPU's share of the job, twenty
times faster than that GPU (see ``timing``).

Prints exactly one line to stdout when listening, ``STANDIN READY http://HOST:PORT``, so a
parent process can wait for it; everything else goes to stderr. Stops on SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .server import BANNER, start_standin
from .timing import PROFILES, checked_speed


def _speed(text: str) -> float:
    try:
        return checked_speed(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m comfyui.standin",
        description="A stand-in for ComfyUI 0.3.64 that makes synthetic test-pattern videos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8188, help="port (0 picks a free one)")
    parser.add_argument(
        "--data-dir", required=True, help="base folder holding models/, input/, output/, temp/"
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=0.0,
        help="seconds per sampler step (0 = as fast as possible); ignored with --profile",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="timing profile: every node takes a realistic share of a GPU job",
    )
    parser.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="divides every profiled duration (20 = twenty times faster than the GPU)",
    )
    parser.add_argument(
        "--with-models",
        metavar="MANIFEST",
        help="write tiny placeholder files for the manifest's missing models",
    )
    parser.add_argument(
        "--max-upload-size",
        type=float,
        default=100.0,
        metavar="MB",
        help="largest request body in MB (like ComfyUI's flag)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level for stderr")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    handle = await start_standin(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        step_seconds=args.step_seconds,
        max_upload_mb=args.max_upload_size,
        with_models=args.with_models,
        profile=args.profile,
        speed=args.speed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    logging.getLogger("comfyui.standin").warning(
        "stand-in listening on %s, data dir %s", handle.url, handle.data_dir
    )
    print(f"STANDIN READY {handle.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await handle.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s standin %(levelname)s %(message)s",
    )
    sys.stderr.write(BANNER + "\n")
    sys.stderr.flush()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
