"""Load templates and their parameters, derive request models, and fill graphs.

A template's parameters come from its marks (`proxy.workflows.marked`: `$` titles and our
parameter nodes, plus an optional sidecar keyed by parameter name) or, in the older form, from
a `<name>.params.json` that binds them by node id (`params` a list with `targets`).
`Workflow.request_model` is a pydantic model built from them (types, defaults, ranges, and
the constraints ComfyUI does not enforce itself), so a bad request is a 422 that names the
field before anything reaches ComfyUI.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)

from proxy.errors import InvalidInput, NotFound
from proxy.workflows.marked import (
    BUILTIN,
    MarkError,
    derive_spec,
    has_marks,
    reference_object_info,
)
from proxy.workflows.spec import ParamSpec, WorkflowSpec, is_legacy_declaration
from proxy.workflows.uiformat import ConversionError, is_ui_format, to_api

log = logging.getLogger("proxy.workflows")

SEED_MAX = 2**64 - 1


def _multiple_of(n: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value % n:
            lower = value - value % n
            raise ValueError(
                f"must be a multiple of {n} (got {value}; nearest: {lower or n} or {lower + n})"
            )
        return value

    return check


def frames_4k1(n: int) -> int:
    """The largest 4k+1 not above n (n >= 1): Wan's VAE makes 4k+1 frames."""
    return n - (n - 1) % 4


def fit_size(width: int, height: int, area: int) -> tuple[int, int]:
    """The aspect of width x height at no more than `area` pixels, in multiples of 32."""
    scale = min(1.0, math.sqrt(area / (width * height)))
    return (
        min(2048, max(32, round(width * scale / 32) * 32)),
        min(2048, max(32, round(height * scale / 32) * 32)),
    )


def _four_k_plus_1(value: int) -> int:
    if (value - 1) % 4:
        lower = value - (value - 1) % 4
        raise ValueError(
            f"must be 4k+1 frames, like 81 or 121 (got {value}; nearest: {lower} or {lower + 4})"
        )
    return value


_PY_TYPES: dict[str, Any] = {"string": str, "int": int, "float": float, "bool": bool}


def _field_for(param: ParamSpec) -> tuple[Any, Any]:
    """(annotation, FieldInfo) for one declared parameter."""
    extra: dict[str, Any] = {"description": param.description}
    cast = int if param.type == "int" else float
    if param.min is not None:
        extra["ge"] = cast(param.min)
    if param.max is not None:
        extra["le"] = cast(param.max)
    if param.min_length:
        extra["min_length"] = param.min_length
    if param.max_length is not None:
        extra["max_length"] = param.max_length
    if param.type == "choice":
        from typing import Literal

        base: Any = Literal[tuple(param.choices or ())]
    else:
        base = _PY_TYPES[param.type]
    validators: list[Any] = []
    if param.multiple_of:
        validators.append(AfterValidator(_multiple_of(param.multiple_of)))
    if param.four_k_plus_1:
        validators.append(AfterValidator(_four_k_plus_1))
    annotation: Any = (
        Annotated[(base, Field(**extra), *validators)] if validators or extra else base
    )
    if param.required:
        return annotation, Field(..., **_names(param))
    if param.random or param.default is None:
        return annotation | None, Field(None, **_names(param))
    return annotation, Field(param.default, **_names(param))


def _names(param: ParamSpec) -> dict[str, Any]:
    """The request names a parameter accepts: its own, then its aliases (validated values
    carry its own name)."""
    if not param.aliases:
        return {}
    return {"validation_alias": AliasChoices(param.name, *param.aliases)}


def _optional_field_for(param: ParamSpec) -> tuple[Any, Any]:
    """Like `_field_for`, but `null` is accepted as "not given" (many form and automation
    clients send null for an empty field); the default shown is the workflow's."""
    annotation, info = _field_for(param)
    if param.required:
        return annotation, Field(description=param.description, **_names(param))
    return annotation | None, Field(info.default, description=param.description, **_names(param))


