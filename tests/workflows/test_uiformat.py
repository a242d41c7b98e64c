"""UI-format workflows (what the editor saves) converted to API format, as the frontend does.

The graphs under ui/ are hand-made in the editor's save format (comfyui-frontend-package
1.27.10); the expected prompts are what its graphToPrompt gives for them.
"""

import copy
import json
import random
from pathlib import Path

import pytest

from proxy.workflows.uiformat import ConversionError, is_ui_format, to_api

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
UI = HERE / "ui"
OBJECT_INFO_FILES = (
    ROOT / "proxy" / "workflows" / "object_info.json",
    ROOT.parent / "shared" / "comfyui-reference" / "object_info.json",
)


@pytest.fixture(scope="module")
def object_info():
    """The /object_info of ComfyUI 0.3.64."""
    for path in OBJECT_INFO_FILES:
        if path.exists():
            return json.loads(path.read_text())
    raise AssertionError(f"no /object_info reference at {OBJECT_INFO_FILES}")


def load(name):
    return json.loads((UI / f"{name}.json").read_text())


def node(id, type, widgets=None, inputs=(), outputs=(), mode=0, title=None):
    """A saved node: inputs as (name, type, link[, widget name]), outputs as (name, type, links)."""
    saved = {
        "id": id,
        "type": type,
        "mode": mode,
        "inputs": [
            {"name": i[0], "type": i[1], "link": i[2]}
            | ({"widget": {"name": i[3]}} if len(i) > 3 else {})
            for i in inputs
        ],
        "outputs": [{"name": o[0], "type": o[1], "links": list(o[2])} for o in outputs],
        "properties": {},
        "widgets_values": widgets if widgets is not None else [],
    }
    if title is not None:
        saved["title"] = title
    return saved


def graph(*nodes, links=()):
    return {"nodes": list(nodes), "links": [list(link) for link in links], "version": 0.4}


def entry(class_type, title, **inputs):
    return {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}


# --- telling the formats apart -------------------------------------------------------------


def test_tells_ui_format_from_api_format():
    assert is_ui_format(load("fastwan_t2v"))
    assert is_ui_format({"nodes": [], "links": []})
    api = json.loads((ROOT / "workflows" / "fastwan_t2v.json").read_text())
    assert not is_ui_format(api)
    assert not is_ui_format([])
    assert not is_ui_format({"nodes": {}})
    assert not is_ui_format(None)


def test_api_format_is_returned_as_is(object_info):
    api = json.loads((ROOT / "workflows" / "fastwan_t2v.json").read_text())
    assert to_api(api, object_info) is api


def test_something_else_is_refused(object_info):
    with pytest.raises(ConversionError, match="neither the editor's UI format") as caught:
        to_api({"3": {"inputs": {}}}, object_info)
    assert caught.value.node_id is None


# --- the shipped workflows -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["fastwan_t2v", "fastwan_i2v", "fastwan_v2v"])
def test_ui_graph_of_each_shipped_workflow_gives_its_api_file(object_info, name):
    ui = load(name)
    before = copy.deepcopy(ui)
    api = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
    assert to_api(ui, object_info) == api
    assert ui == before  # the input is not changed


def test_prompt_keys_are_ordered_as_a_javascript_object(object_info):
    keys = list(to_api(load("subgraph"), object_info))
    assert keys == ["1", "4", "5", "12:5", "12:4", "12:6"]
    assert list(to_api(load("fastwan_t2v"), object_info)) == [
        "3", "6", "7", "8", "37", "38", "39", "48", "55", "57", "58", "60",
    ]  # fmt: skip


# --- widgets, links and virtual nodes ------------------------------------------------------


