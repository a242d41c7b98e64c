"""PrimitiveNodes: each writes its value into every widget it feeds, then is dropped.

Its value is its own saved one when it feeds a widget (else the widget's, or undefined),
with the frontend's "%node.widget%" and "%date:...%" replacements when the node asks.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

from proxy.workflows.uiformat._errors import ConversionError
from proxy.workflows.uiformat._graph import Graph, Node
from proxy.workflows.uiformat._js import UNDEFINED, format_date, js_string, textarea, truthy
from proxy.workflows.uiformat._loading import Loader
from proxy.workflows.uiformat._widgets import CORE_WIDGETS, Spec, Widget, add_widgets

_REPLACE_PROPERTY: Final = "Run widget replace on values"


def apply_primitives(loader: Loader) -> None:
    """Write each PrimitiveNode's value into the widgets it feeds, in execution order."""
    for graph in loader.subgraphs.values():
        for node in graph.nodes.values():
            if node.kind == "primitive" and node.outputs and node.outputs[0].links:
                raise ConversionError(
                    f"{graph.id}/{node.id}",
                    "a PrimitiveNode inside a subgraph cannot be queued by the frontend "
                    "either; use a subgraph input instead",
                    title=node.title,
                    class_type=node.type,
                )
    root = loader.root
    for node in root.execution_order():
        if node.kind == "primitive":
            _apply_primitive(loader, node, root)


def _apply_primitive(loader: Loader, node: Node, graph: Graph) -> None:
    link_ids = node.outputs[0].links if node.outputs else []
    if not link_ids:
        return
    links = []
    for link_id in link_ids:
        link = graph.links.get(link_id)
        if link is None:
            raise ConversionError(
                node.id, f"its output lists link {link_id}, which the graph does not have",
                title=node.title, class_type=node.type,
            )  # fmt: skip
        links.append(link)
    # Its widget copies the first input it feeds; without one its value is undefined.
    value: Any = UNDEFINED
    multiline = False
    first = graph.target_input(links[0])
    if first is not None:
        target, index = first
        arrival = target.inputs[index]
        target_widget = target.widget(arrival.widget)
        if arrival.widget is None and arrival.type in CORE_WIDGETS:
            made: list[Widget] = []
            add_widgets(Spec(arrival.name, str(arrival.type), {}), made)
            value = made[0].value
        elif target_widget is not None:
            value = target_widget.read()
            multiline = target_widget.multiline
        else:
            first = None
    values = node.raw.get("widgets_values")
    if first is not None and isinstance(values, list) and values:
        value = textarea(values[0]) if multiline else values[0]
    properties = node.raw.get("properties")
    if truthy(value) and isinstance(properties, dict) and properties.get(_REPLACE_PROPERTY):
        if isinstance(value, str):
            value = _replace_text(loader, value)
    for link in links:
        reached = graph.target_input(link)
        if reached is None:
            continue
        other, slot = reached
        widget = other.widget(other.inputs[slot].widget)
        if widget is not None:
            widget.assign(value)


def _replace_text(loader: Loader, text: str) -> str:
    """The "%node.widget%" and "%date:...%" replacements of a primitive's text."""
    graphs = (loader.root, *loader.subgraphs.values())
    nodes = [n for g in graphs for n in g.nodes.values()]

    def replace(match: re.Match[str]) -> str:
        parts = match.group(1).split(".")
        if len(parts) != 2:
            if parts[0].startswith("date:"):
                return format_date(parts[0][5:], datetime.now())
            return match.group(0)
        named = [
            n for n in nodes
            if isinstance(n.raw.get("properties"), dict)
            and n.raw["properties"].get("Node name for S&R") == parts[0]
        ] or [n for n in nodes if n.title == parts[0]]  # fmt: skip
        widget = named[0].widget(parts[1]) if named else None
        if widget is None:
            return match.group(0)
        value = widget.read()
        shown = "" if value is None or value is UNDEFINED else js_string(value)
        return re.sub(r'[/?<>\\:*|"\x00-\x1f\x7f]', "_", shown)

    return re.sub(r"%([^%]+)%", replace, text)
