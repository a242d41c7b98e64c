"""The launcher's real code paths: a ComfyUI checkout started from COMFYUI_DIR (here a fake
checkout whose main.py takes ComfyUI's flags and runs the stand-in), and the stand-in."""

from __future__ import annotations

import sys
import textwrap

import httpx
import pytest

from proxy.launcher import LaunchError, extra_model_paths, launch_comfyui, launch_standin
from proxy.settings import REPO_ROOT

FAKE_MAIN = textwrap.dedent(
    """
    # A stand-in for ComfyUI's main.py: same flags, serves the stand-in.
    import argparse, os, pathlib, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen"); parser.add_argument("--port")
    parser.add_argument("--extra-model-paths-config")
    args = parser.parse_args()
    here = pathlib.Path(__file__).parent
    (here / "seen-config.yaml").write_text(pathlib.Path(args.extra_model_paths_config).read_text())
    sys.path.insert(0, {repo!r})
    os.chdir({repo!r})
    sys.argv = ["standin", "--host", args.listen, "--port", args.port,
                "--data-dir", str(here / "base"), "--with-models", {manifest!r}]
    import runpy
    runpy.run_module("comfyui.standin", run_name="__main__")
    """
)


async def test_starts_a_comfyui_checkout_with_our_custom_nodes_and_models(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text(
        FAKE_MAIN.format(repo=str(REPO_ROOT), manifest=str(REPO_ROOT / "comfyui" / "models.json"))
    )
    monkeypatch.setenv("COMFYUI_PYTHON", sys.executable)
    models = tmp_path / "models"
    proc = await launch_comfyui(comfy, tmp_path / "data", models, port=0, timeout_s=60)
    try:
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{proc.url}/system_stats")).json()
        assert stats["devices"]
        config = (comfy / "seen-config.yaml").read_text()
        assert f"custom_nodes: {REPO_ROOT / 'custom_nodes'}" in config
        assert f"base_path: {models}" in config and "loras: loras/" in config
    finally:
        await proc.stop()
    assert proc.process.returncode is not None


async def test_a_folder_that_is_not_comfyui_is_refused(tmp_path):
    with pytest.raises(LaunchError, match="no main.py"):
        await launch_comfyui(tmp_path, tmp_path / "data", None)


async def test_a_comfyui_that_dies_while_starting_is_reported(tmp_path, monkeypatch):
    (tmp_path / "main.py").write_text("import sys; sys.exit(3)\n")
    monkeypatch.setenv("COMFYUI_PYTHON", sys.executable)
    with pytest.raises(LaunchError, match="exited with code 3"):
        await launch_comfyui(tmp_path, tmp_path / "data", None, port=0, timeout_s=30)


async def test_launches_the_standin(tmp_path):
    proc = await launch_standin(tmp_path / "standin", port=0, step_seconds=0)
    try:
        async with httpx.AsyncClient() as client:
            files = (await client.get(f"{proc.url}/models/diffusion_models")).json()
        assert "wan2.2_ti2v_5B_fp16.safetensors" in files
    finally:
        await proc.stop()


def test_model_paths_without_a_models_dir_only_add_custom_nodes(tmp_path):
    text = extra_model_paths(tmp_path, None).read_text()
    assert "custom_nodes:" in text and "base_path" not in text
