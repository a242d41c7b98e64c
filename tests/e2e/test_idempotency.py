"""Safe retries (issue 15): `Idempotency-Key` on create calls, end to end on the stand-in."""

from __future__ import annotations

import asyncio
import io

import httpx
from PIL import Image

from proxy.api.idempotency import Fingerprint
from proxy.settings import Settings
from tests.e2e.conftest import SMALL
from tests.support import proxy_server


async def test_a_retried_create_returns_the_first_job(client):
    body = {"prompt": "only once", **SMALL}
    first = await client.post("/generate", json=body, headers={"Idempotency-Key": "abc-1"})
    again = await client.post("/generate", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await client.post("/generate", json=body, headers={"Idempotency-Key": "abc-2"})
    assert other.json()["job_id"] != first.json()["job_id"]
    assert (await client.get("/api/jobs")).json()["total"] == 2

    changed = await client.post(
        "/generate", json={**body, "seed": 5}, headers={"Idempotency-Key": "abc-1"}
    )
    assert changed.status_code == 422 and changed.json()["field"] == "Idempotency-Key"


async def test_concurrent_duplicates_make_one_job(client):
    body = {"prompt": "a stampede of retries", "width": 64, "height": 64, "num_frames": 9}
    answers = await asyncio.gather(
        *(
            client.post("/api/jobs?wait=0", json=body, headers={"Idempotency-Key": "same"})
            for _ in range(8)
        )
    )
    assert {a.status_code for a in answers} == {answers[0].status_code}, answers
    assert len({a.json()["id"] for a in answers}) == 1
    assert (await client.get("/api/jobs")).json()["total"] == 1


async def test_a_refused_create_can_be_retried_with_the_same_key(client):
    bad = await client.post(
        "/generate", json={"prompt": "x", "width": 1000}, headers={"Idempotency-Key": "k"}
    )
    assert bad.status_code == 422
    good = await client.post(
        "/generate", json={"prompt": "x", "width": 1000}, headers={"Idempotency-Key": "k"}
    )
    assert good.status_code == 422  # refused again, not replayed: nothing was kept
    assert "idempotent-replayed" not in good.headers


async def test_keys_belong_to_the_api_key_that_used_them(standin, make_settings):
    settings: Settings = make_settings([standin.url], api_keys=["alice:ka", "bob:kb"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            body = {"prompt": "mine", **SMALL}
            made = [
                await client.post(
                    "/generate", json=body, headers={"Idempotency-Key": "k", "X-API-Key": key}
                )
                for key in ("ka", "kb", "ka")
            ]
    ids = [m.json()["job_id"] for m in made]
    assert ids[0] == ids[2] != ids[1]


def _jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), rgb).save(buf, format="JPEG")
    return buf.getvalue()


async def test_a_retried_multipart_create_returns_the_first_job(client):
    """httpx draws a new part boundary for every send, as curl and n8n do: the retry is
    still the same request."""
    fields = {"prompt": "a form, sent twice", "num_frames": "9", "width": "64", "height": "64"}
    image = _jpeg((200, 40, 40))

    async def send(data: bytes, key: str = "form-1") -> httpx.Response:
        return await client.post(
            "/api/v1/generate/image-to-video",
            files={"image": ("red.jpg", data, "image/jpeg")},
            data=fields,
            headers={"Idempotency-Key": key},
        )

    first, again = await send(image), await send(image)
    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert (await client.get("/api/jobs")).json()["total"] == 1

    other_file = await send(_jpeg((40, 40, 200)))
    assert other_file.status_code == 422 and other_file.json()["field"] == "Idempotency-Key"
    assert (await client.get("/api/jobs")).json()["total"] == 1


def test_a_fingerprint_is_the_same_however_the_body_is_cut() -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--{boundary}--\r\n'
    ).encode()
    other = body.replace(boundary.encode(), b"Z" * len(boundary))

    def digest(data: bytes, mark: str, cuts: list[int]) -> str:
        fingerprint = Fingerprint("/r", f"multipart/form-data; boundary={mark}")
        edges = [0, *cuts, len(data)]
        for i, (start, end) in enumerate(zip(edges, edges[1:], strict=False)):
            more = i < len(edges) - 2
            fingerprint.update({"type": "http.request", "body": data[start:end], "more_body": more})
        assert fingerprint.complete
        return fingerprint.digest()

    whole = digest(body, boundary, [])
    # Cut inside a boundary, at each byte of it: the same.
    for cut in range(1, 14):
        assert digest(body, boundary, [cut]) == whole
    assert digest(body, boundary, list(range(1, len(body)))) == whole
    # Another boundary, the same parts: the same; another part: not.
    assert digest(other, "Z" * len(boundary), [5, 40]) == whole
    assert digest(body.replace(b"\r\n1\r\n", b"\r\n2\r\n"), boundary, []) != whole
    json_print = Fingerprint("/r", "application/json")
    json_print.update({"type": "http.request", "body": b'{"a": 1}', "more_body": False})
    assert json_print.digest() != whole
