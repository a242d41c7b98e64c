"""The stand-in's data directory, laid out like a ComfyUI base directory.

    <data_dir>/models/<folder>/   model files: what the loader combo lists offer
    <data_dir>/input/             uploads; LoadImage / LoadVideo read from here
    <data_dir>/output/            SaveVideo / SaveImage results
    <data_dir>/temp/              wiped at start and on a simulated restart

Also the path rules ComfyUI applies to these folders: annotated names (``"x.png [output]"``),
the folders' file lists, and the output naming (``prefix_00001_.mp4``, counter from disk).
"""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# Folder key -> (directories relative to the data dir, allowed extensions; empty means any).
# The first directory is the one placeholders are written to.
MODEL_FOLDERS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("models/checkpoints",), PT_EXTENSIONS),
    "configs": (("models/configs",), frozenset({".yaml"})),
    "loras": (("models/loras",), PT_EXTENSIONS),
    "vae": (("models/vae",), PT_EXTENSIONS),
    "text_encoders": (("models/text_encoders", "models/clip"), PT_EXTENSIONS),
    "diffusion_models": (("models/diffusion_models", "models/unet"), PT_EXTENSIONS),
    "clip_vision": (("models/clip_vision",), PT_EXTENSIONS),
    "style_models": (("models/style_models",), PT_EXTENSIONS),
    "embeddings": (("models/embeddings",), PT_EXTENSIONS),
    "diffusers": (("models/diffusers",), frozenset({"folder"})),
    "vae_approx": (("models/vae_approx",), PT_EXTENSIONS),
    "controlnet": (("models/controlnet", "models/t2i_adapter"), PT_EXTENSIONS),
    "gligen": (("models/gligen",), PT_EXTENSIONS),
    "upscale_models": (("models/upscale_models",), PT_EXTENSIONS),
    "custom_nodes": (("custom_nodes",), frozenset()),
    "hypernetworks": (("models/hypernetworks",), PT_EXTENSIONS),
    "photomaker": (("models/photomaker",), PT_EXTENSIONS),
    "classifiers": (("models/classifiers",), frozenset()),
    "model_patches": (("models/model_patches",), PT_EXTENSIONS),
    "audio_encoders": (("models/audio_encoders",), PT_EXTENSIONS),
}

PLACEHOLDER_BYTES = b"standin placeholder: not a real model\n"

