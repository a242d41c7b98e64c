"""A `Slot`: one marked (node, input), typed and bounded from ComfyUI's schema."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.workflows.marked._grammar import NAME, OUTPUT
from proxy.workflows.marked._graph import describe, is_link
from proxy.workflows.marked._nodes import PARAM_NODES, WIDE
from proxy.workflows.marked._schema import class_info, input_names, input_spec, input_type
from proxy.workflows.spec import Binding, ParamType


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


def input_slot(
    param: str, node_id: str, node: Mapping[str, Any], info: Mapping[str, Any], name: str
) -> Slot:
    """The slot `$param=name` marks; ValueError saying why it cannot be one."""
    inputs: dict[str, Any] = node.get("inputs", {})
    if name not in inputs:
        raise ValueError(f"no input {name!r}; its inputs: {', '.join(inputs) or 'none'}")
    if is_link(inputs[name]):
        raise ValueError(f"input {name!r} is a link, not a value")
    spec = input_spec(info, name)
    if spec is None:
        known = ", ".join(input_names(info))
        raise ValueError(f"ComfyUI's {node['class_type']} has no input {name!r} (it has {known})")
    typed = input_type(*spec)
    if typed is None:
        raise ValueError(f"input {name!r} is a {spec[0]} input, not a value a request can set")
    type_, options = typed
    opts = spec[1]
    binding = Binding(node=node_id, input=name, class_type=node["class_type"])
    slot = Slot(param, binding, describe(node_id, node), type_, _value(type_, inputs[name]))
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
        and (spec := input_spec(info, name)) is not None
        and input_type(*spec) is not None
    ]


def _unbounded(value: Any, limit: Any) -> bool:
    number = _number(value)
    return number is None or abs(number) >= WIDE or number == _number(limit)


def node_slot(
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
    slot = input_slot(name, node_id, node, info, kind.value)
    slot.type, slot.random, slot.min, slot.max, slot.step = kind.type, kind.random, None, None, None
    if kind.random:
        opts = (input_spec(info, kind.value) or ("INT", {}))[1]
        slot.narrow(opts.get("min"), opts.get("max"), None)
    if kind.type in ("int", "float"):
        lo_spec, hi_spec = input_spec(info, "min"), input_spec(info, "max")
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
            spec = input_spec(info, name)
            typed = input_type(*spec) if spec else None
            if spec is None or typed is None:
                continue
            if slot.type in ("int", "float") and typed[0] in ("int", "float"):
                slot.narrow(spec[1].get("min"), spec[1].get("max"), spec[1].get("step"))
            if slot.type == "choice" and typed[1]:
                missing = [c for c in slot.choices or () if c not in typed[1]]
                if missing:
                    raise ValueError(
                        f"choices {', '.join(map(str, missing))} are not options of input "
                        f"{name!r} of {describe(other_id, other)}"
                    )
