"""Convert the graph editor's UI-format workflow into ComfyUI's API format.

The editor saves litegraph JSON (`nodes`, `links`, `widgets_values`, `mode`, ...); `/prompt`
takes `{"<id>": {"class_type", "inputs", "_meta": {"title"}}}` with links as
`["<origin id>", <origin slot>]`. `to_api` gives what the frontend's `graphToPrompt` gives
for the same graph (comfyui-frontend-package 1.27.10, the one ComfyUI 0.3.64 ships), with
`/object_info` standing in for the frontend's node definitions:

- widgets are laid out as the frontend builds them: the widget inputs in `input_order`
  (required, then optional); an INT with `control_after_generate` (or named seed or
  noise_seed) followed by its control widget, a COMBO with it by a control and a filter
  widget, an upload combo's node by its button. `widgets_values` fills them in that order
  (or by name when it is a dict) and only real inputs reach the prompt;
- a link wins over the widget of the same input. Links are followed through Reroute nodes
  (native reroutes are drawing only) and bypassed nodes (to their input of a matching
  type); an input linked from a muted node is dropped;
- a PrimitiveNode writes its value into every widget it feeds and is not emitted, nor are
  notes, reroutes, subgraph and group nodes, whose inner nodes get ids like "12:5".

What cannot be converted raises `ConversionError`, which names the node and why.
"""

from __future__ import annotations

import copy
import math
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

__all__ = ["ConversionError", "is_ui_format", "to_api"]

MODE_NEVER: Final = 2  # muted: dropped, with every input linked from it
MODE_BYPASS: Final = 4  # bypassed: its outputs pass on a matching input

_SUBGRAPH_INPUT_ID: Final = "-10"
_GROUP_PREFIXES: Final = ("workflow>", "workflow/")
_SEED_NAMES: Final = ("seed", "noise_seed")

