"""API keys on every route, generated from the app itself so a new route cannot be forgotten.

The operations come from the proxy's own `/openapi.json` (fetched with an admin key), plus the
routes the document leaves out (the document and its page, `HEAD /outputs/...`) and the
websockets, both read from `app.routes`. For each one:

- no key, and a made-up key → 401 with `WWW-Authenticate` (except the few open routes);
- every id in a path is filled with an object of key A's (a completed job, a batch, a scene
  session and its generation, an upload, stored outputs): key B gets a 404 that says no more
  than the 404 of an id that never existed; key A and an admin key get through;
- lists, the event stream and the websockets show B nothing of A's;
- the admin-only routes refuse user keys (403);
- the per-key active-job limit counts jobs of every surface together.

One proxy serves the whole module (an "offline" one: its backend never answers, so jobs stay
queued until a test finishes them with the job writer, as the tracker would).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
import websockets
from PIL import Image
from starlette.routing import WebSocketRoute
from websockets.exceptions import ConnectionClosed, InvalidStatus

from proxy.api.auth import SESSION_COOKIE, require_admin
from proxy.settings import Settings
from proxy.testing import job_views
from tests.batches.conftest import Offline, write_mp4
from tests.prompts.fake_llm import FakeLLM, reply
from tests.support import closed_port_url, proxy_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY_A = "key-alice-0a1b2c3d"
KEY_B = "key-bob-4e5f6a7b"
KEY_C = "key-carol-8c9d0e1f"
KEY_ADMIN = "key-ops-2a3b4c5d"
MADE_UP = "key-nobody-ffffffff"

# Sent differently on purpose: both header forms are accepted.
A = {"X-API-Key": KEY_A}
B = {"Authorization": f"Bearer {KEY_B}"}
C = {"X-API-Key": KEY_C}
ADMIN = {"Authorization": f"Bearer {KEY_ADMIN}"}
NOBODY: dict[str, str] = {}

# In every prompt of A's: no answer to B may contain it.
SECRET = "zebra-secret-7319"

# The routes anyone may call (written out here, not read from the product's list). Logging
# out only clears the web UI's cookie, so it needs no key either (an expired session can end).
OPEN = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/logout"),
    ("GET", "/api/auth/me"),
}

# Which object of A's fills each path parameter. A route with a parameter named nowhere here
# fails the matrix until it is classified.
OWNED_BY_PARAM: dict[str, tuple[str, ...]] = {
    "job_id": ("job",),
    "batch_id": ("batch",),
    "session_id": ("session",),
    "upload_id": ("upload",),
    "filename": ("output", "final_output"),
    "video_id": ("job", "output", "final_output"),
    # A callback delivery of A's job (its path also names the job).
    "delivery_id": ("delivery",),
}
# Seed 003 calls a scene generation (a batch) its job.
OWNED_BY_PATH: dict[str, tuple[str, ...]] = {
    "/api/videos/status/{job_id}": ("scene_batch",),
    "/api/videos/final/{job_id}": ("scene_batch",),
}
# Things no key owns: the manifest's model files and their downloads (starting and cancelling
# them is for admins, see test_admin_only_routes_refuse_user_keys), and the workflows.
NOT_OWNED = {"model_id", "download_id", "name"}

ADMIN_ONLY = {
    ("GET", "/api/backends"),
    ("GET", "/api/replicas"),
    ("GET", "/metrics"),
    ("POST", "/api/model-files/{model_id}/download"),
    ("DELETE", "/api/model-files/downloads/{download_id}"),
    ("POST", "/api/v1/models/download"),
    ("GET", "/api/webhooks/secret"),
    ("POST", "/api/workflows/import"),
}

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
WAIT_S = 15.0


# -- routes, as the app lists them ---------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    in_schema: bool = True

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def app_routes(app: Any) -> list[Any]:
    """Every route of the app, included routers flattened (FastAPI keeps them nested)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # a FastAPI whose included routes are flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def original(route: Any) -> Any:
    return getattr(route, "original_route", route)


def is_websocket(route: Any) -> bool:
    from fastapi.routing import APIWebSocketRoute

    return isinstance(original(route), APIWebSocketRoute | WebSocketRoute)


def depends_on(dependant: Any, call: Any) -> bool:
    if dependant is None:
        return False
    return any(d.call is call or depends_on(d, call) for d in dependant.dependencies)


