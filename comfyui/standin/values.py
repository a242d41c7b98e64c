"""The values that flow along links, standing in for ComfyUI's MODEL, CLIP, VAE, LATENT, VIDEO.

IMAGE is a numpy ``uint8`` array ``[frames, height, width, 3]`` (ComfyUI uses float tensors in
0..1; uint8 keeps long clips small). MASK is ``float32 [frames, height, width]``. The model
types only carry names: nothing is loaded. A LATENT records its size in latent units and
whatever the decoder needs to draw the test pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from . import video


@dataclass(frozen=True)
class ModelRef:
    """A diffusion model, with the LoRAs and sampling shift applied to it."""

    unet_name: str
    weight_dtype: str
    loras: tuple[tuple[str, float], ...] = ()
    shift: float | None = None


@dataclass(frozen=True)
class ClipRef:
    clip_name: str
    type: str
    device: str


@dataclass(frozen=True)
class VaeRef:
    """A VAE and its compression: 16x spatial, 4x temporal for the Wan 2.2 VAE."""

    vae_name: str
    spatial: int = 16
    temporal: int = 4


@dataclass(frozen=True)
class Conditioning:
    text: str


@dataclass(frozen=True)
class RenderSpec:
    """What a sampler run asked for; the decoder draws it into the frames."""

    text: str
    negative: str
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float


@dataclass
class Latent:
    """A video latent: ``batch`` items of ``frames`` temporal slots of ``height x width`` cells."""

    batch: int
    frames: int
    height: int
    width: int
    # i2v: the start frames at decode size, uint8 [n, H, W, 3].
    start_frames: np.ndarray | None = field(default=None, repr=False)
    # v2v: the encoded frames at decode size, uint8 [n, H, W, 3].
    source_frames: np.ndarray | None = field(default=None, repr=False)
    render: RenderSpec | None = None


@dataclass
class VideoComponents:
    images: np.ndarray
    audio: Any
    frame_rate: Fraction


class VideoFromComponents:
    """A VIDEO made of frames in memory (CreateVideo)."""

    def __init__(self, images: np.ndarray, audio: Any, frame_rate: Fraction) -> None:
        self._components = VideoComponents(images, audio, frame_rate)

    def get_components(self) -> VideoComponents:
        return self._components

    def get_dimensions(self) -> tuple[int, int]:
        images = self._components.images
        return int(images.shape[2]), int(images.shape[1])

    def get_frame_count(self) -> int:
        return len(self._components.images)

    def save_to(self, path: str, metadata: dict[str, str]) -> None:
        components = self._components
        fps = Fraction(round(components.frame_rate * 1000), 1000)
        video.write_mp4(path, components.images, fps, metadata)


class VideoFromFile:
    """A VIDEO read from a file on demand (LoadVideo)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def get_components(self) -> VideoComponents:
        frames, fps = video.read_video(self._path)
        return VideoComponents(frames, None, fps)

    def get_dimensions(self) -> tuple[int, int]:
        return video.video_dimensions(self._path)

    def get_frame_count(self) -> int:
        return video.video_frame_count(self._path)

    def save_to(self, path: str, metadata: dict[str, str]) -> None:
        components = self.get_components()
        video.write_mp4(path, components.images, components.frame_rate, metadata)