# Node types the frontend renames while loading a workflow (app.loadGraphData).
_RENAMED: Final = {
    "T2IAdapterLoader": "ControlNetLoader",
    "ConditioningAverage ": "ConditioningAverage",
    "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning",
}
# Frontend-only classes: never in the prompt.
_NOTES: Final = frozenset({"Note", "MarkdownNote"})
_SYSTEM_TITLES: Final = {
    "PrimitiveNode": "Primitive",
    "Reroute": "Reroute",
    "Note": "Note",
    "MarkdownNote": "Markdown Note",
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
_WIDGET_TYPES: Final = frozenset(
    {
        "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "IMAGEUPLOAD", "FILEUPLOAD",
        "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA",
        "SELECTBUTTON", "TEXTAREA", "AUDIO_UI", "AUDIOUPLOAD", "AUDIO_RECORD", "WEBCAM",
        "LOAD_3D", "LOAD_3D_ANIMATION", "PREVIEW_3D", "PREVIEW_3D_ANIMATION",
    }
)  # fmt: skip
# Widgets whose prompt value the browser makes (a camera frame, a 3D render, a recording).
# The frontend's core widgets (ComfyWidgets), which a PrimitiveNode can stand in for.
_CORE_WIDGETS: Final = frozenset(
    {
        "INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "FILEUPLOAD",
        "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA",
        "SELECTBUTTON", "TEXTAREA",
    }
)  # fmt: skip
_BROWSER_ONLY: Final = frozenset(
    {"WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION", "PREVIEW_3D", "PREVIEW_3D_ANIMATION", "AUDIO_RECORD"}
)
_BROWSER_ONLY_CLASSES: Final = {
    "Preview3D": "PREVIEW_3D",
    "Preview3DAnimation": "PREVIEW_3D_ANIMATION",
}
_UPLOAD_FLAGS: Final = ("image_upload", "video_upload", "animated_image_upload")
_REPLACE_PROPERTY: Final = "Run widget replace on values"


class _Undefined:
    """JavaScript's `undefined`: a widget value JSON.stringify leaves out."""

    def __repr__(self) -> str:
        return "undefined"


_UNDEFINED: Final = _Undefined()


class ConversionError(ValueError):
    """A UI-format workflow that cannot become an API prompt: names the node and why.

    `node_id` is the node's id in the prompt ("12", or "12:5" inside a subgraph), or None
    when the workflow as a whole is at fault.
    """

    def __init__(
        self,
        node_id: str | None,
        why: str,
        *,
        title: str | None = None,
        class_type: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.title = title
        self.class_type = class_type
        self.why = why
        if node_id is None:
            message = why
        else:
            named = f' "{title}"' if title else ""
            kind = f" ({class_type})" if class_type else ""
            message = f"node {node_id}{named}{kind}: {why}"
        super().__init__(message)


def is_ui_format(data: Any) -> bool:
    """Whether `data` is the editor's UI format (litegraph JSON with a `nodes` list)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def _is_api_format(data: Any) -> bool:
    return isinstance(data, dict) and all(
        isinstance(node, dict) and "class_type" in node for node in data.values()
    )


def to_api(
    workflow: dict[str, Any],
    object_info: dict[str, Any],
    *,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """The API-format prompt the frontend would queue for `workflow`.

    API-format input is returned as it is. `rng` picks among `{a|b}` choices in dynamic
    prompts, as the frontend does at random on every queue.
    """
    if not is_ui_format(workflow):
        if _is_api_format(workflow):
            return workflow
        raise ConversionError(
            None, "neither the editor's UI format (no 'nodes' list) nor API format"
        )
    return _Converter(workflow, object_info, rng or random.Random()).convert()


# --- JavaScript value semantics ------------------------------------------------------------


def _truthy(value: Any) -> bool:
    if value is None or value is _UNDEFINED:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, bool | int | float | str):
        return bool(value)
    return True


def _js_string(value: Any) -> str:
    """`String(value)` in JavaScript."""
    if value is None:
        return "null"
    if value is _UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            return f"{mantissa}e{'-' if exponent.startswith('-') else '+'}{exponent.lstrip('+-0')}"
        return text
    if isinstance(value, list):
        return ",".join("" if v is None else _js_string(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _textarea(value: Any) -> str:
    """What a <textarea> gives back after `value` is assigned (null is empty, CR LF is LF)."""
    text = "" if value is None else _js_string(value)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _is_valid_connection(type_a: Any, type_b: Any) -> bool:
    """litegraph's slot type check: wildcards, exact match, or any of comma-listed types."""
    a: Any = 0 if type_a in ("", "*") else type_a
    b: Any = 0 if type_b in ("", "*") else type_b
    if not _truthy(a) or not _truthy(b) or a == b:
        return True
    left, right = str(a).lower(), str(b).lower()
    if "," not in left and "," not in right:
        return left == right
    return any(_is_valid_connection(x, y) for x in left.split(",") for y in right.split(","))


def _dynamic_prompt(text: str, rng: random.Random) -> str:
    """The frontend's dynamic prompt: strip C-style comments, pick one of each {a|b|c}."""
    text = re.sub(r"/\*[\s\S]*?\*/|//[^\n\r\u2028\u2029]*", "", text)
    pos = 0

    def escape() -> str:
        nonlocal pos
        following = text[pos] if pos < len(text) else "undefined"
        pos += 1
        return "\\" + following

    def choice() -> str:
        nonlocal pos
        options: list[str] = []
        current = ""
        depth = 0
        while pos < len(text):
            char = text[pos]
            pos += 1
            if char == "\\":
                current += escape()
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(current)
                current = ""
                continue
            current += char
        options.append(current)
        return _dynamic_prompt(options[math.floor(rng.random() * len(options))], rng)

    result = ""
    while pos < len(text):
        char = text[pos]
        pos += 1
        if char == "\\":
            result += escape()
        elif char == "{":
            result += choice()
        else:
            result += char
    return re.sub(r"\\([{}|])", r"\1", result)


# --- widgets -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Widget:
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
    shared: _Widget | None = None

    def assign(self, value: Any) -> None:
        if self.shared is not None:
            self.shared.assign(value)
        elif not self.fixed:
            self.value = _textarea(value) if self.multiline else value

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
        if not _truthy(value):
            return self.upload_initial
        if isinstance(value, list):
            if self.allow_batch:
                return [self._annotated(v) for v in value]
            return self._annotated(value[0] if value else _UNDEFINED)
        return self._annotated(value)

    def _annotated(self, item: Any) -> str:
        folder = self.upload_folder or "input"

        def annotation(path: str) -> str:
            marked = re.search(r"\[(input|output|temp)\]", path, re.IGNORECASE)
            return f" [{folder}]" if not marked and folder != "input" else ""

        if isinstance(item, str):
            return item + annotation(item)
        if isinstance(item, dict):
            name = _js_string(item.get("filename", ""))
            sub = item.get("subfolder")
            path = f"{_js_string(sub)}/{name}" if _truthy(sub) else name
            kind = item.get("type")
            return path + (annotation(_js_string(kind)) if _truthy(kind) else "")
        return ""


@dataclass(frozen=True)
class _Spec:
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
        return self.widget_type in _WIDGET_TYPES and not self.options.get("forceInput")


def _spec(name: str, raw: Any, optional: bool) -> _Spec:
    kind = raw[0] if isinstance(raw, list | tuple) and raw else None
    options = raw[1] if isinstance(raw, list | tuple) and len(raw) > 1 else {}
    options = options if isinstance(options, dict) else {}
    if isinstance(kind, list | tuple):
        return _Spec(name, "COMBO", options, optional, tuple(kind))
    if kind == "COMBO":
        choices = options.get("options")
        return _Spec(name, "COMBO", options, optional, tuple(choices or ()))
    return _Spec(name, kind if isinstance(kind, str) else "UNKNOWN", options, optional)


def _combo_default(spec: _Spec) -> Any:
    default = spec.options.get("default")
    if _truthy(default):
        return default
    if spec.combo_choices:
        return spec.combo_choices[0]
    if spec.options.get("remote"):
        return "Loading..."
    return _UNDEFINED


def _control_name(options: dict[str, Any], given: str | None, default: str) -> str:
    if given:
        return given
    own = options.get(default)
    if isinstance(own, str):
        return own
    prefix = options.get("control_prefix")
    return f"{prefix} {default}" if _truthy(prefix) else default


def _add_widgets(spec: _Spec, made: list[_Widget]) -> None:
    """The widgets the frontend adds for one widget input (ComfyWidgets and extensions)."""
    kind, opts, name = spec.widget_type, spec.options, spec.name

    def default(fallback: Any) -> Any:
        value = opts.get("default")
        return fallback if value is None else value

    if kind == "INT":
        made.append(_Widget(name, default(0), input_type=spec.type))
        control = opts.get("control_after_generate")
        if control is None:
            control = name in _SEED_NAMES
        if control:
            given = opts.get("control_after_generate")
            label = _control_name(
                opts, given if isinstance(given, str) else None, "control_after_generate"
            )
            made.append(_Widget(label, "randomize", in_prompt=False))
    elif kind == "FLOAT":
        made.append(_Widget(name, default(0), input_type=spec.type))
    elif kind == "BOOLEAN":
        made.append(_Widget(name, default(False), input_type=spec.type))
    elif kind == "STRING":
        multiline = bool(opts.get("multiline"))
        text = default("")
        made.append(
            _Widget(
                name,
                _textarea(text) if multiline else text,
                input_type=spec.type,
                multiline=multiline,
                dynamic=opts.get("dynamicPrompts") is True,
            )
        )
    elif kind == "COMBO":
        choice: Any = [] if opts.get("multi_select") else _combo_default(spec)
        made.append(_Widget(name, choice, input_type=spec.type))
        remote = opts.get("remote")
        if isinstance(remote, dict) and remote.get("refresh_button"):
            # A plain button: the frontend saves it and even puts it in the prompt.
            made.append(_Widget("refresh", "refresh"))
        if opts.get("control_after_generate") and not opts.get("multi_select"):
            made.append(
                _Widget(
                    _control_name(opts, None, "control_after_generate"),
                    "randomize",
                    in_prompt=False,
                )
            )
            made.append(
                _Widget(_control_name(opts, None, "control_filter_list"), "", in_prompt=False)
            )
    elif kind == "IMAGEUPLOAD":
        target = next((w for w in made if w.name == opts.get("imageInputName")), None)
        if target is not None:
            target.upload_initial = _js_string(target.value)
            target.value = target.upload_initial
            folder = opts.get("image_folder")
            target.upload_folder = "input" if folder is None else _js_string(folder)
            target.allow_batch = _truthy(opts.get("allow_batch"))
        made.append(_Widget(name, "image", in_prompt=False))
    elif kind == "AUDIOUPLOAD":
        made.append(_Widget(name, "", in_prompt=False))
    elif kind == "AUDIO_UI":
        made.append(_Widget(name, "", slot=False, fixed=True))
    else:
        made.append(_Widget(name, opts.get("default", _UNDEFINED), input_type=spec.type))


@dataclass
class _Layout:
    """A class as the frontend builds its nodes: widgets, input sockets, output types."""

    class_type: str
    title: str
    specs: dict[str, _Spec]  # in definition order
    ordered: list[_Spec]  # in widget order
    outputs: list[str]
    browser_only: str | None = None

    def new_widgets(self) -> list[_Widget]:
        made: list[_Widget] = []
        for spec in self.ordered:
            if spec.is_widget:
                _add_widgets(spec, made)
        return made

    def sockets(self) -> list[tuple[str, str, str | None]]:
        """(name, type, widget name) of each input socket: plain inputs, then widgets."""
        plain: list[tuple[str, str, str | None]] = [
            (s.name, s.type, None) for s in self.ordered if not s.is_widget
        ]
        return plain + [(s.name, s.type, s.name) for s in self.ordered if s.is_widget]

    def migrate_values(self, values: list[Any], widgets: list[_Widget]) -> list[Any]:
        """Drop the placeholder values older frontends saved for forceInput inputs."""
        names = {w.name for w in widgets}
        originals = [
            s for s in self.specs.values() if s.name in names or s.options.get("forceInput")
        ]
        expected = sum(
            2 if s.options.get("control_after_generate") or s.name in _SEED_NAMES else 1
            for s in originals
        )
        if expected != len(values):
            return values
        padded: list[_Spec | None] = [*originals, *([None] * (len(values) - len(originals)))]
        return [
            v
            for s, v in zip(padded, values, strict=False)
            if not (s and s.options.get("forceInput"))
        ]


def _layout(class_type: str, info: dict[str, Any]) -> _Layout:
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

    specs: dict[str, _Spec] = {}
    for name, raw in required.items():
        specs[name] = _spec(name, raw, False)
    for name, raw in optional.items():
        spec = _spec(name, raw, True)
        if spec.options.get("defaultInput"):
            spec = _Spec(
                spec.name, spec.type, {**spec.options, "forceInput": True}, True, spec.combo_choices
            )
        specs[name] = spec

    ordered: list[_Spec] = []
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
        "COMBO" if isinstance(kind, list) else _js_string(kind) for kind in info.get("output") or ()
    ]
    title = _LOCALE_TITLES.get(class_type) or info.get("display_name") or class_type
    return _Layout(class_type, str(title), specs, ordered, outputs, browser)


# --- the loaded graph ----------------------------------------------------------------------


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _js_string(value)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return default
    return default


@dataclass
class _Link:
    id: int
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


def _parse_link(raw: Any) -> _Link | None:
    if isinstance(raw, list) and len(raw) >= 5:
        kind = raw[5] if len(raw) > 5 else "*"
        return _Link(_int(raw[0], -1), _key(raw[1]), _int(raw[2]), _key(raw[3]), _int(raw[4]), kind)
    if isinstance(raw, dict) and "id" in raw:
        return _Link(
            _int(raw["id"], -1),
            _key(raw.get("origin_id")),
            _int(raw.get("origin_slot")),
            _key(raw.get("target_id")),
            _int(raw.get("target_slot")),
            raw.get("type", "*"),
        )
    return None


@dataclass(eq=False)
class _Slot:
    name: str
    type: Any
    link: int | None = None  # an input's link
    widget: str | None = None  # the widget an input feeds
    links: list[int] = field(default_factory=list)  # an output's links


@dataclass(eq=False)
class _Graph:
    """The root graph or one subgraph definition (shared by all its instances)."""

    id: str | None
    nodes: dict[str, _Node] = field(default_factory=dict)
    links: dict[int, _Link] = field(default_factory=dict)
    io_inputs: list[tuple[str, Any, list[int]]] = field(default_factory=list)
    io_outputs: list[tuple[str, Any, list[int]]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.id if self.id is not None else "undefined"

    def target_input(self, link: _Link) -> tuple[_Node, int] | None:
        """The node and input slot a link arrives at."""
        node = self.nodes.get(link.target_id)
        if node is None:
            return None
        for index, slot in enumerate(node.inputs):
            if slot.link == link.id:
                return node, index
        if 0 <= link.target_slot < len(node.inputs):
            return node, link.target_slot
        return None


@dataclass(eq=False)
class _Node:
    """One node as the frontend holds it after loading."""

    id: str
    raw: dict[str, Any]
    type: str
    kind: str  # node | primitive | reroute | note | subgraph | group | unknown
    title: str
    mode: int
    graph: _Graph
    inputs: list[_Slot] = field(default_factory=list)
    outputs: list[_Slot] = field(default_factory=list)
    widgets: list[_Widget] = field(default_factory=list)
    subgraph: _Graph | None = None
    group: _GroupDef | None = None
    problem: str | None = None  # why it cannot be emitted

    @property
    def is_virtual(self) -> bool:
        return self.kind in ("primitive", "reroute", "note", "subgraph", "group")

    def widget(self, name: str | None) -> _Widget | None:
        return next((w for w in self.widgets if w.name == name), None) if name else None


def _json_slots(raw: Any, output: bool) -> list[_Slot]:
    slots = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict):
            slots.append(_Slot("", "*"))
            continue
        widget = item.get("widget")
        slots.append(
            _Slot(
                name=_js_string(item.get("name", "")),
                type=item.get("type", "*"),
                link=None if output or item.get("link") is None else _int(item["link"], -1),
                widget=_js_string(widget["name"])
                if isinstance(widget, dict) and "name" in widget
                else None,
                links=[_int(x, -1) for x in item.get("links") or ()] if output else [],
            )
        )
    return slots


@dataclass
class _Resolved:
    origin_id: str
    origin_slot: int


@dataclass
class _WidgetValue:
    value: Any


@dataclass(eq=False)
class _Dto:
    """A node in the flattened graph (ExecutableNodeDTO): a node in one place."""

    node: _Node
    path: tuple[str, ...]  # ids of the subgraph or group instances around it
    instance: _Dto | None = None  # the subgraph instance around it
    group: _Dto | None = None  # the group node it belongs to (legacy group nodes)
    index: int = -1  # its index in that group

    @property
    def id(self) -> str:
        return ":".join((*self.path, self.node.id))

    def fail(self, why: str) -> ConversionError:
        return ConversionError(self.id, why, title=self.node.title, class_type=self.node.type)


# --- legacy group nodes --------------------------------------------------------------------


@dataclass
class _GroupDef:
    """A legacy group node type (`extra.groupNodes`): its inner nodes and its own layout."""

    name: str
    nodes: list[dict[str, Any]]
    links_to: dict[int, dict[int, list[Any]]]
    links_from: dict[int, dict[int, list[list[Any]]]]
    external: dict[int, dict[int, Any]]
    layout: _Layout
    new_to_old_widget: dict[str, tuple[int, str]]
    primitive_to_widget: dict[int, list[tuple[int, str]]]
    old_to_new_input: dict[int, dict[int, int]]
    new_to_old_output: list[tuple[int, int]]


def _group_def(name: str, data: dict[str, Any], object_info: dict[str, Any]) -> _GroupDef:
    """Mirror of the frontend's GroupNodeConfig: which inner widgets and inputs it shows."""
    nodes = [n for n in data.get("nodes") or () if isinstance(n, dict)]
    links_to: dict[int, dict[int, list[Any]]] = {}
    links_from: dict[int, dict[int, list[list[Any]]]] = {}
    for link in data.get("links") or ():
        if not isinstance(link, list) or len(link) < 4 or link[0] is None:
            continue
        source, source_slot, target, target_slot = (_int(x, -1) for x in link[:4])
        links_from.setdefault(source, {}).setdefault(source_slot, []).append(link)
        links_to.setdefault(target, {})[target_slot] = link
    external: dict[int, dict[int, Any]] = {}
    for ext in data.get("external") or ():
        if isinstance(ext, list) and len(ext) >= 3:
            external.setdefault(_int(ext[0], -1), {})[_int(ext[1], -1)] = ext[2]
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    assert isinstance(config, dict)

    required: dict[str, list[Any]] = {}
    outputs: list[str] = []
    new_to_old_output: list[tuple[int, int]] = []
    new_to_old_widget: dict[str, tuple[int, str]] = {}
    old_to_new_widget: dict[int, dict[str, str | None]] = {}
    primitive_to_widget: dict[int, list[tuple[int, str]]] = {}
    old_to_new_input: dict[int, dict[int, int]] = {}
    primitive_defs: dict[int, list[Any]] = {}
    seen_inputs: dict[str, int] = {}
    later: list[tuple[int, dict[str, Any], dict[str, Any], list[str], dict[int, str]]] = []
    input_count = 0

    def node_config(index: int) -> dict[str, Any]:
        entry = config.get(str(index)) if isinstance(config, dict) else None
        return entry if isinstance(entry, dict) else {}

    def input_config(
        index: int, node: dict[str, Any], input_name: str, raw: list[Any], extra: dict[str, Any]
    ) -> tuple[str, list[Any], dict[str, Any]]:
        custom = (node_config(index).get("input") or {}).get(input_name) or {}
        label = next(
            (
                i.get("label")
                for i in node.get("inputs") or ()
                if isinstance(i, dict) and i.get("name") == input_name
            ),
            None,
        )
        shown = custom.get("name") or label or input_name
        key, prefix = shown, ""
        if (node.get("type") == "PrimitiveNode" and node.get("title")) or shown in seen_inputs:
            prefix = f"{node.get('title') or node.get('type')} "
            key = shown = f"{prefix}{input_name}"
            if shown in seen_inputs:
                shown = f"{prefix}{seen_inputs[shown]} {input_name}"
        seen_inputs[key] = seen_inputs.get(key, 1) + 1
        if input_name in _SEED_NAMES:
            extra = {**extra, "control_after_generate": f"{prefix}control_after_generate"}
        if raw and raw[0] == "IMAGEUPLOAD":
            widget = (
                raw[1].get("widget", "image")
                if len(raw) > 1 and isinstance(raw[1], dict)
                else "image"
            )
            extra = {**extra, "widget": (old_to_new_widget.get(index) or {}).get(widget) or "image"}
        if extra:
            raw = [
                raw[0],
                {**(raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}), **extra},
            ]
        return shown, raw, custom

    def inner_def(index: int, node: dict[str, Any]) -> dict[str, Any] | None:
        kind = _RENAMED.get(str(node.get("type")), str(node.get("type")))
        if kind in object_info:
            info = object_info[kind]
            layout_inputs = _layout(kind, info).specs
            return {
                "inputs": {n: _v1(s) for n, s in layout_inputs.items()},
                "output": info.get("output") or [],
                "output_name": info.get("output_name") or [],
            }
        sources = links_from.get(index)
        if kind == "PrimitiveNode":
            if not sources or not sources.get(0):
                return None
            first = sources[0][0]
            link_type: Any = first[5] if len(first) > 5 else "*"
            if link_type == "COMBO":
                outs = node.get("outputs") or [{}]
                widget_name = ((outs[0] or {}).get("widget") or {}).get("name")
                target = nodes[_int(first[2])]
                target_info = object_info.get(str(target.get("type")), {}).get("input", {})
                spec = (target_info.get("required") or {}).get(widget_name) or (
                    target_info.get("optional") or {}
                ).get(widget_name)
                link_type = spec[0] if spec else link_type
            primitive_defs[index] = [link_type, {}]
            return {
                "inputs": {"value": primitive_defs[index]},
                "output": [link_type],
                "output_name": [],
            }
        if kind == "Reroute":
            if links_to.get(index) and sources and not (external.get(index) or {}).get(0):
                return None
            reroute_type = "*"
            return {
                "inputs": {reroute_type: [reroute_type, {"forceInput": True}]},
                "output": [reroute_type],
                "output_name": [],
            }
        return None

    for index, node in enumerate(nodes):
        definition = inner_def(index, node)
        if definition is None:
            continue
        inputs: dict[str, Any] = definition["inputs"]
        widget_map = old_to_new_widget.setdefault(index, {})
        converted: dict[int, str] = {}
        slots: list[str] = []
        for input_name, raw in inputs.items():
            if _spec(input_name, raw, False).type in _WIDGET_TYPES:
                found = next(
                    (
                        k
                        for k, i in enumerate(node.get("inputs") or ())
                        if isinstance(i, dict)
                        and i.get("name") == input_name
                        and isinstance(i.get("widget"), dict)
                        and i["widget"].get("name") == input_name
                    ),
                    -1,
                )
                if found > -1:
                    converted[found] = input_name
                    widget_map[input_name] = None
                else:
                    shown, conf, _ = input_config(index, node, input_name, raw, {})
                    required[shown] = conf
                    widget_map[input_name] = shown
                    new_to_old_widget[shown] = (index, input_name)
            else:
                slots.append(input_name)
        incoming = links_to.get(index, {})
        input_map = old_to_new_input.setdefault(index, {})
        for k, input_name in enumerate(slots):
            if incoming.get(k):
                _group_primitive(
                    incoming[k],
                    index,
                    input_name,
                    inputs[input_name],
                    primitive_defs,
                    primitive_to_widget,
                )
                continue
            shown, conf, custom = input_config(index, node, input_name, inputs[input_name], {})
            if custom.get("visible") is False:
                continue
            required[shown] = conf
            input_map[k] = input_count
            input_count += 1
        later.append((index, node, inputs, slots, converted))
        for out_index, out_type in enumerate(definition["output"]):
            linked = (links_from.get(index) or {}).get(out_index) and not (
                external.get(index) or {}
            ).get(out_index)
            custom_out = (node_config(index).get("output") or {}).get(str(out_index)) or {}
            if not custom_out.get("visible", not linked):
                continue
            new_to_old_output.append((index, out_index))
            outputs.append("COMBO" if isinstance(out_type, list) else _js_string(out_type))

    for index, node, inputs, slots, converted in later:
        incoming = links_to.get(index, {})
        input_map = old_to_new_input.setdefault(index, {})
        # The frontend sorts these slot numbers as strings.
        for k, input_name in enumerate(converted[i] for i in sorted(converted, key=str)):
            if incoming.get(len(slots) + k):
                _group_primitive(
                    incoming[len(slots) + k],
                    index,
                    input_name,
                    inputs[input_name],
                    primitive_defs,
                    primitive_to_widget,
                )
                continue
            shown, conf, _ = input_config(
                index, node, input_name, inputs[input_name], {"defaultInput": True}
            )
            required[shown] = conf
            new_to_old_widget[shown] = (index, input_name)
            input_map[len(slots) + k] = input_count
            input_count += 1

    group_info = {"input": {"required": required}, "output": outputs, "display_name": name}
    layout = _layout(f"{_GROUP_PREFIXES[0]}{name}", group_info)
    return _GroupDef(
        name, nodes, links_to, links_from, external, layout, new_to_old_widget,
        primitive_to_widget, old_to_new_input, new_to_old_output,
    )  # fmt: skip


