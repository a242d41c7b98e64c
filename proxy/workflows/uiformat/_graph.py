"""The workflow as the frontend holds it once loaded, and as it flattens it to execute.

`Graph` is the root graph or a subgraph definition, `Node` one node in it (with the widgets
and sockets of its class), `Link` a link; `Dto` is a node in one place of the flattened
graph (the frontend's ExecutableNodeDTO), with an id like "12:5" inside subgraph 12.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from proxy.workflows.uiformat._errors import ConversionError
from proxy.workflows.uiformat._groups import GroupDef
from proxy.workflows.uiformat._js import as_int, id_string, js_string
from proxy.workflows.uiformat._widgets import Widget

MODE_NEVER: Final = 2  # muted: dropped, with every input linked from it
MODE_BYPASS: Final = 4  # bypassed: its outputs pass on a matching input


@dataclass
class Link:
    """A link: from an output slot of one node to an input slot of another."""

    id: int
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


def parse_link(raw: Any) -> Link | None:
    """A saved link, as a list `[id, origin, slot, target, slot, type]` or an object."""
    if isinstance(raw, list) and len(raw) >= 5:
        kind = raw[5] if len(raw) > 5 else "*"
        return Link(
            as_int(raw[0], -1),
            id_string(raw[1]),
            as_int(raw[2]),
            id_string(raw[3]),
            as_int(raw[4]),
            kind,
        )
    if isinstance(raw, dict) and "id" in raw:
        return Link(
            as_int(raw["id"], -1),
            id_string(raw.get("origin_id")),
            as_int(raw.get("origin_slot")),
            id_string(raw.get("target_id")),
            as_int(raw.get("target_slot")),
            raw.get("type", "*"),
        )
    return None


@dataclass(eq=False)
class Slot:
    """An input or output socket of a node."""

    name: str
    type: Any
    link: int | None = None  # an input's link
    widget: str | None = None  # the widget an input feeds
    links: list[int] = field(default_factory=list)  # an output's links


@dataclass(eq=False)
class Graph:
    """The root graph or one subgraph definition (shared by all its instances)."""

    id: str | None
    nodes: dict[str, Node] = field(default_factory=dict)
    links: dict[int, Link] = field(default_factory=dict)
    io_inputs: list[tuple[str, Any, list[int]]] = field(default_factory=list)
    io_outputs: list[tuple[str, Any, list[int]]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.id if self.id is not None else "undefined"

    def target_input(self, link: Link) -> tuple[Node, int] | None:
        """The node and input slot a link arrives at."""
        node = self.nodes.get(link.target_id)
        if node is None:
            return None
        for index, slot in enumerate(node.inputs):
            if slot.link == link.id:
                return node, index
        if 0 <= link.target_slot < len(node.inputs):
            return node, link.target_slot
        return None

    def execution_order(self) -> list[Node]:
        """litegraph's computeExecutionOrder: nodes without inputs first, then their users."""
        remaining = {
            node.id: sum(1 for slot in node.inputs if slot.link is not None)
            for node in self.nodes.values()
        }
        pending = [node for node in self.nodes.values() if not remaining[node.id]]
        order: list[Node] = []
        placed: set[str] = set()
        visited: set[int] = set()
        while pending:
            node = pending.pop(0)
            order.append(node)
            placed.add(node.id)
            for out in node.outputs:
                for link_id in out.links:
                    link = self.links.get(link_id)
                    if link is None or link.id in visited:
                        continue
                    visited.add(link.id)
                    if link.target_id not in self.nodes:
                        continue
                    remaining[link.target_id] -= 1
                    if remaining[link.target_id] == 0:
                        pending.append(self.nodes[link.target_id])
        return order + [n for n in self.nodes.values() if n.id not in placed]


@dataclass(eq=False)
class Node:
    """One node as the frontend holds it after loading."""

    id: str
    raw: dict[str, Any]
    type: str
    kind: str  # node | primitive | reroute | note | subgraph | group | unknown
    title: str
    mode: int
    graph: Graph
    inputs: list[Slot] = field(default_factory=list)
    outputs: list[Slot] = field(default_factory=list)
    widgets: list[Widget] = field(default_factory=list)
    subgraph: Graph | None = None
    group: GroupDef | None = None
    problem: str | None = None  # why it cannot be emitted

    @property
    def is_virtual(self) -> bool:
        return self.kind in ("primitive", "reroute", "note", "subgraph", "group")

    def widget(self, name: str | None) -> Widget | None:
        return next((w for w in self.widgets if w.name == name), None) if name else None


def json_slots(raw: Any, output: bool) -> list[Slot]:
    """The sockets a node was saved with (`inputs` or `outputs`)."""
    slots = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict):
            slots.append(Slot("", "*"))
            continue
        widget = item.get("widget")
        slots.append(
            Slot(
                name=js_string(item.get("name", "")),
                type=item.get("type", "*"),
                link=None if output or item.get("link") is None else as_int(item["link"], -1),
                widget=js_string(widget["name"])
                if isinstance(widget, dict) and "name" in widget
                else None,
                links=[as_int(x, -1) for x in item.get("links") or ()] if output else [],
            )
        )
    return slots


@dataclass
class Resolved:
    """A link followed to the node output that produces its value."""

    origin_id: str
    origin_slot: int


@dataclass
class WidgetValue:
    """A link followed to a widget's value (a subgraph input with nothing linked)."""

    value: Any


@dataclass(eq=False)
class Dto:
    """A node in the flattened graph (ExecutableNodeDTO): a node in one place."""

    node: Node
    path: tuple[str, ...]  # ids of the subgraph or group instances around it
    instance: Dto | None = None  # the subgraph instance around it
    group: Dto | None = None  # the group node it belongs to (legacy group nodes)
    index: int = -1  # its index in that group

    @property
    def id(self) -> str:
        return ":".join((*self.path, self.node.id))

    def fail(self, why: str) -> ConversionError:
        return ConversionError(self.id, why, title=self.node.title, class_type=self.node.type)
