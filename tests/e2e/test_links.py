"""Absolute and signed URLs (issue 15): every video and status URL in answers is absolute
(PUBLIC_URL, else the request's own address, X-Forwarded-* believed from TRUSTED_PROXIES
only), and with keys configured a signed URL fetches the video without headers."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from proxy.auth import KeyRing, SignedUrls, Unauthorized
from proxy.settings import Settings
from tests.support import StandinProcess, follow_job, proxy_server

MakeSettings = Callable[..., Settings]
KEYS = {"X-API-Key": "ka"}
# The native names (the FastWAN seed takes SMALL as it is).
NATIVE = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4, "fps": 8}
SMALL = {"width": 64, "height": 64, "length": 9, "steps": 4, "fps": 8}


async def finished(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    made = await client.post("/api/jobs", json={"prompt": "a link", **NATIVE}, headers=headers)
    assert made.status_code == 201, made.text
    job_id: str = made.json()["id"]
    client.headers.update(headers or {})
    await follow_job(client, job_id, {"completed", "failed"}, 60)
    return job_id


async def test_answers_carry_absolute_urls_under_the_address_asked(
    standin: StandinProcess, make_settings: MakeSettings
) -> None:
    async with proxy_server(make_settings([standin.url])) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            job_id = await finished(client)
            job = (await client.get(f"/api/jobs/{job_id}")).json()
            assert job["video_url"] == f"{proxy.url}/api/jobs/{job_id}/video"
            assert "signed_url" not in job  # no keys: nothing to sign
            # The Host the client used; a forwarded one from an untrusted peer changes nothing.
            named = await client.get(
                f"/status/{job_id}",
                headers={
                    "Host": "gpu-box.lan:8189",
                    "X-Forwarded-Host": "evil.example",
                    "X-Forwarded-Proto": "https",
                },
            )
            assert named.json()["download_url"] == f"http://gpu-box.lan:8189/download/{job_id}"
            video = await client.get(job["video_url"])
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


async def test_a_trusted_proxy_names_the_public_address(
    standin: StandinProcess, make_settings: MakeSettings
) -> None:
    settings = make_settings([standin.url], trusted_proxies=["127.0.0.0/8"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            forwarded = {
                "X-Forwarded-Host": "videos.example.com",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
            }
            made = await client.post(
                "/api/jobs?wait=0", json={"prompt": "behind a proxy", **NATIVE}, headers=forwarded
            )
            assert made.status_code == 202
            job_id = made.json()["id"]
            assert made.headers["location"] == f"https://videos.example.com/api/jobs/{job_id}"
            await follow_job(client, job_id, {"completed", "failed"}, 60)
            job = (await client.get(f"/api/jobs/{job_id}", headers=forwarded)).json()
            assert job["video_url"] == f"https://videos.example.com/api/jobs/{job_id}/video"
            # The client's address is the forwarded one: the per-client owner on an open proxy.
            assert job["client_key"] == "addr:203.0.113.9"


async def test_public_url_wins_over_every_request(
    standin: StandinProcess, make_settings: MakeSettings
) -> None:
    settings = make_settings([standin.url], public_url="https://api.example.com/video")
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            made = await client.post(
                "/generate?wait=0", json={"prompt": "public", **SMALL}, headers={"Host": "x:1"}
            )
            job_id = made.json()["job_id"]
            assert made.headers["location"] == f"https://api.example.com/video/status/{job_id}"


async def test_a_signed_url_fetches_the_video_without_headers_and_nothing_else(
    standin: StandinProcess, make_settings: MakeSettings
) -> None:
    settings = make_settings([standin.url], api_keys=["alice:ka", "bob:kb"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            job_id = await finished(client, KEYS)
            job = (await client.get(f"/api/jobs/{job_id}")).json()
            signed = job["signed_url"]
            assert signed.startswith(f"{proxy.url}/api/jobs/{job_id}/video?expires=")
            assert job["signed_url_expires_at"].endswith("Z")
        async with httpx.AsyncClient(timeout=30) as bare:  # no key, no cookie
            assert (await bare.get(job["video_url"])).status_code == 401
            video = await bare.get(signed)
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            part = await bare.get(signed, headers={"Range": "bytes=0-9"})
            assert part.status_code == 206 and len(part.content) == 10
            query = parse_qs(urlsplit(signed).query)
            expires, sig = query["expires"][0], query["sig"][0]
            # The signature covers the path, the expiry and the key.
            for url in (
                f"{proxy.url}/api/jobs/{job_id}?expires={expires}&sig={sig}",
                f"{proxy.url}/api/jobs/{job_id}/video?expires={int(expires) + 1}&sig={sig}",
                f"{proxy.url}/api/jobs/{job_id}/video?expires={expires}&sig=bob.{sig[6:]}",
            ):
                refused = await bare.get(url)
                assert refused.status_code == 401, url
                assert "not valid" in refused.json()["detail"]
            assert (await bare.post(signed)).status_code in (401, 405)
            # Every surface's answer signs its own download path.
            fastwan = (await bare.get(f"{proxy.url}/status/{job_id}", headers=KEYS)).json()
            assert (await bare.get(fastwan["signed_url"])).status_code == 200
    # The key removed: its signed URLs stop working.
    async with proxy_server(make_settings([standin.url], api_keys=["bob:kb"])) as again:
        async with httpx.AsyncClient(timeout=30) as bare:
            moved = signed.replace(proxy.url, again.url)
            assert (await bare.get(moved)).status_code == 401


def test_an_expired_signed_url_says_so() -> None:
    urls = SignedUrls(KeyRing(["alice:ka"], []), b"secret", ttl_s=60)
    old = urls.issue("/download/j", "alice", now=1_000_000)
    assert old is not None and old.expires_at == 1_000_060
    query = parse_qs(urlsplit(old.url).query)
    with pytest.raises(Unauthorized, match="expired"):
        urls.verify("/download/j", query["expires"][0], query["sig"][0])
    fresh = urls.issue("/download/j", "alice")
    assert fresh is not None
    query = parse_qs(urlsplit(fresh.url).query)
    assert urls.verify("/download/j", query["expires"][0], query["sig"][0]).name == "alice"
    assert urls.issue("/download/j", "nobody") is None


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        Settings(trusted_proxies="10.0.0.0/8,proxy.lan")
