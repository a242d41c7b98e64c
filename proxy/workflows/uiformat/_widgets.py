"""Node classes as the frontend builds them from `/object_info`: widgets, sockets, outputs.

A class's inputs become widgets in `input_order` (required, then optional), each with the
extra widgets the frontend adds: an INT with `control_after_generate` (or named seed or
noise_seed) is followed by its control widget, a COMBO with it by a control and a filter
widget, an upload combo's node gets its button. `widgets_values` fills them in that order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from proxy.workflows.uiformat._js import UNDEFINED, js_string, textarea, truthy

SEED_NAMES: Final = ("seed", "noise_seed")
# Node types the frontend renames while loading a workflow (app.loadGraphData).
RENAMED: Final = {
    "T2IAdapterLoader": "ControlNetLoader",
    "ConditioningAverage ": "ConditioningAverage",
    "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning",
}
# Where the frontend's English locale names a class that ComfyUI 0.3.64 leaves without a
# display_name; an untitled node of such a class carries this title.
_LOCALE_TITLES: Final = {
    "ImageBlend": "Image Blend",
    "ImageBlur": "Image Blur",
    "ImageQuantize": "Image Quantize",
    "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
    "ImageSharpen": "Image Sharpen",
}
# Classes the audio extension gives an `audioUI` player widget.
_AUDIO_UI_CLASSES: Final = frozenset(
    {"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus"}
)
# Input types the frontend turns into widgets (its core widgets and its own extensions').
WIDGET_TYPES: Final = frozenset(
    {
        "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "IMAGEUPLOAD", "FILEUPLOAD",
        "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA",
        "SELECTBUTTON", "TEXTAREA", "AUDIO_UI", "AUDIOUPLOAD", "AUDIO_RECORD", "WEBCAM",
        "LOAD_3D", "LOAD_3D_ANIMATION", "PREVIEW_3D", "PREVIEW_3D_ANIMATION",
    }
)  # fmt: skip
# The frontend's core widgets (ComfyWidgets), which a PrimitiveNode can stand in for.
CORE_WIDGETS: Final = frozenset(
    {
        "INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "FILEUPLOAD",
        "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA",
        "SELECTBUTTON", "TEXTAREA",
    }
)  # fmt: skip
# Widgets whose prompt value the browser makes (a camera frame, a 3D render, a recording).
_BROWSER_ONLY: Final = frozenset(
    {"WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION", "PREVIEW_3D", "PREVIEW_3D_ANIMATION", "AUDIO_RECORD"}
)
_BROWSER_ONLY_CLASSES: Final = {
    "Preview3D": "PREVIEW_3D",
    "Preview3DAnimation": "PREVIEW_3D_ANIMATION",
}
_UPLOAD_FLAGS: Final = ("image_upload", "video_upload", "animated_image_upload")


@dataclass(eq=False)
class Widget:
    """One frontend widget: its value, whether it has a place in `widgets_values`, whether
    it reaches the prompt."""

    name: str
    value: Any
    slot: bool = True  # widget.serialize !== false
    in_prompt: bool = True  # widget.options.serialize !== false
    input_type: str = ""
    multiline: bool = False
    dynamic: bool = False
    fixed: bool = False  # a DOM widget without a value of its own (audioUI)
    upload_folder: str | None = None  # a combo an upload button drives
    upload_initial: str = ""
    allow_batch: bool = False
    # A subgraph's promoted copy of a textarea keeps its text in the same <textarea>.
    shared: Widget | None = None

    def assign(self, value: Any) -> None:
        if self.shared is not None:
            self.shared.assign(value)
        elif not self.fixed:
            self.value = textarea(value) if self.multiline else value

    def raw(self) -> Any:
        """The widget's value as the frontend holds it."""
        return self.shared.raw() if self.shared is not None else self.value

    def read(self) -> Any:
        """The value the widget reports (an upload combo annotates its file)."""
        if self.upload_folder is None:
            return self.raw()
        return self._upload_path(self.raw())

    def _upload_path(self, value: Any) -> Any:
        # The upload widget reports files as annotated paths ("x.png [output]").
        if not truthy(value):
            return self.upload_initial
        if isinstance(value, list):
            if self.allow_batch:
                return [self._annotated(v) for v in value]
            return self._annotated(value[0] if value else UNDEFINED)
        return self._annotated(value)

    def _annotated(self, item: Any) -> str:
        folder = self.upload_folder or "input"

        def annotation(path: str) -> str:
            marked = re.search(r"\[(input|output|temp)\]", path, re.IGNORECASE)
            return f" [{folder}]" if not marked and folder != "input" else ""

        if isinstance(item, str):
            return item + annotation(item)
        if isinstance(item, dict):
            name = js_string(item.get("filename", ""))
            sub = item.get("subfolder")
            path = f"{js_string(sub)}/{name}" if truthy(sub) else name
            kind = item.get("type")
            return path + (annotation(js_string(kind)) if truthy(kind) else "")
        return ""


