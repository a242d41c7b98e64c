"""Flattening the loaded graph and following its links, as the frontend's graphToPrompt does.

Subgraph instances and legacy group nodes are expanded into their inner nodes (ids like
"12:5"). A link is followed back to the node that produces its value: through Reroute nodes
(native reroutes are drawing only), subgraph boundaries and bypassed nodes (to their input of
a matching type). What it reaches is a node's output (`Resolved`), the value of a widget on
the way (`WidgetValue`), or nothing.
"""

from __future__ import annotations

from typing import Any, Final

from proxy.workflows.uiformat._graph import MODE_BYPASS, Dto, Graph, Resolved, WidgetValue
from proxy.workflows.uiformat._js import as_int, is_valid_connection
from proxy.workflows.uiformat._loading import Loader

_SUBGRAPH_INPUT_ID: Final = "-10"


class Flattened:
    """The workflow's nodes in execution order, by their id in the prompt."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.dtos: dict[str, Dto] = {}
        self._flatten(loader.root)

    # flattening ---------------------------------------------------------------------------

    def _flatten(self, root: Graph) -> None:
        for node in root.execution_order():
            dto = Dto(node, ())
            if node.kind == "subgraph":
                self._flatten_subgraph(dto, set())
            elif node.kind == "group":
                self._flatten_group(dto)
            self.dtos.setdefault(dto.id, dto)

    def _flatten_subgraph(self, dto: Dto, visited: set[str]) -> None:
        node = dto.node
        if node.type in visited:
            raise dto.fail("its subgraph contains itself")
        if node.problem is not None:
            raise dto.fail(node.problem)
        self.dtos.setdefault(dto.id, dto)
        assert node.subgraph is not None
        for inner in node.subgraph.nodes.values():
            child = Dto(inner, (*dto.path, node.id), instance=dto)
            if inner.kind == "subgraph":
                self._flatten_subgraph(child, visited | {node.type})
            elif inner.kind == "group":
                raise child.fail(
                    "group nodes inside subgraphs are not supported; convert it to a subgraph"
                )
            self.dtos.setdefault(child.id, child)

    def _flatten_group(self, dto: Dto) -> None:
        node = dto.node
        group = node.group
        assert group is not None
        if node.problem is not None:
            raise dto.fail(node.problem)
        children: list[Dto] = []
        for index, raw in enumerate(group.nodes):
            inner_raw = {**raw, "id": index}
            inner = self.loader.load_node(inner_raw, node.graph)
            children.append(Dto(inner, (*dto.path, node.id), group=dto, index=index))
        # The group's widget values go into the inner widgets they stand for.
        for new_name, (index, input_name) in group.new_to_old_widget.items():
            outer = node.widget(new_name)
            if outer is None:
                continue
            value = outer.raw()
            inner = children[index].node
            if inner.kind == "primitive":
                for target, target_input in group.primitive_to_widget.get(index, ()):
                    widget = children[target].node.widget(target_input)
                    if widget is not None:
                        widget.assign(value)
                continue
            if inner.kind == "reroute":
                for link in (group.links_from.get(index) or {}).get(0, []):
                    target_node = children[as_int(link[2])].node
                    slot = as_int(link[3])
                    if 0 <= slot < len(target_node.inputs):
                        widget = target_node.widget(target_node.inputs[slot].widget)
                        if widget is not None:
                            widget.assign(value)
            widget = inner.widget(input_name)
            if widget is not None:
                widget.assign(value)
        for child in children:
            self.dtos.setdefault(child.id, child)

    # resolving links ----------------------------------------------------------------------

    def resolve_input(
        self, dto: Dto, slot: int, visited: set[str], kind: Any = None
    ) -> Resolved | WidgetValue | None:
        if dto.group is not None:
            return self._resolve_group_child_input(dto, slot)
        node = dto.node
        key = f"{node.graph.key}:{node.id}[I]{slot}"
        if key in visited:
            raise dto.fail(f"its input {slot} leads back to itself (a loop of links)")
        visited.add(key)
        if not 0 <= slot < len(node.inputs):
            raise dto.fail(f"has no input {slot}")
        arrival = node.inputs[slot]
        if arrival.link is None:
            return None
        link = node.graph.links.get(arrival.link)
        if link is None:
            raise dto.fail(
                f"its input {arrival.name!r} uses link {arrival.link}, which is not in the graph"
            )
        instance = dto.instance
        if instance is not None and link.origin_id == _SUBGRAPH_INPUT_ID:
            outer = instance.node
            if not 0 <= link.origin_slot < len(outer.inputs):
                raise dto.fail(f"its input {arrival.name!r} is fed by a missing subgraph input")
            outer_input = outer.inputs[link.origin_slot]
            if outer_input.link is None:
                widget = outer.widget(outer_input.widget)
                return WidgetValue(widget.raw()) if widget is not None else None
            if outer_input.link not in outer.graph.links:
                raise instance.fail(
                    f"its input {outer_input.name!r} uses link {outer_input.link}, not in the graph"
                )
            return self.resolve_input(instance, link.origin_slot, visited)
        origin = node.graph.nodes.get(link.origin_id)
        if origin is None:
            raise dto.fail(
                f"its input {arrival.name!r} is linked from node {link.origin_id}, which is missing"
            )
        origin_dto = self.dtos.get(":".join((*dto.path, origin.id)))
        if origin_dto is None:
            raise dto.fail(
                f"its input {arrival.name!r} is linked from node {link.origin_id}, which is missing"
            )
        return self.resolve_output(
            origin_dto, link.origin_slot, kind if kind is not None else arrival.type, visited
        )

    def resolve_output(
        self, dto: Dto, slot: int, kind: Any, visited: set[str]
    ) -> Resolved | WidgetValue | None:
        node = dto.node
        if node.kind == "group" and dto.group is None:
            return self._resolve_group_output(dto, slot, kind, visited)
        key = f"{node.graph.key}:{node.id}[O]{slot}"
        if key in visited:
            raise dto.fail(f"its output {slot} leads back to itself (a loop of links)")
        visited.add(key)
        if node.mode == MODE_BYPASS:
            index = self._bypass_slot(dto, slot, kind)
            return None if index == -1 else self.resolve_input(dto, index, visited)
        if node.kind == "subgraph":
            return self._resolve_subgraph_output(dto, slot, kind, visited)
        if node.is_virtual:
            if 0 <= slot < len(node.inputs):
                return self.resolve_input(dto, slot, visited, kind)
            return None
        return Resolved(dto.id, slot)

    def _bypass_slot(self, dto: Dto, slot: int, kind: Any) -> int:
        inputs = dto.node.inputs
        if not 0 <= slot < len(dto.node.outputs):
            raise dto.fail(f"is bypassed but has no output {slot}")
        output_type = dto.node.outputs[slot].type
        if kind in ("*", ""):
            if not inputs:
                raise dto.fail("is bypassed, but has no input to pass on")
            return slot if len(inputs) > slot else 0
        if slot < len(inputs):
            opposite = inputs[slot].type
            if is_valid_connection(opposite, output_type) and is_valid_connection(opposite, kind):
                return slot
        for index, arrival in enumerate(inputs):
            if arrival.type == kind:
                return index
        for index, arrival in enumerate(inputs):
            if is_valid_connection(arrival.type, output_type) and is_valid_connection(
                arrival.type, kind
            ):
                return index
        return -1

    def _resolve_subgraph_output(
        self, dto: Dto, slot: int, kind: Any, visited: set[str]
    ) -> Resolved | WidgetValue | None:
        definition = dto.node.subgraph
        assert definition is not None
        if not 0 <= slot < len(definition.io_outputs):
            raise dto.fail(f"has no output {slot}")
        links = [
            definition.links[i] for i in definition.io_outputs[slot][2] if i in definition.links
        ]
        if not links:
            return None
        inner = definition.nodes.get(links[0].origin_id)
        if inner is None:
            raise dto.fail(f"its output {slot} is not fed by any node inside the subgraph")
        inner_dto = self.dtos.get(":".join((*dto.path, dto.node.id, inner.id)))
        if inner_dto is None:
            raise dto.fail(f"its output {slot} comes from a node the subgraph does not have")
        return self.resolve_output(inner_dto, links[0].origin_slot, kind, visited)

    def _resolve_group_output(
        self, dto: Dto, slot: int, kind: Any, visited: set[str]
    ) -> Resolved | WidgetValue | None:
        node, group = dto.node, dto.node.group
        assert group is not None
        if node.mode == MODE_BYPASS:
            for index in (slot, *range(len(node.inputs))):
                if 0 <= index < len(node.inputs) and node.inputs[index].type == kind:
                    return self.resolve_input(dto, index, visited)
            return None
        if not 0 <= slot < len(group.new_to_old_output):
            raise dto.fail(f"has no output {slot}")
        index, origin_slot = group.new_to_old_output[slot]
        child = self.dtos[f"{dto.id}:{index}"]
        via: tuple[str, int] | None = None
        while child.node.kind == "reroute":
            source = self._group_child_source(child, 0)
            if source is None:
                raise dto.fail(f"its output {slot} comes from a Reroute with nothing connected")
            origin, via_slot, origin_dto = source
            via = (origin, via_slot)
            if origin_dto is None or origin_dto.group is not dto:
                raise dto.fail(f"its output {slot} leaves the group through a Reroute")
            child = origin_dto
        return Resolved(f"{dto.id}:{child.index}", via[1] if via else origin_slot)

    def _group_child_source(self, dto: Dto, slot: int) -> tuple[str, int, Dto | None] | None:
        """Where a group node's inner node input comes from: (origin id, slot, its DTO)."""
        group_dto = dto.group
        assert group_dto is not None and group_dto.node.group is not None
        group = group_dto.node.group
        external = group.old_to_new_input.get(dto.index, {}).get(slot)
        if external is not None:
            if not 0 <= external < len(group_dto.node.inputs):
                return None
            link_id = group_dto.node.inputs[external].link
            link = group_dto.node.graph.links.get(link_id) if link_id is not None else None
            if link is None:
                return None
            if link.origin_id not in group_dto.node.graph.nodes:
                raise group_dto.fail(
                    f"its input {external} is linked from node {link.origin_id}, which is missing"
                )
            return link.origin_id, link.origin_slot, self.dtos.get(link.origin_id)
        internal = group.links_to.get(dto.index, {}).get(slot)
        if not internal:
            return None
        source = as_int(internal[0], -1)
        source_dto = self.dtos.get(f"{group_dto.id}:{source}")
        if source_dto is None or source_dto.node.kind == "primitive":
            return None
        return source_dto.id, as_int(internal[1]), source_dto

    def _resolve_group_child_input(self, dto: Dto, slot: int) -> Resolved | None:
        source = self._group_child_source(dto, slot)
        return None if source is None else Resolved(source[0], source[1])
