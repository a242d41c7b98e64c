"""The translator every surface uses: the workflow's parameters under the surface's names,
values back in the workflow's names, and core errors naming the client's field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.api.surface import Surface
from proxy.errors import InvalidInput
from proxy.workflows import load_registry
from tests.support import REPO_ROOT

SEED = Surface("wan21", {"num_frames": "length", "guidance_scale": "cfg"})


@pytest.fixture(scope="module")
def t2v():
    return load_registry(REPO_ROOT / "workflows").get("fastwan_t2v")


def test_the_model_is_the_workflows_under_the_surface_names(t2v) -> None:
    model = SEED.model(t2v, "Body", doc="d")
    fields = model.model_fields
    assert {"num_frames", "guidance_scale", "prompt", "sampler"} <= set(fields)
    assert "length" not in fields and "cfg" not in fields
    # Type, range and description come from the declaration.
    assert fields["num_frames"].default == t2v.param("length").default
    assert fields["guidance_scale"].description == t2v.param("cfg").description
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"prompt": "x", "num_frames": 80})
    assert caught.value.errors()[0]["loc"] == ("num_frames",)
    with pytest.raises(ValidationError):
        model.model_validate({"prompt": "x", "length": 81})  # the workflow's name is not this one's


def test_a_parameter_added_to_the_workflow_appears_on_the_surface(t2v) -> None:
    names = {SEED.client_name(p) for p in t2v.fields()}
    assert names == set(SEED.model(t2v, "Body", doc="d").model_fields)


def test_values_go_back_in_the_workflows_names(t2v) -> None:
    model = SEED.model(t2v, "Body", doc="d", defaults={"width": 512})
    body = model.model_validate({"prompt": "x", "num_frames": 81, "guidance_scale": None})
    # Sent: renamed. Null: not given. Omitted: the surface's own default only.
    assert SEED.values(body) == {"prompt": "x", "length": 81, "width": 512}
    assert SEED.values({"num_frames": 5, "seed": None}) == {"length": 5}


def test_core_errors_name_the_field_the_client_sent() -> None:
    with pytest.raises(InvalidInput) as caught:
        with SEED.errors():
            raise InvalidInput("length", "must be 4k+1")
    assert caught.value.field == "num_frames"
    assert caught.value.message == "num_frames: must be 4k+1"
    untouched = InvalidInput("prompt", "is required")
    with pytest.raises(InvalidInput) as caught:
        with SEED.errors():
            raise untouched
    assert caught.value is untouched
    assert SEED.translate(InvalidInput("cfg.0", "bad")).field == "guidance_scale.0"
