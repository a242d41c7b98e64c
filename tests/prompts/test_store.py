from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.db import Database
from proxy.prompts.store import HistoryEntry, PromptSessionStore

SessionIds = Callable[[str], str]


def entry(n: int, description: str = "") -> HistoryEntry:
    return HistoryEntry(
        prompt=f"prompt {n}", parameters={"n": n, "colors": ["red"]}, description=description
    )


async def test_missing_session_is_none(db: Database, session_ids: SessionIds) -> None:
    assert await PromptSessionStore(db).get(session_ids("nobody")) is None


async def test_append_creates_and_sets_current(db: Database, session_ids: SessionIds) -> None:
    store = PromptSessionStore(db)
    sid = session_ids("a")
    first = await store.append(sid, entry(0, "Initial prompt"))
    assert first.initialized and first.prompt == "prompt 0"
    await store.append(sid, entry(1, "Changed"))
    session = await store.get(sid)
    assert session is not None
    assert session.prompt == "prompt 1"
    assert session.parameters == {"n": 1, "colors": ["red"]}
    assert [h.description for h in session.history] == ["Initial prompt", "Changed"]
    assert session.created_at.tzinfo is not None
    assert session.updated_at >= session.created_at


async def test_append_without_making_current(db: Database, session_ids: SessionIds) -> None:
    store = PromptSessionStore(db)
    sid = session_ids("b")
    await store.append(sid, entry(0))
    await store.append(sid, entry(1), make_current=False)
    session = await store.get(sid)
    assert session is not None
    assert session.prompt == "prompt 0" and len(session.history) == 2


async def test_sessions_are_isolated(db: Database, session_ids: SessionIds) -> None:
    store = PromptSessionStore(db)
    one, two = session_ids("one"), session_ids("two")
    await store.append(one, entry(1))
    await store.append(two, entry(2))
    await store.append(one, entry(11))
    first, second = await store.get(one), await store.get(two)
    assert first is not None and second is not None
    assert [h.prompt for h in first.history] == ["prompt 1", "prompt 11"]
    assert [h.prompt for h in second.history] == ["prompt 2"]


async def test_concurrent_appends_lose_nothing(db: Database, session_ids: SessionIds) -> None:
    store = PromptSessionStore(db)
    sid = session_ids("busy")
    await asyncio.gather(*(store.append(sid, entry(n)) for n in range(25)))
    session = await store.get(sid)
    assert session is not None
    assert sorted(h.parameters["n"] for h in session.history) == list(range(25))


async def test_concurrent_first_appends_create_one_session(
    db: Database, session_ids: SessionIds
) -> None:
    store = PromptSessionStore(db)
    sid = session_ids("fresh")
    await asyncio.gather(*(store.append(sid, entry(n)) for n in range(5)))
    session = await store.get(sid)
    assert session is not None and len(session.history) == 5


async def test_delete(db: Database, session_ids: SessionIds) -> None:
    store = PromptSessionStore(db)
    sid = session_ids("gone")
    await store.append(sid, entry(0))
    assert await store.delete(sid) is True
    assert await store.get(sid) is None
    assert await store.delete(sid) is False


async def test_parameter_order_survives(db: Database, session_ids: SessionIds) -> None:
    store = PromptSessionStore(db)
    sid = session_ids("order")
    parameters = {"subject": "a fox", "action": "leaps", "scene": "snow", "camera": "low angle"}
    await store.append(sid, HistoryEntry(prompt="p", parameters=parameters))
    session = await store.get(sid)
    assert session is not None
    assert list(session.parameters or {}) == list(parameters)
    assert list(session.history[0].parameters) == list(parameters)
