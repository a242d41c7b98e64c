"""Emitting the API-format prompt from the flattened graph.

Every node but the virtual ones (primitives, reroutes, notes, subgraph and group nodes) and
the muted and bypassed ones becomes `{"inputs", "class_type", "_meta": {"title"}}`: its
widgets that reach the prompt, then its inputs as links `["<origin id>", <slot>]`, a link
winning over the widget of the same input. Links to nodes left out are dropped.
"""

from __future__ import annotations

import random
from typing import Any

from proxy.workflows.uiformat._graph import MODE_BYPASS, MODE_NEVER, WidgetValue
from proxy.workflows.uiformat._js import UNDEFINED, dynamic_prompt, js_key_order
from proxy.workflows.uiformat._resolve import Flattened
from proxy.workflows.uiformat._widgets import Widget


def build_prompt(flat: Flattened, rng: random.Random) -> dict[str, Any]:
    """The prompt graphToPrompt makes of `flat`; `rng` picks dynamic prompts' choices."""
    output: dict[str, dict[str, Any]] = {}
    for dto in list(flat.dtos.values()):
        node = dto.node
        if node.is_virtual or node.mode in (MODE_NEVER, MODE_BYPASS):
            continue
        if node.problem is not None:
            raise dto.fail(node.problem)
        inputs: dict[str, Any] = {}
        for widget in node.widgets:
            if widget.name and widget.in_prompt:
                inputs[widget.name] = _serialize(widget, rng)
        for index, arrival in enumerate(node.inputs):
            resolved = flat.resolve_input(dto, index, set())
            if resolved is None:
                continue
            if isinstance(resolved, WidgetValue):
                inputs[arrival.name] = _boxed(resolved.value)
            else:
                inputs[arrival.name] = [resolved.origin_id, resolved.origin_slot]
        output[dto.id] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": node.title}}
    for entry in output.values():
        entry["inputs"] = {
            name: value
            for name, value in entry["inputs"].items()
            if value is not UNDEFINED
            and not (isinstance(value, list) and len(value) == 2 and value[0] not in output)
        }
    _check_cycles(flat, output)
    return js_key_order(output)


def _serialize(widget: Widget, rng: random.Random) -> Any:
    value = widget.read()
    if widget.dynamic and isinstance(value, str):
        value = dynamic_prompt(value, rng)
    return _boxed(value)


def _boxed(value: Any) -> Any:
    """Array widget values are wrapped, since an array in a prompt means a link."""
    return {"__value__": value} if isinstance(value, list) else value


def _check_cycles(flat: Flattened, output: dict[str, dict[str, Any]]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node_id: str, path: list[str]) -> None:
        state[node_id] = 1
        for value in output[node_id]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and value[0] in output:
                origin = value[0]
                if state.get(origin) == 1:
                    loop = " -> ".join([*path[path.index(origin) :], origin])
                    dto = flat.dtos[origin]
                    raise dto.fail(f"is part of a cycle of links ({loop})")
                if origin not in state:
                    visit(origin, [*path, origin])
        state[node_id] = 2

    for node_id in output:
        if node_id not in state:
            visit(node_id, [node_id])
