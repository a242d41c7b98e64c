"""custom_nodes/api_inputs as ComfyUI sees it: INPUT_TYPES, return types, and the functions,
with fake ComfyUI modules (folder_paths, nodes, comfy_api) standing in where one is needed."""

from __future__ import annotations

import importlib.util
import itertools
import json
import mimetypes
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "custom_nodes" / "api_inputs"
WIDE = 2**53 - 1
SEED_MAX = 2**64 - 1
_names = itertools.count()


def load_package() -> types.ModuleType:
    """A fresh import of the package from its folder, as ComfyUI's load_custom_node does."""
    name = f"_test_api_inputs_{next(_names)}"
    spec = importlib.util.spec_from_file_location(name, PACKAGE / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def package() -> Any:
    module = load_package()
    yield module
    for name in [n for n in sys.modules if n == module.__name__ or n.startswith(module.__name__)]:
        del sys.modules[name]


@pytest.fixture
def input_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ComfyUI's input folder behind a fake ``folder_paths``."""
    folder = tmp_path / "input"
    folder.mkdir()
    fake = types.ModuleType("folder_paths")

    def filter_files_content_types(files: list[str], kinds: list[str]) -> list[str]:
        return [f for f in files if (mimetypes.guess_type(f)[0] or "").split("/")[0] in kinds]

    def annotated(name: str) -> str:
        return str(folder / name)

    fake.get_input_directory = lambda: str(folder)
    fake.filter_files_content_types = filter_files_content_types
    fake.get_annotated_filepath = annotated
    fake.exists_annotated_filepath = lambda name: os.path.exists(annotated(name))
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    return folder


def tip(spec: tuple[Any, ...]) -> str:
    return spec[1]["tooltip"]


def test_mappings_and_class_attributes(package: Any) -> None:
    names = [
        "ApiInputText",
        "ApiInputInt",
        "ApiInputFloat",
        "ApiInputBool",
        "ApiInputSeed",
        "ApiInputChoice",
        "ApiInputImage",
        "ApiInputVideo",
    ]
    assert list(package.NODE_CLASS_MAPPINGS) == names
    assert set(package.NODE_DISPLAY_NAME_MAPPINGS) == set(names)
    for cls in package.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "api/inputs"
        assert cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    returns = {n: c.RETURN_TYPES for n, c in package.NODE_CLASS_MAPPINGS.items()}
    assert returns == {
        "ApiInputText": ("STRING",),
        "ApiInputInt": ("INT",),
        "ApiInputFloat": ("FLOAT",),
        "ApiInputBool": ("BOOLEAN",),
        "ApiInputSeed": ("INT",),
        "ApiInputChoice": ("*",),
        "ApiInputImage": ("IMAGE", "MASK"),
        "ApiInputVideo": ("VIDEO",),
    }


def test_scalar_input_types(package: Any) -> None:
    nodes = package.NODE_CLASS_MAPPINGS
    text = nodes["ApiInputText"].INPUT_TYPES()
    assert list(text) == ["required", "optional"]
    assert list(text["required"]) == ["name", "value"] and list(text["optional"]) == ["description"]
    assert text["required"]["name"][0] == "STRING"
    assert text["required"]["name"][1]["default"] == "prompt"
    assert text["required"]["value"][1] | {"tooltip": ""} == {
        "default": "",
        "multiline": True,
        "tooltip": "",
    }
    assert text["optional"]["description"][0] == "STRING"
    assert text["optional"]["description"][1]["default"] == ""

    integer = nodes["ApiInputInt"].INPUT_TYPES()
    assert list(integer["required"]) == ["name", "value"]
    assert list(integer["optional"]) == ["min", "max", "step", "description"]
    assert integer["required"]["name"][1]["default"] == "value"
    value = integer["required"]["value"]
    assert (value[0], value[1]["default"], value[1]["min"], value[1]["max"]) == (
        "INT",
        0,
        -WIDE,
        WIDE,
    )
    low, high, step = (integer["optional"][k] for k in ("min", "max", "step"))
    assert (low[0], low[1]["default"], high[0], high[1]["default"]) == ("INT", -WIDE, "INT", WIDE)
    assert (step[0], step[1]["default"], step[1]["min"]) == ("INT", 1, 1)

    number = nodes["ApiInputFloat"].INPUT_TYPES()
    assert list(number["optional"]) == ["min", "max", "step", "description"]
    value = number["required"]["value"]
    assert value[0] == "FLOAT" and value[1]["default"] == 0.0
    assert (value[1]["min"], value[1]["max"], value[1]["round"]) == (-WIDE, WIDE, False)
    assert number["optional"]["min"][1]["default"] == -WIDE
    assert number["optional"]["max"][1]["default"] == WIDE
    assert number["optional"]["step"][1]["default"] == 0.01

    boolean = nodes["ApiInputBool"].INPUT_TYPES()
    assert list(boolean["required"]) == ["name", "value"]
    assert boolean["required"]["value"][0] == "BOOLEAN"
    assert boolean["required"]["value"][1]["default"] is False

    seed = nodes["ApiInputSeed"].INPUT_TYPES()
    assert seed["required"]["name"][1]["default"] == "seed"
    options = seed["required"]["value"][1]
    assert seed["required"]["value"][0] == "INT"
    assert (options["min"], options["max"], options["control_after_generate"]) == (
        0,
        SEED_MAX,
        True,
    )

    choice = nodes["ApiInputChoice"].INPUT_TYPES()
    assert list(choice["required"]) == ["name", "choices", "value"]
    assert choice["required"]["choices"][0] == "STRING"
    assert choice["required"]["choices"][1]["multiline"] is True
    assert choice["required"]["value"][0] == "STRING"

    # Every input says what it is.
    for cls in nodes.values():
        if cls.__name__ in ("ApiInputImage", "ApiInputVideo"):
            continue
        for group in cls.INPUT_TYPES().values():
            assert all(tip(spec) for spec in group.values()), cls.__name__


def test_wide_ranges_survive_the_editors_doubles(package: Any) -> None:
    # The editor keeps widget values as JavaScript doubles; a default that a double cannot
    # hold comes back rounded and fails ComfyUI's own range check.
    specs = package.NODE_CLASS_MAPPINGS["ApiInputInt"].INPUT_TYPES()
    for spec in [*specs["required"].values(), *specs["optional"].values()]:
        if spec[0] != "INT":
            continue
        for key in ("default", "min", "max"):
            assert int(float(spec[1][key])) == spec[1][key]
    assert json.loads(json.dumps(package.FLOAT_MAX)) == float(WIDE)


def test_file_input_types_list_the_input_folder(package: Any, input_dir: Path) -> None:
    for name in ("b.png", "a.jpg", "clip.mp4", "notes.txt", "c.webm"):
        (input_dir / name).write_bytes(b"x")
    (input_dir / "sub").mkdir()
    (input_dir / "sub" / "deep.png").write_bytes(b"x")
    image = package.NODE_CLASS_MAPPINGS["ApiInputImage"].INPUT_TYPES()
    assert list(image["required"]) == ["name", "image"]
    assert image["required"]["name"][1]["default"] == "image"
    assert image["required"]["image"][0] == ["a.jpg", "b.png"]
    assert image["required"]["image"][1]["image_upload"] is True and tip(image["required"]["image"])
    video = package.NODE_CLASS_MAPPINGS["ApiInputVideo"].INPUT_TYPES()
    assert list(video["required"]) == ["name", "file"]
    assert video["required"]["name"][1]["default"] == "video"
    assert video["required"]["file"][0] == ["c.webm", "clip.mp4"]
    assert video["required"]["file"][1]["video_upload"] is True
    assert list(video["optional"]) == ["description"]


def test_file_combos_are_empty_without_comfyui(package: Any) -> None:
    assert "folder_paths" not in sys.modules
    image = package.NODE_CLASS_MAPPINGS["ApiInputImage"].INPUT_TYPES()
    assert image["required"]["image"][0] == []


def test_choice_type_is_a_wildcard_that_equals_combos(package: Any) -> None:
    choice = package.NODE_CLASS_MAPPINGS["ApiInputChoice"].RETURN_TYPES[0]
    assert isinstance(choice, str) and json.dumps(choice) == '"*"'
    assert hash(choice) == hash("*")
    # ComfyUI's validate_node_input starts with `not received != input_type`.
    assert not choice != ["euler", "uni_pc"]  # a V1 combo (KSampler.sampler_name)
    assert not choice != ("a", "b")
    for accepted in ("COMBO", "STRING", "*", "STRING,INT"):
        assert not choice != accepted, accepted
    for refused in ("MODEL", "INT", "IMAGE", 3):
        assert choice != refused, refused


def test_scalar_functions_pass_values_through(package: Any) -> None:
    nodes = package.NODE_CLASS_MAPPINGS
    assert nodes["ApiInputText"]().run(name="prompt", value="a fox") == ("a fox",)
    assert nodes["ApiInputBool"]().run(name="b", value=True, description="d") == (True,)
    assert nodes["ApiInputSeed"]().run(name="seed", value=SEED_MAX) == (SEED_MAX,)
    assert nodes["ApiInputInt"]().run(name="w", value=64, min=32, max=128, step=32) == (64,)
    assert nodes["ApiInputFloat"]().run(name="f", value=0.5, min=0.0, max=1.0) == (0.5,)
    choice = nodes["ApiInputChoice"]()
    assert choice.run(name="s", choices="euler\n  uni_pc \n\n", value="uni_pc") == ("uni_pc",)


def test_bounds_and_choices_are_checked(package: Any) -> None:
    nodes = package.NODE_CLASS_MAPPINGS
    with pytest.raises(ValueError, match="ApiInputInt 'w': value 129 is bigger than max 128"):
        nodes["ApiInputInt"]().run(name="w", value=129, min=32, max=128)
    with pytest.raises(ValueError, match="smaller than min"):
        nodes["ApiInputFloat"]().run(name="f", value=-0.5, min=0.0)
    assert nodes["ApiInputInt"].VALIDATE_INPUTS(value=5) is True
    assert nodes["ApiInputInt"].VALIDATE_INPUTS(value=5, max=4) == "value 5 is bigger than max 4"
    assert nodes["ApiInputInt"].VALIDATE_INPUTS(value=5, min=9, max=4) == (
        "min 9 is bigger than max 4"
    )
    assert nodes["ApiInputInt"].VALIDATE_INPUTS(value=None, max=4) is True  # linked
    choice = nodes["ApiInputChoice"]
    with pytest.raises(ValueError, match="'heun' is not one of the choices: euler, uni_pc"):
        choice().run(name="s", choices="euler\nuni_pc", value="heun")
    assert choice.VALIDATE_INPUTS(choices="euler\nuni_pc", value="euler") is True
    assert "no choices" in choice.VALIDATE_INPUTS(choices=" \n", value="")
    assert choice.VALIDATE_INPUTS(choices="a", value=None) is True
    assert package.parse_choices(" a \n\nb\r\nc ") == ["a", "b", "c"]


def test_image_delegates_to_comfyuis_load_image(
    package: Any, input_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    class LoadImage:
        def load_image(self, image: str) -> tuple[str, str]:
            calls.append(("load", image))
            return (f"pixels of {image}", "mask")

        @classmethod
        def IS_CHANGED(cls, image: str) -> str:
            return f"hash of {image}"

        @classmethod
        def VALIDATE_INPUTS(cls, image: str) -> bool | str:
            return True if image == "ok.png" else f"Invalid image file: {image}"

    monkeypatch.setitem(sys.modules, "nodes", types.SimpleNamespace(LoadImage=LoadImage))
    node = package.NODE_CLASS_MAPPINGS["ApiInputImage"]
    assert node().run(name="image", image="ok.png") == ("pixels of ok.png", "mask")
    # ComfyUI calls IS_CHANGED with every input, VALIDATE_INPUTS with its own only.
    assert node.IS_CHANGED(name="image", image="ok.png", description="") == "hash of ok.png"
    assert node.VALIDATE_INPUTS(image="ok.png") is True
    assert node.VALIDATE_INPUTS(image="x.png") == "Invalid image file: x.png"
    assert node.VALIDATE_INPUTS(image=None) is True
    assert calls == [("load", "ok.png")]


def test_video_reads_the_input_file_as_load_video(
    package: Any, input_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class VideoFromFile:
        def __init__(self, path: str) -> None:
            self.path = path

    latest = types.ModuleType("comfy_api.latest")
    latest.InputImpl = types.SimpleNamespace(VideoFromFile=VideoFromFile)
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
    (input_dir / "clip.mp4").write_bytes(b"x")
    node = package.NODE_CLASS_MAPPINGS["ApiInputVideo"]
    [video] = node().run(name="video", file="clip.mp4")
    assert video.path == str(input_dir / "clip.mp4")
    assert node.VALIDATE_INPUTS(file="clip.mp4") is True
    assert node.VALIDATE_INPUTS(file="nope.mp4") == "Invalid video file: nope.mp4"
    mtime = os.path.getmtime(input_dir / "clip.mp4")
    assert node.IS_CHANGED(name="video", file="clip.mp4", description="") == mtime