@dataclass(frozen=True)
class Spec:
    """One input of a node definition, as the frontend's V2 definition holds it."""

    name: str
    type: str  # "COMBO" for a list of choices
    options: dict[str, Any]
    optional: bool = False
    combo_choices: tuple[Any, ...] | None = None

    @property
    def widget_type(self) -> str:
        widget_type = self.options.get("widgetType")
        return widget_type if isinstance(widget_type, str) and widget_type else self.type

    @property
    def is_widget(self) -> bool:
        return self.widget_type in WIDGET_TYPES and not self.options.get("forceInput")


def parse_spec(name: str, raw: Any, optional: bool) -> Spec:
    """One `/object_info` input (`[type, options]`) as the frontend's V2 definition."""
    kind = raw[0] if isinstance(raw, list | tuple) and raw else None
    options = raw[1] if isinstance(raw, list | tuple) and len(raw) > 1 else {}
    options = options if isinstance(options, dict) else {}
    if isinstance(kind, list | tuple):
        return Spec(name, "COMBO", options, optional, tuple(kind))
    if kind == "COMBO":
        choices = options.get("options")
        return Spec(name, "COMBO", options, optional, tuple(choices or ()))
    return Spec(name, kind if isinstance(kind, str) else "UNKNOWN", options, optional)


def _combo_default(spec: Spec) -> Any:
    default = spec.options.get("default")
    if truthy(default):
        return default
    if spec.combo_choices:
        return spec.combo_choices[0]
    if spec.options.get("remote"):
        return "Loading..."
    return UNDEFINED


def _control_name(options: dict[str, Any], given: str | None, default: str) -> str:
    if given:
        return given
    own = options.get(default)
    if isinstance(own, str):
        return own
    prefix = options.get("control_prefix")
    return f"{prefix} {default}" if truthy(prefix) else default


def add_widgets(spec: Spec, made: list[Widget]) -> None:
    """The widgets the frontend adds for one widget input (ComfyWidgets and extensions)."""
    kind, opts, name = spec.widget_type, spec.options, spec.name

    def default(fallback: Any) -> Any:
        value = opts.get("default")
        return fallback if value is None else value

    if kind == "INT":
        made.append(Widget(name, default(0), input_type=spec.type))
        control = opts.get("control_after_generate")
        if control is None:
            control = name in SEED_NAMES
        if control:
            given = opts.get("control_after_generate")
            label = _control_name(
                opts, given if isinstance(given, str) else None, "control_after_generate"
            )
            made.append(Widget(label, "randomize", in_prompt=False))
    elif kind == "FLOAT":
        made.append(Widget(name, default(0), input_type=spec.type))
    elif kind == "BOOLEAN":
        made.append(Widget(name, default(False), input_type=spec.type))
    elif kind == "STRING":
        multiline = bool(opts.get("multiline"))
        text = default("")
        made.append(
            Widget(
                name,
                textarea(text) if multiline else text,
                input_type=spec.type,
                multiline=multiline,
                dynamic=opts.get("dynamicPrompts") is True,
            )
        )
    elif kind == "COMBO":
        choice: Any = [] if opts.get("multi_select") else _combo_default(spec)
        made.append(Widget(name, choice, input_type=spec.type))
        remote = opts.get("remote")
        if isinstance(remote, dict) and remote.get("refresh_button"):
            # A plain button: the frontend saves it and even puts it in the prompt.
            made.append(Widget("refresh", "refresh"))
        if opts.get("control_after_generate") and not opts.get("multi_select"):
            made.append(
                Widget(
                    _control_name(opts, None, "control_after_generate"),
                    "randomize",
                    in_prompt=False,
                )
            )
            made.append(
                Widget(_control_name(opts, None, "control_filter_list"), "", in_prompt=False)
            )
    elif kind == "IMAGEUPLOAD":
        target = next((w for w in made if w.name == opts.get("imageInputName")), None)
        if target is not None:
            target.upload_initial = js_string(target.value)
            target.value = target.upload_initial
            folder = opts.get("image_folder")
            target.upload_folder = "input" if folder is None else js_string(folder)
            target.allow_batch = truthy(opts.get("allow_batch"))
        made.append(Widget(name, "image", in_prompt=False))
    elif kind == "AUDIOUPLOAD":
        made.append(Widget(name, "", in_prompt=False))
    elif kind == "AUDIO_UI":
        made.append(Widget(name, "", slot=False, fixed=True))
    else:
        made.append(Widget(name, opts.get("default", UNDEFINED), input_type=spec.type))


