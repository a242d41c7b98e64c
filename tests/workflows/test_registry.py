import json
import shutil
from pathlib import Path

import pytest

from proxy.errors import InvalidInput, NotFound
from proxy.workflows import load_registry

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
# The node-id declarations the shipped workflows had before they were marked in the graph.
LEGACY = Path(__file__).resolve().parent / "legacy"


@pytest.fixture(scope="module")
def registry():
    return load_registry(WORKFLOWS)


def test_ships_fastwan_templates(registry):
    assert {"fastwan_t2v", "fastwan_i2v"} <= set(registry.names())
    assert registry.broken == {}


def test_t2v_graph_is_the_wan22_5b_graph_with_the_fastwan_lora(registry):
    graph = registry.get("fastwan_t2v").graph
    classes = {node_id: node["class_type"] for node_id, node in graph.items()}
    assert classes["3"] == "KSampler" and classes["6"] == classes["7"] == "CLIPTextEncode"
    assert classes["8"] == "VAEDecode" and classes["57"] == "CreateVideo"
    assert classes["58"] == "SaveVideo" and classes["55"] == "Wan22ImageToVideoLatent"
    assert graph["37"]["inputs"]["unet_name"] == "wan2.2_ti2v_5B_fp16.safetensors"
    assert graph["38"]["inputs"] == {
        "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "type": "wan",
        "device": "default",
    }
    assert graph["39"]["inputs"]["vae_name"] == "wan2.2_vae.safetensors"
    assert graph["48"]["inputs"]["shift"] == 8.0
    lora_id = graph["48"]["inputs"]["model"][0]
    lora = graph[lora_id]
    assert lora["class_type"] == "LoraLoaderModelOnly"
    assert lora["inputs"]["model"] == ["37", 0]
    assert lora["inputs"]["lora_name"] == "Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors"
    assert lora["inputs"]["strength_model"] == 1.0


def test_defaults_are_fastwans(registry):
    resolved = registry.get("fastwan_t2v").resolve({"prompt": "a cat"})
    assert resolved["steps"] == 8 and resolved["cfg"] == 1.0
    assert (resolved["width"], resolved["height"], resolved["length"], resolved["fps"]) == (
        1280,
        704,
        121,
        24,
    )
    assert resolved["sampler"] == "uni_pc" and resolved["scheduler"] == "simple"
    assert isinstance(resolved["seed"], int) and 0 <= resolved["seed"] < 2**64


def test_random_seeds_differ_and_explicit_seed_is_kept(registry):
    flow = registry.get("fastwan_t2v")
    seeds = {flow.resolve({"prompt": "x"})["seed"] for _ in range(5)}
    assert len(seeds) > 1
    assert flow.resolve({"prompt": "x", "seed": 2**64 - 1})["seed"] == 2**64 - 1


@pytest.mark.parametrize(
    ("values", "field", "text"),
    [
        ({"prompt": "a", "width": 1000}, "width", "multiple of 32"),
        ({"prompt": "a", "height": 700}, "height", "multiple of 32"),
        ({"prompt": "a", "length": 120}, "length", "4k+1"),
        ({"prompt": "a", "seed": -1}, "seed", "greater than or equal"),
        ({"prompt": "a", "seed": 2**64}, "seed", "less than or equal"),
        ({"prompt": "a", "steps": 0}, "steps", "greater than or equal"),
        ({"prompt": "a", "steps": "many"}, "steps", "integer"),
        ({"prompt": ""}, "prompt", "at least 1"),
        ({}, "prompt", "required"),
        ({"prompt": "a", "stepz": 3}, "stepz", "not permitted"),
        ({"prompt": "a", "sampler": "nope"}, "sampler", "uni_pc"),
    ],
)
def test_bad_input_names_the_field(registry, values, field, text):
    with pytest.raises(InvalidInput) as err:
        registry.get("fastwan_t2v").resolve(values)
    assert err.value.field == field
    assert text in err.value.message


