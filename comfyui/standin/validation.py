"""Prompt validation with ComfyUI's rules, error types and texts.

Step 1 checks every node for a known ``class_type`` and finds the output nodes. Step 2
validates each output recursively through its links; nodes no output reaches are never
looked at. Widget values are coerced in place (``8`` -> ``8.0`` for a FLOAT), so the prompt
that gets queued and stored in history is the coerced one, as in ComfyUI.

Only V1 nodes have their combo values checked; V3 nodes declare combos as ``"COMBO"``. A node's
custom validator (LoadImage, LoadVideo, our API input nodes) replaces the min/max/combo checks
of its inputs.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import apiinputs
from .paths import DataDirs
from .schemas import Schemas, input_spec

_Reason = dict[str, Any]
_Outcome = tuple[bool, list[_Reason]]

_COMBO_LIST_LIMIT = 20


@dataclass
class ValidationResult:
    """What ``POST /prompt`` needs: queue it or not, the error, the outputs, the node errors."""

    ok: bool
    error: _Reason | None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def full_type_name(cls: type) -> str:
    """``module.QualName``, or the bare name of a builtin (``ValueError``)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _error(type_: str, message: str, details: str = "", extra_info: dict | None = None) -> _Reason:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


@dataclass(frozen=True)
class _CustomValidator:
    """A node's own validator and the inputs it takes over from the min/max/combo checks."""

    inputs: tuple[str, ...]
    check: Callable[..., Any]


def _custom_validators(dirs: DataDirs) -> dict[str, _CustomValidator]:
    def load_image(image: str) -> bool | str:
        return True if dirs.annotated_exists(image) else f"Invalid image file: {image}"

    def load_video(file: str) -> bool | str:
        return True if dirs.annotated_exists(file) else f"Invalid video file: {file}"

    validators = {
        "LoadImage": _CustomValidator(("image",), load_image),
        "LoadVideo": _CustomValidator(("file",), load_video),
    }
    # Our API input nodes: their own VALIDATE_INPUTS, except that the file nodes look in the
    # stand-in's folders (the package asks ComfyUI's folder_paths), as LoadImage/LoadVideo do.
    # A linked file input is checked when the node runs (the package's validators say True).
    files = {
        "ApiInputImage": _CustomValidator(
            ("image",), lambda image=None: True if image is None else load_image(image)
        ),
        "ApiInputVideo": _CustomValidator(
            ("file",), lambda file=None: True if file is None else load_video(file)
        ),
    }
    for class_type in apiinputs.classes():
        if class_type in files:
            validators[class_type] = files[class_type]
        elif (found := apiinputs.validate_function(class_type)) is not None:
            validators[class_type] = _CustomValidator(*found)
    return validators


def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's link type rule: equal, ``*``, or overlapping comma-separated type lists."""
    # ComfyUI's first test (validate_node_input): a type whose __ne__ says "not unequal"
    # matches, which is how IO.ANY and ApiInputChoice's output plug into list combos.
    if not received != expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    # A "*" read from JSON stands for ComfyUI's IO.ANY, whose __ne__ the JSON lost. A type
    # that is still a Python object (ApiInputChoice's) has answered for itself above.
    if type(received) is str and type(expected) is str and "*" in (received, expected):
        return True
    received_set = {t.strip() for t in received.split(",")}
    expected_set = {t.strip() for t in expected.split(",")}
    return bool(received_set & expected_set)


def validate_prompt(
    prompt: Any,
    schemas: Schemas,
    dirs: DataDirs,
    partial_targets: list[Any] | None = None,
) -> ValidationResult:
    """Validate (and coerce in place) an API-format prompt."""
    if not isinstance(prompt, dict):
        raise TypeError(f"prompt must be an object, not {type(prompt).__name__}")
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return ValidationResult(
                False,
                _error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                ),
            )
        class_type = node["class_type"]
        if class_type not in schemas:
            return ValidationResult(
                False,
                _error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                ),
            )
        if schemas.is_output(class_type):
            if partial_targets is None or node_id in partial_targets:
                outputs.append(node_id)
    if not outputs:
        return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs"))

    checker = _NodeChecker(prompt, schemas, _custom_validators(dirs))
    good: list[str] = []
    failed: list[tuple[str, list[_Reason]]] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        try:
            valid, reasons = checker.check(output_id)
        except Exception as ex:
            valid = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(ex),
                    {
                        "exception_type": full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                )
            ]
            checker.validated[output_id] = (False, reasons)
        if valid:
            good.append(output_id)
            continue
        failed.append((output_id, reasons))
        # Like ComfyUI: every node with its own errors so far gets this output appended.
        for node_id, (node_valid, node_reasons) in checker.validated.items():
            if node_valid or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output_id)

    if not good:
        details = "\n".join(
            f"{reason['message']}: {reason['details']}"
            for _, reasons in failed
            for reason in reasons
        )
        error = _error(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
        )
        return ValidationResult(False, error, [], node_errors)
    return ValidationResult(True, None, good, node_errors)


