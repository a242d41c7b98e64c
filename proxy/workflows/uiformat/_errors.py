"""The conversion's own error: what cannot be converted, naming the node and why."""

from __future__ import annotations


class ConversionError(ValueError):
    """A UI-format workflow that cannot become an API prompt: names the node and why.

    `node_id` is the node's id in the prompt ("12", or "12:5" inside a subgraph), or None
    when the workflow as a whole is at fault.
    """

    def __init__(
        self,
        node_id: str | None,
        why: str,
        *,
        title: str | None = None,
        class_type: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.title = title
        self.class_type = class_type
        self.why = why
        if node_id is None:
            message = why
        else:
            named = f' "{title}"' if title else ""
            kind = f" ({class_type})" if class_type else ""
            message = f"node {node_id}{named}{kind}: {why}"
        super().__init__(message)
