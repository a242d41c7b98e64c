"""`GET /metrics` on an offline proxy (its only backend never answers; the tests move jobs
through their lifecycle with the job writer, as the tracker would): the exposition parses,
every family is there, counts follow the jobs, HTTP series use route templates, and the route
is an admin's when keys are configured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.settings import Settings
from tests.batches.conftest import SMALL, Offline
from tests.support import offline_settings_for, proxy_server

FAMILIES = {
    "fastwan_jobs": "gauge",
    "fastwan_queue_depth": "gauge",
    "fastwan_backend_up": "gauge",
    "fastwan_backend_inflight": "gauge",
    "fastwan_backend_jobs_done": "counter",
    "fastwan_backend_jobs_failed": "counter",
    "fastwan_job_duration_seconds": "histogram",
    "fastwan_job_queue_seconds": "histogram",
    "fastwan_job_stage_seconds": "histogram",
    "fastwan_http_requests": "counter",
    "fastwan_http_request_duration_seconds": "histogram",
    "fastwan_database_errors": "counter",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    return offline_settings_for(tmp_path / "data", **kw)


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[Offline]:
    async with proxy_server(settings_for(tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield Offline(server, client)


async def scrape(client: httpx.AsyncClient, **headers: str) -> tuple[dict[str, str], Samples]:
    """The families (name → type) and every sample, keyed by name and labels."""
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    families: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def until(
    client: httpx.AsyncClient, check: Callable[[Samples], bool], timeout_s: float = 10
) -> Samples:
    """Scrape until `check` holds (the job-event subscriber runs beside the writer)."""
    async with asyncio.timeout(timeout_s):
        while True:
            _, samples = await scrape(client)
            if check(samples):
                return samples
            await asyncio.sleep(0.05)


async def test_every_family_parses_with_its_type(offline: Offline) -> None:
    families, samples = await scrape(offline.client)
    assert {name: families.get(name) for name in FAMILIES} == FAMILIES
    backend = offline.server.settings.comfyui_urls[0]
    assert value(samples, "fastwan_backend_up", backend=backend) == 0  # never answers
    assert value(samples, "fastwan_backend_inflight", backend=backend) == 0
    assert value(samples, "fastwan_backend_jobs_done_total", backend=backend) == 0
    assert value(samples, "fastwan_backend_jobs_failed_total", backend=backend) == 0
    assert value(samples, "fastwan_queue_depth") == 0
    assert value(samples, "fastwan_database_errors_total", source="api") == 0


async def test_counts_follow_a_job_from_queue_to_completion(offline: Offline) -> None:
    client, workflow = offline.client, "fastwan_t2v"
    r = await client.post("/generate", json={"prompt": "a ladybug", **SMALL})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    _, samples = await scrape(client)
    assert value(samples, "fastwan_jobs", status="queued", workflow=workflow) == 1
    assert value(samples, "fastwan_queue_depth") == 1

    await offline.run(job_id, stage="loading models", progress=5.0)
    await offline.run(job_id, stage="sampling", progress=40.0)
    await offline.run(job_id, stage="storing output", progress=97.0)
    await offline.complete(job_id)

    def ended(s: Samples) -> bool:
        return (
            value(s, "fastwan_job_duration_seconds_count", workflow=workflow, status="completed")
            == 1
        )

    samples = await until(client, ended)
    assert value(samples, "fastwan_jobs", status="completed", workflow=workflow) == 1
    assert value(samples, "fastwan_jobs", status="queued", workflow=workflow) is None
    assert value(samples, "fastwan_queue_depth") == 0
    assert value(samples, "fastwan_job_queue_seconds_count", workflow=workflow) == 1
    for stage in ("loading models", "sampling", "storing output"):
        count = value(samples, "fastwan_job_stage_seconds_count", workflow=workflow, stage=stage)
        assert count == 1, stage
    # "done" is where a job ends, not a stage it spends time in.
    done = value(samples, "fastwan_job_stage_seconds_count", workflow=workflow, stage="done")
    assert done is None


async def test_a_failure_counts_against_its_backend(offline: Offline) -> None:
    client = offline.client
    backend = offline.server.settings.comfyui_urls[0]
    job_id = (await client.post("/generate", json={"prompt": "x", **SMALL})).json()["job_id"]
    await offline.set(job_id, backend=backend)
    await offline.run(job_id)
    await offline.fail(job_id)

    def failed(s: Samples) -> bool:
        return value(s, "fastwan_backend_jobs_failed_total", backend=backend) == 1

    samples = await until(client, failed)
    workflow = "fastwan_t2v"
    assert value(samples, "fastwan_jobs", status="failed", workflow=workflow) == 1
    assert value(samples, "fastwan_job_stage_seconds_count", workflow=workflow, stage="sampling")
    assert value(samples, "fastwan_job_duration_seconds_count", workflow=workflow, status="failed")


async def test_http_series_are_named_by_route_template(offline: Offline) -> None:
    client = offline.client
    job_id = (await client.post("/generate", json={"prompt": "x", **SMALL})).json()["job_id"]
    assert (await client.get(f"/api/jobs/{job_id}")).status_code == 200
    assert (await client.get("/api/jobs/no-such-job")).status_code == 404
    assert (await client.get(f"/nowhere/{job_id}")).status_code == 404
    r = await client.get("/metrics")
    assert job_id not in r.text and "no-such-job" not in r.text
    _, samples = await scrape(client)
    route = "/api/jobs/{job_id}"
    counts = "fastwan_http_requests_total"
    assert value(samples, counts, method="GET", route=route, status="200") == 1
    assert value(samples, counts, method="GET", route=route, status="404") == 1
    assert value(samples, counts, method="GET", route="unmatched", status="404") == 1
    assert value(samples, counts, method="POST", route="/generate", status="200") == 1
    latency = "fastwan_http_request_duration_seconds_count"
    assert value(samples, latency, method="GET", route=route) == 2


async def test_apps_in_one_process_keep_their_own_registry(offline: Offline, tmp_path) -> None:
    await offline.client.post("/generate", json={"prompt": "x", **SMALL})
    async with proxy_server(settings_for(tmp_path / "other")) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            _, samples = await scrape(client)
    counts = "fastwan_http_requests_total"
    assert value(samples, counts, method="POST", route="/generate", status="200") is None
    assert value(samples, "fastwan_queue_depth") == 0


async def test_openmetrics_when_the_scraper_asks_for_it(offline: Offline) -> None:
    r = await offline.client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


async def test_admin_only_when_keys_are_configured(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, api_keys=["alice:user-key"], admin_api_keys=["ops:op-key"])
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/metrics")).status_code == 401
            user = await client.get("/metrics", headers={"Authorization": "Bearer user-key"})
            assert user.status_code == 403 and "admin" in user.json()["error"]
            families, _ = await scrape(client, authorization="Bearer op-key")
            assert set(FAMILIES) <= set(families)
