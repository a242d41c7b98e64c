"""The graph editor's storage routes: users, settings, userdata (v1 and v2), and their rules."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from comfyui.standin import StandinHandle

WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


def user_dir(standin: StandinHandle) -> Path:
    return standin.data_dir / "user" / "default"


def outside_exists() -> bool:
    """Whether the absolute-path case wrote where it pointed."""
    return Path("/tmp/escape.json").exists()


async def store(http: httpx.AsyncClient, name: str, body: object, **query: str) -> httpx.Response:
    """POST /userdata/{name} the way the editor does: the name URL-encoded (``/`` as %2F)."""
    encoded = name.replace("/", "%2F").replace(" ", "%20")
    return await http.post(f"/userdata/{encoded}", content=json.dumps(body), params=query)


async def test_first_start_leaves_a_user_folder_the_editor_loads_cleanly(
    client: httpx.AsyncClient, standin: StandinHandle
) -> None:
    root = user_dir(standin)
    assert (root / "workflows").is_dir() and (root / "subgraphs").is_dir()
    assert (root / "user.css").read_bytes() == b""
    assert json.loads((root / "comfy.templates.json").read_text()) == []
    for path in ("/userdata/user.css", "/user.css"):
        css = await client.get(path)
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await client.get("/userdata", params={"dir": "workflows"})).json() == []
    assert (await client.get("/users")).json() == {"storage": "server", "migrated": True}


async def test_users(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    duplicate = await client.post("/users", json={"username": "default"})
    assert duplicate.status_code == 400 and duplicate.json() == {"error": "Duplicate username."}
    assert (await client.post("/users", json={"username": "  "})).status_code == 400
    system = await client.post("/users", json={"username": "__system"})
    assert system.json() == {"error": "System User prefix not allowed"}
    created = await client.post("/users", json={"username": "Ann Lee"})
    assert created.status_code == 200 and created.json().startswith("Ann-Lee_")
    users = json.loads((standin.data_dir / "user" / "users.json").read_text())
    assert users[created.json()] == "Ann Lee"


async def test_settings(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    first = (await client.get("/settings")).json()
    assert first["Comfy.Canvas.MouseWheelScroll"] == "zoom"  # the first-run file
    assert (await client.get("/settings/Nope.Missing")).json() is None
    response = await client.post("/settings/Comfy.Locale", json="en")
    assert response.status_code == 200 and response.content == b""
    await client.post("/settings", json={"Comfy.A": 1, "Comfy.B": {"x": [1, 2]}})
    await client.post("/settings/Comfy.A", json=2)
    assert (await client.get("/settings/Comfy.A")).json() == 2
    assert (await client.get("/api/settings/Comfy.B")).json() == {"x": [1, 2]}
    saved = json.loads((user_dir(standin) / "comfy.settings.json").read_text())
    assert saved == {**first, "Comfy.Locale": "en", "Comfy.A": 2, "Comfy.B": {"x": [1, 2]}}
    # ComfyUI: a body that is not JSON is aiohttp's 500.
    assert (await client.post("/settings", content=b"{nope")).status_code == 500


async def test_store_read_and_list(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    saved = await store(client, "workflows/My flow.json", WORKFLOW, overwrite="false")
    assert saved.status_code == 200 and saved.json() == "workflows/My flow.json"
    path = user_dir(standin) / "workflows" / "My flow.json"
    assert json.loads(path.read_text()) == WORKFLOW
    full = await store(client, "workflows/a/b.json", WORKFLOW, full_info="true")
    info = full.json()
    assert set(info) == {"path", "size", "modified", "created"}
    assert info["path"] == "workflows/a/b.json" and info["size"] == len(json.dumps(WORKFLOW))
    assert isinstance(info["modified"], int) and info["modified"] > 1_600_000_000_000  # ms

    read = await client.get("/api/userdata/workflows%2FMy%20flow.json")
    assert read.status_code == 200 and read.json() == WORKFLOW
    assert read.headers["content-type"].startswith("application/json")
    assert (await client.get("/userdata/workflows%2Fnope.json")).status_code == 404

    (user_dir(standin) / "workflows" / ".hidden.json").write_text("{}")
    listed = await client.get("/userdata", params={"dir": "workflows"})
    assert listed.json() == ["My flow.json"]  # not recursive, no hidden files
    deep = {"dir": "workflows", "recurse": "true"}
    assert (await client.get("/userdata", params=deep)).json() == ["My flow.json", "a/b.json"]
    split = await client.get("/userdata", params={**deep, "split": "true"})
    assert split.json() == [["My flow.json", "My flow.json"], ["a/b.json", "a", "b.json"]]
    infos = (await client.get("/userdata", params={**deep, "full_info": "true"})).json()
    assert [i["path"] for i in infos] == ["My flow.json", "a/b.json"]  # relative to dir
    assert set(infos[0]) == {"path", "size", "modified", "created"}

    assert (await client.get("/userdata")).status_code == 400
    missing = await client.get("/userdata", params={"dir": "nothing-here"})
    assert missing.status_code == 404 and missing.text == "Directory not found"


async def test_overwrite_false_is_409(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    assert (await store(client, "workflows/x.json", {"v": 1})).status_code == 200
    conflict = await store(client, "workflows/x.json", {"v": 2}, overwrite="false")
    assert conflict.status_code == 409 and conflict.text == "File already exists"
    assert json.loads((user_dir(standin) / "workflows" / "x.json").read_text()) == {"v": 1}
    # Anything but "false" overwrites (the editor sends overwrite=undefined on some paths).
    assert (await store(client, "workflows/x.json", {"v": 3}, overwrite="undefined")).is_success
    assert (await client.get("/userdata/workflows%2Fx.json")).json() == {"v": 3}


async def test_writes_are_atomic(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    """A save replaces the file in one step and leaves no temporary file behind."""
    folder = user_dir(standin) / "workflows"
    for version in range(5):
        assert (await store(client, "workflows/w.json", {"v": version})).is_success
    assert sorted(p.name for p in folder.iterdir()) == ["w.json"]
    assert json.loads((folder / "w.json").read_text()) == {"v": 4}


async def test_move(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    await store(client, "workflows/old.json", WORKFLOW)
    await store(client, "workflows/taken.json", {"keep": True})
    conflict = await client.post(
        "/userdata/workflows%2Fold.json/move/workflows%2Ftaken.json", params={"overwrite": "false"}
    )
    assert conflict.status_code == 409
    moved = await client.post(
        "/api/userdata/workflows%2Fold.json/move/workflows%2Fsub%2Fnew.json",
        params={"full_info": "true"},
    )
    assert moved.status_code == 200 and moved.json()["path"] == "workflows/sub/new.json"
    folder = user_dir(standin) / "workflows"
    assert not (folder / "old.json").exists()
    assert json.loads((folder / "sub" / "new.json").read_text()) == WORKFLOW
    plain = await client.post("/userdata/workflows%2Fsub%2Fnew.json/move/workflows%2Fback.json")
    assert plain.json() == "workflows/back.json"
    gone = await client.post("/userdata/workflows%2Fold.json/move/workflows%2Fz.json")
    assert gone.status_code == 404


async def test_delete(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    await store(client, "workflows/d.json", WORKFLOW)
    deleted = await client.delete("/userdata/workflows%2Fd.json")
    assert deleted.status_code == 204
    assert not (user_dir(standin) / "workflows" / "d.json").exists()
    assert (await client.delete("/userdata/workflows%2Fd.json")).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fescape.json",  # user/escape.json: another user's folder
        "..%2F..%2Fescape.json",  # the data dir
        "workflows%2F..%2F..%2F..%2Fescape.json",
        "%252E%252E%252Fescape.json",  # encoded twice: ComfyUI decodes once more
        "%2Ftmp%2Fescape.json",  # absolute
    ],
)
async def test_paths_cannot_leave_the_user_folder(
    client: httpx.AsyncClient, standin: StandinHandle, name: str
) -> None:
    assert (await client.post(f"/userdata/{name}", content=b"{}")).status_code == 403
    assert (await client.get(f"/userdata/{name}")).status_code == 403
    assert (await client.delete(f"/userdata/{name}")).status_code == 403
    await store(client, "workflows/src.json", WORKFLOW)
    move = await client.post(f"/userdata/workflows%2Fsrc.json/move/{name}")
    assert move.status_code == 403
    assert (user_dir(standin) / "workflows" / "src.json").exists()
    assert list(standin.data_dir.rglob("escape.json")) == [] and not outside_exists()


async def test_listing_paths_cannot_leave_the_user_folder(client: httpx.AsyncClient) -> None:
    for directory in ("..", "../..", "workflows/../../input", "/etc"):
        listed = await client.get("/userdata", params={"dir": directory})
        assert listed.status_code == 403 and listed.text == "Invalid directory"
        v2 = await client.get("/v2/userdata", params={"path": directory})
        assert v2.status_code == 400 and v2.text == "Invalid path requested"


async def test_v2_listing(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    await store(client, "workflows/b.json", WORKFLOW)
    await store(client, "workflows/A/c.json", WORKFLOW)
    entries = (await client.get("/api/v2/userdata")).json()
    by_path = {e["path"]: e for e in entries}
    assert by_path["workflows"] == {"name": "workflows", "path": "workflows", "type": "directory"}
    file = by_path["workflows/b.json"]
    assert set(file) == {"name", "path", "type", "size", "modified"}
    assert file["type"] == "file" and file["size"] == len(json.dumps(WORKFLOW))
    assert isinstance(file["modified"], float)  # seconds, unlike v1's ms
    # Directories first, then files, each sorted by name (not path), ignoring case.
    kinds = [e["type"] for e in entries]
    assert kinds == sorted(kinds, key=lambda kind: kind != "directory")
    assert "user.css" in by_path and "comfy.settings.json" in by_path

    sub = (await client.get("/v2/userdata", params={"path": "workflows"})).json()
    assert [(e["path"], e["type"]) for e in sub] == [
        ("workflows/A", "directory"),
        ("workflows/b.json", "file"),
        ("workflows/A/c.json", "file"),
    ]
    assert (await client.get("/v2/userdata", params={"path": "nope"})).status_code == 404
    not_dir = await client.get("/v2/userdata", params={"path": "workflows/b.json"})
    assert not_dir.status_code == 400 and not_dir.text == "Requested path is not a directory"


async def test_userdata_routes_have_api_aliases(client: httpx.AsyncClient) -> None:
    for path in ("/users", "/settings", "/v2/userdata", "/i18n", "/workflow_templates"):
        plain, prefixed = await client.get(path), await client.get("/api" + path)
        assert plain.status_code == prefixed.status_code == 200, path
        assert plain.json() == prefixed.json(), path