@dataclass
class Workflow:
    """A loaded template with its declaration."""

    spec: WorkflowSpec
    graph: dict[str, Any]
    request_model: type[BaseModel] = field(init=False)

    def __post_init__(self) -> None:
        fields = {p.name: _field_for(p) for p in self.spec.params if not p.is_file}
        model_name = "".join(part.title() for part in self.spec.name.split("_")) + "Request"
        self.request_model = create_model(  # type: ignore[call-overload]
            model_name, __config__=ConfigDict(extra="forbid"), **fields
        )

    @property
    def name(self) -> str:
        return self.spec.name

    def fields(self) -> dict[str, tuple[Any, Any]]:
        """(annotation, FieldInfo) of every non-file parameter, null meaning "not given":
        what surfaces derive their request models from."""
        return {p.name: _optional_field_for(p) for p in self.spec.params if not p.is_file}

    @property
    def file_params(self) -> list[ParamSpec]:
        return [p for p in self.spec.params if p.is_file]

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.spec.params if p.name == name), None)

    def validate(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check request values against the declaration; 422 naming the first bad field."""
        try:
            model = self.request_model.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(str(p) for p in err["loc"]) or "body"
            raise InvalidInput(name, str(err["msg"]).removeprefix("Value error, ")) from None
        return model.model_dump()

    def fit_to_inputs(
        self, values: dict[str, Any], inputs: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """Sizes a video input implies, for the ones the request leaves out: the source's
        aspect at about the workflow's default area (multiples of 32), and no more frames
        than the source has (4k+1)."""
        video = next(
            (inputs[p.name] for p in self.file_params if p.type == "video" and p.name in inputs),
            None,
        )
        width, height, length = self.param("width"), self.param("height"), self.param("length")
        if video is None or width is None or height is None or length is None:
            return values
        fitted = dict(values)
        if (fitted.get("width") is None or fitted.get("height") is None) and video.get("width"):
            area = int(width.default or 1280) * int(height.default or 704)
            fit_w, fit_h = fit_size(int(video["width"]), int(video["height"]), area)
            fitted["width"] = fitted.get("width") or fit_w
            fitted["height"] = fitted.get("height") or fit_h
        frames = video.get("frames")
        wanted = fitted.get("length") or length.default
        if frames and isinstance(wanted, int) and wanted > frames:
            fitted["length"] = frames_4k1(int(frames)) if length.four_k_plus_1 else int(frames)
        elif fitted.get("length") is None and wanted is not None:
            fitted["length"] = wanted
        return fitted

    def resolve(
        self, values: dict[str, Any], files: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Validated values with defaults applied and random seeds drawn.

        `files` maps file parameters to names already uploaded to ComfyUI's input folder.
        """
        resolved = self.validate(values)
        for param in self.spec.params:
            if param.is_file:
                name = (files or {}).get(param.name)
                if name is None and param.required:
                    raise InvalidInput(param.name, f"an {param.type} file is required")
                resolved[param.name] = name
            elif resolved.get(param.name) is None:
                if param.random:
                    upper = int(param.max) if param.max is not None else SEED_MAX
                    resolved[param.name] = secrets.randbelow(min(upper, 2**53 - 1) + 1)
                elif param.default is not None:
                    resolved[param.name] = param.default
        return resolved

    def fill(self, resolved: dict[str, Any], filename_prefix: str | None = None) -> dict[str, Any]:
        """A copy of the graph with every bound slot set from `resolved`."""
        graph = copy.deepcopy(self.graph)
        for param in self.spec.params:
            value = resolved.get(param.name)
            if value is None:
                continue
            for target in param.targets:
                graph[target.node]["inputs"][target.input] = value
        if filename_prefix and self.spec.filename_prefix:
            slot = self.spec.filename_prefix
            graph[slot.node]["inputs"][slot.input] = filename_prefix
        return graph

    def model_files(self) -> list[tuple[str, str]]:
        """(class_type, file name) of every loader input that names a model file."""
        found = []
        for node in self.graph.values():
            for key, value in node.get("inputs", {}).items():
                if isinstance(value, str) and key.endswith("_name") and "." in value:
                    found.append((node["class_type"], value))
        return found

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "id": spec.name,
            "name": spec.title,
            "description": spec.description,
            "kind": spec.kind,
            "aliases": spec.aliases,
            "parameters": [p.public() for p in spec.params],
        }


