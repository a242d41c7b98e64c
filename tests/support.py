"""Test helpers: the loopback servers (shared with the benchmarks, in `proxy.testing`) and the
rule for material from `../shared`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    "follow_job",
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
