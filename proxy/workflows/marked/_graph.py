"""Reading an API-format graph: its shape, its links, and how a message names a node."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def is_link(value: object) -> bool:
    """Whether an API-format input is a link `[node_id, output_index]` rather than a value."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def describe(node_id: str, node: Mapping[str, Any]) -> str:
    """How a problem names a node: its id, title and class."""
    title = node.get("_meta", {}).get("title", "")
    return f"node {node_id} {json.dumps(title)} ({node.get('class_type')})"


def check_graph(graph: Any) -> list[str]:
    """Why a parsed template is not an API-format graph (nothing when it is one)."""
    if not isinstance(graph, dict):
        return ["not an API-format graph (a JSON object of nodes by id)"]
    if "nodes" in graph and "links" in graph:
        return ["a UI-format graph: save it from ComfyUI with Export (API)"]
    return [
        f"node {node_id} is not an API-format node (no class_type)"
        for node_id, node in graph.items()
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str)
    ]