def check_bindings(spec: WorkflowSpec, graph: dict[str, Any]) -> list[str]:
    """Every way the declaration no longer matches the graph (a stale binding)."""
    problems = []
    slots = [(p.name, t) for p in spec.params for t in p.targets]
    if spec.filename_prefix:
        slots.append(("(filename prefix)", spec.filename_prefix))
    for name, target in slots:
        node = graph.get(target.node)
        if node is None:
            problems.append(f"{name}: node {target.node} ({target.class_type}) is not in the graph")
        elif node.get("class_type") != target.class_type:
            problems.append(
                f"{name}: node {target.node} is {node.get('class_type')}, "
                f"the declaration expects {target.class_type}"
            )
        elif target.input not in node.get("inputs", {}):
            problems.append(f"{name}: node {target.node} has no input {target.input!r}")
        elif isinstance(node["inputs"][target.input], list):
            problems.append(
                f"{name}: input {target.input!r} of node {target.node} is a link, not a value"
            )
    if spec.output_node not in graph:
        problems.append(f"output node {spec.output_node} is not in the graph")
    return problems


@dataclass
class WorkflowRegistry:
    """The workflows served now. One object for the app's life: a reload changes it in
    place (`replace`), so every router and service that holds it sees the new versions, and
    a job already running keeps the `Workflow` it started with."""

    workflows: dict[str, Workflow]
    # Load problems by template name. A name here and in `workflows` serves its last good
    # version; a name only here is not served.
    broken: dict[str, list[str]]
    # Bumped by every `replace` that changes anything; `changed` wakes waiters on it.
    version: int = 0
    listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def get(self, name: str) -> Workflow:
        workflow = self.workflows.get(name) or self.by_alias(name)
        if workflow is None:
            served = ", ".join(sorted(self.workflows))
            if name in self.broken:
                raise NotFound(f"workflow {name!r} is not loaded: {'; '.join(self.broken[name])}")
            raise NotFound(f"unknown workflow {name!r}; served: {served}")
        return workflow

    def find(self, name: str) -> Workflow | None:
        """The workflow of this name or alias, or None."""
        return self.workflows.get(name) or self.by_alias(name)

    def by_alias(self, name: str) -> Workflow | None:
        for workflow in self.workflows.values():
            if name in workflow.spec.aliases:
                return workflow
        return None

    def names(self) -> list[str]:
        return sorted(self.workflows)

    def problems(self, name: str) -> list[str]:
        return list(self.broken.get(name, []))

    def replace(self, loaded: WorkflowRegistry) -> list[str]:
        """Take a fresh load of the folder; the names whose serving changed.

        A template that loaded replaces its old version; one that no longer loads keeps
        serving its last good version, its problems listed; a removed template is dropped."""
        workflows: dict[str, Workflow] = {}
        for name, workflow in loaded.workflows.items():
            old = self.workflows.get(name)
            same = old is not None and old.spec == workflow.spec and old.graph == workflow.graph
            workflows[name] = old if same and old is not None else workflow
        for name in loaded.broken:
            kept = self.workflows.get(name)
            if kept is not None and name not in workflows:
                workflows[name] = kept
        changed = sorted(
            name
            for name in set(workflows) | set(self.workflows) | set(loaded.broken) | set(self.broken)
            if workflows.get(name) is not self.workflows.get(name)
            or loaded.broken.get(name) != self.broken.get(name)
        )
        if not changed:
            return []
        self.workflows = workflows
        self.broken = dict(loaded.broken)
        self.version += 1
        for listener in self.listeners:
            listener()
        # Wake this version's waiters; later ones wait on a fresh event.
        changed_event, self._changed = self._changed, asyncio.Event()
        changed_event.set()
        return changed

    async def wait_changed(self, after: int) -> int:
        """Wait until `version` passes `after` (callers bound it with a timeout)."""
        while self.version <= after:
            await self._changed.wait()
        return self.version


