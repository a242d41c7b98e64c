"""The one way a stored file is found and served: plain names of finished files only."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import NotFound
from proxy.media.storage import OutputRecord, OutputStore, plain_name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".hidden",
        "../proxy.db",
        "a/b.mp4",
        "a\\b.mp4",
        "x.mp4.part",
        "a\x00.mp4",
        "a\n.mp4",
        "a\x7f.mp4",
        "x" * 252 + ".mp4",
    ],
)
def test_names_that_are_not_outputs(name: str) -> None:
    assert not plain_name(name)


def test_plain_names() -> None:
    assert plain_name("job.mp4") and plain_name("final_b_0123.mp4") and plain_name("x" * 255)


async def test_open_finds_finished_files_only(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    (tmp_path / "a.mp4").write_bytes(b"video")
    (tmp_path / "b.mp4.part").write_bytes(b"half")
    stored = await store.open("a.mp4")
    assert stored.path == tmp_path / "a.mp4" and stored.content_type == "video/mp4"
    for name in ("b.mp4.part", "missing.mp4", "../a.mp4", "x" * 300):
        with pytest.raises(NotFound):
            await store.open(name)


async def test_open_output_names_the_owner_when_the_file_is_gone(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    record = OutputRecord(
        filename="gone.mp4", content_type="video/mp4", size_bytes=1, node_id="9", comfy_filename="x"
    )
    with pytest.raises(NotFound, match="the output of job j1 is missing from storage"):
        await store.open_output(record, "job j1")
    with pytest.raises(NotFound, match="job j1 has no output"):
        await store.open_output(None, "job j1")
    (tmp_path / "gone.mp4").write_bytes(b"back")
    assert (await store.open_output(record, "job j1")).content_type == "video/mp4"
