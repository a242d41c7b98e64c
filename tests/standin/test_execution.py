"""Execution: message order, queue order, interrupts, cache, targeting, reconnect, history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from .conftest import (
    WsListener,
    image_video_graph,
    is_done,
    run,
    start_blocker,
    submit,
    t2v_graph,
    types_of,
)

WAN_ORDER = ["39", "55", "38", "7", "6", "37", "60", "48", "3", "8", "57", "58"]


def executing_nodes(messages: list[dict]) -> list[str]:
    return [
        m["data"]["node"]
        for m in messages
        if m["type"] == "executing" and m["data"]["node"] is not None
    ]


async def test_t2v_message_sequence(client: httpx.AsyncClient, ws: WsListener, standin) -> None:
    prompt_id, messages, entry = await run(client, ws, t2v_graph(steps=3))
    types = types_of(messages)
    assert types[:4] == ["status", "status", "execution_start", "execution_cached"]
    assert types[-4:] == ["progress_state", "execution_success", "status", "executing"]
    assert executing_nodes(messages) == WAN_ORDER
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert progress == [
        {"value": v, "max": 3, "prompt_id": prompt_id, "node": "3"} for v in (1, 2, 3)
    ]
    # Per node: progress_state(running), executing, ..., progress_state(finished).
    start = types.index("execution_cached") + 1
    assert types[start : start + 3] == ["progress_state", "executing", "progress_state"]
    last_state = [m for m in messages if m["type"] == "progress_state"][-1]["data"]["nodes"]
    assert list(last_state) == WAN_ORDER
    assert all(n["state"] == "finished" for n in last_state.values())
    assert last_state["3"]["value"] == 3 and last_state["3"]["max"] == 3
    executed = [m for m in messages if m["type"] == "executed"]
    assert [m["data"]["node"] for m in executed] == ["58"]
    output = executed[0]["data"]["output"]
    assert output == {
        "images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}],
        "animated": [True],
    }
    assert entry["outputs"] == {"58": output}
    assert entry["meta"] == {
        "58": {"node_id": "58", "display_node": "58", "parent_node": None, "real_node_id": "58"}
    }
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["prompt"][0] == 0 and entry["prompt"][4] == ["58"]


async def test_cache_rerun_and_seed_change(
    client: httpx.AsyncClient, ws: WsListener, standin
) -> None:
    graph = t2v_graph()
    _, _, first = await run(client, ws, graph)
    videos = standin.data_dir / "output" / "video"
    assert len(list(videos.iterdir())) == 1

    _, messages, again = await run(client, ws, graph)
    assert types_of(messages) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert messages[3]["data"]["nodes"] == list(graph)
    assert messages[4]["data"]["output"] == first["outputs"]["58"]
    state = messages[5]["data"]["nodes"]["58"]
    assert (state["state"], state["value"], state["max"]) == ("finished", 1, 1)
    assert again["outputs"] == first["outputs"]
    assert len(list(videos.iterdir())) == 1  # no new file

    reseeded = t2v_graph(seed=2)
    _, messages, third = await run(client, ws, reseeded)
    cached = messages[3]["data"]["nodes"]
    assert cached == ["37", "38", "39", "60", "48", "6", "7", "55"]
    assert executing_nodes(messages) == ["3", "8", "57", "58"]
    assert third["outputs"]["58"]["images"][0]["filename"] == "ComfyUI_00002_.mp4"


async def test_queue_order_front_and_delete(client: httpx.AsyncClient, ws: WsListener) -> None:
    blocker = await start_blocker(client)
    await ws.until(lambda m: m["type"] == "progress")
    a = await submit(client, image_video_graph(color=1), prompt_id="b-a")
    b = await submit(client, image_video_graph(color=2), prompt_id="a-b", number=1)
    c = await submit(client, image_video_graph(color=3), prompt_id="c", front=True)
    d = await submit(client, image_video_graph(color=4), prompt_id="d", front=True)
    gone = await submit(client, image_video_graph(color=5), prompt_id="gone")
    pending = (await client.get("/queue")).json()["queue_pending"]
    assert sorted((item[0], item[1]) for item in pending) == [
        (-3, d),
        (-2, c),
        (1, b),
        (1, a),
        (4, gone),
    ]

    def remaining(count: int) -> Callable[[dict], bool]:
        return lambda m: (
            m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == count
        )

    await ws.until(remaining(6))
    await client.post("/queue", json={"delete": [gone]})
    await ws.until(remaining(5))
    await client.post("/interrupt", json={"prompt_id": blocker})
    messages = await ws.run_to_end(a)
    starts = [m["data"]["prompt_id"] for m in messages if m["type"] == "execution_start"]
    # front items run first, the most recent first; equal numbers break ties by prompt_id.
    assert starts == [d, c, b, a]
    assert (await client.get(f"/history/{gone}")).json() == {}
    interrupted = (await client.get(f"/history/{blocker}")).json()[blocker]
    assert interrupted["status"]["status_str"] == "error"
    assert interrupted["status"]["messages"][-1][0] == "execution_interrupted"


async def test_named_interrupt_only_hits_the_running_prompt(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    blocker = await start_blocker(client)
    queued = await submit(client, image_video_graph())
    await ws.until(lambda m: m["type"] == "progress")
    await client.post("/interrupt", json={"prompt_id": queued})  # pending: no effect
    await client.post("/interrupt", json={"prompt_id": blocker})
    messages = await ws.run_to_end(blocker)
    assert types_of(messages)[-3:] == ["execution_interrupted", "status", "executing"]
    data = messages[-3]["data"]
    assert set(data) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert data["node_id"] == "3" and data["node_type"] == "KSampler"
    assert set(data["executed"]) == {"39", "55", "38", "7", "6", "37", "60", "48"}
    finished = await ws.run_to_end(queued)
    assert "execution_success" in types_of(finished)


async def test_global_interrupt_and_idle_interrupt(
    client: httpx.AsyncClient,
    ws: WsListener,
    ws_factory: Callable[..., Awaitable[WsListener]],
) -> None:
    await client.post("/interrupt")  # idle: no effect on the next prompt
    _, messages, _ = await run(client, ws, image_video_graph())
    assert "execution_success" in types_of(messages)
    someone = await ws_factory("someone-else")
    blocker = await start_blocker(client, client_id="someone-else")
    other = await submit(client, image_video_graph(color=9))
    await someone.until(lambda m: m["type"] == "progress")
    await client.post("/interrupt", content=b"")  # global: hits another client's prompt
    await ws.run_to_end(other)
    entry = (await client.get(f"/history/{blocker}")).json()[blocker]
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_messages_without_client_id_are_broadcast_in_part(
    client: httpx.AsyncClient, ws_factory: Callable[..., Awaitable[WsListener]]
) -> None:
    watcher = await ws_factory("watcher")
    prompt_id = await submit(client, t2v_graph(steps=2), client_id=None)
    messages = await watcher.until(
        lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )
    assert set(types_of(messages)) == {"status", "progress_state", "progress"}
    assert all(m["data"]["prompt_id"] == prompt_id for m in messages if m["type"] != "status")
    entry = (await client.get(f"/history/{prompt_id}")).json()[prompt_id]
    assert entry["status"]["status_str"] == "success"
    assert "client_id" not in entry["prompt"][3]


async def test_targeted_messages_reach_only_their_client(
    client: httpx.AsyncClient, ws_factory: Callable[..., Awaitable[WsListener]]
) -> None:
    owner = await ws_factory("owner")
    other = await ws_factory("other")
    prompt_id = await submit(client, image_video_graph(), client_id="owner")
    await owner.run_to_end(prompt_id)
    seen = await other.until(
        lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )
    assert set(types_of(seen)) == {"status"}


async def test_reconnect_gets_current_node(
    client: httpx.AsyncClient, ws_factory: Callable[..., Awaitable[WsListener]]
) -> None:
    first = await ws_factory("again")
    blocker = await start_blocker(client, client_id="again")
    await first.until(lambda m: m["type"] == "progress")
    await first.close()
    second = await ws_factory("again")
    nudge = await second.next()
    assert nudge == {"type": "executing", "data": {"node": "3"}}
    await client.post("/interrupt")
    await second.until(lambda m: is_done(m, blocker))
    third = await ws_factory("again")  # idle now: only the status hello
    await client.post("/queue", json={"clear": True})
    assert (await third.next())["type"] == "status"


async def test_execution_error_fields(client: httpx.AsyncClient, ws: WsListener) -> None:
    graph = image_video_graph(prefix="../outside/x")
    prompt_id, messages, entry = await run(client, ws, graph)
    error = messages[-3]
    assert error["type"] == "execution_error"
    data = error["data"]
    assert set(data) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert data["node_id"] == "3" and data["exception_type"] == "Exception"
    assert data["exception_message"].startswith(
        "**** ERROR: Saving image outside the output folder is not allowed."
    )
    assert data["exception_message"].endswith("\n")
    assert data["executed"] == ["1", "2"]
    assert all(isinstance(line, str) for line in data["traceback"]) and data["traceback"]
    assert data["current_inputs"]["filename_prefix"] == ["../outside/x"]
    assert data["current_inputs"]["video"][0].startswith("<")
    assert sorted(data["current_outputs"]) == ["1", "2", "3"]
    assert entry["status"] == {
        "status_str": "error",
        "completed": False,
        "messages": entry["status"]["messages"],
    }
    assert entry["outputs"] == {} and entry["meta"] == {}
    assert entry["status"]["messages"][-1] == ["execution_error", data]
