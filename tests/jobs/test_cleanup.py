"""The cleanup's rules for ComfyUI's folders: exact names only, never outside the folder."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.jobs.backends import BackendPool
from proxy.jobs.cleanup import ComfyCleanup, ComfyFolders, UnsafePath, input_names, inside
from proxy.jobs.models import Job, JobStatus
from proxy.settings import Settings


def make_job(**fields: object) -> Job:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "id": "job-1",
        "workflow": "fastwan_i2v",
        "status": JobStatus.COMPLETED,
        "params": {},
        "created_at": now,
        "updated_at": now,
    }
    return Job.model_validate({**values, **fields})


@pytest.mark.parametrize(
    "name", ["", "../secret.txt", "fastwan/../../secret.txt", "/etc/passwd", "a\x00b", "."]
)
def test_a_name_that_escapes_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        inside(tmp_path / "output", name)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "output"
    (root / "fastwan").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("keep me")
    (root / "fastwan" / "link.mp4").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UnsafePath):
        inside(root, "fastwan/link.mp4")
    assert inside(root, "fastwan/job_00001_.mp4") == (root / "fastwan/job_00001_.mp4").resolve()


async def test_removal_takes_exactly_the_named_files_and_refuses_escapes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "output"
    (root / "fastwan").mkdir(parents=True)
    named = root / "fastwan" / "job-1_00001_.mp4"
    sibling = root / "fastwan" / "job-1_00002_.mp4"  # not named: stays (no globbing)
    outside = tmp_path / "secret.txt"
    for path in (named, sibling, outside):
        path.write_bytes(b"x")
    cleanup = ComfyCleanup(BackendPool([]), ComfyFolders(output=root))
    with caplog.at_level(logging.WARNING, logger="proxy.cleanup"):
        await cleanup.remove_files(
            root, ["fastwan/job-1_00001_.mp4", "../secret.txt", "fastwan/gone.mp4"], make_job()
        )
    assert not named.exists()
    assert sibling.exists() and outside.exists()
    assert any("refused" in r.getMessage() for r in caplog.records)


async def test_without_folders_nothing_on_disk_is_touched(tmp_path: Path) -> None:
    upload = tmp_path / "input" / "fastwan_abc.png"
    upload.parent.mkdir()
    upload.write_bytes(b"x")
    job = make_job(inputs={"image": {"stored": "abc.png", "upload_name": "fastwan_abc.png"}})
    cleanup = ComfyCleanup(BackendPool([]), ComfyFolders())
    await cleanup.deleted(job)
    await cleanup.idle()
    assert upload.exists()
    assert input_names(job) == ["fastwan_abc.png"]


def test_folders_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(comfyui_output_dir=tmp_path / "o", comfyui_input_dir=tmp_path / "i")
    assert ComfyFolders.from_settings(settings) == ComfyFolders(tmp_path / "o", tmp_path / "i")
    assert ComfyFolders.from_settings(Settings()) == ComfyFolders(None, None)
    assert Settings.from_env({"JOB_RETENTION_DAYS": "7"}).job_retention_days == 7.0
    assert Settings().job_retention_days is None


def test_up_hands_the_folders_of_the_comfyui_it_started_to_the_proxy(tmp_path: Path) -> None:
    from proxy.__main__ import folders_of
    from proxy.launcher import ManagedProcess

    child = ManagedProcess(
        "standin", None, "http://127.0.0.1:1", tmp_path / "output", tmp_path / "input"
    )
    assert folders_of(child, Settings()) == {
        "comfyui_output_dir": tmp_path / "output",
        "comfyui_input_dir": tmp_path / "input",
    }
    # Set explicitly, the settings win.
    mine = Settings(comfyui_output_dir=tmp_path / "mine")
    assert folders_of(child, mine)["comfyui_output_dir"] == tmp_path / "mine"
