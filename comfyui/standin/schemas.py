"""Node schemas in ``/object_info`` format, with the file combos filled from the data dir.

``schemas.json`` holds the schemas of the node classes the stand-in implements, as the real
ComfyUI 0.3.64 reports them. The combo lists that depend on files (model loaders, LoadImage,
LoadVideo) are empty there and filled here at every request, so a missing model file fails
validation exactly as it does in ComfyUI. Our own API input nodes (``custom_nodes/api_inputs``)
are added from the package itself (``apiinputs``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from . import apiinputs
from .paths import DataDirs

# Classes written against ComfyUI's V3 node API: their combos are declared as "COMBO" and are
# not checked at validation time; their custom validator is `validate_inputs`.
V3_CLASSES = frozenset(
    {"Wan22ImageToVideoLatent", "CreateVideo", "SaveVideo", "LoadVideo", "GetVideoComponents"}
)

_FileLister = Callable[[DataDirs], list[str]]

# (class, input) -> the files its combo offers.
_DYNAMIC_COMBOS: dict[tuple[str, str], _FileLister] = {
    ("UNETLoader", "unet_name"): lambda d: d.filename_list("diffusion_models"),
    ("CLIPLoader", "clip_name"): lambda d: d.filename_list("text_encoders"),
    ("VAELoader", "vae_name"): lambda d: d.filename_list("vae") + ["pixel_space"],
    ("LoraLoaderModelOnly", "lora_name"): lambda d: d.filename_list("loras"),
    ("LoadImage", "image"): lambda d: d.input_files("image"),
    ("LoadVideo", "file"): lambda d: d.input_files("video"),
    **{
        (class_type, input_name): (lambda d, kind=kind: d.input_files(kind))
        for class_type, (input_name, kind) in apiinputs.FILE_INPUTS.items()
    },
}


def load_static_schemas() -> dict[str, dict[str, Any]]:
    """The schemas as shipped in schemas.json (file combos empty)."""
    text = resources.files(__package__).joinpath("schemas.json").read_text(encoding="utf-8")
    return json.loads(text)


class Schemas:
    """Read access to the node schemas of one stand-in instance."""

    def __init__(self, dirs: DataDirs) -> None:
        self._dirs = dirs
        self._static = {**load_static_schemas(), **apiinputs.object_info()}
        self._custom = frozenset(apiinputs.object_info())

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._static

    @property
    def class_names(self) -> list[str]:
        return list(self._static)

    def info(self, class_type: str) -> dict[str, Any]:
        """The ``/object_info`` entry of a class, file combos filled in (a fresh copy)."""
        info = copy.deepcopy(self._static[class_type])
        for (owner, name), lister in _DYNAMIC_COMBOS.items():
            if owner != class_type:
                continue
            spec = _find_input(info, name)
            if class_type in V3_CLASSES:
                spec[1]["options"] = lister(self._dirs)
            else:
                spec[0] = lister(self._dirs)
        return info

    def all_info(self) -> dict[str, dict[str, Any]]:
        return {name: self.info(name) for name in self._static}

    def is_output(self, class_type: str) -> bool:
        return bool(self._static[class_type].get("output_node"))

    def is_v3(self, class_type: str) -> bool:
        return class_type in V3_CLASSES

    def return_types(self, class_type: str) -> tuple[Any, ...]:
        if class_type in self._custom:
            # The Python objects, not their JSON: a type may compare equal to a combo.
            return apiinputs.return_types(class_type)
        return tuple(self._static[class_type]["output"])

    def hidden_inputs(self, class_type: str) -> dict[str, str]:
        """Hidden input name -> kind (``PROMPT``, ``EXTRA_PNGINFO``)."""
        hidden = self._static[class_type]["input"].get("hidden", {})
        return {k: (v[0] if isinstance(v, list) else v) for k, v in hidden.items()}

    def declared_inputs(self, class_type: str) -> list[str]:
        order = self._static[class_type].get("input_order", {})
        return list(order.get("required", [])) + list(order.get("optional", []))


def _find_input(info: dict[str, Any], name: str) -> list[Any]:
    for category in ("required", "optional"):
        spec = info["input"].get(category, {}).get(name)
        if spec is not None:
            return spec
    raise KeyError(name)


def input_spec(info: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    """(type, category, options) of an input; category is None when it is not declared."""
    for category in ("required", "optional"):
        spec = info["input"].get(category, {}).get(name)
        if spec is not None:
            options = spec[1] if len(spec) > 1 else {}
            return spec[0], category, options
    return None, None, {}
