"""Legacy group nodes (`extra.groupNodes`): the node type the frontend makes of each.

A mirror of the frontend's GroupNodeConfig: which inner widgets and inputs the group node
shows (and under which names), which inner outputs it exposes, and which inner widgets a
PrimitiveNode inside the group feeds. Group node types are named "workflow>name".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from proxy.workflows.uiformat._js import as_int, js_string
from proxy.workflows.uiformat._widgets import (
    RENAMED,
    SEED_NAMES,
    WIDGET_TYPES,
    Layout,
    Spec,
    build_layout,
    parse_spec,
)

GROUP_PREFIXES: Final = ("workflow>", "workflow/")


@dataclass
class GroupDef:
    """A legacy group node type (`extra.groupNodes`): its inner nodes and its own layout."""

    name: str
    nodes: list[dict[str, Any]]
    links_to: dict[int, dict[int, list[Any]]]
    links_from: dict[int, dict[int, list[list[Any]]]]
    external: dict[int, dict[int, Any]]
    layout: Layout
    new_to_old_widget: dict[str, tuple[int, str]]
    primitive_to_widget: dict[int, list[tuple[int, str]]]
    old_to_new_input: dict[int, dict[int, int]]
    new_to_old_output: list[tuple[int, int]]


def group_def(name: str, data: dict[str, Any], object_info: dict[str, Any]) -> GroupDef:
    """Mirror of the frontend's GroupNodeConfig: which inner widgets and inputs it shows."""
    nodes = [n for n in data.get("nodes") or () if isinstance(n, dict)]
    links_to: dict[int, dict[int, list[Any]]] = {}
    links_from: dict[int, dict[int, list[list[Any]]]] = {}
    for link in data.get("links") or ():
        if not isinstance(link, list) or len(link) < 4 or link[0] is None:
            continue
        source, source_slot, target, target_slot = (as_int(x, -1) for x in link[:4])
        links_from.setdefault(source, {}).setdefault(source_slot, []).append(link)
        links_to.setdefault(target, {})[target_slot] = link
    external: dict[int, dict[int, Any]] = {}
    for ext in data.get("external") or ():
        if isinstance(ext, list) and len(ext) >= 3:
            external.setdefault(as_int(ext[0], -1), {})[as_int(ext[1], -1)] = ext[2]
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    assert isinstance(config, dict)

    required: dict[str, list[Any]] = {}
    outputs: list[str] = []
    new_to_old_output: list[tuple[int, int]] = []
    new_to_old_widget: dict[str, tuple[int, str]] = {}
    old_to_new_widget: dict[int, dict[str, str | None]] = {}
    primitive_to_widget: dict[int, list[tuple[int, str]]] = {}
    old_to_new_input: dict[int, dict[int, int]] = {}
    primitive_defs: dict[int, list[Any]] = {}
    seen_inputs: dict[str, int] = {}
    later: list[tuple[int, dict[str, Any], dict[str, Any], list[str], dict[int, str]]] = []
    input_count = 0

    def node_config(index: int) -> dict[str, Any]:
        entry = config.get(str(index)) if isinstance(config, dict) else None
        return entry if isinstance(entry, dict) else {}

    def input_config(
        index: int, node: dict[str, Any], input_name: str, raw: list[Any], extra: dict[str, Any]
    ) -> tuple[str, list[Any], dict[str, Any]]:
        custom = (node_config(index).get("input") or {}).get(input_name) or {}
        label = next(
            (
                i.get("label")
                for i in node.get("inputs") or ()
                if isinstance(i, dict) and i.get("name") == input_name
            ),
            None,
        )
        shown = custom.get("name") or label or input_name
        key, prefix = shown, ""
        if (node.get("type") == "PrimitiveNode" and node.get("title")) or shown in seen_inputs:
            prefix = f"{node.get('title') or node.get('type')} "
            key = shown = f"{prefix}{input_name}"
            if shown in seen_inputs:
                shown = f"{prefix}{seen_inputs[shown]} {input_name}"
        seen_inputs[key] = seen_inputs.get(key, 1) + 1
        if input_name in SEED_NAMES:
            extra = {**extra, "control_after_generate": f"{prefix}control_after_generate"}
        if raw and raw[0] == "IMAGEUPLOAD":
            widget = (
                raw[1].get("widget", "image")
                if len(raw) > 1 and isinstance(raw[1], dict)
                else "image"
            )
            extra = {**extra, "widget": (old_to_new_widget.get(index) or {}).get(widget) or "image"}
        if extra:
            raw = [
                raw[0],
                {**(raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}), **extra},
            ]
        return shown, raw, custom

    def inner_def(index: int, node: dict[str, Any]) -> dict[str, Any] | None:
        kind = RENAMED.get(str(node.get("type")), str(node.get("type")))
        if kind in object_info:
            info = object_info[kind]
            layout_inputs = build_layout(kind, info).specs
            return {
                "inputs": {n: _v1(s) for n, s in layout_inputs.items()},
                "output": info.get("output") or [],
                "output_name": info.get("output_name") or [],
            }
        sources = links_from.get(index)
        if kind == "PrimitiveNode":
            if not sources or not sources.get(0):
                return None
            first = sources[0][0]
            link_type: Any = first[5] if len(first) > 5 else "*"
            if link_type == "COMBO":
                outs = node.get("outputs") or [{}]
                widget_name = ((outs[0] or {}).get("widget") or {}).get("name")
                target = nodes[as_int(first[2])]
                target_info = object_info.get(str(target.get("type")), {}).get("input", {})
                spec = (target_info.get("required") or {}).get(widget_name) or (
                    target_info.get("optional") or {}
                ).get(widget_name)
                link_type = spec[0] if spec else link_type
            primitive_defs[index] = [link_type, {}]
            return {
                "inputs": {"value": primitive_defs[index]},
                "output": [link_type],
                "output_name": [],
            }
        if kind == "Reroute":
            if links_to.get(index) and sources and not (external.get(index) or {}).get(0):
                return None
            reroute_type = "*"
            return {
                "inputs": {reroute_type: [reroute_type, {"forceInput": True}]},
                "output": [reroute_type],
                "output_name": [],
            }
        return None

    for index, node in enumerate(nodes):
        definition = inner_def(index, node)
        if definition is None:
            continue
        inputs: dict[str, Any] = definition["inputs"]
        widget_map = old_to_new_widget.setdefault(index, {})
        converted: dict[int, str] = {}
        slots: list[str] = []
        for input_name, raw in inputs.items():
            if parse_spec(input_name, raw, False).type in WIDGET_TYPES:
                found = next(
                    (
                        k
                        for k, i in enumerate(node.get("inputs") or ())
                        if isinstance(i, dict)
                        and i.get("name") == input_name
                        and isinstance(i.get("widget"), dict)
                        and i["widget"].get("name") == input_name
                    ),
                    -1,
                )
                if found > -1:
                    converted[found] = input_name
                    widget_map[input_name] = None
                else:
                    shown, conf, _ = input_config(index, node, input_name, raw, {})
                    required[shown] = conf
                    widget_map[input_name] = shown
                    new_to_old_widget[shown] = (index, input_name)
            else:
                slots.append(input_name)
        incoming = links_to.get(index, {})
        input_map = old_to_new_input.setdefault(index, {})
        for k, input_name in enumerate(slots):
            if incoming.get(k):
                _group_primitive(
                    incoming[k],
                    index,
                    input_name,
                    inputs[input_name],
                    primitive_defs,
                    primitive_to_widget,
                )
                continue
            shown, conf, custom = input_config(index, node, input_name, inputs[input_name], {})
            if custom.get("visible") is False:
                continue
            required[shown] = conf
            input_map[k] = input_count
            input_count += 1
        later.append((index, node, inputs, slots, converted))
        for out_index, out_type in enumerate(definition["output"]):
            linked = (links_from.get(index) or {}).get(out_index) and not (
                external.get(index) or {}
            ).get(out_index)
            custom_out = (node_config(index).get("output") or {}).get(str(out_index)) or {}
            if not custom_out.get("visible", not linked):
                continue
            new_to_old_output.append((index, out_index))
            outputs.append("COMBO" if isinstance(out_type, list) else js_string(out_type))

    for index, node, inputs, slots, converted in later:
        incoming = links_to.get(index, {})
        input_map = old_to_new_input.setdefault(index, {})
        # The frontend sorts these slot numbers as strings.
        for k, input_name in enumerate(converted[i] for i in sorted(converted, key=str)):
            if incoming.get(len(slots) + k):
                _group_primitive(
                    incoming[len(slots) + k],
                    index,
                    input_name,
                    inputs[input_name],
                    primitive_defs,
                    primitive_to_widget,
                )
                continue
            shown, conf, _ = input_config(
                index, node, input_name, inputs[input_name], {"defaultInput": True}
            )
            required[shown] = conf
            new_to_old_widget[shown] = (index, input_name)
            input_map[len(slots) + k] = input_count
            input_count += 1

    group_info = {"input": {"required": required}, "output": outputs, "display_name": name}
    layout = build_layout(f"{GROUP_PREFIXES[0]}{name}", group_info)
    return GroupDef(
        name, nodes, links_to, links_from, external, layout, new_to_old_widget,
        primitive_to_widget, old_to_new_input, new_to_old_output,
    )  # fmt: skip


def _v1(spec: Spec) -> list[Any]:
    kind: Any = (
        list(spec.combo_choices or ())
        if spec.type == "COMBO" and "options" not in spec.options
        else spec.type
    )
    return [kind, dict(spec.options)]


def _group_primitive(
    link: list[Any],
    target: int,
    input_name: str,
    target_spec: list[Any],
    primitive_defs: dict[int, list[Any]],
    primitive_to_widget: dict[int, list[tuple[int, str]]],
) -> None:
    source = as_int(link[0], -1)
    if source in primitive_defs:
        # The primitive takes the options of the widget it feeds, with a control widget.
        own = target_spec[1] if len(target_spec) > 1 and isinstance(target_spec[1], dict) else {}
        primitive_defs[source][1] = {**own, "control_after_generate": True}
        primitive_to_widget.setdefault(source, []).append((target, input_name))
