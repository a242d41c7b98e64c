"""load_registry over both declaration forms, templates without a sidecar, and aliases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import create_model

from proxy.errors import InvalidInput
from proxy.workflows import load_registry
from proxy.workflows.marked import reference_object_info

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
LEGACY = Path(__file__).resolve().parent / "legacy"


def write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def t2v_graph() -> dict[str, Any]:
    return json.loads((WORKFLOWS / "fastwan_t2v.json").read_text())


def test_a_marked_template_without_a_sidecar_is_a_workflow(tmp_path):
    write(tmp_path / "plain.json", t2v_graph())
    registry = load_registry(tmp_path)
    assert registry.broken == {}
    flow = registry.get("plain")
    assert (flow.spec.title, flow.spec.kind, flow.spec.output_node) == (
        "plain",
        "text-to-video",
        "58",
    )
    assert flow.param("fps").type == "float"  # ComfyUI's type, no sidecar to narrow it
    resolved = flow.resolve({"prompt": "a fox", "steps": 3})
    assert flow.fill(resolved)["3"]["inputs"]["steps"] == 3


def test_a_template_that_marks_nothing_and_has_no_sidecar_is_not_a_workflow(tmp_path):
    graph = json.loads((LEGACY / "fastwan_t2v.json").read_text())
    write(tmp_path / "unmarked.json", graph)
    write(tmp_path / "notes.json", ["not", "a", "graph"])
    registry = load_registry(tmp_path)
    assert registry.workflows == {} and registry.broken == {}


def test_both_declaration_forms_load_side_by_side(tmp_path):
    shutil.copy(LEGACY / "fastwan_t2v.json", tmp_path / "old.json")
    shutil.copy(LEGACY / "fastwan_t2v.params.json", tmp_path / "old.params.json")
    shutil.copy(WORKFLOWS / "fastwan_i2v.json", tmp_path / "fastwan_i2v.json")
    shutil.copy(WORKFLOWS / "fastwan_i2v.params.json", tmp_path / "fastwan_i2v.params.json")
    registry = load_registry(tmp_path)
    assert registry.broken == {}
    # The old form names itself in its declaration; the new one takes the file's name.
    assert registry.names() == ["fastwan_i2v", "fastwan_t2v"]


def test_a_broken_template_or_sidecar_is_reported_by_name(tmp_path):
    write(tmp_path / "ui.json", {"nodes": [], "links": []})
    write(tmp_path / "ui.params.json", {"title": "UI"})
    write(tmp_path / "lonely.params.json", {"params": {}})
    write(tmp_path / "bad.json", t2v_graph())
    write(tmp_path / "bad.params.json", {"params": {"steps": {"max": 100000}}})
    registry = load_registry(tmp_path)
    # The editor's UI format is converted first: an empty graph then has no output node.
    assert "no output node" in registry.broken["ui"][0]
    assert "cannot read lonely.json" in registry.broken["lonely"][0]
    assert registry.broken["bad"] == [
        "sidecar: steps: max 100000 widens ComfyUI's max 10000 "
        '(node 3 "KSampler $seed=seed $steps=steps $cfg=cfg $sampler=sampler_name '
        '$scheduler=scheduler" (KSampler))'
    ]


def test_the_object_info_given_is_the_one_used(tmp_path):
    shutil.copy(WORKFLOWS / "fastwan_t2v.json", tmp_path / "fastwan_t2v.json")
    shutil.copy(WORKFLOWS / "fastwan_t2v.params.json", tmp_path / "fastwan_t2v.params.json")
    info = dict(reference_object_info())
    del info["KSampler"]
    registry = load_registry(tmp_path, object_info=info)
    assert "class KSampler is not in ComfyUI's /object_info" in registry.broken["fastwan_t2v"][0]
    info = json.loads(json.dumps(reference_object_info()))
    info["ModelSamplingSD3"]["input"]["required"]["shift"][1]["max"] = 50.0  # another version
    flow = load_registry(tmp_path, object_info=info).get("fastwan_t2v")
    assert flow.param("shift").max == 50.0
    info["KSampler"]["input"]["required"]["steps"][1]["max"] = 50  # below the sidecar's 100
    problems = load_registry(tmp_path, object_info=info).broken["fastwan_t2v"]
    assert problems[0].startswith("sidecar: steps: max 100 widens ComfyUI's max 50")


@pytest.fixture
def aliased(tmp_path):
    write(tmp_path / "flow.json", t2v_graph())
    sidecar = json.loads((WORKFLOWS / "fastwan_t2v.params.json").read_text())
    sidecar["params"]["steps"]["aliases"] = ["num_inference_steps"]
    sidecar["params"]["prompt"]["aliases"] = ["text"]
    write(tmp_path / "flow.params.json", sidecar)
    return load_registry(tmp_path).get("flow")


def test_a_request_may_use_a_parameters_aliases(aliased):
    resolved = aliased.resolve({"text": "a fox", "num_inference_steps": 4})
    assert resolved["prompt"] == "a fox" and resolved["steps"] == 4
    assert "text" not in resolved and "num_inference_steps" not in resolved
    assert aliased.resolve({"prompt": "a fox", "steps": 5})["steps"] == 5
    with pytest.raises(InvalidInput) as err:
        aliased.resolve({"text": "a fox", "num_inference_steps": 0})
    assert err.value.field == "num_inference_steps"
    with pytest.raises(InvalidInput) as err:
        aliased.resolve({})
    assert err.value.field == "prompt"
    schema = aliased.request_model.model_json_schema()
    assert "steps" in schema["properties"] and schema["required"] == ["prompt"]
    assert aliased.describe()["parameters"][0]["aliases"] == ["text"]


def test_surface_models_built_from_fields_accept_aliases_too(aliased):
    model = create_model("Body", **aliased.fields())
    body = model.model_validate({"text": "a fox", "num_inference_steps": None, "seed": 3})
    assert body.model_dump(exclude_unset=True) == {"prompt": "a fox", "steps": None, "seed": 3}
    assert model.model_validate({"prompt": "x"}).steps == 8


def test_a_parameter_given_under_two_of_its_names_is_refused(aliased):
    with pytest.raises(InvalidInput) as err:
        aliased.resolve({"prompt": "a", "text": "b"})
    assert err.value.field == "text"
