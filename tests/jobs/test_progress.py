"""The progress model, on a clock the tests move: learned weights, quiet nodes advanced by
time, never backwards, the fixed-weight fallback, and what a run teaches."""

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.jobs.progress import ProgressTracker
from proxy.jobs.timings import STORE_NODE, TAIL

REPO = Path(__file__).resolve().parents[2]

LOADERS = ["37", "38", "39", "60", "48"]
# Node order of the FastWAN text-to-video graph and a FastWAN-on-an-H200 shape of times:
# the sampler about a sixth, the decode most of the rest (issue 14's figures).
ORDER = ["37", "38", "39", "60", "48", "6", "7", "55", "3", "8", "57", "58"]
GPU = {
    "37": 8.0, "38": 5.0, "39": 1.0, "60": 1.0, "48": 0.01,
    "6": 0.25, "7": 0.25, "55": 0.05, "3": 2.6, "8": 10.5, "57": 0.1, "58": 2.2,
    STORE_NODE: 0.2,
}  # fmt: skip
SAMPLER, STEPS = "3", 8


@pytest.fixture
def graph():
    return json.loads((REPO / "workflows" / "fastwan_t2v.json").read_text())


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """What a client saw of one run: (elapsed, percent, eta) every `every` seconds."""

    samples: list[tuple[float, float, float | None]] = field(default_factory=list)
    total: float = 0.0

    def worst_gap(self) -> float:
        return max(abs(p - 100 * t / self.total) for t, p, _ in self.samples)

    def eta_error(self, at: float) -> float:
        t, _, eta = min(self.samples, key=lambda s: abs(s[0] - at * self.total))
        assert eta is not None
        return abs(eta - (self.total - t)) / (self.total - t)


def play(
    tracker: ProgressTracker,
    clock: Clock,
    durations: dict[str, float],
    *,
    cached: list[str] = (),
    every: float = 0.05,
) -> Run:
    """Drive `tracker` through a run with these node durations, as ComfyUI's messages
    would, sampling what it shows between them."""
    run = Run()
    start = clock.now

    def spend(seconds: float) -> None:
        end = clock.now + seconds
        while clock.now + every < end:
            clock.now += every
            tracker.tick()
            run.samples.append((clock.now - start, tracker.percent, tracker.eta_s))
        clock.now = end

    tracker.started()
    tracker.cached(list(cached))
    for node in ORDER:
        if node in cached:
            continue
        tracker.executing(node)
        if node == SAMPLER:
            for step in range(1, STEPS + 1):
                spend(durations[node] / STEPS)
                tracker.progress(node, step, STEPS)
        else:
            spend(durations[node])
            if node == "58":
                tracker.executed(node)
    tracker.finished_running()
    tracker.storing()
    spend(durations[STORE_NODE])
    run.total = clock.now - start
    tracker.stored()
    run.samples.append((run.total, tracker.percent, tracker.eta_s))
    return run


def learned_from(graph, durations, *, cached=()) -> dict[str, float]:
    clock = Clock()
    first = ProgressTracker(graph, clock=clock)
    play(first, clock, durations, cached=list(cached))
    return {node: seconds for node, (_, seconds) in first.measured().items()}


def test_a_learned_run_moves_with_time_and_its_eta_is_right(graph):
    expected = learned_from(graph, GPU)
    clock = Clock()
    second = ProgressTracker(graph, expected=expected, clock=clock)
    run = play(second, clock, GPU)
    assert run.worst_gap() < 3  # points between the bar and the elapsed share
    for at in (0.1, 0.25, 0.5, 0.75):
        assert run.eta_error(at) < 0.05
    assert run.samples[-1][1] == 100.0 and second.eta_s == 0.0


def test_fixed_weights_keep_the_bar_moving_during_the_decode(graph):
    """Before any run was measured: the bar still rises through the quiet decode (its
    weight is the largest), stays under 100 until the output is stored."""
    clock = Clock()
    tracker = ProgressTracker(graph, clock=clock)
    tracker.started()
    tracker.cached(LOADERS)
    for node in ("6", "7", "55"):
        tracker.executing(node)
        clock.now += 0.2
    tracker.executing(SAMPLER)
    for step in range(1, STEPS + 1):
        clock.now += 0.3
        tracker.progress(SAMPLER, step, STEPS)
    after_sampling = tracker.percent
    assert tracker.eta_s is not None  # a pace from the steps
    tracker.executing("8")
    assert tracker.stage == "decoding" and tracker.step is None
    seen = [tracker.percent]
    for _ in range(20):
        clock.now += 0.5
        tracker.tick()
        seen.append(tracker.percent)
    assert seen == sorted(seen) and seen[-1] > after_sampling + 10
    tracker.executing("58")
    tracker.storing()
    assert tracker.stage == "storing output" and tracker.percent < 100
    tracker.stored()
    assert tracker.percent == 100.0


