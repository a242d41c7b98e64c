"""`derive_spec`: the `WorkflowSpec` a marked graph and its sidecar make, output node and all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from proxy.workflows.marked._collect import collect_slots, merge_slots
from proxy.workflows.marked._errors import MarkError
from proxy.workflows.marked._graph import check_graph, describe, is_link
from proxy.workflows.marked._schema import class_info, input_names
from proxy.workflows.marked._sidecar import param_spec, parse_sidecar
from proxy.workflows.spec import Binding, ParamExtra, ParamSpec, Sidecar, WorkflowSpec


def find_output(
    graph: Mapping[str, Any],
    object_info: Mapping[str, Any],
    marked: list[str],
    problems: list[str],
) -> tuple[str, Binding | None] | None:
    """(output node, its filename_prefix slot) from the `$output` titles or, without one, the
    one output node taking `filename_prefix`; None after a problem."""
    if len(marked) > 1:
        nodes = ", ".join(describe(n, graph[n]) for n in marked)
        problems.append(f"$output marks several nodes ({nodes}): mark one")
        return None
    if marked:
        node_id = marked[0]
    else:
        candidates = [
            node_id
            for node_id, node in graph.items()
            if (info := class_info(object_info, node.get("class_type"))) is not None
            and info.get("output_node")
            and "filename_prefix" in input_names(info)
        ]
        if len(candidates) != 1:
            listed = ", ".join(describe(n, graph[n]) for n in candidates) or "none"
            problems.append(
                "no output node: title one node $output (output nodes taking filename_prefix: "
                f"{listed})"
            )
            return None
        node_id = candidates[0]
    node = graph[node_id]
    prefix = node.get("inputs", {}).get("filename_prefix")
    if prefix is None or is_link(prefix):
        return node_id, None
    return node_id, Binding(node=node_id, input="filename_prefix", class_type=node["class_type"])


def _kind(params: list[ParamSpec]) -> str:
    types = {p.type for p in params}
    if "video" in types:
        return "video-to-video"
    return "image-to-video" if "image" in types else "text-to-video"


def derive_spec(
    name: str,
    graph: Mapping[str, Any],
    object_info: Mapping[str, Any],
    sidecar: Mapping[str, Any] | Sidecar | None = None,
) -> WorkflowSpec:
    """The `WorkflowSpec` a marked graph declares; MarkError listing every problem."""
    problems = check_graph(graph)
    if problems:
        raise MarkError(problems)
    side = parse_sidecar(sidecar)
    slots, outputs = collect_slots(graph, object_info, problems)
    merged = merge_slots(slots, problems)
    for extra_name in side.params:
        if extra_name not in merged:
            marked = ", ".join(merged) or "none"
            problems.append(
                f"sidecar: {extra_name}: the graph marks no such parameter (marked: {marked})"
            )
    order = [n for n in side.params if n in merged] + [n for n in merged if n not in side.params]
    params = [
        p
        for n in order
        if (p := param_spec(n, merged[n], side.params.get(n) or ParamExtra(), problems)) is not None
    ]
    output = find_output(graph, object_info, outputs, problems)
    if problems or output is None:
        raise MarkError(problems)
    try:
        return WorkflowSpec(
            name=name,
            title=side.title or name,
            description=side.description,
            kind=side.kind or _kind(params),
            aliases=side.aliases,
            output_node=output[0],
            filename_prefix=output[1],
            params=params,
        )
    except ValidationError as exc:
        raise MarkError(
            [str(err["msg"]).removeprefix("Value error, ") for err in exc.errors()]
        ) from None
