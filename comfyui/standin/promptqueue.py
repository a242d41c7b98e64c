"""The prompt queue and the history, with ComfyUI's semantics.

Pending prompts sit in a heap of ``(number, prompt_id, prompt, extra_data, outputs)`` tuples,
so they run by number, then prompt_id (``front`` uses negative numbers). One worker takes
them one at a time. Every change of the queue calls ``on_change`` (the ``status`` broadcast),
under the lock, so the broadcasts keep the order of the changes.

``restart()`` forgets everything, as a process restart would; the epoch it bumps lets the
worker drop a prompt that was running at that moment without a trace.
"""

from __future__ import annotations

import copy
import heapq
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")

QueueItem = tuple[Any, str, dict[str, Any], dict[str, Any], list[str]]


@dataclass(frozen=True)
class Task:
    """A prompt the worker took: the item, its running slot and the epoch it belongs to."""

    item: QueueItem
    task_id: int
    epoch: int

    @property
    def prompt_id(self) -> str:
        return self.item[1]


class PromptQueue:
    """Pending heap, running slot(s), history and worker flags, shared by loop and worker."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._lock = threading.RLock()
        self._not_empty = threading.Condition(self._lock)
        self._on_change = on_change
        self._heap: list[QueueItem] = []
        self._running: dict[int, list[Any]] = {}
        self._task_counter = 0
        self._history: dict[str, dict[str, Any]] = {}
        self._flags: dict[str, Any] = {}
        self._closed = False
        self.epoch = 0

    # --- queue ---------------------------------------------------------------------------

    def put(self, item: QueueItem) -> None:
        with self._lock:
            heapq.heappush(self._heap, item)
            self._on_change()
            self._not_empty.notify()

    def get(self, timeout_s: float | None = None) -> Task | None:
        """Take the next prompt; None when woken (flags, close) or timed out with nothing.

        Pending flags come first, so a ``/free`` answered before a prompt was queued always
        takes effect before that prompt runs.
        """
        with self._not_empty:
            if not self._heap and not self._closed and not self._flags:
                self._not_empty.wait(timeout=timeout_s)
            if not self._heap or self._closed or self._flags:
                return None
            item = heapq.heappop(self._heap)
            task_id = self._task_counter
            self._task_counter += 1
            self._running[task_id] = copy.deepcopy(list(item))
            self._on_change()
            return Task(item=item, task_id=task_id, epoch=self.epoch)

    def task_done(self, task: Task, history_result: dict[str, Any], status: dict[str, Any]) -> bool:
        """Store the history entry; False (and nothing stored) if a restart came in between."""
        with self._lock:
            stored = self._running.pop(task.task_id, None)
            if task.epoch != self.epoch or stored is None:
                return False
            if len(self._history) > MAXIMUM_HISTORY_SIZE:
                self._history.pop(next(iter(self._history)))
            for key in SENSITIVE_EXTRA_DATA_KEYS:
                stored[3].pop(key, None)
            entry = {"prompt": stored, "outputs": {}, "status": copy.deepcopy(status)}
            entry.update(history_result)
            self._history[stored[1]] = entry
            self._on_change()
            return True

    def remaining(self) -> int:
        with self._lock:
            return len(self._heap) + len(self._running)

    def current(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(running, pending) as JSON-ready copies; pending is the raw heap order."""
        with self._lock:
            running = [copy.deepcopy(item) for item in self._running.values()]
            pending = [copy.deepcopy(list(item)) for item in self._heap]
            return running, pending

    def running_prompt_ids(self) -> list[str]:
        with self._lock:
            return [item[1] for item in self._running.values()]

    def wipe_queue(self) -> None:
        with self._lock:
            self._heap = []
            self._on_change()

    def delete_queue_item(self, prompt_id: Any) -> bool:
        """Remove the first pending item with this prompt_id."""
        with self._lock:
            for index, item in enumerate(self._heap):
                if item[1] != prompt_id:
                    continue
                if len(self._heap) == 1:
                    self.wipe_queue()
                else:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                self._on_change()
                return True
            return False

    # --- history -------------------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        with self._lock:
            if offset < 0 and max_items is not None:
                offset = len(self._history) - max_items
            out: dict[str, Any] = {}
            for index, (key, entry) in enumerate(self._history.items()):
                if index < offset:
                    continue
                out[key] = copy.deepcopy(entry)
                if max_items is not None and len(out) >= max_items:
                    break
            return out

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        with self._lock:
            if prompt_id in self._history:
                return {prompt_id: copy.deepcopy(self._history[prompt_id])}
            return {}

    def wipe_history(self) -> None:
        with self._lock:
            self._history.clear()

    def delete_history_item(self, prompt_id: Any) -> None:
        with self._lock:
            self._history.pop(prompt_id, None)

    def history_size(self) -> int:
        with self._lock:
            return len(self._history)

    # --- worker flags, restart, close ----------------------------------------------------

    def set_flag(self, name: str, value: Any) -> None:
        with self._lock:
            self._flags[name] = value
            self._not_empty.notify()

    def take_flags(self) -> dict[str, Any]:
        with self._lock:
            flags, self._flags = self._flags, {}
            return flags

    def restart(self) -> None:
        """Forget queue, running prompt and history, as after a process restart."""
        with self._lock:
            self._heap = []
            self._running.clear()
            self._history.clear()
            self._flags["restart"] = True
            self.epoch += 1
            self._not_empty.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
