"""Derive a workflow's parameters from marks in its graph, so no node id is written by hand.

Two ways to mark a parameter, freely mixed in one graph:

- A `$` word in a node's title (API format: `_meta.title`); other words are free text:

      $name=input   the node's value input `input` is request parameter `name`
      $name         the same, for the node's only widget input
      $output       this node is the output (its `filename_prefix` is set per job); without
                    it, the one node whose class is an output node taking `filename_prefix`

  e.g. a KSampler titled `Sampler $seed=seed $steps=steps`, a CLIPTextEncode `Positive $prompt`.
- One of our parameter nodes (custom_nodes/api_inputs: `ApiInputInt` and friends, see
  `PARAM_NODES`), whose `name` input names the parameter bound to its value input.

The same name on several nodes binds all of them. Type, default (the graph's value), range,
step and choices come from ComfyUI's /object_info for the node's class and input (for our
nodes: their own widgets, narrowed by the inputs they feed); the optional sidecar
(`spec.Sidecar`, keyed by parameter name) adds only what ComfyUI cannot know, and may narrow
but never widen.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

from pydantic import ValidationError

from proxy.workflows.spec import Binding, ParamExtra, ParamSpec, ParamType, Sidecar, WorkflowSpec

OUTPUT = "output"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An input is any run without spaces, `$` or `=`: ComfyUI has inputs like "double_layers.0.".
TOKEN = re.compile(r"\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<input>[^\s$=]+))?")
SEED_MAX = 2**64 - 1
_SCALARS: dict[str, ParamType] = {
    "INT": "int",
    "FLOAT": "float",
    "STRING": "string",
    "BOOLEAN": "bool",
}


class MarkError(ValueError):
    """The graph's marks, or its sidecar, do not make a workflow; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ParamNode:
    """One of our parameter node classes: the input it declares and the type it serves."""

    value: str
    type: ParamType
    random: bool = False


PARAM_NODES: dict[str, ParamNode] = {
    "ApiInputText": ParamNode("value", "string"),
    "ApiInputInt": ParamNode("value", "int"),
    "ApiInputFloat": ParamNode("value", "float"),
    "ApiInputBool": ParamNode("value", "bool"),
    "ApiInputSeed": ParamNode("value", "int", random=True),
    "ApiInputChoice": ParamNode("value", "choice"),
    "ApiInputImage": ParamNode("image", "image"),
    "ApiInputVideo": ParamNode("file", "video"),
}