ANNOTATIONS = (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp"))

mimetypes.add_type("image/webp", ".webp")


@dataclass(frozen=True)
class SaveTarget:
    """Where the next output file of a prefix goes: ``{filename}_{counter:05}_.ext``."""

    folder: str
    filename: str
    counter: int
    subfolder: str


class DataDirs:
    """The folders of one stand-in instance."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.input = os.path.join(self.root, "input")
        self.output = os.path.join(self.root, "output")
        self.temp = os.path.join(self.root, "temp")

    def create(self) -> None:
        """Create every folder, and empty temp/ as ComfyUI does at start."""
        for folder in (self.input, self.output):
            os.makedirs(folder, exist_ok=True)
        for dirs, _ in MODEL_FOLDERS.values():
            if dirs[0].startswith("models/"):
                os.makedirs(os.path.join(self.root, dirs[0]), exist_ok=True)
        self.wipe_temp()

    def wipe_temp(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)
        os.makedirs(self.temp, exist_ok=True)

    def directory_by_type(self, type_name: str | None) -> str | None:
        return {"output": self.output, "input": self.input, "temp": self.temp}.get(type_name or "")

    # --- model folders -------------------------------------------------------------------

    def filename_list(self, folder: str) -> list[str]:
        """Sorted relative paths of the files of a model folder (all its directories, recursive)."""
        dirs, extensions = MODEL_FOLDERS[folder]
        found: set[str] = set()
        for rel in dirs:
            base = os.path.join(self.root, rel)
            for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
                dirnames[:] = [d for d in dirnames if d != ".git"]
                for name in filenames:
                    if extensions and os.path.splitext(name)[1].lower() not in extensions:
                        continue
                    found.add(
                        os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/")
                    )
        return sorted(found)

    def model_path(self, folder: str, filename: str) -> str | None:
        """Full path of a model file, or None when no directory of the folder holds it."""
        for rel in MODEL_FOLDERS[folder][0]:
            candidate = os.path.join(self.root, rel, filename)
            if os.path.isfile(candidate):
                return candidate
        return None

    def model_path_or_raise(self, folder: str, filename: str) -> str:
        path = self.model_path(folder, filename)
        if path is None:
            raise FileNotFoundError(
                f"Model in folder '{folder}' with filename '{filename}' not found."
            )
        return path

    # --- input files ---------------------------------------------------------------------

    def input_files(self, content_type: str) -> list[str]:
        """Sorted top-level input files whose guessed MIME type is ``content_type/*``."""
        try:
            names = os.listdir(self.input)
        except FileNotFoundError:
            return []
        picked = []
        for name in names:
            if not os.path.isfile(os.path.join(self.input, name)):
                continue
            mime = mimetypes.guess_type(name)[0] or ""
            if mime.split("/")[0] == content_type:
                picked.append(name)
        return sorted(picked)

    def split_annotation(self, name: str) -> tuple[str, str | None]:
        """``"x.png [output]"`` -> ``("x.png", output dir)``; no annotation -> ``(name, None)``."""
        for suffix, type_name in ANNOTATIONS:
            if name.endswith(suffix):
                return name[: -len(suffix) - 1], self.directory_by_type(type_name)
        return name, None

    def annotated_path(self, name: str) -> str:
        bare, base = self.split_annotation(name)
        return os.path.join(base or self.input, bare)

    def annotated_exists(self, name: str) -> bool:
        return os.path.exists(self.annotated_path(name))

    # --- output naming -------------------------------------------------------------------

    def save_target(self, prefix: str, width: int, height: int) -> SaveTarget:
        """The folder, name and counter for the next file of ``prefix``, as ComfyUI picks them."""
        prefix = _expand_prefix(prefix, width, height)
        normalized = os.path.normpath(prefix)
        subfolder = os.path.dirname(normalized)
        filename = os.path.basename(normalized)
        folder = os.path.join(self.output, subfolder)
        common = os.path.commonpath((self.output, os.path.abspath(folder)))
        if common != self.output:
            # A bare Exception, as ComfyUI raises it (clients see exception_type "Exception").
            raise Exception(
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {os.path.abspath(folder)}"
                f"\n         output_dir: {self.output}"
                f"\n         commonpath: {common}"
            )
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            names = []
        used = [_counter_of(name, filename) for name in names]
        counter = max((c for c in used if c is not None), default=0) + 1
        return SaveTarget(folder=folder, filename=filename, counter=counter, subfolder=subfolder)


def _counter_of(name: str, filename: str) -> int | None:
    """The NNNNN of ``<filename>_NNNNN...``; 0 when it is not a number; None for other files."""
    head = name[: len(filename) + 1]
    if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
        return None
    digits = name[len(filename) + 1 :].split("_")[0]
    try:
        return int(digits)
    except ValueError:
        return 0


def _expand_prefix(prefix: str, width: int, height: int) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {
        "width": str(width),
        "height": str(height),
        "year": str(now.tm_year),
        "month": f"{now.tm_mon:02}",
        "day": f"{now.tm_mday:02}",
        "hour": f"{now.tm_hour:02}",
        "minute": f"{now.tm_min:02}",
        "second": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def write_placeholder_models(dirs: DataDirs, manifest_path: str | os.PathLike[str]) -> list[Path]:
    """Write a tiny placeholder for every manifest entry missing under models/<folder>/.

    Existing files are left alone. Returns the paths written.
    """
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    written = []
    for entry in manifest.get("models", []):
        folder, filename = entry["folder"], entry["filename"]
        if folder not in MODEL_FOLDERS:
            raise ValueError(
                f"manifest entry {entry.get('id', filename)!r}: unknown folder {folder!r}"
            )
        if dirs.model_path(folder, filename) is not None:
            continue
        base = os.path.join(dirs.root, MODEL_FOLDERS[folder][0][0])
        target = Path(base, filename)
        if os.path.commonpath((base, os.path.abspath(target))) != base:
            raise ValueError(f"manifest filename {filename!r} leaves models/{folder}/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(PLACEHOLDER_BYTES)
        written.append(target)
    return written
