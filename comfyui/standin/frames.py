"""Frame synthesis and image operations on ``uint8 [n, h, w, 3]`` arrays.

The test pattern: colour bars that scroll a little every frame, a block that crosses the
bottom edge over the clip, and a text panel naming the prompt, the seed and the frame number,
so a person can tell which job made a video and that it is synthetic. The panel is drawn with
Pillow's default font, scaled to the frame; it is clipped, never an error, on tiny frames.
"""

from __future__ import annotations

import functools
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .values import RenderSpec

# SMPTE-like bar colours: white, yellow, cyan, green, magenta, red, blue.
_BARS = np.array(
    [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
    ],
    dtype=np.uint8,
)
_PANEL_RGBA = (0, 0, 0, 170)
_TEXT_RGB = (255, 255, 255)
_MAX_PROMPT_LINES = 3

SCALE_METHODS = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    return font.getlength(text)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels, at most a few lines, the last one ellipsized."""
    text = " ".join(text.split()) or "(empty prompt)"
    average = max(1.0, _text_width(font, "abcdefghij") / 10)
    lines = textwrap.wrap(text, width=max(1, int(width / average)), break_long_words=True)
    if len(lines) > _MAX_PROMPT_LINES:
        lines = lines[:_MAX_PROMPT_LINES]
        lines[-1] = lines[-1][: max(1, len(lines[-1]) - 1)] + "…"
    return lines


class _Panel:
    """The text panel of one clip: static lines rendered once, the frame counter per frame."""

    def __init__(self, width: int, height: int, spec: RenderSpec, batch_index: int) -> None:
        size = max(6, min(width // 18, height // 9, 36))
        self.font = _font(size)
        self.pad = max(1, size // 4)
        self.line_height = size + max(1, size // 5)
        usable = max(1, width - 4 * self.pad)
        seed_line = f"seed {spec.seed}" + (f"  batch {batch_index}" if batch_index else "")
        self.lines = ["STAND-IN (synthetic)", *_wrap(spec.text, self.font, usable), seed_line]
        counter_width = _text_width(self.font, "frame 00000/00000")
        text_width = max([_text_width(self.font, line) for line in self.lines] + [counter_width])
        self.width = min(width, int(text_width) + 2 * self.pad + 1)
        self.height = min(height, (len(self.lines) + 1) * self.line_height + 2 * self.pad)
        self.origin = (self.pad, self.pad)
        base = Image.new("RGBA", (self.width, self.height), _PANEL_RGBA)
        draw = ImageDraw.Draw(base)
        for row, line in enumerate(self.lines):
            draw.text(
                (self.pad, self.pad + row * self.line_height), line, font=self.font, fill=_TEXT_RGB
            )
        self.base = base

    def draw(self, frame: np.ndarray, index: int, count: int) -> None:
        panel = self.base.copy()
        ImageDraw.Draw(panel).text(
            (self.pad, self.pad + len(self.lines) * self.line_height),
            f"frame {index + 1}/{count}",
            font=self.font,
            fill=_TEXT_RGB,
        )
        x, y = self.origin
        h = min(self.height, frame.shape[0] - y)
        w = min(self.width, frame.shape[1] - x)
        if h <= 0 or w <= 0:
            return
        region = Image.fromarray(frame[y : y + h, x : x + w]).convert("RGBA")
        region.alpha_composite(panel.crop((0, 0, w, h)))
        frame[y : y + h, x : x + w] = np.asarray(region.convert("RGB"))


def pattern_frame(width: int, height: int, index: int, count: int, seed: int) -> np.ndarray:
    """Scrolling colour bars (order rotated by the seed) and a block crossing the bottom."""
    columns = np.arange(width)
    shift = index * max(1, width // 48)
    bar = ((columns + shift) * 7 // max(1, width) + seed) % 7
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = _BARS[bar]
    band = max(1, height // 6)
    frame[height - band :] = 24
    block = max(1, min(band, width // 8))
    x = 0 if count <= 1 else (width - block) * index // (count - 1)
    frame[height - band :, x : x + block] = 235
    return frame


def _tint(seed: int) -> np.ndarray:
    hue = seed % 360
    rgb = Image.new("HSV", (1, 1), (hue * 255 // 360, 200, 230)).convert("RGB").getpixel((0, 0))
    return np.array(rgb, dtype=np.float32)


def render_clip(
    *,
    width: int,
    height: int,
    count: int,
    spec: RenderSpec | None,
    start_frames: np.ndarray | None = None,
    source_frames: np.ndarray | None = None,
    batch_index: int = 0,
) -> np.ndarray:
    """The frames a decoder produces for one latent batch item."""
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    if spec is None:
        # Never sampled: what an empty latent decodes to, plus any encoded frames.
        frames[:] = 128
        _paste(frames, source_frames if source_frames is not None else start_frames)
        return frames
    seed = spec.seed + batch_index
    panel = _Panel(width, height, spec, batch_index)
    tint = _tint(seed)
    kept = 0 if start_frames is None else min(len(start_frames), count)
    for index in range(count):
        if index < kept:
            frames[index] = start_frames[index]
            continue
        picture = pattern_frame(width, height, index, count, seed)
        if source_frames is not None and len(source_frames):
            src = source_frames[min(index, len(source_frames) - 1)].astype(np.float32)
            strength = 0.5 * max(0.0, min(1.0, spec.denoise))
            picture = (src * (1 - strength) + tint * strength).astype(np.uint8)
        elif kept:
            weight = index / max(1, count - 1)
            last = start_frames[kept - 1].astype(np.float32)
            picture = (last * (1 - weight) + picture.astype(np.float32) * weight).astype(np.uint8)
        panel.draw(picture, index, count)
        frames[index] = picture
    return frames


def _paste(frames: np.ndarray, source: np.ndarray | None) -> None:
    if source is None:
        return
    n = min(len(frames), len(source))
    frames[:n] = source[:n]


def crop_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    """Centre-crop height and width down to multiples of ``multiple`` (VAE encode rule)."""
    _, height, width, _ = images.shape
    new_h, new_w = (height // multiple) * multiple, (width // multiple) * multiple
    top, left = (height % multiple) // 2, (width % multiple) // 2
    return images[:, top : top + new_h, left : left + new_w]


def scale_images(
    images: np.ndarray, width: int, height: int, method: str = "bilinear", crop: str = "disabled"
) -> np.ndarray:
    """Resize every frame to ``width x height``; ``crop="center"`` keeps the aspect ratio."""
    _, old_h, old_w, _ = images.shape
    if crop == "center" and old_w and old_h and width and height:
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        images = images[:, y : old_h - y, x : old_w - x]
    resample = SCALE_METHODS[method]
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for index, frame in enumerate(images):
        out[index] = np.asarray(Image.fromarray(frame).resize((width, height), resample))
    return out
