"""`python -m proxy serve` (the proxy alone) and `python -m proxy up` (what ./run.sh runs:
start ComfyUI or the stand-in when needed, then the proxy)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import uvicorn
from pydantic import ValidationError

from proxy import logs as proxy_logs
from proxy.auth import ExposureRefused, exposure_notice
from proxy.instance import InstanceError, hold_data_dir
from proxy.settings import Settings, env_help

if TYPE_CHECKING:
    from proxy.launcher import ManagedProcess


@dataclass(frozen=True)
class SettingsFlag:
    """A flag that sets one settings field; its variable and default come from the field."""

    flag: str
    field: str
    text: str
    options: dict[str, Any] = dataclass_field(default_factory=dict)


SETTINGS_FLAGS = (
    SettingsFlag("--host", "host", "address to listen on"),
    SettingsFlag("--port", "port", "port", {"type": int}),
    SettingsFlag(
        "--comfyui",
        "comfyui_urls",
        "a ComfyUI base URL; repeat for several GPUs",
        {"action": "append", "metavar": "URL"},
    ),
    SettingsFlag(
        "--comfyui-dir", "comfyui_dir", "a ComfyUI checkout to start, `up` only", {"type": Path}
    ),
    SettingsFlag("--data-dir", "data_dir", "database, uploads and state", {"type": Path}),
    SettingsFlag("--output-dir", "output_dir", "where videos are stored", {"type": Path}),
    SettingsFlag("--database-url", "database_url", "SQLAlchemy URL, e.g. postgresql+asyncpg://..."),
    SettingsFlag(
        "--log-level",
        "log_level",
        "log verbosity",
        {"choices": ["debug", "info", "warning", "error"]},
    ),
)


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
        for flag in SETTINGS_FLAGS:
            cmd.add_argument(
                flag.flag,
                dest=flag.field,
                help=f"{flag.text} ({env_help(flag.field)})",
                **flag.options,
            )
        cmd.add_argument(
            "--standin-profile",
            default=None,
            help="`up` with the stand-in: its timing profile (default fastwan-h200: every node "
            "takes the time it takes FastWAN on one H200, ~16 s for 1280x704x121)",
        )
        cmd.add_argument(
            "--standin-speed",
            type=float,
            default=1.0,
            help="`up` with the stand-in: how many times faster than the profile (default 1)",
        )
        cmd.add_argument(
            "--standin-step-seconds",
            type=float,
            default=None,
            help="`up` with the stand-in: no timing profile, this many seconds per sampler "
            "step and no time for other nodes",
        )
    return parser


def settings_from_args(args: argparse.Namespace, **extra: object) -> Settings:
    """The environment, overridden by the flags given, overridden by `extra`."""
    values = {flag.field: getattr(args, flag.field) for flag in SETTINGS_FLAGS}
    return Settings.from_env(**{**values, **extra})


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log lines as text, or one JSON object each (`LOG_FORMAT=json`); see `proxy.logs`."""
    proxy_logs.configure(level, fmt, stream)


async def serve(settings: Settings) -> None:
    from proxy.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # In JSON mode uvicorn's own lines (startup, access log) must be JSON too: without its
        # logging config they reach the root handler instead of uvicorn's text handlers.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        # X-Forwarded-* are believed from TRUSTED_PROXIES only (proxy.api.links), not from
        # uvicorn's default of any local process.
        proxy_headers=False,
        # Open event streams (a browser tab) must not hold a Ctrl+C forever.
        timeout_graceful_shutdown=5,
    )
    print(f"FastWAN proxy on http://{settings.host}:{settings.port}  (API docs: /docs)", flush=True)
    await uvicorn.Server(config).serve()


def folders_of(child: ManagedProcess, settings: Settings) -> dict[str, Path | None]:
    """The ComfyUI folders of a child we started, as settings; COMFYUI_OUTPUT_DIR and
    COMFYUI_INPUT_DIR still win when set."""
    return {
        "comfyui_output_dir": settings.comfyui_output_dir or child.output_dir,
        "comfyui_input_dir": settings.comfyui_input_dir or child.input_dir,
    }


# The demo's stand-in keeps time like FastWAN on a GPU, so its progress bar looks real.
DEMO_PROFILE = "fastwan-h200"


def standin_timing(args: argparse.Namespace) -> dict[str, Any]:
    """The stand-in's timing from `up`'s flags: a profile (the default one unless only
    --standin-step-seconds is given), or plain sampler-step seconds."""
    if args.standin_profile is None and args.standin_step_seconds is not None:
        return {"step_seconds": args.standin_step_seconds}
    return {"profile": args.standin_profile or DEMO_PROFILE, "speed": args.standin_speed}


async def up(args: argparse.Namespace, settings: Settings) -> None:
    from proxy.launcher import find_running_comfyui, launch_comfyui, launch_standin

    child = None
    try:
        # Given by a flag or COMFYUI_URL, as opposed to the default.
        if "comfyui_urls" in settings.model_fields_set:
            logging.getLogger("proxy").info("using ComfyUI at %s", ", ".join(settings.comfyui_urls))
        elif settings.comfyui_dir:
            child = await launch_comfyui(
                settings.comfyui_dir, settings.data_dir, settings.models_dir
            )
            settings = settings_from_args(
                args, comfyui_urls=[child.url], **folders_of(child, settings)
            )
        elif running := await find_running_comfyui(settings.comfyui_probe_url):
            # A ComfyUI on this machine already (the usual port): real videos, no stand-in.
            logging.getLogger("proxy").info("using the ComfyUI already running at %s", running)
            settings = settings_from_args(args, comfyui_urls=[running])
        else:
            standin_dir = settings.data_dir / "standin"
            child = await launch_standin(standin_dir, **standin_timing(args))
            # The demo follows what is saved in its graph editor (unless told otherwise).
            follow = (
                {} if "comfy_workflows" in settings.model_fields_set else {"comfy_workflows": ["*"]}
            )
            settings = settings_from_args(
                args,
                comfyui_urls=[child.url],
                standin=True,
                models_dir=settings.models_dir or standin_dir / "models",
                **follow,
                **folders_of(child, settings),
            )
        await serve(settings)
    finally:
        if child is not None:
            await child.stop()


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        parser.error(f"invalid settings (flags or environment): {exc}")
    configure_logging(settings.log_level, settings.log_format)
    try:
        notice = exposure_notice(
            settings.host,
            bool(settings.api_keys or settings.admin_api_keys),
            settings.allow_no_auth,
        )
    except ExposureRefused as exc:
        print(f"fastwan-proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.getLogger("proxy").log(
        logging.WARNING if notice.startswith("WARNING") else logging.INFO, "%s", notice
    )
    try:
        # Before anything starts (the stand-in included): one proxy per data dir.
        with hold_data_dir(settings):
            asyncio.run(_run(args, settings))
    except InstanceError as exc:
        print(f"fastwan-proxy: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


async def _run(args: argparse.Namespace, settings: Settings) -> None:
    await (serve(settings) if args.command == "serve" else up(args, settings))


if __name__ == "__main__":
    main()
