import json
from pathlib import Path

import pytest

from proxy.jobs.progress import ProgressTracker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def graph():
    return json.loads((REPO / "workflows" / "fastwan_t2v.json").read_text())


def test_progress_rises_through_the_whole_graph_and_never_goes_back(graph):
    p = ProgressTracker(graph)
    seen = []
    p.started()
    p.cached([])
    for node in ("39", "55", "38", "6", "7", "37", "60", "48"):
        p.executing(node)
        seen.append(p.percent)
    assert p.stage == "loading models" or p.stage in ("encoding prompt",)
    p.executing("3")
    assert p.stage == "sampling"
    for step in range(1, 9):
        p.progress("3", step, 8)
        seen.append(p.percent)
        assert (p.step, p.steps) == (step, 8)
    p.executing("8")
    assert p.stage == "decoding" and p.step is None
    seen.append(p.percent)
    p.executing("57")
    p.executing("58")
    p.executed("58")
    seen.append(p.percent)
    assert seen == sorted(seen)
    assert 5 < seen[7] < 20  # loading and encoding are a small share
    assert seen[15] > 75  # after the last sampler step
    assert seen[-1] < 100  # 100 only once the output is stored
    p.storing()
    assert p.stage == "storing output" and p.percent < 100 and p.eta_s == 0.0


def test_sampling_dominates_and_cached_nodes_count_as_done(graph):
    p = ProgressTracker(graph)
    p.cached(["37", "38", "39", "60", "48", "6", "7", "55"])
    before = p.percent
    p.executing("3")
    p.progress("3", 4, 8)
    assert p.percent - before > 30


def test_eta_appears_once_there_is_a_rate(graph):
    p = ProgressTracker(graph)
    p.started()
    p.executing("3")
    p.progress("3", 1, 8)
    p.progress("3", 2, 8)
    assert p.eta_s is not None and p.eta_s >= 0


def test_cached_nodes_do_not_make_the_eta_optimistic(graph):
    p = ProgressTracker(graph)
    p.started()
    p.cached(["37", "38", "39", "60", "48", "6", "7", "55"])
    assert p.eta_s is None  # nothing has run yet: no rate to estimate from
    p.executing("3")
    assert p.eta_s is None


def test_a_tracker_resumed_mid_run_agrees_with_one_that_saw_everything(graph):
    """After a proxy restart the tracker sees only the rest of the run; the nodes a running
    node depends on are done, so both trackers show the same figure and never go back."""
    full = ProgressTracker(graph)
    full.started()
    for node in ("39", "55", "38", "6", "7", "37", "60", "48", "3"):
        full.executing(node)
    for step in range(1, 4):
        full.progress("3", step, 8)

    resumed = ProgressTracker(graph, percent=full.percent)
    resumed.resumed("sampling", 3, 8)
    assert resumed.snapshot()["progress"] == full.percent and resumed.stage == "sampling"
    for tracker in (full, resumed):
        tracker.progress("3", 4, 8)
        tracker.progress("3", 5, 8)
    assert resumed.percent == full.percent > 40
    assert resumed.eta_s is not None  # a rate from the steps seen since resuming

    late = ProgressTracker(graph, percent=60.0)  # re-attached during the (quiet) decode
    late.resumed("decoding", None, None)
    late.executing("57")
    assert late.percent > 80 and late.stage == "saving video"
