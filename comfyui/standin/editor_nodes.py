"""Node classes that the graph editor cannot do without, listed in ``/object_info`` only.

Frontend 1.27.10 maps model folders to the loader classes of a stock ComfyUI
(``useModelToNodeStore.registerDefaults``) and reads each class's definition while building
every combo widget: if one of them is missing from ``/object_info``, no node with a combo can be
created, so no workflow loads. Its default graph (shown to a browser with no saved workflow)
also uses ``EmptyLatentImage``; without it the editor opens on a "missing nodes" dialog and asks
api.comfy.org about the class. ``editor_nodes.json`` holds these classes' schemas as the real
ComfyUI 0.3.64 reports them (file combos empty, filled here from the model folders).

The stand-in does not run them: a prompt using one fails validation with ComfyUI's own answer
for an unknown class. A class that ``schemas.json`` gains later is served from there instead.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from .paths import DataDirs
from .schemas import Schemas

# (class, input) -> the model folder its combo lists.
_FILE_COMBOS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("GLIGENLoader", "gligen_name"): "gligen",
}


@cache
def _static() -> dict[str, dict[str, Any]]:
    text = resources.files(__package__).joinpath("editor_nodes.json").read_text(encoding="utf-8")
    loaded: dict[str, dict[str, Any]] = json.loads(text)
    return loaded


def editor_only_info(dirs: DataDirs, schemas: Schemas) -> dict[str, dict[str, Any]]:
    """The ``/object_info`` entries of the editor's required classes the stand-in lacks."""
    out: dict[str, dict[str, Any]] = {}
    for name, static in _static().items():
        if name in schemas:
            continue
        info = copy.deepcopy(static)
        for (owner, input_name), folder in _FILE_COMBOS.items():
            if owner != name:
                continue
            spec = info["input"]["required"][input_name]
            files = dirs.filename_list(folder)
            if spec[0] == "COMBO":
                spec[1]["options"] = files
            else:
                spec[0] = files
        out[name] = info
    return out
