"""API parameter nodes for ComfyUI: a workflow author marks each API parameter of a graph by
plugging one of these nodes into the input it sets. See ../README.md.

Install: copy or symlink this folder into ``ComfyUI/custom_nodes/`` (or list its parent folder
under ``custom_nodes:`` in an ``extra_model_paths.yaml``); ComfyUI loads it at start.
"""

from .inputs import (
    CHOICE,
    FLOAT_MAX,
    FLOAT_MIN,
    INT_MAX,
    INT_MIN,
    NODE_CLASSES,
    SEED_MAX,
    ChoiceType,
    choice_error,
    parse_choices,
)

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODE_CLASSES}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ApiInputText": "API Input: Text",
    "ApiInputInt": "API Input: Integer",
    "ApiInputFloat": "API Input: Number",
    "ApiInputBool": "API Input: True/False",
    "ApiInputSeed": "API Input: Seed",
    "ApiInputChoice": "API Input: Choice",
    "ApiInputImage": "API Input: Image",
    "ApiInputVideo": "API Input: Video",
}

__all__ = [
    "CHOICE",
    "FLOAT_MAX",
    "FLOAT_MIN",
    "INT_MAX",
    "INT_MIN",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "SEED_MAX",
    "ChoiceType",
    "choice_error",
    "parse_choices",
]
