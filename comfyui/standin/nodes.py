"""The node classes the stand-in runs, on real numpy frames (no torch, no models).

Each node is a function ``fn(ctx, /, **inputs) -> NodeResult``, called with the same keyword
inputs ComfyUI would pass (a stray input gives the same TypeError). Sizes follow the real
nodes: a Wan 2.2 latent has ``(length - 1) // 4 + 1`` temporal slots of 16x16 pixels, and
decoding gives ``(t - 1) * 4 + 1`` frames, so a length that is not 4k+1 rounds down.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from . import apiinputs
from . import frames as fr
from .paths import DataDirs
from .values import (
    ClipRef,
    Conditioning,
    Latent,
    ModelRef,
    RenderSpec,
    VaeRef,
    VideoFromComponents,
    VideoFromFile,
)


class NodeContext(Protocol):
    """What a running node may use from the executor."""

    dirs: DataDirs
    prompt: dict[str, Any]
    extra_data: dict[str, Any]

    def sampler_step(self, value: int, total: int) -> None:
        """Spend one step's time, then report step ``value`` of ``total`` (may interrupt)."""


@dataclass
class NodeResult:
    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


class VideoContainer(str, enum.Enum):
    AUTO = "auto"
    MP4 = "mp4"


# --- loaders --------------------------------------------------------------------------------


def unet_loader(ctx: NodeContext, /, *, unet_name: str, weight_dtype: str) -> NodeResult:
    ctx.dirs.model_path_or_raise("diffusion_models", unet_name)
    return NodeResult((ModelRef(unet_name, weight_dtype),))


def clip_loader(
    ctx: NodeContext, /, *, clip_name: str, type: str = "stable_diffusion", device: str = "default"
) -> NodeResult:
    ctx.dirs.model_path_or_raise("text_encoders", clip_name)
    return NodeResult((ClipRef(clip_name, type, device),))


def vae_loader(ctx: NodeContext, /, *, vae_name: str) -> NodeResult:
    if vae_name == "pixel_space":
        return NodeResult((VaeRef(vae_name, spatial=1, temporal=1),))
    ctx.dirs.model_path_or_raise("vae", vae_name)
    return NodeResult((VaeRef(vae_name),))


def lora_loader_model_only(
    ctx: NodeContext, /, *, model: ModelRef, lora_name: str, strength_model: float
) -> NodeResult:
    if strength_model == 0:
        return NodeResult((model,))
    ctx.dirs.model_path_or_raise("loras", lora_name)
    return NodeResult((replace(model, loras=(*model.loras, (lora_name, strength_model))),))


def model_sampling_sd3(ctx: NodeContext, /, *, model: ModelRef, shift: float) -> NodeResult:
    return NodeResult((replace(model, shift=shift),))


def clip_text_encode(ctx: NodeContext, /, *, text: str, clip: ClipRef) -> NodeResult:
    return NodeResult((Conditioning(text),))


# --- latents and sampling -------------------------------------------------------------------


