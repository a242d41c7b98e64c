"""Convert the graph editor's UI-format workflow into ComfyUI's API format.

The editor saves litegraph JSON (`nodes`, `links`, `widgets_values`, `mode`, ...); `/prompt`
takes `{"<id>": {"class_type", "inputs", "_meta": {"title"}}}` with links as
`["<origin id>", <origin slot>]`. `to_api` gives what the frontend's `graphToPrompt` gives
for the same graph (comfyui-frontend-package 1.27.10, the one ComfyUI 0.3.64 ships), with
`/object_info` standing in for the frontend's node definitions:

- widgets are laid out as the frontend builds them: the widget inputs in `input_order`
  (required, then optional); an INT with `control_after_generate` (or named seed or
  noise_seed) followed by its control widget, a COMBO with it by a control and a filter
  widget, an upload combo's node by its button. `widgets_values` fills them in that order
  (or by name when it is a dict) and only real inputs reach the prompt;
- a link wins over the widget of the same input. Links are followed through Reroute nodes
  (native reroutes are drawing only) and bypassed nodes (to their input of a matching
  type); an input linked from a muted node is dropped;
- a PrimitiveNode writes its value into every widget it feeds and is not emitted, nor are
  notes, reroutes, subgraph and group nodes, whose inner nodes get ids like "12:5".

One input of the editor's is left out: the `"video-preview": ""` a LoadVideo node carries
once the browser has decoded its file, which depends on the browser rather than on the graph
(ComfyUI ignores it). tests/standin/test_editor_convert.py holds `to_api` to the editor's
own output in Chromium.

What cannot be converted raises `ConversionError`, which names the node and why.

The steps, one module each: `_widgets` (a class's widgets and sockets), `_groups` (legacy
group node types), `_loading` (the workflow loaded into `_graph`'s nodes and links),
`_primitives`, `_resolve` (flattening and following links) and `_prompt` (emitting); `_js`
holds the JavaScript semantics they share.
"""

from __future__ import annotations

import random
from typing import Any

from proxy.workflows.uiformat._errors import ConversionError
from proxy.workflows.uiformat._loading import Loader
from proxy.workflows.uiformat._primitives import apply_primitives
from proxy.workflows.uiformat._prompt import build_prompt
from proxy.workflows.uiformat._resolve import Flattened

__all__ = ["ConversionError", "is_ui_format", "to_api"]


def is_ui_format(data: Any) -> bool:
    """Whether `data` is the editor's UI format (litegraph JSON with a `nodes` list)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def _is_api_format(data: Any) -> bool:
    return isinstance(data, dict) and all(
        isinstance(node, dict) and "class_type" in node for node in data.values()
    )


def to_api(
    workflow: dict[str, Any],
    object_info: dict[str, Any],
    *,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """The API-format prompt the frontend would queue for `workflow`.

    API-format input is returned as it is. `rng` picks among `{a|b}` choices in dynamic
    prompts, as the frontend does at random on every queue.
    """
    if not is_ui_format(workflow):
        if _is_api_format(workflow):
            return workflow
        raise ConversionError(
            None, "neither the editor's UI format (no 'nodes' list) nor API format"
        )
    loader = Loader(workflow, object_info)
    apply_primitives(loader)
    return build_prompt(Flattened(loader), rng or random.Random())
