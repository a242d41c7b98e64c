"""Timing profiles: how long each node takes on a real GPU, so the stand-in keeps time like one.

A profile prices every node class with one readable formula (seconds at speed 1)::

    node  = fixed_s + per_video_s * work + (cold_s if the node reads model files)
    step  = (step_fixed_s + step_per_latent_s * latent_work) * (2 if cfg > 1 else 1)

``work`` is the pixels x frames of the video the node handles (decodes, encodes, scales,
saves), relative to the reference video, 1280 x 704 x 121 (FastWAN's 720p, 5 s at 24 fps).
``latent_work`` is the sampler's latent cells relative to the reference latent, 31 x 44 x 80;
cfg above 1 means two model evaluations a step (conditional and unconditional). A profile's
``speed`` divides every figure (speed 20: twenty times faster than the GPU).

Only loaders have a ``cold_s``, paid when they run. The executor runs a node only when its
output is not cached, so a loader that runs reads its files (cold); a warm loader is one whose
output is cached, which costs nothing because it does not run.

The executor makes a node last ``max(node_seconds, the node function's own compute time)``,
so a job's shape holds at high speed too (encoding a real MP4 takes real CPU). The sampler's
steps are spent one by one through the progress callback, at ``step_seconds`` each.

``fastwan-h200``: FastWan2.2-5B (Wan 2.2 TI2V 5B + the FastWan LoRA) on one H200, at the
shipped ``fastwan_t2v`` defaults (1280 x 704 x 121, 8 steps, cfg 1.0, uni_pc):

| node | fixed s | per reference video s | cold s | reference run s |
| --- | --- | --- | --- | --- |
| UNETLoader | 0 | 0 | 8.0 | 8.0 |
| CLIPLoader | 0 | 0 | 5.0 | 5.0 |
| VAELoader | 0 | 0 | 1.0 | 1.0 |
| LoraLoaderModelOnly | 0 | 0 | 1.0 | 1.0 |
| ModelSamplingSD3 | 0.001 | 0 | 0 | 0.001 |
| CLIPTextEncode (x2) | 0.4 | 0 | 0 | 0.4 |
| Wan22ImageToVideoLatent (t2v) | 0.01 | 4.0 (start image) | 0 | 0.01 |
| KSampler (8 steps x 0.31) | 0.12 | 0 | 0 | 2.6 |
| VAEDecode | 0.1 | 9.9 | 0 | 10.0 |
| CreateVideo | 0.05 | 0.25 | 0 | 0.3 |
| SaveVideo | 0.1 | 2.1 | 0 | 2.2 |
| warm t2v job | | | | 15.9 |
| cold t2v job (+ loaders) | | | | 30.9 |

Other nodes (i2v, v2v, images), at reference size: VAEEncode 4.1 s, LoadImage 0.02 s,
LoadVideo 0.01 s, GetVideoComponents 0.62 s, ImageScale 0.31 s, ImageFromBatch 0.001 s,
EmptyImage 0.06 s, SaveImage 30.02 s (121 PNGs). A KSampler step at the reference latent is
0.02 + 0.29 = 0.31 s (0.62 s at cfg > 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .values import Latent, VaeRef, VideoFromComponents, VideoFromFile

REFERENCE_WIDTH = 1280
REFERENCE_HEIGHT = 704
REFERENCE_FRAMES = 121
REFERENCE_PIXEL_FRAMES = REFERENCE_WIDTH * REFERENCE_HEIGHT * REFERENCE_FRAMES
# The Wan 2.2 VAE's latent of the reference video: (121 - 1) // 4 + 1 slots of 44 x 80 cells.
REFERENCE_LATENT_CELLS = (
    ((REFERENCE_FRAMES - 1) // 4 + 1) * (REFERENCE_HEIGHT // 16) * (REFERENCE_WIDTH // 16)
)


@dataclass(frozen=True)
class NodeCost:
    """One node class's price at speed 1: fixed + proportional to work, + cold for loaders."""

    fixed_s: float = 0.0
    per_video_s: float = 0.0
    cold_s: float = 0.0

    def seconds(self, work: float, *, cold: bool) -> float:
        return self.fixed_s + self.per_video_s * work + (self.cold_s if cold else 0.0)


@dataclass(frozen=True)
class StepCost:
    """One sampler step's price at speed 1: a floor plus a part proportional to the latent."""

    fixed_s: float
    per_latent_s: float

    def seconds(self, latent_work: float, cfg: float) -> float:
        evaluations = 2 if cfg > 1.0 else 1
        return (self.fixed_s + self.per_latent_s * latent_work) * evaluations


_FREE = NodeCost()


