"""Faults on demand through the /_standin control routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from comfyui.standin import start_standin

from .conftest import (
    MANIFEST,
    WAIT_S,
    WsListener,
    image_video_graph,
    run,
    start_blocker,
    submit,
    t2v_graph,
    types_of,
)


async def test_node_fault_once(client: httpx.AsyncClient, ws: WsListener) -> None:
    armed = await client.post(
        "/_standin/faults/node",
        json={
            "class_type": "VAEDecode",
            "message": "decoder exploded",
            "exception_type": "RuntimeError",
        },
    )
    assert armed.status_code == 200
    assert armed.json()["faults"]["node"][0]["class_type"] == "VAEDecode"
    _, messages, entry = await run(client, ws, t2v_graph())
    error = messages[-3]["data"]
    assert messages[-3]["type"] == "execution_error"
    assert (error["node_id"], error["node_type"]) == ("8", "VAEDecode")
    assert error["exception_message"] == "decoder exploded\n"
    assert error["exception_type"] == "RuntimeError"
    assert set(error["current_inputs"]) == {"samples", "vae"}
    assert error["traceback"] and "3" in error["executed"]
    assert entry["status"]["status_str"] == "error"
    # Used up: the same graph now succeeds, reusing what ran before the failure.
    _, messages, _ = await run(client, ws, t2v_graph())
    assert "execution_success" in types_of(messages)
    assert "3" in messages[3]["data"]["nodes"]


async def test_node_fault_always_with_a_dotted_type(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    await client.post(
        "/_standin/faults/node",
        json={
            "class_type": "SaveVideo",
            "exception_type": "comfy.model_patcher.PatchError",
            "times": None,
        },
    )
    for color in (1, 2):
        _, messages, _ = await run(client, ws, image_video_graph(color=color))
        assert messages[-3]["data"]["exception_type"] == "comfy.model_patcher.PatchError"
    cleared = await client.delete("/_standin/faults")
    assert cleared.json()["faults"] == {
        "node": [],
        "http": [],
        "prompt_delay_s": 0.0,
        "exit_after_step": None,
    }
    _, messages, _ = await run(client, ws, image_video_graph(color=3))
    assert "execution_success" in types_of(messages)


async def test_out_of_memory(client: httpx.AsyncClient, ws: WsListener) -> None:
    await client.post("/_standin/faults/oom", json={})
    _, messages, _ = await run(client, ws, t2v_graph())
    error = messages[-3]["data"]
    assert error["node_type"] == "KSampler"
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"] == (
        "Allocation on device \nThis error means you ran out of memory on your GPU.\n\n"
        "TIPS: If the workflow worked before you might have accidentally set the batch_size to a "
        "large number."
    )


async def test_slow_node_is_not_interruptible(client: httpx.AsyncClient, ws: WsListener) -> None:
    await client.post("/_standin/faults/slow", json={"class_type": "EmptyImage", "seconds": 0.5})
    prompt_id = await submit(client, image_video_graph())
    await ws.until(lambda m: m["type"] == "executing" and m["data"]["node"] == "1")
    await client.post("/interrupt", json={"prompt_id": prompt_id})
    messages = await ws.run_to_end(prompt_id)
    interrupted = messages[-3]
    assert interrupted["type"] == "execution_interrupted"
    assert interrupted["data"]["node_id"] == "2" and interrupted["data"]["executed"] == ["1"]


async def test_prompt_delay_lets_events_arrive_first(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    await client.post("/_standin/faults/prompt_delay", json={"seconds": 1.0})
    body = {"prompt": image_video_graph(), "prompt_id": "late", "client_id": "tester"}
    answer = asyncio.ensure_future(client.post("/prompt", json=body))
    await ws.run_to_end("late")
    assert not answer.done()
    response = await asyncio.wait_for(answer, WAIT_S)
    assert response.json()["prompt_id"] == "late"


async def test_drop_websockets(
    client: httpx.AsyncClient, ws_factory: Callable[..., Awaitable[WsListener]]
) -> None:
    for mode in ("abort", "close"):
        sockets = [await ws_factory(f"{mode}-{n}") for n in range(2)]
        dropped = await client.post("/_standin/websockets/drop", json={"mode": mode})
        assert dropped.json()["dropped"] >= 2
        for sock in sockets:
            await asyncio.wait_for(sock.closed.wait(), WAIT_S)
    again = await ws_factory("after-drop")
    await client.post("/queue", json={"clear": True})
    assert (await again.next())["type"] == "status"
    bad = await client.post("/_standin/websockets/drop", json={"mode": "gently"})
    assert bad.status_code == 400


async def test_reset_forgets_everything(
    client: httpx.AsyncClient, ws_factory: Callable[..., Awaitable[WsListener]], standin
) -> None:
    watcher = await ws_factory("tester")
    done, _, _ = await run(client, watcher, image_video_graph())
    blocker = await start_blocker(client)
    pending = await submit(client, image_video_graph(color=7))
    await watcher.until(lambda m: m["type"] == "progress")
    state = (await client.post("/_standin/reset")).json()
    assert state["queue"] == {"running": [], "pending": []} and state["history_size"] == 0
    assert state["number"] == 0
    await asyncio.wait_for(watcher.closed.wait(), WAIT_S)
    assert (await client.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
    assert (await client.get("/history")).json() == {}
    fresh = await ws_factory("tester")
    await client.post("/_standin/step_seconds", json={"seconds": 0})
    prompt_id = await submit(client, image_video_graph())
    messages = await fresh.run_to_end(prompt_id)
    assert messages[3]["data"]["nodes"] == []  # caches are gone too
    history = (await client.get("/history")).json()
    assert list(history) == [prompt_id] and history[prompt_id]["prompt"][0] == 0
    for gone in (done, blocker, pending):
        assert (await client.get(f"/history/{gone}")).json() == {}


async def test_exit_fault_in_process(tmp_path) -> None:
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with await start_standin(
        data_dir=tmp_path, with_models=MANIFEST, exit_process=exited.set_result
    ) as standin:
        async with httpx.AsyncClient(base_url=standin.url) as http:
            await http.post("/_standin/faults/exit", json={"after_step": 2, "exit_code": 3})
            state = (await http.get("/_standin/state")).json()
            assert state["faults"]["exit_after_step"] == 2
            await submit(http, t2v_graph(steps=4), client_id=None)
            assert await asyncio.wait_for(exited, WAIT_S) == 3


async def test_control_route_validation(client: httpx.AsyncClient) -> None:
    for path, body in [
        ("/_standin/faults/node", {"class_type": "Nope"}),
        ("/_standin/faults/node", {"class_type": "KSampler", "exception_type": "not valid!"}),
        ("/_standin/faults/node", {"class_type": "KSampler", "times": 0}),
        ("/_standin/faults/slow", {"class_type": "KSampler"}),
        ("/_standin/faults/prompt_delay", {"seconds": -1}),
        ("/_standin/faults/exit", {"after_step": 0}),
        ("/_standin/faults/http_error", {}),
        ("/_standin/faults/http_error", {"path": "/prompt", "status": 200}),
        ("/_standin/faults/http_error", {"path": "/_standin/state"}),
        ("/_standin/faults/slow_route", {"path": "/queue"}),
        ("/_standin/step_seconds", {}),
    ]:
        response = await client.post(path, json=body)
        assert response.status_code == 400, (path, body)
        assert "error" in response.json()
    not_json = await client.post("/_standin/faults/node", content=b"{")
    assert not_json.status_code == 400
    speed = await client.post("/_standin/step_seconds", json={"seconds": 0.25})
    assert speed.json() == {"step_seconds": 0.25}
    assert (await client.get("/_standin/state")).json()["step_seconds"] == 0.25


async def test_several_faults_at_once_and_aliases(
    client: httpx.AsyncClient, ws_factory: Callable[..., Awaitable[WsListener]]
) -> None:
    bad = await client.post(
        "/_standin/faults",
        json={"raise": {"class_type": "VAEDecode"}, "oom": {"class_type": "Nope"}},
    )
    assert bad.status_code == 400
    assert (await client.get("/_standin/state")).json()["faults"]["node"] == []  # all or nothing
    assert (await client.post("/_standin/faults", json={"melt": {}})).status_code == 400
    armed = await client.post(
        "/_standin/faults",
        json={
            "raise": {"class_type": "VAEDecode", "message": "decoder exploded"},
            "oom": {"class_type": "KSampler", "times": None},
            "prompt_delay": {"seconds": 0},
        },
    )
    kinds = [
        (f["class_type"], f["exception_type"], f["times"]) for f in armed.json()["faults"]["node"]
    ]
    assert kinds == [("VAEDecode", "RuntimeError", 1), ("KSampler", "torch.OutOfMemoryError", None)]
    sock = await ws_factory("alias")
    assert (await client.post("/_standin/drop_websockets")).json() == {"dropped": 1}
    await asyncio.wait_for(sock.closed.wait(), WAIT_S)


async def test_http_error_fault_answers_like_a_failing_comfyui(client: httpx.AsyncClient) -> None:
    armed = await client.post(
        "/_standin/faults/http_error", json={"path": "/api/prompt", "times": 2}
    )
    assert armed.json()["faults"]["http"] == [
        {"method": "POST", "path": "/prompt", "status": 500, "times": 2, "delay_s": 0.0}
    ]
    for path in ("/prompt", "/api/prompt"):  # both spellings of the route, once each
        failed = await client.post(path, json={"prompt": t2v_graph(steps=1)})
        assert failed.status_code == 500
        assert failed.text == "500 Internal Server Error\n\nServer got itself in trouble"
    assert (await client.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
    assert (await client.get("/_standin/state")).json()["faults"]["http"] == []
    accepted = await client.post("/prompt", json={"prompt": t2v_graph(steps=1)})
    assert accepted.status_code == 200 and "prompt_id" in accepted.json()

    await client.post(
        "/_standin/faults/http_error",
        json={"path": "/upload/image", "status": 413, "times": None},
    )
    for _ in range(2):  # `times: null` hits every request
        refused = await client.post("/upload/image", files={"image": ("a.png", b"x")})
        assert (refused.status_code, refused.text) == (413, "413: Request Entity Too Large")
    assert (await client.get("/queue")).status_code == 200  # other routes untouched


async def test_slow_route_fault_answers_late_but_normally(client: httpx.AsyncClient) -> None:
    await client.post("/_standin/faults/slow_route", json={"path": "/queue", "seconds": 0.3})
    with pytest.raises(httpx.ReadTimeout):  # the client gives up first ...
        await client.get("/api/queue", timeout=0.05)
    assert (await client.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


async def test_executed_lists_every_prompt_run_after_its_history_is_gone(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    graph = t2v_graph()
    prefix = next(
        n["inputs"]["filename_prefix"] for n in graph.values() if "filename_prefix" in n["inputs"]
    )
    first, _, _ = await run(client, ws, graph)
    failed = await client.post("/_standin/faults/node", json={"class_type": "VAEDecode"})
    assert failed.status_code == 200
    second, _, _ = await run(client, ws, t2v_graph(seed=2))
    await client.post("/history", json={"clear": True})
    await client.post("/_standin/reset")
    executed = (await client.get("/_standin/executed")).json()["executed"]
    assert [e["prompt_id"] for e in executed] == [first, second]
    assert [e["status"] for e in executed] == ["success", "error"]
    assert all(e["client_id"] == "tester" for e in executed)
    assert executed[0]["filename_prefixes"] == [prefix]
    assert executed[0]["started_ms"] <= executed[0]["finished_ms"] <= executed[1]["started_ms"]
