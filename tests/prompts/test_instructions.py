from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from proxy.prompts import instructions
from proxy.prompts.llm import extract_json_object
from proxy.prompts.service import (
    EnhanceReply,
    InitializeReply,
    ScenesReply,
    UpdateReply,
    VariationsReply,
)


@pytest.mark.parametrize(
    ("system", "model"),
    [
        (instructions.INITIALIZE, InitializeReply),
        (instructions.UPDATE, UpdateReply),
        (instructions.ENHANCE, EnhanceReply),
        (instructions.VARIATIONS, VariationsReply),
        (instructions.SCENES, ScenesReply),
    ],
)
def test_the_shape_shown_to_the_model_is_the_shape_we_validate(
    system: str, model: type[BaseModel]
) -> None:
    example = system.rstrip().splitlines()[-1]
    model.model_validate(extract_json_object(example))
    assert system.startswith(instructions.GUIDE)


def test_guide_asks_for_what_wan_reads_well() -> None:
    guide = instructions.GUIDE.lower()
    for topic in ("subject", "action", "scene", "light", "camera", "style", "one paragraph"):
        assert topic in guide
    assert str(instructions.TARGET_WORDS) in guide


def test_message_builders() -> None:
    messages = instructions.update_messages("a fox", {"subject": "fox"}, "make it snow")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == instructions.UPDATE
    assert "a fox" in messages[1]["content"] and '"subject": "fox"' in messages[1]["content"]
    assert "make it snow" in messages[1]["content"]

    variations = instructions.variations_messages(["one", "two"], 1)[1]["content"]
    assert "1. one\n2. two" in variations and re.search(r"\b1 new prompt\.", variations)

    scenes = instructions.scenes_messages("a brief", ["hook", "cta"])[1]["content"]
    assert '"hook", "cta"' in scenes and "a brief" in scenes
