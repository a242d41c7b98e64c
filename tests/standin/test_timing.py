"""Timing profiles: the model's figures (no sleeping), and one profiled run end to end."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from comfyui.standin import nodes, start_standin, timing
from comfyui.standin.__main__ import parse_args
from comfyui.standin.cache import is_link
from comfyui.standin.timing import PROFILES, NodeCost, Profile
from comfyui.standin.values import Latent, VaeRef, VideoFromComponents, VideoFromFile
from comfyui.standin.video import write_mp4

from .conftest import MANIFEST, REPO, WAIT_S, WsListener, run, t2v_graph, types_of

H200 = PROFILES["fastwan-h200"]
LOADERS = ("UNETLoader", "CLIPLoader", "VAELoader", "LoraLoaderModelOnly")
WAN_VAE = VaeRef("wan2.2_vae.safetensors")
REFERENCE_LATENT = Latent(batch=1, frames=31, height=44, width=80)
SHIPPED_T2V = json.loads((REPO / "workflows" / "fastwan_t2v.json").read_text())


def frames_of(count: int = 121, height: int = 704, width: int = 1280) -> np.ndarray:
    """An IMAGE batch of that shape that costs no memory (the model reads only its shape)."""
    return np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (count, height, width, 3))


# What flows along the shipped t2v workflow's links at its reference size.
_LINKED = {
    "KSampler": {"latent_image": REFERENCE_LATENT},
    "VAEDecode": {"samples": REFERENCE_LATENT, "vae": WAN_VAE},
    "CreateVideo": {"images": frames_of()},
    "SaveVideo": {"video": VideoFromComponents(frames_of(), None, Fraction(24))},
}


def shipped_t2v_seconds(profile: Profile, *, cold: bool) -> dict[str, float]:
    """Seconds per node id of ``workflows/fastwan_t2v.json`` at its defaults, from the model."""
    seconds = {}
    for node_id, node in SHIPPED_T2V.items():
        class_type = node["class_type"]
        inputs = {k: v for k, v in node["inputs"].items() if not is_link(v)}
        inputs.update(_LINKED.get(class_type, {}))
        spent = profile.node_seconds(class_type, inputs, cold=cold)
        if class_type == "KSampler":
            spent += inputs["steps"] * profile.step_seconds(inputs)
        seconds[node_id] = spent
    return seconds


def by_class(seconds: dict[str, float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for node_id, spent in seconds.items():
        class_type = SHIPPED_T2V[node_id]["class_type"]
        totals[class_type] = totals.get(class_type, 0.0) + spent
    return totals


# --- the model ------------------------------------------------------------------------------


def test_reference_job_is_about_16_s_warm_with_a_2_6_s_sampler() -> None:
    warm = by_class(shipped_t2v_seconds(H200, cold=False))
    assert sum(warm.values()) == pytest.approx(16.0, abs=0.5)
    assert warm["KSampler"] == pytest.approx(2.6, abs=0.05)
    assert warm["VAEDecode"] == pytest.approx(10.0, abs=0.5)
    assert max(warm, key=lambda class_type: warm[class_type]) == "VAEDecode"
    assert 0.4 <= warm["CLIPTextEncode"] <= 1.2  # both encoders together
    assert warm["SaveVideo"] == pytest.approx(2.0, abs=0.5)
    assert warm["CreateVideo"] < 0.5
    assert all(warm[loader] == 0 for loader in LOADERS)


def test_cold_start_adds_the_loaders_only() -> None:
    warm = shipped_t2v_seconds(H200, cold=False)
    cold = shipped_t2v_seconds(H200, cold=True)
    extra = {node_id: cold[node_id] - warm[node_id] for node_id in warm}
    loaded = {SHIPPED_T2V[node_id]["class_type"]: s for node_id, s in extra.items() if s > 0}
    assert loaded == pytest.approx(
        {"UNETLoader": 8.0, "CLIPLoader": 5.0, "VAELoader": 1.0, "LoraLoaderModelOnly": 1.0}
    )


def test_node_time_is_fixed_plus_proportional_to_pixels_times_frames() -> None:
    def decode(latent: Latent) -> float:
        return H200.node_seconds("VAEDecode", {"samples": latent, "vae": WAN_VAE}, cold=False)

    fixed = H200.nodes["VAEDecode"].fixed_s
    full = decode(REFERENCE_LATENT)
    half_width = decode(Latent(batch=1, frames=31, height=44, width=40))
    # 16 latent slots decode to 61 frames: (61 / 121) of the reference's pixels x frames.
    fewer_frames = decode(Latent(batch=1, frames=16, height=44, width=80))
    two = decode(Latent(batch=2, frames=31, height=44, width=80))
    assert half_width - fixed == pytest.approx((full - fixed) / 2)
    assert fewer_frames - fixed == pytest.approx((full - fixed) * 61 / 121)
    assert two - fixed == pytest.approx((full - fixed) * 2)

    def save(frames: np.ndarray) -> float:
        video = VideoFromComponents(frames, None, Fraction(24))
        return H200.node_seconds("SaveVideo", {"video": video}, cold=False)

    save_fixed = H200.nodes["SaveVideo"].fixed_s
    quarter = save(frames_of(121, 352, 640)) - save_fixed
    assert quarter == pytest.approx((save(frames_of()) - save_fixed) / 4)
    encode = H200.node_seconds("VAEEncode", {"pixels": frames_of(61), "vae": WAN_VAE}, cold=False)
    assert encode == pytest.approx(
        H200.nodes["VAEEncode"].fixed_s + H200.nodes["VAEEncode"].per_video_s * 61 / 121
    )


def test_start_image_costs_one_frame_of_encoding() -> None:
    inputs = {"width": 1280, "height": 704, "length": 121, "batch_size": 1, "vae": WAN_VAE}
    t2v = H200.node_seconds("Wan22ImageToVideoLatent", inputs, cold=False)
    i2v = H200.node_seconds(
        "Wan22ImageToVideoLatent", {**inputs, "start_image": frames_of(1)}, cold=False
    )
    assert t2v == H200.nodes["Wan22ImageToVideoLatent"].fixed_s
    assert i2v - t2v == pytest.approx(H200.nodes["VAEEncode"].per_video_s / 121)


def test_sampler_steps_scale_with_latent_size_and_cfg() -> None:
    step = H200.step_seconds({"latent_image": REFERENCE_LATENT, "cfg": 1.0})
    assert step == pytest.approx(0.31)
    assert H200.step_seconds({"latent_image": REFERENCE_LATENT, "cfg": 5.0}) == pytest.approx(
        2 * step
    )
    floor = H200.step.fixed_s
    half = H200.step_seconds({"latent_image": Latent(1, 31, 22, 80), "cfg": 1.0})
    assert half - floor == pytest.approx((step - floor) / 2)
    # Steps add up: the sampler's time grows linearly with its step count.
    setup = H200.node_seconds("KSampler", {"latent_image": REFERENCE_LATENT}, cold=False)
    assert setup + 8 * step == pytest.approx(2.6, abs=0.05)
    assert setup + 16 * step - (setup + 8 * step) == pytest.approx(8 * step)


def test_loaders_cost_only_when_cold() -> None:
    for loader in LOADERS:
        assert H200.node_seconds(loader, {}, cold=False) == 0
        assert H200.node_seconds(loader, {}, cold=True) >= 1.0
    for class_type in ("CLIPTextEncode", "VAEDecode", "KSampler"):
        inputs = {"samples": REFERENCE_LATENT, "latent_image": REFERENCE_LATENT}
        assert H200.node_seconds(class_type, inputs, cold=True) == H200.node_seconds(
            class_type, inputs, cold=False
        )


def test_speed_divides_every_duration() -> None:
    fast = H200.at_speed(20)
    assert (fast.name, fast.speed, H200.speed) == ("fastwan-h200", 20.0, 1.0)
    base = shipped_t2v_seconds(H200, cold=True)
    faster = shipped_t2v_seconds(fast, cold=True)
    assert faster == pytest.approx({node_id: s / 20 for node_id, s in base.items()})
    assert sum(shipped_t2v_seconds(H200.at_speed(2), cold=False).values()) == pytest.approx(
        sum(shipped_t2v_seconds(H200, cold=False).values()) / 2
    )
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="speed"):
            H200.at_speed(bad)
    assert timing.get_profile(None) is None
    assert timing.get_profile("fastwan-h200", 4) == H200.at_speed(4)
    with pytest.raises(ValueError, match="unknown timing profile 'nope'.*fastwan-h200"):
        timing.get_profile("nope")


def test_every_node_class_has_a_cost() -> None:
    assert set(H200.nodes) == set(nodes.NODES)
    assert all(isinstance(cost, NodeCost) for cost in H200.nodes.values())
    assert H200.node_seconds("SomeCustomNode", {}, cold=True) == 0


def test_video_from_file_work_counts_its_frames(tmp_path: Path) -> None:
    path = str(tmp_path / "clip.mp4")
    write_mp4(path, np.zeros((9, 32, 48, 3), np.uint8), Fraction(8), {})
    assert timing.pixel_frames(VideoFromFile(path)) == 48 * 32 * 9
    work = timing.video_work("GetVideoComponents", {"video": VideoFromFile(path)})
    assert work == pytest.approx(48 * 32 * 9 / (1280 * 704 * 121))


def test_docstring_table_matches_the_model() -> None:
    warm = by_class(shipped_t2v_seconds(H200, cold=False))
    cold = by_class(shipped_t2v_seconds(H200, cold=True))
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in (timing.__doc__ or "").splitlines()
        if line.startswith("| ") and not line.startswith("| node")
    ]
    checked = set()
    for name, fixed, per_video, cold_s, reference in rows:
        class_type = name.split()[0]
        if class_type in H200.nodes:
            cost = H200.nodes[class_type]
            numbers = [float(cell.split()[0]) for cell in (fixed, per_video, cold_s)]
            assert numbers == [cost.fixed_s, cost.per_video_s, cost.cold_s], name
            count = 2 if class_type == "CLIPTextEncode" else 1
            expected = (cold if class_type in LOADERS else warm)[class_type] / count
            assert float(reference) == pytest.approx(expected, abs=0.005), name
            checked.add(class_type)
        elif name.startswith("warm"):
            assert float(reference) == pytest.approx(sum(warm.values()), abs=0.05)
        elif name.startswith("cold"):
            assert float(reference) == pytest.approx(sum(cold.values()), abs=0.05)
    assert checked == set(warm)


def test_cli_takes_profile_and_speed(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--data-dir", "d", "--profile", "fastwan-h200", "--speed", "20"])
    assert (args.profile, args.speed) == ("fastwan-h200", 20.0)
    plain = parse_args(["--data-dir", "d"])
    assert (plain.profile, plain.speed) == (None, 1.0)
    for bad in (["--profile", "nope"], ["--speed", "0"], ["--speed", "fast"]):
        with pytest.raises(SystemExit):
            parse_args(["--data-dir", "d", *bad])
    assert "fastwan-h200" in capsys.readouterr().err


async def test_unknown_profile_fails_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown timing profile"):
        await start_standin(data_dir=tmp_path / "data", profile="rtx-1")
    assert not (tmp_path / "data").exists()


# --- end to end -----------------------------------------------------------------------------

# Big enough that the profile, not the fixed parts, sets the nodes' shape; speed 10 keeps the
# cold run (15 s of loaders on the GPU) near 1.7 s.
_E2E_SIZE = {"width": 640, "height": 352, "length": 33}
_E2E_STEPS = 2
_E2E_SPEED = 10.0


def node_spans(listener: WsListener) -> dict[str, tuple[float, float]]:
    """Per node: arrival of its ``executing`` to the first ``progress_state`` marking it done."""
    starts: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    for arrived, message in listener.arrivals:
        data = message["data"]
        if message["type"] == "executing" and data.get("node") is not None:
            starts.setdefault(data["node"], arrived)
        elif message["type"] == "progress_state":
            for node_id, state in data["nodes"].items():
                if state["state"] == "finished" and node_id in starts and node_id not in spans:
                    spans[node_id] = (starts[node_id], arrived)
    return spans


def shape_of(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The messages' types and the node each one names: what must not change with timing."""
    return [(m["type"], m["data"].get("node")) for m in messages]


