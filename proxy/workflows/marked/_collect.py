"""Walking a graph for its marked slots, and merging them into one slot per parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from proxy.workflows.marked._grammar import OUTPUT, TOKEN, title_words
from proxy.workflows.marked._graph import describe
from proxy.workflows.marked._nodes import PARAM_NODES
from proxy.workflows.marked._schema import class_info
from proxy.workflows.marked._slot import Slot, input_slot, node_slot, widget_inputs


def collect_slots(
    graph: Mapping[str, Any], object_info: Mapping[str, Any], problems: list[str]
) -> tuple[list[Slot], list[str]]:
    """Every marked slot in graph order, and the nodes titled `$output`."""
    slots: list[Slot] = []
    outputs: list[str] = []
    for node_id, node in graph.items():
        where = describe(node_id, node)
        words = title_words(node)
        ours = node["class_type"] in PARAM_NODES
        if not words and not ours:
            continue
        info = class_info(object_info, node["class_type"])
        if info is None:
            problems.append(
                f"{where}: class {node['class_type']} is not in ComfyUI's /object_info "
                "(is its custom node installed?)"
            )
            continue
        if ours:
            try:
                slots.append(node_slot(node_id, node, info, graph, object_info))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        names: set[str] = set()
        for word in words:
            match = TOKEN.fullmatch(word)
            if match is None:
                problems.append(
                    f"{where}: bad token {word!r}: write $name, $name=input or $output "
                    "(names: letters, digits and _, not starting with a digit)"
                )
                continue
            name, input_name = match["name"], match["input"]
            if name in names:
                problems.append(f"{where}: {word!r}: ${name} appears twice in this title")
                continue
            names.add(name)
            if name == OUTPUT:
                if input_name:
                    problems.append(f"{where}: {word!r}: $output takes no input")
                else:
                    outputs.append(node_id)
                continue
            if input_name is None:
                widgets = widget_inputs(node, info)
                linked = widget_inputs(node, info, linked=True)
                if not widgets and len(linked) == 1:
                    widgets = linked  # its one widget input is linked: input_slot says so
                if len(widgets) != 1:
                    listed = ", ".join(widgets) or "none"
                    problems.append(
                        f"{where}: {word!r} names no input and the node has "
                        f"{'no' if not widgets else 'several'} widget inputs ({listed}): "
                        f"write ${name}=<input>"
                    )
                    continue
                input_name = widgets[0]
            try:
                slots.append(input_slot(name, node_id, node, info, input_name))
            except ValueError as exc:
                problems.append(f"{where}: {word!r}: {exc}")
    return slots, outputs


def merge_slots(slots: list[Slot], problems: list[str]) -> dict[str, Slot]:
    """One slot per parameter name, carrying every binding; types and defaults must agree."""
    merged: dict[str, Slot] = {}
    bound: dict[tuple[str, str], str] = {}
    for slot in slots:
        key = (slot.binding.node, slot.binding.input)
        if key in bound:
            if bound[key] != slot.param:
                problems.append(
                    f"{slot.where}: input {slot.binding.input!r} is marked as both "
                    f"${bound[key]} and ${slot.param}"
                )
            continue
        bound[key] = slot.param
        first = merged.get(slot.param)
        if first is None:
            merged[slot.param] = replace(slot, slots=[slot.binding])
            continue
        if first.type != slot.type:
            problems.append(
                f"${slot.param}: {first.where} makes it {first.type}, {slot.where} {slot.type}"
            )
            continue
        both_random = first.random or slot.random
        if (
            not both_random
            and first.type not in ("image", "video")
            and first.default != slot.default
        ):
            problems.append(
                f"${slot.param}: {first.where} has {first.default!r}, {slot.where} has "
                f"{slot.default!r}: give both the same value"
            )
            continue
        first.slots.append(slot.binding)
        first.random = both_random
        first.four_k_plus_1 = first.four_k_plus_1 or slot.four_k_plus_1
        if slot.multiple_of:
            first.multiple_of = math.lcm(first.multiple_of or 1, slot.multiple_of)
        first.narrow(slot.min, slot.max, slot.step)
        first.description = first.description or slot.description
        if slot.choices is not None and not slot.open_choices:
            if first.open_choices or first.choices is None:
                first.choices, first.open_choices = list(slot.choices), False
            else:
                first.choices = [c for c in first.choices if c in slot.choices]
    return merged
