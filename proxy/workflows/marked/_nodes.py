"""Our parameter node classes (custom_nodes/api_inputs) and their /object_info schemas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.workflows.spec import ParamType

SEED_MAX = 2**64 - 1


@dataclass(frozen=True)
class ParamNode:
    """One of our parameter node classes: the input it declares and the type it serves."""

    value: str
    type: ParamType
    random: bool = False


PARAM_NODES: dict[str, ParamNode] = {
    "ApiInputText": ParamNode("value", "string"),
    "ApiInputInt": ParamNode("value", "int"),
    "ApiInputFloat": ParamNode("value", "float"),
    "ApiInputBool": ParamNode("value", "bool"),
    "ApiInputSeed": ParamNode("value", "int", random=True),
    "ApiInputChoice": ParamNode("value", "choice"),
    "ApiInputImage": ParamNode("image", "image"),
    "ApiInputVideo": ParamNode("file", "video"),
}


def _ours(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    description = ["STRING", {"default": ""}]
    return {
        "input": {
            "required": {"name": ["STRING", {"default": ""}], **required},
            "optional": {**(optional or {}), "description": description},
        },
        "output_node": False,
    }


# custom_nodes/api_inputs's widest number range, meaning "no bound" (the editor holds widget
# values as doubles, so it stops at 2**53 - 1); its seed range is KSampler's.
WIDE = 2**53 - 1


def _wide(kind: str, default: float) -> list[Any]:
    if kind == "INT":
        return [kind, {"default": int(default), "min": -WIDE, "max": WIDE}]
    return [kind, {"default": default, "min": -float(WIDE), "max": float(WIDE), "step": 0.01}]


# Our nodes' schemas as custom_nodes/api_inputs declares them (tests hold the two together),
# for an /object_info taken from a ComfyUI that does not have them installed.
BUILTIN: dict[str, dict[str, Any]] = {
    "ApiInputText": _ours({"value": ["STRING", {"default": "", "multiline": True}]}),
    "ApiInputInt": _ours(
        {"value": _wide("INT", 0)},
        {
            "min": _wide("INT", -WIDE),
            "max": _wide("INT", WIDE),
            "step": ["INT", {"default": 1, "min": 1, "max": WIDE}],
        },
    ),
    "ApiInputFloat": _ours(
        {"value": _wide("FLOAT", 0.0)},
        {
            "min": _wide("FLOAT", -float(WIDE)),
            "max": _wide("FLOAT", float(WIDE)),
            "step": ["FLOAT", {"default": 0.01, "min": 0.0, "max": float(WIDE), "step": 0.01}],
        },
    ),
    "ApiInputBool": _ours({"value": ["BOOLEAN", {"default": False}]}),
    "ApiInputSeed": _ours(
        {
            "value": [
                "INT",
                {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True},
            ]
        }
    ),
    "ApiInputChoice": _ours(
        {
            "choices": ["STRING", {"default": "", "multiline": True}],
            "value": ["STRING", {"default": ""}],
        }
    ),
    "ApiInputImage": _ours({"image": [[], {"image_upload": True}]}),
    "ApiInputVideo": _ours({"file": [[], {"video_upload": True}]}),
}
