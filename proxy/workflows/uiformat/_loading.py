"""Loading a UI-format workflow as the frontend's app.loadGraphData does.

Each node is configured from its class (`/object_info`, a subgraph definition or a legacy
group node type): its sockets and widgets are rebuilt, saved links kept, and
`widgets_values` assigned to the widgets in order (or by name when it is a dict). A node
that cannot be emitted keeps the reason in `Node.problem`.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from proxy.workflows.uiformat._errors import ConversionError
from proxy.workflows.uiformat._graph import Graph, Node, Slot, json_slots, parse_link
from proxy.workflows.uiformat._groups import GROUP_PREFIXES, GroupDef, group_def
from proxy.workflows.uiformat._js import as_int, id_string, js_string, truthy
from proxy.workflows.uiformat._widgets import RENAMED, Layout, build_layout

# Frontend-only classes: never in the prompt.
_SYSTEM_TITLES: Final = {
    "PrimitiveNode": "Primitive",
    "Reroute": "Reroute",
    "Note": "Note",
    "MarkdownNote": "Markdown Note",
}


class Loader:
    """The loaded workflow: its root graph, subgraph definitions and group node types."""

    def __init__(self, workflow: dict[str, Any], object_info: dict[str, Any]) -> None:
        self.object_info = object_info
        self.layouts: dict[str, Layout] = {}
        self.definitions: dict[str, dict[str, Any]] = {}
        self._collect_definitions(workflow)
        self.subgraphs: dict[str, Graph] = {}
        self.loading: set[str] = set()
        extra = workflow.get("extra") if isinstance(workflow.get("extra"), dict) else {}
        groups = (extra or {}).get("groupNodes")
        self.group_data: dict[str, Any] = groups if isinstance(groups, dict) else {}
        self.groups: dict[str, GroupDef] = {}
        self.root = self.load_graph(workflow, None)

    def _collect_definitions(self, graph: dict[str, Any]) -> None:
        definitions = graph.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        for sub in subgraphs if isinstance(subgraphs, list) else ():
            if (
                isinstance(sub, dict)
                and isinstance(sub.get("id"), str)
                and sub["id"] not in self.definitions
            ):
                self.definitions[sub["id"]] = sub
                self._collect_definitions(sub)

    def layout(self, class_type: str) -> Layout:
        if class_type not in self.layouts:
            self.layouts[class_type] = build_layout(class_type, self.object_info[class_type])
        return self.layouts[class_type]

    def load_graph(self, data: dict[str, Any], graph_id: str | None) -> Graph:
        graph = Graph(graph_id)
        raw_links = data.get("links") or []
        for raw in raw_links.values() if isinstance(raw_links, dict) else raw_links:
            link = parse_link(raw)
            if link is not None:
                graph.links[link.id] = link
        for key, target in (("inputs", graph.io_inputs), ("outputs", graph.io_outputs)):
            for slot in data.get(key) or () if graph_id is not None else ():
                if isinstance(slot, dict):
                    ids = [as_int(x, -1) for x in slot.get("linkIds") or ()]
                    target.append((js_string(slot.get("name", "")), slot.get("type", "*"), ids))
        for raw in data.get("nodes") or ():
            if isinstance(raw, dict):
                node = self.load_node(raw, graph)
                graph.nodes[node.id] = node
        return graph

    def subgraph(self, subgraph_id: str, user: Node) -> Graph:
        if subgraph_id not in self.subgraphs:
            if subgraph_id in self.loading:
                raise ConversionError(
                    user.id,
                    f"subgraph {subgraph_id} contains itself",
                    title=user.title,
                    class_type=user.type,
                )
            self.loading.add(subgraph_id)
            self.subgraphs[subgraph_id] = self.load_graph(
                self.definitions[subgraph_id], subgraph_id
            )
            self.loading.discard(subgraph_id)
        return self.subgraphs[subgraph_id]

    def load_node(self, raw: dict[str, Any], graph: Graph) -> Node:
        kind_name = RENAMED.get(js_string(raw.get("type")), js_string(raw.get("type")))
        for prefix in GROUP_PREFIXES[1:]:
            if kind_name.startswith(prefix):
                kind_name = GROUP_PREFIXES[0] + kind_name[len(prefix) :]
        node = Node(
            id=id_string(raw.get("id")),
            raw=raw,
            type=kind_name,
            kind="unknown",
            title="",
            mode=as_int(raw.get("mode")),
            graph=graph,
            inputs=json_slots(raw.get("inputs"), output=False),
            outputs=json_slots(raw.get("outputs"), output=True),
        )
        default_title = kind_name
        if kind_name in _SYSTEM_TITLES:
            node.kind = {"PrimitiveNode": "primitive", "Reroute": "reroute"}.get(kind_name, "note")
            default_title = _SYSTEM_TITLES[kind_name]
        elif kind_name in self.definitions:
            node.kind = "subgraph"
            default_title = js_string(self.definitions[kind_name].get("name") or kind_name)
            self._configure_subgraph(node)
        elif (
            kind_name.startswith(GROUP_PREFIXES[0])
            and kind_name[len(GROUP_PREFIXES[0]) :] in self.group_data
        ):
            node.kind = "group"
            node.group = self.group(kind_name[len(GROUP_PREFIXES[0]) :])
            default_title = node.group.layout.title
            self._configure(node, node.group.layout)
        elif kind_name in self.object_info:
            node.kind = "node"
            layout = self.layout(kind_name)
            default_title = layout.title
            if layout.browser_only:
                node.problem = f"its {layout.browser_only} widget gets its value in the browser"
            self._configure(node, layout)
        else:
            node.problem = f"class {kind_name!r} is not in /object_info (a missing custom node?)"
        title = raw.get("title")
        node.title = js_string(title) if truthy(title) else default_title
        return node

    def group(self, name: str) -> GroupDef:
        if name not in self.groups:
            data = self.group_data[name]
            self.groups[name] = group_def(
                name, data if isinstance(data, dict) else {}, self.object_info
            )
        return self.groups[name]

    def _configure(self, node: Node, layout: Layout) -> None:
        saved = {slot.name: slot for slot in node.inputs}
        defined = []
        for name, kind, widget in layout.sockets():
            old = saved.get(name)
            defined.append(
                Slot(
                    name,
                    kind,
                    old.link if old else None,
                    widget if widget else (old.widget if old else None),
                )
            )
        names = {slot.name for slot in defined}
        node.inputs = defined + [slot for slot in node.inputs if slot.name not in names]
        outputs = [Slot(js_string(i), kind) for i, kind in enumerate(layout.outputs)]
        for index, saved_out in enumerate(node.outputs):
            if index < len(outputs):
                outputs[index].links = saved_out.links
            else:
                outputs.append(saved_out)
        node.outputs = outputs
        node.widgets = layout.new_widgets()
        self._fill_widgets(node, layout)
        # An input that feeds a widget the node does not have is removed on load.
        widget_names = {w.name for w in node.widgets}
        node.inputs = [s for s in node.inputs if s.widget is None or s.widget in widget_names]

    def _fill_widgets(self, node: Node, layout: Layout | None) -> None:
        values = node.raw.get("widgets_values")
        slots = [w for w in node.widgets if w.slot]
        if isinstance(values, dict):
            for widget in slots:
                if widget.name in values:
                    widget.assign(values[widget.name])
        elif isinstance(values, list):
            if layout is not None:
                values = layout.migrate_values(values, node.widgets)
            # Saved lists keep a hole (null) where a widget without a value sits.
            holed = max((i + 1 for i, w in enumerate(node.widgets) if w.slot), default=0)
            if len(values) not in (len(slots), holed) and node.problem is None:
                names = ", ".join(w.name for w in slots) or "none"
                node.problem = (
                    f"has {len(values)} widget values but its class takes {len(slots)} ({names}); "
                    "was it saved with another version of the node?"
                )
            for widget, value in zip(slots, values, strict=False):
                widget.assign(value)
        if node.type in ("KSampler", "KSamplerAdvanced"):
            sampler = node.widget("sampler_name")
            if (
                sampler is not None
                and isinstance(sampler.value, str)
                and sampler.value.startswith("sample_")
            ):
                sampler.value = sampler.value[7:]

    def _configure_subgraph(self, node: Node) -> None:
        definition = self.subgraph(node.type, node)
        saved = {slot.name: slot for slot in node.inputs}
        node.subgraph = definition
        node.inputs = [
            Slot(name, kind, saved[name].link if name in saved else None)
            for name, kind, _ in definition.io_inputs
        ]
        saved_outputs = node.outputs
        node.outputs = [Slot(name, kind) for name, kind, _ in definition.io_outputs]
        for index, out in enumerate(saved_outputs[: len(node.outputs)]):
            node.outputs[index].links = out.links
        # Promote the widget of the first inner input each subgraph input feeds.
        for slot, (name, _, link_ids) in zip(node.inputs, definition.io_inputs, strict=True):
            for link_id in link_ids:
                link = definition.links.get(link_id)
                target = definition.target_input(link) if link else None
                if target is None:
                    continue
                inner, index = target
                widget = inner.widget(inner.inputs[index].widget)
                if widget is None:
                    continue
                promoted = copy.copy(widget)
                promoted.name = name
                if widget.multiline:
                    promoted.shared = widget
                node.widgets.append(promoted)
                slot.widget = name
                break
        self._fill_widgets(node, None)
