"""`python -m proxy serve` (the proxy alone) and `python -m proxy up` (what ./run.sh runs:
start ComfyUI or the stand-in when needed, then the proxy)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import uvicorn

from proxy.settings import ENV_VARS, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        description="FastWAN proxy: a durable async API in front of ComfyUI.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "Serve the proxy, connecting to the ComfyUI backend(s) given."),
        (
            "up",
            "Start ComfyUI from COMFYUI_DIR, use COMFYUI_URL, or start the stand-in; then serve.",
        ),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        env = ENV_VARS
        cmd.add_argument(
            "--host", help=f"address to listen on (env {env['host']}; default 0.0.0.0)"
        )
        cmd.add_argument("--port", type=int, help=f"port (env {env['port']}; default 8189)")
        cmd.add_argument(
            "--comfyui",
            action="append",
            metavar="URL",
            help=f"a ComfyUI base URL; repeat for several GPUs (env {env['comfyui_urls']}, "
            "comma-separated; default http://127.0.0.1:8188)",
        )
        cmd.add_argument(
            "--comfyui-dir",
            type=Path,
            help=f"a ComfyUI checkout to start (`up` only; env {env['comfyui_dir']})",
        )
        cmd.add_argument(
            "--data-dir",
            type=Path,
            help=f"database, uploads and state (env {env['data_dir']}; default ./data)",
        )
        cmd.add_argument(
            "--output-dir",
            type=Path,
            help=f"where videos are stored (env {env['output_dir']}; default DATA_DIR/outputs)",
        )
        cmd.add_argument(
            "--database-url",
            help=f"SQLAlchemy URL, e.g. postgresql+asyncpg://... (env {env['database_url']}; "
            "default SQLite in DATA_DIR)",
        )
        cmd.add_argument(
            "--log-level",
            choices=["debug", "info", "warning", "error"],
            help=f"(env {env['log_level']}; default info)",
        )
        cmd.add_argument(
            "--standin-step-seconds",
            type=float,
            default=0.25,
            help="`up` with the stand-in: seconds per sampler step (default 0.25)",
        )
    return parser


def settings_from_args(args: argparse.Namespace, **extra: object) -> Settings:
    values: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "comfyui_urls": args.comfyui,
        "comfyui_dir": args.comfyui_dir,
        "data_dir": args.data_dir,
        "output_dir": args.output_dir,
        "database_url": args.database_url,
        "log_level": args.log_level,
    }
    return Settings.from_env(**{**values, **extra})


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def serve(settings: Settings) -> None:
    from proxy.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=True,
        # Open event streams (a browser tab) must not hold a Ctrl+C forever.
        timeout_graceful_shutdown=5,
    )
    print(f"FastWAN proxy on http://{settings.host}:{settings.port}  (API docs: /docs)", flush=True)
    await uvicorn.Server(config).serve()


async def up(args: argparse.Namespace) -> None:
    from proxy.launcher import launch_comfyui, launch_standin

    settings = settings_from_args(args)
    child = None
    try:
        if args.comfyui or os.environ.get("COMFYUI_URL"):
            logging.getLogger("proxy").info("using ComfyUI at %s", ", ".join(settings.comfyui_urls))
        elif settings.comfyui_dir:
            child = await launch_comfyui(
                settings.comfyui_dir, settings.data_dir, settings.models_dir
            )
            settings = settings_from_args(args, comfyui_urls=[child.url])
        else:
            standin_dir = settings.data_dir / "standin"
            child = await launch_standin(standin_dir, step_seconds=args.standin_step_seconds)
            settings = settings_from_args(
                args,
                comfyui_urls=[child.url],
                standin=True,
                models_dir=settings.models_dir or standin_dir / "models",
            )
        await serve(settings)
    finally:
        if child is not None:
            await child.stop()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or os.environ.get("LOG_LEVEL") or "info")
    runner = serve(settings_from_args(args)) if args.command == "serve" else up(args)
    try:
        asyncio.run(runner)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
