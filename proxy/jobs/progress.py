"""Progress that moves with time: 0-100 across the whole run, and an ETA.

Each node weighs what it is expected to take. Once a workflow has run at a size, those are
the node durations the proxy measured (`proxy.jobs.timings`); before that, fixed weights per
node class (sampling heavy, decoding next) stand in, and only the ETA waits for a measured
pace. Within a node that reports steps (a sampler), the steps give its fraction; within one
that reports nothing (VAE decode, saving the video), its fraction grows with the time spent
in it against its expected duration, slowing short of its end when it overruns. Cached nodes
take no time and weigh nothing. The proxy's own storing of the outputs is the last slice
(`STORE_NODE`), so 100 is reached only when the file is stored. Progress never goes
backwards; the ETA is the expected remaining time, scaled by how fast this run goes against
what was expected.

The tracker also times every node it sees run from start to end (`measured`), which is what
the proxy learns from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.jobs.models import STORING_STAGE
from proxy.jobs.timings import STORE_NODE, TAIL

# Fallback weight per class_type (before a first measured run), and the stage shown while
# that node runs.
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
    "KSampler": (30.0, "sampling"),
    "KSamplerAdvanced": (30.0, "sampling"),
    "VAEDecode": (40.0, "decoding"),
    "CreateVideo": (0.5, "saving video"),
    "SaveVideo": (8.0, "saving video"),
    "SaveImage": (1.0, "saving image"),
}
_DEFAULT = (0.5, "running")
# Share of the bar kept for the proxy's storing of the outputs, until it has been timed.
STORE_SHARE = 0.03
# A node without step reports follows the clock up to this fraction of its expected time,
# then slows and approaches (never reaches) its end while it overruns.
QUIET_KNEE = 0.95
# How much the expectation counts against this run's own pace: as if this share of the
# whole run had already gone exactly as expected.
PACE_PRIOR = 0.01


def _eased(fraction: float) -> float:
    """The clock's share of a quiet node: itself up to QUIET_KNEE, then ever slower
    towards 1 (continuous, rising, below 1)."""
    if fraction <= QUIET_KNEE:
        return fraction
    rest = 1.0 - QUIET_KNEE
    return 1.0 - rest * math.exp(-(fraction - QUIET_KNEE) / rest)


@dataclass
class ProgressTracker:
    graph: dict[str, Any]
    # Learned seconds per node id (and STORE_NODE); None: no run measured yet.
    expected: dict[str, float] | None = None
    percent: float = 0.0
    stage: str = "queued"
    step: int | None = None
    steps: int | None = None
    eta_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _done: set[str] = field(default_factory=set)
    _cached: set[str] = field(default_factory=set)
    _current: str | None = None
    _current_since: float = 0.0
    _step_fraction: float | None = None  # from the current node's progress events
    _next_step_fraction: float = 1.0
    _last_step_at: float = 0.0
    _tails: dict[str, float] = field(default_factory=dict)
    _measured: dict[str, float] = field(default_factory=dict)
    # The run was followed from its start (not re-attached): its durations can be learned.
    _from_start: bool = False
    _storing_since: float | None = None
    _stored: bool = False

    def __post_init__(self) -> None:
        weights = {
            node_id: _CLASS_INFO.get(node.get("class_type", ""), _DEFAULT)[0]
            for node_id, node in self.graph.items()
        }
        learned = {n: s for n, s in (self.expected or {}).items() if n in self.graph}
        # Seconds when a run was measured; the fixed weights' units (converted at the
        # learned rate for nodes not measured, such as loaders that were cached then).
        self.calibrated = bool(learned)
        if self.calibrated:
            known = sum(weights[n] for n in learned)
            rate = sum(learned.values()) / known if known else 1.0
            self._cost = {n: learned.get(n, w * rate) for n, w in weights.items()}
        else:
            self._cost = dict(weights)
        # A stepped node's work after its last step (a sampler finishing its latent):
        # learned per node, so the steps fill only the part of the node they cover.
        self._tail = {
            n.removesuffix(TAIL): s
            for n, s in (self.expected or {}).items()
            if n.endswith(TAIL) and n.removesuffix(TAIL) in self.graph
        }
        store = (self.expected or {}).get(STORE_NODE) if self.calibrated else None
        self._store_cost = (
            store
            if store is not None
            else STORE_SHARE / (1 - STORE_SHARE) * (sum(self._cost.values()) or 1.0)
        )

    # -- the model -------------------------------------------------------------------------

    def _class_type(self, node_id: str) -> str:
        return str(self.graph.get(node_id, {}).get("class_type", ""))

    def _stage_of(self, node_id: str) -> str:
        return _CLASS_INFO.get(self._class_type(node_id), _DEFAULT)[1]

    def _total(self) -> float:
        nodes = sum(c for n, c in self._cost.items() if n not in self._cached)
        return (nodes + self._store_cost) or 1.0

    def _pace(self) -> float | None:
        """Seconds per unit of cost this run: measured against expected for what has run,
        leaning on the expectation (1) while little has; None before any evidence when
        the costs are fixed weights."""
        actual = sum(self._measured.values())
        expected = sum(self._cost.get(n, 0.0) for n in self._measured)
        now = self.clock()
        if self._current is not None and self._step_fraction:
            actual += now - self._current_since
            expected += self._cost.get(self._current, 0.0) * self._current_fraction(1.0)
        if self.calibrated:
            prior = PACE_PRIOR * self._total()
            return (actual + prior) / (expected + prior)
        if expected < 0.01 * self._total():
            return None
        return actual / expected

    def _current_fraction(self, pace: float | None) -> float:
        if self._current is None:
            return 0.0
        stepped = self._step_fraction or 0.0
        timed = 0.0
        cost = self._cost.get(self._current, 0.0)
        if pace is not None and cost > 0:
            timed = (self.clock() - self._current_since) / (cost * pace)
        if self._step_fraction is None:
            return _eased(timed)
        tail = min(self._tail.get(self._current, 0.0), 0.5 * cost) if pace is not None else 0.0
        share = 1.0 - tail / cost if cost > 0 else 1.0  # of the node the steps cover
        if stepped >= 1.0 and tail > 0:
            # The last step is in: the tail follows the clock like a quiet node.
            after = (self.clock() - self._last_step_at) / (tail * (pace or 1.0))
            return share + (1.0 - share) * _eased(after)
        # Between two step reports, time moves the bar up to the next step's mark.
        return share * max(stepped, min(timed / share, self._next_step_fraction))

    def _recompute(self) -> None:
        pace = self._pace()
        total = self._total()
        store = self._store_cost
        if self._storing_since is not None:
            done = total - store
            timed = 0.0
            if pace is not None and store > 0:
                timed = (self.clock() - self._storing_since) / (store * pace)
            current = store * (1.0 if self._stored else _eased(timed))
        else:
            done = sum(self._cost.get(n, 0.0) for n in self._done if n not in self._cached)
            current = self._cost.get(self._current or "", 0.0) * self._current_fraction(pace)
        value = 100.0 * min((done + current) / total, 1.0)
        if not self._stored:
            value = min(value, 99.9)
        self.percent = max(self.percent, round(value, 1))
        if self._stored:
            self.eta_s = 0.0
        elif pace is not None and self.stage != "queued":
            eta = max(total - done - current, 0.0) * pace
            self.eta_s = round(eta, 2 if eta < 10 else 1)

    def _end_current(self, now: float) -> None:
        node = self._current
        if node is None:
            return
        self._done.add(node)
        if self._from_start and node not in self._cached:
            self._measured[node] = now - self._current_since
            if self._step_fraction is not None and self._step_fraction >= 1.0:
                self._tails[node] = now - self._last_step_at
        self._current = None

    # -- events ----------------------------------------------------------------------------

    def started(self) -> None:
        """The run began (`execution_start`): followed from its start."""
        if self.stage == "queued":
            self._from_start = True
        self.stage = "starting"

    def resumed(self, stage: str | None, step: int | None, steps: int | None) -> None:
        """Following again a run already under way (after a restart): keep what was shown;
        what ran before is not timed."""
        self._from_start = False
        self.stage = stage or "running"
        self.step, self.steps = step, steps

    def cached(self, node_ids: list[str]) -> None:
        self._cached.update(str(n) for n in node_ids)
        self._done.update(str(n) for n in node_ids)
        self._recompute()

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
        now = self.clock()
        if self._current != node_id:
            self._end_current(now)
        # ComfyUI runs a node only after its inputs: they are done, even when their events
        # were not seen (a re-attach after a restart).
        self._done.update(self._ancestors(node_id))
        if self._current != node_id:
            self._current = node_id
            self._current_since = now
            self._step_fraction = None
            self._next_step_fraction = 1.0
        self.stage = self._stage_of(node_id)
        if self.stage != "sampling":
            self.step = None
        self._recompute()

    def progress(self, node_id: str, value: float, maximum: float) -> None:
        if node_id != self._current:
            self.executing(node_id)
        fraction = min(value / maximum, 1.0) if maximum else 0.0
        self._step_fraction = max(self._step_fraction or 0.0, fraction)
        self._next_step_fraction = min((value + 1) / maximum, 1.0) if maximum else 1.0
        self._last_step_at = self.clock()
        if self.stage == "sampling":
            self.step, self.steps = int(value), int(maximum)
        self._recompute()

    def executed(self, node_id: str) -> None:
        if node_id == self._current:
            self._end_current(self.clock())
        else:
            self._done.add(node_id)
        self._recompute()

    def finished_running(self) -> None:
        """ComfyUI has finished the prompt (`executing` with no node)."""
        self._end_current(self.clock())
        self._recompute()

    def storing(self) -> None:
        self._end_current(self.clock())
        self._done.update(self._cost)
        if self._storing_since is None:
            self._storing_since = self.clock()
        self.stage = STORING_STAGE
        self.step = None
        self._recompute()

    def stored(self) -> None:
        """The outputs are stored: 100."""
        if self._storing_since is not None and self._from_start:
            self._measured[STORE_NODE] = self.clock() - self._storing_since
        self._stored = True
        self._recompute()

    @property
    def expected_s(self) -> float | None:
        """The whole run's expected seconds (None before a run was measured)."""
        return self._total() if self.calibrated else None

    def tick(self) -> None:
        """Time passed without an event: a quiet node moves on."""
        self._recompute()

    # -- reading ---------------------------------------------------------------------------

    def measured(self) -> dict[str, tuple[str, float]]:
        """Node id -> (class_type, seconds) of every node timed from start to end in this
        run (and STORE_NODE), for learning; empty for a run not followed from its start."""
        if not self._from_start:
            return {}
        measured = {
            node: (self._class_type(node) if node != STORE_NODE else STORE_NODE, seconds)
            for node, seconds in self._measured.items()
        }
        for node, seconds in self._tails.items():
            measured[node + TAIL] = (self._class_type(node), seconds)
        return measured

    def snapshot(self) -> dict[str, Any]:
        return {
            "progress": self.percent,
            "stage": self.stage,
            "step": self.step,
            "steps": self.steps,
            "eta_s": self.eta_s,
        }