def _v1(spec: _Spec) -> list[Any]:
    kind: Any = (
        list(spec.combo_choices or ())
        if spec.type == "COMBO" and "options" not in spec.options
        else spec.type
    )
    return [kind, dict(spec.options)]


def _group_primitive(
    link: list[Any],
    target: int,
    input_name: str,
    target_spec: list[Any],
    primitive_defs: dict[int, list[Any]],
    primitive_to_widget: dict[int, list[tuple[int, str]]],
) -> None:
    source = _int(link[0], -1)
    if source in primitive_defs:
        # The primitive takes the options of the widget it feeds, with a control widget.
        own = target_spec[1] if len(target_spec) > 1 and isinstance(target_spec[1], dict) else {}
        primitive_defs[source][1] = {**own, "control_after_generate": True}
        primitive_to_widget.setdefault(source, []).append((target, input_name))


# --- the conversion ------------------------------------------------------------------------


class _Converter:
    def __init__(self, workflow: dict[str, Any], object_info: dict[str, Any], rng: random.Random):
        self.workflow = workflow
        self.object_info = object_info
        self.rng = rng
        self.layouts: dict[str, _Layout] = {}
        self.definitions: dict[str, dict[str, Any]] = {}
        self._collect_definitions(workflow)
        self.subgraphs: dict[str, _Graph] = {}
        self.loading: set[str] = set()
        extra = workflow.get("extra") if isinstance(workflow.get("extra"), dict) else {}
        groups = (extra or {}).get("groupNodes")
        self.group_data: dict[str, Any] = groups if isinstance(groups, dict) else {}
        self.groups: dict[str, _GroupDef] = {}
        self.dtos: dict[str, _Dto] = {}
        self.root = self.load_graph(workflow, None)

    def _collect_definitions(self, graph: dict[str, Any]) -> None:
        definitions = graph.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        for sub in subgraphs if isinstance(subgraphs, list) else ():
            if (
                isinstance(sub, dict)
                and isinstance(sub.get("id"), str)
                and sub["id"] not in self.definitions
            ):
                self.definitions[sub["id"]] = sub
                self._collect_definitions(sub)

    # loading ------------------------------------------------------------------------------

    def layout(self, class_type: str) -> _Layout:
        if class_type not in self.layouts:
            self.layouts[class_type] = _layout(class_type, self.object_info[class_type])
        return self.layouts[class_type]

    def load_graph(self, data: dict[str, Any], graph_id: str | None) -> _Graph:
        graph = _Graph(graph_id)
        raw_links = data.get("links") or []
        for raw in raw_links.values() if isinstance(raw_links, dict) else raw_links:
            link = _parse_link(raw)
            if link is not None:
                graph.links[link.id] = link
        for key, target in (("inputs", graph.io_inputs), ("outputs", graph.io_outputs)):
            for slot in data.get(key) or () if graph_id is not None else ():
                if isinstance(slot, dict):
                    ids = [_int(x, -1) for x in slot.get("linkIds") or ()]
                    target.append((_js_string(slot.get("name", "")), slot.get("type", "*"), ids))
        for raw in data.get("nodes") or ():
            if isinstance(raw, dict):
                node = self.load_node(raw, graph)
                graph.nodes[node.id] = node
        return graph

    def subgraph(self, subgraph_id: str, user: _Node) -> _Graph:
        if subgraph_id not in self.subgraphs:
            if subgraph_id in self.loading:
                raise ConversionError(
                    user.id,
                    f"subgraph {subgraph_id} contains itself",
                    title=user.title,
                    class_type=user.type,
                )
            self.loading.add(subgraph_id)
            self.subgraphs[subgraph_id] = self.load_graph(
                self.definitions[subgraph_id], subgraph_id
            )
            self.loading.discard(subgraph_id)
        return self.subgraphs[subgraph_id]

    def load_node(self, raw: dict[str, Any], graph: _Graph) -> _Node:
        kind_name = _RENAMED.get(_js_string(raw.get("type")), _js_string(raw.get("type")))
        for prefix in _GROUP_PREFIXES[1:]:
            if kind_name.startswith(prefix):
                kind_name = _GROUP_PREFIXES[0] + kind_name[len(prefix) :]
        node = _Node(
            id=_key(raw.get("id")),
            raw=raw,
            type=kind_name,
            kind="unknown",
            title="",
            mode=_int(raw.get("mode")),
            graph=graph,
            inputs=_json_slots(raw.get("inputs"), output=False),
            outputs=_json_slots(raw.get("outputs"), output=True),
        )
        default_title = kind_name
        if kind_name in _SYSTEM_TITLES:
            node.kind = {"PrimitiveNode": "primitive", "Reroute": "reroute"}.get(kind_name, "note")
            default_title = _SYSTEM_TITLES[kind_name]
        elif kind_name in self.definitions:
            node.kind = "subgraph"
            default_title = _js_string(self.definitions[kind_name].get("name") or kind_name)
            self._configure_subgraph(node)
        elif (
            kind_name.startswith(_GROUP_PREFIXES[0])
            and kind_name[len(_GROUP_PREFIXES[0]) :] in self.group_data
        ):
            node.kind = "group"
            node.group = self.group(kind_name[len(_GROUP_PREFIXES[0]) :])
            default_title = node.group.layout.title
            self._configure(node, node.group.layout)
        elif kind_name in self.object_info:
            node.kind = "node"
            layout = self.layout(kind_name)
            default_title = layout.title
            if layout.browser_only:
                node.problem = f"its {layout.browser_only} widget gets its value in the browser"
            self._configure(node, layout)
        else:
            node.problem = f"class {kind_name!r} is not in /object_info (a missing custom node?)"
        title = raw.get("title")
        node.title = _js_string(title) if _truthy(title) else default_title
        return node

    def group(self, name: str) -> _GroupDef:
        if name not in self.groups:
            data = self.group_data[name]
            self.groups[name] = _group_def(
                name, data if isinstance(data, dict) else {}, self.object_info
            )
        return self.groups[name]

    def _configure(self, node: _Node, layout: _Layout) -> None:
        saved = {slot.name: slot for slot in node.inputs}
        defined = []
        for name, kind, widget in layout.sockets():
            old = saved.get(name)
            defined.append(
                _Slot(
                    name,
                    kind,
                    old.link if old else None,
                    widget if widget else (old.widget if old else None),
                )
            )
        names = {slot.name for slot in defined}
        node.inputs = defined + [slot for slot in node.inputs if slot.name not in names]
        outputs = [_Slot(_js_string(i), kind) for i, kind in enumerate(layout.outputs)]
        for index, saved_out in enumerate(node.outputs):
            if index < len(outputs):
                outputs[index].links = saved_out.links
            else:
                outputs.append(saved_out)
        node.outputs = outputs
        node.widgets = layout.new_widgets()
        self._fill_widgets(node, layout)
        # An input that feeds a widget the node does not have is removed on load.
        widget_names = {w.name for w in node.widgets}
        node.inputs = [s for s in node.inputs if s.widget is None or s.widget in widget_names]

    def _fill_widgets(self, node: _Node, layout: _Layout | None) -> None:
        values = node.raw.get("widgets_values")
        slots = [w for w in node.widgets if w.slot]
        if isinstance(values, dict):
            for widget in slots:
                if widget.name in values:
                    widget.assign(values[widget.name])
        elif isinstance(values, list):
            if layout is not None:
                values = layout.migrate_values(values, node.widgets)
            # Saved lists keep a hole (null) where a widget without a value sits.
            holed = max((i + 1 for i, w in enumerate(node.widgets) if w.slot), default=0)
            if len(values) not in (len(slots), holed) and node.problem is None:
                names = ", ".join(w.name for w in slots) or "none"
                node.problem = (
                    f"has {len(values)} widget values but its class takes {len(slots)} ({names}); "
                    "was it saved with another version of the node?"
                )
            for widget, value in zip(slots, values, strict=False):
                widget.assign(value)
        if node.type in ("KSampler", "KSamplerAdvanced"):
            sampler = node.widget("sampler_name")
            if (
                sampler is not None
                and isinstance(sampler.value, str)
                and sampler.value.startswith("sample_")
            ):
                sampler.value = sampler.value[7:]

    def _configure_subgraph(self, node: _Node) -> None:
        definition = self.subgraph(node.type, node)
        saved = {slot.name: slot for slot in node.inputs}
        node.subgraph = definition
        node.inputs = [
            _Slot(name, kind, saved[name].link if name in saved else None)
            for name, kind, _ in definition.io_inputs
        ]
        saved_outputs = node.outputs
        node.outputs = [_Slot(name, kind) for name, kind, _ in definition.io_outputs]
        for index, out in enumerate(saved_outputs[: len(node.outputs)]):
            node.outputs[index].links = out.links
        # Promote the widget of the first inner input each subgraph input feeds.
        for slot, (name, _, link_ids) in zip(node.inputs, definition.io_inputs, strict=True):
            for link_id in link_ids:
                link = definition.links.get(link_id)
                target = definition.target_input(link) if link else None
                if target is None:
                    continue
                inner, index = target
                widget = inner.widget(inner.inputs[index].widget)
                if widget is None:
                    continue
                promoted = copy.copy(widget)
                promoted.name = name
                if widget.multiline:
                    promoted.shared = widget
                node.widgets.append(promoted)
                slot.widget = name
                break
        self._fill_widgets(node, None)

    # primitives ---------------------------------------------------------------------------

    def apply_primitives(self, root: _Graph) -> None:
        for graph in self.subgraphs.values():
            for node in graph.nodes.values():
                if node.kind == "primitive" and node.outputs and node.outputs[0].links:
                    raise ConversionError(
                        f"{graph.id}/{node.id}",
                        "a PrimitiveNode inside a subgraph cannot be queued by the frontend "
                        "either; use a subgraph input instead",
                        title=node.title,
                        class_type=node.type,
                    )
        for node in self.execution_order(root):
            if node.kind == "primitive":
                self._apply_primitive(node, root)

    def _apply_primitive(self, node: _Node, graph: _Graph) -> None:
        link_ids = node.outputs[0].links if node.outputs else []
        if not link_ids:
            return
        links = []
        for link_id in link_ids:
            link = graph.links.get(link_id)
            if link is None:
                raise ConversionError(
                    node.id, f"its output lists link {link_id}, which the graph does not have",
                    title=node.title, class_type=node.type,
                )  # fmt: skip
            links.append(link)
        # Its widget copies the first input it feeds; without one its value is undefined.
        value: Any = _UNDEFINED
        multiline = False
        first = graph.target_input(links[0])
        if first is not None:
            target, index = first
            arrival = target.inputs[index]
            target_widget = target.widget(arrival.widget)
            if arrival.widget is None and arrival.type in _CORE_WIDGETS:
                made: list[_Widget] = []
                _add_widgets(_Spec(arrival.name, str(arrival.type), {}), made)
                value = made[0].value
            elif target_widget is not None:
                value = target_widget.read()
                multiline = target_widget.multiline
            else:
                first = None
        values = node.raw.get("widgets_values")
        if first is not None and isinstance(values, list) and values:
            value = _textarea(values[0]) if multiline else values[0]
        properties = node.raw.get("properties")
        if _truthy(value) and isinstance(properties, dict) and properties.get(_REPLACE_PROPERTY):
            if isinstance(value, str):
                value = self._replace_text(value)
        for link in links:
            reached = graph.target_input(link)
            if reached is None:
                continue
            other, slot = reached
            widget = other.widget(other.inputs[slot].widget)
            if widget is not None:
                widget.assign(value)

    def _replace_text(self, text: str) -> str:
        nodes = [n for g in (self.root, *self.subgraphs.values()) for n in g.nodes.values()]

        def replace(match: re.Match[str]) -> str:
            parts = match.group(1).split(".")
            if len(parts) != 2:
                if parts[0].startswith("date:"):
                    return _format_date(parts[0][5:], datetime.now())
                return match.group(0)
            named = [
                n for n in nodes
                if isinstance(n.raw.get("properties"), dict)
                and n.raw["properties"].get("Node name for S&R") == parts[0]
            ] or [n for n in nodes if n.title == parts[0]]  # fmt: skip
            widget = named[0].widget(parts[1]) if named else None
            if widget is None:
                return match.group(0)
            value = widget.read()
            shown = "" if value is None or value is _UNDEFINED else _js_string(value)
            return re.sub(r'[/?<>\\:*|"\x00-\x1f\x7f]', "_", shown)

        return re.sub(r"%([^%]+)%", replace, text)

    @staticmethod
    def execution_order(graph: _Graph) -> list[_Node]:
        """litegraph's computeExecutionOrder: nodes without inputs first, then their users."""
        remaining = {
            node.id: sum(1 for slot in node.inputs if slot.link is not None)
            for node in graph.nodes.values()
        }
        pending = [node for node in graph.nodes.values() if not remaining[node.id]]
        order: list[_Node] = []
        placed: set[str] = set()
        visited: set[int] = set()
        while pending:
            node = pending.pop(0)
            order.append(node)
            placed.add(node.id)
            for out in node.outputs:
                for link_id in out.links:
                    link = graph.links.get(link_id)
                    if link is None or link.id in visited:
                        continue
                    visited.add(link.id)
                    if link.target_id not in graph.nodes:
                        continue
                    remaining[link.target_id] -= 1
                    if remaining[link.target_id] == 0:
                        pending.append(graph.nodes[link.target_id])
        return order + [n for n in graph.nodes.values() if n.id not in placed]

    # flattening ---------------------------------------------------------------------------

    def flatten(self, root: _Graph) -> None:
        for node in self.execution_order(root):
            dto = _Dto(node, ())
            if node.kind == "subgraph":
                self._flatten_subgraph(dto, set())
            elif node.kind == "group":
                self._flatten_group(dto)
            self.dtos.setdefault(dto.id, dto)

    def _flatten_subgraph(self, dto: _Dto, visited: set[str]) -> None:
        node = dto.node
        if node.type in visited:
            raise dto.fail("its subgraph contains itself")
        if node.problem is not None:
            raise dto.fail(node.problem)
        self.dtos.setdefault(dto.id, dto)
        assert node.subgraph is not None
        for inner in node.subgraph.nodes.values():
            child = _Dto(inner, (*dto.path, node.id), instance=dto)
            if inner.kind == "subgraph":
                self._flatten_subgraph(child, visited | {node.type})
            elif inner.kind == "group":
                raise child.fail(
                    "group nodes inside subgraphs are not supported; convert it to a subgraph"
                )
            self.dtos.setdefault(child.id, child)

    def _flatten_group(self, dto: _Dto) -> None:
        node = dto.node
        group = node.group
        assert group is not None
        if node.problem is not None:
            raise dto.fail(node.problem)
        children: list[_Dto] = []
        for index, raw in enumerate(group.nodes):
            inner_raw = {**raw, "id": index}
            inner = self.load_node(inner_raw, node.graph)
            children.append(_Dto(inner, (*dto.path, node.id), group=dto, index=index))
        # The group's widget values go into the inner widgets they stand for.
        for new_name, (index, input_name) in group.new_to_old_widget.items():
            outer = node.widget(new_name)
            if outer is None:
                continue
            value = outer.raw()
            inner = children[index].node
            if inner.kind == "primitive":
                for target, target_input in group.primitive_to_widget.get(index, ()):
                    widget = children[target].node.widget(target_input)
                    if widget is not None:
                        widget.assign(value)
                continue
            if inner.kind == "reroute":
                for link in (group.links_from.get(index) or {}).get(0, []):
                    target_node = children[_int(link[2])].node
                    slot = _int(link[3])
                    if 0 <= slot < len(target_node.inputs):
                        widget = target_node.widget(target_node.inputs[slot].widget)
                        if widget is not None:
                            widget.assign(value)
            widget = inner.widget(input_name)
            if widget is not None:
                widget.assign(value)
        for child in children:
            self.dtos.setdefault(child.id, child)

    # resolving links ----------------------------------------------------------------------

    def resolve_input(
        self, dto: _Dto, slot: int, visited: set[str], kind: Any = None
    ) -> _Resolved | _WidgetValue | None:
        if dto.group is not None:
            return self._resolve_group_child_input(dto, slot)
        node = dto.node
        key = f"{node.graph.key}:{node.id}[I]{slot}"
        if key in visited:
            raise dto.fail(f"its input {slot} leads back to itself (a loop of links)")
        visited.add(key)
        if not 0 <= slot < len(node.inputs):
            raise dto.fail(f"has no input {slot}")
        arrival = node.inputs[slot]
        if arrival.link is None:
            return None
        link = node.graph.links.get(arrival.link)
        if link is None:
            raise dto.fail(
                f"its input {arrival.name!r} uses link {arrival.link}, which is not in the graph"
            )
        instance = dto.instance
        if instance is not None and link.origin_id == _SUBGRAPH_INPUT_ID:
            outer = instance.node
            if not 0 <= link.origin_slot < len(outer.inputs):
                raise dto.fail(f"its input {arrival.name!r} is fed by a missing subgraph input")
            outer_input = outer.inputs[link.origin_slot]
            if outer_input.link is None:
                widget = outer.widget(outer_input.widget)
                return _WidgetValue(widget.raw()) if widget is not None else None
            if outer_input.link not in outer.graph.links:
                raise instance.fail(
                    f"its input {outer_input.name!r} uses link {outer_input.link}, not in the graph"
                )
            return self.resolve_input(instance, link.origin_slot, visited)
        origin = node.graph.nodes.get(link.origin_id)
        if origin is None:
            raise dto.fail(
                f"its input {arrival.name!r} is linked from node {link.origin_id}, which is missing"
            )
        origin_dto = self.dtos.get(":".join((*dto.path, origin.id)))
        if origin_dto is None:
            raise dto.fail(
                f"its input {arrival.name!r} is linked from node {link.origin_id}, which is missing"
            )
        return self.resolve_output(
            origin_dto, link.origin_slot, kind if kind is not None else arrival.type, visited
        )

    def resolve_output(
        self, dto: _Dto, slot: int, kind: Any, visited: set[str]
    ) -> _Resolved | _WidgetValue | None:
        node = dto.node
        if node.kind == "group" and dto.group is None:
            return self._resolve_group_output(dto, slot, kind, visited)
        key = f"{node.graph.key}:{node.id}[O]{slot}"
        if key in visited:
            raise dto.fail(f"its output {slot} leads back to itself (a loop of links)")
        visited.add(key)
        if node.mode == MODE_BYPASS:
            index = self._bypass_slot(dto, slot, kind)
            return None if index == -1 else self.resolve_input(dto, index, visited)
        if node.kind == "subgraph":
            return self._resolve_subgraph_output(dto, slot, kind, visited)
        if node.is_virtual:
            if 0 <= slot < len(node.inputs):
                return self.resolve_input(dto, slot, visited, kind)
            return None
        return _Resolved(dto.id, slot)

    def _bypass_slot(self, dto: _Dto, slot: int, kind: Any) -> int:
        inputs = dto.node.inputs
        if not 0 <= slot < len(dto.node.outputs):
            raise dto.fail(f"is bypassed but has no output {slot}")
        output_type = dto.node.outputs[slot].type
        if kind in ("*", ""):
            if not inputs:
                raise dto.fail("is bypassed, but has no input to pass on")
            return slot if len(inputs) > slot else 0
        if slot < len(inputs):
            opposite = inputs[slot].type
            if _is_valid_connection(opposite, output_type) and _is_valid_connection(opposite, kind):
                return slot
        for index, arrival in enumerate(inputs):
            if arrival.type == kind:
                return index
        for index, arrival in enumerate(inputs):
            if _is_valid_connection(arrival.type, output_type) and _is_valid_connection(
                arrival.type, kind
            ):
                return index
        return -1

    def _resolve_subgraph_output(
        self, dto: _Dto, slot: int, kind: Any, visited: set[str]
    ) -> _Resolved | _WidgetValue | None:
        definition = dto.node.subgraph
        assert definition is not None
        if not 0 <= slot < len(definition.io_outputs):
            raise dto.fail(f"has no output {slot}")
        links = [
            definition.links[i] for i in definition.io_outputs[slot][2] if i in definition.links
        ]
        if not links:
            return None
        inner = definition.nodes.get(links[0].origin_id)
        if inner is None:
            raise dto.fail(f"its output {slot} is not fed by any node inside the subgraph")
        inner_dto = self.dtos.get(":".join((*dto.path, dto.node.id, inner.id)))
        if inner_dto is None:
            raise dto.fail(f"its output {slot} comes from a node the subgraph does not have")
        return self.resolve_output(inner_dto, links[0].origin_slot, kind, visited)

    def _resolve_group_output(
        self, dto: _Dto, slot: int, kind: Any, visited: set[str]
    ) -> _Resolved | _WidgetValue | None:
        node, group = dto.node, dto.node.group
        assert group is not None
        if node.mode == MODE_BYPASS:
            for index in (slot, *range(len(node.inputs))):
                if 0 <= index < len(node.inputs) and node.inputs[index].type == kind:
                    return self.resolve_input(dto, index, visited)
            return None
        if not 0 <= slot < len(group.new_to_old_output):
            raise dto.fail(f"has no output {slot}")
        index, origin_slot = group.new_to_old_output[slot]
        child = self.dtos[f"{dto.id}:{index}"]
        via: tuple[str, int] | None = None
        while child.node.kind == "reroute":
            source = self._group_child_source(child, 0)
            if source is None:
                raise dto.fail(f"its output {slot} comes from a Reroute with nothing connected")
            origin, via_slot, origin_dto = source
            via = (origin, via_slot)
            if origin_dto is None or origin_dto.group is not dto:
                raise dto.fail(f"its output {slot} leaves the group through a Reroute")
            child = origin_dto
        return _Resolved(f"{dto.id}:{child.index}", via[1] if via else origin_slot)

    def _group_child_source(self, dto: _Dto, slot: int) -> tuple[str, int, _Dto | None] | None:
        """Where a group node's inner node input comes from: (origin id, slot, its DTO)."""
        group_dto = dto.group
        assert group_dto is not None and group_dto.node.group is not None
        group = group_dto.node.group
        external = group.old_to_new_input.get(dto.index, {}).get(slot)
        if external is not None:
            if not 0 <= external < len(group_dto.node.inputs):
                return None
            link_id = group_dto.node.inputs[external].link
            link = group_dto.node.graph.links.get(link_id) if link_id is not None else None
            if link is None:
                return None
            if link.origin_id not in group_dto.node.graph.nodes:
                raise group_dto.fail(
                    f"its input {external} is linked from node {link.origin_id}, which is missing"
                )
            return link.origin_id, link.origin_slot, self.dtos.get(link.origin_id)
        internal = group.links_to.get(dto.index, {}).get(slot)
        if not internal:
            return None
        source = _int(internal[0], -1)
        source_dto = self.dtos.get(f"{group_dto.id}:{source}")
        if source_dto is None or source_dto.node.kind == "primitive":
            return None
        return source_dto.id, _int(internal[1]), source_dto

    def _resolve_group_child_input(self, dto: _Dto, slot: int) -> _Resolved | None:
        source = self._group_child_source(dto, slot)
        return None if source is None else _Resolved(source[0], source[1])

    # emitting -----------------------------------------------------------------------------

    def convert(self) -> dict[str, Any]:
        self.apply_primitives(self.root)
        self.flatten(self.root)
        output: dict[str, dict[str, Any]] = {}
        for dto in list(self.dtos.values()):
            node = dto.node
            if node.is_virtual or node.mode in (MODE_NEVER, MODE_BYPASS):
                continue
            if node.problem is not None:
                raise dto.fail(node.problem)
            inputs: dict[str, Any] = {}
            for widget in node.widgets:
                if widget.name and widget.in_prompt:
                    inputs[widget.name] = self._serialize(widget)
            for index, arrival in enumerate(node.inputs):
                resolved = self.resolve_input(dto, index, set())
                if resolved is None:
                    continue
                if isinstance(resolved, _WidgetValue):
                    inputs[arrival.name] = _boxed(resolved.value)
                else:
                    inputs[arrival.name] = [resolved.origin_id, resolved.origin_slot]
            output[dto.id] = {
                "inputs": inputs,
                "class_type": node.type,
                "_meta": {"title": node.title},
            }
        for entry in output.values():
            entry["inputs"] = {
                name: value
                for name, value in entry["inputs"].items()
                if value is not _UNDEFINED
                and not (isinstance(value, list) and len(value) == 2 and value[0] not in output)
            }
        self._check_cycles(output)
        return _js_key_order(output)

    def _serialize(self, widget: _Widget) -> Any:
        value = widget.read()
        if widget.dynamic and isinstance(value, str):
            value = _dynamic_prompt(value, self.rng)
        return _boxed(value)

    def _check_cycles(self, output: dict[str, dict[str, Any]]) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(node_id: str, path: list[str]) -> None:
            state[node_id] = 1
            for value in output[node_id]["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and value[0] in output:
                    origin = value[0]
                    if state.get(origin) == 1:
                        loop = " -> ".join([*path[path.index(origin) :], origin])
                        dto = self.dtos[origin]
                        raise dto.fail(f"is part of a cycle of links ({loop})")
                    if origin not in state:
                        visit(origin, [*path, origin])
            state[node_id] = 2

        for node_id in output:
            if node_id not in state:
                visit(node_id, [node_id])


def _boxed(value: Any) -> Any:
    """Array widget values are wrapped, since an array in a prompt means a link."""
    return {"__value__": value} if isinstance(value, list) else value


def _js_key_order(output: dict[str, Any]) -> dict[str, Any]:
    """A JavaScript object's key order: array-index keys ascending, then the rest as added."""
    indexed = [k for k in output if k.isdigit() and str(int(k)) == k and int(k) < 2**32 - 1]
    rest = [k for k in output if k not in set(indexed)]
    return {k: output[k] for k in (*sorted(indexed, key=int), *rest)}


def _format_date(pattern: str, now: datetime) -> str:
    parts = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def one(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "yy":
            return str(now.year)[2:]
        if text == "yyyy":
            return str(now.year)
        if text[0] in parts:
            return str(parts[text[0]]).rjust(len(text), "0")
        return text

    return re.sub(r"dd?|MM?|hh?|mm?|ss?|yyy?y?", one, pattern)