def _ours(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    description = ["STRING", {"default": ""}]
    return {
        "input": {
            "required": {"name": ["STRING", {"default": ""}], **required},
            "optional": {**(optional or {}), "description": description},
        },
        "output_node": False,
    }


# custom_nodes/api_inputs's widest number range, meaning "no bound" (the editor holds widget
# values as doubles, so it stops at 2**53 - 1); its seed range is KSampler's.
WIDE = 2**53 - 1


def _wide(kind: str, default: float) -> list[Any]:
    if kind == "INT":
        return [kind, {"default": int(default), "min": -WIDE, "max": WIDE}]
    return [kind, {"default": default, "min": -float(WIDE), "max": float(WIDE), "step": 0.01}]


# Our nodes' schemas as custom_nodes/api_inputs declares them (tests hold the two together),
# for an /object_info taken from a ComfyUI that does not have them installed.
BUILTIN: dict[str, dict[str, Any]] = {
    "ApiInputText": _ours({"value": ["STRING", {"default": "", "multiline": True}]}),
    "ApiInputInt": _ours(
        {"value": _wide("INT", 0)},
        {
            "min": _wide("INT", -WIDE),
            "max": _wide("INT", WIDE),
            "step": ["INT", {"default": 1, "min": 1, "max": WIDE}],
        },
    ),
    "ApiInputFloat": _ours(
        {"value": _wide("FLOAT", 0.0)},
        {
            "min": _wide("FLOAT", -float(WIDE)),
            "max": _wide("FLOAT", float(WIDE)),
            "step": ["FLOAT", {"default": 0.01, "min": 0.0, "max": float(WIDE), "step": 0.01}],
        },
    ),
    "ApiInputBool": _ours({"value": ["BOOLEAN", {"default": False}]}),
    "ApiInputSeed": _ours(
        {
            "value": [
                "INT",
                {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True},
            ]
        }
    ),
    "ApiInputChoice": _ours(
        {
            "choices": ["STRING", {"default": "", "multiline": True}],
            "value": ["STRING", {"default": ""}],
        }
    ),
    "ApiInputImage": _ours({"image": [[], {"image_upload": True}]}),
    "ApiInputVideo": _ours({"file": [[], {"video_upload": True}]}),
}


@cache
def reference_object_info() -> dict[str, Any]:
    """The /object_info of the ComfyUI version we test against (0.3.64), bundled."""
    text = resources.files(__package__).joinpath("object_info.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def is_link(value: object) -> bool:
    """Whether an API-format input is a link `[node_id, output_index]` rather than a value."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def title_words(node: Mapping[str, Any]) -> list[str]:
    """The `$` words of a node's title."""
    title = node.get("_meta", {}).get("title", "")
    return [w for w in title.split() if w.startswith("$")] if isinstance(title, str) else []


def has_marks(graph: Mapping[str, Any]) -> bool:
    """Whether an API-format graph marks anything (a `$` title or one of our nodes)."""
    return any(
        isinstance(node, dict)
        and (node.get("class_type") in PARAM_NODES or bool(title_words(node)))
        for node in graph.values()
    )


def _input_spec(info: Mapping[str, Any], name: str) -> tuple[Any, dict[str, Any]] | None:
    for section in ("required", "optional"):
        entry = info.get("input", {}).get(section, {}).get(name)
        if isinstance(entry, list) and entry:
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            return entry[0], opts
    return None


def _input_names(info: Mapping[str, Any]) -> list[str]:
    sections = info.get("input", {})
    return [n for s in ("required", "optional") for n in sections.get(s, {})]


def _typed(kind: Any, opts: Mapping[str, Any]) -> tuple[ParamType, list[Any] | None] | None:
    """The parameter type of an input spec (with a choice's options), or None for a link type."""
    if isinstance(kind, list) or kind == "COMBO":
        if opts.get("image_upload"):
            return "image", None
        if opts.get("video_upload"):
            return "video", None
        options = kind if isinstance(kind, list) else opts.get("options", [])
        return "choice", list(options)
    scalar = _SCALARS.get(kind) if isinstance(kind, str) else None
    return (scalar, None) if scalar else None


def _value(type_: ParamType, value: Any) -> Any:
    """The graph's value as a default of this type; ValueError if it is not one."""
    if type_ == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_ == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if type_ == "bool" and isinstance(value, bool):
        return value
    if type_ in ("string", "image", "video") and isinstance(value, str):
        return value
    if type_ == "choice" and not isinstance(value, list | dict):
        return value
    raise ValueError(f"its value {value!r} is not a {type_}")


def _number(value: Any) -> int | float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


@dataclass
class Slot:
    """One marked (node, input) with what ComfyUI says about it."""

    param: str
    binding: Binding
    where: str
    type: ParamType
    default: Any
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    choices: list[Any] | None = None
    # A file list ComfyUI fills at run time, empty in this /object_info: the sidecar lists them.
    open_choices: bool = False
    random: bool = False
    description: str = ""
    # Our ApiInputInt's `step` is a rule ("a multiple of step away from min"), not a hint.
    multiple_of: int | None = None
    four_k_plus_1: bool = False
    slots: list[Binding] = field(default_factory=list)

    def narrow(self, lo: Any, hi: Any, step: Any) -> None:
        lo, hi, step = _number(lo), _number(hi), _number(step)
        if lo is not None:
            self.min = lo if self.min is None else max(self.min, lo)
        if hi is not None:
            self.max = hi if self.max is None else min(self.max, hi)
        if step is not None and step > 0:
            if self.step is None:
                self.step = step
            elif isinstance(step, int) and isinstance(self.step, int):
                self.step = math.lcm(self.step, step)
            else:
                self.step = max(self.step, step)


def _where(node_id: str, node: Mapping[str, Any]) -> str:
    title = node.get("_meta", {}).get("title", "")
    return f"node {node_id} {json.dumps(title)} ({node.get('class_type')})"


def _slot(
    param: str, node_id: str, node: Mapping[str, Any], info: Mapping[str, Any], name: str
) -> Slot:
    """The slot `$param=name` marks; ValueError saying why it cannot be one."""
    inputs: dict[str, Any] = node.get("inputs", {})
    if name not in inputs:
        raise ValueError(f"no input {name!r}; its inputs: {', '.join(inputs) or 'none'}")
    if is_link(inputs[name]):
        raise ValueError(f"input {name!r} is a link, not a value")
    spec = _input_spec(info, name)
    if spec is None:
        known = ", ".join(_input_names(info))
        raise ValueError(f"ComfyUI's {node['class_type']} has no input {name!r} (it has {known})")
    typed = _typed(*spec)
    if typed is None:
        raise ValueError(f"input {name!r} is a {spec[0]} input, not a value a request can set")
    type_, options = typed
    opts = spec[1]
    binding = Binding(node=node_id, input=name, class_type=node["class_type"])
    slot = Slot(param, binding, _where(node_id, node), type_, _value(type_, inputs[name]))
    if type_ in ("int", "float"):
        slot.narrow(opts.get("min"), opts.get("max"), opts.get("step"))
        slot.random = type_ == "int" and bool(opts.get("control_after_generate"))
    if type_ == "choice":
        slot.choices, slot.open_choices = options, not options
    return slot


def widget_inputs(
    node: Mapping[str, Any], info: Mapping[str, Any], *, linked: bool = False
) -> list[str]:
    """The value inputs a bare `$name` could mean (with `linked`, the widget inputs the
    graph feeds from a link instead)."""
    ours = PARAM_NODES.get(node["class_type"])
    if ours is not None:
        return [ours.value]
    return [
        name
        for name, value in node.get("inputs", {}).items()
        if is_link(value) is linked
        and (spec := _input_spec(info, name)) is not None
        and _typed(*spec) is not None
    ]


def _unbounded(value: Any, limit: Any) -> bool:
    number = _number(value)
    return number is None or abs(number) >= WIDE or number == _number(limit)


def _node_slot(
    node_id: str,
    node: Mapping[str, Any],
    info: Mapping[str, Any],
    graph: Mapping[str, Any],
    object_info: Mapping[str, Any],
) -> Slot:
    """The parameter one of our nodes declares; ValueError saying why it cannot be one."""
    kind = PARAM_NODES[node["class_type"]]
    inputs: dict[str, Any] = node.get("inputs", {})
    name = inputs.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name) or name == OUTPUT:
        raise ValueError(
            f"its name {name!r} is not a parameter name (letters, digits and _; not {OUTPUT!r})"
        )
    slot = _slot(name, node_id, node, info, kind.value)
    slot.type, slot.random, slot.min, slot.max, slot.step = kind.type, kind.random, None, None, None
    if kind.random:
        opts = (_input_spec(info, kind.value) or ("INT", {}))[1]
        slot.narrow(opts.get("min"), opts.get("max"), None)
    if kind.type in ("int", "float"):
        lo_spec, hi_spec = _input_spec(info, "min"), _input_spec(info, "max")
        lo, hi = inputs.get("min"), inputs.get("max")
        slot.narrow(
            None if _unbounded(lo, lo_spec[1].get("min") if lo_spec else None) else lo,
            None if _unbounded(hi, hi_spec[1].get("max") if hi_spec else None) else hi,
            inputs.get("step"),
        )
        if kind.type == "int":
            _step_rule(slot, inputs.get("step"))
    if kind.type == "choice":
        text = inputs.get("choices")
        lines = [line.strip() for line in text.splitlines()] if isinstance(text, str) else []
        slot.choices = [line for line in lines if line]
        slot.open_choices = False
        if not slot.choices:
            raise ValueError("its `choices` lists no choice (one per line)")
    description = inputs.get("description")
    slot.description = description if isinstance(description, str) else ""
    _narrow_by_consumers(slot, graph, object_info)
    return slot


def _step_rule(slot: Slot, step: Any) -> None:
    """ApiInputInt's `step`: values a multiple of it away from `min` (from 0 without one)."""
    if not isinstance(step, int) or isinstance(step, bool) or step <= 1:
        return
    start = int(slot.min or 0)
    if start % step == 0:
        slot.multiple_of = step
    elif (step, start % step) == (4, 1):
        slot.four_k_plus_1 = True
    else:
        raise ValueError(
            f"step {step} from min {start} (values {start}, {start + step}, ...) is not a "
            "rule the API checks: make min a multiple of the step (or step 4 from min 1)"
        )


def _narrow_by_consumers(
    slot: Slot, graph: Mapping[str, Any], object_info: Mapping[str, Any]
) -> None:
    """Our node's range, narrowed by the ComfyUI inputs it feeds; its choices checked there."""
    for other_id, other in graph.items():
        info = class_info(object_info, other.get("class_type"))
        for name, value in other.get("inputs", {}).items():
            if not (is_link(value) and value[0] == slot.binding.node) or info is None:
                continue
            spec = _input_spec(info, name)
            typed = _typed(*spec) if spec else None
            if spec is None or typed is None:
                continue
            if slot.type in ("int", "float") and typed[0] in ("int", "float"):
                slot.narrow(spec[1].get("min"), spec[1].get("max"), spec[1].get("step"))
            if slot.type == "choice" and typed[1]:
                missing = [c for c in slot.choices or () if c not in typed[1]]
                if missing:
                    raise ValueError(
                        f"choices {', '.join(map(str, missing))} are not options of input "
                        f"{name!r} of {_where(other_id, other)}"
                    )


def class_info(object_info: Mapping[str, Any], class_type: Any) -> Mapping[str, Any] | None:
    """A class's /object_info entry (our parameter nodes' built in), or None if unknown."""
    if not isinstance(class_type, str):
        return None
    info = object_info.get(class_type)
    return info if isinstance(info, Mapping) else BUILTIN.get(class_type)


def collect_slots(
    graph: Mapping[str, Any], object_info: Mapping[str, Any], problems: list[str]
) -> tuple[list[Slot], list[str]]:
    """Every marked slot in graph order, and the nodes titled `$output`."""
    slots: list[Slot] = []
    outputs: list[str] = []
    for node_id, node in graph.items():
        where = _where(node_id, node)
        words = title_words(node)
        ours = node["class_type"] in PARAM_NODES
        if not words and not ours:
            continue
        info = class_info(object_info, node["class_type"])
        if info is None:
            problems.append(
                f"{where}: class {node['class_type']} is not in ComfyUI's /object_info "
                "(is its custom node installed?)"
            )
            continue
        if ours:
            try:
                slots.append(_node_slot(node_id, node, info, graph, object_info))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        names: set[str] = set()
        for word in words:
            match = TOKEN.fullmatch(word)
            if match is None:
                problems.append(
                    f"{where}: bad token {word!r}: write $name, $name=input or $output "
                    "(names: letters, digits and _, not starting with a digit)"
                )
                continue
            name, input_name = match["name"], match["input"]
            if name in names:
                problems.append(f"{where}: {word!r}: ${name} appears twice in this title")
                continue
            names.add(name)
            if name == OUTPUT:
                if input_name:
                    problems.append(f"{where}: {word!r}: $output takes no input")
                else:
                    outputs.append(node_id)
                continue
            if input_name is None:
                widgets = widget_inputs(node, info)
                linked = widget_inputs(node, info, linked=True)
                if not widgets and len(linked) == 1:
                    widgets = linked  # its one widget input is linked: _slot says so
                if len(widgets) != 1:
                    listed = ", ".join(widgets) or "none"
                    problems.append(
                        f"{where}: {word!r} names no input and the node has "
                        f"{'no' if not widgets else 'several'} widget inputs ({listed}): "
                        f"write ${name}=<input>"
                    )
                    continue
                input_name = widgets[0]
            try:
                slots.append(_slot(name, node_id, node, info, input_name))
            except ValueError as exc:
                problems.append(f"{where}: {word!r}: {exc}")
    return slots, outputs


def merge_slots(slots: list[Slot], problems: list[str]) -> dict[str, Slot]:
    """One slot per parameter name, carrying every binding; types and defaults must agree."""
    merged: dict[str, Slot] = {}
    bound: dict[tuple[str, str], str] = {}
    for slot in slots:
        key = (slot.binding.node, slot.binding.input)
        if key in bound:
            if bound[key] != slot.param:
                problems.append(
                    f"{slot.where}: input {slot.binding.input!r} is marked as both "
                    f"${bound[key]} and ${slot.param}"
                )
            continue
        bound[key] = slot.param
        first = merged.get(slot.param)
        if first is None:
            merged[slot.param] = replace(slot, slots=[slot.binding])
            continue
        if first.type != slot.type:
            problems.append(
                f"${slot.param}: {first.where} makes it {first.type}, {slot.where} {slot.type}"
            )
            continue
        both_random = first.random or slot.random
        if (
            not both_random
            and first.type not in ("image", "video")
            and first.default != slot.default
        ):
            problems.append(
                f"${slot.param}: {first.where} has {first.default!r}, {slot.where} has "
                f"{slot.default!r}: give both the same value"
            )
            continue
        first.slots.append(slot.binding)
        first.random = both_random
        first.four_k_plus_1 = first.four_k_plus_1 or slot.four_k_plus_1
        if slot.multiple_of:
            first.multiple_of = math.lcm(first.multiple_of or 1, slot.multiple_of)
        first.narrow(slot.min, slot.max, slot.step)
        first.description = first.description or slot.description
        if slot.choices is not None and not slot.open_choices:
            if first.open_choices or first.choices is None:
                first.choices, first.open_choices = list(slot.choices), False
            else:
                first.choices = [c for c in first.choices if c in slot.choices]
    return merged


_NARROWER: dict[str, tuple[ParamType, ...]] = {
    "int": ("float",),
    "image": ("string", "choice"),
    "video": ("string", "choice"),
}


def _param(name: str, slot: Slot, extra: ParamExtra, problems: list[str]) -> ParamSpec | None:
    """The parameter a merged slot and its sidecar entry make; None after a problem."""
    before = len(problems)
    at = f"sidecar: {name}"
    type_, lo, hi, step, choices, default = (
        slot.type,
        slot.min,
        slot.max,
        slot.step,
        slot.choices,
        slot.default,
    )
    if extra.type is not None and extra.type != type_:
        if type_ not in _NARROWER[extra.type]:
            problems.append(
                f"{at}: type {extra.type!r} cannot replace ComfyUI's {type_} (a sidecar only "
                "narrows: float to int, a string or choice to an image or video file)"
            )
        elif extra.type == "int":
            if not float(default).is_integer():
                problems.append(f"{at}: {slot.where} has {default!r}, not a whole number")
            default = int(default)
            lo = None if lo is None else math.ceil(lo)
            hi = None if hi is None else math.floor(hi)
            step = int(step) if step is not None and float(step).is_integer() else None
        else:
            choices = None
        type_ = extra.type
    numeric, is_file = type_ in ("int", "float"), type_ in ("image", "video")
    cast: Any = int if type_ == "int" else float
    for key, wanted in (("min", extra.min), ("max", extra.max)):
        if wanted is None:
            continue
        base = lo if key == "min" else hi
        if not numeric:
            problems.append(f"{at}: {key} applies to numbers, {name} is a {type_}")
        elif type_ == "int" and not float(wanted).is_integer():
            problems.append(f"{at}: {key} {wanted} is not a whole number")
        elif base is not None and (wanted < base if key == "min" else wanted > base):
            problems.append(f"{at}: {key} {wanted} widens ComfyUI's {key} {base} ({slot.where})")
        elif key == "min":
            lo = wanted
        else:
            hi = wanted
    if lo is not None and hi is not None and lo > hi:
        problems.append(f"{at}: min {lo} is above max {hi}")
    if extra.choices is not None:
        if type_ != "choice":
            problems.append(f"{at}: choices apply to a choice, {name} is a {type_}")
        elif not slot.open_choices:
            wider = [c for c in extra.choices if c not in (choices or ())]
            if wider:
                problems.append(
                    f"{at}: choices {', '.join(map(str, wider))} widen ComfyUI's options "
                    f"({slot.where})"
                )
        choices = list(extra.choices)
    if type_ == "choice" and not choices:
        problems.append(
            f"{at}: ComfyUI lists no options for {slot.where} (a file list it fills at run "
            "time): give `choices`"
        )
    if type_ != "int":
        for key in ("multiple_of", "four_k_plus_1", "random"):
            if getattr(extra, key):
                problems.append(f"{at}: {key} applies to an int, {name} is a {type_}")
    multiple_of = extra.multiple_of or slot.multiple_of
    if extra.multiple_of and slot.multiple_of and extra.multiple_of % slot.multiple_of:
        problems.append(
            f"{at}: multiple_of {extra.multiple_of} widens the node's step {slot.multiple_of} "
            f"({slot.where}): use a multiple of it"
        )
    if type_ != "string" and (extra.min_length is not None or extra.max_length is not None):
        problems.append(f"{at}: min_length/max_length apply to a string, {name} is a {type_}")
    random = slot.random if extra.random is None else extra.random
    required = bool(extra.required)
    if required or random or is_file:
        default = None
    if len(problems) > before:
        return None
    spec = ParamSpec(
        name=name,
        type=type_,
        description=slot.description if extra.description is None else extra.description,
        required=required,
        default=default,
        random=random,
        min=None if lo is None else cast(lo),
        max=None if hi is None else cast(hi),
        step=None if step is None or (type_ == "int" and step <= 1) else cast(step),
        min_length=extra.min_length,
        max_length=extra.max_length,
        multiple_of=multiple_of,
        four_k_plus_1=extra.four_k_plus_1 or slot.four_k_plus_1,
        choices=choices if type_ == "choice" else None,
        advanced=extra.advanced,
        aliases=extra.aliases,
        targets=slot.slots,
    )
    _check_default(spec, slot.where, problems)
    return spec if len(problems) == before else None


def _check_default(spec: ParamSpec, where: str, problems: list[str]) -> None:
    value = spec.default
    if value is None:
        return
    why = ""
    if spec.min is not None and value < spec.min:
        why = f"below min {spec.min}"
    elif spec.max is not None and value > spec.max:
        why = f"above max {spec.max}"
    elif spec.multiple_of and value % spec.multiple_of:
        why = f"not a multiple of {spec.multiple_of}"
    elif spec.four_k_plus_1 and (value - 1) % 4:
        why = "not 4k+1"
    elif spec.choices is not None and value not in spec.choices:
        why = "not one of the choices"
    elif spec.min_length is not None and len(value) < spec.min_length:
        why = f"shorter than min_length {spec.min_length}"
    elif spec.max_length is not None and len(value) > spec.max_length:
        why = f"longer than max_length {spec.max_length}"
    if why:
        problems.append(f"${spec.name}: the graph's value {value!r} ({where}) is {why}")


def find_output(
    graph: Mapping[str, Any],
    object_info: Mapping[str, Any],
    marked: list[str],
    problems: list[str],
) -> tuple[str, Binding | None] | None:
    """(output node, its filename_prefix slot) from the `$output` titles or, without one, the
    one output node taking `filename_prefix`; None after a problem."""
    if len(marked) > 1:
        nodes = ", ".join(_where(n, graph[n]) for n in marked)
        problems.append(f"$output marks several nodes ({nodes}): mark one")
        return None
    if marked:
        node_id = marked[0]
    else:
        candidates = [
            node_id
            for node_id, node in graph.items()
            if (info := class_info(object_info, node.get("class_type"))) is not None
            and info.get("output_node")
            and "filename_prefix" in _input_names(info)
        ]
        if len(candidates) != 1:
            listed = ", ".join(_where(n, graph[n]) for n in candidates) or "none"
            problems.append(
                "no output node: title one node $output (output nodes taking filename_prefix: "
                f"{listed})"
            )
            return None
        node_id = candidates[0]
    node = graph[node_id]
    prefix = node.get("inputs", {}).get("filename_prefix")
    if prefix is None or is_link(prefix):
        return node_id, None
    return node_id, Binding(node=node_id, input="filename_prefix", class_type=node["class_type"])


def _kind(params: list[ParamSpec]) -> str:
    types = {p.type for p in params}
    if "video" in types:
        return "video-to-video"
    return "image-to-video" if "image" in types else "text-to-video"


def parse_sidecar(data: Mapping[str, Any] | Sidecar | None) -> Sidecar:
    """A sidecar from its parsed JSON; MarkError naming each bad key."""
    if isinstance(data, Sidecar):
        return data
    try:
        return Sidecar.model_validate(data or {})
    except ValidationError as exc:
        raise MarkError(
            [
                f"sidecar: {'.'.join(map(str, err['loc'])) or 'top level'}: {err['msg']}"
                for err in exc.errors()
            ]
        ) from None


def check_graph(graph: Any) -> list[str]:
    """Why a parsed template is not an API-format graph (nothing when it is one)."""
    if not isinstance(graph, dict):
        return ["not an API-format graph (a JSON object of nodes by id)"]
    if "nodes" in graph and "links" in graph:
        return ["a UI-format graph: save it from ComfyUI with Export (API)"]
    return [
        f"node {node_id} is not an API-format node (no class_type)"
        for node_id, node in graph.items()
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str)
    ]