async def test_profiled_run_keeps_gpu_time_and_comfyui_messages(
    tmp_path: Path,
    client: httpx.AsyncClient,
    ws: WsListener,
    ws_factory: Callable[..., Awaitable[WsListener]],
) -> None:
    graph = t2v_graph(steps=_E2E_STEPS, **_E2E_SIZE)
    _, plain, _ = await run(client, ws, graph)

    handle = await start_standin(
        data_dir=tmp_path / "profiled",
        with_models=MANIFEST,
        profile="fastwan-h200",
        speed=_E2E_SPEED,
    )
    try:
        async with httpx.AsyncClient(base_url=handle.url, timeout=WAIT_S) as http:
            state = (await http.get("/_standin/state")).json()
            assert (state["profile"], state["speed"]) == ("fastwan-h200", _E2E_SPEED)
            listener = await ws_factory("tester", url=handle.ws_url)
            _, timed, entry = await run(http, listener, graph)
    finally:
        await handle.close()

    assert entry["status"]["status_str"] == "success"
    assert types_of(timed) == types_of(plain)
    assert shape_of(timed) == shape_of(plain)
    # Progress comes from the sampler's steps only, as in ComfyUI: none for VAEDecode or SaveVideo.
    assert {m["data"]["node"] for m in timed if m["type"] == "progress"} == {"3"}

    profile = H200.at_speed(_E2E_SPEED)
    latent = Latent(batch=1, frames=9, height=22, width=40)
    sampler_inputs = {"latent_image": latent, "cfg": 1.0}
    expected_sampler = profile.node_seconds(
        "KSampler", sampler_inputs, cold=True
    ) + _E2E_STEPS * profile.step_seconds(sampler_inputs)
    expected_decode = profile.node_seconds(
        "VAEDecode", {"samples": latent, "vae": WAN_VAE}, cold=True
    )
    spans = node_spans(listener)
    sampler_s = spans["3"][1] - spans["3"][0]
    decode_s = spans["8"][1] - spans["8"][0]
    assert decode_s > sampler_s
    # Generous sanity bounds: a wait never ends early; the machine may be slow.
    assert sampler_s >= 0.8 * expected_sampler
    assert decode_s >= 0.8 * expected_decode
    loader_s = spans["37"][1] - spans["37"][0]
    assert 0.8 * 8.0 / _E2E_SPEED <= loader_s <= 8.0 / _E2E_SPEED + 1.0
    status = dict(entry["status"]["messages"])
    job_ms = status["execution_success"]["timestamp"] - status["execution_start"]["timestamp"]
    # At least the cold loaders, both text encoders, the sampler and the decode.
    least_s = (15.0 + 0.8) / _E2E_SPEED + expected_sampler + expected_decode
    assert 0.8 * least_s <= job_ms / 1000 <= least_s + 2.0