@dataclass(frozen=True)
class Profile:
    """A GPU's timing: a cost per node class and per sampler step, divided by ``speed``."""

    name: str
    description: str
    nodes: Mapping[str, NodeCost]
    step: StepCost
    speed: float = 1.0

    def at_speed(self, speed: float) -> Profile:
        """The same profile, ``speed`` times faster than the GPU it models."""
        return dataclasses.replace(self, speed=checked_speed(speed))

    def node_seconds(self, class_type: str, inputs: Mapping[str, Any], *, cold: bool) -> float:
        """One run of ``class_type`` on these resolved inputs, outside its sampler steps."""
        cost = self.nodes.get(class_type, _FREE)
        return cost.seconds(video_work(class_type, inputs), cold=cold) / self.speed

    def step_seconds(self, inputs: Mapping[str, Any]) -> float:
        """One step of a sampler run with these inputs (``latent_image``, ``cfg``)."""
        work = latent_work(inputs.get("latent_image"))
        return self.step.seconds(work, float(inputs.get("cfg", 1.0))) / self.speed


# --- how much video a node handles ----------------------------------------------------------

# The input that carries the video a node class works on.
_VIDEO_INPUTS = {
    "VAEDecode": "samples",
    "VAEEncode": "pixels",
    "CreateVideo": "images",
    "SaveVideo": "video",
    "SaveImage": "images",
    "GetVideoComponents": "video",
    "ImageScale": "image",
}


def video_work(class_type: str, inputs: Mapping[str, Any]) -> float:
    """The pixels x frames a node handles, relative to the reference video (0: none)."""
    if class_type == "Wan22ImageToVideoLatent":
        # The real node VAE-encodes start_image[:length]; without one it only allocates.
        start = inputs.get("start_image")
        made = 0 if start is None else pixel_frames(start[: inputs.get("length")])
        return made / REFERENCE_PIXEL_FRAMES
    if class_type == "EmptyImage":
        made = int(inputs.get("width", 0) * inputs.get("height", 0) * inputs.get("batch_size", 1))
        return made / REFERENCE_PIXEL_FRAMES
    name = _VIDEO_INPUTS.get(class_type)
    if name is None:
        return 0.0
    return pixel_frames(inputs.get(name), inputs.get("vae")) / REFERENCE_PIXEL_FRAMES


def pixel_frames(value: Any, vae: Any = None) -> int:
    """Width x height x frames of an IMAGE batch, a VIDEO, or a LATENT once decoded."""
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return int(value.shape[0] * value.shape[1] * value.shape[2])
    if isinstance(value, (VideoFromComponents, VideoFromFile)):
        width, height = value.get_dimensions()
        return width * height * value.get_frame_count()
    if isinstance(value, Latent):
        ref = vae if isinstance(vae, VaeRef) else VaeRef("wan2.2")
        frames = (value.frames - 1) * ref.temporal + 1
        return value.batch * frames * value.height * value.width * ref.spatial**2
    return 0


def latent_work(latent: Any) -> float:
    """A sampler's latent cells relative to the reference latent (1.0 when unknown)."""
    if not isinstance(latent, Latent):
        return 1.0
    cells = latent.batch * latent.frames * latent.height * latent.width
    return cells / REFERENCE_LATENT_CELLS


# --- fastwan-h200 ---------------------------------------------------------------------------
# Hao AI Lab's FastWan post (hao-ai-lab.github.io/blogs/fastvideo_post_training): FastWan2.2-5B
# makes a 5 s 720p video in 16 s end to end on one H200, of which DiT denoising is 2.64 s. The
# split of the rest is ours: the Wan 2.2 VAE decode is the largest part, as it is in ComfyUI.

# Cold loads: weights read from local NVMe (~1.5 GB/s), set up, moved to the GPU on first use.
H200_UNET_LOAD_S = 8.0  # wan2.2_ti2v_5B_fp16: 10 GB of fp16 weights.
H200_CLIP_LOAD_S = 5.0  # umt5_xxl_fp8_e4m3fn_scaled: 6.7 GB, plus building the encoder.
H200_VAE_LOAD_S = 1.0  # wan2.2_vae: 1.4 GB.
H200_LORA_LOAD_S = 1.0  # FastWan LoRA (rank 128, bf16, ~0.6 GB), patched onto the model.

