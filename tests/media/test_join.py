"""Joining videos: packet remux when the parts match, re-encode when they do not; every frame
kept, in order."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from proxy.media.join import choose_mode, join_videos, join_videos_sync, part_info
from proxy.media.probe import probe_video_sync


def make_video(
    path: Path,
    levels: list[int],
    width: int = 64,
    height: int = 64,
    fps: int = 8,
    preset: str = "ultrafast",
) -> Path:
    """An H.264 MP4 whose frame i is flat grey at `levels[i]` (so order can be checked)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset}
        for level in levels:
            pixels = np.full((height, width, 3), level, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def grey_levels(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [round(float(f.to_ndarray(format="gray").mean())) for f in container.decode(video=0)]


def close(got: list[int], want: list[int]) -> bool:
    return len(got) == len(want) and all(abs(g - w) <= 6 for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])  # medium has B-frames
async def test_matching_parts_are_remuxed_losslessly_in_order(tmp_path, preset):
    levels = [[20 * i + 10 for i in range(n)] for n in (9, 13, 5)]
    parts = [make_video(tmp_path / f"p{i}.mp4", lv, preset=preset) for i, lv in enumerate(levels)]
    assert choose_mode([part_info(p) for p in parts]) == "remux"

    result = await join_videos(parts, tmp_path / "joined.mp4")
    assert result.mode == "remux" and result.frames == 27
    info = probe_video_sync(result.path)
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (64, 64, 27, 8.0)
    assert info["duration_s"] == pytest.approx(27 / 8)
    want = [level for part in parts for level in grey_levels(part)]
    assert grey_levels(result.path) == want  # packets copied: identical pictures
    assert not list(tmp_path.glob(".*.part"))


async def test_different_sizes_and_rates_are_reencoded_to_the_first_part(tmp_path):
    parts = [
        make_video(tmp_path / "a.mp4", [30, 60, 90, 120, 150], 64, 64, 8, "medium"),
        make_video(tmp_path / "b.mp4", [200, 170, 140], 96, 32, 12),
        make_video(tmp_path / "c.mp4", [40] * 9, 64, 64, 8),
    ]
    assert choose_mode([part_info(p) for p in parts]) == "reencode"
    result = join_videos_sync(parts, tmp_path / "joined.mp4")
    assert result.mode == "reencode" and result.frames == 17
    info = probe_video_sync(result.path)
    assert (info["width"], info["height"], info["frames"]) == (64, 64, 17)
    assert info["fps"] == 8.0 and info["codec"] == "h264"
    assert close(grey_levels(result.path), [30, 60, 90, 120, 150, 200, 170, 140] + [40] * 9)


async def test_forced_reencode_of_matching_parts_and_refused_remux(tmp_path):
    a = make_video(tmp_path / "a.mp4", [50] * 5)
    b = make_video(tmp_path / "b.mp4", [100] * 9)
    result = join_videos_sync([a, b], tmp_path / "re.mp4", mode="reencode")
    assert result.mode == "reencode" and probe_video_sync(result.path)["frames"] == 14

    c = make_video(tmp_path / "c.mp4", [10] * 5, fps=24)
    with pytest.raises(ValueError, match="re-encode"):
        join_videos_sync([a, c], tmp_path / "no.mp4", mode="remux")
    assert not (tmp_path / "no.mp4").exists()


async def test_a_part_info_names_size_rate_and_codec(tmp_path):
    info = part_info(make_video(tmp_path / "a.mp4", [1] * 5, 96, 32, 12))
    assert (info.width, info.height, info.rate, info.codec) == (96, 32, Fraction(12), "h264")
    assert info.extradata
