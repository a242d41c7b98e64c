"""What a workflow serves: its parameters and the graph slots each one fills.

A template is exactly what ComfyUI's "Export (API)" writes, so it can be re-exported from the
graph editor at any time. Its `WorkflowSpec` is either derived from marks in the graph itself
(`proxy.workflows.marked`: `$name=input` titles and our parameter nodes, plus an optional
sidecar keyed by parameter name) or, in the older form, declared by hand in
`<name>.params.json` with node ids. Either way each binding records its slot's class_type, so
a re-export that renumbers or replaces a node is caught at load time instead of silently
filling the wrong input.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ParamType = Literal["string", "int", "float", "bool", "choice", "image", "video"]


class Binding(BaseModel):
    """One graph slot a parameter fills."""

    node: str
    input: str
    class_type: str


class ParamSpec(BaseModel):
    name: str
    type: ParamType
    description: str = ""
    required: bool = False
    default: Any = None
    # A value drawn at random when the request omits it (seeds), then stored on the job.
    random: bool = False
    min: int | float | None = None
    max: int | float | None = None
    # ComfyUI's widget step for the input (a hint for forms; ComfyUI does not enforce it, and
    # neither does the request model: `multiple_of` and `four_k_plus_1` do).
    step: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    multiple_of: int | None = None
    # Wan's VAE packs 4 frames per latent step plus the first: lengths must be 4k+1.
    four_k_plus_1: bool = False
    choices: list[Any] | None = None
    advanced: bool = False
    # Other request names accepted for this parameter; validated values carry `name`.
    aliases: list[str] = Field(default_factory=list)
    targets: list[Binding] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice needs `choices`")
        return self

    @property
    def is_file(self) -> bool:
        return self.type in ("image", "video")

    def public(self) -> dict[str, Any]:
        """The description clients see in /api/models."""
        data = self.model_dump(exclude={"targets"}, exclude_none=True)
        data["default"] = self.default
        return data


class WorkflowSpec(BaseModel):
    name: str
    title: str
    description: str = ""
    kind: str = "text-to-video"
    # Other names clients may use for this workflow (the seeds' model ids).
    aliases: list[str] = Field(default_factory=list)
    output_node: str
    # The proxy sets SaveVideo's prefix per job, so outputs name the job that made them.
    filename_prefix: Binding | None = None
    params: list[ParamSpec]

    @model_validator(mode="after")
    def _unique_names(self) -> WorkflowSpec:
        seen: dict[str, str] = {}
        for param in self.params:
            for name in (param.name, *param.aliases):
                if name in seen:
                    raise ValueError(
                        f"request name {name!r} is used by both {seen[name]!r} and {param.name!r}"
                    )
                seen[name] = param.name
        return self


class ParamExtra(BaseModel):
    """A sidecar entry: what ComfyUI cannot know about one marked parameter.

    Every key narrows or documents; none may widen what ComfyUI's /object_info allows.
    """

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    aliases: list[str] = Field(default_factory=list)
    # Only a narrowing: a FLOAT input served as whole numbers ("int"), or a string or choice
    # input that names a file ComfyUI loads ("image", "video").
    type: Literal["int", "image", "video"] | None = None
    min: int | float | None = None
    max: int | float | None = None
    # A subset of ComfyUI's options (or the options of a file list ComfyUI fills at run time).
    choices: list[Any] | None = Field(None, min_length=1)
    multiple_of: int | None = Field(None, ge=1)
    four_k_plus_1: bool = False
    random: bool | None = None
    required: bool | None = None
    advanced: bool = False
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)


class Sidecar(BaseModel):
    """`<name>.params.json` beside a marked template: keyed by parameter name, never node id."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    description: str = ""
    kind: str | None = None
    aliases: list[str] = Field(default_factory=list)
    params: dict[str, ParamExtra] = Field(default_factory=dict)


def is_legacy_declaration(data: object) -> bool:
    """Whether a parsed `.params.json` is the older node-id form (`params` a list of entries
    with `targets`) rather than a sidecar keyed by parameter name."""
    return isinstance(data, dict) and isinstance(data.get("params"), list)
