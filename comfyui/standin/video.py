"""MP4 reading and writing with PyAV: H.264, yuv420p, like ComfyUI's SaveVideo.

Files are written under a hidden temporary name in the target folder and renamed when
complete, so ``/view`` never serves half a file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np


def write_mp4(path: str, frames: np.ndarray, fps: Fraction, metadata: dict[str, str]) -> None:
    """Encode ``uint8 [n, h, w, 3]`` frames to an H.264 yuv420p MP4 at ``path``."""
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"cannot write a video from frames of shape {tuple(frames.shape)}")
    folder, name = os.path.split(path)
    partial = os.path.join(folder, f".{name}.{os.getpid()}.part")
    try:
        with av.open(partial, mode="w", format="mp4") as container:
            for key, value in metadata.items():
                container.metadata[key] = value
            stream = container.add_stream("libx264", rate=fps)
            stream.width = int(frames.shape[2])
            stream.height = int(frames.shape[1])
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast"}
            for frame in frames:
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                container.mux(stream.encode(picture))
            container.mux(stream.encode(None))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@contextlib.contextmanager
def _first_video_stream(path: str) -> Iterator[tuple[Any, Any]]:
    """The open container and its first video stream (a ValueError when it has none)."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"No video stream in {os.path.basename(path)}")
        yield container, container.streams.video[0]


def read_video(path: str) -> tuple[np.ndarray, Fraction]:
    """All frames of the first video stream as ``uint8 [n, h, w, 3]``, and its frame rate."""
    with _first_video_stream(path) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError(f"No frames could be decoded from {os.path.basename(path)}")
    return np.stack(frames), Fraction(rate)


def video_dimensions(path: str) -> tuple[int, int]:
    """(width, height) of the first video stream."""
    with _first_video_stream(path) as (_, stream):
        context = stream.codec_context
        return int(context.width), int(context.height)


def video_frame_count(path: str) -> int:
    """How many frames the first video stream holds: from the header, else by its packets."""
    with _first_video_stream(path) as (container, stream):
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)
