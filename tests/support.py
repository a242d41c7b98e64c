"""Test helpers: the loopback servers (shared with the benchmarks, in `proxy.testing`) and the
rule for material from `../shared`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.launcher import free_port
from proxy.settings import Settings
from proxy.testing import (
    MANIFEST,
    REPO_ROOT,
    ProxyServer,
    StandinProcess,
    bound_socket,
    follow_job,
    proxy_server,
    standin_process,
)

__all__ = [
    "MANIFEST",
    "REPO_ROOT",
    "ProxyServer",
    "StandinProcess",
    "bound_socket",
    "closed_port_url",
    "follow_job",
    "offline_settings_for",
    "proxy_server",
    "require_shared",
    "standin_process",
]

SHARED = REPO_ROOT.parent / "shared"


def require_shared(path: Path) -> Path:
    """`path` under ../shared. Where it is absent the test is skipped (a user's checkout may
    lack it), except in CI, which always lays ../shared beside the checkout: there a missing
    one is a failure, so the tests that need it can never pass by not running."""
    if path.exists():
        return path
    message = f"{path} is missing (the shared/ folder beside the checkout)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI always has it", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


def offline_settings_for(data_dir: Path, **kw: object) -> Settings:
    """Settings of a proxy whose only backend never answers (connection refused at once):
    jobs stay queued, and tests move them along with the job writer, as the tracker would."""
    defaults: dict[str, object] = {
        "data_dir": data_dir,
        "comfyui_urls": [closed_port_url()],
        "ws_reconnect_min_s": 5.0,
        "ws_reconnect_max_s": 30.0,
    }
    return Settings(**{**defaults, **kw})
