"""The output and UI caches, keyed like ComfyUI's default ("classic") cache.

A node's key covers its class, its fingerprint (file content for LoadImage), its widget values
and, through its links, the keys of all its ancestors, never its id. So re-submitting a prompt
reuses everything, and changing only the seed re-runs KSampler and what comes after it.
Like the classic cache, only the entries the current prompt uses are kept: starting a prompt
drops the rest.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

Fingerprint = Callable[[str, dict[str, Any]], Any]


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


class NodeCache:
    """Outputs (per output slot) and UI dicts of executed nodes, by node key."""

    def __init__(self) -> None:
        self._outputs: dict[str, list[list[Any]]] = {}
        self._ui: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, str] = {}

    def reset(self) -> None:
        self._outputs.clear()
        self._ui.clear()
        self._keys.clear()

    def set_prompt(self, prompt: dict[str, Any], fingerprint: Fingerprint) -> None:
        """Compute the key of every node of ``prompt`` and drop entries it does not use."""
        self._keys = _KeyBuilder(prompt, fingerprint).all_keys()
        used = set(self._keys.values())
        for store in (self._outputs, self._ui):
            for key in [k for k in store if k not in used]:
                del store[key]

    def get(self, node_id: str) -> list[list[Any]] | None:
        key = self._keys.get(node_id)
        return None if key is None else self._outputs.get(key)

    def set(self, node_id: str, outputs: list[list[Any]]) -> None:
        self._outputs[self._keys[node_id]] = outputs

    def get_ui(self, node_id: str) -> dict[str, Any] | None:
        key = self._keys.get(node_id)
        return None if key is None else self._ui.get(key)

    def set_ui(self, node_id: str, entry: dict[str, Any]) -> None:
        self._ui[self._keys[node_id]] = entry


class _KeyBuilder:
    """Merkle-style keys: a node's key hashes its own values and its ancestors' keys."""

    def __init__(self, prompt: dict[str, Any], fingerprint: Fingerprint) -> None:
        self._prompt = prompt
        self._fingerprint = fingerprint
        self._keys: dict[str, str] = {}

    def all_keys(self) -> dict[str, str]:
        return {node_id: self._key(node_id, ()) for node_id in self._prompt}

    def _key(self, node_id: str, path: tuple[str, ...]) -> str:
        if node_id in self._keys:
            return self._keys[node_id]
        node = self._prompt.get(node_id)
        if (
            node_id in path
            or not isinstance(node, dict)
            or not isinstance(node.get("inputs"), dict)
        ):
            return _uncacheable()  # a missing node or a cycle: never reused
        class_type = node.get("class_type")
        try:
            fingerprint = self._fingerprint(class_type, node["inputs"])
        except Exception:
            fingerprint = _uncacheable()
        parts: list[Any] = [class_type, repr(fingerprint)]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                parts.append([name, "link", self._key(value[0], (*path, node_id)), value[1]])
            else:
                parts.append([name, value])
        text = json.dumps(parts, sort_keys=True, default=repr)
        key = hashlib.sha256(text.encode()).hexdigest()
        self._keys[node_id] = key
        return key


def _uncacheable() -> str:
    return f"uncacheable-{uuid.uuid4().hex}"