def derive_spec(
    name: str,
    graph: Mapping[str, Any],
    object_info: Mapping[str, Any],
    sidecar: Mapping[str, Any] | Sidecar | None = None,
) -> WorkflowSpec:
    """The `WorkflowSpec` a marked graph declares; MarkError listing every problem."""
    problems = check_graph(graph)
    if problems:
        raise MarkError(problems)
    side = parse_sidecar(sidecar)
    slots, outputs = collect_slots(graph, object_info, problems)
    merged = merge_slots(slots, problems)
    for extra_name in side.params:
        if extra_name not in merged:
            marked = ", ".join(merged) or "none"
            problems.append(
                f"sidecar: {extra_name}: the graph marks no such parameter (marked: {marked})"
            )
    order = [n for n in side.params if n in merged] + [n for n in merged if n not in side.params]
    params = [
        p
        for n in order
        if (p := _param(n, merged[n], side.params.get(n) or ParamExtra(), problems)) is not None
    ]
    output = find_output(graph, object_info, outputs, problems)
    if problems or output is None:
        raise MarkError(problems)
    try:
        return WorkflowSpec(
            name=name,
            title=side.title or name,
            description=side.description,
            kind=side.kind or _kind(params),
            aliases=side.aliases,
            output_node=output[0],
            filename_prefix=output[1],
            params=params,
        )
    except ValidationError as exc:
        raise MarkError(
            [str(err["msg"]).removeprefix("Value error, ") for err in exc.errors()]
        ) from None
