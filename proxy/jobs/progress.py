"""Progress that means something: 0-100 across the whole graph.

Each node gets a weight that approximates its share of the run time (sampling dominates,
then decoding; loaders and text encoding are short once models are warm). Cached nodes count
as done. The proxy's own work (fetching and storing the output) is the last slice, so 100 is
reached only when the file is stored. Progress never goes backwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from proxy.jobs.models import STORING_STAGE

# Weight per class_type, and the stage shown while that node runs.
_CLASS_INFO: dict[str, tuple[float, str]] = {
    "UNETLoader": (4.0, "loading models"),
    "CLIPLoader": (3.0, "loading models"),
    "VAELoader": (1.0, "loading models"),
    "CheckpointLoaderSimple": (5.0, "loading models"),
    "LoraLoaderModelOnly": (1.0, "loading models"),
    "ModelSamplingSD3": (0.2, "loading models"),
    "CLIPTextEncode": (1.5, "encoding prompt"),
    "LoadImage": (0.3, "loading input"),
    "LoadVideo": (0.5, "loading input"),
    "GetVideoComponents": (0.3, "loading input"),
    "ImageScale": (0.5, "preparing input"),
    "ImageFromBatch": (0.2, "preparing input"),
    "VAEEncode": (3.0, "encoding input"),
    "Wan22ImageToVideoLatent": (0.5, "preparing latent"),
    "KSampler": (70.0, "sampling"),
    "KSamplerAdvanced": (70.0, "sampling"),
    "VAEDecode": (10.0, "decoding"),
    "CreateVideo": (0.5, "saving video"),
    "SaveVideo": (3.0, "saving video"),
    "SaveImage": (1.0, "saving image"),
}
_DEFAULT = (0.5, "running")
# Share of the bar kept for the proxy's download of the outputs.
STORE_SHARE = 0.03


@dataclass
class ProgressTracker:
    graph: dict[str, Any]
    percent: float = 0.0
    stage: str = "queued"
    step: int | None = None
    steps: int | None = None
    eta_s: float | None = None
    _done: set[str] = field(default_factory=set)
    _current: str | None = None
    _fraction: float = 0.0
    _started: float | None = None
    # Progress already made when the run started (cached nodes): not evidence of speed.
    _base_percent: float = 0.0
    _step_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._weights = {
            node_id: _CLASS_INFO.get(node.get("class_type", ""), _DEFAULT)[0]
            for node_id, node in self.graph.items()
        }
        self._total = sum(self._weights.values()) or 1.0

    def _stage_of(self, node_id: str) -> str:
        class_type = self.graph.get(node_id, {}).get("class_type", "")
        return _CLASS_INFO.get(class_type, _DEFAULT)[1]

    def _recompute(self) -> None:
        done = sum(self._weights.get(n, 0.0) for n in self._done)
        if self._current and self._current not in self._done:
            done += self._weights.get(self._current, 0.0) * self._fraction
        value = 100.0 * (1.0 - STORE_SHARE) * min(done / self._total, 1.0)
        self.percent = max(self.percent, round(value, 1))
        self._update_eta()

    def _update_eta(self) -> None:
        if self._started is None or self.percent < 1.0:
            return
        elapsed = time.monotonic() - self._started
        gained = (self.percent - self._base_percent) / 100.0
        if gained < 0.01:
            return
        estimate = elapsed * (1.0 - self.percent / 100.0) / gained
        if self.stage == "sampling" and self.steps and self.step and len(self._step_times) >= 2:
            per_step = (self._step_times[-1] - self._step_times[0]) / (len(self._step_times) - 1)
            after = self._weights_after_sampling() / self._total
            sampling_weight = self._weights.get(self._current or "", 70.0) / self._total
            per_weight = per_step * self.steps / max(sampling_weight, 1e-6)
            estimate = per_step * (self.steps - self.step) + per_weight * after
        self.eta_s = round(max(estimate, 0.0), 1)

    def _weights_after_sampling(self) -> float:
        return sum(
            w for n, w in self._weights.items() if n not in self._done and n != self._current
        )

    def started(self) -> None:
        if self._started is None:
            self._started = time.monotonic()
        self.stage = "starting"

    def resumed(self, stage: str | None, step: int | None, steps: int | None) -> None:
        """Following again a run already under way (after a restart): keep what was shown;
        the ETA is measured from here."""
        self._started = time.monotonic()
        self._base_percent = self.percent
        self.stage = stage or "running"
        self.step, self.steps = step, steps

    def cached(self, node_ids: list[str]) -> None:
        self._done.update(str(n) for n in node_ids)
        self._recompute()
        self._base_percent = self.percent
        self.eta_s = None

    def _ancestors(self, node_id: str) -> set[str]:
        """Every node `node_id` depends on (links are `[source_id, slot]` inputs)."""
        seen: set[str] = set()
        todo = [node_id]
        while todo:
            node = self.graph.get(todo.pop(), {})
            for value in (node.get("inputs") or {}).values():
                if isinstance(value, list) and len(value) == 2 and str(value[0]) not in seen:
                    seen.add(str(value[0]))
                    todo.append(str(value[0]))
        return seen

    def executing(self, node_id: str) -> None:
        if self._current and self._current != node_id:
            self._done.add(self._current)
        # ComfyUI runs a node only after its inputs: they are done, even when their events
        # were not seen (a re-attach after a restart).
        self._done.update(self._ancestors(node_id))
        self._current = node_id
        self._fraction = 0.0
        self.stage = self._stage_of(node_id)
        if self.stage != "sampling":
            self.step = None
        self._recompute()

    def progress(self, node_id: str, value: float, maximum: float) -> None:
        if node_id != self._current:
            self.executing(node_id)
        self._fraction = min(value / maximum, 1.0) if maximum else 0.0
        if self.stage == "sampling":
            self.step, self.steps = int(value), int(maximum)
            self._step_times.append(time.monotonic())
        self._recompute()

    def executed(self, node_id: str) -> None:
        self._done.add(node_id)
        self._recompute()

    def storing(self) -> None:
        self._done.update(self._weights)
        self._current = None
        self.stage = STORING_STAGE
        self.step = None
        self._recompute()
        self.eta_s = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "progress": self.percent,
            "stage": self.stage,
            "step": self.step,
            "steps": self.steps,
            "eta_s": self.eta_s,
        }