def test_fill_binds_every_slot_on_a_copy(registry):
    flow = registry.get("fastwan_t2v")
    resolved = flow.resolve(
        {
            "prompt": "a red fox",
            "negative_prompt": "blur",
            "seed": 7,
            "width": 64,
            "height": 96,
            "length": 9,
            "fps": 12,
            "steps": 3,
        }
    )
    graph = flow.fill(resolved, filename_prefix="fastwan/job1")
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["7"]["inputs"]["text"] == "blur"
    assert graph["3"]["inputs"]["seed"] == 7 and graph["3"]["inputs"]["steps"] == 3
    assert graph["55"]["inputs"]["width"] == 64 and graph["55"]["inputs"]["height"] == 96
    assert graph["55"]["inputs"]["length"] == 9 and graph["57"]["inputs"]["fps"] == 12
    assert graph["58"]["inputs"]["filename_prefix"] == "fastwan/job1"
    assert flow.graph["6"]["inputs"]["text"] == ""  # the template itself is untouched


def test_i2v_requires_an_image_and_binds_it(registry):
    flow = registry.get("fastwan_i2v")
    with pytest.raises(InvalidInput) as err:
        flow.resolve({"prompt": "x"})
    assert err.value.field == "image"
    resolved = flow.resolve({}, {"image": "up/cat.png"})
    graph = flow.fill(resolved)
    assert graph["56"]["inputs"]["image"] == "up/cat.png"
    assert graph["55"]["inputs"]["start_image"] == ["56", 0]


def test_aliases_and_unknown_names(registry):
    assert registry.get("Wan-AI/Wan2.1-T2V-1.3B-Diffusers").name == "fastwan_t2v"
    with pytest.raises(NotFound, match="served: fastwan_i2v, fastwan_t2v"):
        registry.get("nope")


def test_a_re_export_that_moved_a_node_is_reported_as_a_stale_binding(tmp_path):
    # The older node-id declaration: a renumbered node leaves it pointing at nothing.
    for name in ("fastwan_t2v.json", "fastwan_t2v.params.json"):
        shutil.copy(LEGACY / name, tmp_path / name)
    graph = json.loads((tmp_path / "fastwan_t2v.json").read_text())
    graph["66"] = graph.pop("6")  # the editor renumbered the positive prompt node
    graph["3"]["inputs"]["positive"] = ["66", 0]
    graph["55"]["class_type"] = "EmptyHunyuanLatentVideo"
    graph["57"]["inputs"]["fps"] = ["99", 0]
    (tmp_path / "fastwan_t2v.json").write_text(json.dumps(graph))
    registry = load_registry(tmp_path)
    assert "fastwan_t2v" not in registry.workflows
    problems = " | ".join(registry.broken["fastwan_t2v"])
    assert "prompt: node 6 (CLIPTextEncode) is not in the graph" in problems
    assert "node 55 is EmptyHunyuanLatentVideo" in problems
    assert "fps: input 'fps' of node 57 is a link" in problems
    with pytest.raises(NotFound, match="not loaded"):
        registry.get("fastwan_t2v")


def test_request_model_documents_ranges(registry):
    schema = registry.get("fastwan_t2v").request_model.model_json_schema()
    assert schema["properties"]["width"]["minimum"] == 32
    assert schema["properties"]["steps"]["default"] == 8
    assert schema["required"] == ["prompt"]


def test_a_marked_graph_survives_renumbering_and_reports_a_linked_mark(tmp_path):
    for name in ("fastwan_t2v.json", "fastwan_t2v.params.json"):
        shutil.copy(WORKFLOWS / name, tmp_path / name)
    graph = json.loads((tmp_path / "fastwan_t2v.json").read_text())
    graph["66"] = graph.pop("6")  # the mark moves with the node
    graph["3"]["inputs"]["positive"] = ["66", 0]
    (tmp_path / "fastwan_t2v.json").write_text(json.dumps(graph))
    flow = load_registry(tmp_path).get("fastwan_t2v")
    assert flow.param("prompt").targets[0].node == "66"
    assert flow.fill(flow.resolve({"prompt": "a fox"}))["66"]["inputs"]["text"] == "a fox"

    graph["57"]["inputs"]["fps"] = ["99", 0]  # fps converted to an input and linked
    (tmp_path / "fastwan_t2v.json").write_text(json.dumps(graph))
    registry = load_registry(tmp_path)
    problems = " | ".join(registry.broken["fastwan_t2v"])
    assert 'node 57 "Create Video $fps" (CreateVideo)' in problems
    assert "input 'fps' is a link, not a value" in problems
    assert "sidecar: fps: the graph marks no such parameter" in problems
    with pytest.raises(NotFound, match="not loaded"):
        registry.get("fastwan_t2v")
