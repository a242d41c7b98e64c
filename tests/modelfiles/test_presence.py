"""Presence is pure: ComfyUI's listings in, present/ready/missing out."""

from __future__ import annotations

from proxy.modelfiles.presence import compute_presence

from .helpers import entry, manifest_of

MANIFEST = manifest_of(
    entry("model", folder="diffusion_models", workflows=("t2v", "i2v")),
    entry("vae", folder="vae", workflows=("t2v", "i2v")),
    entry("lora", folder="loras", workflows=("t2v",)),
)


def test_everything_present() -> None:
    report = compute_presence(
        MANIFEST,
        {
            "diffusion_models": ["model.safetensors", "other.safetensors"],
            "vae": ["vae.safetensors"],
            "loras": ["lora.safetensors"],
        },
    )
    assert report.known
    assert report.models == {"model": True, "vae": True, "lora": True}
    assert all(w.ready for w in report.workflows.values())
    assert report.workflows["t2v"].missing == []


def test_missing_file_blocks_only_workflows_that_need_it() -> None:
    report = compute_presence(
        MANIFEST,
        {
            "diffusion_models": ["model.safetensors"],
            "vae": ["vae.safetensors"],
            "loras": [],
        },
    )
    assert report.models["lora"] is False
    assert report.workflows["t2v"].ready is False
    assert report.workflows["t2v"].missing == ["lora.safetensors"]
    assert report.workflows["i2v"].ready is True


def test_names_must_match_exactly() -> None:
    # ComfyUI lists files in sub-folders as "sub/name"; a workflow naming "name" fails there.
    report = compute_presence(
        MANIFEST,
        {
            "diffusion_models": ["wan/model.safetensors", "MODEL.safetensors"],
            "vae": ["vae.safetensors"],
            "loras": ["lora.safetensors"],
        },
    )
    assert report.models["model"] is False


def test_unknown_listing_and_unlisted_folder() -> None:
    report = compute_presence(MANIFEST, None)
    assert not report.known
    assert set(report.models.values()) == {None}
    assert report.workflows["t2v"].ready is None
    assert report.workflows["t2v"].unknown == [
        "model.safetensors",
        "vae.safetensors",
        "lora.safetensors",
    ]

    partial = compute_presence(MANIFEST, {"vae": ["vae.safetensors"], "loras": []})
    assert partial.models == {"model": None, "vae": True, "lora": False}
    assert partial.workflows["t2v"].ready is False  # a known-missing file decides it
    assert partial.workflows["i2v"].ready is None
    assert partial.workflows["i2v"].unknown == ["model.safetensors"]