# -- the world: one proxy, four keys, A's objects ---------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 160, 220)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class World:
    server: Any
    client: httpx.AsyncClient
    offline: Offline
    llm: FakeLLM
    tmp: Path
    spec: dict[str, Any] = field(default_factory=dict)
    # A's objects: kind → id (or file name).
    objects: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http://", "ws://")

    async def call(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Answer:
        """One request; a successful answer's body is not read (event streams never end)."""
        async with asyncio.timeout(WAIT_S):
            async with self.client.stream(method, url, headers=headers, **kwargs) as response:
                body = b""
                if response.status_code >= 300 and method != "HEAD":
                    body = await response.aread()
                return Answer(response.status_code, response.headers, body)

    async def json_ok(self, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
        async with asyncio.timeout(WAIT_S):
            response = await self.client.request(method, url, headers=headers, **kw)
        assert response.status_code < 300, (method, url, response.status_code, response.text)
        return response.json()

    # A's objects, made through the API; `make` gives a fresh one (for the DELETE routes).

    async def make(self, kind: str) -> str:
        if kind == "job":
            job = await self.json_ok("POST", "/api/jobs", A, json={"prompt": f"{SECRET} job"})
            await self.offline.complete(job["id"])
            return str(job["id"])
        if kind == "output":
            return f"{await self.make('job')}.mp4"
        if kind == "batch":
            body = {"prompts": [f"{SECRET} batch"]}
            batch_id = (await self.json_ok("POST", "/api/video/batch_inference", A, json=body))[
                "batch_id"
            ]
            status = await self.json_ok("GET", f"/api/video/batch_status/{batch_id}", A)
            for job in status["jobs"]:
                await self.offline.complete(job["job_id"])
            return str(batch_id)
        if kind in ("session", "scene_batch"):
            body = {"scenes": {"hook": f"{SECRET} scene"}}
            session = await self.json_ok("POST", "/api/session", A, json=body)
            started = await self.json_ok(
                "POST",
                "/api/videos/generate-scenes",
                A,
                json={"session_id": session["session_id"]},
            )
            status = await self.json_ok("GET", f"/api/videos/status/{started['job_id']}", A)
            for scene in status["scenes"]:
                await self.offline.complete(scene["job_id"])
            if kind == "session":
                return str(session["session_id"])
            return str(started["job_id"])
        if kind == "final_output":
            batch_id = self.objects.get("scene_batch") or await self.make("scene_batch")
            answer = await self.call("GET", f"/api/videos/final/{batch_id}", A)
            assert answer.status == 200, answer.text
            batch = await self.offline.services.batches.store.get_batch(batch_id)
            assert batch is not None and batch.final
            return str(batch.final["filename"])
        if kind == "delivery":  # of A's job: a callback to a target that never answers
            job_id = self.objects["job"]
            hooks = self.offline.services.webhooks
            await hooks.subscribe(job_id, closed_port_url(), None)  # the job has ended: sent
            (delivery,) = await hooks.deliveries(job_id, limit=10, offset=0)
            return delivery.id
        if kind == "upload":
            files = {"file": ("photo.png", png_bytes(), "image/png")}
            upload = await self.json_ok(
                "POST", "/api/uploads", A, params={"kind": "image"}, files=files
            )
            return str(upload["id"])
        raise AssertionError(f"no way to make a {kind!r} of A's")

    def fake(self, kind: str, value: str) -> str:
        """A value of the same shape that names nothing."""
        for owned in ("scene_batch", "job", "batch", "session", "upload"):
            real = self.objects.get(owned)
            if real and real in value:
                return value.replace(real, str(uuid.uuid4()))
        if kind == "output":  # a fresh job's output
            return f"{uuid.uuid4()}.mp4"
        return str(uuid.uuid4())

    def operations(self) -> list[Op]:
        """Every HTTP operation: the OpenAPI document's, and the routes it leaves out."""
        ops = [
            Op(method.upper(), path)
            for path, item in self.spec["paths"].items()
            for method in item
            if method in HTTP_METHODS
        ]
        listed = {op.key for op in ops}
        for route in app_routes(self.server.app):
            if is_websocket(route) or not getattr(route, "methods", None):
                continue
            for method in sorted(route.methods):
                if (method, route.path) not in listed:
                    assert getattr(route, "include_in_schema", True) is False, (
                        f"{method} {route.path} is routed but missing from /openapi.json"
                    )
                    ops.append(Op(method, route.path, in_schema=False))
        return ops

    def websockets(self) -> list[str]:
        return [route.path for route in app_routes(self.server.app) if is_websocket(route)]

    def fill(self, path: str, values: dict[str, str]) -> str:
        return re.sub(r"{(\w+)}", lambda m: quote(values.get(m.group(1), "x"), safe=""), path)

    def shared_values(self, path: str) -> dict[str, str]:
        """Path parameters filled with A's objects (first variant), for the key-less calls."""
        values = {}
        for param in re.findall(r"{(\w+)}", path):
            kinds = OWNED_BY_PATH.get(path) or OWNED_BY_PARAM.get(param)
            if kinds:
                values[param] = self.objects[kinds[0]]
        return values


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("auth")
    llm = FakeLLM()
    await llm.start()
    settings = Settings(
        data_dir=tmp / "data",
        comfyui_urls=[closed_port_url()],
        ws_reconnect_min_s=5.0,
        ws_reconnect_max_s=30.0,
        api_keys=[f"alice:{KEY_A}", f"bob:{KEY_B}", f"carol:{KEY_C}"],
        admin_api_keys=[f"ops:{KEY_ADMIN}"],
        max_active_jobs_per_client=2,
        max_batch_size=3,
        llm_base_url=llm.base_url,
        llm_model="test-model",
        llm_timeout_s=5.0,
        models_dir=tmp / "models",
        # Downloads an admin starts fail at once: nothing listens there.
        hf_endpoint=closed_port_url(),
    )
    try:
        async with proxy_server(settings) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_S) as client:
                world = World(server, client, Offline(server, client), llm, tmp)
                world.spec = await world.json_ok("GET", "/openapi.json", ADMIN)
                for kind in ("job", "batch", "session", "scene_batch", "upload"):
                    world.objects[kind] = await world.make(kind)
                world.objects["output"] = f"{world.objects['job']}.mp4"
                world.objects["final_output"] = await world.make("final_output")
                world.objects["delivery"] = await world.make("delivery")
                # A prompt-tool session of A's, under a name B uses too.
                llm.add(reply({"parameters": {"subject": SECRET, "style": "noir"}}))
                await world.json_ok(
                    "POST",
                    "/api/initialize",
                    {**A, "X-Session-Id": "shared"},
                    json={"prompt": f"{SECRET} prompt"},
                )
                yield world
    finally:
        await llm.close()


def a_file_in(directory: str) -> str:
    """Some file under `directory`, as a relative URL path."""
    root = Path(directory)
    return next(p for p in sorted(root.rglob("*")) if p.is_file()).relative_to(root).as_posix()


def refused_401(answer: Answer) -> str | None:
    """Why `answer` is not a proper 401, or None."""
    if answer.status != 401:
        return f"{answer.status} {answer.text[:120]}"
    if not answer.headers.get("www-authenticate", "").lower().startswith("bearer"):
        return f"401 without WWW-Authenticate: Bearer ({dict(answer.headers)})"
    if answer.headers.get("content-type", "").startswith("application/json"):
        if not answer.json().get("error"):
            return f"401 without an error message: {answer.text[:120]}"
    else:
        return f"401 that is not JSON: {answer.headers.get('content-type')}"
    return None


# -- no key, a made-up key -----------------------------------------------------------------------


async def test_the_document_lists_every_route_and_needs_a_key(world: World) -> None:
    assert refused_401(await world.call("GET", "/openapi.json", NOBODY)) is None
    assert refused_401(await world.call("GET", "/docs", NOBODY)) is None
    ops = world.operations()
    assert len(ops) > 50  # the document was read, and it is the whole API
    assert {op.path for op in ops if not op.in_schema} >= {"/openapi.json", "/docs"}
    assert sorted(world.websockets()) == ["/api/ws/batch/{batch_id}", "/api/ws/video/{job_id}"]


async def test_every_route_refuses_a_missing_or_made_up_key(world: World) -> None:
    failures = []
    for op in world.operations():
        url = world.fill(op.path, world.shared_values(op.path))
        is_open = op.key in OPEN
        for who, headers in (
            ("no key", NOBODY),
            ("a made-up X-API-Key", {"X-API-Key": MADE_UP}),
            ("a made-up Bearer key", {"Authorization": f"Bearer {MADE_UP}"}),
        ):
            if is_open and who == "no key":
                continue
            answer = await world.call(op.method, url, headers)
            if op.method == "HEAD":
                problem = None if answer.status == 401 else f"{answer.status}"
            else:
                problem = refused_401(answer)
            if problem:
                failures.append(f"{op} with {who}: {problem}")
    assert not failures, "\n".join(failures)


async def test_the_open_routes_answer_without_a_key(world: World) -> None:
    call = world.call
    assert (await call("GET", "/health", NOBODY)).status == 200
    assert (await call("POST", "/api/auth/logout", NOBODY)).status == 200
    me = await world.client.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["authenticated"] is False
    assert me.json()["auth_required"] is True
    # The web UI's page, for a browser; the same URL as JSON needs a key.
    page = await call("GET", "/", {"Accept": "text/html,application/xhtml+xml"})
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert refused_401(await call("GET", "/", {"Accept": "application/json"})) is None
    statics = [
        route
        for route in app_routes(world.server.app)
        if getattr(original(route), "path", None) == "/static"
    ]
    assert statics, "no /static mount"
    asset = await call("GET", f"/static/{a_file_in(original(statics[0]).app.directory)}", NOBODY)
    assert asset.status == 200
    routed = {(m, r.path) for r in app_routes(world.server.app) for m in (r.methods or ())}
    if ("GET", "/ready") in routed:  # a readiness probe may not exist yet
        assert (await call("GET", "/ready", NOBODY)).status != 401


async def test_a_made_up_key_does_not_open_the_websockets(world: World) -> None:
    """Refused with the close code 4401 (so a client can tell it from an unknown id, 4404),
    sending nothing."""
    failures = []
    for path in world.websockets():
        url = world.ws_url + world.fill(path, world.shared_values(path))
        for who, headers in (("no key", NOBODY), ("a made-up key", {"X-API-Key": MADE_UP})):
            outcome = await ws_talk(url, headers)
            if outcome.close_code != 4401 or outcome.messages:
                failures.append(f"{path} with {who}: {outcome}")
    assert not failures, "\n".join(failures)


async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(
    world: World,
) -> None:
    """A body the route would reject says nothing to a caller without a key: 401 first."""
    failures = []
    for path, item in world.spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or (method.upper(), path) in OPEN:
                continue
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            url = world.fill(path, world.shared_values(path))
            answer = await world.call(
                method.upper(), url, {"Content-Type": "application/json"}, content=b"{not json"
            )
            if problem := refused_401(answer):
                failures.append(f"{method.upper()} {path} with a broken JSON body: {problem}")
    assert not failures, "\n".join(failures)


# -- another key's objects ---------------------------------------------------------------------


def kinds_for(op: Op) -> list[dict[str, str]]:
    """Each way of filling the route's path with A's objects (param → kind)."""
    if not op.params:
        return []
    variants: list[dict[str, str]] = [{}]
    for param in op.params:
        kinds = OWNED_BY_PATH.get(op.path) or OWNED_BY_PARAM.get(param)
        if kinds is None:
            assert param in NOT_OWNED, f"{op}: classify the path parameter {param!r}"
            return []
        variants = [{**v, param: kind} for v in variants for kind in kinds]
    return variants


def through(answer: Answer) -> bool:
    return answer.status < 500 and answer.status not in (401, 403, 404)


async def test_another_keys_objects_are_not_found_on_every_route_taking_an_id(
    world: World,
) -> None:
    failures: list[str] = []
    checked = 0
    for op in world.operations():
        for variant in kinds_for(op):
            checked += 1
            values = {param: world.objects[kind] for param, kind in variant.items()}
            fakes = {param: world.fake(variant[param], value) for param, value in values.items()}
            label = f"{op} ({', '.join(f'{p}={k}' for p, k in variant.items())})"

            b_answer = await world.call(op.method, world.fill(op.path, values), B)
            missing = await world.call(op.method, world.fill(op.path, fakes), B)
            if b_answer.status != 404:
                failures.append(f"{label} with B: {b_answer.status} {b_answer.text[:160]}")
            elif op.method != "HEAD":
                said, baseline = b_answer.text, missing.text
                for param in values:
                    said = said.replace(values[param], "<id>")
                    baseline = baseline.replace(fakes[param], "<id>")
                if said != baseline:
                    failures.append(f"{label}: B's 404 {said!r} differs from {baseline!r}")
                if SECRET in said or "alice" in said:
                    failures.append(f"{label}: B's 404 reveals A's object: {said!r}")

            for who, headers in (("A", A), ("an admin", ADMIN)):
                mine = values
                if op.method == "DELETE":  # each caller deletes a fresh object of A's
                    mine = {p: await world.make(variant[p]) for p in values}
                answer = await world.call(op.method, world.fill(op.path, mine), headers)
                if not through(answer):
                    failures.append(f"{label} with {who}: {answer.status} {answer.text[:160]}")
    assert checked >= 25, checked  # the classification ran (27 today)
    # What B tried (stop, start, delete) changed nothing of A's.
    for kind, url in (
        ("job", "/api/jobs/{}"),
        ("batch", "/api/batches/{}"),
        ("session", "/api/session/{}"),
        ("upload", "/api/uploads/{}"),
        ("scene_batch", "/api/batches/{}"),
    ):
        answer = await world.call("GET", url.format(world.objects[kind]), A)
        if answer.status != 200:
            failures.append(f"A's {kind} is gone after B's calls: {answer.status}")
    job = await world.json_ok("GET", f"/api/jobs/{world.objects['job']}", A)
    if job["status"] != "completed":
        failures.append(f"A's job is {job['status']} after B's calls")
    assert not failures, "\n".join(failures)


async def test_ids_in_bodies_and_uploads_of_another_key_are_not_found(world: World) -> None:
    # Scene generation names its session in the body.
    session, fake = world.objects["session"], str(uuid.uuid4())
    for path, extra in (
        ("/api/videos/generate-scenes", {}),
        ("/api/videos/regenerate-scene", {"scenario": "hook", "wait": False}),
    ):
        theirs = await world.call("POST", path, B, json={"session_id": session, **extra})
        nobodys = await world.call("POST", path, B, json={"session_id": fake, **extra})
        assert theirs.status == 404, (path, theirs.status, theirs.text)
        assert theirs.text.replace(session, "<id>") == nobodys.text.replace(fake, "<id>")
    # An upload of A's, named in B's create call: as if it did not exist.
    upload = world.objects["upload"]
    before = (await world.json_ok("GET", "/api/jobs", B))["total"]
    body = {"model_id": "fastwan_i2v", "prompt": "mine now"}
    theirs = await world.call("POST", "/api/jobs", B, json={**body, "image": upload})
    nobodys = await world.call("POST", "/api/jobs", B, json={**body, "image": fake})
    assert theirs.status == nobodys.status and theirs.status in (404, 422), theirs.text
    assert theirs.text.replace(upload, "<id>") == nobodys.text.replace(fake, "<id>")
    assert (await world.json_ok("GET", "/api/jobs", B))["total"] == before


def listed_ids(listed: dict[str, Any], key: str) -> set[str]:
    return {item.get("id") or item.get("job_id") for item in listed[key]}


async def test_lists_show_a_key_only_its_own(world: World) -> None:
    mine = await world.json_ok("POST", "/api/jobs", B, json={"prompt": "bob's", "start": False})
    try:
        page = {"limit": 1000}
        for path in ("/api/jobs", "/jobs"):
            b_list = await world.json_ok("GET", path, B, params=page)
            a_list = await world.json_ok("GET", path, A, params=page)
            everything = await world.json_ok("GET", path, ADMIN, params=page)
            b_ids, a_ids = listed_ids(b_list, "jobs"), listed_ids(a_list, "jobs")
            assert mine["id"] in b_ids and world.objects["job"] in a_ids, path
            assert not a_ids & b_ids, (path, a_ids & b_ids)
            assert b_list["total"] == len(b_ids), (path, b_list["total"])
            assert SECRET not in json.dumps(b_list), path
            assert a_ids | b_ids <= listed_ids(everything, "jobs"), path

        b_batches = await world.json_ok("GET", "/api/batches", B, params=page)
        a_batches = await world.json_ok("GET", "/api/batches", A, params=page)
        a_ids = listed_ids(a_batches, "batches")
        assert {world.objects["batch"], world.objects["scene_batch"]} <= a_ids
        assert not a_ids & listed_ids(b_batches, "batches")
        assert b_batches["total"] == len(b_batches["batches"])
        assert SECRET not in json.dumps(b_batches)

        # Downloads are started by admins only, so a user's list can hold nothing of another
        # user's; and no user sees a path on the server.
        model_id = (await world.json_ok("GET", "/api/model-files", ADMIN))["models"][0]["id"]
        before = (await world.json_ok("GET", "/api/model-files/downloads", ADMIN))["downloads"]
        refused = await world.call("POST", f"/api/model-files/{model_id}/download", A)
        assert refused.status == 403, refused.text
        after = (await world.json_ok("GET", "/api/model-files/downloads", B))["downloads"]
        assert {d["id"] for d in after} <= {d["id"] for d in before}
        assert all(not str(d.get("target_path") or "").startswith("/") for d in after), after

        # Prompt-tool sessions: the same name under another key is another session.
        shared = {"X-Session-Id": "shared"}
        history = await world.json_ok("GET", "/api/history", {**B, **shared})
        assert history["history"] == [], history
        assert await world.json_ok("GET", "/api/parameters", {**B, **shared}) == {}
        a_history = await world.json_ok("GET", "/api/history", {**A, **shared})
        assert [SECRET in h["prompt"] for h in a_history["history"]] == [True]
    finally:
        await world.json_ok("DELETE", f"/api/jobs/{mine['id']}", B)


# -- live feeds ---------------------------------------------------------------------------------


async def sse_connected(lines: AsyncIterator[str]) -> None:
    async with asyncio.timeout(WAIT_S):
        async for line in lines:
            if line.startswith(":") and "connected" in line:
                return
    raise AssertionError("the event stream ended before it said it was connected")


async def sse_until(lines: AsyncIterator[str], job_id: str) -> list[str]:
    """The job ids of every event up to and including the first of `job_id`."""
    seen: list[str] = []
    async with asyncio.timeout(WAIT_S):
        async for job in job_views(lines):
            seen.append(job["id"])
            if seen[-1] == job_id:
                return seen
    raise AssertionError(f"the event stream ended before {job_id} appeared (saw {seen})")


async def test_the_event_stream_carries_only_the_callers_jobs(world: World) -> None:
    client = world.client
    async with (
        client.stream("GET", "/api/events", headers=B) as b_stream,
        client.stream("GET", "/api/events", headers=ADMIN) as admin_stream,
    ):
        assert b_stream.status_code == 200 and admin_stream.status_code == 200
        b_lines, admin_lines = b_stream.aiter_lines(), admin_stream.aiter_lines()
        await sse_connected(b_lines)
        await sse_connected(admin_lines)
        # A's change first, then B's: B's stream must reach B's without passing A's.
        a_job = await world.json_ok("POST", "/api/jobs", A, json={"prompt": f"{SECRET} sse"})
        b_job = await world.json_ok("POST", "/api/jobs", B, json={"prompt": "bob's sse"})
        try:
            seen_by_b = await sse_until(b_lines, b_job["id"])
            assert a_job["id"] not in seen_by_b, seen_by_b
            assert all(job_id == b_job["id"] for job_id in seen_by_b), seen_by_b
            # The event of A's was sent (to those who may see it).
            seen_by_admin = await sse_until(admin_lines, b_job["id"])
            assert a_job["id"] in seen_by_admin, seen_by_admin
        finally:
            await world.json_ok("DELETE", f"/api/jobs/{a_job['id']}", A)
            await world.json_ok("DELETE", f"/api/jobs/{b_job['id']}", B)


@dataclass
class WsOutcome:
    messages: list[Any]
    close_code: int | None
    http_status: int | None  # when the handshake itself was refused


async def ws_talk(url: str, headers: dict[str, str]) -> WsOutcome:
    try:
        async with asyncio.timeout(WAIT_S):
            async with websockets.connect(url, additional_headers=headers) as ws:
                messages = []
                try:
                    async for frame in ws:
                        messages.append(json.loads(frame))
                except ConnectionClosed:
                    pass
                return WsOutcome(messages, ws.close_code, None)
    except InvalidStatus as exc:
        return WsOutcome([], None, exc.response.status_code)


async def test_websockets_of_another_keys_objects_close_4404(world: World) -> None:
    for path in world.websockets():
        (param,) = re.findall(r"{(\w+)}", path)
        (kind,) = OWNED_BY_PARAM[param]
        real, fake = world.objects[kind], str(uuid.uuid4())
        theirs = await ws_talk(world.ws_url + world.fill(path, {param: real}), B)
        nobodys = await ws_talk(world.ws_url + world.fill(path, {param: fake}), B)
        assert theirs.close_code == 4404, (path, theirs)
        assert json.dumps(theirs.messages).replace(real, "<id>") == json.dumps(
            nobodys.messages
        ).replace(fake, "<id>")
        for who, headers in (("A", A), ("an admin", ADMIN)):
            outcome = await ws_talk(world.ws_url + world.fill(path, {param: real}), headers)
            # A finished job or batch: its status at once, then a clean close.
            assert outcome.close_code == 1000, (path, who, outcome)
            assert outcome.messages and outcome.messages[-1]["status"] == "complete", outcome


# -- admins ------------------------------------------------------------------------------------


async def test_admin_only_routes_refuse_user_keys(world: World) -> None:
    derived = {
        (method, route.path)
        for route in app_routes(world.server.app)
        if depends_on(getattr(route, "dependant", None), require_admin)
        for method in (route.methods or ())
    }
    assert derived == ADMIN_ONLY
    model_id = (await world.json_ok("GET", "/api/model-files", ADMIN))["models"][0]["id"]
    started = await world.json_ok("POST", f"/api/model-files/{model_id}/download", ADMIN)
    values = {"model_id": model_id, "download_id": started["id"]}
    bodies = {"/api/v1/models/download": {"model_id": model_id}}
    for method, path in sorted(ADMIN_ONLY, key=lambda k: k[0] == "DELETE"):  # cancel last
        url = world.fill(path, values)
        body = bodies.get(path)
        for who, headers in (("A", A), ("B", B)):
            answer = await world.call(method, url, headers, json=body)
            assert answer.status == 403 and answer.json()["error"], (method, path, who, answer)
        answer = await world.call(method, url, ADMIN, json=body)
        assert answer.status < 500 and answer.status not in (401, 403), (method, path, answer)
    # Users may follow a download, without the path it is written to.
    shown = await world.json_ok("GET", f"/api/model-files/downloads/{started['id']}", A)
    assert not str(shown.get("target_path") or "").startswith("/"), shown
    full = await world.json_ok("GET", f"/api/model-files/downloads/{started['id']}", ADMIN)
    assert str(full["target_path"]).startswith("/"), full


async def test_the_web_uis_session_is_a_key_of_its_own(world: World) -> None:
    try:
        login = await world.client.post("/api/auth/login", json={"key": KEY_A})
    finally:
        world.client.cookies.clear()  # the other tests' calls carry no cookie
    assert login.status_code == 200 and login.json() == {"name": "alice", "admin": False}
    jar = {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}
    as_a = listed_ids(await world.json_ok("GET", "/api/jobs", jar, params={"limit": 1000}), "jobs")
    by_key = listed_ids(await world.json_ok("GET", "/api/jobs", A, params={"limit": 1000}), "jobs")
    assert world.objects["job"] in as_a and as_a == by_key
    # Another site cannot use the cookie; a forged one is no session.
    foreign = {**jar, "Origin": "http://elsewhere.invalid", "Sec-Fetch-Site": "cross-site"}
    stop = await world.call("POST", f"/api/jobs/{world.objects['job']}/stop", foreign)
    assert stop.status == 403, stop.text
    forged = {"Cookie": f"{SESSION_COOKIE}=alice.99999999999.{'0' * 64}"}
    assert refused_401(await world.call("GET", "/api/jobs", forged)) is None
    assert (await world.client.post("/api/auth/login", json={"key": MADE_UP})).status_code == 401


# -- the active-job limit ----------------------------------------------------------------------


# POST operations that create jobs (each must answer 429 at the limit), and those that don't;
# a POST route in neither fails the test until it is classified.
CREATES_NO_JOB = {
    "/api/auth/login",
    "/api/auth/logout",
    "/api/uploads",
    "/api/jobs/{job_id}/stop",
    "/api/initialize",
    "/api/update",
    "/api/enhance",
    "/api/generate-variations",
    "/api/scenes/draft",
    "/api/model-files/{model_id}/download",
    "/api/v1/models/download",
    "/api/session",
    "/api/jobs/{job_id}/webhooks/{delivery_id}/retry",
    "/api/workflows/import",
}


def limited_calls(
    session_id: str, pending_id: str, mp4: bytes
) -> Iterable[tuple[str, dict[str, Any]]]:
    png = ("photo.png", png_bytes(), "image/png")
    yield "/api/jobs", {"json": {"prompt": "json"}}
    yield (
        "/api/jobs",
        {"data": {"model_id": "fastwan_i2v", "prompt": "form"}, "files": {"image": png}},
    )
    yield f"/api/jobs/{pending_id}/start", {}
    # The endpoint of each workflow (the document lists one path per workflow).
    yield "/api/workflows/fastwan_t2v/jobs", {"json": {"prompt": "its own endpoint"}}
    yield "/api/workflows/fastwan_i2v/jobs", {"data": {"prompt": "i2v"}, "files": {"image": png}}
    yield (
        "/api/workflows/fastwan_v2v/jobs",
        {"data": {"prompt": "v2v"}, "files": {"video": ("clip.mp4", mp4, "video/mp4")}},
    )
    yield "/generate", {"json": {"prompt": "seed 001"}}
    yield "/api/video/single_inference", {"json": {"prompt": "seed 004"}}
    yield "/api/video/batch_inference", {"json": {"prompts": ["seed 004 batch"]}}
    yield "/api/v1/generate/text-to-video", {"json": {"prompt": "seed 002"}}
    yield "/api/v1/generate/image-to-video", {"data": {"prompt": "i2v"}, "files": {"image": png}}
    yield (
        "/api/v1/generate/video-to-video",
        {"data": {"prompt": "v2v"}, "files": {"video": ("clip.mp4", mp4, "video/mp4")}},
    )
    yield "/api/videos/generate-scenes", {"json": {"session_id": session_id}}
    yield (
        "/api/videos/regenerate-scene",
        {"json": {"session_id": session_id, "scenario": "hook", "wait": False}},
    )


async def active_of(world: World, headers: dict[str, str]) -> list[str]:
    listed = await world.json_ok(
        "GET", "/api/jobs", headers, params={"status": "queued,running", "limit": 1000}
    )
    return [j["id"] for j in listed["jobs"]]


async def test_the_active_job_limit_counts_every_surface_per_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seed 002's routes answer 503 while no ComfyUI is connected, before counting; the limit
    # is what is under test here, so the offline backend counts as connected.
    monkeypatch.setattr(world.offline.services.pool, "require_connected", lambda: None)
    clip = world.tmp / "clip.mp4"
    write_mp4(clip, 9)
    session = await world.json_ok("POST", "/api/session", C, json={"scenes": {"hook": "carol"}})
    session_id = session["session_id"]
    pending = await world.json_ok("POST", "/api/jobs", C, json={"prompt": "later", "start": False})
    calls = list(limited_calls(session_id, pending["id"], clip.read_bytes()))

    posts = {
        path for path, item in world.spec["paths"].items() for method in item if method == "post"
    }
    templates = {re.sub(r"/api/jobs/[^/]+/start", "/api/jobs/{job_id}/start", p) for p, _ in calls}
    assert posts - CREATES_NO_JOB == templates, "classify the POST routes that create jobs"

    failures: list[str] = []
    try:
        # Two active jobs, made on two surfaces.
        await world.json_ok(
            "POST", "/api/videos/generate-scenes", C, json={"session_id": session_id}
        )
        await world.json_ok("POST", "/generate", C, json={"prompt": "second"})
        assert len(await active_of(world, C)) == 2

        for path, kwargs in calls:
            answer = await world.call("POST", path, C, **kwargs)
            if answer.status != 429:
                failures.append(f"POST {path} past the limit: {answer.status} {answer.text[:160]}")
            elif not answer.headers.get("retry-after") or not answer.json().get("error"):
                failures.append(f"POST {path}: a 429 without Retry-After or error")
        active = await active_of(world, C)
        if len(active) != 2:
            failures.append(f"{len(active)} active jobs after the refusals, not 2")

        # Another key is not affected.
        other = await world.json_ok("POST", "/api/video/single_inference", B, json={"prompt": "b"})
        await world.json_ok("DELETE", f"/api/jobs/{other['job_id']}", B)

        # One slot free (whatever got past the limit above): one job fits, two do not.
        for job_id in active[1:]:
            await world.json_ok("POST", f"/api/jobs/{job_id}/stop", C)
        two = await world.call(
            "POST", "/api/video/batch_inference", C, json={"prompts": ["one", "two"]}
        )
        if two.status != 429:
            failures.append(f"a batch of 2 with 1 slot free: {two.status} {two.text[:160]}")
        one = await world.call("POST", "/api/video/single_inference", C, json={"prompt": "fits"})
        if one.status != 200:
            failures.append(f"a job with 1 slot free: {one.status} {one.text[:160]}")
    finally:
        for job_id in await active_of(world, C):
            await world.json_ok("POST", f"/api/jobs/{job_id}/stop", C)
    assert not failures, "\n".join(failures)