def wan22_image_to_video_latent(
    ctx: NodeContext,
    /,
    *,
    vae: VaeRef,
    width: int,
    height: int,
    length: int,
    batch_size: int,
    start_image: np.ndarray | None = None,
) -> NodeResult:
    latent = Latent(
        batch=batch_size, frames=(length - 1) // 4 + 1, height=height // 16, width=width // 16
    )
    if start_image is not None:
        scaled = fr.scale_images(start_image[:length], width, height, "bilinear", "center")
        scaled = fr.crop_to_multiple(scaled, 16)
        # The VAE keeps (n - 1) // 4 * 4 + 1 of n encoded frames.
        latent.start_frames = scaled[: (len(scaled) - 1) // 4 * 4 + 1]
    return NodeResult((latent,))


def ksampler(
    ctx: NodeContext,
    /,
    *,
    model: ModelRef,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    denoise: float = 1.0,
) -> NodeResult:
    for step in range(1, steps + 1):
        ctx.sampler_step(step, steps)
    spec = RenderSpec(
        text=positive.text,
        negative=negative.text,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler_name=sampler_name,
        scheduler=scheduler,
        denoise=denoise,
    )
    return NodeResult((replace(latent_image, render=spec),))


def vae_decode(ctx: NodeContext, /, *, samples: Latent, vae: VaeRef) -> NodeResult:
    count = (samples.frames - 1) * vae.temporal + 1
    height, width = samples.height * vae.spatial, samples.width * vae.spatial
    clips = [
        fr.render_clip(
            width=width,
            height=height,
            count=count,
            spec=samples.render,
            start_frames=samples.start_frames,
            source_frames=samples.source_frames,
            batch_index=index,
        )
        for index in range(samples.batch)
    ]
    return NodeResult((np.concatenate(clips),))


def vae_encode(ctx: NodeContext, /, *, pixels: np.ndarray, vae: VaeRef) -> NodeResult:
    cropped = fr.crop_to_multiple(pixels, vae.spatial)
    slots = (len(cropped) - 1) // vae.temporal + 1
    kept = cropped[: (slots - 1) * vae.temporal + 1]
    latent = Latent(
        batch=1,
        frames=slots,
        height=cropped.shape[1] // vae.spatial,
        width=cropped.shape[2] // vae.spatial,
        source_frames=kept,
    )
    return NodeResult((latent,))


# --- video ----------------------------------------------------------------------------------


def create_video(
    ctx: NodeContext, /, *, images: np.ndarray, fps: float, audio: Any = None
) -> NodeResult:
    return NodeResult((VideoFromComponents(images, audio, Fraction(fps)),))


def save_video(
    ctx: NodeContext,
    /,
    *,
    video: VideoFromComponents | VideoFromFile,
    filename_prefix: str,
    format: str,
    codec: str,
) -> NodeResult:
    width, height = video.get_dimensions()
    target = ctx.dirs.save_target(filename_prefix, width, height)
    extension = {VideoContainer.AUTO: "mp4", VideoContainer.MP4: "mp4"}[VideoContainer(format)]
    if codec not in ("auto", "h264"):
        raise ValueError("Only H264 codec is supported for now")
    file = f"{target.filename}_{target.counter:05}_.{extension}"
    video.save_to(os.path.join(target.folder, file), _metadata(ctx))
    saved = {"filename": file, "subfolder": target.subfolder, "type": "output"}
    return NodeResult((), {"images": [saved], "animated": [True]})


def load_video(ctx: NodeContext, /, *, file: str) -> NodeResult:
    return NodeResult((VideoFromFile(ctx.dirs.annotated_path(file)),))


def get_video_components(ctx: NodeContext, /, *, video: Any) -> NodeResult:
    components = video.get_components()
    return NodeResult((components.images, components.audio, float(components.frame_rate)))


def _metadata(ctx: NodeContext) -> dict[str, str]:
    values: dict[str, Any] = dict(ctx.extra_data.get("extra_pnginfo") or {})
    values["prompt"] = ctx.prompt
    return {key: json.dumps(value) for key, value in values.items()}


# --- images ---------------------------------------------------------------------------------


def save_image(
    ctx: NodeContext,
    /,
    *,
    images: np.ndarray,
    filename_prefix: str = "ComfyUI",
    prompt: Any = None,
    extra_pnginfo: Any = None,
) -> NodeResult:
    target = ctx.dirs.save_target(filename_prefix, int(images.shape[2]), int(images.shape[1]))
    counter = target.counter
    results = []
    for batch_number, image in enumerate(images):
        info = PngInfo()
        if prompt is not None:
            info.add_text("prompt", json.dumps(prompt))
        for key, value in (extra_pnginfo or {}).items():
            info.add_text(key, json.dumps(value))
        name = target.filename.replace("%batch_num%", str(batch_number))
        file = f"{name}_{counter:05}_.png"
        Image.fromarray(image).save(
            os.path.join(target.folder, file), pnginfo=info, compress_level=4
        )
        results.append({"filename": file, "subfolder": target.subfolder, "type": "output"})
        counter += 1
    return NodeResult((), {"images": results})


def load_image(ctx: NodeContext, /, *, image: str) -> NodeResult:
    path = ctx.dirs.annotated_path(image)
    pictures, masks = [], []
    with Image.open(path) as source:
        for frame in ImageSequence.Iterator(source):
            frame = ImageOps.exif_transpose(frame)
            rgb = frame.convert("RGB")
            if pictures and rgb.size != (pictures[0].shape[1], pictures[0].shape[0]):
                continue
            pictures.append(np.asarray(rgb, dtype=np.uint8))
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - alpha)
            else:
                masks.append(np.zeros((64, 64), dtype=np.float32))
    if len({m.shape for m in masks}) > 1:
        masks = [masks[0]] * len(masks)
    return NodeResult((np.stack(pictures), np.stack(masks)))


