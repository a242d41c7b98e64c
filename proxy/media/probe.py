"""What a stored media file is: size, frames, fps (PyAV; run in a worker thread)."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Any

import av

mimetypes.add_type("video/mp4", ".mp4")
mimetypes.add_type("video/webm", ".webm")
mimetypes.add_type("image/webp", ".webp")


def content_type_of(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def probe_video_sync(path: Path) -> dict[str, Any]:
    """Width, height, frame count, fps and duration of a video file, read from the container
    and its packets: nothing is decoded, so a 121-frame 1280x704 video costs what reading its
    headers costs, not what decoding every frame would."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # One packet per frame for the codecs ComfyUI writes (H.264, H.265, VP9, AV1);
        # demuxing reads the packets' bytes, never decodes them. The empty packet at the end
        # is the demuxer's flush marker.
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        fps = float(stream.average_rate) if stream.average_rate else None
        return {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "frames": frames,
            "fps": fps,
            "duration_s": round(frames / fps, 3) if fps else None,
            "codec": stream.codec_context.name,
        }


def decoded_frame_count(path: Path) -> int:
    """Frames by decoding every one: the slow reference `probe_video_sync` is checked against."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


async def probe_video(path: Path) -> dict[str, Any]:
    return await asyncio.to_thread(probe_video_sync, path)
