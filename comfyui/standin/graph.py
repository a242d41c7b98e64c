"""The order in which a prompt's nodes run, by ComfyUI's rule.

Each output node is added with its uncached ancestors (a depth-first walk with an explicit
stack over the inputs in prompt order, which fixes the order of the pending list). A node is
ready when no pending node feeds it. Among the ready nodes the pick is, in this order:
an output node; a node that feeds an output node; a node two links before an output node;
else the first ready node in pending order. For the Wan graph this gives
39, 55, 38, 7, 6, 37, 48, 3, 8, 57, 58, as the real server does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cache import is_link


class DependencyCycleError(Exception):
    pass


class ExecutionList:
    """Pending nodes, what blocks each one, and the staged pick."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
    ) -> None:
        self._prompt = prompt
        self._is_cached = is_cached
        self._is_output = is_output
        self._pending: dict[str, None] = {}
        self._block_count: dict[str, int] = {}
        self._blocking: dict[str, dict[str, None]] = {}

    def is_empty(self) -> bool:
        return not self._pending

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self._pending:
                continue
            self._pending[current] = None
            self._block_count[current] = 0
            self._blocking[current] = {}
            for value in self._prompt[current]["inputs"].values():
                if not is_link(value):
                    continue
                source = value[0]
                if not self._is_cached(source):
                    stack.append(source)
                links.append((source, current))
        for source, target in links:
            if self._is_cached(source):
                continue
            self.add_node(source)
            if target not in self._blocking[source]:
                self._blocking[source][target] = None
                self._block_count[target] += 1

    def stage(self) -> str:
        """The next node to run."""
        ready = [n for n in self._pending if self._block_count[n] == 0]
        if not ready:
            raise DependencyCycleError("Dependency cycle detected")
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self._blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self._blocking[node_id]:
                if any(self._is_output(b) for b in self._blocking[blocked]):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self._pending[node_id]
        for blocked in self._blocking.pop(node_id):
            self._block_count[blocked] -= 1

    def cycle_nodes(self) -> list[str]:
        return list(self._pending)
