"""ComfyUI's /object_info: the bundled copy, a class's entry, and an input's parameter type."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from proxy.workflows.marked._nodes import BUILTIN
from proxy.workflows.spec import ParamType

_SCALARS: dict[str, ParamType] = {
    "INT": "int",
    "FLOAT": "float",
    "STRING": "string",
    "BOOLEAN": "bool",
}


@cache
def reference_object_info() -> dict[str, Any]:
    """The /object_info of the ComfyUI version we test against (0.3.64), bundled."""
    # It sits beside this package, in proxy.workflows (where pyproject's package-data ships it).
    bundled = resources.files("proxy.workflows").joinpath("object_info.json")
    data: dict[str, Any] = json.loads(bundled.read_text(encoding="utf-8"))
    return data


def class_info(object_info: Mapping[str, Any], class_type: Any) -> Mapping[str, Any] | None:
    """A class's /object_info entry (our parameter nodes' built in), or None if unknown."""
    if not isinstance(class_type, str):
        return None
    info = object_info.get(class_type)
    return info if isinstance(info, Mapping) else BUILTIN.get(class_type)


def input_spec(info: Mapping[str, Any], name: str) -> tuple[Any, dict[str, Any]] | None:
    """(type, options) of a class's input, required or optional; None if it has none."""
    for section in ("required", "optional"):
        entry = info.get("input", {}).get(section, {}).get(name)
        if isinstance(entry, list) and entry:
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            return entry[0], opts
    return None


def input_names(info: Mapping[str, Any]) -> list[str]:
    """A class's inputs, required then optional."""
    sections = info.get("input", {})
    return [n for s in ("required", "optional") for n in sections.get(s, {})]


def input_type(kind: Any, opts: Mapping[str, Any]) -> tuple[ParamType, list[Any] | None] | None:
    """The parameter type of an input spec (with a choice's options), or None for a link type."""
    if isinstance(kind, list) or kind == "COMBO":
        if opts.get("image_upload"):
            return "image", None
        if opts.get("video_upload"):
            return "video", None
        options = kind if isinstance(kind, list) else opts.get("options", [])
        return "choice", list(options)
    scalar = _SCALARS.get(kind) if isinstance(kind, str) else None
    return (scalar, None) if scalar else None
