"""The download manager against a loopback file server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from proxy.errors import Conflict, NotFound
from proxy.modelfiles.downloads import DownloadManager, ModelsDirNotConfigured, target_dir
from proxy.modelfiles.store import DownloadRecord, DownloadStatus
from proxy.settings import Settings

from .conftest import DatabaseFactory, ManagerFactory
from .fileserver import FileServer
from .helpers import HF_TOKEN, REPO, Blob, entry, make_blob, manifest_of

DONE = (DownloadStatus.completed, DownloadStatus.failed, DownloadStatus.cancelled)
TIMEOUT_S = 15.0


def serve(server: FileServer, blob: Blob, name: str, mode: str = "normal", **kw: object):
    return server.add(f"{REPO}/files/{name}", blob.data, mode=mode, **kw)


def target(settings: Settings, name: str, folder: str = "vae") -> Path:
    assert settings.models_dir is not None
    return settings.models_dir / folder / name


async def finish(manager: DownloadManager, record: DownloadRecord) -> DownloadRecord:
    return await manager.wait_for(record.id, DONE, TIMEOUT_S)


async def test_full_download_verifies_and_renames(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    serve(server, blob, "a.safetensors")
    manager = await make_manager(manifest_of(entry("a", blob=blob)))

    started = await manager.start_download("a")
    assert started.status == DownloadStatus.queued
    assert started.source_url == f"{server.url}/{REPO}/resolve/main/files/a.safetensors"
    done = await finish(manager, started)

    assert done.status == DownloadStatus.completed, done.error
    assert done.bytes_done == done.bytes_total == len(blob.data)
    assert done.percent == 100.0
    assert done.sha256 == blob.sha256
    assert done.finished_at is not None and done.finished_at >= done.created_at
    path = target(settings, "a.safetensors")
    assert path.read_bytes() == blob.data
    assert not path.with_name("a.safetensors.part").exists()
    [request] = server.requests
    assert request.path == f"/{REPO}/resolve/main/files/a.safetensors"
    assert request.headers["authorization"] == f"Bearer {HF_TOKEN}"
    assert "range" not in request.headers
    assert [r.id for r in await manager.list()] == [started.id]


async def test_resume_after_connection_drop(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob(400 * 1024)
    serve(server, blob, "a.safetensors", mode="drop_once")
    manager = await make_manager(manifest_of(entry("a", blob=blob)))

    done = await finish(manager, await manager.start_download("a"))

    assert done.status == DownloadStatus.completed, done.error
    first, second = server.requests
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={len(blob.data) // 2}-"
    assert target(settings, "a.safetensors").read_bytes() == blob.data


async def test_server_ignoring_range_restarts_from_zero(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    serve(server, blob, "a.safetensors", mode="ignore_range")
    path = target(settings, "a.safetensors")
    path.parent.mkdir(parents=True)
    path.with_name("a.safetensors.part").write_bytes(blob.data[:100_000])
    manager = await make_manager(manifest_of(entry("a", blob=blob)))

    done = await finish(manager, await manager.start_download("a"))

    assert done.status == DownloadStatus.completed, done.error
    [request] = server.requests
    assert request.headers["range"] == "bytes=100000-"
    assert path.read_bytes() == blob.data  # not the first 100 KB twice


async def test_transient_503_is_retried(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    serve(server, blob, "a.safetensors", mode="fail_once")
    manager = await make_manager(manifest_of(entry("a", blob=blob)))
    done = await finish(manager, await manager.start_download("a"))
    assert done.status == DownloadStatus.completed, done.error
    assert len(server.requests) == 2
    assert target(settings, "a.safetensors").read_bytes() == blob.data


async def test_checksum_mismatch_fails_and_leaves_no_file(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    other = make_blob()
    serve(server, other, "a.safetensors")
    bad = entry("a", blob=blob)  # size matches, content does not
    manager = await make_manager(manifest_of(bad))

    done = await finish(manager, await manager.start_download("a"))

    assert done.status == DownloadStatus.failed
    assert done.error is not None
    assert f"expected sha256 {blob.sha256}" in done.error
    assert f"got {other.sha256}" in done.error
    assert "partial file was deleted" in done.error
    folder = target(settings, "a.safetensors").parent
    assert list(folder.iterdir()) == []


async def test_not_found_gives_a_readable_message(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    manager = await make_manager(manifest_of(entry("a", blob=make_blob())))
    done = await finish(manager, await manager.start_download("a"))
    assert done.status == DownloadStatus.failed
    url = f"{server.url}/{REPO}/resolve/main/files/a.safetensors"
    assert done.error is not None
    assert f"a.safetensors was not found at {url} (HTTP 404)" in done.error
    assert "comfyui/models.json" in done.error


async def test_size_disagreement_with_source_fails(
    server: FileServer, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    serve(server, make_blob(1000), "a.safetensors")
    manager = await make_manager(manifest_of(entry("a", blob=blob, sha=False)))
    done = await finish(manager, await manager.start_download("a"))
    assert done.status == DownloadStatus.failed
    assert done.error is not None
    assert f"serves 1000 bytes, but the manifest expects {len(blob.data)}" in done.error


async def test_unknown_size_and_hash_trust_content_length(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    serve(server, blob, "a.safetensors")
    manager = await make_manager(manifest_of(entry("a", blob=blob, size=False, sha=False)))
    done = await finish(manager, await manager.start_download("a"))
    assert done.status == DownloadStatus.completed, done.error
    assert done.bytes_total == len(blob.data)
    assert done.sha256 == blob.sha256  # recorded, so the manifest can be filled in
    assert target(settings, "a.safetensors").read_bytes() == blob.data


@pytest.mark.parametrize("etag_matches", [True, False])
async def test_hugging_face_linked_etag_is_checked(
    server: FileServer, settings: Settings, make_manager: ManagerFactory, etag_matches: bool
) -> None:
    blob = make_blob()
    etag = blob.sha256 if etag_matches else hashlib.sha256(b"other").hexdigest()
    serve(server, blob, "a.safetensors", mode="redirect", linked_etag=etag)
    manager = await make_manager(manifest_of(entry("a", blob=blob, sha=False)))

    done = await finish(manager, await manager.start_download("a"))

    assert [r.path.split("/")[1] for r in server.requests] == ["test-org", "cdn"]
    if etag_matches:
        assert done.status == DownloadStatus.completed, done.error
        assert target(settings, "a.safetensors").read_bytes() == blob.data
    else:
        assert done.status == DownloadStatus.failed
        assert done.error is not None
        assert f"expected sha256 {etag} (from Hugging Face's X-Linked-Etag)" in done.error


async def test_plain_url_source(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    server.add("plain/a.bin", blob.data)
    source = {"type": "url", "url": f"{server.url}/plain/a.bin"}
    manager = await make_manager(manifest_of(entry("a", blob=blob, source=source)))
    done = await finish(manager, await manager.start_download("a"))
    assert done.status == DownloadStatus.completed, done.error
    assert "authorization" not in server.requests[0].headers  # tokens go to HF only
    assert target(settings, "a.safetensors").read_bytes() == blob.data


async def test_no_target_dir_is_a_clear_error(
    tmp_path: Path, server: FileServer, make_manager: ManagerFactory
) -> None:
    bare = Settings(data_dir=tmp_path, hf_endpoint=server.url)
    manager = await make_manager(manifest_of(entry("a", blob=make_blob())), settings=bare)
    with pytest.raises(ModelsDirNotConfigured) as info:
        await manager.start_download("a")
    assert "MODELS_DIR" in info.value.message and "COMFYUI_DIR" in info.value.message
    assert info.value.status_code == 503
    assert await manager.list() == []
    assert server.requests == []

    comfy = Settings(data_dir=tmp_path, comfyui_dir=tmp_path / "ComfyUI")
    assert target_dir(comfy, "vae") == tmp_path / "ComfyUI" / "models" / "vae"
    both = Settings(comfyui_dir=tmp_path / "ComfyUI", models_dir=tmp_path / "m")
    assert target_dir(both, "loras") == tmp_path / "m" / "loras"


async def test_unknown_model_id(make_manager: ManagerFactory) -> None:
    manager = await make_manager(manifest_of(entry("a"), entry("b", folder="loras")))
    with pytest.raises(NotFound, match="Known ids: a, b"):
        await manager.start_download("nope")
    with pytest.raises(NotFound):
        await manager.get("0" * 32)


async def test_present_file_without_hash_completes_without_downloading(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    path = target(settings, "a.safetensors")
    path.parent.mkdir(parents=True)
    path.write_bytes(blob.data)
    manager = await make_manager(manifest_of(entry("a", blob=blob, sha=False)))

    record = await manager.start_download("a")
    assert record.status == DownloadStatus.completed
    assert record.phase == "already present"
    again = await manager.start_download("a")
    assert again.id == record.id  # the same completed record, not a new one each time
    assert server.requests == []


async def test_present_file_with_hash_is_verified_once(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    path = target(settings, "a.safetensors")
    path.parent.mkdir(parents=True)
    path.write_bytes(blob.data)
    manager = await make_manager(manifest_of(entry("a", blob=blob)))

    verified = await finish(manager, await manager.start_download("a"))
    assert verified.status == DownloadStatus.completed, verified.error
    assert verified.phase == "already present"
    assert verified.sha256 == blob.sha256
    # Known good now: the next request answers at once from the record.
    again = await manager.start_download("a")
    assert (again.id, again.status) == (verified.id, DownloadStatus.completed)
    assert server.requests == []


async def test_different_existing_file_is_left_alone(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    impostor = make_blob(len(blob.data))
    path = target(settings, "a.safetensors")
    path.parent.mkdir(parents=True)
    path.write_bytes(impostor.data)
    manager = await make_manager(manifest_of(entry("a", blob=blob)))

    done = await finish(manager, await manager.start_download("a"))

    assert done.status == DownloadStatus.failed
    assert done.error is not None
    assert f"A different file already exists at {path}" in done.error
    assert "Move or delete it" in done.error
    assert path.read_bytes() == impostor.data
    assert server.requests == []


async def test_second_start_returns_the_running_download_and_cancel_cleans_up(
    server: FileServer, settings: Settings, make_manager: ManagerFactory
) -> None:
    blob = make_blob()
    served = serve(server, blob, "a.safetensors", mode="stall")
    manager = await make_manager(manifest_of(entry("a", blob=blob)), progress_interval_s=0)
    half = len(blob.data) // 2

    first = await manager.start_download("a")
    running = await manager.wait_for(
        first.id, timeout_s=TIMEOUT_S, until=lambda r: r.bytes_done >= half
    )
    assert running.status == DownloadStatus.running
    assert running.percent == pytest.approx(50.0, abs=0.1)
    again = await manager.start_download("a")
    assert again.id == first.id

    cancelled = await manager.cancel(first.id)
    assert cancelled.status == DownloadStatus.cancelled
    assert cancelled.finished_at is not None
    assert list(target(settings, "a.safetensors").parent.iterdir()) == []
    with pytest.raises(Conflict, match="already cancelled"):
        await manager.cancel(first.id)
    assert served.served == 1


async def test_restart_resumes_a_running_download(
    server: FileServer,
    settings: Settings,
    http: httpx.AsyncClient,
    open_database: DatabaseFactory,
    make_manager: ManagerFactory,
) -> None:
    blob = make_blob(500 * 1024)
    served = serve(server, blob, "a.safetensors", mode="stall")
    manifest = manifest_of(entry("a", blob=blob))
    half = len(blob.data) // 2
    old = await make_manager(manifest, progress_interval_s=0)
    record = await old.start_download("a")
    await old.wait_for(record.id, timeout_s=TIMEOUT_S, until=lambda r: r.bytes_done >= half)

    await old.close()  # the proxy stops mid-download

    path = target(settings, "a.safetensors")
    left = await old.get(record.id)
    assert left.status == DownloadStatus.queued
    assert "shutdown" in (left.phase or "")
    assert path.with_name("a.safetensors.part").stat().st_size == half
    assert not path.exists()

    served.release.set()  # the server would have finished; the new run must still resume
    new = await make_manager(manifest, database=await open_database())
    done = await new.wait_for(record.id, DONE, TIMEOUT_S)

    assert done.status == DownloadStatus.completed, done.error
    assert done.id == record.id
    assert server.requests[-1].headers["range"] == f"bytes={half}-"
    assert path.read_bytes() == blob.data


async def test_records_left_running_by_a_crash_are_resumed(
    server: FileServer, settings: Settings, database, make_manager: ManagerFactory
) -> None:
    from proxy.modelfiles.store import DownloadStore

    blob = make_blob()
    serve(server, blob, "a.safetensors")
    path = target(settings, "a.safetensors")
    path.parent.mkdir(parents=True)
    path.with_name("a.safetensors.part").write_bytes(blob.data[:1234])
    # What a killed proxy leaves behind: a record still marked running.
    crashed = await DownloadStore(database).insert(
        model_id="a",
        filename="a.safetensors",
        folder="vae",
        target_path=str(path),
        source_url=f"{server.url}/{REPO}/resolve/main/files/a.safetensors",
        status=DownloadStatus.running.value,
        bytes_done=1234,
    )

    manager = await make_manager(manifest_of(entry("a", blob=blob)))
    done = await manager.wait_for(crashed.id, DONE, TIMEOUT_S)

    assert done.status == DownloadStatus.completed, done.error
    assert server.requests[0].headers["range"] == "bytes=1234-"
    assert path.read_bytes() == blob.data


async def test_progress_is_throttled(server: FileServer, make_manager: ManagerFactory) -> None:
    blob = make_blob(400 * 1024)  # "slow": 50 chunks of 8 KB, 20 ms apart, about 1 s
    serve(server, blob, "a.safetensors", mode="slow")
    manager = await make_manager(manifest_of(entry("a", blob=blob)), progress_interval_s=0.5)
    writes: list[dict[str, object]] = []
    original = manager.store.update

    async def spy(download_id: str, **values: object) -> None:
        writes.append(values)
        await original(download_id, **values)

    manager.store.update = spy  # type: ignore[method-assign]
    done = await finish(manager, await manager.start_download("a"))

    assert done.status == DownloadStatus.completed, done.error
    progress = [w for w in writes if w.get("phase") == "downloading"]
    assert 1 <= len(progress) <= 5, progress
    assert any((w.get("speed_bytes_per_s") or 0) > 0 for w in progress)


async def test_list_and_latest_by_model(server: FileServer, make_manager: ManagerFactory) -> None:
    a, b = make_blob(), make_blob()
    serve(server, a, "a.safetensors")
    serve(server, b, "b.safetensors")
    manager = await make_manager(manifest_of(entry("a", blob=a), entry("b", blob=b)))
    ra = await finish(manager, await manager.start_download("a"))
    rb = await finish(manager, await manager.start_download("b"))

    assert [r.id for r in await manager.list()] == [rb.id, ra.id]
    assert [r.id for r in await manager.list(model_id="a")] == [ra.id]
    latest = await manager.latest_by_model()
    assert {k: v.id for k, v in latest.items()} == {"a": ra.id, "b": rb.id}
