"""Fixtures of the workflow tests that run the proxy: the stand-in ComfyUI as a process, and
a copy of the shipped workflows folder the test may change."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import StandinProcess, standin_process

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    with standin_process(tmp_path / "comfy", step_seconds=0.05) as proc:
        yield proc


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The shipped workflows, copied (the seed surfaces need fastwan_t2v)."""
    folder = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, folder)
    return folder