def load_registry(
    directory: Path, object_info: Mapping[str, Any] | None = None
) -> WorkflowRegistry:
    """Load every workflow in `directory`: each `<name>.json` template (API format, or the
    editor's UI format converted with `object_info`) with marks, a sidecar
    `<name>.params.json` keyed by parameter name, or an older node-id declaration there.

    `object_info` is ComfyUI's /object_info, the source of the marked parameters' types and
    ranges; by default the one bundled for the ComfyUI version we test against. Blocking
    (file reads): async callers run it in a thread.
    """
    workflows: dict[str, Workflow] = {}
    broken: dict[str, list[str]] = {}
    info = known_object_info() if object_info is None else object_info
    for name in sorted(template_names(directory)):
        try:
            loaded = _load_one(directory, name, info)
        except MarkError as exc:
            broken[name] = exc.problems
            log.error("workflow %s not loaded: %s", name, "; ".join(exc.problems))
            continue
        if loaded is not None:
            workflows[loaded.name] = loaded
    return WorkflowRegistry(workflows=workflows, broken=broken)


def known_object_info(reported: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The node schemas to type and convert with: ComfyUI 0.3.64's (bundled) and our
    parameter nodes', overlaid with what backends `reported` of their own."""
    return {**reference_object_info(), **BUILTIN, **(reported or {})}


def template_names(directory: Path) -> set[str]:
    """The template names in `directory`: `<name>.json` and `<name>.params.json` files."""
    try:
        files = [p.name for p in directory.iterdir() if p.is_file()]
    except FileNotFoundError:
        log.warning("workflows folder %s does not exist: no workflow is served", directory)
        return set()
    names = {f.removesuffix(".params.json") for f in files if f.endswith(".params.json")}
    names |= {f.removesuffix(".json") for f in files if f.endswith(".json")}
    return {n for n in names if n and not n.startswith(".")}


def _load_one(directory: Path, name: str, object_info: Mapping[str, Any]) -> Workflow | None:
    """The workflow `name` in `directory`, or None for a template that marks nothing and has
    no declaration (not a workflow); MarkError listing why it cannot load."""
    graph_path = directory / f"{name}.json"
    decl_path = directory / f"{name}.params.json"
    try:
        graph = json.loads(graph_path.read_text())
        declaration = json.loads(decl_path.read_text()) if decl_path.exists() else None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MarkError([f"cannot read {graph_path.name} / {decl_path.name}: {why}"]) from None
    return workflow_from(name, graph, declaration, object_info, source=graph_path.name)


def workflow_from(
    name: str,
    graph: Any,
    declaration: Any,
    object_info: Mapping[str, Any],
    *,
    source: str,
) -> Workflow | None:
    """The workflow a parsed template (API or UI format) and its parsed `.params.json` (or
    None) make; None when it marks nothing and declares nothing; MarkError naming why not."""
    if is_ui_format(graph):
        try:
            # A fixed choice for `{a|b}` dynamic prompts: a template fills the same way each time.
            graph = to_api(graph, dict(object_info), rng=random.Random(0))
        except ConversionError as exc:
            why = f"{source} (the editor's UI format) cannot be converted: {exc}"
            raise MarkError([why]) from None
    if not isinstance(graph, dict):
        if declaration is None:  # some other JSON file in the folder
            log.info("%s is not a graph (a JSON object of nodes): not a workflow", source)
            return None
        raise MarkError([f"{source} is not a workflow (a JSON object of nodes)"])
    if is_legacy_declaration(declaration):
        try:
            spec = WorkflowSpec.model_validate(declaration)
        except ValueError as exc:
            raise MarkError([f"cannot read {name}.params.json: {exc}"]) from None
        problems = check_bindings(spec, graph)
        if problems:
            raise MarkError(problems)
        return Workflow(spec=spec, graph=graph)
    if declaration is None and not has_marks(graph):
        log.info("%s marks no parameters and has no %s.params.json: not a workflow", source, name)
        return None
    return Workflow(spec=derive_spec(name, graph, object_info, declaration), graph=graph)
