"""Join videos end to end into one MP4 (the scenes of a session become one film).

Two ways, chosen per call:

- **remux**: when every part has the same size, frame rate, time base and codec
  configuration (the H.264 extradata: SPS/PPS), the compressed packets are copied into one
  container with shifted timestamps. Nothing is decoded, so it is fast and lossless.
- **re-encode**: otherwise every frame is decoded, scaled to the first part's size and encoded
  with libx264 at the first part's frame rate. Every frame is kept (parts at another rate are
  retimed, not resampled), so the result has exactly the sum of the parts' frames.

Only the first video stream of each part is used (FastWAN outputs have no audio). The result
is written under a hidden temporary name beside `dest` and renamed when complete. PyAV work is
blocking: call `join_videos` (a worker thread), not `join_videos_sync`, from the event loop;
`join_stored` joins outputs of an `OutputStore`, wherever it keeps them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

from proxy.media.storage import OutputStore

Mode = Literal["remux", "reencode"]


@dataclass(frozen=True)
class PartInfo:
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    codec: str
    extradata: bytes | None

    def compatible(self, other: PartInfo) -> bool:
        return self == other


@dataclass(frozen=True)
class JoinResult:
    path: Path
    mode: Mode
    frames: int
    width: int
    height: int
    fps: float


def part_info(path: Path) -> PartInfo:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        return PartInfo(
            width=ctx.width,
            height=ctx.height,
            rate=Fraction(rate),
            time_base=Fraction(stream.time_base or Fraction(1, 90000)),
            codec=ctx.name,
            extradata=bytes(ctx.extradata) if ctx.extradata else None,
        )


def choose_mode(infos: Sequence[PartInfo]) -> Mode:
    first = infos[0]
    return "remux" if all(info.compatible(first) for info in infos[1:]) else "reencode"


def _remux(parts: Sequence[Path], out: av.container.OutputContainer) -> int:
    frames = 0
    offset = 0  # where the next part starts, in the output time base
    last_dts: int | None = None
    ostream = None
    for part in parts:
        with av.open(str(part)) as container:
            stream = container.streams.video[0]
            if ostream is None:
                ostream = out.add_stream_from_template(stream)
                ostream.time_base = stream.time_base
            tb = stream.time_base or Fraction(1, 90000)
            start = stream.start_time or 0
            end = offset
            frame_ticks = max(1, round(1 / (Fraction(stream.average_rate or 24) * tb)))
            for packet in container.demux(stream):
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's end-of-stream marker
                raw_pts = packet.pts if packet.pts is not None else packet.dts
                raw_dts = packet.dts if packet.dts is not None else packet.pts
                assert raw_pts is not None and raw_dts is not None  # one of them is set
                pts = raw_pts - start + offset
                dts = raw_dts - start + offset
                if last_dts is not None and dts <= last_dts:
                    dts = last_dts + 1
                pts = max(pts, dts)
                last_dts = dts
                duration = packet.duration or frame_ticks
                end = max(end, pts + duration)
                packet.pts, packet.dts = pts, dts
                packet.stream = ostream
                packet.time_base = tb
                out.mux(packet)
                frames += 1
            offset = end
    return frames


def _reencode(parts: Sequence[Path], out: av.container.OutputContainer, first: PartInfo) -> int:
    ostream = out.add_stream("libx264", rate=first.rate)
    ostream.width, ostream.height = first.width, first.height
    ostream.pix_fmt = "yuv420p"
    ostream.options = {"preset": "veryfast", "crf": "18"}
    tick = Fraction(1) / first.rate
    frames = 0
    for part in parts:
        with av.open(str(part)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                picture = frame.reformat(width=first.width, height=first.height, format="yuv420p")
                picture.pts = frames
                picture.time_base = tick
                out.mux(ostream.encode(picture))
                frames += 1
    out.mux(ostream.encode(None))
    return frames


def join_videos_sync(parts: Sequence[Path], dest: Path, *, mode: Mode | None = None) -> JoinResult:
    """Join `parts` in order into `dest` (`mode` forces a way; by default the best one)."""
    if not parts:
        raise ValueError("nothing to join")
    infos = [part_info(p) for p in parts]
    chosen: Mode = mode or choose_mode(infos)
    if chosen == "remux" and choose_mode(infos) != "remux":
        raise ValueError("the parts differ in size, rate or codec configuration; re-encode them")
    temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with av.open(str(temp), mode="w", format="mp4") as out:
            if chosen == "remux":
                frames = _remux(parts, out)
            else:
                frames = _reencode(parts, out, infos[0])
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    first = infos[0]
    return JoinResult(dest, chosen, frames, first.width, first.height, float(first.rate))


async def join_videos(parts: Sequence[Path], dest: Path, *, mode: Mode | None = None) -> JoinResult:
    return await asyncio.to_thread(join_videos_sync, list(parts), dest, mode=mode)


async def join_stored(
    store: OutputStore, names: Sequence[str], dest_name: str, *, mode: Mode | None = None
) -> JoinResult:
    """Join stored outputs, in order, into the stored output `dest_name`. A store that keeps
    them elsewhere (a bucket) hands them over as local copies in a temporary folder, and
    takes the joined file back once it is complete; nothing of a failed join is kept."""
    async with store.reading(names) as parts, store.writing(dest_name, "video/mp4") as dest:
        return await join_videos(parts, dest, mode=mode)
