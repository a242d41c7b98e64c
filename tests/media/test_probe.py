"""The output probe reads containers and packets only, and gives the numbers decoding gives."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from comfyui.standin.video import write_mp4
from proxy.media.probe import decoded_frame_count, probe_video_sync


def h264(path: Path, frames: int, size: tuple[int, int], fps: int, **options: str) -> Path:
    """A real H.264 MP4 (x264's own defaults: B-frames and reordering unless told otherwise)."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = options
        rng = np.random.default_rng(frames)
        for i in range(frames):
            pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            pixels[:, : (i * 7) % size[0]] = 0  # motion, so frames differ in kind
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("frames", "size", "fps", "options"),
    [
        (1, (64, 64), 24, {}),
        (9, (128, 96), 16, {}),
        (49, (160, 96), 24, {"bf": "3", "b-pyramid": "normal"}),
        (17, (64, 128), 8, {"preset": "ultrafast"}),
    ],
)
def test_the_probe_matches_decoding_on_real_h264(
    tmp_path: Path, frames: int, size: tuple[int, int], fps: int, options: dict[str, str]
) -> None:
    path = h264(tmp_path / "clip.mp4", frames, size, fps, **options)
    info = probe_video_sync(path)
    assert info["frames"] == decoded_frame_count(path) == frames
    assert (info["width"], info["height"]) == size and info["fps"] == fps
    assert info["duration_s"] == round(frames / fps, 3) and info["codec"] == "h264"


def test_the_probe_matches_decoding_on_the_standins_videos(tmp_path: Path) -> None:
    frames = np.zeros((13, 96, 160, 3), dtype=np.uint8)
    frames[:, :, ::2] = 200
    path = tmp_path / "standin.mp4"
    write_mp4(str(path), frames, Fraction(24), {"prompt": "x"})
    info = probe_video_sync(path)
    assert info["frames"] == decoded_frame_count(path) == 13
    assert (info["width"], info["height"], info["fps"]) == (160, 96, 24.0)
