"""The data dir rules: placeholders, output naming, annotated names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui.standin import DataDirs, write_placeholder_models

from .conftest import MANIFEST


def test_placeholders_fill_only_what_is_missing(tmp_path: Path) -> None:
    dirs = DataDirs(tmp_path)
    dirs.create()
    real = tmp_path / "models" / "vae" / "wan2.2_vae.safetensors"
    real.write_bytes(b"real weights")
    written = write_placeholder_models(dirs, MANIFEST)
    names = sorted(p.name for p in written)
    assert "wan2.2_vae.safetensors" not in names and len(names) == 3
    assert real.read_bytes() == b"real weights"
    assert all(0 < p.stat().st_size < 100 for p in written)
    assert write_placeholder_models(dirs, MANIFEST) == []


def test_placeholders_refuse_to_leave_the_folder(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [{"folder": "vae", "filename": "../../x.bin"}]}))
    with pytest.raises(ValueError, match="leaves"):
        write_placeholder_models(DataDirs(tmp_path / "d"), manifest)


def test_save_target(tmp_path: Path) -> None:
    dirs = DataDirs(tmp_path)
    dirs.create()
    target = dirs.save_target("video/ComfyUI", 64, 64)
    assert (target.subfolder, target.filename, target.counter) == ("video", "ComfyUI", 1)
    (Path(target.folder) / "ComfyUI_00007_.png").write_bytes(b"")
    (Path(target.folder) / "ComfyUI_notanumber.png").write_bytes(b"")
    assert dirs.save_target("video/ComfyUI", 64, 64).counter == 8
    assert dirs.save_target("ComfyUI", 64, 64).subfolder == ""
    assert dirs.save_target("x/%width%x%height%", 32, 16).filename == "32x16"
    with pytest.raises(Exception, match="outside the output folder"):
        dirs.save_target("../escape", 1, 1)
    with pytest.raises(Exception, match="outside the output folder"):
        dirs.save_target("/abs/path", 1, 1)


def test_annotations(tmp_path: Path) -> None:
    dirs = DataDirs(tmp_path)
    assert dirs.split_annotation("a.png [output]") == ("a.png", dirs.output)
    assert dirs.split_annotation("a.png [temp]") == ("a.png", dirs.temp)
    assert dirs.split_annotation("sub/a.png") == ("sub/a.png", None)
    assert dirs.annotated_path("sub/a.png") == str(Path(dirs.input, "sub", "a.png"))
