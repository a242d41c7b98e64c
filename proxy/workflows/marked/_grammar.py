"""The title grammar: `$name`, `$name=input` and `$output` words."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.workflows.marked._nodes import PARAM_NODES

OUTPUT = "output"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An input is any run without spaces, `$` or `=`: ComfyUI has inputs like "double_layers.0.".
TOKEN = re.compile(r"\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<input>[^\s$=]+))?")


def title_words(node: Mapping[str, Any]) -> list[str]:
    """The `$` words of a node's title."""
    title = node.get("_meta", {}).get("title", "")
    return [w for w in title.split() if w.startswith("$")] if isinstance(title, str) else []


def has_marks(graph: Mapping[str, Any]) -> bool:
    """Whether an API-format graph marks anything (a `$` title or one of our nodes)."""
    return any(
        isinstance(node, dict)
        and (node.get("class_type") in PARAM_NODES or bool(title_words(node)))
        for node in graph.values()
    )
