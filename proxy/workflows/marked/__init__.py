"""Derive a workflow's parameters from marks in its graph, so no node id is written by hand.

Two ways to mark a parameter, freely mixed in one graph:

- A `$` word in a node's title (API format: `_meta.title`); other words are free text:

      $name=input   the node's value input `input` is request parameter `name`
      $name         the same, for the node's only widget input
      $output       this node is the output (its `filename_prefix` is set per job); without
                    it, the one node whose class is an output node taking `filename_prefix`

  e.g. a KSampler titled `Sampler $seed=seed $steps=steps`, a CLIPTextEncode `Positive $prompt`.
- One of our parameter nodes (custom_nodes/api_inputs: `ApiInputInt` and friends, see
  `PARAM_NODES`), whose `name` input names the parameter bound to its value input.

The same name on several nodes binds all of them. Type, default (the graph's value), range,
step and choices come from ComfyUI's /object_info for the node's class and input (for our
nodes: their own widgets, narrowed by the inputs they feed); the optional sidecar
(`spec.Sidecar`, keyed by parameter name) adds only what ComfyUI cannot know, and may narrow
but never widen.

The steps, one module each: `_grammar` (the title words), `_nodes` (our parameter node
classes and their schemas), `_schema` (ComfyUI's /object_info), `_graph` (the API-format
graph), `_slot` (one marked input), `_collect` (a graph's slots, merged per name),
`_sidecar` (its narrowing) and `_derive` (the `WorkflowSpec`).
"""

from __future__ import annotations

from proxy.workflows.marked._collect import collect_slots, merge_slots
from proxy.workflows.marked._derive import derive_spec, find_output
from proxy.workflows.marked._errors import MarkError
from proxy.workflows.marked._grammar import NAME, OUTPUT, TOKEN, has_marks, title_words
from proxy.workflows.marked._graph import check_graph, is_link
from proxy.workflows.marked._nodes import BUILTIN, PARAM_NODES, SEED_MAX, WIDE, ParamNode
from proxy.workflows.marked._schema import class_info, reference_object_info
from proxy.workflows.marked._sidecar import parse_sidecar
from proxy.workflows.marked._slot import Slot, widget_inputs

__all__ = [
    "BUILTIN",
    "MarkError",
    "NAME",
    "OUTPUT",
    "PARAM_NODES",
    "ParamNode",
    "SEED_MAX",
    "Slot",
    "TOKEN",
    "WIDE",
    "check_graph",
    "class_info",
    "collect_slots",
    "derive_spec",
    "find_output",
    "has_marks",
    "is_link",
    "merge_slots",
    "parse_sidecar",
    "reference_object_info",
    "title_words",
    "widget_inputs",
]
