"""The manifest loader: the shipped file, lookups, and clear errors for bad entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.errors import NotFound
from proxy.modelfiles.manifest import (
    DEFAULT_MANIFEST_PATH,
    HuggingFaceSource,
    ManifestError,
    load_manifest,
    parse_manifest,
)

from .helpers import entry


def test_shipped_manifest_loads() -> None:
    manifest = load_manifest(DEFAULT_MANIFEST_PATH)
    assert manifest.ids == ["wan2.2-ti2v-5b", "umt5-xxl-fp8", "wan2.2-vae", "fastwan-lora"]
    assert {m.folder for m in manifest.models} == {
        "diffusion_models",
        "text_encoders",
        "vae",
        "loras",
    }
    vae = manifest.get("wan2.2-vae")
    assert isinstance(vae.source, HuggingFaceSource)
    assert vae.source.revision == "main"
    assert [m.id for m in manifest.required_for("fastwan_t2v")] == manifest.ids
    assert manifest.required_for("no_such_workflow") == []
    assert "fastwan_i2v" in manifest.workflows


def test_unknown_id_lists_known_ids() -> None:
    manifest = parse_manifest({"models": [entry("a"), entry("b", folder="loras")]})
    with pytest.raises(NotFound) as info:
        manifest.get("zzz")
    assert "'zzz'" in info.value.message
    assert "a, b" in info.value.message
    assert info.value.detail["known_ids"] == ["a", "b"]


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [
        ("filename", "sub/x.safetensors", "path separator"),
        ("filename", "sub\\x.safetensors", "path separator"),
        ("filename", "..", "'..'"),
        ("filename", "x..safetensors", "'..'"),
        ("filename", "", "non-empty"),
        ("folder", "models/vae", "path separator"),
        ("folder", "..", "'..'"),
        ("sha256", "abc", "64 hexadecimal"),
        ("size_bytes", -1, "greater than or equal to 0"),
    ],
)
def test_bad_entry_is_refused_with_its_location(field: str, value: Any, expect: str) -> None:
    bad = entry("broken")
    bad[field] = value
    with pytest.raises(ManifestError) as info:
        parse_manifest({"models": [entry("fine"), bad]})
    message = info.value.message
    assert f"models[1] (id 'broken').{field}" in message
    assert expect in message


def test_several_problems_are_reported_together() -> None:
    bad = entry("broken")
    bad["filename"] = "../escape"
    bad["sha256"] = "nothex"
    with pytest.raises(ManifestError) as info:
        parse_manifest({"models": [bad]})
    assert info.value.detail["problems"] == [
        "models[0] (id 'broken').filename: filename '../escape' must not contain a path separator",
        "models[0] (id 'broken').sha256: sha256 must be 64 hexadecimal characters",
    ]


def test_duplicates_and_unknown_keys_are_refused() -> None:
    with pytest.raises(ManifestError, match="'a' appears twice"):
        parse_manifest({"models": [entry("a"), entry("a", filename="other.bin")]})
    with pytest.raises(ManifestError, match="vae/same.bin is listed twice"):
        parse_manifest(
            {"models": [entry("a", filename="same.bin"), entry("b", filename="same.bin")]}
        )
    typo = entry("a")
    typo["sha_256"] = "x"
    with pytest.raises(ManifestError, match=r"models\[0\] \(id 'a'\)\.sha_256"):
        parse_manifest({"models": [typo]})


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ({"type": "url", "url": "https://example.com/x.bin"}, True),
        ({"type": "url", "url": "http://127.0.0.1:8000/x.bin"}, True),
        ({"type": "url", "url": "http://localhost/x.bin"}, True),
        ({"type": "url", "url": "http://example.com/x.bin"}, False),
        ({"type": "url", "url": "ftp://example.com/x.bin"}, False),
        ({"type": "huggingface", "repo": "owner/name", "path": "a/b.bin"}, True),
        ({"type": "huggingface", "repo": "no-owner", "path": "b.bin"}, False),
        ({"type": "huggingface", "repo": "o/n", "path": "../b.bin"}, False),
        ({"type": "s3", "url": "s3://bucket/x"}, False),
    ],
)
def test_sources(source: dict[str, Any], ok: bool) -> None:
    data = {"models": [entry("a", source=source)]}
    if ok:
        assert parse_manifest(data).models[0].source.type == source["type"]
    else:
        with pytest.raises(ManifestError, match=r"models\[0\] \(id 'a'\)\.source"):
            parse_manifest(data)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="Cannot read the model manifest"):
        load_manifest(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"models": [\n  {,}\n]}')
    with pytest.raises(ManifestError, match=r"not valid JSON: .*line 2"):
        load_manifest(broken)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"comment": "test", "models": [entry("a")]}))
    assert load_manifest(good).ids == ["a"]