def image_scale(
    ctx: NodeContext,
    /,
    *,
    image: np.ndarray,
    upscale_method: str,
    width: int,
    height: int,
    crop: str,
) -> NodeResult:
    if width == 0 and height == 0:
        return NodeResult((image,))
    old_h, old_w = image.shape[1], image.shape[2]
    if width == 0:
        width = max(1, round(old_w * height / old_h))
    elif height == 0:
        height = max(1, round(old_h * width / old_w))
    return NodeResult((fr.scale_images(image, width, height, upscale_method, crop),))


def image_from_batch(
    ctx: NodeContext, /, *, image: np.ndarray, batch_index: int, length: int
) -> NodeResult:
    batch_index = min(len(image) - 1, batch_index)
    length = min(len(image) - batch_index, length)
    # A view: no node writes into its inputs.
    return NodeResult((image[batch_index : batch_index + length],))


def empty_image(
    ctx: NodeContext, /, *, width: int, height: int, batch_size: int = 1, color: int = 0
) -> NodeResult:
    rgb = [(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF]
    out = np.empty((batch_size, height, width, 3), dtype=np.uint8)
    out[:] = np.array(rgb, dtype=np.uint8)
    return NodeResult((out,))


# --- our API input nodes (custom_nodes/api_inputs) --------------------------------------------


def api_input_image(
    ctx: NodeContext, /, *, name: str, image: str, description: str = ""
) -> NodeResult:
    return load_image(ctx, image=image)


def api_input_video(
    ctx: NodeContext, /, *, name: str, file: str, description: str = ""
) -> NodeResult:
    return load_video(ctx, file=file)


def _package_node(class_type: str) -> Callable[..., NodeResult]:
    """A node the package runs itself (its values only pass through or are checked)."""

    def node(ctx: NodeContext, /, **inputs: Any) -> NodeResult:
        return NodeResult(apiinputs.run(class_type, inputs))

    return node


def _api_input_nodes() -> dict[str, Callable[..., NodeResult]]:
    files = {"ApiInputImage": api_input_image, "ApiInputVideo": api_input_video}
    return {name: files.get(name) or _package_node(name) for name in apiinputs.classes()}


NODES: dict[str, Callable[..., NodeResult]] = {
    "UNETLoader": unet_loader,
    "CLIPLoader": clip_loader,
    "VAELoader": vae_loader,
    "LoraLoaderModelOnly": lora_loader_model_only,
    "ModelSamplingSD3": model_sampling_sd3,
    "CLIPTextEncode": clip_text_encode,
    "Wan22ImageToVideoLatent": wan22_image_to_video_latent,
    "KSampler": ksampler,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "CreateVideo": create_video,
    "SaveVideo": save_video,
    "SaveImage": save_image,
    "LoadImage": load_image,
    "LoadVideo": load_video,
    "GetVideoComponents": get_video_components,
    "ImageScale": image_scale,
    "ImageFromBatch": image_from_batch,
    "EmptyImage": empty_image,
    **_api_input_nodes(),
}


def fingerprint(dirs: DataDirs, class_type: str, inputs: dict[str, Any]) -> Any:
    """ComfyUI's IS_CHANGED: file content for LoadImage, modification time for LoadVideo (our
    ApiInputImage and ApiInputVideo use theirs)."""
    if class_type in ("LoadImage", "ApiInputImage"):
        with open(dirs.annotated_path(inputs["image"]), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    if class_type in ("LoadVideo", "ApiInputVideo"):
        return os.path.getmtime(dirs.annotated_path(inputs["file"]))
    return None