def test_a_quiet_node_that_overruns_stops_short_of_its_end(graph):
    expected = learned_from(graph, GPU)
    clock = Clock()
    tracker = ProgressTracker(graph, expected=expected, clock=clock)
    tracker.started()
    tracker.cached(LOADERS)
    for node in ("6", "7", "55", SAMPLER):
        tracker.executing(node)
        clock.now += GPU[node]
    tracker.executing("8")
    total = sum(v for k, v in expected.items() if k not in LOADERS)
    decoded = 100 * sum(expected[n] for n in ("6", "7", "55", SAMPLER, "8")) / total
    seen = []
    for _ in range(40):
        clock.now += GPU["8"] / 2  # on to 20 times longer than ever before
        tracker.tick()
        seen.append(tracker.percent)
    assert seen == sorted(seen)
    assert seen[-1] < decoded  # it never runs into the next node's share
    assert seen[-1] - seen[len(seen) // 2] < 1  # and slows down the longer it overruns
    assert tracker.eta_s is not None and tracker.eta_s > 0


def test_cached_nodes_weigh_nothing(graph):
    """A warm run: the loaders learned on the cold one are cached now; the bar does not
    jump at the start and still tracks time."""
    expected = learned_from(graph, GPU)  # loaders ran (cold) in the first run
    clock = Clock()
    warm = ProgressTracker(graph, expected=expected, clock=clock)
    run = play(warm, clock, GPU, cached=LOADERS)
    assert run.samples[0][1] < 2
    assert run.worst_gap() < 3


def test_the_bar_never_goes_back_whatever_the_timing(graph):
    rng = random.Random(7)
    expected = learned_from(graph, GPU)
    for _ in range(30):
        durations = {k: v * rng.uniform(0.2, 3.0) for k, v in GPU.items()}
        clock = Clock()
        tracker = ProgressTracker(graph, expected=rng.choice([expected, None]), clock=clock)
        run = play(tracker, clock, durations, cached=rng.choice([[], LOADERS]))
        shown = [p for _, p, _ in run.samples]
        assert shown == sorted(shown)
        assert all(p < 100 for p in shown[:-1]) and shown[-1] == 100.0


def test_a_slower_run_scales_the_eta(graph):
    """The same workflow on a GPU half as fast: once it has shown its pace, the ETA is
    the expected remaining time at that pace, not the learned one."""
    expected = learned_from(graph, GPU)
    slow = {k: 2 * v for k, v in GPU.items()}
    clock = Clock()
    run = play(ProgressTracker(graph, expected=expected, clock=clock), clock, slow, cached=LOADERS)
    assert run.eta_error(0.5) < 0.2 and run.eta_error(0.75) < 0.2


def test_what_a_run_teaches(graph):
    clock = Clock()
    tracker = ProgressTracker(graph, clock=clock)
    play(tracker, clock, GPU, cached=LOADERS)
    measured = tracker.measured()
    # Cached: not timed; the sampler's time after its last step is timed on its own.
    assert set(measured) == set(ORDER) - set(LOADERS) | {STORE_NODE, SAMPLER + TAIL}
    assert measured["8"] == ("VAEDecode", pytest.approx(GPU["8"]))
    assert measured[SAMPLER][0] == "KSampler"
    assert measured[STORE_NODE][1] == pytest.approx(GPU[STORE_NODE])


def test_a_resumed_run_keeps_its_figure_and_teaches_nothing(graph):
    """After a proxy restart the tracker sees only the rest of the run: the nodes a
    running node depends on are done, what was shown is kept, and nothing is learned
    from a run whose start was not seen."""
    expected = learned_from(graph, GPU)
    clock = Clock()
    resumed = ProgressTracker(graph, expected=expected, percent=40.0, clock=clock)
    resumed.resumed("sampling", 3, 8)
    assert resumed.snapshot()["progress"] == 40.0 and resumed.stage == "sampling"
    resumed.progress(SAMPLER, 4, 8)
    assert resumed.percent >= 40.0 and resumed.eta_s is not None
    clock.now += 1
    resumed.executing("8")
    clock.now += 5
    resumed.tick()
    assert resumed.stage == "decoding" and resumed.percent > 40.0
    resumed.finished_running()
    resumed.storing()
    resumed.stored()
    assert resumed.percent == 100.0 and resumed.measured() == {}


def test_nodes_the_learned_run_did_not_time_are_costed_at_its_rate(graph):
    """Learned on warm runs only (loaders cached then): a cold run still weighs its loaders,
    at the learned seconds per fixed-weight unit, instead of counting them as free."""
    warm = learned_from(graph, GPU, cached=LOADERS)
    assert not set(LOADERS) & set(warm)
    clock = Clock()
    cold = ProgressTracker(graph, expected=warm, clock=clock)
    cold.started()
    cold.cached([])
    cold.executing("37")
    clock.now += 1.0
    cold.tick()
    assert 0 < cold.percent < 30 and cold.eta_s is not None


def test_a_samplers_work_after_its_last_step_is_learned_and_shown_with_time(graph):
    """A sampler that works on after its last step report (finishing its latent): once
    learned, the steps fill only their part of the node and the rest follows the clock,
    instead of the bar standing at the node's end while it finishes."""

    def run(tracker: ProgressTracker, clock: Clock) -> list[tuple[float, float]]:
        seen = []
        start = clock.now
        tracker.started()
        tracker.cached([*LOADERS, "57", "58"])  # a graph of encode, sample, decode
        for node in ("6", "7", "55"):
            tracker.executing(node)
            clock.now += 0.1
        tracker.executing(SAMPLER)
        for step in range(1, STEPS + 1):
            clock.now += 0.1
            tracker.progress(SAMPLER, step, STEPS)
            seen.append((clock.now - start, tracker.percent))
        for _ in range(4):  # 0.4 s of tail, no events
            clock.now += 0.1
            tracker.tick()
            seen.append((clock.now - start, tracker.percent))
        tracker.executing("8")
        clock.now += 1.0
        tracker.finished_running()
        tracker.storing()
        tracker.stored()
        return [(t / (clock.now - start), p) for t, p in seen]

    clock = Clock()
    first = ProgressTracker(graph, clock=clock)
    run(first, clock)
    learned = {n: s for n, (_, s) in first.measured().items()}
    assert learned[SAMPLER + TAIL] == pytest.approx(0.4)
    clock = Clock()
    seen = run(ProgressTracker(graph, expected=learned, clock=clock), clock)
    assert max(abs(p - 100 * share) for share, p in seen) < 3
