"""Our API parameter nodes (``custom_nodes/api_inputs``), as a ComfyUI that loaded them knows them.

The package is loaded from its folder the way ComfyUI loads a custom node (by path, not from
``sys.path``), and everything the stand-in knows of it comes from the package itself: the
``/object_info`` entries are built from its ``INPUT_TYPES`` and class attributes exactly as
ComfyUI's ``server.py:node_info`` builds them, link types are its real ``RETURN_TYPES``
(ApiInputChoice's type compares equal to combos, as in ComfyUI), and the nodes that need no
ComfyUI (text, numbers, choice) run and validate with the package's own functions. Only the
file nodes differ: they read the stand-in's input folder as its LoadImage and LoadVideo do.

Without the package (an install that left ``custom_nodes/`` out) the stand-in serves without
these nodes and says so in its log.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "custom_nodes" / "api_inputs"
# What ComfyUI sets as RELATIVE_PYTHON_MODULE for a custom node folder (nodes.py).
PYTHON_MODULE = f"custom_nodes.{PACKAGE_DIR.name}"
_MODULE_NAME = "_standin_custom_nodes_api_inputs"

# Class -> (its file input, the kind of input files its combo lists).
FILE_INPUTS: dict[str, tuple[str, str]] = {
    "ApiInputImage": ("image", "image"),
    "ApiInputVideo": ("file", "video"),
}


@functools.cache
def load_package(package_dir: Path = PACKAGE_DIR) -> ModuleType | None:
    """The package, imported from its folder once per process (None when it is missing)."""
    init = package_dir / "__init__.py"
    if not init.is_file():
        log.warning("no %s: the API input nodes are not available", init)
        return None
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first, as ComfyUI does, so the package's relative imports resolve.
    sys.modules[_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE_NAME]
        raise
    return module


def classes() -> dict[str, type]:
    """NODE_CLASS_MAPPINGS of the package (empty without it)."""
    package = load_package()
    return dict(package.NODE_CLASS_MAPPINGS) if package is not None else {}


def node_info(name: str, cls: type, display_names: dict[str, str]) -> dict[str, Any]:
    """The ``/object_info`` entry of a V1 node class, as ComfyUI 0.3.64's server builds it."""
    info: dict[str, Any] = {
        "input": cls.INPUT_TYPES(),
        "input_order": {key: list(value) for key, value in cls.INPUT_TYPES().items()},
        "output": cls.RETURN_TYPES,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": name,
        "display_name": display_names.get(name, name),
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": PYTHON_MODULE,
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(cls, "EXPERIMENTAL", False):
        info["experimental"] = True
    if hasattr(cls, "API_NODE"):
        info["api_node"] = cls.API_NODE
    # What the wire carries: tuples become lists, ChoiceType becomes "*".
    return json.loads(json.dumps(info))


@functools.cache
def object_info() -> dict[str, dict[str, Any]]:
    """Every class's entry; the file combos are empty (``schemas`` fills them per request)."""
    package = load_package()
    if package is None:
        return {}
    display = dict(package.NODE_DISPLAY_NAME_MAPPINGS)
    entries = {name: node_info(name, cls, display) for name, cls in classes().items()}
    for class_type, (input_name, _) in FILE_INPUTS.items():
        entries[class_type]["input"]["required"][input_name][0] = []
    return entries


def return_types(class_type: str) -> tuple[Any, ...]:
    """The class's real RETURN_TYPES (ApiInputChoice's type matches combos in validation)."""
    return tuple(classes()[class_type].RETURN_TYPES)


def validate_function(class_type: str) -> tuple[tuple[str, ...], Callable[..., Any]] | None:
    """(the inputs it takes over, the function) of a class's own VALIDATE_INPUTS, if any."""
    check = getattr(classes()[class_type], "VALIDATE_INPUTS", None)
    if check is None:
        return None
    return tuple(inspect.signature(check).parameters), check


def run(class_type: str, inputs: dict[str, Any]) -> tuple[Any, ...]:
    """Run a class's FUNCTION on an instance, as ComfyUI does (a stray input: TypeError)."""
    cls = classes()[class_type]
    return tuple(getattr(cls(), cls.FUNCTION)(**inputs))