class _NodeChecker:
    """Validates one node and, through its links, its ancestors (memoized in ``validated``)."""

    def __init__(
        self, prompt: dict[str, Any], schemas: Schemas, custom: dict[str, _CustomValidator]
    ) -> None:
        self.prompt = prompt
        self.schemas = schemas
        self.custom = custom
        self.validated: dict[Any, _Outcome] = {}

    def check(self, node_id: Any) -> _Outcome:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        info = self.schemas.info(class_type)
        custom = self.custom.get(class_type)
        custom_names = custom.inputs if custom else ()
        errors: list[_Reason] = []
        valid = True

        for name in self.schemas.declared_inputs(class_type):
            input_type, category, options = input_spec(info, name)
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error(
                            "required_input_missing",
                            "Required input is missing",
                            name,
                            {"input_name": name},
                        )
                    )
                continue
            value = inputs[name]
            config = [input_type, options]
            if isinstance(value, list):
                outcome = self._check_link(node_id, name, value, input_type, config, errors)
                valid = valid and outcome
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
                inputs[name] = value
            try:
                value = _coerce(value, input_type)
            except Exception as ex:
                errors.append(
                    _error(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {input_type} value",
                        f"{name}, {value}, {ex}",
                        {
                            "input_name": name,
                            "input_config": config,
                            "received_value": value,
                            "exception_message": str(ex),
                        },
                    )
                )
                continue
            if input_type in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                inputs[name] = value
            if name not in custom_names:
                error = _range_or_combo_error(name, value, input_type, options, config)
                if error is not None:
                    errors.append(error)

        if custom is not None:
            errors.extend(self._run_custom(custom, inputs))

        outcome = (False, errors) if errors or not valid else (True, [])
        self.validated[node_id] = outcome
        return outcome

    def _check_link(
        self,
        node_id: Any,
        name: str,
        value: list[Any],
        input_type: Any,
        config: list[Any],
        errors: list[_Reason],
    ) -> bool:
        """Check one linked input; False when the node is invalid because of it."""
        if len(value) != 2:
            errors.append(
                _error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    {"input_name": name, "input_config": config, "received_value": value},
                )
            )
            return True
        source_id, slot = value
        source_class = self.prompt[source_id]["class_type"]
        received = self.schemas.return_types(source_class)[slot]
        if not types_match(received, input_type):
            errors.append(
                _error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({input_type})",
                    {
                        "input_name": name,
                        "input_config": config,
                        "received_type": received,
                        "linked_node": value,
                    },
                )
            )
            return True
        try:
            source_valid, _ = self.check(source_id)
        except Exception as ex:
            self.validated[source_id] = (
                False,
                [
                    _error(
                        "exception_during_inner_validation",
                        "Exception when validating inner node",
                        str(ex),
                        {
                            "input_name": name,
                            "input_config": config,
                            "exception_message": str(ex),
                            "exception_type": full_type_name(type(ex)),
                            "traceback": traceback.format_tb(ex.__traceback__),
                            "linked_node": value,
                        },
                    )
                ],
            )
            return False
        return source_valid

    @staticmethod
    def _run_custom(custom: _CustomValidator, inputs: dict[str, Any]) -> list[_Reason]:
        # Linked inputs have no value yet: left out (ComfyUI passes None, which validators
        # that default to None treat the same). In the prompt's order, as ComfyUI reports
        # one error per input.
        kwargs = {
            n: value
            for n, value in inputs.items()
            if n in custom.inputs and not isinstance(value, list)
        }
        result = custom.check(**kwargs)
        if result is True:
            return []
        errors = []
        for name in kwargs:
            details = name if result is False else f"{name} - {result}"
            errors.append(
                _error(
                    "custom_validation_failed",
                    "Custom validation failed for node",
                    details,
                    {"input_name": name},
                )
            )
        return errors


def _coerce(value: Any, input_type: Any) -> Any:
    if input_type == "INT":
        return int(value)
    if input_type == "FLOAT":
        return float(value)
    if input_type == "STRING":
        return str(value)
    if input_type == "BOOLEAN":
        return bool(value)
    return value


def _range_or_combo_error(
    name: str, value: Any, input_type: Any, options: dict[str, Any], config: list[Any]
) -> _Reason | None:
    extra = {"input_name": name, "input_config": config, "received_value": value}
    if "min" in options and value < options["min"]:
        return _error(
            "value_smaller_than_min",
            f"Value {value} smaller than min of {options['min']}",
            name,
            extra,
        )
    if "max" in options and value > options["max"]:
        return _error(
            "value_bigger_than_max",
            f"Value {value} bigger than max of {options['max']}",
            name,
            extra,
        )
    if isinstance(input_type, list) and value not in input_type:
        if len(input_type) > _COMBO_LIST_LIMIT:
            listed = f"(list of length {len(input_type)})"
            extra["input_config"] = None
        else:
            listed = str(input_type)
        return _error(
            "value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}", extra
        )
    return None
