"""The sidecar: parsing it, and narrowing a merged slot by its entry into a `ParamSpec`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from proxy.workflows.marked._errors import MarkError
from proxy.workflows.marked._slot import Slot
from proxy.workflows.spec import ParamExtra, ParamSpec, ParamType, Sidecar


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


_NARROWER: dict[str, tuple[ParamType, ...]] = {
    "int": ("float",),
    "image": ("string", "choice"),
    "video": ("string", "choice"),
}


def param_spec(name: str, slot: Slot, extra: ParamExtra, problems: list[str]) -> ParamSpec | None:
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