@dataclass
class Layout:
    """A class as the frontend builds its nodes: widgets, input sockets, output types."""

    class_type: str
    title: str
    specs: dict[str, Spec]  # in definition order
    ordered: list[Spec]  # in widget order
    outputs: list[str]
    browser_only: str | None = None

    def new_widgets(self) -> list[Widget]:
        made: list[Widget] = []
        for spec in self.ordered:
            if spec.is_widget:
                add_widgets(spec, made)
        return made

    def sockets(self) -> list[tuple[str, str, str | None]]:
        """(name, type, widget name) of each input socket: plain inputs, then widgets."""
        plain: list[tuple[str, str, str | None]] = [
            (s.name, s.type, None) for s in self.ordered if not s.is_widget
        ]
        return plain + [(s.name, s.type, s.name) for s in self.ordered if s.is_widget]

    def migrate_values(self, values: list[Any], widgets: list[Widget]) -> list[Any]:
        """Drop the placeholder values older frontends saved for forceInput inputs."""
        names = {w.name for w in widgets}
        originals = [
            s for s in self.specs.values() if s.name in names or s.options.get("forceInput")
        ]
        expected = sum(
            2 if s.options.get("control_after_generate") or s.name in SEED_NAMES else 1
            for s in originals
        )
        if expected != len(values):
            return values
        padded: list[Spec | None] = [*originals, *([None] * (len(values) - len(originals)))]
        return [
            v
            for s, v in zip(padded, values, strict=False)
            if not (s and s.options.get("forceInput"))
        ]


def build_layout(class_type: str, info: dict[str, Any]) -> Layout:
    """How the frontend builds nodes of a class from its `/object_info` entry."""
    inputs = info.get("input") if isinstance(info.get("input"), dict) else {}
    assert isinstance(inputs, dict)
    required = dict(inputs.get("required") or {})
    optional = dict(inputs.get("optional") or {})
    # What the frontend's extensions add to definitions before building nodes.
    for name, raw in list(required.items()):
        opts = raw[1] if isinstance(raw, list | tuple) and len(raw) > 1 else {}
        kind = raw[0] if isinstance(raw, list | tuple) and raw else None
        if (
            isinstance(opts, dict)
            and any(opts.get(flag) is True for flag in _UPLOAD_FLAGS)
            and (isinstance(kind, list) or kind == "COMBO")
        ):
            required["upload"] = ["IMAGEUPLOAD", {**opts, "imageInputName": name}]
            break
    if class_type in _AUDIO_UI_CLASSES:
        required["audioUI"] = ["AUDIO_UI", {}]
    audio = required.get("audio")
    if isinstance(audio, list) and len(audio) > 1 and isinstance(audio[1], dict):
        if audio[1].get("audio_upload") is True:
            required["upload"] = ["AUDIOUPLOAD", {}]
    browser_only = _BROWSER_ONLY_CLASSES.get(class_type)
    if browser_only:
        required["image"] = [browser_only]

    specs: dict[str, Spec] = {}
    for name, raw in required.items():
        specs[name] = parse_spec(name, raw, False)
    for name, raw in optional.items():
        spec = parse_spec(name, raw, True)
        if spec.options.get("defaultInput"):
            spec = Spec(
                spec.name, spec.type, {**spec.options, "forceInput": True}, True, spec.combo_choices
            )
        specs[name] = spec

    ordered: list[Spec] = []
    order = info.get("input_order")
    if isinstance(order, dict):
        for section, is_optional in (("required", False), ("optional", True)):
            for name in order.get(section) or ():
                found = specs.get(name)
                if found is not None and found.optional == is_optional and found not in ordered:
                    ordered.append(found)
        ordered += [s for s in specs.values() if s not in ordered]
    else:
        ordered = list(specs.values())

    browser = next(
        (s.widget_type for s in ordered if s.is_widget and s.widget_type in _BROWSER_ONLY), None
    )
    outputs = [
        "COMBO" if isinstance(kind, list) else js_string(kind) for kind in info.get("output") or ()
    ]
    title = _LOCALE_TITLES.get(class_type) or info.get("display_name") or class_type
    return Layout(class_type, str(title), specs, ordered, outputs, browser)