H200_PATCH_S = 0.001  # ModelSamplingSD3 only wraps the model object.
H200_TEXT_ENCODE_S = 0.4  # umt5-xxl over 512 tokens; positive + negative = 0.8 s.
H200_LATENT_S = 0.01  # Wan22ImageToVideoLatent allocates zeros (t2v).
H200_SAMPLER_SETUP_S = 0.12  # noise, sigmas and conditioning around the steps.
H200_STEP_FLOOR_S = 0.02  # a step's floor on any latent: 30 blocks' kernel launches.
H200_STEP_REFERENCE_S = 0.29  # rest of a step at the reference latent: 0.12 + 8 x 0.31 = 2.6 s.
H200_VAE_DECODE_FIXED_S = 0.1  # moving the latent, tiling set-up.
H200_VAE_DECODE_S = 9.9  # the largest part: 121 frames of 720p through the Wan 2.2 decoder.
H200_VAE_ENCODE_FIXED_S = 0.1  # as for the decode.
H200_VAE_ENCODE_S = 4.0  # the Wan 2.2 encoder does ~40 % of the decoder's work.
H200_CREATE_VIDEO_FIXED_S = 0.05  # wrapping the frames.
H200_CREATE_VIDEO_S = 0.25  # 121 frames of 720p from GPU float to CPU.
H200_SAVE_VIDEO_FIXED_S = 0.1  # opening the container, metadata.
H200_SAVE_VIDEO_S = 2.1  # H.264 encode + mux of 121 frames of 720p on the CPU.
H200_LOAD_FILE_S = 0.02  # LoadImage: one PNG or JPEG from local disk.
H200_LOAD_VIDEO_S = 0.01  # LoadVideo is lazy: it only opens the file.
H200_DECODE_VIDEO_FIXED_S = 0.02  # GetVideoComponents: opening the stream.
H200_DECODE_VIDEO_S = 0.6  # decoding 121 frames of 720p H.264 on the CPU.
H200_SCALE_FIXED_S = 0.01  # ImageScale, EmptyImage: one small kernel.
H200_SCALE_S = 0.3  # bilinear resize of 121 frames of 720p.
H200_EMPTY_IMAGE_S = 0.05  # filling 121 frames of 720p.
H200_SAVE_IMAGE_FIXED_S = 0.02  # SaveImage: the folder and counter.
H200_SAVE_IMAGE_S = 30.0  # PNG at compress level 4: ~0.25 s a 720p frame, 121 frames.

FASTWAN_H200 = Profile(
    name="fastwan-h200",
    description="FastWan2.2-5B (Wan 2.2 TI2V 5B + FastWan LoRA) on one NVIDIA H200",
    nodes=MappingProxyType(
        {
            "UNETLoader": NodeCost(cold_s=H200_UNET_LOAD_S),
            "CLIPLoader": NodeCost(cold_s=H200_CLIP_LOAD_S),
            "VAELoader": NodeCost(cold_s=H200_VAE_LOAD_S),
            "LoraLoaderModelOnly": NodeCost(cold_s=H200_LORA_LOAD_S),
            "ModelSamplingSD3": NodeCost(fixed_s=H200_PATCH_S),
            "CLIPTextEncode": NodeCost(fixed_s=H200_TEXT_ENCODE_S),
            "Wan22ImageToVideoLatent": NodeCost(H200_LATENT_S, H200_VAE_ENCODE_S),
            "KSampler": NodeCost(fixed_s=H200_SAMPLER_SETUP_S),
            "VAEDecode": NodeCost(H200_VAE_DECODE_FIXED_S, H200_VAE_DECODE_S),
            "VAEEncode": NodeCost(H200_VAE_ENCODE_FIXED_S, H200_VAE_ENCODE_S),
            "CreateVideo": NodeCost(H200_CREATE_VIDEO_FIXED_S, H200_CREATE_VIDEO_S),
            "SaveVideo": NodeCost(H200_SAVE_VIDEO_FIXED_S, H200_SAVE_VIDEO_S),
            "SaveImage": NodeCost(H200_SAVE_IMAGE_FIXED_S, H200_SAVE_IMAGE_S),
            "LoadImage": NodeCost(fixed_s=H200_LOAD_FILE_S),
            "LoadVideo": NodeCost(fixed_s=H200_LOAD_VIDEO_S),
            # Our parameter nodes (custom_nodes/api_inputs): values pass through; the file
            # ones load as LoadImage / LoadVideo do.
            "ApiInputImage": NodeCost(fixed_s=H200_LOAD_FILE_S),
            "ApiInputVideo": NodeCost(fixed_s=H200_LOAD_VIDEO_S),
            **{
                f"ApiInput{kind}": NodeCost()
                for kind in ("Text", "Int", "Float", "Bool", "Seed", "Choice")
            },
            "GetVideoComponents": NodeCost(H200_DECODE_VIDEO_FIXED_S, H200_DECODE_VIDEO_S),
            "ImageScale": NodeCost(H200_SCALE_FIXED_S, H200_SCALE_S),
            "ImageFromBatch": NodeCost(fixed_s=H200_PATCH_S),
            "EmptyImage": NodeCost(H200_SCALE_FIXED_S, H200_EMPTY_IMAGE_S),
        }
    ),
    step=StepCost(fixed_s=H200_STEP_FLOOR_S, per_latent_s=H200_STEP_REFERENCE_S),
)

PROFILES: dict[str, Profile] = {profile.name: profile for profile in (FASTWAN_H200,)}


def checked_speed(speed: float) -> float:
    """``speed`` if it is a finite positive number, else a ValueError."""
    if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number, not {speed!r}")
    return float(speed)


def get_profile(name: str | None, speed: float = 1.0) -> Profile | None:
    """The named profile at ``speed``; None without a name (``speed`` is checked anyway)."""
    checked_speed(speed)
    if name is None:
        return None
    if name not in PROFILES:
        raise ValueError(f"unknown timing profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name].at_speed(speed)
