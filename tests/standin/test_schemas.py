"""schemas.json against the real server's /object_info (shared reference)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyui.standin.schemas import V3_CLASSES, load_static_schemas
from tests.support import require_shared

from .conftest import REFERENCE

OBJECT_INFO = REFERENCE / "object_info.json"
# File combos: empty in schemas.json, filled from the data dir at run time.
DYNAMIC = {
    ("UNETLoader", "unet_name"),
    ("CLIPLoader", "clip_name"),
    ("VAELoader", "vae_name"),
    ("LoraLoaderModelOnly", "lora_name"),
    ("LoadImage", "image"),
    ("LoadVideo", "file"),
}

require_shared(OBJECT_INFO)


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    return json.loads(OBJECT_INFO.read_text())


def test_every_class_matches_the_real_schema(real: dict[str, Any]) -> None:
    ours = load_static_schemas()
    assert len(ours) == 19
    for name, info in ours.items():
        reference = real[name]
        assert info["input_order"] == reference["input_order"], name
        assert info["output"] == reference["output"], name
        assert info["output_node"] == reference["output_node"], name
        for category in ("required", "optional", "hidden"):
            mine = info["input"].get(category, {})
            theirs = reference["input"].get(category, {})
            assert set(mine) == set(theirs), (name, category)
            for input_name, spec in mine.items():
                if (name, input_name) in DYNAMIC:
                    continue
                assert spec == theirs[input_name], (name, input_name)


def test_v3_classes_are_the_ones_with_v3_metadata(real: dict[str, Any]) -> None:
    for name in load_static_schemas():
        looks_v3 = {"api_node", "deprecated", "experimental"} <= set(real[name])
        assert looks_v3 == (name in V3_CLASSES), name


def test_combo_style_follows_the_node_api(real: dict[str, Any]) -> None:
    assert real["SaveVideo"]["input"]["required"]["format"][0] == "COMBO"
    assert isinstance(real["KSampler"]["input"]["required"]["sampler_name"][0], list)