def test_primitive_values_go_to_every_widget_they_feed(object_info):
    assert to_api(load("primitives"), object_info) == {
        "1": entry("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="model.safetensors"),
        # A textarea keeps LF line ends; the dynamic prompt loses its // comment.
        "2": entry("CLIPTextEncode", "Prompt", text="a cat\nin the rain ", clip=["1", 1]),
        "3": entry("EmptyLatentImage", "Empty Latent Image", width=768, height=768, batch_size=1),
        "4": entry(
            "KSampler", "KSampler",
            seed=42, steps=20, cfg=8.0, sampler_name="euler", scheduler="simple", denoise=1.0,
            model=["1", 0], positive=["2", 0], negative=["2", 0], latent_image=["3", 0],
        ),
    }  # fmt: skip


def test_reroutes_are_followed_and_native_reroutes_only_drawn(object_info):
    assert to_api(load("reroutes"), object_info) == {
        "1": entry("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="model.safetensors"),
        "4": entry("ModelSamplingSD3", "ModelSamplingSD3", shift=3.0, model=["1", 0]),
        "5": entry("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="hi", clip=["1", 1]),
        # Its vae comes from a Reroute with nothing connected: left out.
        "6": entry("VAEDecode", "VAE Decode", samples=["8", 0]),
        "8": entry("EmptyLatentImage", "Empty Latent Image", width=512, height=512, batch_size=1),
    }


def test_muted_nodes_are_dropped_and_bypassed_nodes_passed_through(object_info):
    assert to_api(load("muted_bypassed"), object_info) == {
        "1": entry(
            "UNETLoader",
            "Load Diffusion Model",
            unet_name="unet.safetensors",
            weight_dtype="default",
        ),  # noqa: E501
        # Bypassed LoRA: the model comes from the loader before it.
        "3": entry("ModelSamplingSD3", "ModelSamplingSD3", shift=5.0, model=["1", 0]),
        # Muted LoRA: the input linked from it is dropped.
        "5": entry("ModelSamplingSD3", "ModelSamplingSD3", shift=6.0),
        "6": entry("EmptyLatentImage", "Empty Latent Image", width=512, height=512, batch_size=1),
        "8": entry("VAELoader", "Load VAE", vae_name="vae.safetensors"),
        # Bypassed VAEDecode has no IMAGE input to pass on.
        "9": entry("SaveImage", "Save Image", filename_prefix="ComfyUI"),
        "11": entry("LoadImage", "Load Image", image="cat.png"),
        "12": entry("PreviewImage", "Preview Image", images=["11", 0]),
    }


def test_bypass_takes_the_first_input_of_the_same_type(object_info):
    blend = node(
        2, "ImageBlend", [0.5, "normal"], mode=4,
        inputs=[("image1", "IMAGE", 1), ("image2", "IMAGE", 2)], outputs=[("IMAGE", "IMAGE", [3])],
    )  # fmt: skip
    workflow = graph(
        node(
            1,
            "LoadImage",
            ["a.png", "image"],
            outputs=[("IMAGE", "IMAGE", [1]), ("MASK", "MASK", [])],
        ),  # noqa: E501
        node(
            4,
            "LoadImage",
            ["b.png", "image"],
            outputs=[("IMAGE", "IMAGE", [2]), ("MASK", "MASK", [])],
        ),  # noqa: E501
        blend,
        node(3, "PreviewImage", inputs=[("images", "IMAGE", 3)]),
        links=[(1, 1, 0, 2, 0, "IMAGE"), (2, 4, 0, 2, 1, "IMAGE"), (3, 2, 0, 3, 0, "IMAGE")],
    )
    assert to_api(workflow, object_info)["3"]["inputs"] == {"images": ["1", 0]}


def test_a_widget_input_linked_from_a_muted_or_bypassed_node(object_info):
    """As the editor queues it (tests/standin/test_editor_convert.py): a link from a muted
    node drops the widget's value too; a bypassed node with nothing linked to pass on
    leaves the widget's value."""
    workflow = graph(
        node(1, "PrimitiveInt", [640, "fixed"], mode=2, outputs=[("INT", "INT", [1])]),
        node(2, "PrimitiveInt", [768, "fixed"], mode=4, outputs=[("INT", "INT", [2])]),
        node(
            3, "EmptyLatentImage", [512, 512, 1],
            inputs=[("width", "INT", 1, "width"), ("height", "INT", 2, "height")],
            outputs=[("LATENT", "LATENT", [])],
        ),
        links=[(1, 1, 0, 3, 0, "INT"), (2, 2, 0, 3, 1, "INT")],
    )  # fmt: skip
    assert to_api(workflow, object_info) == {
        "3": entry("EmptyLatentImage", "Empty Latent Image", height=512, batch_size=1),
    }


def test_a_link_wins_over_the_widget_it_was_converted_from(object_info):
    assert to_api(load("converted_widgets"), object_info) == {
        "1": entry("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="model.safetensors"),
        "2": entry("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="a dog", clip=["1", 1]),
        "3": entry("PrimitiveInt", "Int", value=12),
        "4": entry(
            "KSampler", "KSampler",
            seed=7, steps=["3", 0], cfg=8.0, sampler_name="euler", scheduler="simple", denoise=1.0,
            model=["1", 0], positive=["2", 0], negative=["2", 0], latent_image=["5", 0],
        ),
        # Saved in the older form that lists only the linked widget inputs.
        "5": entry("EmptyLatentImage", "Empty Latent Image", width=["6", 0], height=512, batch_size=1),  # noqa: E501
        "6": entry("PrimitiveInt", "Int", value=640),
    }  # fmt: skip


def test_control_and_upload_widgets_take_a_value_but_stay_out_of_the_prompt(object_info):
    assert to_api(load("seeds_uploads"), object_info) == {
        "1": entry("RandomNoise", "RandomNoise", noise_seed=99),
        "2": entry(
            "KSamplerAdvanced", "KSampler (Advanced)",
            add_noise="enable", noise_seed=1234, steps=20, cfg=7.5, sampler_name="euler",
            scheduler="karras", start_at_step=0, end_at_step=10000,
            return_with_leftover_noise="disable",
        ),
        "3": entry("LoadImage", "Load Image", image="cat.png"),
        "4": entry("LoadImageMask", "Load Image (as Mask)", image="sub/mask.png", channel="alpha"),
        # Files from the output folder are annotated; the remote list's refresh button is a
        # plain widget, which the frontend puts in the prompt too.
        "5": entry(
            "LoadImageOutput", "Load Image (from Outputs)", image="render.png [output]",
            refresh="refresh",
        ),
        "6": entry("LoadVideo", "Load Video", file="clip.mp4"),
    }  # fmt: skip


def test_notes_are_dropped_and_titles_fall_back_to_display_names(object_info):
    assert to_api(load("notes_titles"), object_info) == {
        # ComfyUI gives no display name; the frontend's locale does.
        "3": entry("ImageBlend", "Image Blend", blend_factor=0.5, blend_mode="normal"),
        # widgets_values as a dict: by name, unknown keys ignored.
        "4": entry("EmptyLatentImage", "Empty Latent Image", width=640, height=480, batch_size=2),
        "5": entry(
            "Wan22ImageToVideoLatent", "Wan22ImageToVideoLatent",
            width=640, height=352, length=33, batch_size=1,
        ),
        "6": entry("ControlNetLoader", "Load ControlNet Model", control_net_name="adapter.safetensors"),  # noqa: E501
        # The frontend's load-time fix for sampler names of old workflows.
        "7": entry(
            "KSampler", "Sampler",
            seed=1, steps=10, cfg=5.0, sampler_name="euler", scheduler="simple", denoise=1.0,
        ),
    }  # fmt: skip


def test_renamed_classes_are_loaded_under_their_new_name(object_info):
    workflow = graph(node(1, "T2IAdapterLoader", ["adapter.safetensors"]))
    assert to_api(workflow, object_info) == {
        "1": entry(
            "ControlNetLoader", "Load ControlNet Model", control_net_name="adapter.safetensors"
        ),  # noqa: E501
    }


def test_array_values_are_boxed(object_info):
    workflow = graph(node(1, "PrimitiveString", [["a", "b"]]))
    assert to_api(workflow, object_info)["1"]["inputs"] == {"value": {"__value__": ["a", "b"]}}


def test_dynamic_prompts_pick_one_choice_and_keep_escapes(object_info):
    workflow = graph(node(1, "CLIPTextEncode", ["a {red|blue} car /* hidden */, \\{x\\} {only}"]))
    seen = {
        to_api(workflow, object_info, rng=random.Random(seed))["1"]["inputs"]["text"]
        for seed in range(20)
    }
    assert seen == {"a red car , {x} only", "a blue car , {x} only"}
    plain = graph(node(1, "PrimitiveString", ["{not|dynamic}"]))
    assert to_api(plain, object_info)["1"]["inputs"]["value"] == "{not|dynamic}"


def test_missing_widgets_values_leave_the_defaults(object_info):
    saved = node(1, "EmptyLatentImage")
    del saved["widgets_values"]
    assert to_api(graph(saved), object_info)["1"]["inputs"] == {
        "width": 512,
        "height": 512,
        "batch_size": 1,
    }


def test_audio_nodes_carry_their_player_widget(object_info):
    info = dict(object_info)
    info["LoadAudio"] = {
        "input": {"required": {"audio": [["a.wav", "b.wav"], {"audio_upload": True}]}},
        "input_order": {"required": ["audio"]},
        "output": ["AUDIO"],
        "output_name": ["AUDIO"],
        "display_name": "Load Audio",
    }
    # The player widget has no place in widgets_values: the frontend saves a hole there.
    workflow = graph(node(1, "LoadAudio", ["b.wav", None, ""]))
    assert to_api(workflow, info) == {
        "1": entry("LoadAudio", "Load Audio", audio="b.wav", audioUI="")
    }  # noqa: E501


def test_placeholder_values_of_force_inputs_from_old_frontends_are_dropped(object_info):
    info = dict(object_info)
    info["Legacy"] = {
        "input": {
            "required": {"count": ["INT", {"forceInput": True}], "scale": ["FLOAT", {}]},
            "optional": {"seed": ["INT", {}]},
        },
        "input_order": {"required": ["count", "scale"], "optional": ["seed"]},
        "output": [],
        "display_name": "Legacy",
    }
    # A placeholder for count, then scale, then seed with its control widget.
    workflow = graph(node(1, "Legacy", [3, 0.5, 42, "fixed"]))
    assert to_api(workflow, info)["1"]["inputs"] == {"scale": 0.5, "seed": 42}
    workflow = graph(node(1, "Legacy", [3, 0.5, 42, "fixed", "extra"]))
    with pytest.raises(ConversionError, match="has 5 widget values but its class takes 3"):
        to_api(workflow, info)


# --- subgraphs and group nodes -------------------------------------------------------------


def test_subgraph_nodes_are_flattened_with_path_ids(object_info):
    assert to_api(load("subgraph"), object_info) == {
        "1": entry("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="model.safetensors"),
        "4": entry(
            "KSampler", "KSampler",
            seed=7, steps=20, cfg=8.0, sampler_name="euler", scheduler="simple", denoise=1.0,
            model=["1", 0], positive=["12:6", 0], negative=["12:6", 0], latent_image=["5", 0],
        ),
        "5": entry("EmptyLatentImage", "Empty Latent Image", width=512, height=512, batch_size=1),
        # The promoted text widget of the instance wins over the one saved inside.
        "12:5": entry("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="a fox in the snow", clip=["1", 1]),  # noqa: E501
        "12:4": entry("CLIPTextEncode", "Fixed prompt", text="inner only", clip=["1", 1]),
        "12:6": entry(
            "ConditioningCombine", "Conditioning (Combine)",
            conditioning_1=["12:5", 0], conditioning_2=["12:4", 0],
        ),
    }  # fmt: skip


def test_a_subgraph_input_linked_from_outside_takes_the_link(object_info):
    workflow = load("subgraph")
    workflow["nodes"].append(
        node(30, "PrimitiveStringMultiline", ["outside"], outputs=[("STRING", "STRING", [90])])
    )
    instance = next(n for n in workflow["nodes"] if n["id"] == 12)
    next(i for i in instance["inputs"] if i["name"] == "text")["link"] = 90
    workflow["links"].append([90, 30, 0, 12, 1, "STRING"])
    prompt = to_api(workflow, object_info)
    assert prompt["12:5"]["inputs"] == {"text": ["30", 0], "clip": ["1", 1]}
    assert prompt["30"] == entry("PrimitiveStringMultiline", "String (Multiline)", value="outside")


def test_a_subgraph_instance_without_values_shows_the_inner_ones(object_info):
    workflow = load("subgraph")
    del next(n for n in workflow["nodes"] if n["id"] == 12)["widgets_values"]
    assert to_api(workflow, object_info)["12:5"]["inputs"]["text"] == "saved inside"


def test_a_subgraph_instance_with_too_many_values_is_refused(object_info):
    workflow = load("subgraph")
    next(n for n in workflow["nodes"] if n["id"] == 12)["widgets_values"] = ["a", "b"]
    with pytest.raises(
        ConversionError, match="has 2 widget values but its class takes 1"
    ) as caught:
        to_api(workflow, object_info)
    assert caught.value.node_id == "12"


def test_a_primitive_inside_a_subgraph_is_refused(object_info):
    workflow = load("subgraph")
    inner = workflow["definitions"]["subgraphs"][0]
    inner["nodes"].append(node(9, "PrimitiveNode", [3], outputs=[("INT", "INT", [40])]))
    with pytest.raises(ConversionError, match="PrimitiveNode inside a subgraph"):
        to_api(workflow, object_info)


def test_legacy_group_nodes_are_flattened_with_index_ids(object_info):
    assert to_api(load("group_node"), object_info) == {
        "4": entry(
            "KSampler", "KSampler",
            seed=7, steps=20, cfg=8.0, sampler_name="euler", scheduler="simple", denoise=1.0,
            model=["20:0", 0], positive=["20:1", 0], negative=["20:1", 0], latent_image=["5", 0],
        ),
        "5": entry("EmptyLatentImage", "Empty Latent Image", width=512, height=512, batch_size=1),
        # The group's own widget values replace those of its inner nodes.
        "20:0": entry("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="group.safetensors"),
        "20:1": entry("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="from the group", clip=["20:0", 1]),  # noqa: E501
    }  # fmt: skip


# --- what cannot be converted --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "node_id", "message"),
    [
        (
            "unknown_class",
            "2",
            "node 2 \"My upscaler\" (FancyUpscaler): class 'FancyUpscaler' is not in /object_info",
        ),
        (
            "widget_count",
            "1",
            'node 1 "Empty Latent Image" (EmptyLatentImage): has 2 widget values but its class '
            "takes 3 (width, height, batch_size)",
        ),
        (
            "missing_node",
            "2",
            "node 2 \"VAE Decode\" (VAEDecode): its input 'vae' is linked from node 3, which is missing",  # noqa: E501
        ),
        (
            "missing_link",
            "2",
            "node 2 \"VAE Decode\" (VAEDecode): its input 'samples' uses link 77, which is not in "
            "the graph",
        ),
        (
            "cycle",
            "1",
            'node 1 "Invert Image" (ImageInvert): is part of a cycle of links (1 -> 2 -> 1)',
        ),
        (
            "reroute_loop",
            "2",
            'node 2 "Reroute" (Reroute): its output 0 leads back to itself (a loop of links)',
        ),
    ],
)
def test_what_cannot_be_converted_names_the_node_and_why(object_info, name, node_id, message):
    with pytest.raises(ConversionError) as caught:
        to_api(load(f"error_{name}"), object_info)
    assert str(caught.value).startswith(message)
    assert caught.value.node_id == node_id
    assert isinstance(caught.value, ValueError)


def test_an_unknown_class_that_is_muted_or_bypassed_is_no_error(object_info):
    workflow = load("error_unknown_class")
    workflow["nodes"][1]["mode"] = 2
    assert list(to_api(workflow, object_info)) == ["1"]
    workflow["nodes"][1]["mode"] = 4
    workflow["nodes"].append(node(3, "PreviewImage", inputs=[("images", "IMAGE", None)]))
    assert list(to_api(workflow, object_info)) == ["1", "3"]


def test_widgets_the_browser_fills_are_refused(object_info):
    workflow = graph(node(1, "WebcamCapture", [None, 640, 480, False, "capture"]))
    with pytest.raises(ConversionError, match="its WEBCAM widget gets its value in the browser"):
        to_api(workflow, object_info)
