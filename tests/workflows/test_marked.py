"""Parameters marked in the graph: `$` titles, derived types, and the sidecar's narrowing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.workflows.marked import MarkError, derive_spec, reference_object_info
from tests.support import require_shared

OBJECT_INFO = reference_object_info()
SEED_MAX = 2**64 - 1


def node(class_type: str, title: str | None = None, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title or class_type}}


def sampler(title: str = "KSampler", **inputs: Any) -> dict[str, Any]:
    values = {
        "seed": 0,
        "steps": 8,
        "cfg": 1.0,
        "sampler_name": "uni_pc",
        "scheduler": "simple",
        "denoise": 1.0,
        "model": ["48", 0],
        "positive": ["6", 0],
        "negative": ["7", 0],
        "latent_image": ["55", 0],
    }
    return node("KSampler", title, **{**values, **inputs})


def save(title: str = "Save Video") -> dict[str, Any]:
    return node(
        "SaveVideo",
        title,
        filename_prefix="video/ComfyUI",
        format="auto",
        codec="auto",
        video=["57", 0],
    )


def graph(**nodes: dict[str, Any]) -> dict[str, Any]:
    """A graph with a SaveVideo (node 58) unless one is given; keys `n3` name node "3"."""
    built = {key.removeprefix("n"): value for key, value in nodes.items()}
    built.setdefault("58", save())
    return built


def derive(g: dict[str, Any], sidecar: dict[str, Any] | None = None, info=OBJECT_INFO):
    return derive_spec("flow", g, info, sidecar)


def problems(g: dict[str, Any], sidecar: dict[str, Any] | None = None, info=OBJECT_INFO) -> str:
    with pytest.raises(MarkError) as err:
        derive(g, sidecar, info)
    assert isinstance(err.value, ValueError)
    return " | ".join(err.value.problems)


def params(spec) -> dict[str, Any]:
    return {p.name: p for p in spec.params}


def test_the_bundled_object_info_is_the_shared_reference():
    path = require_shared(
        Path(__file__).resolve().parents[3] / "shared" / "comfyui-reference" / "object_info.json"
    )
    assert json.loads(path.read_text()) == OBJECT_INFO


def test_titles_declare_parameters_typed_by_object_info():
    spec = derive(
        graph(
            n3=sampler("Sampler $seed=seed $steps=steps $cfg=cfg $sampler=sampler_name"),
            n6=node("CLIPTextEncode", "Positive $prompt", text="a cat", clip=["38", 0]),
            n48=node(
                "ModelSamplingDiscrete",
                "$zsnr=zsnr $sampling=sampling",
                sampling="eps",
                zsnr=False,
                model=["1", 0],
            ),
            n56=node("LoadImage", "Load Image $image", image="example.png"),
            n57=node("LoadVideo", "$clip", file="in.mp4"),
        )
    )
    found = params(spec)
    assert list(found) == [
        "seed",
        "steps",
        "cfg",
        "sampler",
        "prompt",
        "zsnr",
        "sampling",
        "image",
        "clip",
    ]
    seed = found["seed"]
    assert (seed.type, seed.random, seed.default, seed.min, seed.max) == (
        "int",
        True,
        None,
        0,
        SEED_MAX,
    )
    steps = found["steps"]
    assert (steps.type, steps.default, steps.min, steps.max, steps.step) == (
        "int",
        8,
        1,
        10000,
        None,
    )
    cfg = found["cfg"]
    assert (cfg.type, cfg.default, cfg.min, cfg.max, cfg.step) == ("float", 1.0, 0.0, 100.0, 0.1)
    choices = OBJECT_INFO["KSampler"]["input"]["required"]["sampler_name"][0]
    assert (found["sampler"].type, found["sampler"].choices) == ("choice", choices)
    assert (found["prompt"].type, found["prompt"].default) == ("string", "a cat")
    assert (found["zsnr"].type, found["zsnr"].default) == ("bool", False)
    assert found["sampling"].choices == ["eps", "v_prediction", "lcm", "x0", "img_to_img"]
    assert (found["image"].type, found["image"].default) == ("image", None)
    assert found["clip"].type == "video"  # LoadVideo's ("COMBO", {"video_upload": true})
    assert [(t.node, t.input, t.class_type) for t in found["cfg"].targets] == [
        ("3", "cfg", "KSampler")
    ]
    assert found["prompt"].targets[0].input == "text"  # the only widget input of the node
    assert spec.output_node == "58" and spec.filename_prefix.input == "filename_prefix"
    assert (spec.title, spec.kind) == ("flow", "video-to-video")


def test_a_name_on_several_nodes_binds_them_all_within_every_range():
    spec = derive(
        graph(
            n6=node("CLIPTextEncode", "$prompt", text="", clip=["38", 0]),
            n7=node("CLIPTextEncode", "$prompt", text="", clip=["38", 0]),
            n55=node(
                "Wan22ImageToVideoLatent",
                "$width=width",
                width=640,
                height=704,
                length=121,
                batch_size=1,
                vae=["39", 0],
            ),
            n63=node(
                "ImageScale",
                "$width=width",
                image=["1", 0],
                upscale_method="bilinear",
                width=640,
                height=704,
                crop="center",
            ),
        )
    )
    prompt, width = params(spec)["prompt"], params(spec)["width"]
    assert [t.node for t in prompt.targets] == ["6", "7"]
    assert [t.node for t in width.targets] == ["55", "63"]
    # Wan22ImageToVideoLatent: 32..16384 step 32; ImageScale: 0..16384 step 1.
    assert (width.min, width.max, width.step) == (32, 16384, 32)


@pytest.mark.parametrize(
    ("title", "inputs", "expected"),
    [
        ("KSampler $3d", {}, "bad token '$3d'"),
        ("KSampler $seed=", {}, "bad token '$seed='"),
        ("KSampler $a=b=c", {}, "bad token '$a=b=c'"),
        ("KSampler $x=double_layers.0.", {}, "no input 'double_layers.0.'"),
        ("KSampler $seed=nope", {}, "'$seed=nope': no input 'nope'; its inputs: seed, steps, cfg"),
        ("KSampler $m=model", {}, "'$m=model': input 'model' is a link, not a value"),
        ("KSampler $s=seed $s=steps", {}, "'$s=steps': $s appears twice in this title"),
        ("KSampler $a=steps $b=steps", {}, "input 'steps' is marked as both $a and $b"),
        (
            "KSampler $x",
            {},
            "'$x' names no input and the node has several widget inputs "
            "(seed, steps, cfg, sampler_name, scheduler, denoise): write $x=<input>",
        ),
        ("KSampler $output=seed", {}, "'$output=seed': $output takes no input"),
        ("KSampler $e=extra", {"extra": 1}, "ComfyUI's KSampler has no input 'extra'"),
        ("KSampler $s=steps", {"steps": 8.5}, "its value 8.5 is not a int"),
    ],
)
def test_a_bad_mark_names_the_node_its_title_and_class(title, inputs, expected):
    text = problems(graph(n3=sampler(title, **inputs)))
    assert f"node 3 {json.dumps(title)} (KSampler)" in text
    assert expected in text


def test_a_bare_name_on_a_node_whose_only_widget_is_linked_says_so():
    text = problems(graph(n6=node("CLIPTextEncode", "$prompt", text=["9", 0], clip=["38", 0])))
    assert "input 'text' is a link, not a value" in text


def test_an_unknown_class_is_named():
    text = problems(graph(n9=node("MyCustomNode", "Mine $x=value", value=1)))
    assert 'node 9 "Mine $x=value" (MyCustomNode): class MyCustomNode is not in' in text


def test_one_name_of_two_types_or_two_defaults_names_both_nodes():
    text = problems(
        graph(
            n3=sampler("KSampler $n=steps"),
            n6=node("CLIPTextEncode", "Positive $n", text="", clip=["38", 0]),
        )
    )
    assert '$n: node 3 "KSampler $n=steps" (KSampler) makes it int' in text
    assert 'node 6 "Positive $n" (CLIPTextEncode) string' in text
    text = problems(
        graph(
            n6=node("CLIPTextEncode", "$p", text="a", clip=["38", 0]),
            n7=node("CLIPTextEncode", "$p", text="b", clip=["38", 0]),
        )
    )
    assert "$p: node 6" in text and "has 'a', node 7" in text and "has 'b'" in text


def test_the_output_node_is_the_one_saver_or_the_one_titled_output():
    two = {"n58": save(), "n59": save("Save again")}
    text = problems(graph(n6=node("CLIPTextEncode", "$p", text="", clip=["1", 0]), **two))
    assert "no output node: title one node $output" in text
    assert 'node 58 "Save Video" (SaveVideo), node 59 "Save again" (SaveVideo)' in text
    two["n59"] = save("Save again $output")
    spec = derive(graph(**two))
    assert (spec.output_node, spec.filename_prefix.node) == ("59", "59")
    two["n58"] = save("$output")
    assert "$output marks several nodes" in problems(graph(**two))
    preview = graph(n58=node("PreviewImage", "Preview $output", images=["8", 0]))
    spec = derive(preview)
    assert (spec.output_node, spec.filename_prefix, spec.params) == ("58", None, [])


def test_a_file_list_comfyui_fills_at_run_time_needs_its_choices_in_the_sidecar():
    g = graph(
        n60=node(
            "LoraLoaderModelOnly",
            "$lora=lora_name",
            lora_name="a.safetensors",
            strength_model=1.0,
            model=["37", 0],
        )
    )
    assert "ComfyUI lists no options" in problems(g)
    spec = derive(g, {"params": {"lora": {"choices": ["a.safetensors", "b.safetensors"]}}})
    assert params(spec)["lora"].choices == ["a.safetensors", "b.safetensors"]


# --- the sidecar: only what ComfyUI cannot know, narrowing -----------------------------------


def base() -> dict[str, Any]:
    return graph(
        n3=sampler("KSampler $seed=seed $steps=steps $cfg=cfg $sampler=sampler_name"),
        n6=node("CLIPTextEncode", "$prompt", text="", clip=["38", 0]),
        n57=node("CreateVideo", "$fps", fps=24.0, images=["8", 0]),
    )


def test_the_sidecar_documents_narrows_and_orders():
    sidecar = {
        "title": "Flow",
        "description": "Makes videos.",
        "kind": "text-to-video",
        "aliases": ["flow-1"],
        "params": {
            "prompt": {"required": True, "min_length": 1, "max_length": 10, "description": "What."},
            "steps": {"max": 50, "advanced": True, "aliases": ["num_inference_steps"]},
            "fps": {"type": "int", "max": 60},
            "sampler": {"choices": ["euler", "uni_pc"]},
            "seed": {"random": False},
        },
    }
    spec = derive(base(), sidecar)
    assert (spec.title, spec.description, spec.kind, spec.aliases) == (
        "Flow",
        "Makes videos.",
        "text-to-video",
        ["flow-1"],
    )
    found = params(spec)
    assert list(found) == ["prompt", "steps", "fps", "sampler", "seed", "cfg"]
    prompt = found["prompt"]
    assert (prompt.required, prompt.default, prompt.min_length, prompt.max_length) == (
        True,
        None,
        1,
        10,
    )
    assert prompt.description == "What."
    steps = found["steps"]
    assert (steps.min, steps.max, steps.advanced, steps.aliases) == (
        1,
        50,
        True,
        ["num_inference_steps"],
    )
    fps = found["fps"]
    assert (fps.type, fps.default, fps.min, fps.max) == ("int", 24, 1, 60)
    assert type(fps.default) is int and type(fps.min) is int
    assert found["sampler"].choices == ["euler", "uni_pc"]
    assert (found["seed"].random, found["seed"].default) == (False, 0)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"nope": {}},
            "sidecar: nope: the graph marks no such parameter "
            "(marked: seed, steps, cfg, sampler, prompt, fps)",
        ),
        ({"steps": {"min": 0}}, "sidecar: steps: min 0 widens ComfyUI's min 1"),
        ({"cfg": {"max": 200}}, "sidecar: cfg: max 200 widens ComfyUI's max 100.0"),
        (
            {"sampler": {"choices": ["euler", "warp"]}},
            "sidecar: sampler: choices warp widen ComfyUI's options",
        ),
        (
            {"steps": {"default": 4}},
            "sidecar: params.steps.default: Extra inputs are not permitted",
        ),
        (
            {"prompt": {"type": "int"}},
            "sidecar: prompt: type 'int' cannot replace ComfyUI's string",
        ),
        ({"prompt": {"min": 1}}, "sidecar: prompt: min applies to numbers"),
        ({"cfg": {"multiple_of": 2}}, "sidecar: cfg: multiple_of applies to an int"),
        ({"steps": {"max_length": 2}}, "sidecar: steps: min_length/max_length apply to a string"),
        ({"steps": {"choices": ["1"]}}, "sidecar: steps: choices apply to a choice"),
        ({"steps": {"min": 10, "max": 5}}, "sidecar: steps: min 10 is above max 5"),
        ({"steps": {"max": 5}}, "$steps: the graph's value 8 (node 3"),
        ({"steps": {"multiple_of": 3}}, "$steps: the graph's value 8 (node 3 \"KSampler"),
        ({"steps": {"four_k_plus_1": True}}, "is not 4k+1"),
        ({"sampler": {"choices": ["euler"]}}, "$sampler: the graph's value 'uni_pc'"),
        ({"steps": {"aliases": ["cfg"]}}, "request name 'cfg' is used by both"),
    ],
)
def test_a_sidecar_that_widens_or_misnames_is_a_load_error_naming_it(entry, expected):
    assert expected in problems(base(), {"params": entry})


def test_a_sidecar_with_an_unknown_top_level_key_or_a_non_whole_int_fails():
    assert "sidecar: output_node: Extra inputs are not permitted" in problems(
        base(), {"output_node": "58"}
    )
    g = base()
    g["57"]["inputs"]["fps"] = 23.976
    assert "sidecar: fps: node 57" in problems(g, {"params": {"fps": {"type": "int"}}})


def test_a_string_input_naming_a_file_may_be_served_as_a_file():
    g = graph(n9=node("PrimitiveString", "Path $still", value="x.png"))
    spec = derive(g, {"params": {"still": {"type": "image", "required": True}}})
    still = params(spec)["still"]
    assert (still.type, still.is_file, still.default, still.required) == ("image", True, None, True)


def test_a_graph_that_is_not_api_format_is_refused():
    assert "a UI-format graph" in problems({"nodes": [], "links": []})
    assert "node 3 is not an API-format node" in problems({"3": {"inputs": {}}})


# --- our parameter nodes ---------------------------------------------------------------------

WIDE = 0xFFFFFFFFFFFFFFFF


def ours(class_type: str, name: str, **inputs: Any) -> dict[str, Any]:
    return node(class_type, class_type, **{"name": name, "description": "", **inputs})


def test_each_parameter_node_declares_its_parameter():
    spec = derive(
        graph(
            n1=ours("ApiInputText", "prompt", value="a cat", description="What it shows."),
            n2=ours("ApiInputInt", "count", value=3, min=1, max=9, step=1),
            n3=ours("ApiInputInt", "free", value=-3, min=-WIDE, max=WIDE, step=1),
            n4=ours("ApiInputFloat", "scale", value=0.5, min=0.0, max=2.0, step=0.05),
            n5=ours("ApiInputBool", "loop", value=True),
            n6=ours("ApiInputSeed", "seed", value=5),
            n7=ours("ApiInputChoice", "mode", choices="fast\n slow \n\n", value="slow"),
            n8=ours("ApiInputImage", "still", image="example.png"),
            n9=ours("ApiInputVideo", "clip", file="in.mp4"),
        )
    )
    found = params(spec)
    assert found["prompt"].type == "string" and found["prompt"].default == "a cat"
    assert found["prompt"].description == "What it shows."
    assert (found["count"].min, found["count"].max, found["count"].step) == (1, 9, None)
    assert (found["free"].min, found["free"].max, found["free"].default) == (None, None, -3)
    scale = found["scale"]
    assert (scale.type, scale.min, scale.max, scale.step, scale.default) == (
        "float",
        0.0,
        2.0,
        0.05,
        0.5,
    )
    assert (found["loop"].type, found["loop"].default) == ("bool", True)
    seed = found["seed"]
    assert (seed.type, seed.random, seed.default, seed.min, seed.max) == (
        "int",
        True,
        None,
        0,
        SEED_MAX,
    )
    assert (found["mode"].choices, found["mode"].default) == (["fast", "slow"], "slow")
    assert (found["still"].type, found["clip"].type) == ("image", "video")
    assert [(t.node, t.input) for t in found["still"].targets] == [("8", "image")]
    assert [(t.node, t.input) for t in found["clip"].targets] == [("9", "file")]
    assert [(t.node, t.input) for t in found["count"].targets] == [("2", "value")]


def test_a_parameter_node_takes_the_ranges_of_the_inputs_it_feeds():
    spec = derive(
        graph(
            n2=ours("ApiInputInt", "steps", value=8, min=-WIDE, max=WIDE, step=1),
            n3=sampler(steps=["2", 0], sampler_name=["4", 0]),
            n4=ours("ApiInputChoice", "sampler", choices="euler\nuni_pc", value="uni_pc"),
        )
    )
    assert (params(spec)["steps"].min, params(spec)["steps"].max) == (1, 10000)
    bad = graph(
        n3=sampler(sampler_name=["4", 0]),
        n4=ours("ApiInputChoice", "sampler", choices="euler\nwarp", value="euler"),
    )
    text = problems(bad)
    assert 'node 4 "ApiInputChoice" (ApiInputChoice): choices warp are not options' in text


def test_a_parameter_node_schema_in_object_info_wins_over_the_builtin_one():
    # Say the nodes' widest INT is 64-bit signed, as ComfyUI's own PrimitiveInt.
    wide = ["INT", {"min": -(2**63 - 1), "max": 2**63 - 1}]
    info = {
        **OBJECT_INFO,
        "ApiInputInt": {
            "input": {
                "required": {"name": ["STRING", {}], "value": wide},
                "optional": {"min": wide, "max": wide, "step": ["INT", {"min": 1}]},
            },
            "output_node": False,
        },
    }
    g = graph(n2=ours("ApiInputInt", "n", value=4, min=-(2**63 - 1), max=2**63 - 1, step=2))
    found = params(derive(g, info=info))["n"]
    assert (found.min, found.max, found.step) == (None, None, 2)


@pytest.mark.parametrize("name", ["", "3d", "output", "has space"])
def test_a_parameter_node_with_a_bad_name_is_named(name):
    text = problems(graph(n2=ours("ApiInputText", name, value="")))
    assert 'node 2 "ApiInputText" (ApiInputText): its name' in text


def test_a_parameter_node_choice_without_choices_fails():
    assert "lists no choice" in problems(
        graph(n4=ours("ApiInputChoice", "m", choices="\n", value=""))
    )


def test_an_integer_nodes_step_is_a_rule_from_its_min():
    spec = derive(
        graph(
            n2=ours("ApiInputInt", "width", value=640, min=32, max=2048, step=32),
            n3=ours("ApiInputInt", "length", value=81, min=1, max=241, step=4),
            n4=ours("ApiInputInt", "even", value=4, min=-WIDE, max=WIDE, step=2),
        )
    )
    found = params(spec)
    assert (found["width"].multiple_of, found["width"].step) == (32, 32)
    assert (found["length"].four_k_plus_1, found["length"].multiple_of) == (True, None)
    assert (found["even"].multiple_of, found["even"].min) == (2, None)
    g = graph(n2=ours("ApiInputInt", "n", value=3, min=3, max=99, step=5))
    assert 'node 2 "ApiInputInt" (ApiInputInt): step 5 from min 3' in problems(g)
    g = graph(n2=ours("ApiInputInt", "width", value=640, min=32, max=2048, step=32))
    assert params(derive(g, {"params": {"width": {"multiple_of": 64}}}))["width"].multiple_of == 64
    text = problems(g, {"params": {"width": {"multiple_of": 16}}})
    assert "sidecar: width: multiple_of 16 widens the node's step 32" in text


def load_api_inputs():
    """custom_nodes/api_inputs, imported from its folder as ComfyUI imports it."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[2] / "custom_nodes" / "api_inputs"
    spec = importlib.util.spec_from_file_location("_api_inputs_marks", folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def their_object_info() -> dict[str, Any]:
    """What a ComfyUI with custom_nodes/api_inputs (and an empty input folder) answers."""
    module = load_api_inputs()
    return {
        cls.__name__: {
            "input": json.loads(json.dumps(cls.INPUT_TYPES())),
            "output_node": getattr(cls, "OUTPUT_NODE", False),
        }
        for cls in module.NODE_CLASSES
    }


def test_the_builtin_schemas_are_those_of_custom_nodes_api_inputs():
    from proxy.workflows.marked import BUILTIN, PARAM_NODES

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("tooltip", "round")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    theirs = their_object_info()
    assert set(theirs) == set(BUILTIN) == set(PARAM_NODES)
    for name, info in theirs.items():
        got, mine = strip(info["input"]), json.loads(json.dumps(BUILTIN[name]["input"]))
        got["required"]["name"][1].pop("default")  # each class suggests its own name
        mine["required"]["name"][1].pop("default")
        assert got == mine, name
        assert PARAM_NODES[name].value in got["required"], name


def test_parameter_nodes_derive_alike_with_or_without_their_object_info():
    g = graph(
        n1=ours("ApiInputText", "prompt", value="a cat"),
        n2=ours("ApiInputInt", "count", value=3, min=-WIDE, max=9, step=1),
        n4=ours("ApiInputFloat", "scale", value=0.5, min=-float(WIDE), max=2.0, step=0.05),
        n5=ours("ApiInputBool", "loop", value=True),
        n6=ours("ApiInputSeed", "seed", value=5),
        n7=ours("ApiInputChoice", "mode", choices="fast\nslow", value="slow"),
        n8=ours("ApiInputImage", "still", image="example.png"),
        n9=ours("ApiInputVideo", "clip", file="in.mp4"),
    )
    with_theirs = derive(g, info={**OBJECT_INFO, **their_object_info()})
    assert with_theirs == derive(g)
    assert (params(with_theirs)["count"].min, params(with_theirs)["count"].max) == (None, 9)
